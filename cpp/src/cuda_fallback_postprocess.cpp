// Builds without CUDA: the post-processing CUDA entry points exist but say so (CudaError in Python).
#ifndef VIRTIME_WITH_CUDA
#include "virtime/cuda_postprocess.hpp"
#include "virtime/errors.hpp"

namespace virtime {
namespace {
[[noreturn]] void no_cuda() { throw Error(ErrorKind::Cuda, "", "virtime was built without CUDA"); }
}  // namespace

void launch_sigmoid_pool_windows(const float*, int64_t, int64_t, int64_t, int64_t, const float*,
                                 int64_t, float*, float*, uintptr_t) {
  no_cuda();
}
void launch_tile_stats(const float*, int64_t, int64_t, int64_t, int64_t, const float*,
                       const TileLayout&, int64_t*, double*, uintptr_t) {
  no_cuda();
}
void launch_pack_tiles_f32(const uint8_t*, int64_t, int64_t, int64_t, float*, uintptr_t) { no_cuda(); }
void launch_pack_tiles_f16(const uint8_t*, int64_t, int64_t, int64_t, uint16_t*, uintptr_t) { no_cuda(); }

}  // namespace virtime
#endif
