// Reinhard colour transfer and the deterministic reference H&E image. See stain_reinhard.hpp.
#include "virtime/stain_reinhard.hpp"

#include <cmath>
#include <vector>

#include "virtime/color.hpp"
#include "virtime/errors.hpp"
#include "virtime/stain_macenko.hpp"

namespace virtime {
namespace {

void check_image(const uint8_t* rgb, int64_t h, int64_t w) {
  if (h < 0 || w < 0) throw invalid_argument("image height and width must be >= 0");
  if (h * w > 0 && rgb == nullptr) throw invalid_argument("image data is null");
}

// Tissue: Euclidean norm of the OD vector (OD = ln 256 - ln(I + 1), as in Macenko) >= beta.
// A norm rather than Macenko's all-channel test keeps pale eosin pixels in the statistics.
std::vector<uint8_t> tissue_mask(const uint8_t* rgb, int64_t n, double beta) {
  static const std::vector<double> od = [] {
    std::vector<double> t(256);
    for (int v = 0; v < 256; ++v) t[v] = std::log(256.0) - std::log(v + 1.0);
    return t;
  }();
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  const double b2 = beta * beta;
  for (int64_t i = 0; i < n; ++i) {
    const double r = od[rgb[3 * i]], g = od[rgb[3 * i + 1]], b = od[rgb[3 * i + 2]];
    mask[static_cast<size_t>(i)] = (r * r + g * g + b * b) >= b2;
  }
  return mask;
}

LabStats stats_of(const std::vector<float>& lab, const std::vector<uint8_t>& mask) {
  LabStats s;
  const size_t n = mask.size();
  for (size_t i = 0; i < n; ++i) {
    if (!mask[i]) continue;
    ++s.n_tissue;
    for (int c = 0; c < 3; ++c) s.mean[c] += lab[3 * i + c];
  }
  if (s.n_tissue == 0) return s;
  for (double& m : s.mean) m /= static_cast<double>(s.n_tissue);
  std::array<double, 3> ss{};
  for (size_t i = 0; i < n; ++i) {
    if (!mask[i]) continue;
    for (int c = 0; c < 3; ++c) {
      const double d = lab[3 * i + c] - s.mean[c];
      ss[c] += d * d;
    }
  }
  for (int c = 0; c < 3; ++c) s.std[c] = std::sqrt(ss[c] / static_cast<double>(s.n_tissue));
  return s;
}

// A well-mixed 32-bit hash (no state): deterministic "randomness" for the reference image.
uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
double unit(uint32_t x) { return (hash32(x) & 0xffffff) / double(0x1000000); }

}  // namespace

LabStats reinhard_stats(const uint8_t* rgb, int64_t n_pixels, const ReinhardParams& params) {
  check_image(rgb, n_pixels, 1);
  std::vector<float> lab(static_cast<size_t>(n_pixels) * 3);
  rgb_to_lab_reinhard_n(rgb, lab.data(), n_pixels);
  return stats_of(lab, tissue_mask(rgb, n_pixels, params.beta));
}

void render_reference_he(uint8_t* rgb, int64_t h, int64_t w) {
  check_image(rgb, h, w);
  const auto& m = kMacenkoDefaultStainMatrix;
  const double pi = 3.14159265358979323846;
  const int64_t cell = 16;  // one nucleus per 16x16 cell
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const double fx = double(x) / double(w > 1 ? w : 1), fy = double(y) / double(h > 1 ? h : 1);
      // White glass where a smooth field is low (about a fifth of the image).
      const double field = std::sin(2 * pi * (1.3 * fx) + 0.7) + std::cos(2 * pi * (0.9 * fy) + 0.3);
      double ch = 0.0, ce = 0.0;
      if (field > -0.9) {
        ce = 0.25 + 0.45 * (0.5 + 0.5 * std::sin(0.11 * x + 0.07 * y)) *
                        (0.5 + 0.5 * std::cos(0.05 * x - 0.13 * y));
        ch = 0.10;
        // The nucleus of this pixel's cell (and neighbours', so nuclei may cross cell borders).
        const int64_t cx0 = x / cell, cy0 = y / cell;
        for (int64_t cy = cy0 - 1; cy <= cy0 + 1; ++cy) {
          for (int64_t cx = cx0 - 1; cx <= cx0 + 1; ++cx) {
            const uint32_t id = static_cast<uint32_t>((cy + 7) * 92821 + (cx + 11) * 68917);
            if (unit(id ^ 0x5bd1e995U) < 0.3) continue;  // no nucleus in this cell
            const double nx = (cx + 0.2 + 0.6 * unit(id)) * cell;
            const double ny = (cy + 0.2 + 0.6 * unit(id * 3u + 1u)) * cell;
            const double rad = 3.0 + 3.0 * unit(id * 7u + 5u);
            const double d = std::sqrt((x - nx) * (x - nx) + (y - ny) * (y - ny));
            const double edge = std::fmin(std::fmax((rad - d) / 1.5 + 0.5, 0.0), 1.0);
            ch = std::fmax(ch, 0.10 + edge * (1.1 + 0.7 * unit(id * 13u + 3u)));
          }
        }
      }
      uint8_t* p = rgb + 3 * (y * w + x);
      for (int r = 0; r < 3; ++r) {
        double v = 256.0 * std::exp(-(m[r * 2] * ch + m[r * 2 + 1] * ce)) - 1.0;
        v = std::fmin(std::fmax(v, 0.0), 255.0);
        p[r] = static_cast<uint8_t>(std::floor(v + 0.5));
      }
    }
  }
}

ReinhardNormalizer::ReinhardNormalizer(ReinhardParams params) : params_(params) {
  if (!(params_.beta >= 0) || !std::isfinite(params_.beta))
    throw invalid_argument("Reinhard beta must be a finite number >= 0");
  if (params_.min_tissue < 2) throw invalid_argument("Reinhard min_tissue must be >= 2");
  if (!(params_.min_std > 0)) throw invalid_argument("Reinhard min_std must be > 0");
  static const LabStats kDefault = [] {
    const int64_t n = 256;
    std::vector<uint8_t> img(static_cast<size_t>(n * n * 3));
    render_reference_he(img.data(), n, n);
    return reinhard_stats(img.data(), n * n, ReinhardParams{});
  }();
  set_reference(kDefault.mean, kDefault.std);
}

void ReinhardNormalizer::set_reference(const std::array<double, 3>& mean,
                                       const std::array<double, 3>& std) {
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(mean[c]) || !std::isfinite(std[c]))
      throw invalid_argument("Reinhard reference contains NaN or infinity");
    if (!(std[c] > 0)) throw invalid_argument("Reinhard reference standard deviations must be > 0");
  }
  mean_ = mean;
  std_ = std;
  fitted_ = true;
}

void ReinhardNormalizer::fit(const uint8_t* rgb, int64_t h, int64_t w) {
  check_image(rgb, h, w);
  const LabStats s = reinhard_stats(rgb, h * w, params_);
  if (s.n_tissue < params_.min_tissue)
    throw invalid_argument("cannot fit the Reinhard reference to this image: " +
                           std::to_string(s.n_tissue) + " tissue pixels < min_tissue " +
                           std::to_string(params_.min_tissue));
  for (int c = 0; c < 3; ++c)
    if (!(s.std[c] >= params_.min_std))
      throw invalid_argument("cannot fit the Reinhard reference to this image: it has no colour spread");
  set_reference(s.mean, s.std);
}

StainOutcome ReinhardNormalizer::transform(uint8_t* rgb, int64_t h, int64_t w) const {
  check_image(rgb, h, w);
  StainOutcome out;
  const int64_t n = h * w;
  std::vector<float> lab(static_cast<size_t>(n) * 3);
  rgb_to_lab_reinhard_n(rgb, lab.data(), n);
  const LabStats s = stats_of(lab, tissue_mask(rgb, n, params_.beta));
  if (s.n_tissue < params_.min_tissue) {
    out.status = StainOutcome::Status::PassedThrough;
    out.note = std::to_string(s.n_tissue) + " tissue pixels < min_tissue " +
               std::to_string(params_.min_tissue);
    return out;
  }
  for (int c = 0; c < 3; ++c) {
    if (!(s.std[c] >= params_.min_std)) {
      out.status = StainOutcome::Status::PassedThrough;
      out.note = "tissue has no colour spread (flat tile)";
      return out;
    }
  }
  float gain[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    gain[c] = static_cast<float>(std_[c] / s.std[c]);
    shift[c] = static_cast<float>(mean_[c] - s.mean[c] * (std_[c] / s.std[c]));
  }
  for (int64_t i = 0; i < n; ++i) {
    float* p = lab.data() + 3 * i;
    for (int c = 0; c < 3; ++c) p[c] = p[c] * gain[c] + shift[c];
    lab_reinhard_to_rgb(p, rgb + 3 * i);
  }
  return out;
}

}  // namespace virtime
