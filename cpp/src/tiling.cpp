#include "virtime/tiling.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "virtime/errors.hpp"

namespace virtime {

int best_level_for_mpp(const Slide& slide, double mpp0, double target_mpp, double tolerance) {
  int best = 0;
  for (int i = 0; i < slide.level_count(); ++i) {
    const double lm = mpp0 * slide.levels()[i].downsample;
    if (lm <= target_mpp * (1.0 + tolerance)) best = i;  // levels get coarser with i
  }
  return best;
}

double tissue_fraction(const TissueMask& mask, double x0, double y0, double w0, double h0) {
  const double ds = mask.downsample;
  const int64_t mx0 = static_cast<int64_t>(std::floor(x0 / ds));
  const int64_t my0 = static_cast<int64_t>(std::floor(y0 / ds));
  const int64_t mx1 = std::max<int64_t>(mx0 + 1, static_cast<int64_t>(std::ceil((x0 + w0) / ds)));
  const int64_t my1 = std::max<int64_t>(my0 + 1, static_cast<int64_t>(std::ceil((y0 + h0) / ds)));
  int64_t count = 0;
  for (int64_t y = std::max<int64_t>(0, my0); y < std::min(mask.height, my1); ++y) {
    const uint8_t* row = mask.mask.data() + y * mask.width;
    for (int64_t x = std::max<int64_t>(0, mx0); x < std::min(mask.width, mx1); ++x) count += row[x];
  }
  return static_cast<double>(count) / static_cast<double>((mx1 - mx0) * (my1 - my0));
}

TileGrid make_tile_grid(const Slide& slide, double mpp0, const TilingParams& p,
                        const TissueMask* mask) {
  if (!(mpp0 > 0) || !std::isfinite(mpp0)) {
    throw Error(ErrorKind::MissingMpp, slide.path(), "tiling needs the slide's mpp");
  }
  if (p.tile_size <= 0 || !(p.target_mpp > 0)) {
    throw invalid_argument("tile size and target mpp must be positive");
  }
  if (p.overlap < 0 || p.overlap >= p.tile_size) {
    throw invalid_argument("overlap must be in [0, tile_size)");
  }
  TileGrid g;
  g.tile_size = p.tile_size;
  g.level = best_level_for_mpp(slide, mpp0, p.target_mpp, p.level_tolerance);
  g.level_mpp = mpp0 * slide.levels()[g.level].downsample;
  g.read_size = std::max<int64_t>(
      1, static_cast<int64_t>(std::llround(p.tile_size * p.target_mpp / g.level_mpp)));
  g.tile_size_level0 = p.tile_size * p.target_mpp / mpp0;
  g.stride_level0 = (p.tile_size - p.overlap) * p.target_mpp / mpp0;
  const double w0 = static_cast<double>(slide.levels()[0].width);
  const double h0 = static_cast<double>(slide.levels()[0].height);
  if (w0 + 0.5 < g.tile_size_level0 || h0 + 0.5 < g.tile_size_level0) {
    std::ostringstream msg;
    msg << "slide is " << slide.levels()[0].width << "x" << slide.levels()[0].height
        << " px at " << mpp0 << " um/px, smaller than one " << p.tile_size << "-px tile at "
        << p.target_mpp << " um/px (" << std::llround(g.tile_size_level0) << " level-0 px)";
    throw Error(ErrorKind::SlideTooSmall, slide.path(), msg.str());
  }
  // Cover the whole slide: the last column/row may extend past the edge (read as white).
  auto count = [&](double extent) {
    const double span = extent - g.tile_size_level0;
    return span <= 0.5 ? int64_t{1}
                       : static_cast<int64_t>(std::ceil((span - 0.5) / g.stride_level0)) + 1;
  };
  g.cols = count(w0);
  g.rows = count(h0);
  for (int64_t r = 0; r < g.rows; ++r) {
    for (int64_t c = 0; c < g.cols; ++c) {
      const int64_t x = static_cast<int64_t>(std::llround(c * g.stride_level0));
      const int64_t y = static_cast<int64_t>(std::llround(r * g.stride_level0));
      const double fraction =
          mask ? tissue_fraction(*mask, x, y, g.tile_size_level0, g.tile_size_level0) : 1.0;
      if (mask && !(fraction >= p.min_tissue)) continue;
      g.xy.push_back(x);
      g.xy.push_back(y);
      g.colrow.push_back(c);
      g.colrow.push_back(r);
      g.tissue_fraction.push_back(fraction);
    }
  }
  return g;
}

}  // namespace virtime
