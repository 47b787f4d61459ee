// Maps virtime::Error kinds to the exception classes of the Python module virtime.errors.
#include <pybind11/pybind11.h>

#include "virtime/errors.hpp"

namespace py = pybind11;

namespace {

const char* class_name(virtime::ErrorKind kind) {
  using K = virtime::ErrorKind;
  switch (kind) {
    case K::NotFound: return "SlideNotFoundError";
    case K::SlideFormat: return "SlideFormatError";
    case K::SlideRead: return "SlideReadError";
    case K::MissingMpp: return "MissingMppError";
    case K::InvalidMpp: return "InvalidMppError";
    case K::SlideTooSmall: return "SlideTooSmallError";
    case K::Library: return "OpenSlideLibraryError";
    case K::InvalidArgument: return "InvalidArgumentError";
    case K::Cuda: return "CudaError";
    case K::Batcher: return "BatcherError";
    case K::Generic: break;
  }
  return "VirtimeError";
}

}  // namespace

void bind_errors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const virtime::Error& e) {
      py::object cls = py::module_::import("virtime.errors").attr(class_name(e.kind()));
      PyErr_SetString(cls.ptr(), e.what());
    }
  });
  m.def("_raise_for_test", [](int kind, const std::string& file, const std::string& reason) {
    throw virtime::Error(static_cast<virtime::ErrorKind>(kind), file, reason);
  }, py::arg("kind"), py::arg("file"), py::arg("reason"),
  "Raises a core error of the given kind (used by tests of the error mapping).");
}
