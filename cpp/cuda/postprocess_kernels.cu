// CUDA twins of the post-processing (src/postprocess.cpp) and of the uint8 -> NCHW packer
// (src/image.cpp). Per-element math comes from virtime/postprocess_pixel.hpp, and every sum runs
// in the same order as on the CPU, so pooled sums and positive counts match the CPU twin exactly;
// only the float64 probability sums differ in their last bits (a tree reduction here).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "virtime/cuda_postprocess.hpp"
#include "virtime/errors.hpp"
#include "virtime/image.hpp"
#include "virtime/postprocess_checks.hpp"
#include "virtime/postprocess_pixel.hpp"

namespace virtime {
namespace {

constexpr int kThreads = 256;

[[noreturn]] void throw_cuda(const char* what, cudaError_t err) {
  throw Error(ErrorKind::Cuda, "", std::string(what) + ": " + cudaGetErrorString(err));
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(what, err);
}

unsigned grid_for(int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 65535) blocks = 65535;  // grid-stride loops cover the rest
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// One thread per pooled output (window, channel, i, j): f rows of f columns, summed as the CPU
// does (each row's f products summed left to right, rows added top to bottom).
__global__ void pool_kernel(const float* __restrict__ logits, const float* __restrict__ weight,
                            int64_t n_planes, int64_t h, int64_t w, int64_t f,
                            float* __restrict__ wp) {
  const int64_t hf = h / f, wf = w / f, total = n_planes * hf * wf;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const int64_t plane = o / (hf * wf), rem = o % (hf * wf), i = rem / wf, j = rem % wf;
    const float* l = logits + plane * h * w;
    float acc = 0.0f;
    for (int64_t ry = 0; ry < f; ++ry) {
      const int64_t base = (i * f + ry) * w + j * f;
      float s = 0.0f;
      for (int64_t t = 0; t < f; ++t) s = pp_add(s, pp_mul(pp_sigmoid(l[base + t]), weight[base + t]));
      acc = pp_add(acc, s);
    }
    wp[o] = acc;
  }
}

__global__ void pool_weight_kernel(const float* __restrict__ weight, int64_t h, int64_t w, int64_t f,
                                   float* __restrict__ ws) {
  const int64_t hf = h / f, wf = w / f, total = hf * wf;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const int64_t i = o / wf, j = o % wf;
    float acc = 0.0f;
    for (int64_t ry = 0; ry < f; ++ry) {
      float s = 0.0f;
      for (int64_t t = 0; t < f; ++t) s = pp_add(s, weight[(i * f + ry) * w + j * f + t]);
      acc = pp_add(acc, s);
    }
    ws[o] = acc;
  }
}

struct DeviceLayout {
  int32_t k;
  int32_t tile_size;
  int32_t core;
  float threshold;
  int32_t ox[kMaxCudaTileWindows];
  int32_t oy[kMaxCudaTileWindows];
};

// One block per (tile, channel). Each core pixel blends the windows covering it, in window order:
// Σ w·p and Σ w as the CPU accumulates them, then b = Σ w·p / max(Σ w, 1e-12).
__global__ void tile_stats_kernel(const float* __restrict__ logits, int64_t C, int64_t h, int64_t w,
                                  const float* __restrict__ weight, DeviceLayout L,
                                  long long* __restrict__ pos_out, double* __restrict__ psum_out) {
  __shared__ long long s_pos[kThreads];
  __shared__ double s_sum[kThreads];
  const int64_t task = blockIdx.x, tile = task / C, c = task % C;
  const int64_t core = L.core, npix = core * core, plane = h * w;
  long long pos = 0;
  double psum = 0.0;
  for (int64_t idx = threadIdx.x; idx < npix; idx += blockDim.x) {
    const int64_t y = idx / core, x = idx % core;
    float acc = 0.0f, wsum = 0.0f;
    for (int k = 0; k < L.k; ++k) {
      const int64_t ly = y - L.oy[k], lx = x - L.ox[k];
      if (ly < 0 || lx < 0 || ly >= h || lx >= w) continue;
      const float wt = weight[ly * w + lx];
      const float p = pp_sigmoid(logits[((tile * L.k + k) * C + c) * plane + ly * w + lx]);
      acc = pp_add(acc, pp_mul(p, wt));
      wsum = pp_add(wsum, wt);
    }
    const float b = pp_div(acc, fmaxf(wsum, 1e-12f));
    pos += b > L.threshold ? 1 : 0;
    psum += static_cast<double>(b);
  }
  s_pos[threadIdx.x] = pos;
  s_sum[threadIdx.x] = psum;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      s_pos[threadIdx.x] += s_pos[threadIdx.x + half];
      s_sum[threadIdx.x] += s_sum[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (pos_out != nullptr) pos_out[task] = s_pos[0];
    if (psum_out != nullptr) psum_out[task] = s_sum[0];
  }
}

struct PackArgs {
  float scale[3];
  float bias[3];
  float mean[3];
  float std[3];
};

PackArgs pack_args() {
  // The same constants, computed the same way, as pack_chw_normalized_* in src/image.cpp.
  PackArgs a{};
  for (int c = 0; c < 3; ++c) {
    a.scale[c] = 1.0f / (255.0f * kImagenetStd[c]);
    a.bias[c] = -kImagenetMean[c] / kImagenetStd[c];
    a.mean[c] = kImagenetMean[c];
    a.std[c] = kImagenetStd[c];
  }
  return a;
}

template <bool kHalf>
__global__ void pack_kernel(const uint8_t* __restrict__ rgb, int64_t n, int64_t hw, void* out, PackArgs a) {
  const int64_t total = n * hw;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t tile = i / hw, pix = i % hw;
    for (int c = 0; c < 3; ++c) {
      const uint8_t v = rgb[3 * i + c];
      const int64_t o = (tile * 3 + c) * hw + pix;
      if (kHalf) {
        static_cast<__half*>(out)[o] = __float2half_rn(pp_pack_f16_value(v, a.mean[c], a.std[c]));
      } else {
        static_cast<float*>(out)[o] = pp_pack_f32(v, a.scale[c], a.bias[c]);
      }
    }
  }
}

void check_ptr(const void* p, const char* what) {
  if (p == nullptr) throw invalid_argument(std::string(what) + " device pointer is null");
}

}  // namespace

void launch_sigmoid_pool_windows(const float* d_logits, int64_t n, int64_t C, int64_t h, int64_t w,
                                 const float* d_weight, int64_t factor, float* d_wp, float* d_ws,
                                 uintptr_t stream) {
  check_window_shape(n, C, h, w);
  check_pool_factor(h, w, factor);
  check_ptr(d_weight, "weight");
  if (d_ws != nullptr) {
    pool_weight_kernel<<<grid_for((h / factor) * (w / factor)), kThreads, 0, as_stream(stream)>>>(
        d_weight, h, w, factor, d_ws);
    check_launch("launching the weight pooling kernel failed");
  }
  if (d_wp == nullptr || n == 0) return;
  check_ptr(d_logits, "logits");
  const int64_t outputs = n * C * (h / factor) * (w / factor);
  pool_kernel<<<grid_for(outputs), kThreads, 0, as_stream(stream)>>>(d_logits, d_weight, n * C, h, w,
                                                                     factor, d_wp);
  check_launch("launching the sigmoid pooling kernel failed");
}

void launch_tile_stats(const float* d_logits, int64_t n_tiles, int64_t C, int64_t h, int64_t w,
                       const float* d_weight, const TileLayout& layout, int64_t* d_pos,
                       double* d_psum, uintptr_t stream) {
  check_window_shape(n_tiles, C, h, w);
  check_tile_layout(layout, h, w);
  if (layout.n_windows() > kMaxCudaTileWindows) {
    throw invalid_argument("a tile may hold at most " + std::to_string(kMaxCudaTileWindows) +
                           " windows on the GPU, got " + std::to_string(layout.n_windows()));
  }
  if (layout.tile_size > (int64_t{1} << 30)) throw invalid_argument("tile size is too large");
  if (n_tiles == 0 || (d_pos == nullptr && d_psum == nullptr)) return;
  check_ptr(d_logits, "logits");
  check_ptr(d_weight, "weight");
  if (n_tiles * C > 2147483647LL) throw invalid_argument("too many tiles x channels for one launch");
  DeviceLayout L{};
  L.k = static_cast<int32_t>(layout.n_windows());
  L.tile_size = static_cast<int32_t>(layout.tile_size);
  L.core = static_cast<int32_t>(layout.core);
  L.threshold = layout.threshold;
  for (int64_t k = 0; k < layout.n_windows(); ++k) {
    L.ox[k] = static_cast<int32_t>(layout.origins[2 * k]);
    L.oy[k] = static_cast<int32_t>(layout.origins[2 * k + 1]);
  }
  static_assert(sizeof(long long) == sizeof(int64_t), "int64 counts");
  tile_stats_kernel<<<static_cast<unsigned>(n_tiles * C), kThreads, 0, as_stream(stream)>>>(
      d_logits, C, h, w, d_weight, L, reinterpret_cast<long long*>(d_pos), d_psum);
  check_launch("launching the tile statistics kernel failed");
}

void launch_pack_tiles_f32(const uint8_t* d_rgb, int64_t n, int64_t h, int64_t w, float* d_out,
                           uintptr_t stream) {
  if (n < 0 || h < 1 || w < 1) throw invalid_argument("tiles must be (n, h, w, 3) with h, w >= 1");
  if (n == 0) return;
  check_ptr(d_rgb, "tiles");
  check_ptr(d_out, "output");
  pack_kernel<false><<<grid_for(n * h * w), kThreads, 0, as_stream(stream)>>>(d_rgb, n, h * w, d_out,
                                                                              pack_args());
  check_launch("launching the float32 pack kernel failed");
}

void launch_pack_tiles_f16(const uint8_t* d_rgb, int64_t n, int64_t h, int64_t w, uint16_t* d_out,
                           uintptr_t stream) {
  if (n < 0 || h < 1 || w < 1) throw invalid_argument("tiles must be (n, h, w, 3) with h, w >= 1");
  if (n == 0) return;
  check_ptr(d_rgb, "tiles");
  check_ptr(d_out, "output");
  pack_kernel<true><<<grid_for(n * h * w), kThreads, 0, as_stream(stream)>>>(d_rgb, n, h * w, d_out,
                                                                             pack_args());
  check_launch("launching the float16 pack kernel failed");
}

}  // namespace virtime
