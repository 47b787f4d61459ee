// Python binding of the post-processing around the engine, on numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "virtime/errors.hpp"
#include "virtime/postprocess.hpp"

namespace py = pybind11;

namespace {

// Number of tiles in `nw` windows of `k` per tile; the windows must fill whole tiles.
int64_t tiles_of(int64_t nw, int64_t k) {
  if (nw % k) {
    throw virtime::invalid_argument(std::to_string(nw) + " windows are not a whole number of " +
                                    std::to_string(k) + "-window tiles");
  }
  return nw / k;
}


using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

F32 logits_array(const py::handle& obj) {
  F32 a = F32::ensure(obj);
  if (!a || a.ndim() != 4) throw virtime::invalid_argument("logits must be a (n, C, h, w) array");
  return a;
}

F32 weight_array(const py::handle& obj, int64_t h, int64_t w) {
  F32 a = F32::ensure(obj);
  if (!a || a.ndim() != 2 || a.shape(0) != h || a.shape(1) != w) {
    throw virtime::invalid_argument("weight must be (" + std::to_string(h) + ", " + std::to_string(w) +
                                    ") like the windows");
  }
  return a;
}

virtime::TileLayout make_layout(const py::handle& origins, int64_t tile_size, int64_t core,
                                double threshold) {
  I64 o = I64::ensure(origins);
  if (!o || o.ndim() != 2 || o.shape(1) != 2 || o.shape(0) < 1) {
    throw virtime::invalid_argument("origins must be a (k, 2) array of window (x, y) origins");
  }
  virtime::TileLayout L;
  L.tile_size = tile_size;
  L.core = core;
  L.threshold = static_cast<float>(threshold);
  L.origins.assign(o.data(), o.data() + o.size());
  return L;
}

template <typename T>
T* out_ptr(py::array_t<T>& a) {
  return a.mutable_data();
}

}  // namespace

void bind_postprocess(py::module_& m) {
  m.def("tile_stats",
        [](const py::handle& logits_obj, const py::handle& weight_obj, const py::handle& origins,
           int64_t tile_size, int64_t core, double threshold, int threads) {
          F32 logits = logits_array(logits_obj);
          const int64_t nw = logits.shape(0), C = logits.shape(1), h = logits.shape(2), w = logits.shape(3);
          F32 weight = weight_array(weight_obj, h, w);
          const virtime::TileLayout L = make_layout(origins, tile_size, core, threshold);
          const int64_t n = tiles_of(nw, L.n_windows());
          py::array_t<int64_t> pos({n, C});
          py::array_t<double> psum({n, C});
          int64_t* ppos = out_ptr(pos);
          double* ppsum = out_ptr(psum);
          {
            // Safe: reads buffers `logits`/`weight` keep alive, writes arrays Python cannot see yet.
            py::gil_scoped_release release;
            virtime::tile_stats(logits.data(), n, C, h, w, weight.data(), L, ppos, ppsum, threads);
          }
          return py::make_tuple(pos, psum);
        },
        py::arg("logits"), py::arg("weight"), py::arg("origins"), py::arg("tile_size"), py::arg("core"),
        py::arg("threshold") = 0.5, py::arg("threads") = 0,
        "Per tile and channel, (positive count int64 (n, C), probability sum float64 (n, C)) "
        "of the blended map sum(w p) / sum(w) over the tile's core x core region. logits hold the k "
        "windows of each tile in order, (n*k, C, h, w); origins (k, 2) are window (x, y) in the tile.");

  m.def("postprocess_tiles",
        [](const py::handle& logits_obj, const py::handle& weight_obj, int64_t factor,
           const py::handle& origins, int64_t tile_size, int64_t core, double threshold, int threads) {
          F32 logits = logits_array(logits_obj);
          const int64_t nw = logits.shape(0), C = logits.shape(1), h = logits.shape(2), w = logits.shape(3);
          F32 weight = weight_array(weight_obj, h, w);
          const virtime::TileLayout L = make_layout(origins, tile_size, core, threshold);
          const int64_t n = tiles_of(nw, L.n_windows());
          if (factor < 1 || h % factor || w % factor) {
            throw virtime::invalid_argument("windows " + std::to_string(h) + "x" + std::to_string(w) +
                                            " must be multiples of factor " + std::to_string(factor));
          }
          py::array_t<float> wp({nw, C, h / factor, w / factor});
          py::array_t<float> ws({h / factor, w / factor});
          py::array_t<int64_t> pos({n, C});
          py::array_t<double> psum({n, C});
          float* pwp = out_ptr(wp);
          float* pws = out_ptr(ws);
          int64_t* ppos = out_ptr(pos);
          double* ppsum = out_ptr(psum);
          {
            // Safe: reads buffers `logits`/`weight` keep alive, writes arrays Python cannot see yet.
            py::gil_scoped_release release;
            virtime::postprocess_tiles(logits.data(), n, C, h, w, weight.data(), factor, L, pwp, pws,
                                       ppos, ppsum, threads);
          }
          return py::make_tuple(wp, ws, pos, psum);
        },
        py::arg("logits"), py::arg("weight"), py::arg("factor"), py::arg("origins"),
        py::arg("tile_size"), py::arg("core"), py::arg("threshold") = 0.5, py::arg("threads") = 0,
        "sigmoid(logits) * weight summed over factor x factor blocks of every window, and tile_stats, in "
        "one pass (each probability computed once): (wp (n*k, C, h/f, w/f), ws (h/f, w/f), pos, psum).");
}
