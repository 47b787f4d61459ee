#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "array_utils.hpp"
#include "virtime/errors.hpp"
#include "virtime/tiling.hpp"

namespace py = pybind11;

void bind_tiling(py::module_& m) {
  py::class_<virtime::TilingParams>(m, "TilingParams")
      .def(py::init<>())
      .def_readwrite("target_mpp", &virtime::TilingParams::target_mpp)
      .def_readwrite("tile_size", &virtime::TilingParams::tile_size)
      .def_readwrite("overlap", &virtime::TilingParams::overlap)
      .def_readwrite("min_tissue", &virtime::TilingParams::min_tissue)
      .def_readwrite("level_tolerance", &virtime::TilingParams::level_tolerance);

  m.def(
      "make_tile_grid",
      [](const virtime::Slide& slide, double mpp0, const virtime::TilingParams& params,
         py::object mask, double mask_downsample) {
        virtime::TissueMask tm;
        const bool has_mask = !mask.is_none();
        if (has_mask) {
          auto arr = mask.cast<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>>();
          if (arr.ndim() != 2) throw virtime::invalid_argument("tissue mask must be 2-D");
          tm.height = arr.shape(0);
          tm.width = arr.shape(1);
          tm.mask.assign(arr.data(), arr.data() + arr.size());
          tm.downsample = mask_downsample;
        }
        virtime::TileGrid g;
        {
          py::gil_scoped_release release;  // grid arithmetic on C++-owned data
          g = virtime::make_tile_grid(slide, mpp0, params, has_mask ? &tm : nullptr);
        }
        const auto n = static_cast<py::ssize_t>(g.tiles.size());
        std::vector<int64_t> xy, colrow;
        std::vector<double> frac;
        for (const auto& t : g.tiles) {
          xy.push_back(t.x);
          xy.push_back(t.y);
          colrow.push_back(t.col);
          colrow.push_back(t.row);
          frac.push_back(t.tissue_fraction);
        }
        py::dict d;
        d["level"] = g.level;
        d["level_mpp"] = g.level_mpp;
        d["read_size"] = g.read_size;
        d["tile_size"] = g.tile_size;
        d["tile_size_level0"] = g.tile_size_level0;
        d["stride_level0"] = g.stride_level0;
        d["cols"] = g.cols;
        d["rows"] = g.rows;
        d["xy"] = virtime_bind::to_numpy(std::move(xy), {n, 2});
        d["colrow"] = virtime_bind::to_numpy(std::move(colrow), {n, 2});
        d["tissue_fraction"] = virtime_bind::to_numpy(std::move(frac), {n});
        return d;
      },
      py::arg("slide"), py::arg("mpp0"), py::arg("params"), py::arg("mask") = py::none(),
      py::arg("mask_downsample") = 1.0);

  m.def(
      "resize_area",
      [](py::array_t<uint8_t, py::array::c_style | py::array::forcecast> rgb, int64_t out_w,
         int64_t out_h) {
        if (rgb.ndim() != 3 || rgb.shape(2) != 3) {
          throw virtime::invalid_argument("expected an (h, w, 3) uint8 RGB image");
        }
        if (out_w <= 0 || out_h <= 0) throw virtime::invalid_argument("output size must be positive");
        std::vector<uint8_t> out(static_cast<size_t>(out_w * out_h * 3));
        {
          py::gil_scoped_release release;  // input array pinned by the caller's reference
          virtime::resize_area(rgb.data(), rgb.shape(1), rgb.shape(0), out.data(), out_w, out_h);
        }
        return virtime_bind::to_numpy(std::move(out), {out_h, out_w, 3});
      },
      py::arg("rgb"), py::arg("width"), py::arg("height"));
}
