#include "virtime/openslide_api.hpp"

#include <dlfcn.h>

#include <mutex>

#include "virtime/errors.hpp"

namespace virtime {
namespace {

std::mutex g_mutex;
OpenSlideApi g_api;
bool g_loaded = false;

template <typename Fn>
void resolve(void* lib, const char* name, Fn& out, const std::string& path) {
  void* sym = dlsym(lib, name);
  if (!sym) {
    throw Error(ErrorKind::Library, path, std::string("OpenSlide library lacks symbol ") + name);
  }
  out = reinterpret_cast<Fn>(sym);
}

}  // namespace

const OpenSlideApi& load_openslide(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_loaded) return g_api;
  // RTLD_LOCAL keeps OpenSlide's bundled dependencies out of the global symbol namespace.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    throw Error(ErrorKind::Library, path,
                std::string("cannot load the OpenSlide library: ") + (why ? why : "unknown error"));
  }
  OpenSlideApi api;
  resolve(lib, "openslide_get_version", api.get_version, path);
  resolve(lib, "openslide_detect_vendor", api.detect_vendor, path);
  resolve(lib, "openslide_open", api.open, path);
  resolve(lib, "openslide_close", api.close, path);
  resolve(lib, "openslide_get_error", api.get_error, path);
  resolve(lib, "openslide_get_level_count", api.get_level_count, path);
  resolve(lib, "openslide_get_level_dimensions", api.get_level_dimensions, path);
  resolve(lib, "openslide_get_level_downsample", api.get_level_downsample, path);
  resolve(lib, "openslide_read_region", api.read_region, path);
  resolve(lib, "openslide_get_property_names", api.get_property_names, path);
  resolve(lib, "openslide_get_property_value", api.get_property_value, path);
  api.library_path = path;
  g_api = api;
  g_loaded = true;  // the handle is deliberately never closed: slides may outlive any owner
  return g_api;
}

const OpenSlideApi& openslide_api() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_loaded) {
    throw Error(ErrorKind::Library, "", "the OpenSlide library has not been loaded");
  }
  return g_api;
}

bool openslide_loaded() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_loaded;
}

}  // namespace virtime
