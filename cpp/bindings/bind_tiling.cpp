#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>

#include "array_utils.hpp"
#include "virtime/errors.hpp"
#include "virtime/tiling.hpp"

namespace py = pybind11;
using virtime::TileGrid;

void bind_tiling(py::module_& m) {
  py::class_<virtime::TilingParams>(m, "TilingParams")
      .def(py::init<>())
      .def_readwrite("target_mpp", &virtime::TilingParams::target_mpp)
      .def_readwrite("tile_size", &virtime::TilingParams::tile_size)
      .def_readwrite("overlap", &virtime::TilingParams::overlap)
      .def_readwrite("min_tissue", &virtime::TilingParams::min_tissue)
      .def_readwrite("level_tolerance", &virtime::TilingParams::level_tolerance);

  py::class_<TileGrid, std::shared_ptr<TileGrid>>(
      m, "TileGrid",
      "Where to read each kept tile and how to resample it; the per-tile arrays view the grid's "
      "own buffers (level-0 coordinates).")
      .def(py::init([](std::shared_ptr<TileGrid> grid) { return grid; }), py::arg("grid"),
           "Another handle on the same grid (no copy), e.g. for a Python subclass.")
      .def_readonly("level", &TileGrid::level)
      .def_readonly("level_mpp", &TileGrid::level_mpp)
      .def_readonly("read_size", &TileGrid::read_size)
      .def_readonly("tile_size", &TileGrid::tile_size)
      .def_readonly("tile_size_level0", &TileGrid::tile_size_level0)
      .def_readonly("stride_level0", &TileGrid::stride_level0)
      .def_readonly("cols", &TileGrid::cols)
      .def_readonly("rows", &TileGrid::rows)
      .def_property_readonly(
          "xy",
          [](py::object self) {
            const auto& g = self.cast<const TileGrid&>();
            return virtime_bind::view_of(g.xy, {g.size(), 2}, self);
          },
          "(n, 2) int64 level-0 top-left of each tile")
      .def_property_readonly(
          "colrow",
          [](py::object self) {
            const auto& g = self.cast<const TileGrid&>();
            return virtime_bind::view_of(g.colrow, {g.size(), 2}, self);
          },
          "(n, 2) int64 grid position of each tile")
      .def_property_readonly(
          "tissue_fraction",
          [](py::object self) {
            const auto& g = self.cast<const TileGrid&>();
            return virtime_bind::view_of(g.tissue_fraction, {g.size()}, self);
          },
          "(n,) float64 share of each tile that is tissue")
      .def("__len__", &TileGrid::size)
      .def(py::pickle(
          [](const TileGrid& g) {  // a value like the dataclass it replaced: pickle and copy work
            return py::make_tuple(g.level, g.level_mpp, g.read_size, g.tile_size,
                                  g.tile_size_level0, g.stride_level0, g.cols, g.rows,
                                  virtime_bind::bytes_of(g.xy), virtime_bind::bytes_of(g.colrow),
                                  virtime_bind::bytes_of(g.tissue_fraction));
          },
          [](const py::tuple& t) {
            if (t.size() != 11) throw virtime::invalid_argument("not a pickled TileGrid");
            auto g = std::make_shared<TileGrid>();
            g->level = t[0].cast<int>();
            g->level_mpp = t[1].cast<double>();
            g->read_size = t[2].cast<int64_t>();
            g->tile_size = t[3].cast<int64_t>();
            g->tile_size_level0 = t[4].cast<double>();
            g->stride_level0 = t[5].cast<double>();
            g->cols = t[6].cast<int64_t>();
            g->rows = t[7].cast<int64_t>();
            g->xy = virtime_bind::vector_of<int64_t>(t[8]);
            g->colrow = virtime_bind::vector_of<int64_t>(t[9]);
            g->tissue_fraction = virtime_bind::vector_of<double>(t[10]);
            return g;
          }));

  m.def(
      "make_tile_grid",
      [](const virtime::Slide& slide, double mpp0, const virtime::TilingParams& params,
         const virtime::TissueMask* tissue) {
        auto grid = std::make_shared<TileGrid>();
        {
          // Safe: C++-owned data only; the caller's references keep `slide` and `tissue` alive.
          py::gil_scoped_release release;
          *grid = virtime::make_tile_grid(slide, mpp0, params, tissue);
        }
        return grid;
      },
      py::arg("slide"), py::arg("mpp0"), py::arg("params"), py::arg("tissue") = py::none(),
      "The tile grid; without `tissue` every tile is kept.");

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
