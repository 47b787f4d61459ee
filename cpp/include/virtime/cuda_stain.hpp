// CUDA twin of the Macenko per-pixel step. The functions exist in every build: with CUDA they
// launch kernels (cuda/stain_kernels.cu); without it they throw Error(ErrorKind::Cuda) from
// src/cuda_fallback_stain.cpp. No CUDA headers here, so plain C++ code can include it.
#pragma once
#include <cstdint>

#include "virtime/macenko_pixel.hpp"

namespace virtime {

// Applies `p` to n_pixels interleaved RGB uint8 pixels from device memory d_src to d_dst (may be
// equal) on `stream` (a cudaStream_t as an integer; 0 = legacy default stream). Asynchronous:
// launch errors are thrown as Error(ErrorKind::Cuda); execution errors surface on the next sync.
void launch_macenko_apply(const uint8_t* d_src, uint8_t* d_dst, int64_t n_pixels,
                          const MacenkoApply& p, uintptr_t stream);

// Number of CUDA devices visible (0 when the driver or a device is missing); throws without CUDA.
int cuda_device_count();

}  // namespace virtime
