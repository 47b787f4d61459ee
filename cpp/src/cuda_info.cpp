// Whether CUDA was compiled in and a device is usable. See cuda_info.hpp.
#include "virtime/cuda_info.hpp"

#include "virtime/cuda_stain.hpp"

namespace virtime {

bool built_with_cuda() {
#ifdef VIRTIME_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef VIRTIME_WITH_CUDA
  try {
    return cuda_device_count() > 0;
  } catch (...) {  // a broken driver is "not available", never an error here
    return false;
  }
#else
  return false;
#endif
}

}  // namespace virtime
