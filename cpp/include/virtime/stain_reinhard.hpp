// Reinhard colour transfer (Reinhard et al., 2001) for H&E: in l-alpha-beta space, match each
// channel's mean and standard deviation over the tile's tissue pixels to the reference's, and
// apply that affine map to every pixel. Background-only and flat tiles pass through unchanged.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "virtime/stain.hpp"

namespace virtime {

struct ReinhardParams {
  double beta = 0.15;        // a pixel is tissue when the Euclidean norm of its OD is >= beta
  int64_t min_tissue = 500;  // tissue pixels needed to take a tile's statistics
  double min_std = 1e-4;     // a channel spread below this is flat: the tile passes through
};

struct LabStats {
  int64_t n_tissue = 0;
  std::array<double, 3> mean{};
  std::array<double, 3> std{};  // population standard deviation (ddof = 0)
};

// Mean and standard deviation of l-alpha-beta over tissue pixels (zeros when there are none).
LabStats reinhard_stats(const uint8_t* rgb, int64_t n_pixels, const ReinhardParams& params);

// A deterministic synthetic H&E image (Beer-Lambert with the default Macenko stain matrix: nuclei,
// eosin stroma, some white background), written into `rgb` (h*w*3). No random state: the same
// pixels on every platform, so the Reinhard default reference is reproducible.
void render_reference_he(uint8_t* rgb, int64_t h, int64_t w);

class ReinhardNormalizer final : public StainNormalizer {
 public:
  // Starts fitted to the statistics of render_reference_he(256, 256).
  explicit ReinhardNormalizer(ReinhardParams params = {});

  std::string name() const override { return "reinhard"; }
  void fit(const uint8_t* rgb, int64_t h, int64_t w) override;
  bool fitted() const override { return fitted_; }
  StainOutcome transform(uint8_t* rgb, int64_t h, int64_t w) const override;

  void set_reference(const std::array<double, 3>& mean, const std::array<double, 3>& std);
  const std::array<double, 3>& mean() const { return mean_; }
  const std::array<double, 3>& stddev() const { return std_; }
  const ReinhardParams& params() const { return params_; }

 private:
  ReinhardParams params_;
  std::array<double, 3> mean_{};
  std::array<double, 3> std_{};
  bool fitted_ = false;
};

}  // namespace virtime
