#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>

#include "array_utils.hpp"
#include "virtime/errors.hpp"
#include "virtime/tissue.hpp"

namespace py = pybind11;
using virtime::TissueMask;
using virtime::TissueParams;

void bind_tissue(py::module_& m) {
  py::class_<TissueParams>(m, "TissueParams")
      .def(py::init<>())
      .def_readwrite("target_mpp", &TissueParams::target_mpp)
      .def_readwrite("min_saturation", &TissueParams::min_saturation)
      .def_readwrite("max_grey", &TissueParams::max_grey)
      .def_readwrite("min_grey", &TissueParams::min_grey)
      .def_readwrite("min_contrast", &TissueParams::min_contrast)
      .def_readwrite("open_radius", &TissueParams::open_radius)
      .def_readwrite("close_radius", &TissueParams::close_radius)
      .def_readwrite("min_component_um2", &TissueParams::min_component_um2)
      .def_readwrite("max_hole_um2", &TissueParams::max_hole_um2);

  py::class_<TissueMask, std::shared_ptr<TissueMask>>(
      m, "TissueMask", "A boolean tissue mask and its scale (level-0 pixels per mask pixel).")
      .def_property_readonly(
          "mask",
          [](py::object self) {
            // The 0/1 bytes read as bool: a view of the mask's own buffer, no copy.
            const auto& t = self.cast<const TissueMask&>();
            return py::array(py::dtype::of<bool>(), {t.height, t.width}, {t.width, int64_t{1}},
                             t.mask.data(), self);
          },
          "(height, width) bool, True = tissue")
      .def_readonly("downsample", &TissueMask::downsample)
      .def_readonly("mpp", &TissueMask::mpp, "microns per mask pixel (0 without slide mpp)")
      .def_readonly("saturation_threshold", &TissueMask::saturation_threshold)
      .def_readonly("grey_threshold", &TissueMask::grey_threshold)
      .def_property_readonly(
          "fraction",
          [](const TissueMask& t) {
            if (t.mask.empty()) return 0.0;
            int64_t tissue = 0;
            for (uint8_t v : t.mask) tissue += v != 0;
            return static_cast<double>(tissue) / static_cast<double>(t.mask.size());
          },
          "Share of the slide area that is tissue.")
      .def(py::pickle(
          [](const TissueMask& t) {  // a value like the dataclass it replaced: pickle and copy work
            return py::make_tuple(t.width, t.height, virtime_bind::bytes_of(t.mask), t.downsample,
                                  t.mpp, t.saturation_threshold, t.grey_threshold);
          },
          [](const py::tuple& s) {
            if (s.size() != 7) throw virtime::invalid_argument("not a pickled TissueMask");
            auto t = std::make_shared<TissueMask>();
            t->width = s[0].cast<int64_t>();
            t->height = s[1].cast<int64_t>();
            t->mask = virtime_bind::vector_of<uint8_t>(s[2]);
            t->downsample = s[3].cast<double>();
            t->mpp = s[4].cast<double>();
            t->saturation_threshold = s[5].cast<double>();
            t->grey_threshold = s[6].cast<double>();
            return t;
          }));

  m.def(
      "detect_tissue",
      [](const virtime::Slide& slide, double mpp0, const TissueParams& params) {
        auto mask = std::make_shared<TissueMask>();
        {
          py::gil_scoped_release release;  // reads and filters C++-owned buffers only
          *mask = virtime::detect_tissue(slide, mpp0, params);
        }
        return mask;
      },
      py::arg("slide"), py::arg("mpp0"), py::arg("params"));

  m.def(
      "detect_tissue_rgb",
      [](py::array_t<uint8_t, py::array::c_style | py::array::forcecast> rgb, double mpp,
         const TissueParams& params) {
        if (rgb.ndim() != 3 || rgb.shape(2) != 3) {
          throw virtime::invalid_argument("expected an (h, w, 3) uint8 RGB image");
        }
        auto mask = std::make_shared<TissueMask>();
        {
          py::gil_scoped_release release;  // the array is kept alive by the caller's reference
          *mask = virtime::detect_tissue_rgb(rgb.data(), rgb.shape(1), rgb.shape(0), mpp, params);
        }
        return mask;
      },
      py::arg("rgb"), py::arg("mpp"), py::arg("params"));

  m.def(
      "otsu_threshold",
      [](py::array_t<uint8_t, py::array::c_style | py::array::forcecast> values) {
        std::vector<uint64_t> hist(256, 0);
        const uint8_t* p = values.data();
        for (py::ssize_t i = 0; i < values.size(); ++i) ++hist[p[i]];
        return virtime::otsu_threshold(hist);
      },
      py::arg("values"), "Otsu threshold t of 8-bit values: classes [0, t] and (t, 255].");
}
