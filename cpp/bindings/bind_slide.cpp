#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "array_utils.hpp"
#include "virtime/openslide_api.hpp"
#include "virtime/slide.hpp"

namespace py = pybind11;
using virtime::Slide;

void bind_slide(py::module_& m) {
  m.def(
      "load_openslide",
      [](const std::string& path) {
        const auto& api = virtime::load_openslide(path);
        return std::string(api.get_version());
      },
      py::arg("path"), "Loads the OpenSlide shared library at `path`; returns its version.");
  m.def("openslide_loaded", &virtime::openslide_loaded);

  py::class_<Slide, std::shared_ptr<Slide>>(m, "Slide")
      .def(py::init([](const std::string& path) {
             py::gil_scoped_release release;  // opening parses the file; no Python objects used
             return std::make_shared<Slide>(path);
           }),
           py::arg("path"))
      .def_property_readonly("path", &Slide::path)
      .def_property_readonly("vendor", &Slide::vendor)
      .def_property_readonly("level_count", &Slide::level_count)
      .def_property_readonly("level_dimensions",
                             [](const Slide& s) {
                               std::vector<std::pair<int64_t, int64_t>> out;
                               for (const auto& l : s.levels()) out.emplace_back(l.width, l.height);
                               return out;
                             })
      .def_property_readonly("level_downsamples",
                             [](const Slide& s) {
                               std::vector<double> out;
                               for (const auto& l : s.levels()) out.push_back(l.downsample);
                               return out;
                             })
      .def_property_readonly("properties", &Slide::properties)
      .def_property_readonly("mpp_x", &Slide::mpp_x)
      .def_property_readonly("mpp_y", &Slide::mpp_y)
      .def_property_readonly("objective_power", &Slide::objective_power)
      .def(
          "read_region",
          [](const Slide& s, int64_t x, int64_t y, int level, int64_t w, int64_t h) {
            std::vector<uint8_t> buf(static_cast<size_t>(w > 0 && h > 0 ? w * h * 3 : 0));
            {
              py::gil_scoped_release release;  // pure C++ decoding into a buffer we own
              std::vector<uint32_t> scratch;
              s.read_region_into(x, y, level, w, h, buf.data(), scratch);
            }
            return virtime_bind::to_numpy(std::move(buf), {h, w, 3});
          },
          py::arg("x"), py::arg("y"), py::arg("level"), py::arg("width"), py::arg("height"));
}
