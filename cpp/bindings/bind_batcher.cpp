#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "array_utils.hpp"
#include "virtime/batcher.hpp"
#include "virtime/errors.hpp"

namespace py = pybind11;
using virtime::Batch;
using virtime::Batcher;

namespace {

// `owner` is the Python Batcher: a ring slot's view keeps it (and so, by keep_alive, the ring
// buffers) alive.
py::dict batch_to_dict(std::unique_ptr<Batch> b, int64_t size, const virtime::BatcherParams& p,
                       const py::object& owner) {
  const py::ssize_t n = b->count, s = size;
  py::dict d;
  d["index"] = b->index;
  d["count"] = b->count;
  d["tile_index"] = virtime_bind::to_numpy(std::move(b->tile_index), {n});
  d["xy"] = virtime_bind::to_numpy(std::move(b->xy), {n, 2});
  d["stain_status"] = virtime_bind::to_numpy(std::move(b->stain_status), {n});
  d["stain_note"] = py::cast(b->stain_note);
  d["slot"] = b->ring_slot >= 0 ? py::object(py::int_(b->ring_slot)) : py::object(py::none());
  if (b->ring_slot >= 0) {  // a view of the caller's buffer: the tiles were written there
    d["rgb"] = py::array_t<uint8_t>({n, s, s, py::ssize_t(3)}, b->rgb_out, owner);
  } else if (p.emit_uint8) {
    d["rgb"] = virtime_bind::to_numpy(std::move(b->rgb), {n, s, s, 3});
  }
  if (p.pack == virtime::PackFormat::Float32) {
    d["tensor"] = virtime_bind::to_numpy(std::move(b->f32), {n, 3, s, s});
  } else if (p.pack == virtime::PackFormat::Float16) {
    // Half bits travel as uint16 and are viewed as float16 on the Python side.
    d["tensor"] = virtime_bind::to_numpy(std::move(b->f16), {n, 3, s, s}).attr("view")("float16");
  }
  py::list failures;
  for (const auto& f : b->failures) failures.append(py::make_tuple(f.index, f.x, f.y, f.reason));
  d["failures"] = failures;
  d["read_seconds"] = b->read_seconds;
  d["normalize_seconds"] = b->normalize_seconds;
  d["pack_seconds"] = b->pack_seconds;
  return d;
}

}  // namespace

void bind_batcher(py::module_& m) {
  py::enum_<virtime::PackFormat>(m, "PackFormat")
      .value("none", virtime::PackFormat::None)
      .value("float32", virtime::PackFormat::Float32)
      .value("float16", virtime::PackFormat::Float16);

  py::class_<virtime::BatcherParams>(m, "BatcherParams")
      .def(py::init<>())
      .def_readwrite("batch_size", &virtime::BatcherParams::batch_size)
      .def_readwrite("threads", &virtime::BatcherParams::threads)
      .def_readwrite("prefetch_batches", &virtime::BatcherParams::prefetch_batches)
      .def_readwrite("emit_uint8", &virtime::BatcherParams::emit_uint8)
      .def_readwrite("pack", &virtime::BatcherParams::pack);

  py::class_<Batcher>(m, "Batcher")
      .def(py::init([](std::shared_ptr<virtime::Slide> slide,
                       py::array_t<int64_t, py::array::c_style | py::array::forcecast> xy,
                       int level, int64_t read_size, int64_t out_size, py::object normalizer,
                       const virtime::BatcherParams& params, py::object ring) {
             if (xy.ndim() != 2 || (xy.size() > 0 && xy.shape(1) != 2)) {
               throw virtime::invalid_argument("tile coordinates must have shape (n, 2)");
             }
             std::vector<virtime::TileRequest> tiles;
             const int64_t* p = xy.data();
             for (py::ssize_t i = 0; i < xy.shape(0); ++i) {
               tiles.push_back({p[2 * i], p[2 * i + 1], level, read_size, read_size});
             }
             std::shared_ptr<const virtime::StainNormalizer> norm;
             if (!normalizer.is_none()) {
               norm = normalizer.cast<std::shared_ptr<virtime::StainNormalizer>>();
             }
             std::vector<virtime::RingSlot> slots;
             if (!ring.is_none()) {
               for (py::handle h : ring) {
                 if (!py::isinstance<py::array>(h)) {
                   throw virtime::invalid_argument("ring slots must be numpy uint8 arrays");
                 }
                 py::array a = py::reinterpret_borrow<py::array>(h);
                 if (!a.dtype().is(py::dtype::of<uint8_t>()) || !a.writeable() ||
                     !(a.flags() & py::array::c_style)) {
                   throw virtime::invalid_argument(
                       "ring slots must be writable C-contiguous uint8 arrays");
                 }
                 slots.push_back({static_cast<uint8_t*>(a.mutable_data()),
                                  static_cast<int64_t>(a.nbytes())});
               }
               if (slots.empty()) throw virtime::invalid_argument("a ring needs at least one slot");
             }
             return std::make_unique<Batcher>(std::move(slide), std::move(tiles), out_size,
                                              std::move(norm), params, std::move(slots));
           }),
           py::arg("slide"), py::arg("xy"), py::arg("level"), py::arg("read_size"),
           py::arg("out_size"), py::arg("normalizer"), py::arg("params"),
           py::arg("ring") = py::none(),
           py::keep_alive<1, 9>())  // the batcher writes into the ring's buffers
      .def_property_readonly("num_batches", &Batcher::num_batches)
      .def_property_readonly("ring_size", &Batcher::ring_size)
      .def("release", &Batcher::release, py::arg("slot"))  // a lock and a push: keeps the GIL
      .def_property_readonly("num_tiles", &Batcher::num_tiles)
      .def("next",
           [](py::object self) -> py::object {
             Batcher& b = self.cast<Batcher&>();
             std::unique_ptr<Batch> batch;
             {
               py::gil_scoped_release release;  // waits on worker threads that never touch Python
               batch = b.next();
             }
             if (!batch) return py::none();
             return batch_to_dict(std::move(batch), b.out_size(), b.params(), self);
           })
      .def("stop", [](Batcher& b) {
        py::gil_scoped_release release;  // joins worker threads
        b.stop();
      });
}
