// OpenSlide's C API as a table of function pointers resolved at run time with dlopen, so the build
// needs no OpenSlide headers and the same module runs wherever the openslide-bin wheel installs.
#pragma once
#include <cstdint>
#include <string>

namespace virtime {

struct OpenSlideApi {
  using handle_t = void*;  // openslide_t*
  const char* (*get_version)() = nullptr;
  const char* (*detect_vendor)(const char* filename) = nullptr;
  handle_t (*open)(const char* filename) = nullptr;
  void (*close)(handle_t osr) = nullptr;
  const char* (*get_error)(handle_t osr) = nullptr;
  int32_t (*get_level_count)(handle_t osr) = nullptr;
  void (*get_level_dimensions)(handle_t osr, int32_t level, int64_t* w, int64_t* h) = nullptr;
  double (*get_level_downsample)(handle_t osr, int32_t level) = nullptr;
  void (*read_region)(handle_t osr, uint32_t* dest, int64_t x, int64_t y, int32_t level, int64_t w,
                      int64_t h) = nullptr;
  const char* const* (*get_property_names)(handle_t osr) = nullptr;
  const char* (*get_property_value)(handle_t osr, const char* name) = nullptr;
  std::string library_path;
};

// Loads the library at `path` once per process (later calls with another path are ignored and
// return the first table). Throws Error(Library) when the file or a symbol is missing.
const OpenSlideApi& load_openslide(const std::string& path);
// The loaded table; throws Error(Library) when load_openslide has not succeeded yet.
const OpenSlideApi& openslide_api();
bool openslide_loaded();

}  // namespace virtime
