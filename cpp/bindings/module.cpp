// The compiled module virtime._core: only calls the per-area binding functions.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_errors(py::module_& m);
void bind_slide(py::module_& m);
void bind_tissue(py::module_& m);
void bind_tiling(py::module_& m);
void bind_stain(py::module_& m);
void bind_batcher(py::module_& m);
void bind_postprocess(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "virtime C++ core: slide reading, tissue detection, tiling, stain normalization, batching";
  bind_errors(m);
  bind_slide(m);
  bind_tissue(m);
  bind_tiling(m);
  bind_stain(m);
  bind_batcher(m);
  bind_postprocess(m);
}
