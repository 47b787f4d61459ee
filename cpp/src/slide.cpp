#include "virtime/slide.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "virtime/errors.hpp"

namespace virtime {
namespace {

std::optional<double> parse_positive(const std::map<std::string, std::string>& props,
                                     const std::string& key) {
  auto it = props.find(key);
  if (it == props.end() || it->second.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(it->second.c_str(), &end);
  if (errno != 0 || end == it->second.c_str() || !std::isfinite(v) || v <= 0) return std::nullopt;
  return v;
}

}  // namespace

Slide::Slide(const std::string& path) : path_(path) {
  const OpenSlideApi& api = openslide_api();
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    throw Error(ErrorKind::NotFound, path, "no such file");
  }
  if (S_ISDIR(st.st_mode)) {
    throw Error(ErrorKind::SlideFormat, path, "is a directory, not a slide file");
  }
  const char* vendor = api.detect_vendor(path.c_str());
  void* h = api.open(path.c_str());
  if (!h) {
    throw Error(ErrorKind::SlideFormat, path, "not a slide format OpenSlide recognises");
  }
  vendor_ = vendor ? vendor : "unknown";
  try {
    auto check = [&](const char* what) {
      if (const char* err = api.get_error(h)) {
        throw Error(ErrorKind::SlideRead, path, std::string(what) + " failed: " + err);
      }
    };
    check("open");
    const int32_t n = api.get_level_count(h);
    check("level count");
    if (n <= 0) throw Error(ErrorKind::SlideFormat, path, "slide has no pyramid levels");
    for (int32_t i = 0; i < n; ++i) {
      LevelInfo info{};
      api.get_level_dimensions(h, i, &info.width, &info.height);
      info.downsample = api.get_level_downsample(h, i);
      levels_.push_back(info);
    }
    check("level dimensions");
    const char* const* names = api.get_property_names(h);
    for (int i = 0; names && names[i]; ++i) {
      const char* value = api.get_property_value(h, names[i]);
      properties_[names[i]] = value ? value : "";
    }
    check("properties");
  } catch (...) {
    api.close(h);  // the destructor does not run for a throwing constructor
    throw;
  }
  osr_.store(h);
  mpp_x_ = parse_positive(properties_, "openslide.mpp-x");
  mpp_y_ = parse_positive(properties_, "openslide.mpp-y");
  objective_power_ = parse_positive(properties_, "openslide.objective-power");
}

Slide::~Slide() {
  const OpenSlideApi& api = openslide_api();
  if (osr_.load()) api.close(osr_.load());
  for (void* h : retired_) api.close(h);
}

void* Slide::reopen_after_failure(void* failed) const {
  std::lock_guard<std::mutex> lock(reopen_mutex_);
  void* current = osr_.load();
  if (current != failed) return current;  // another thread already replaced it
  void* fresh = openslide_api().open(path_.c_str());
  if (!fresh || openslide_api().get_error(fresh)) {
    if (fresh) retired_.push_back(fresh);
    return failed;
  }
  retired_.push_back(failed);
  osr_.store(fresh);
  return fresh;
}

RgbImage Slide::read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h) const {
  RgbImage img(w, h);
  std::vector<uint32_t> scratch;
  read_region_into(x, y, level, w, h, img.ptr(), scratch);
  return img;
}

void Slide::read_region_into(int64_t x, int64_t y, int level, int64_t w, int64_t h, uint8_t* rgb,
                             std::vector<uint32_t>& scratch) const {
  if (level < 0 || level >= level_count()) {
    throw Error(ErrorKind::InvalidArgument, path_,
                "level " + std::to_string(level) + " out of range [0, " +
                    std::to_string(level_count() - 1) + "]");
  }
  if (w <= 0 || h <= 0) {
    throw Error(ErrorKind::InvalidArgument, path_, "region width and height must be positive");
  }
  scratch.resize(static_cast<size_t>(w * h));
  const OpenSlideApi& api = openslide_api();
  void* handle = osr_.load();
  api.read_region(handle, scratch.data(), x, y, level, w, h);
  if (const char* err = api.get_error(handle)) {
    const std::string first_error = err;
    // The shared handle is failed for good: replace it for later reads. The retry runs on a
    // private handle, so a region that is really corrupt cannot poison another thread's retry.
    reopen_after_failure(handle);
    bool ok = false;
    if (void* own = api.open(path_.c_str())) {
      if (!api.get_error(own)) {
        api.read_region(own, scratch.data(), x, y, level, w, h);
        ok = api.get_error(own) == nullptr;
      }
      api.close(own);
    }
    if (!ok) {
      throw Error(ErrorKind::SlideRead, path_,
                  "read_region(x=" + std::to_string(x) + ", y=" + std::to_string(y) + ", level=" +
                      std::to_string(level) + ") failed: " + first_error);
    }
  }
  argb_premultiplied_to_rgb(scratch.data(), w * h, rgb);
}

}  // namespace virtime
