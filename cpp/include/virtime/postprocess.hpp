// The post-processing around the engine on the CPU: sigmoid, blend weight, pooling to the
// canvas grid and per-tile statistics of the blended map, fused into one pass over the logits so
// each probability is computed once. Multi-threaded over (tile, channel) pairs; the per-element
// functions are in virtime/postprocess_pixel.hpp.
//
// Layouts (all C-contiguous):
//   logits  float32 (n_tiles * k, C, h, w): the k windows of tile i are rows i*k .. i*k+k-1
//   weight  float32 (h, w): the blend weight of a window
//   wp      float32 (n_tiles * k, C, h/f, w/f): Σ weight·sigmoid(logit) over f×f blocks
//   ws      float32 (h/f, w/f): Σ weight over f×f blocks (the same for every window)
//   pos     int64 (n_tiles, C): pixels of the tile's core region whose blended probability > threshold
//   psum    float64 (n_tiles, C): sum of the blended probability over the core region
// The blended map of a tile is Σ_k w·p_k / max(Σ_k w, 1e-12) on (tile_size, tile_size) with window
// k placed at origins[k] = (x, y); the core region is its first `core` rows and columns (so
// overlapping tiles partition the slide). Accumulation order follows the windows' order, as in
// python/virtime/translation/tile_stats.py.
#pragma once
#include <cstdint>
#include <vector>

namespace virtime {

struct TileLayout {
  int64_t tile_size = 0;               // T: the blended map is T x T
  int64_t core = 0;                    // statistics over [0, core) x [0, core)
  std::vector<int64_t> origins;        // k (x, y) pairs, flattened
  float threshold = 0.5f;              // positive: blended probability > threshold
  int64_t n_windows() const { return static_cast<int64_t>(origins.size() / 2); }
};

// Per-tile, per-channel positive count and probability sum of the blended map over the core
// region (see the layout comment above). logits hold n_tiles * layout.n_windows() windows.
void tile_stats(const float* logits, int64_t n_tiles, int64_t C, int64_t h, int64_t w,
                const float* weight, const TileLayout& layout, int64_t* out_pos, double* out_psum,
                int threads = 0);

// Both in one pass (each probability computed once): pooled sums of every window and statistics of
// every tile. out_wp/out_ws may be null (statistics only; then factor is not checked).
void postprocess_tiles(const float* logits, int64_t n_tiles, int64_t C, int64_t h, int64_t w,
                       const float* weight, int64_t factor, const TileLayout& layout,
                       float* out_wp, float* out_ws, int64_t* out_pos, double* out_psum,
                       int threads = 0);

}  // namespace virtime
