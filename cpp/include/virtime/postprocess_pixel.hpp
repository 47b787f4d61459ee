// Per-element math of the post-processing and packing steps, shared verbatim by the CPU twins
// (src/postprocess.cpp) and the CUDA kernels (cuda/postprocess_kernels.cu), so the GPU result can be
// checked against the CPU one. Plain C++ under a host compiler; __host__ __device__ under nvcc.
// Branch-free and built from adds, multiplies and integer bit moves only, so the CPU loops
// vectorize without -ffast-math. On the device every multiply and add is an explicit
// round-to-nearest intrinsic, which nvcc never fuses into an FMA: both sides then round every
// operation the same way and give bit-identical probabilities.
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define VIRTIME_PP_HD __host__ __device__
#else
#define VIRTIME_PP_HD
#endif

namespace virtime {

// Bit casts that work on host and device (memcpy is the portable form; nvcc and gcc fold it).
VIRTIME_PP_HD inline float pp_bits_to_float(int32_t i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}
VIRTIME_PP_HD inline int32_t pp_float_to_bits(float f) {
  int32_t i;
  memcpy(&i, &f, sizeof i);
  return i;
}

// a*b, a+b, a/b rounded once each, on host and device alike (see the note at the top).
VIRTIME_PP_HD inline float pp_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
VIRTIME_PP_HD inline float pp_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
VIRTIME_PP_HD inline float pp_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// exp(x) for x in [-87, 87] (callers clamp), relative error ~2 ulp: x = n·ln2 + r with n rounded
// to nearest by the 1.5·2^23 trick, exp(r) by a degree-6 polynomial on |r| <= ln2/2, and 2^n
// built in the exponent bits.
VIRTIME_PP_HD inline float pp_exp(float x) {
  const float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float t = pp_add(pp_mul(x, 1.44269504088896341f), kShift);
  const int32_t n = pp_float_to_bits(t) - pp_float_to_bits(kShift);
  const float nf = pp_add(t, -kShift);
  // Cody-Waite split of ln2 so that r = x - n·ln2 keeps its low bits.
  float r = pp_add(x, pp_mul(nf, -0.693359375f));
  r = pp_add(r, pp_mul(nf, 2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = pp_add(pp_mul(p, r), 1.3981999507e-3f);
  p = pp_add(pp_mul(p, r), 8.3334519073e-3f);
  p = pp_add(pp_mul(p, r), 4.1665795894e-2f);
  p = pp_add(pp_mul(p, r), 1.6666665459e-1f);
  p = pp_add(pp_mul(p, r), 5.0000001201e-1f);
  const float er = pp_add(pp_add(pp_mul(p, pp_mul(r, r)), r), 1.0f);
  return pp_mul(er, pp_bits_to_float((n + 127) << 23));
}

// Logistic sigmoid 1 / (1 + exp(-x)). The logit is clamped to ±87 first (sigmoid is then within
// 2e-38 of 0 or 1), which also maps +inf/-inf to 1/0; NaN logits give NaN.
VIRTIME_PP_HD inline float pp_sigmoid(float x) {
  float c = x < -87.0f ? -87.0f : x;
  c = c > 87.0f ? 87.0f : c;
  c = x != x ? x : c;  // keep NaN visible instead of hiding it as a probability
  return pp_div(1.0f, pp_add(1.0f, pp_exp(-c)));
}

// ImageNet normalization of one 8-bit channel value, as the CPU packer (src/image.cpp) computes it.
// float32: v·scale + bias with scale = 1/(255·std), bias = -mean/std, computed by
// pack_f32_constants; the device path uses explicit round-to-nearest operations so nvcc does not
// fuse them into an FMA, which would round once instead of twice.
struct PackConstants {
  float scale[3];
  float bias[3];
  float mean[3];
  float std[3];
};

VIRTIME_PP_HD inline float pp_pack_f32(uint8_t v, float scale, float bias) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(static_cast<float>(v), scale), bias);
#else
  return static_cast<float>(v) * scale + bias;
#endif
}

// float16 packing rounds (v/255 - mean)/std (computed in float32) to the nearest half.
VIRTIME_PP_HD inline float pp_pack_f16_value(uint8_t v, float mean, float std) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(__fsub_rn(__fdiv_rn(static_cast<float>(v), 255.0f), mean), std);
#else
  return (static_cast<float>(v) / 255.0f - mean) / std;
#endif
}

}  // namespace virtime
