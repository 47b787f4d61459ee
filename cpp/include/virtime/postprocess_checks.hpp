// Argument checks of the post-processing entry points (src/postprocess.cpp).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

#include "virtime/errors.hpp"
#include "virtime/postprocess.hpp"

namespace virtime {

inline void check_window_shape(int64_t n, int64_t C, int64_t h, int64_t w) {
  if (n < 0 || C < 1 || h < 1 || w < 1) {
    throw invalid_argument("logits must be (n, C, h, w) with C, h, w >= 1; got n=" + std::to_string(n) +
                           " C=" + std::to_string(C) + " h=" + std::to_string(h) +
                           " w=" + std::to_string(w));
  }
}

inline void check_pool_factor(int64_t h, int64_t w, int64_t factor) {
  if (factor < 1) throw invalid_argument("factor must be >= 1, got " + std::to_string(factor));
  if (h % factor || w % factor) {
    throw invalid_argument("window " + std::to_string(h) + "x" + std::to_string(w) +
                           " is not a multiple of the pooling factor " + std::to_string(factor));
  }
}

inline void check_tile_layout(const TileLayout& layout, int64_t h, int64_t w) {
  const int64_t T = layout.tile_size;
  if (layout.origins.empty() || layout.origins.size() % 2) {
    throw invalid_argument("origins must be a non-empty list of (x, y) window origins");
  }
  if (T < std::max(h, w)) {
    throw invalid_argument("tile size " + std::to_string(T) + " is smaller than the window " +
                           std::to_string(h) + "x" + std::to_string(w));
  }
  if (layout.core < 1 || layout.core > T) {
    throw invalid_argument("core must be in [1, " + std::to_string(T) + "], got " +
                           std::to_string(layout.core));
  }
  for (int64_t k = 0; k < layout.n_windows(); ++k) {
    const int64_t x = layout.origins[2 * k], y = layout.origins[2 * k + 1];
    if (x < 0 || y < 0 || x + w > T || y + h > T) {
      throw invalid_argument("window " + std::to_string(k) + " at (" + std::to_string(x) + ", " +
                             std::to_string(y) + ") does not fit in a " + std::to_string(T) +
                             "-pixel tile");
    }
  }
}

}  // namespace virtime
