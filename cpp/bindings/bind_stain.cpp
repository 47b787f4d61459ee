// Python binding of the stain normalizers (Macenko, Reinhard) and their helpers. Normalizers use shared_ptr holders: the batcher takes
// std::shared_ptr<const StainNormalizer>.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "array_utils.hpp"
#include "virtime/color.hpp"
#include "virtime/errors.hpp"
#include "virtime/stain.hpp"
#include "virtime/stain_macenko.hpp"
#include "virtime/stain_reinhard.hpp"

namespace py = pybind11;
using virtime::MacenkoApply;
using virtime::MacenkoNormalizer;
using virtime::ReinhardNormalizer;
using virtime::StainNormalizer;
using virtime::StainOutcome;

namespace {

using U8 = py::array_t<uint8_t, py::array::c_style>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;

// A C-contiguous uint8 (h, w, 3) view of `obj`; any other dtype or shape is an error, not a cast.
U8 rgb_image(const py::handle& obj, const char* what) {
  if (!py::isinstance<py::array>(obj) || !py::isinstance<py::array_t<uint8_t>>(obj)) {
    throw virtime::invalid_argument(std::string(what) + " must be a numpy uint8 array");
  }
  U8 arr = U8::ensure(obj);
  if (!arr || arr.ndim() != 3 || arr.shape(2) != 3) {
    throw virtime::invalid_argument(std::string(what) + " must have shape (height, width, 3)");
  }
  return arr;
}

template <size_t N>
std::array<double, N> fixed(const py::handle& obj, std::vector<py::ssize_t> shape, const char* what) {
  F64 a = F64::ensure(obj);
  bool ok = a && a.ndim() == static_cast<py::ssize_t>(shape.size()) && a.size() == static_cast<py::ssize_t>(N);
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
  if (!ok) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    throw virtime::invalid_argument(std::string(what) + " must have shape " + s + (shape.size() == 1 ? ",)" : ")"));
  }
  std::array<double, N> out{};
  std::memcpy(out.data(), a.data(), N * sizeof(double));
  return out;
}

MacenkoApply make_apply(const py::handle& inv, const py::handle& scale, const py::handle& ref) {
  const auto i = fixed<6>(inv, {2, 3}, "inv");
  const auto s = fixed<2>(scale, {2}, "scale");
  const auto r = fixed<6>(ref, {3, 2}, "ref");
  MacenkoApply p{};
  for (int k = 0; k < 6; ++k) p.inv[k] = static_cast<float>(i[k]);
  for (int k = 0; k < 2; ++k) p.scale[k] = static_cast<float>(s[k]);
  for (int k = 0; k < 6; ++k) p.ref[k] = static_cast<float>(r[k]);
  return p;
}

template <typename T, size_t N>
py::array_t<T> arr(const std::array<double, N>& a, std::vector<py::ssize_t> shape) {
  return virtime_bind::to_numpy(std::vector<T>(a.begin(), a.end()), std::move(shape));
}
template <typename T>
py::array_t<T> arr(const float* a, size_t n, std::vector<py::ssize_t> shape) {
  return virtime_bind::to_numpy(std::vector<T>(a, a + n), std::move(shape));
}

// Copies the tile, normalizes the copy with the GIL released, returns (tile, status, note).
py::tuple transform_copy(const StainNormalizer& norm, const py::handle& tile) {
  U8 in = rgb_image(tile, "tile");
  const int64_t h = in.shape(0), w = in.shape(1);
  std::vector<uint8_t> buf(in.data(), in.data() + in.size());
  StainOutcome out;
  {
    // Safe: only `buf` (owned here, unseen by Python) and the const normalizer are touched.
    py::gil_scoped_release release;
    out = norm.transform(buf.data(), h, w);
  }
  return py::make_tuple(virtime_bind::to_numpy(std::move(buf), {h, w, 3}),
                        static_cast<int>(out.status), out.note);
}

void fit_image(StainNormalizer& norm, const py::handle& target) {
  U8 in = rgb_image(target, "target");
  const int64_t h = in.shape(0), w = in.shape(1);
  // Safe: `in` keeps the buffer alive and is only read; callers must not fit while transforming.
  py::gil_scoped_release release;
  norm.fit(in.data(), h, w);
}

}  // namespace

void bind_stain(py::module_& m) {
  py::class_<StainNormalizer, std::shared_ptr<StainNormalizer>>(
      m, "StainNormalizer", "Abstract stain normalizer: fit(target), transform(tile).")
      .def_property_readonly("name", &StainNormalizer::name)
      .def_property_readonly("fitted", &StainNormalizer::fitted)
      .def("fit", &fit_image, py::arg("target"),
           "Fits the reference appearance to an RGB uint8 (h, w, 3) image.")
      .def("transform", &transform_copy, py::arg("tile"),
           "Normalizes a copy of an RGB uint8 (h, w, 3) tile; returns (tile, status, note) with "
           "status 0 normalized, 1 reference-matrix fallback, 2 passed through.");

  py::class_<MacenkoNormalizer, StainNormalizer, std::shared_ptr<MacenkoNormalizer>>(
      m, "MacenkoNormalizer", "Macenko (2009) stain normalizer; starts at the default H&E reference.")
      .def(py::init([](double beta, double alpha, double max_percentile, int64_t min_tissue,
                       int64_t min_tissue_fallback) {
             virtime::MacenkoParams p;
             p.beta = beta;
             p.alpha = alpha;
             p.max_percentile = max_percentile;
             p.min_tissue = min_tissue;
             p.min_tissue_fallback = min_tissue_fallback;
             return std::make_shared<MacenkoNormalizer>(p);
           }),
           py::arg("beta") = 0.15, py::arg("alpha") = 1.0, py::arg("max_percentile") = 99.0,
           py::arg("min_tissue") = 500, py::arg("min_tissue_fallback") = 50)
      .def_property_readonly("stain_matrix",
                             [](const MacenkoNormalizer& n) { return arr<double>(n.stain_matrix(), {3, 2}); })
      .def_property_readonly("max_concentrations", [](const MacenkoNormalizer& n) {
        return arr<double>(n.max_concentrations(), {2});
      })
      .def_property_readonly("beta", [](const MacenkoNormalizer& n) { return n.params().beta; })
      .def_property_readonly("alpha", [](const MacenkoNormalizer& n) { return n.params().alpha; })
      .def_property_readonly("max_percentile",
                             [](const MacenkoNormalizer& n) { return n.params().max_percentile; })
      .def_property_readonly("min_tissue", [](const MacenkoNormalizer& n) { return n.params().min_tissue; })
      .def_property_readonly("min_tissue_fallback",
                             [](const MacenkoNormalizer& n) { return n.params().min_tissue_fallback; })
      .def("set_reference",
           [](MacenkoNormalizer& n, const py::handle& stain_matrix, const py::handle& max_conc) {
             n.set_reference(fixed<6>(stain_matrix, {3, 2}, "stain_matrix"),
                             fixed<2>(max_conc, {2}, "max_conc"));
           },
           py::arg("stain_matrix"), py::arg("max_conc"))
      .def("estimate",
           [](const MacenkoNormalizer& n, const py::handle& tile) {
             U8 in = rgb_image(tile, "tile");
             const int64_t np = in.shape(0) * in.shape(1);
             virtime::MacenkoEstimate e;
             {
               // Safe: reads the buffer `in` keeps alive; the normalizer is only read.
               py::gil_scoped_release release;
               e = virtime::estimate_macenko(in.data(), np, n.params());
             }
             return py::make_tuple(e.ok, e.note, e.n_tissue, arr<double>(e.stain_matrix, {3, 2}),
                                   arr<double>(e.max_conc, {2}));
           },
           py::arg("tile"),
           "Estimates a tile's own stain matrix: (ok, note, n_tissue, stain_matrix (3, 2), max_conc (2,)).")
      .def("plan",
           [](const MacenkoNormalizer& n, const py::handle& tile) {
             U8 in = rgb_image(tile, "tile");
             const int64_t h = in.shape(0), w = in.shape(1);
             MacenkoApply p{};
             StainOutcome o;
             {
               // Safe: reads the buffer `in` keeps alive; the normalizer is only read.
               py::gil_scoped_release release;
               o = n.plan(in.data(), h, w, p);
             }
             return py::make_tuple(static_cast<int>(o.status), o.note, arr<float>(p.inv, 6, {2, 3}),
                                   arr<float>(p.scale, 2, {2}), arr<float>(p.ref, 6, {3, 2}));
           },
           py::arg("tile"),
           "What transform would apply: (status, note, inv (2, 3), scale (2,), ref (3, 2)) as float32 "
           "(zeros when status is 2, passed through).");

  py::class_<ReinhardNormalizer, StainNormalizer, std::shared_ptr<ReinhardNormalizer>>(
      m, "ReinhardNormalizer",
      "Reinhard (2001) l-alpha-beta mean/std transfer; starts at the synthetic H&E reference.")
      .def(py::init([](double beta, int64_t min_tissue, double min_std) {
             virtime::ReinhardParams p;
             p.beta = beta;
             p.min_tissue = min_tissue;
             p.min_std = min_std;
             return std::make_shared<ReinhardNormalizer>(p);
           }),
           py::arg("beta") = 0.15, py::arg("min_tissue") = 500, py::arg("min_std") = 1e-4)
      .def_property_readonly("lab_mean", [](const ReinhardNormalizer& n) { return arr<double>(n.mean(), {3}); })
      .def_property_readonly("lab_std", [](const ReinhardNormalizer& n) { return arr<double>(n.stddev(), {3}); })
      .def_property_readonly("beta", [](const ReinhardNormalizer& n) { return n.params().beta; })
      .def_property_readonly("min_tissue", [](const ReinhardNormalizer& n) { return n.params().min_tissue; })
      .def_property_readonly("min_std", [](const ReinhardNormalizer& n) { return n.params().min_std; })
      .def("set_reference",
           [](ReinhardNormalizer& n, const py::handle& mean, const py::handle& std) {
             n.set_reference(fixed<3>(mean, {3}, "mean"), fixed<3>(std, {3}, "std"));
           },
           py::arg("mean"), py::arg("std"));

  m.def("macenko_apply",
        [](const py::handle& tile, const py::handle& inv, const py::handle& scale, const py::handle& ref) {
          U8 in = rgb_image(tile, "tile");
          const MacenkoApply p = make_apply(inv, scale, ref);
          const int64_t h = in.shape(0), w = in.shape(1);
          std::vector<uint8_t> out(static_cast<size_t>(in.size()));
          {
            // Safe: reads the buffer `in` keeps alive, writes `out`, which Python cannot see yet.
            py::gil_scoped_release release;
            virtime::macenko_apply_cpu(in.data(), out.data(), h * w, p);
          }
          return virtime_bind::to_numpy(std::move(out), {h, w, 3});
        },
        py::arg("tile"), py::arg("inv"), py::arg("scale"), py::arg("ref"),
        "The Macenko per-pixel step of a plan (MacenkoNormalizer.plan) on a copy of the tile.");

  m.def("rgb_to_lab",
        [](const py::handle& tile) {
          U8 in = rgb_image(tile, "tile");
          const int64_t h = in.shape(0), w = in.shape(1);
          std::vector<float> lab(static_cast<size_t>(in.size()));
          virtime::rgb_to_lab_reinhard_n(in.data(), lab.data(), h * w);
          return virtime_bind::to_numpy(std::move(lab), {h, w, 3});
        },
        py::arg("tile"), "RGB uint8 (h, w, 3) -> Reinhard l-alpha-beta float32 (h, w, 3).");
  m.def("lab_to_rgb",
        [](py::array_t<float, py::array::c_style | py::array::forcecast> lab) {
          if (lab.ndim() != 3 || lab.shape(2) != 3)
            throw virtime::invalid_argument("lab must have shape (height, width, 3)");
          const int64_t h = lab.shape(0), w = lab.shape(1);
          std::vector<uint8_t> out(static_cast<size_t>(lab.size()));
          virtime::lab_reinhard_to_rgb_n(lab.data(), out.data(), h * w);
          return virtime_bind::to_numpy(std::move(out), {h, w, 3});
        },
        py::arg("lab"), "Reinhard l-alpha-beta (h, w, 3) -> RGB uint8, clipped and rounded.");
  m.def("reinhard_stats",
        [](const py::handle& tile, double beta) {
          U8 in = rgb_image(tile, "tile");
          virtime::ReinhardParams p;
          p.beta = beta;
          const auto s = virtime::reinhard_stats(in.data(), in.shape(0) * in.shape(1), p);
          return py::make_tuple(s.n_tissue, arr<double>(s.mean, {3}), arr<double>(s.std, {3}));
        },
        py::arg("tile"), py::arg("beta") = 0.15,
        "(n_tissue, mean (3,), std (3,)) of l-alpha-beta over tissue pixels (OD norm >= beta).");
  m.def("render_reference_he",
        [](int64_t height, int64_t width) {
          if (height < 1 || width < 1) throw virtime::invalid_argument("height and width must be >= 1");
          std::vector<uint8_t> out(static_cast<size_t>(height * width * 3));
          virtime::render_reference_he(out.data(), height, width);
          return virtime_bind::to_numpy(std::move(out), {height, width, 3});
        },
        py::arg("height") = 256, py::arg("width") = 256,
        "The deterministic synthetic H&E image the default Reinhard reference is fitted on.");
}
