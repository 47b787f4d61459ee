// Stain normalization (Macenko, Reinhard). Normalizers are fitted once and then shared read-only
// by the batcher's worker threads, so transform() is const and thread-safe.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>

namespace virtime {

// What happened to one tile: normalized as asked, with the fitted matrix as fallback, or passed
// through unchanged (too little tissue to estimate or to normalize safely).
struct StainOutcome {
  enum class Status { Normalized = 0, FallbackMatrix = 1, PassedThrough = 2 };
  Status status = Status::Normalized;
  std::string note;  // empty when Normalized; otherwise why
};

class StainNormalizer {
 public:
  virtual ~StainNormalizer() = default;
  virtual std::string name() const = 0;
  // Fits the target appearance from an RGB uint8 image (h, w, 3).
  virtual void fit(const uint8_t* rgb, int64_t h, int64_t w) = 0;
  virtual bool fitted() const = 0;
  // Normalizes an RGB uint8 tile in place.
  virtual StainOutcome transform(uint8_t* rgb, int64_t h, int64_t w) const = 0;
};

}  // namespace virtime
