// A whole-slide image opened through OpenSlide. Thread-safe for concurrent read_region calls
// (OpenSlide handles are), which the batcher relies on.
#pragma once
#include <cstdint>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "virtime/image.hpp"
#include "virtime/openslide_api.hpp"

namespace virtime {

struct LevelInfo {
  int64_t width;
  int64_t height;
  double downsample;
};

class Slide {
 public:
  // Opens `path`; throws NotFound, SlideFormat (not a slide) or SlideRead (opened but failed).
  explicit Slide(const std::string& path);
  ~Slide();
  Slide(const Slide&) = delete;
  Slide& operator=(const Slide&) = delete;

  const std::string& path() const { return path_; }
  const std::string& vendor() const { return vendor_; }
  int level_count() const { return static_cast<int>(levels_.size()); }
  const std::vector<LevelInfo>& levels() const { return levels_; }
  const std::map<std::string, std::string>& properties() const { return properties_; }
  // Microns per pixel at level 0 from openslide.mpp-x/y; nullopt when absent or unparsable.
  std::optional<double> mpp_x() const { return mpp_x_; }
  std::optional<double> mpp_y() const { return mpp_y_; }
  std::optional<double> objective_power() const { return objective_power_; }

  // Reads a (w, h) region whose top-left is (x, y) in level-0 pixels from `level`, as RGB with
  // transparent pixels (outside the scanned area or the slide) composited on white.
  RgbImage read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h) const;
  // Same, into a caller-provided h*w*3 buffer; `scratch` must hold w*h uint32 (reused by workers).
  void read_region_into(int64_t x, int64_t y, int level, int64_t w, int64_t h, uint8_t* rgb,
                        std::vector<uint32_t>& scratch) const;

 private:
  // OpenSlide errors are sticky and checked after every call. A failed read leaves its handle
  // failed for good, so a fresh handle replaces it (the failed one stays open until the slide
  // closes: other threads may still be inside it) and the read is retried on a private handle.
  void* reopen_after_failure(void* failed) const;
  std::string path_;
  mutable std::atomic<void*> osr_{nullptr};
  mutable std::mutex reopen_mutex_;
  mutable std::vector<void*> retired_;
  std::string vendor_;
  std::vector<LevelInfo> levels_;
  std::map<std::string, std::string> properties_;
  std::optional<double> mpp_x_, mpp_y_, objective_power_;
};

}  // namespace virtime
