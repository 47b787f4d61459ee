// Small image helpers shared by the reader, tissue detector, stain normalizers and batcher.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace virtime {

// An owned interleaved RGB uint8 image, row-major (y, x, c).
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> data;  // height * width * 3

  RgbImage() = default;
  RgbImage(int64_t w, int64_t h) : width(w), height(h), data(static_cast<size_t>(w * h * 3), 255) {}
  uint8_t* ptr() { return data.data(); }
  const uint8_t* ptr() const { return data.data(); }
};

// Area (box-average) resampling of an RGB image to (out_w, out_h). Exact for integer factors and
// weighted by pixel overlap for non-integer factors, like OpenCV's INTER_AREA when shrinking.
void resize_area(const uint8_t* src, int64_t src_w, int64_t src_h, uint8_t* dst, int64_t out_w,
                 int64_t out_h);

// Converts OpenSlide's premultiplied ARGB (native-endian uint32) to RGB composited on white.
void argb_premultiplied_to_rgb(const uint32_t* argb, int64_t n_pixels, uint8_t* rgb);

// ImageNet mean/std of the RGB channels in [0,1] units; models in virtime expect this.
constexpr float kImagenetMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kImagenetStd[3] = {0.229f, 0.224f, 0.225f};

// Packs an HWC uint8 RGB tile into planar CHW float32, (x/255 - mean)/std per channel.
void pack_chw_normalized_f32(const uint8_t* rgb, int64_t h, int64_t w, float* out);
// The same into IEEE half (stored as uint16 bits), for fp16 engines.
void pack_chw_normalized_f16(const uint8_t* rgb, int64_t h, int64_t w, uint16_t* out);

uint16_t float_to_half_bits(float f);
float half_bits_to_float(uint16_t h);

}  // namespace virtime
