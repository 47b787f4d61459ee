// Zero-copy hand-over of C++ buffers to NumPy.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
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

// The raw bytes of `values` (for pickling), and back.
template <typename T>
pybind11::bytes bytes_of(const std::vector<T>& values) {
  return pybind11::bytes(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

template <typename T>
std::vector<T> vector_of(const pybind11::handle& raw) {
  const std::string s = raw.cast<std::string>();
  if (s.size() % sizeof(T)) throw pybind11::value_error("byte count is not a whole number of items");
  std::vector<T> out(s.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

}  // namespace virtime_bind
