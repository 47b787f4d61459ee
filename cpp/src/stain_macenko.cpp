// Macenko estimation (CPU, double precision) and the CPU per-pixel loop. See stain_macenko.hpp.
#include "virtime/stain_macenko.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "virtime/errors.hpp"

namespace virtime {
namespace {

// Smallest maximum concentration accepted for a tile (OD units): below it the rescaling
// maxC_ref / maxC_tile would amplify noise without bound.
constexpr double kMinMaxConc = 1e-3;

const double* od_table_f64() {
  static const std::vector<double> table = [] {
    std::vector<double> t(256);
    for (int v = 0; v < 256; ++v) t[v] = std::log(256.0) - std::log(v + 1.0);
    return t;
  }();
  return table.data();
}

const float* od_table_f32() {
  // od_from_u8 in float32, as the device path's torch twin evaluates it.
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    for (int v = 0; v < 256; ++v) t[v] = od_from_u8(static_cast<uint8_t>(v));
    return t;
  }();
  return table.data();
}

// OD triplets (float, from the double table) of pixels whose OD is >= beta in every channel.
std::vector<float> tissue_od(const uint8_t* rgb, int64_t n_pixels, double beta) {
  const double* od = od_table_f64();
  std::vector<float> out;
  out.reserve(static_cast<size_t>(n_pixels) * 3);
  for (int64_t i = 0; i < n_pixels; ++i) {
    const uint8_t* p = rgb + 3 * i;
    const double r = od[p[0]], g = od[p[1]], b = od[p[2]];
    if (r >= beta && g >= beta && b >= beta) {
      out.push_back(static_cast<float>(r));
      out.push_back(static_cast<float>(g));
      out.push_back(static_cast<float>(b));
    }
  }
  return out;
}

// numpy.percentile's default ("linear") definition; reorders v.
double percentile_linear(std::vector<double>& v, double q) {
  const size_t n = v.size();
  const double rank = q / 100.0 * static_cast<double>(n - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const double frac = rank - static_cast<double>(lo);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
  const double a = v[lo];
  if (frac > 0.0 && lo + 1 < n) {
    const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, v.end());
    return a + (b - a) * frac;
  }
  return a;
}

// Cyclic Jacobi eigen-decomposition of a symmetric 3x3 (row-major). Eigenvalues descending in w,
// eigenvectors as the columns of v (row-major).
void jacobi_eigen_sym3(const double* a_in, double* w, double* v) {
  double a[9];
  std::copy(a_in, a_in + 9, a);
  for (int i = 0; i < 9; ++i) v[i] = (i % 4 == 0) ? 1.0 : 0.0;
  double scale = 0.0;
  for (int i = 0; i < 9; ++i) scale += a[i] * a[i];
  for (int sweep = 0; sweep < 64; ++sweep) {
    const double off = a[1] * a[1] + a[2] * a[2] + a[5] * a[5];
    if (off <= 1e-30 * scale || off == 0.0) break;
    static constexpr int kPairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
    for (const auto& pq : kPairs) {
      const int p = pq[0], q = pq[1];
      const double apq = a[p * 3 + q];
      if (apq == 0.0) continue;
      const double theta = (a[q * 3 + q] - a[p * 3 + p]) / (2.0 * apq);
      const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
      const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
      for (int k = 0; k < 3; ++k) {  // A <- A J
        const double akp = a[k * 3 + p], akq = a[k * 3 + q];
        a[k * 3 + p] = c * akp - s * akq;
        a[k * 3 + q] = s * akp + c * akq;
      }
      for (int k = 0; k < 3; ++k) {  // A <- J^T A
        const double apk = a[p * 3 + k], aqk = a[q * 3 + k];
        a[p * 3 + k] = c * apk - s * aqk;
        a[q * 3 + k] = s * apk + c * aqk;
      }
      a[p * 3 + q] = a[q * 3 + p] = 0.0;
      for (int k = 0; k < 3; ++k) {  // V <- V J
        const double vkp = v[k * 3 + p], vkq = v[k * 3 + q];
        v[k * 3 + p] = c * vkp - s * vkq;
        v[k * 3 + q] = s * vkp + c * vkq;
      }
    }
  }
  int order[3] = {0, 1, 2};
  std::sort(order, order + 3, [&](int i, int j) { return a[i * 4] > a[j * 4]; });
  double vs[9];
  for (int c = 0; c < 3; ++c) {
    w[c] = a[order[c] * 4];
    for (int r = 0; r < 3; ++r) vs[r * 3 + c] = v[r * 3 + order[c]];
  }
  std::copy(vs, vs + 9, v);
}

bool all_finite(const double* x, int n) {
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// max_percentile of the least-squares concentrations of the tissue pixels, per stain.
std::array<double, 2> tissue_max_conc(const std::vector<float>& od,
                                      const std::array<double, 6>& inv, double pct) {
  const size_t n = od.size() / 3;
  std::vector<double> c0(n), c1(n);
  for (size_t i = 0; i < n; ++i) {
    const double r = od[3 * i], g = od[3 * i + 1], b = od[3 * i + 2];
    c0[i] = inv[0] * r + inv[1] * g + inv[2] * b;
    c1[i] = inv[3] * r + inv[4] * g + inv[5] * b;
  }
  return {percentile_linear(c0, pct), percentile_linear(c1, pct)};
}

MacenkoEstimate estimate_from_tissue(const std::vector<float>& od, const MacenkoParams& prm) {
  MacenkoEstimate est;
  const int64_t n = static_cast<int64_t>(od.size() / 3);
  est.n_tissue = n;
  if (n < std::max<int64_t>(prm.min_tissue, 3)) {
    est.note = std::to_string(n) + " tissue pixels < min_tissue " + std::to_string(prm.min_tissue);
    return est;
  }
  // Covariance (unbiased, like numpy.cov) of the tissue OD.
  double mean[3] = {0, 0, 0};
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) mean[c] += od[3 * i + c];
  for (double& m : mean) m /= static_cast<double>(n);
  double cov[9] = {0};
  for (int64_t i = 0; i < n; ++i) {
    const double d[3] = {od[3 * i] - mean[0], od[3 * i + 1] - mean[1], od[3 * i + 2] - mean[2]};
    for (int r = 0; r < 3; ++r)
      for (int c = r; c < 3; ++c) cov[r * 3 + c] += d[r] * d[c];
  }
  for (int r = 0; r < 3; ++r)
    for (int c = r; c < 3; ++c) cov[c * 3 + r] = cov[r * 3 + c] /= static_cast<double>(n - 1);
  double w[3], v[9];
  jacobi_eigen_sym3(cov, w, v);
  if (!all_finite(w, 3) || !all_finite(v, 9) || !(w[0] > 1e-12)) {
    est.note = "tissue optical density has no spread (flat tile)";
    est.flat = true;
    return est;
  }
  // Plane of the two largest eigenvectors; signs made canonical (component sum >= 0) so the
  // angles of tissue pixels cluster around 0 instead of straddling +-pi.
  double e1[3] = {v[0], v[3], v[6]}, e2[3] = {v[1], v[4], v[7]};
  if (e1[0] + e1[1] + e1[2] < 0) for (double& x : e1) x = -x;
  if (e2[0] + e2[1] + e2[2] < 0) for (double& x : e2) x = -x;
  std::vector<double> phi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double r = od[3 * i], g = od[3 * i + 1], b = od[3 * i + 2];
    phi[static_cast<size_t>(i)] =
        std::atan2(r * e2[0] + g * e2[1] + b * e2[2], r * e1[0] + g * e1[1] + b * e1[2]);
  }
  const double a_lo = percentile_linear(phi, prm.alpha);
  const double a_hi = percentile_linear(phi, 100.0 - prm.alpha);
  double v_lo[3], v_hi[3];
  for (int c = 0; c < 3; ++c) {
    v_lo[c] = e1[c] * std::cos(a_lo) + e2[c] * std::sin(a_lo);
    v_hi[c] = e1[c] * std::cos(a_hi) + e2[c] * std::sin(a_hi);
  }
  // Hematoxylin first: the vector with the larger red OD component.
  const double* h = v_lo[0] >= v_hi[0] ? v_lo : v_hi;
  const double* e = v_lo[0] >= v_hi[0] ? v_hi : v_lo;
  std::array<double, 6> m{};
  for (int col = 0; col < 2; ++col) {
    const double* s = col == 0 ? h : e;
    const double norm = std::sqrt(s[0] * s[0] + s[1] * s[1] + s[2] * s[2]);
    const double sign = (s[0] + s[1] + s[2]) < 0 ? -1.0 : 1.0;
    for (int r = 0; r < 3; ++r) m[r * 2 + col] = norm > 0 ? sign * s[r] / norm : 0.0;
  }
  std::array<double, 6> inv{};
  if (!all_finite(m.data(), 6) || !pseudo_inverse_3x2(m, inv)) {
    est.note = "estimated stain vectors are parallel (single stain)";
    return est;
  }
  const auto mc = tissue_max_conc(od, inv, prm.max_percentile);
  if (!(mc[0] > kMinMaxConc) || !(mc[1] > kMinMaxConc) || !std::isfinite(mc[0]) ||
      !std::isfinite(mc[1])) {
    est.note = "a stain's maximum concentration is ~0 (stain absent)";
    return est;
  }
  est.ok = true;
  est.stain_matrix = m;
  est.max_conc = mc;
  return est;
}

void check_image(const uint8_t* rgb, int64_t h, int64_t w) {
  if (h < 0 || w < 0) throw invalid_argument("image height and width must be >= 0");
  if (h * w > 0 && rgb == nullptr) throw invalid_argument("image data is null");
}

}  // namespace

bool pseudo_inverse_3x2(const std::array<double, 6>& m, std::array<double, 6>& inv) {
  // G = M^T M (2x2), inv = G^-1 M^T.
  double g00 = 0, g01 = 0, g11 = 0;
  for (int r = 0; r < 3; ++r) {
    g00 += m[r * 2] * m[r * 2];
    g01 += m[r * 2] * m[r * 2 + 1];
    g11 += m[r * 2 + 1] * m[r * 2 + 1];
  }
  const double det = g00 * g11 - g01 * g01;
  // Relative test: det / (g00 g11) = sin^2 of the angle between the columns.
  if (!(g00 > 0) || !(g11 > 0) || !(det > 1e-8 * g00 * g11) || !std::isfinite(det)) return false;
  const double i00 = g11 / det, i01 = -g01 / det, i11 = g00 / det;
  for (int c = 0; c < 3; ++c) {
    inv[c] = i00 * m[c * 2] + i01 * m[c * 2 + 1];
    inv[3 + c] = i01 * m[c * 2] + i11 * m[c * 2 + 1];
  }
  return true;
}

MacenkoEstimate estimate_macenko(const uint8_t* rgb, int64_t n_pixels, const MacenkoParams& params) {
  check_image(rgb, n_pixels, 1);
  return estimate_from_tissue(tissue_od(rgb, n_pixels, params.beta), params);
}

void macenko_apply_cpu(const uint8_t* src, uint8_t* dst, int64_t n_pixels, const MacenkoApply& p) {
  const float* od = od_table_f32();
  for (int64_t i = 0; i < n_pixels; ++i) {
    const uint8_t* s = src + 3 * i;
    macenko_apply_od(od[s[0]], od[s[1]], od[s[2]], p, dst + 3 * i);
  }
}

MacenkoNormalizer::MacenkoNormalizer(MacenkoParams params) : params_(params) {
  if (!(params_.beta >= 0) || !std::isfinite(params_.beta))
    throw invalid_argument("Macenko beta must be a finite number >= 0");
  if (!(params_.alpha > 0 && params_.alpha < 50))
    throw invalid_argument("Macenko alpha must be in (0, 50) percent");
  if (!(params_.max_percentile > 0 && params_.max_percentile <= 100))
    throw invalid_argument("Macenko max_percentile must be in (0, 100]");
  if (params_.min_tissue < 3 || params_.min_tissue_fallback < 3 ||
      params_.min_tissue_fallback > params_.min_tissue)
    throw invalid_argument("Macenko needs 3 <= min_tissue_fallback <= min_tissue");
  set_reference(kMacenkoDefaultStainMatrix, kMacenkoDefaultMaxConc);
}

void MacenkoNormalizer::set_reference(const std::array<double, 6>& stain_matrix,
                                      const std::array<double, 2>& max_conc) {
  if (!all_finite(stain_matrix.data(), 6) || !all_finite(max_conc.data(), 2))
    throw invalid_argument("Macenko reference contains NaN or infinity");
  if (!(max_conc[0] > 0) || !(max_conc[1] > 0))
    throw invalid_argument("Macenko reference max concentrations must be > 0");
  std::array<double, 6> inv{};
  if (!pseudo_inverse_3x2(stain_matrix, inv))
    throw invalid_argument("Macenko reference stain vectors are zero or parallel");
  ref_ = stain_matrix;
  ref_inv_ = inv;
  ref_max_ = max_conc;
  fitted_ = true;
}

void MacenkoNormalizer::fit(const uint8_t* rgb, int64_t h, int64_t w) {
  check_image(rgb, h, w);
  const MacenkoEstimate est = estimate_macenko(rgb, h * w, params_);
  if (!est.ok) throw invalid_argument("cannot fit the Macenko reference to this image: " + est.note);
  set_reference(est.stain_matrix, est.max_conc);
}

StainOutcome MacenkoNormalizer::plan(const uint8_t* rgb, int64_t h, int64_t w,
                                     MacenkoApply& apply) const {
  check_image(rgb, h, w);
  StainOutcome out;
  const std::vector<float> od = tissue_od(rgb, h * w, params_.beta);
  const int64_t n = static_cast<int64_t>(od.size() / 3);
  auto fill = [&](const std::array<double, 6>& inv, const std::array<double, 2>& mc) {
    for (int i = 0; i < 6; ++i) apply.inv[i] = static_cast<float>(inv[i]);
    for (int i = 0; i < 6; ++i) apply.ref[i] = static_cast<float>(ref_[i]);
    for (int k = 0; k < 2; ++k) apply.scale[k] = static_cast<float>(ref_max_[k] / mc[k]);
  };
  std::string why;
  if (n >= params_.min_tissue) {
    const MacenkoEstimate est = estimate_from_tissue(od, params_);
    if (est.ok) {
      std::array<double, 6> inv{};
      pseudo_inverse_3x2(est.stain_matrix, inv);  // succeeded inside estimate_from_tissue
      fill(inv, est.max_conc);
      return out;
    }
    if (est.flat) {  // one colour: nothing to normalize, and rescaling would recolour it wholesale
      out.status = StainOutcome::Status::PassedThrough;
      out.note = est.note;
      return out;
    }
    why = est.note;
  } else {
    why = std::to_string(n) + " tissue pixels < min_tissue " + std::to_string(params_.min_tissue);
  }
  if (n >= params_.min_tissue_fallback) {
    const auto mc = tissue_max_conc(od, ref_inv_, params_.max_percentile);
    if (mc[0] > kMinMaxConc && mc[1] > kMinMaxConc && std::isfinite(mc[0]) && std::isfinite(mc[1])) {
      fill(ref_inv_, mc);
      out.status = StainOutcome::Status::FallbackMatrix;
      out.note = why + "; used the reference stain matrix";
      return out;
    }
    out.status = StainOutcome::Status::PassedThrough;
    out.note = why + "; a stain's maximum concentration is ~0 under the reference matrix";
    return out;
  }
  out.status = StainOutcome::Status::PassedThrough;
  out.note = std::to_string(n) + " tissue pixels < min_tissue_fallback " +
             std::to_string(params_.min_tissue_fallback);
  return out;
}

StainOutcome MacenkoNormalizer::transform(uint8_t* rgb, int64_t h, int64_t w) const {
  MacenkoApply apply{};
  StainOutcome out = plan(rgb, h, w, apply);
  if (out.status != StainOutcome::Status::PassedThrough) macenko_apply_cpu(rgb, rgb, h * w, apply);
  return out;
}

}  // namespace virtime
