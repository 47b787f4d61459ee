// CUDA versions of the post-processing twins (virtime/postprocess.hpp) and of the uint8 -> NCHW
// packer. They take raw device pointers and a stream (cudaStream_t as an integer; 0 = the legacy
// default stream), so the core never builds against torch: callers pass tensor.data_ptr().
// All launches are asynchronous; launch errors throw Error(ErrorKind::Cuda), execution errors
// surface at the caller's next synchronization. Without CUDA they throw Error(ErrorKind::Cuda)
// from src/cuda_fallback_postprocess.cpp. No CUDA headers here.
#pragma once
#include <cstdint>

#include "virtime/postprocess.hpp"

namespace virtime {

// Most windows a tile may hold on the GPU (origins travel as a kernel argument).
constexpr int64_t kMaxCudaTileWindows = 64;

// Device twin of sigmoid_pool_windows: d_logits (n, C, h, w), d_weight (h, w) -> d_wp
// (n, C, h/f, w/f) and d_ws (h/f, w/f); either output may be null.
void launch_sigmoid_pool_windows(const float* d_logits, int64_t n, int64_t C, int64_t h, int64_t w,
                                 const float* d_weight, int64_t factor, float* d_wp, float* d_ws,
                                 uintptr_t stream);

// Device twin of tile_stats: d_pos int64 (n_tiles, C) and d_psum float64 (n_tiles, C); either
// may be null. Deterministic (one block per tile and channel, fixed reduction order).
void launch_tile_stats(const float* d_logits, int64_t n_tiles, int64_t C, int64_t h, int64_t w,
                       const float* d_weight, const TileLayout& layout, int64_t* d_pos,
                       double* d_psum, uintptr_t stream);

// Device twin of pack_tiles_f32 / pack_tiles_f16: d_rgb uint8 (n, h, w, 3) -> (n, 3, h, w).
void launch_pack_tiles_f32(const uint8_t* d_rgb, int64_t n, int64_t h, int64_t w, float* d_out,
                           uintptr_t stream);
void launch_pack_tiles_f16(const uint8_t* d_rgb, int64_t n, int64_t h, int64_t w, uint16_t* d_out,
                           uintptr_t stream);

}  // namespace virtime
