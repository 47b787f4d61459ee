// A tile grid at the model's resolution: which pyramid level to read, how large a region to read
// there, and which tiles hold enough tissue.
#pragma once
#include <cstdint>
#include <vector>

#include "virtime/tissue.hpp"

namespace virtime {

struct TilingParams {
  double target_mpp = 0.25;   // model input resolution
  int64_t tile_size = 512;    // model-ready tile side, pixels at target_mpp
  int64_t overlap = 0;        // pixels at target_mpp shared by neighbouring tiles
  double min_tissue = 0.1;    // keep tiles whose tissue fraction is at least this
  double level_tolerance = 0.05;  // a level up to 5% coarser than the target still counts as fine enough
};

struct TileGrid {
  int level = 0;                // pyramid level read
  double level_mpp = 0.0;       // microns per pixel at that level
  int64_t read_size = 0;        // region side read at `level` (resampled to tile_size)
  int64_t tile_size = 0;
  double tile_size_level0 = 0;  // tile side in level-0 pixels
  double stride_level0 = 0;     // distance between tile origins in level-0 pixels
  int64_t cols = 0, rows = 0;   // full grid before the tissue filter
  // The tiles kept by the tissue filter, in row-major grid order, one column per field (so the
  // binding hands them to numpy as they are):
  std::vector<int64_t> xy;               // level-0 top-left, (x, y) per tile
  std::vector<int64_t> colrow;           // grid position, (col, row) per tile
  std::vector<double> tissue_fraction;   // per tile (1 without a mask)
  int64_t size() const { return static_cast<int64_t>(tissue_fraction.size()); }
};

// Chooses the coarsest level whose mpp does not exceed target_mpp (never upsample unless the
// slide itself is coarser than the target).
int best_level_for_mpp(const Slide& slide, double mpp0, double target_mpp, double tolerance);

// Builds the grid. `mask` may be null (every tile kept, fraction 1). Throws SlideTooSmall when
// the slide is smaller than one tile, InvalidArgument for overlap >= tile_size.
TileGrid make_tile_grid(const Slide& slide, double mpp0, const TilingParams& params,
                        const TissueMask* mask);

// Fraction of mask pixels inside a level-0 rectangle (pixels outside the mask count as background).
double tissue_fraction(const TissueMask& mask, double x0, double y0, double w0, double h0);

}  // namespace virtime
