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

// The batcher as Python holds it: it also knows the grid position each requested tile is reported
// under (iter_batches(tiles=...) asks for a subset of the grid).
class GridBatcher : public Batcher {
 public:
  GridBatcher(std::shared_ptr<const virtime::Slide> slide, std::vector<virtime::TileRequest> tiles,
              int64_t out_size, std::shared_ptr<const virtime::StainNormalizer> normalizer,
              const virtime::BatcherParams& params, std::vector<virtime::RingSlot> ring,
              std::vector<int64_t> grid_index)
      : Batcher(std::move(slide), std::move(tiles), out_size, std::move(normalizer), params,
                std::move(ring)),
        grid_index_(std::move(grid_index)) {}

  int64_t grid_position(int64_t request) const {
    return grid_index_.empty() ? request : grid_index_[static_cast<size_t>(request)];
  }

 private:
  std::vector<int64_t> grid_index_;  // empty: the requests are the grid itself
};

// A finished batch as Python sees it. Its arrays are made once and own the batch's buffers (or,
// with a ring, view the caller's slot), so every access returns the same array, without copies.
struct BatchResult {
  int64_t index = 0;
  int64_t count = 0;
  py::array_t<int64_t> tile_index;  // (n,) grid positions
  py::array_t<int64_t> xy;          // (n, 2) level-0
  py::object rgb = py::none();      // (n, H, W, 3) uint8, or None
  py::object tensor = py::none();   // (n, 3, H, W) float32/float16, or None
  py::array_t<uint8_t> stain_status;
  py::list stain_note;
  py::list failures;  // TileFailure, in tile order
  double read_seconds = 0, normalize_seconds = 0, pack_seconds = 0;
  int64_t slot = -1;               // the ring slot `rgb` views (-1: no ring)
  py::object batcher = py::none();  // the Python GridBatcher, with a ring: for the view and release
  bool released = false;
};

// `owner` is the Python GridBatcher: a ring slot's view keeps it (and so, by keep_alive, the ring
// buffers) alive.
std::shared_ptr<BatchResult> batch_result(std::unique_ptr<Batch> b, const GridBatcher& pool,
                                          const py::object& owner) {
  const py::ssize_t n = b->count, s = pool.out_size();
  const virtime::BatcherParams& p = pool.params();
  for (auto& i : b->tile_index) i = pool.grid_position(i);
  for (auto& f : b->failures) f.index = pool.grid_position(f.index);
  auto r = std::make_shared<BatchResult>();
  r->index = b->index;
  r->count = b->count;
  r->tile_index = virtime_bind::to_numpy(std::move(b->tile_index), {n});
  r->xy = virtime_bind::to_numpy(std::move(b->xy), {n, 2});
  r->stain_status = virtime_bind::to_numpy(std::move(b->stain_status), {n});
  r->stain_note = py::cast(b->stain_note);
  if (b->ring_slot >= 0) {  // a view of the caller's buffer: the tiles were written there
    r->slot = b->ring_slot;
    r->batcher = owner;
    r->rgb = py::array_t<uint8_t>({n, s, s, py::ssize_t(3)}, b->rgb_out, owner);
  } else if (p.emit_uint8) {
    r->rgb = virtime_bind::to_numpy(std::move(b->rgb), {n, s, s, 3});
  }
  if (p.pack == virtime::PackFormat::Float32) {
    r->tensor = virtime_bind::to_numpy(std::move(b->f32), {n, 3, s, s});
  } else if (p.pack == virtime::PackFormat::Float16) {
    // Half bits travel as uint16 and are viewed as float16.
    r->tensor = virtime_bind::to_numpy(std::move(b->f16), {n, 3, s, s}).attr("view")("float16");
  }
  for (auto& f : b->failures) r->failures.append(py::cast(std::move(f)));
  r->read_seconds = b->read_seconds;
  r->normalize_seconds = b->normalize_seconds;
  r->pack_seconds = b->pack_seconds;
  return r;
}

void bind_tile_failure(py::module_& m) {
  using virtime::TileFailure;
  py::class_<TileFailure>(m, "TileFailure", "A tile the pool could not produce, and why.")
      .def(py::init([](int64_t tile_index, int64_t x, int64_t y, std::string reason) {
             return TileFailure{tile_index, x, y, std::move(reason)};
           }),
           py::arg("tile_index"), py::arg("x"), py::arg("y"), py::arg("reason"))
      .def_readonly("tile_index", &TileFailure::index, "position in the grid's tile list")
      .def_readonly("x", &TileFailure::x, "level-0 top-left")
      .def_readonly("y", &TileFailure::y)
      .def_readonly("reason", &TileFailure::reason)
      .def(
          "__eq__",
          [](const TileFailure& a, const TileFailure& b) {
            return a.index == b.index && a.x == b.x && a.y == b.y && a.reason == b.reason;
          },
          py::is_operator())
      .def("__hash__",
           [](const TileFailure& f) { return py::hash(py::make_tuple(f.index, f.x, f.y, f.reason)); })
      .def("__repr__",
           [](const TileFailure& f) {
             return py::str("TileFailure(tile_index={!r}, x={!r}, y={!r}, reason={!r})")
                 .format(f.index, f.x, f.y, f.reason);
           })
      .def(py::pickle(
          [](const TileFailure& f) { return py::make_tuple(f.index, f.x, f.y, f.reason); },
          [](const py::tuple& t) {
            if (t.size() != 4) throw virtime::invalid_argument("not a pickled TileFailure");
            return TileFailure{t[0].cast<int64_t>(), t[1].cast<int64_t>(), t[2].cast<int64_t>(),
                               t[3].cast<std::string>()};
          }));
}

void bind_batch(py::module_& m) {
  py::class_<BatchResult, std::shared_ptr<BatchResult>>(
      m, "Batch",
      "Tiles ready for a model; the arrays share the same first axis (successful tiles only) and "
      "own the batch's buffers (rgb views the ring slot when there is one).")
      .def_readonly("index", &BatchResult::index, "batch number")
      .def_readonly("tile_index", &BatchResult::tile_index, "(n,) positions in the grid's tile list")
      .def_readonly("xy", &BatchResult::xy, "(n, 2) int64 level-0 coordinates")
      .def_readonly("rgb", &BatchResult::rgb, "(n, H, W, 3) uint8, or None")
      .def_readonly("tensor", &BatchResult::tensor,
                    "(n, 3, H, W) float32/float16, ImageNet-normalized, or None")
      .def_readonly("stain_status", &BatchResult::stain_status, "(n,) uint8, see STAIN_STATUS")
      .def_readonly("stain_note", &BatchResult::stain_note)
      .def_readonly("failures", &BatchResult::failures, "the batch's tiles that failed to read")
      .def_readonly("read_seconds", &BatchResult::read_seconds)
      .def_readonly("normalize_seconds", &BatchResult::normalize_seconds)
      .def_readonly("pack_seconds", &BatchResult::pack_seconds)
      .def_property_readonly(
          "slot",
          [](const BatchResult& r) -> py::object {
            return r.slot >= 0 ? py::object(py::int_(r.slot)) : py::object(py::none());
          },
          "the ring slot `rgb` views (None without a ring)")
      .def("__len__", [](const BatchResult& r) { return r.count; })
      .def(
          "release",
          [](BatchResult& r) {
            if (r.slot < 0 || r.released) return;
            r.released = true;
            r.batcher.cast<GridBatcher&>().release(r.slot);  // a lock and a push: keeps the GIL
          },
          "Hands the batch's ring slot back to the workers (no-op without a ring, or if done). "
          "After this, rgb may be overwritten by a later batch: call it only once nothing reads "
          "the slot any more (on a GPU: after the upload from it has completed).");
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

  bind_tile_failure(m);
  bind_batch(m);

  py::class_<GridBatcher>(m, "Batcher")
      .def(py::init([](std::shared_ptr<virtime::Slide> slide,
                       py::array_t<int64_t, py::array::c_style | py::array::forcecast> xy,
                       int level, int64_t read_size, int64_t out_size, py::object normalizer,
                       const virtime::BatcherParams& params, py::object ring,
                       py::object tile_index) {
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
             std::vector<int64_t> grid_index;
             if (!tile_index.is_none()) {
               auto idx = tile_index.cast<
                   py::array_t<int64_t, py::array::c_style | py::array::forcecast>>();
               if (idx.ndim() != 1 || idx.shape(0) != xy.shape(0)) {
                 throw virtime::invalid_argument("tile_index must have shape (n,) like xy");
               }
               grid_index.assign(idx.data(), idx.data() + idx.size());
             }
             return std::make_unique<GridBatcher>(std::move(slide), std::move(tiles), out_size,
                                                  std::move(norm), params, std::move(slots),
                                                  std::move(grid_index));
           }),
           py::arg("slide"), py::arg("xy"), py::arg("level"), py::arg("read_size"),
           py::arg("out_size"), py::arg("normalizer"), py::arg("params"),
           py::arg("ring") = py::none(), py::arg("tile_index") = py::none(),
           py::keep_alive<1, 9>())  // the batcher writes into the ring's buffers
      .def_property_readonly("num_batches", &Batcher::num_batches)
      .def_property_readonly("ring_size", &Batcher::ring_size)
      .def("release", &Batcher::release, py::arg("slot"))  // a lock and a push: keeps the GIL
      .def_property_readonly("num_tiles", &Batcher::num_tiles)
      .def("next",
           [](py::object self) -> py::object {
             GridBatcher& b = self.cast<GridBatcher&>();
             std::unique_ptr<Batch> batch;
             {
               py::gil_scoped_release release;  // waits on worker threads that never touch Python
               batch = b.next();
             }
             if (!batch) return py::none();
             return py::cast(batch_result(std::move(batch), b, self));
           })
      .def("stop", [](GridBatcher& b) {
        py::gil_scoped_release release;  // joins worker threads
        b.stop();
      });
}
