// Reinhard l-alpha-beta conversions. See color.hpp.
#include "virtime/color.hpp"

#include <array>
#include <cmath>

namespace virtime {
namespace {

// RGB -> LMS (Reinhard et al. 2001, eq. 4).
constexpr double kRgbToLms[9] = {0.3811, 0.5783, 0.0402, 0.1967, 0.7244,
                                 0.0782, 0.0241, 0.1288, 0.8444};

// The exact inverse of kRgbToLms (not the paper's rounded one), so the round trip is exact.
const std::array<double, 9>& lms_to_rgb() {
  static const std::array<double, 9> inv = [] {
    const double* m = kRgbToLms;
    std::array<double, 9> r{};
    r[0] = m[4] * m[8] - m[5] * m[7];
    r[1] = m[2] * m[7] - m[1] * m[8];
    r[2] = m[1] * m[5] - m[2] * m[4];
    r[3] = m[5] * m[6] - m[3] * m[8];
    r[4] = m[0] * m[8] - m[2] * m[6];
    r[5] = m[2] * m[3] - m[0] * m[5];
    r[6] = m[3] * m[7] - m[4] * m[6];
    r[7] = m[1] * m[6] - m[0] * m[7];
    r[8] = m[0] * m[4] - m[1] * m[3];
    const double det = m[0] * r[0] + m[1] * r[3] + m[2] * r[6];
    for (double& x : r) x /= det;
    return r;
  }();
  return inv;
}

const double kS3 = std::sqrt(3.0), kS6 = std::sqrt(6.0), kS2 = std::sqrt(2.0);

}  // namespace

void rgb_to_lab_reinhard(const uint8_t* rgb, float* lab) {
  const double c[3] = {(rgb[0] + 1.0) / 256.0, (rgb[1] + 1.0) / 256.0, (rgb[2] + 1.0) / 256.0};
  double lg[3];
  for (int r = 0; r < 3; ++r) {
    const double* m = kRgbToLms + 3 * r;
    lg[r] = std::log10(m[0] * c[0] + m[1] * c[1] + m[2] * c[2]);
  }
  lab[0] = static_cast<float>((lg[0] + lg[1] + lg[2]) / kS3);
  lab[1] = static_cast<float>((lg[0] + lg[1] - 2.0 * lg[2]) / kS6);
  lab[2] = static_cast<float>((lg[0] - lg[1]) / kS2);
}

void lab_reinhard_to_rgb(const float* lab, uint8_t* rgb) {
  const double l = lab[0] / kS3, a = lab[1] / kS6, b = lab[2] / kS2;
  const double lms[3] = {std::pow(10.0, l + a + b), std::pow(10.0, l + a - b),
                         std::pow(10.0, l - 2.0 * a)};
  const auto& m = lms_to_rgb();
  for (int r = 0; r < 3; ++r) {
    double v = 256.0 * (m[3 * r] * lms[0] + m[3 * r + 1] * lms[1] + m[3 * r + 2] * lms[2]) - 1.0;
    v = std::fmin(std::fmax(v, 0.0), 255.0);  // fmax maps NaN to 0
    rgb[r] = static_cast<uint8_t>(std::floor(v + 0.5));
  }
}

void rgb_to_lab_reinhard_n(const uint8_t* rgb, float* lab, int64_t n_pixels) {
  for (int64_t i = 0; i < n_pixels; ++i) rgb_to_lab_reinhard(rgb + 3 * i, lab + 3 * i);
}

void lab_reinhard_to_rgb_n(const float* lab, uint8_t* rgb, int64_t n_pixels) {
  for (int64_t i = 0; i < n_pixels; ++i) lab_reinhard_to_rgb(lab + 3 * i, rgb + 3 * i);
}

}  // namespace virtime
