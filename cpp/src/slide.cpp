#include "virtime/slide.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <type_traits>

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

// The one choke point for OpenSlide calls on a handle. OpenSlide's errors are sticky: once a call
// fails, the handle answers every later call with nothing and keeps its first message, so the
// error state must be read after every call. Every call below goes through `call`, which does it.
class CheckedHandle {
 public:
  CheckedHandle(const OpenSlideApi& api, void* handle, const std::string& path)
      : api_(api), handle_(handle), path_(path) {}

  // The handle's error message, or nullptr when it is healthy.
  const char* error() const { return handle_ ? api_.get_error(handle_) : "no handle"; }

  // Throws SlideRead naming the file and the step when the handle is in its error state.
  void require(const std::string& what) const {
    if (const char* err = error()) throw Error(ErrorKind::SlideRead, path_, what + " failed: " + err);
  }

  // Runs fn(api, handle) and checks the error state after it; returns what fn returns.
  template <class Fn>
  auto call(const std::string& what, Fn&& fn) const {
    using R = decltype(fn(api_, handle_));
    if constexpr (std::is_void_v<R>) {
      fn(api_, handle_);
      require(what);
    } else {
      R result = fn(api_, handle_);
      require(what);
      return result;
    }
  }

  // Like call, but reports failure instead of throwing (for reads that are retried).
  template <class Fn>
  bool try_call(Fn&& fn) const {
    if (error()) return false;
    fn(api_, handle_);
    return error() == nullptr;
  }

 private:
  const OpenSlideApi& api_;
  void* handle_;
  const std::string& path_;
};

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
    const CheckedHandle osr(api, h, path);
    osr.require("open");
    const int32_t n = osr.call("level count", [](const OpenSlideApi& a, void* o) {
      return a.get_level_count(o);
    });
    if (n <= 0) throw Error(ErrorKind::SlideFormat, path, "slide has no pyramid levels");
    for (int32_t i = 0; i < n; ++i) {
      LevelInfo info{};
      osr.call("level dimensions", [&](const OpenSlideApi& a, void* o) {
        a.get_level_dimensions(o, i, &info.width, &info.height);
      });
      info.downsample = osr.call("level downsample", [&](const OpenSlideApi& a, void* o) {
        return a.get_level_downsample(o, i);
      });
      levels_.push_back(info);
    }
    const char* const* names = osr.call("properties", [](const OpenSlideApi& a, void* o) {
      return a.get_property_names(o);
    });
    for (int i = 0; names && names[i]; ++i) {
      const char* value = osr.call("properties", [&](const OpenSlideApi& a, void* o) {
        return a.get_property_value(o, names[i]);
      });
      properties_[names[i]] = value ? value : "";
    }
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
  if (!fresh || CheckedHandle(openslide_api(), fresh, path_).error()) {
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
  auto read = [&](const OpenSlideApi& a, void* o) {
    a.read_region(o, scratch.data(), x, y, level, w, h);
  };
  const CheckedHandle shared(api, handle, path_);
  if (!shared.try_call(read)) {
    const char* err = shared.error();
    const std::string first_error = err ? err : "unknown error";
    // The shared handle is failed for good: replace it for later reads. The retry runs on a
    // private handle, so a region that is really corrupt cannot poison another thread's retry.
    reopen_after_failure(handle);
    bool ok = false;
    if (void* own = api.open(path_.c_str())) {
      ok = CheckedHandle(api, own, path_).try_call(read);
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
