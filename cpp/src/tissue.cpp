#include "virtime/tissue.hpp"

#include <algorithm>
#include <cmath>
#include <deque>

#include "virtime/errors.hpp"

namespace virtime {

int otsu_threshold(const std::vector<uint64_t>& hist) {
  uint64_t total = 0;
  double sum_all = 0;
  for (int i = 0; i < 256; ++i) {
    total += hist[i];
    sum_all += static_cast<double>(i) * hist[i];
  }
  if (total == 0) return 255;
  double best = -1.0, w0 = 0, sum0 = 0;
  int best_t = 255;
  for (int t = 0; t < 255; ++t) {
    w0 += hist[t];
    sum0 += static_cast<double>(t) * hist[t];
    const double w1 = static_cast<double>(total) - w0;
    if (w0 == 0 || w1 == 0) continue;
    const double m0 = sum0 / w0, m1 = (sum_all - sum0) / w1;
    const double between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      best_t = t;
    }
  }
  return best_t;  // 255 when every pixel has one value (no split exists)
}

namespace {

// Separable min (erode=true) or max filter over a (2r+1)^2 square; out-of-image pixels are ignored.
std::vector<uint8_t> box_filter(const std::vector<uint8_t>& m, int64_t w, int64_t h, int r,
                                bool erode) {
  if (r <= 0) return m;
  std::vector<uint8_t> tmp(m.size()), out(m.size());
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      uint8_t v = erode ? 1 : 0;
      for (int64_t k = std::max<int64_t>(0, x - r); k <= std::min<int64_t>(w - 1, x + r); ++k) {
        v = erode ? std::min(v, m[y * w + k]) : std::max(v, m[y * w + k]);
      }
      tmp[y * w + x] = v;
    }
  }
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      uint8_t v = erode ? 1 : 0;
      for (int64_t k = std::max<int64_t>(0, y - r); k <= std::min<int64_t>(h - 1, y + r); ++k) {
        v = erode ? std::min(v, tmp[k * w + x]) : std::max(v, tmp[k * w + x]);
      }
      out[y * w + x] = v;
    }
  }
  return out;
}

// Labels connected components of pixels equal to `value`; calls keep(area, touches_border) and
// flips the components it rejects. 8-connectivity for tissue, 4 for holes (the usual dual pair).
template <typename Keep>
void filter_components(std::vector<uint8_t>& m, int64_t w, int64_t h, uint8_t value, bool eight,
                       Keep keep) {
  std::vector<uint8_t> seen(m.size(), 0);
  std::vector<int64_t> component;
  std::deque<int64_t> queue;
  for (int64_t start = 0; start < w * h; ++start) {
    if (seen[start] || m[start] != value) continue;
    component.clear();
    bool border = false;
    seen[start] = 1;
    queue.push_back(start);
    while (!queue.empty()) {
      const int64_t p = queue.front();
      queue.pop_front();
      component.push_back(p);
      const int64_t px = p % w, py = p / w;
      if (px == 0 || py == 0 || px == w - 1 || py == h - 1) border = true;
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          if ((dx == 0 && dy == 0) || (!eight && dx != 0 && dy != 0)) continue;
          const int64_t nx = px + dx, ny = py + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          const int64_t q = ny * w + nx;
          if (!seen[q] && m[q] == value) {
            seen[q] = 1;
            queue.push_back(q);
          }
        }
      }
    }
    if (!keep(static_cast<int64_t>(component.size()), border)) {
      for (int64_t p : component) m[p] = static_cast<uint8_t>(1 - value);
    }
  }
}

}  // namespace

std::vector<uint8_t> erode(const std::vector<uint8_t>& m, int64_t w, int64_t h, int r) {
  return box_filter(m, w, h, r, true);
}

std::vector<uint8_t> dilate(const std::vector<uint8_t>& m, int64_t w, int64_t h, int r) {
  return box_filter(m, w, h, r, false);
}

TissueMask detect_tissue_rgb(const uint8_t* rgb, int64_t w, int64_t h, double mpp,
                             const TissueParams& p) {
  TissueMask out;
  out.width = w;
  out.height = h;
  out.mpp = mpp;
  out.mask.assign(static_cast<size_t>(w * h), 0);
  if (w <= 0 || h <= 0) return out;
  std::vector<uint8_t> sat(static_cast<size_t>(w * h)), grey(static_cast<size_t>(w * h));
  std::vector<uint64_t> hs(256, 0), hg(256, 0);
  for (int64_t i = 0; i < w * h; ++i) {
    const int r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
    sat[i] = static_cast<uint8_t>(mx == 0 ? 0 : (255 * (mx - mn) + mx / 2) / mx);
    grey[i] = static_cast<uint8_t>((299 * r + 587 * g + 114 * b + 500) / 1000);
    ++hs[sat[i]];
    ++hg[grey[i]];
  }
  // Otsu thresholds, clamped: glass never passes the saturation floor, and a slide that is
  // tissue everywhere is not split in two by Otsu (caps on both thresholds).
  const double sat_floor = 255.0 * p.min_saturation;
  const double ts = std::clamp<double>(otsu_threshold(hs), sat_floor, std::max(sat_floor, 0.25 * 255));
  const double tg = std::clamp<double>(otsu_threshold(hg), std::min(200.0, p.max_grey), p.max_grey);
  out.saturation_threshold = ts / 255.0;
  out.grey_threshold = tg;
  // A uniform image (blank glass, a uniformly dark or uniformly coloured slide) has no grey-level
  // spread; real tissue always has nuclei against eosin. Nothing to separate: no tissue.
  {
    const uint64_t n = static_cast<uint64_t>(w * h);
    uint64_t acc = 0;
    int p01 = -1, p99 = 255;  // 0.1 and 99.9 percentiles: tissue may cover under 1%
    for (int i = 0; i < 256; ++i) {
      acc += hg[i];
      if (p01 < 0 && acc * 1000 > n) p01 = i;
      if (acc * 1000 >= n * 999) {
        p99 = i;
        break;
      }
    }
    if (p99 - std::max(p01, 0) < 255.0 * p.min_contrast) return out;
  }
  for (int64_t i = 0; i < w * h; ++i) {
    out.mask[i] = (sat[i] > ts && grey[i] < tg && grey[i] >= p.min_grey) ? 1 : 0;
  }
  // Opening removes isolated specks and thin lines; closing bridges small gaps inside tissue.
  out.mask = dilate(erode(out.mask, w, h, p.open_radius), w, h, p.open_radius);
  out.mask = erode(dilate(out.mask, w, h, p.close_radius), w, h, p.close_radius);
  const double px_area = (mpp > 0 ? mpp * mpp : 144.0);
  const int64_t min_component = static_cast<int64_t>(std::ceil(p.min_component_um2 / px_area));
  const int64_t max_hole = static_cast<int64_t>(std::floor(p.max_hole_um2 / px_area));
  filter_components(out.mask, w, h, 0, false, [&](int64_t area, bool border) {
    return border || area > max_hole;  // small enclosed holes are filled
  });
  filter_components(out.mask, w, h, 1, true,
                    [&](int64_t area, bool) { return area >= min_component; });
  return out;
}

TissueMask detect_tissue(const Slide& slide, double mpp0, const TissueParams& p) {
  if (!(mpp0 > 0) || !std::isfinite(mpp0)) {
    throw Error(ErrorKind::MissingMpp, slide.path(), "tissue detection needs the slide's mpp");
  }
  // Level nearest the target resolution in log scale.
  int level = 0;
  double best = 1e300;
  for (int i = 0; i < slide.level_count(); ++i) {
    const double lm = mpp0 * slide.levels()[i].downsample;
    const double d = std::fabs(std::log(lm / p.target_mpp));
    if (d < best) {
      best = d;
      level = i;
    }
  }
  const LevelInfo& info = slide.levels()[level];
  const double level_mpp = mpp0 * info.downsample;
  // When even the nearest level is much finer than the target, box-average by an integer factor.
  const int64_t f = std::max<int64_t>(1, static_cast<int64_t>(std::floor(p.target_mpp / level_mpp)));
  const int64_t mw = (info.width + f - 1) / f, mh = (info.height + f - 1) / f;
  RgbImage small(mw, mh);
  // Read in blocks of at most ~2048x2048 level pixels (a multiple of f) to bound memory.
  const int64_t block = std::max<int64_t>(1, 2048 / f) * f;
  std::vector<uint32_t> scratch;
  std::vector<uint8_t> buf;
  std::vector<double> acc;
  for (int64_t by = 0; by < info.height; by += block) {
    const int64_t bh = std::min(block, info.height - by);
    for (int64_t bx = 0; bx < info.width; bx += block) {
      const int64_t bw = std::min(block, info.width - bx);
      buf.resize(static_cast<size_t>(bw * bh * 3));
      const int64_t x0 = static_cast<int64_t>(std::llround(bx * info.downsample));
      const int64_t y0 = static_cast<int64_t>(std::llround(by * info.downsample));
      slide.read_region_into(x0, y0, level, bw, bh, buf.data(), scratch);
      const int64_t ow = (bw + f - 1) / f, oh = (bh + f - 1) / f;
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          double s[3] = {0, 0, 0};
          int64_t n = 0;
          for (int64_t yy = oy * f; yy < std::min(bh, (oy + 1) * f); ++yy) {
            for (int64_t xx = ox * f; xx < std::min(bw, (ox + 1) * f); ++xx) {
              const uint8_t* px = buf.data() + (yy * bw + xx) * 3;
              s[0] += px[0];
              s[1] += px[1];
              s[2] += px[2];
              ++n;
            }
          }
          uint8_t* dst = small.ptr() + ((by / f + oy) * mw + (bx / f + ox)) * 3;
          for (int c = 0; c < 3; ++c) dst[c] = static_cast<uint8_t>(std::lround(s[c] / n));
        }
      }
    }
  }
  TissueMask mask = detect_tissue_rgb(small.ptr(), mw, mh, level_mpp * f, p);
  mask.downsample = info.downsample * f;
  return mask;
}

}  // namespace virtime
