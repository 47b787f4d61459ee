// Builds without CUDA: the CUDA entry points exist but say so, as a CudaError in Python.
#ifndef VIRTIME_WITH_CUDA
#include "virtime/cuda_stain.hpp"
#include "virtime/errors.hpp"

namespace virtime {

void launch_macenko_apply(const uint8_t*, uint8_t*, int64_t, const MacenkoApply&, uintptr_t) {
  throw Error(ErrorKind::Cuda, "", "virtime was built without CUDA");
}

int cuda_device_count() { throw Error(ErrorKind::Cuda, "", "virtime was built without CUDA"); }

}  // namespace virtime
#endif
