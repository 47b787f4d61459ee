// Reinhard et al. (2001) l-alpha-beta colour space, used by the Reinhard stain normalizer.
// RGB is first mapped to (I + 1) / 256 (the same offset as the Macenko OD, so black never reaches
// log 0), then to LMS with Reinhard's matrix, log10, and the decorrelating l-alpha-beta rotation.
#pragma once
#include <cstdint>

namespace virtime {

// RGB (8-bit) -> l, alpha, beta.
void rgb_to_lab_reinhard(const uint8_t* rgb, float* lab);
// l, alpha, beta -> RGB (8-bit), the exact inverse of rgb_to_lab_reinhard before clipping to
// [0, 255] and rounding half up; NaN maps to 0.
void lab_reinhard_to_rgb(const float* lab, uint8_t* rgb);

// Whole images of n_pixels interleaved pixels.
void rgb_to_lab_reinhard_n(const uint8_t* rgb, float* lab, int64_t n_pixels);
void lab_reinhard_to_rgb_n(const float* lab, uint8_t* rgb, int64_t n_pixels);

}  // namespace virtime
