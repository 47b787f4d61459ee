#include "virtime/batcher.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <typeinfo>

#if defined(__GNUG__)
#include <cxxabi.h>
#include <cstdlib>
#endif

#include "virtime/errors.hpp"
#include "virtime/image.hpp"

namespace virtime {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The exception's C++ type, readable where the compiler can demangle it ("std::invalid_argument").
std::string type_name(const std::exception& e) {
  const char* raw = typeid(e).name();
#if defined(__GNUG__)
  int status = 0;
  char* readable = abi::__cxa_demangle(raw, nullptr, nullptr, &status);
  if (status == 0 && readable != nullptr) {
    std::string out(readable);
    std::free(readable);
    return out;
  }
#endif
  return raw;
}

}  // namespace

Batcher::Batcher(std::shared_ptr<const Slide> slide, std::vector<TileRequest> tiles,
                 int64_t out_size, std::shared_ptr<const StainNormalizer> normalizer,
                 BatcherParams params)
    : Batcher(std::move(slide), std::move(tiles), out_size, std::move(normalizer), params, {}) {}

Batcher::Batcher(std::shared_ptr<const Slide> slide, std::vector<TileRequest> tiles,
                 int64_t out_size, std::shared_ptr<const StainNormalizer> normalizer,
                 BatcherParams params, std::vector<RingSlot> ring)
    : slide_(std::move(slide)),
      tiles_(std::move(tiles)),
      out_size_(out_size),
      normalizer_(std::move(normalizer)),
      params_(params),
      ring_(std::move(ring)) {
  if (!slide_) throw invalid_argument("batcher needs a slide");
  if (out_size_ <= 0) throw invalid_argument("tile output size must be positive");
  if (params_.batch_size <= 0) throw invalid_argument("batch size must be positive");
  if (params_.prefetch_batches <= 0) throw invalid_argument("prefetch must be at least 1 batch");
  if (normalizer_ && !normalizer_->fitted()) {
    throw invalid_argument("stain normalizer '" + normalizer_->name() + "' is not fitted");
  }
  for (const TileRequest& t : tiles_) {
    if (t.read_w <= 0 || t.read_h <= 0) throw invalid_argument("tile read size must be positive");
  }
  if (!ring_.empty()) {
    if (!params_.emit_uint8) throw invalid_argument("a ring of tile buffers needs emit_uint8");
    const int64_t need = params_.batch_size * out_size_ * out_size_ * 3;
    for (size_t i = 0; i < ring_.size(); ++i) {
      if (ring_[i].data == nullptr || ring_[i].bytes < need) {
        throw invalid_argument("ring slot " + std::to_string(i) + " holds " +
                               std::to_string(ring_[i].bytes) + " bytes; a batch needs " +
                               std::to_string(need));
      }
      free_slots_.push_back(static_cast<int64_t>(i));
    }
    held_.assign(ring_.size(), 0);
  }
  num_batches_ = (num_tiles() + params_.batch_size - 1) / params_.batch_size;
  int threads = params_.threads > 0 ? params_.threads
                                    : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Batcher::~Batcher() { stop(); }

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

void Batcher::worker_loop() {
  try {
    run_worker();
  } catch (...) {  // e.g. std::bad_alloc while making a batch's buffers: no tile to blame
    fail(worker_error(std::current_exception(), -1));
  }
}

void Batcher::fail(std::exception_ptr error) noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fatal_) fatal_ = std::move(error);
    stopping_ = true;  // the other workers finish their tile and leave
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
}

std::exception_ptr Batcher::worker_error(std::exception_ptr original,
                                         int64_t tile_idx) const noexcept {
  try {
    std::string what;
    try {
      std::rethrow_exception(original);
    } catch (const Error& e) {
      what = e.reason();
    } catch (const std::exception& e) {
      what = type_name(e);
      if (what != e.what()) what += std::string(": ") + e.what();  // bad_alloc says only its name
    } catch (...) {
      what = "an exception that is not a std::exception";
    }
    std::string where = "a worker failed";
    if (tile_idx >= 0) {
      const TileRequest& t = tiles_[static_cast<size_t>(tile_idx)];
      where += " on tile " + std::to_string(tile_idx) + " at (x=" + std::to_string(t.x) +
               ", y=" + std::to_string(t.y) + ")";
    }
    return std::make_exception_ptr(Error(ErrorKind::Batcher, slide_->path(),
                                         where + ", not while reading the slide: " + what));
  } catch (...) {
    return original;  // not even the message could be built (memory): pass the original on
  }
}

void Batcher::run_worker() {
  std::vector<uint32_t> scratch;
  std::vector<uint8_t> read_buf;
  const int64_t n = num_tiles();
  for (;;) {
    int64_t idx;
    Batch* batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Bounded prefetch: never run more than prefetch_batches ahead of the consumer.
      // With a ring, a batch not yet started also needs a free slot.
      work_cv_.wait(lock, [&] {
        if (stopping_ || next_tile_ >= n) return true;
        const int64_t b = next_tile_ / params_.batch_size;
        return b < next_consume_ + params_.prefetch_batches &&
               (ring_.empty() || !free_slots_.empty() || in_flight_.count(b) > 0);
      });
      if (stopping_ || next_tile_ >= n) return;
      idx = next_tile_++;
      const int64_t b = idx / params_.batch_size;
      auto it = in_flight_.find(b);
      if (it == in_flight_.end()) {
        auto fresh = std::make_unique<Batch>();
        fresh->index = b;
        fresh->capacity = std::min(params_.batch_size, n - b * params_.batch_size);
        fresh->remaining = fresh->capacity;
        const size_t px = static_cast<size_t>(fresh->capacity * out_size_ * out_size_);
        if (!ring_.empty()) {
          fresh->ring_slot = free_slots_.front();
          free_slots_.pop_front();
          fresh->rgb_out = ring_[static_cast<size_t>(fresh->ring_slot)].data;
        } else if (params_.emit_uint8) {
          fresh->rgb.resize(px * 3);
          fresh->rgb_out = fresh->rgb.data();  // stable: not resized until finalize
        }
        if (params_.pack == PackFormat::Float32) fresh->f32.resize(px * 3);
        if (params_.pack == PackFormat::Float16) fresh->f16.resize(px * 3);
        fresh->ok.assign(static_cast<size_t>(fresh->capacity), 0);
        fresh->stain_status.assign(static_cast<size_t>(fresh->capacity), 0);
        fresh->stain_note.assign(static_cast<size_t>(fresh->capacity), "");
        it = in_flight_.emplace(b, std::move(fresh)).first;
      }
      batch = it->second.get();  // stable: erased only after it is complete and consumed
    }
    const int64_t slot = idx % params_.batch_size;
    std::string failure;
    try {
      process_tile(idx, *batch, slot, scratch, read_buf);
    } catch (const Error& e) {
      // Only an unreadable region is the slide's fault and skipped; anything else is a bug.
      if (e.kind() != ErrorKind::SlideRead) {
        fail(worker_error(std::current_exception(), idx));
        return;
      }
      failure = e.what();
    } catch (...) {
      fail(worker_error(std::current_exception(), idx));
      return;  // the tile's batch never completes: next() throws instead of waiting for it
    }
    bool complete = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failure.empty()) {
        batch->failures.push_back(TileFailure{idx, tiles_[idx].x, tiles_[idx].y, failure});
      } else {
        batch->ok[slot] = 1;
      }
      complete = --batch->remaining == 0;
    }
    if (complete) {
      finalize(*batch);  // only this thread touches a batch once its last tile is done
      {
        std::lock_guard<std::mutex> lock(mu_);
        batch->remaining = -1;  // marks "ready"
      }
      ready_cv_.notify_all();
    }
  }
}

void Batcher::process_tile(int64_t idx, Batch& batch, int64_t slot, std::vector<uint32_t>& scratch,
                           std::vector<uint8_t>& read_buf) {
  const TileRequest& t = tiles_[idx];
  const int64_t px = out_size_ * out_size_;
  std::vector<uint8_t> own_tile;
  uint8_t* tile = nullptr;
  if (batch.rgb_out != nullptr) {
    tile = batch.rgb_out + slot * px * 3;
  } else {
    own_tile.resize(static_cast<size_t>(px * 3));
    tile = own_tile.data();
  }
  auto t0 = std::chrono::steady_clock::now();
  if (t.read_w == out_size_ && t.read_h == out_size_) {
    slide_->read_region_into(t.x, t.y, t.level, t.read_w, t.read_h, tile, scratch);
  } else {
    read_buf.resize(static_cast<size_t>(t.read_w * t.read_h * 3));
    slide_->read_region_into(t.x, t.y, t.level, t.read_w, t.read_h, read_buf.data(), scratch);
    resize_area(read_buf.data(), t.read_w, t.read_h, tile, out_size_, out_size_);
  }
  const double read_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  StainOutcome outcome;
  if (normalizer_) outcome = normalizer_->transform(tile, out_size_, out_size_);
  const double norm_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  if (params_.pack == PackFormat::Float32) {
    pack_chw_normalized_f32(tile, out_size_, out_size_, batch.f32.data() + slot * px * 3);
  } else if (params_.pack == PackFormat::Float16) {
    pack_chw_normalized_f16(tile, out_size_, out_size_, batch.f16.data() + slot * px * 3);
  }
  const double pack_s = seconds_since(t0);
  std::lock_guard<std::mutex> lock(mu_);
  batch.stain_status[slot] = static_cast<uint8_t>(outcome.status);
  batch.stain_note[slot] = outcome.note;
  batch.read_seconds += read_s;
  batch.normalize_seconds += norm_s;
  batch.pack_seconds += pack_s;
}

void Batcher::finalize(Batch& b) const {
  // Compact successful tiles to the front, in tile order, so consumers see dense arrays.
  const int64_t px3 = out_size_ * out_size_ * 3;
  int64_t k = 0;
  std::vector<uint8_t> status;
  std::vector<std::string> notes;
  for (int64_t s = 0; s < b.capacity; ++s) {
    if (!b.ok[s]) continue;
    const int64_t idx = b.index * params_.batch_size + s;
    if (k != s) {
      if (b.rgb_out != nullptr) std::memmove(b.rgb_out + k * px3, b.rgb_out + s * px3, px3);
      if (!b.f32.empty()) std::memmove(&b.f32[k * px3], &b.f32[s * px3], px3 * sizeof(float));
      if (!b.f16.empty()) std::memmove(&b.f16[k * px3], &b.f16[s * px3], px3 * sizeof(uint16_t));
    }
    b.tile_index.push_back(idx);
    b.xy.push_back(tiles_[idx].x);
    b.xy.push_back(tiles_[idx].y);
    status.push_back(b.stain_status[s]);
    notes.push_back(b.stain_note[s]);
    ++k;
  }
  b.count = k;
  b.stain_status = std::move(status);
  b.stain_note = std::move(notes);
  if (!b.rgb.empty()) b.rgb.resize(static_cast<size_t>(k * px3));
  if (!b.f32.empty()) b.f32.resize(static_cast<size_t>(k * px3));
  if (!b.f16.empty()) b.f16.resize(static_cast<size_t>(k * px3));
  std::sort(b.failures.begin(), b.failures.end(),
            [](const TileFailure& a, const TileFailure& c) { return a.index < c.index; });
}

std::unique_ptr<Batch> Batcher::next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (fatal_) std::rethrow_exception(fatal_);
  if (next_consume_ >= num_batches_) return nullptr;
  bool starved = false;
  ready_cv_.wait(lock, [&] {
    if (stopping_ || fatal_) return true;
    auto it = in_flight_.find(next_consume_);
    // Batches start in order, so a next batch without a slot while none is free means the
    // consumer holds every slot: waiting would never end.
    starved = !ring_.empty() && it == in_flight_.end() && free_slots_.empty();
    return starved || (it != in_flight_.end() && it->second->remaining == -1);
  });
  if (fatal_) std::rethrow_exception(fatal_);
  if (stopping_) return nullptr;
  if (starved) {
    throw invalid_argument("the consumer holds all " + std::to_string(ring_.size()) +
                           " ring slots: release one before asking for the next batch");
  }
  auto it = in_flight_.find(next_consume_);
  std::unique_ptr<Batch> out = std::move(it->second);
  in_flight_.erase(it);
  if (out->ring_slot >= 0) held_[static_cast<size_t>(out->ring_slot)] = 1;
  ++next_consume_;
  lock.unlock();
  work_cv_.notify_all();
  return out;
}

}  // namespace virtime

namespace virtime {

void Batcher::release(int64_t slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (slot < 0 || slot >= ring_size() || !held_[static_cast<size_t>(slot)]) {
      throw invalid_argument("ring slot " + std::to_string(slot) +
                             " is not held by the consumer (released twice, or never handed out)");
    }
    held_[static_cast<size_t>(slot)] = 0;
    free_slots_.push_back(slot);
  }
  work_cv_.notify_all();
}

}  // namespace virtime
