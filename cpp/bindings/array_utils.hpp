// Zero-copy hand-over of C++ buffers to NumPy.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace virtime_bind {

// The array owns the moved vector through a capsule.
template <typename T>
pybind11::array_t<T> to_numpy(std::vector<T>&& values, std::vector<pybind11::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(values));
  pybind11::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return pybind11::array_t<T>(shape, owned->data(), owner);
}

// A C-contiguous view of `values`, a member of the bound object `owner`: the array keeps `owner`
// (and so the buffer) alive. Writable, as the arrays of the old dict results were.
template <typename T>
pybind11::array_t<T> view_of(const std::vector<T>& values, std::vector<pybind11::ssize_t> shape,
                             pybind11::handle owner) {
  return pybind11::array_t<T>(shape, values.data(), owner);
}

}  // namespace virtime_bind
