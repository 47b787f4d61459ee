// Tissue detection on a low-resolution image: Otsu on saturation and on grey, morphology,
// hole filling and speck removal. Guards keep glass, blank and uniformly dark slides tissue-free.
#pragma once
#include <cstdint>
#include <vector>

#include "virtime/slide.hpp"

namespace virtime {

struct TissueParams {
  double target_mpp = 12.0;        // resolution the mask is computed at (8-16 um/px works well)
  double min_saturation = 0.07;    // floor on the saturation threshold (glass is grey-white)
  double max_grey = 235.0;         // ceiling on the grey threshold (background is brighter)
  double min_grey = 25.0;          // darker than this is ink, scanner border or a dark slide
  double min_contrast = 0.04;      // 0.1-99.9 percentile grey spread (fraction of 255) below which the
                                   // image is uniform: blank, dark or single-coloured, no tissue
  int open_radius = 1;             // morphological opening radius (pixels of the mask)
  int close_radius = 2;            // closing radius
  double min_component_um2 = 10000.0;  // specks smaller than this are dropped (~100x100 um)
  double max_hole_um2 = 40000.0;       // holes smaller than this are filled
};

struct TissueMask {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> mask;  // height*width, 1 = tissue
  double downsample = 1.0;    // level-0 pixels per mask pixel
  double mpp = 0.0;           // microns per mask pixel (0 when the slide has no mpp)
  double saturation_threshold = 0.0;
  double grey_threshold = 0.0;
};

// Otsu's threshold of 8-bit values (a 256-bin histogram); returns the bin t maximizing
// between-class variance with classes [0, t] and (t, 255]. Returns 255 for a constant histogram.
int otsu_threshold(const std::vector<uint64_t>& histogram);

// Detects tissue on an RGB image already at low resolution (pixel size `mpp` microns).
TissueMask detect_tissue_rgb(const uint8_t* rgb, int64_t w, int64_t h, double mpp,
                             const TissueParams& params);

// Reads the slide's level nearest params.target_mpp (box-downsampling further when even the
// coarsest level is much finer) and detects tissue there. `mpp0` is level-0 microns per pixel.
TissueMask detect_tissue(const Slide& slide, double mpp0, const TissueParams& params);

// Binary morphology on a 0/1 mask with a square structuring element of the given radius.
std::vector<uint8_t> erode(const std::vector<uint8_t>& m, int64_t w, int64_t h, int r);
std::vector<uint8_t> dilate(const std::vector<uint8_t>& m, int64_t w, int64_t h, int r);

}  // namespace virtime
