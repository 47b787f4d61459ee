// Macenko stain normalization (Macenko et al., ISBI 2009): estimate the hematoxylin and eosin
// optical-density vectors of a tile from the plane of the two largest eigenvectors of its OD
// covariance and the extreme angles in that plane, then map the tile's stain concentrations onto
// a reference matrix. Guards make it total: background, tiny, black or constant tiles fall back to
// the reference matrix or pass through unchanged, and nothing produces NaN.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "virtime/macenko_pixel.hpp"
#include "virtime/stain.hpp"

namespace virtime {

struct MacenkoParams {
  double beta = 0.15;          // a pixel is tissue when its OD is >= beta in all three channels
  double alpha = 1.0;          // angle percentiles alpha and 100 - alpha give the two stain vectors
  double max_percentile = 99;  // percentile of tissue concentrations taken as each stain's maximum
  int64_t min_tissue = 500;    // tissue pixels needed to estimate a tile's own stain matrix
  int64_t min_tissue_fallback = 50;  // below min_tissue but at least this: use the reference matrix
};

// Widely published H&E reference (columns: hematoxylin, eosin; rows: R, G, B OD), row-major 3x2.
constexpr std::array<double, 6> kMacenkoDefaultStainMatrix = {0.5626, 0.2159, 0.7201,
                                                              0.8012, 0.4062, 0.5581};
constexpr std::array<double, 2> kMacenkoDefaultMaxConc = {1.9705, 1.0308};

// Stain matrix and maximum concentrations estimated from one image.
struct MacenkoEstimate {
  bool ok = false;              // false: too few tissue pixels or a degenerate estimate
  std::string note;             // why not ok
  bool flat = false;            // not ok because the tissue OD has no spread (one colour)
  int64_t n_tissue = 0;         // pixels passing the OD threshold
  std::array<double, 6> stain_matrix{};  // row-major 3x2, unit columns, hematoxylin first
  std::array<double, 2> max_conc{};      // max_percentile of tissue concentrations per stain
};

// Estimates a stain matrix from `n_pixels` interleaved RGB pixels (needs params.min_tissue).
MacenkoEstimate estimate_macenko(const uint8_t* rgb, int64_t n_pixels, const MacenkoParams& params);

// Least-squares pseudo-inverse (M^T M)^-1 M^T of a row-major 3x2 matrix into a row-major 2x3.
// Returns false (leaving `inv` untouched) when the columns are (nearly) parallel.
bool pseudo_inverse_3x2(const std::array<double, 6>& m, std::array<double, 6>& inv);

// Applies `p` to every pixel (src may equal dst).
void macenko_apply_cpu(const uint8_t* src, uint8_t* dst, int64_t n_pixels, const MacenkoApply& p);

class MacenkoNormalizer final : public StainNormalizer {
 public:
  // Starts fitted to the default reference (kMacenkoDefaultStainMatrix / kMacenkoDefaultMaxConc).
  explicit MacenkoNormalizer(MacenkoParams params = {});

  std::string name() const override { return "macenko"; }
  // Fits the reference to a target image; throws InvalidArgument when it has too little tissue.
  void fit(const uint8_t* rgb, int64_t h, int64_t w) override;
  bool fitted() const override { return fitted_; }
  StainOutcome transform(uint8_t* rgb, int64_t h, int64_t w) const override;

  // Decides what transform() would do to a tile: fills `apply` unless the outcome is
  // PassedThrough. Used by transform() and by callers that run the per-pixel step on a GPU.
  StainOutcome plan(const uint8_t* rgb, int64_t h, int64_t w, MacenkoApply& apply) const;

  // Sets the reference directly; validates finiteness, positive maxima and independent columns.
  void set_reference(const std::array<double, 6>& stain_matrix, const std::array<double, 2>& max_conc);
  const std::array<double, 6>& stain_matrix() const { return ref_; }
  const std::array<double, 2>& max_concentrations() const { return ref_max_; }
  const MacenkoParams& params() const { return params_; }

 private:
  MacenkoParams params_;
  std::array<double, 6> ref_{};
  std::array<double, 6> ref_inv_{};
  std::array<double, 2> ref_max_{};
  bool fitted_ = false;
};

}  // namespace virtime
