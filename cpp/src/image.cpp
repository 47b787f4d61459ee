#include "virtime/image.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace virtime {

void argb_premultiplied_to_rgb(const uint32_t* argb, int64_t n_pixels, uint8_t* rgb) {
  for (int64_t i = 0; i < n_pixels; ++i) {
    const uint32_t p = argb[i];
    const uint32_t a = p >> 24;
    uint32_t r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
    if (a != 255) {
      // Premultiplied colour over white: c_out = c_premul + (255 - a) (exact in integers).
      r = std::min<uint32_t>(255, r + (255 - a));
      g = std::min<uint32_t>(255, g + (255 - a));
      b = std::min<uint32_t>(255, b + (255 - a));
    }
    rgb[3 * i + 0] = static_cast<uint8_t>(r);
    rgb[3 * i + 1] = static_cast<uint8_t>(g);
    rgb[3 * i + 2] = static_cast<uint8_t>(b);
  }
}

namespace {

// Overlap weights of source pixels for each output pixel along one axis (area interpolation).
struct AxisWeights {
  std::vector<int64_t> start;   // first source index per output index
  std::vector<int64_t> offset;  // into weights
  std::vector<int64_t> count;
  std::vector<float> weights;
};

AxisWeights area_weights(int64_t src, int64_t dst) {
  AxisWeights aw;
  const double scale = static_cast<double>(src) / static_cast<double>(dst);
  for (int64_t o = 0; o < dst; ++o) {
    const double lo = o * scale, hi = (o + 1) * scale;
    const int64_t first = static_cast<int64_t>(std::floor(lo));
    const int64_t last = std::min<int64_t>(src - 1, static_cast<int64_t>(std::ceil(hi) - 1));
    aw.start.push_back(first);
    aw.offset.push_back(static_cast<int64_t>(aw.weights.size()));
    aw.count.push_back(last - first + 1);
    for (int64_t s = first; s <= last; ++s) {
      const double overlap = std::min<double>(hi, s + 1) - std::max<double>(lo, s);
      aw.weights.push_back(static_cast<float>(overlap / scale));
    }
  }
  return aw;
}

}  // namespace

void resize_area(const uint8_t* src, int64_t src_w, int64_t src_h, uint8_t* dst, int64_t out_w,
                 int64_t out_h) {
  if (src_w == out_w && src_h == out_h) {
    std::memcpy(dst, src, static_cast<size_t>(src_w * src_h * 3));
    return;
  }
  const AxisWeights wx = area_weights(src_w, out_w), wy = area_weights(src_h, out_h);
  // Separable: horizontal pass into float rows, then vertical pass.
  std::vector<float> tmp(static_cast<size_t>(src_h * out_w * 3));
  for (int64_t y = 0; y < src_h; ++y) {
    const uint8_t* row = src + y * src_w * 3;
    float* trow = tmp.data() + y * out_w * 3;
    for (int64_t o = 0; o < out_w; ++o) {
      float acc[3] = {0, 0, 0};
      for (int64_t k = 0; k < wx.count[o]; ++k) {
        const float wgt = wx.weights[wx.offset[o] + k];
        const uint8_t* px = row + (wx.start[o] + k) * 3;
        acc[0] += wgt * px[0];
        acc[1] += wgt * px[1];
        acc[2] += wgt * px[2];
      }
      trow[o * 3 + 0] = acc[0];
      trow[o * 3 + 1] = acc[1];
      trow[o * 3 + 2] = acc[2];
    }
  }
  for (int64_t o = 0; o < out_h; ++o) {
    uint8_t* drow = dst + o * out_w * 3;
    std::vector<float> acc(static_cast<size_t>(out_w * 3), 0.f);
    for (int64_t k = 0; k < wy.count[o]; ++k) {
      const float wgt = wy.weights[wy.offset[o] + k];
      const float* trow = tmp.data() + (wy.start[o] + k) * out_w * 3;
      for (int64_t i = 0; i < out_w * 3; ++i) acc[i] += wgt * trow[i];
    }
    for (int64_t i = 0; i < out_w * 3; ++i) {
      drow[i] = static_cast<uint8_t>(std::clamp(std::lround(acc[i]), 0L, 255L));
    }
  }
}

void pack_chw_normalized_f32(const uint8_t* rgb, int64_t h, int64_t w, float* out) {
  const int64_t plane = h * w;
  float scale[3], bias[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = 1.0f / (255.0f * kImagenetStd[c]);
    bias[c] = -kImagenetMean[c] / kImagenetStd[c];
  }
  for (int64_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c) out[c * plane + i] = rgb[3 * i + c] * scale[c] + bias[c];
  }
}

uint16_t float_to_half_bits(float f) {
  // Round-to-nearest-even conversion of IEEE-754 binary32 to binary16.
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (abs < 0x38800000u) {                                                // subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
    // value = mant * 2^(e-150); in half-subnormal units of 2^-24 that is mant >> (126 - e).
    const int e = static_cast<int>(abs >> 23);
    const int rshift = 126 - e;
    uint32_t q = mant >> rshift;
    const uint32_t rem = mant & ((1u << rshift) - 1u);
    const uint32_t halfway = 1u << (rshift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float half_bits_to_float(uint16_t hbits) {
  const uint32_t sign = (hbits & 0x8000u) << 16;
  const uint32_t exp = (hbits >> 10) & 0x1fu;
  const uint32_t mant = hbits & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&x, &f, sizeof x);
      x |= sign;
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

void pack_chw_normalized_f16(const uint8_t* rgb, int64_t h, int64_t w, uint16_t* out) {
  // A 256-entry lookup per channel: the result depends only on the byte value.
  uint16_t lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      lut[c][v] = float_to_half_bits((v / 255.0f - kImagenetMean[c]) / kImagenetStd[c]);
    }
  }
  const int64_t plane = h * w;
  for (int64_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c) out[c * plane + i] = lut[c][rgb[3 * i + c]];
  }
}

}  // namespace virtime
