// Per-element math of the post-processing (src/postprocess.cpp). Branch-free and built from adds,
// multiplies and integer bit moves only, so the CPU loops vectorize without -ffast-math, and each
// multiply and add rounds on its own (no FMA contraction: see VIRTIME_SIMD_CLONES there).
#pragma once
#include <stdint.h>
#include <string.h>

namespace virtime {

// Bit casts (memcpy is the portable form; the compiler folds it).
inline float pp_bits_to_float(int32_t i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}
inline int32_t pp_float_to_bits(float f) {
  int32_t i;
  memcpy(&i, &f, sizeof i);
  return i;
}

// a*b, a+b, a/b rounded once each (see the note at the top).
inline float pp_mul(float a, float b) {
  return a * b;
}
inline float pp_add(float a, float b) {
  return a + b;
}
inline float pp_div(float a, float b) {
  return a / b;
}

// exp(x) for x in [-87, 87] (callers clamp), relative error ~2 ulp: x = n·ln2 + r with n rounded
// to nearest by the 1.5·2^23 trick, exp(r) by a degree-6 polynomial on |r| <= ln2/2, and 2^n
// built in the exponent bits.
inline float pp_exp(float x) {
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
inline float pp_sigmoid(float x) {
  float c = x < -87.0f ? -87.0f : x;
  c = c > 87.0f ? 87.0f : c;
  c = x != x ? x : c;  // keep NaN visible instead of hiding it as a probability
  return pp_div(1.0f, pp_add(1.0f, pp_exp(-c)));
}

}  // namespace virtime
