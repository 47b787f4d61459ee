// CUDA twin of the Macenko per-pixel step: one thread per pixel runs macenko_apply_pixel, the same
// inline function the CPU loop uses (virtime/macenko_pixel.hpp).
#include <cuda_runtime.h>

#include <string>

#include "virtime/cuda_stain.hpp"
#include "virtime/errors.hpp"

namespace virtime {
namespace {

__global__ void macenko_apply_kernel(const uint8_t* __restrict__ src, uint8_t* dst, int64_t n,
                                     MacenkoApply p) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint8_t in[3] = {src[3 * i], src[3 * i + 1], src[3 * i + 2]};
    uint8_t out[3];
    macenko_apply_pixel(in, p, out);
    dst[3 * i] = out[0];
    dst[3 * i + 1] = out[1];
    dst[3 * i + 2] = out[2];
  }
}

[[noreturn]] void throw_cuda(const char* what, cudaError_t err) {
  throw Error(ErrorKind::Cuda, "", std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

void launch_macenko_apply(const uint8_t* d_src, uint8_t* d_dst, int64_t n_pixels,
                          const MacenkoApply& p, uintptr_t stream) {
  if (n_pixels < 0) throw invalid_argument("n_pixels must be >= 0");
  if (n_pixels == 0) return;
  if (d_src == nullptr || d_dst == nullptr) throw invalid_argument("device pointer is null");
  const int threads = 256;
  int64_t blocks = (n_pixels + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;  // grid-stride loop covers the rest
  macenko_apply_kernel<<<static_cast<unsigned>(blocks), threads, 0,
                         reinterpret_cast<cudaStream_t>(stream)>>>(d_src, d_dst, n_pixels, p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda("launching the Macenko kernel failed", err);
}

int cuda_device_count() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so later calls start clean
    return 0;
  }
  return n;
}

}  // namespace virtime
