// The fused post-processing: one pass over the logits per (tile, channel) pair.
#include "virtime/postprocess.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>

#include "virtime/errors.hpp"
#include "virtime/postprocess_checks.hpp"
#include "virtime/postprocess_pixel.hpp"

// The per-element loops get an AVX2 clone chosen at load time (8 lanes instead of SSE2's 4).
// AVX2 without FMA: every multiply and add still rounds on its own, so both clones give identical
// results.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VIRTIME_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VIRTIME_SIMD_CLONES
#endif

namespace virtime {
namespace {

// Runs fn(task, worker) for task in [0, n_tasks) on up to `threads` workers (<= 0: all cores),
// handing out tasks one at a time so uneven tasks balance. The first exception is rethrown.
template <typename Fn>
void parallel_tasks(int64_t n_tasks, int threads, Fn&& fn) {
  if (n_tasks <= 0) return;
  int nt = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, n_tasks)));
  if (nt == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr first;
  std::atomic<bool> failed{false};
  auto worker = [&](int id) {
    try {
      for (int64_t t = next++; t < n_tasks && !failed.load(); t = next++) fn(t, id);
    } catch (...) {
      if (!failed.exchange(true)) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nt - 1));
  for (int i = 1; i < nt; ++i) pool.emplace_back(worker, i);
  worker(0);
  for (auto& th : pool) th.join();
  if (first) std::rethrow_exception(first);
}

// One channel plane of one window: row = sigmoid(logit)·weight, then pooled into `wp` (f×f block
// sums: f columns per row, rows added in order) and/or added into the tile map `acc` (T wide) at
// (ox, oy). `row` is scratch of w floats.
VIRTIME_SIMD_CLONES void window_plane(const float* __restrict__ logit, const float* __restrict__ weight, int64_t h,
                  int64_t w, int64_t f, float* __restrict__ wp, float* __restrict__ acc, int64_t T,
                  int64_t ox, int64_t oy, float* __restrict__ row) {
  const int64_t wf = w / f;
  for (int64_t y = 0; y < h; ++y) {
    const float* lr = logit + y * w;
    const float* wr = weight + y * w;
    for (int64_t x = 0; x < w; ++x) row[x] = pp_sigmoid(lr[x]) * wr[x];
    if (acc != nullptr) {
      float* ar = acc + (oy + y) * T + ox;
      for (int64_t x = 0; x < w; ++x) ar[x] += row[x];
    }
    if (wp != nullptr) {
      float* orow = wp + (y / f) * wf;
      if (y % f == 0) std::fill(orow, orow + wf, 0.0f);
      for (int64_t j = 0; j < wf; ++j) {
        float s = 0.0f;
        for (int64_t t = 0; t < f; ++t) s += row[j * f + t];
        orow[j] += s;
      }
    }
  }
}

// Statistics of one core row of the blended map b = acc / wsum: the count above thr (returned) and
// the sum (to *sum). Three simple loops rather than one: each vectorizes (an in-order
// floating-point sum would not); the sum uses 8 float lanes, then double.
VIRTIME_SIMD_CLONES int32_t core_row_stats(const float* __restrict__ acc, const float* __restrict__ wsum,
                                           int64_t core, float thr, float* __restrict__ b, double* sum) {
  for (int64_t x = 0; x < core; ++x) b[x] = acc[x] / wsum[x];
  int32_t pos = 0;
  for (int64_t x = 0; x < core; ++x) pos += b[x] > thr ? 1 : 0;
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t x = 0;
  for (; x + 8 <= core; x += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += b[x + l];
  double s = 0.0;
  for (; x < core; ++x) s += static_cast<double>(b[x]);
  for (int l = 0; l < 8; ++l) s += static_cast<double>(lanes[l]);
  *sum = s;
  return pos;
}

void pool_weight(const float* weight, int64_t h, int64_t w, int64_t f, float* out_ws) {
  const int64_t wf = w / f;
  for (int64_t y = 0; y < h; ++y) {
    float* orow = out_ws + (y / f) * wf;
    if (y % f == 0) std::fill(orow, orow + wf, 0.0f);
    for (int64_t j = 0; j < wf; ++j) {
      float s = 0.0f;
      for (int64_t t = 0; t < f; ++t) s += weight[y * w + j * f + t];
      orow[j] += s;
    }
  }
}

}  // namespace

void postprocess_tiles(const float* logits, int64_t n_tiles, int64_t C, int64_t h, int64_t w,
                       const float* weight, int64_t factor, const TileLayout& layout,
                       float* out_wp, float* out_ws, int64_t* out_pos, double* out_psum,
                       int threads) {
  check_window_shape(n_tiles, C, h, w);
  check_tile_layout(layout, h, w);
  const bool pool = out_wp != nullptr || out_ws != nullptr;
  const bool stats = out_pos != nullptr || out_psum != nullptr;
  if (pool) check_pool_factor(h, w, factor);
  if (out_ws != nullptr) pool_weight(weight, h, w, factor, out_ws);
  const int64_t k = layout.n_windows(), T = layout.tile_size, core = layout.core;
  // Σ_k w over the tile, in window order as the numpy blend accumulates it, clamped like it.
  std::vector<float> wsum;
  if (stats) {
    wsum.assign(static_cast<size_t>(T * T), 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t ox = layout.origins[2 * j], oy = layout.origins[2 * j + 1];
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) wsum[static_cast<size_t>((oy + y) * T + ox + x)] += weight[y * w + x];
    }
    for (float& v : wsum) v = std::max(v, 1e-12f);
  }
  if (out_wp == nullptr && !stats) return;
  const int64_t plane = h * w, oplane = pool ? (h / factor) * (w / factor) : 0;
  const int nworkers = std::max(1, threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
  // Row scratch: a window row, or a core row of the blended map.
  std::vector<std::vector<float>> rows(static_cast<size_t>(nworkers),
                                       std::vector<float>(static_cast<size_t>(std::max(w, T))));
  std::vector<std::vector<float>> accs(static_cast<size_t>(stats ? nworkers : 0));
  const float thr = layout.threshold;
  parallel_tasks(n_tiles * C, nworkers, [&](int64_t task, int id) {
    const int64_t tile = task / C, c = task % C;
    float* acc = nullptr;
    if (stats) {
      auto& a = accs[static_cast<size_t>(id)];
      a.assign(static_cast<size_t>(T * T), 0.0f);
      acc = a.data();
    }
    for (int64_t j = 0; j < k; ++j) {
      const int64_t win = tile * k + j;
      window_plane(logits + (win * C + c) * plane, weight, h, w, pool ? factor : 1,
                   out_wp != nullptr ? out_wp + (win * C + c) * oplane : nullptr, acc, T,
                   layout.origins[2 * j], layout.origins[2 * j + 1], rows[static_cast<size_t>(id)].data());
    }
    if (!stats) return;
    int64_t pos = 0;
    double psum = 0.0;
    float* b = rows[static_cast<size_t>(id)].data();
    for (int64_t y = 0; y < core; ++y) {
      const float* ar = acc + y * T;
      const float* wr = wsum.data() + y * T;
      double rsum = 0.0;
      const int32_t rpos = core_row_stats(ar, wr, core, thr, b, &rsum);
      pos += rpos;
      psum += rsum;
    }
    if (out_pos != nullptr) out_pos[task] = pos;
    if (out_psum != nullptr) out_psum[task] = psum;
  });
}

void tile_stats(const float* logits, int64_t n_tiles, int64_t C, int64_t h, int64_t w,
                const float* weight, const TileLayout& layout, int64_t* out_pos, double* out_psum,
                int threads) {
  postprocess_tiles(logits, n_tiles, C, h, w, weight, 1, layout, nullptr, nullptr, out_pos, out_psum,
                    threads);
}

}  // namespace virtime
