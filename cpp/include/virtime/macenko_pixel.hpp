// Per-pixel part of the Macenko transform (stain_macenko.cpp), in float32 in a fixed order of
// operations, which the device path's torch twin (translation/device_stain.py) follows.
#pragma once
#include <math.h>
#include <stdint.h>

namespace virtime {

// Everything the per-pixel step needs, estimated once per tile on the CPU:
//   C   = inv · OD            (inv: 2x3 least-squares pseudo-inverse of the tile's stain matrix)
//   C' = C * scale            (scale[k] = maxC_ref[k] / maxC_tile[k])
//   OD' = ref · C'            (ref: 3x2 reference stain matrix)
// Row-major storage: inv[r*3 + c], ref[r*2 + c].
struct MacenkoApply {
  float inv[6];
  float scale[2];
  float ref[6];
};

// Optical density of an 8-bit intensity: OD = -ln((I + 1) / 256) = ln 256 - ln(I + 1).
// I in [0, 255] maps to OD in [0, ln 256 ≈ 5.545]: never log(0), never negative.
inline float od_from_u8(uint8_t v) {
  return logf(256.0f) - logf(static_cast<float>(v) + 1.0f);
}

// Exact inverse of od_from_u8 on the real line: I = 256 * exp(-OD) - 1, clipped to [0, 255] and
// rounded half up. fmaxf/fminf also map NaN to 0 and +inf to 255, so the output is always defined.
inline uint8_t u8_from_od(float od) {
  float v = 256.0f * expf(-od) - 1.0f;
  v = fminf(fmaxf(v, 0.0f), 255.0f);
  return static_cast<uint8_t>(floorf(v + 0.5f));
}

// One pixel: OD (3) -> concentrations (2) -> rescaled -> reference OD (3) -> RGB (3).
inline void macenko_apply_od(float od0, float od1, float od2, const MacenkoApply& p,
                             uint8_t* out) {
  const float c0 = (p.inv[0] * od0 + p.inv[1] * od1 + p.inv[2] * od2) * p.scale[0];
  const float c1 = (p.inv[3] * od0 + p.inv[4] * od1 + p.inv[5] * od2) * p.scale[1];
  out[0] = u8_from_od(p.ref[0] * c0 + p.ref[1] * c1);
  out[1] = u8_from_od(p.ref[2] * c0 + p.ref[3] * c1);
  out[2] = u8_from_od(p.ref[4] * c0 + p.ref[5] * c1);
}

}  // namespace virtime
