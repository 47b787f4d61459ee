// Worker pool that reads tiles, resamples them to the model size, normalizes stain and packs
// model-ready batches, in tile order, with a bounded prefetch queue.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "virtime/slide.hpp"
#include "virtime/stain.hpp"

namespace virtime {

enum class PackFormat { None = 0, Float32 = 1, Float16 = 2 };

struct BatcherParams {
  int64_t batch_size = 16;
  int threads = 0;            // 0 = hardware concurrency
  int prefetch_batches = 4;   // batches ready or in progress ahead of the consumer
  bool emit_uint8 = true;     // (N, H, W, 3) RGB
  PackFormat pack = PackFormat::Float32;  // (N, 3, H, W) ImageNet-normalized
};

struct TileRequest {
  int64_t x = 0, y = 0;  // level-0 top-left
  int level = 0;
  int64_t read_w = 0, read_h = 0;  // region read at `level`
};

// A caller-provided buffer that receives one batch's uint8 tiles (N, H, W, 3), successful tiles
// compacted to the front: e.g. a view of pinned host memory, so the upload reads it directly.
struct RingSlot {
  uint8_t* data = nullptr;
  int64_t bytes = 0;  // at least batch_size * out_size * out_size * 3
};

struct TileFailure {
  int64_t index = 0;
  int64_t x = 0, y = 0;
  std::string reason;
};

struct Batch {
  int64_t index = 0;                  // batch number
  int64_t capacity = 0;               // tiles requested in this batch
  int64_t count = 0;                  // tiles that succeeded (compacted to the front)
  std::vector<int64_t> tile_index;    // index into the request list, per successful tile
  std::vector<int64_t> xy;            // count*2 level-0 coordinates
  std::vector<uint8_t> stain_status;  // StainOutcome::Status per tile
  std::vector<std::string> stain_note;
  std::vector<uint8_t> rgb;           // count*H*W*3 when emit_uint8 and no ring
  int64_t ring_slot = -1;             // the ring slot holding the tiles (-1: no ring, see rgb)
  uint8_t* rgb_out = nullptr;         // where the tiles are written (rgb.data() or the ring slot)
  std::vector<float> f32;             // count*3*H*W when pack == Float32
  std::vector<uint16_t> f16;          // count*3*H*W when pack == Float16 (half bits)
  std::vector<TileFailure> failures;  // tiles of this batch that failed
  // internal bookkeeping
  std::vector<uint8_t> ok;            // per slot in [0, capacity)
  int64_t remaining = 0;
  double read_seconds = 0, normalize_seconds = 0, pack_seconds = 0;
};

class Batcher {
 public:
  Batcher(std::shared_ptr<const Slide> slide, std::vector<TileRequest> tiles, int64_t out_size,
          std::shared_ptr<const StainNormalizer> normalizer, BatcherParams params);
  // With a ring: each batch's uint8 tiles are written straight into a free slot (no copy of the
  // batcher's own), and the batch names it (Batch::ring_slot). The consumer owns a handed-out
  // slot until it calls release(slot) (e.g. once the upload that reads it has completed); workers
  // wait for a free slot, so the ring bounds host memory and no slot is overwritten while in use.
  // Needs emit_uint8. The slots' memory must outlive the batcher.
  Batcher(std::shared_ptr<const Slide> slide, std::vector<TileRequest> tiles, int64_t out_size,
          std::shared_ptr<const StainNormalizer> normalizer, BatcherParams params,
          std::vector<RingSlot> ring);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  int64_t num_batches() const { return num_batches_; }
  int64_t num_tiles() const { return static_cast<int64_t>(tiles_.size()); }
  int64_t out_size() const { return out_size_; }
  const BatcherParams& params() const { return params_; }
  int64_t ring_size() const { return static_cast<int64_t>(ring_.size()); }
  // Blocks until the next batch in order is complete; returns null when all were consumed.
  // With a ring, throws InvalidArgument instead of waiting forever when the consumer holds every
  // slot and the next batch has none (release a slot first).
  // A tile whose slide read fails (Error of kind SlideRead) is recorded in its batch and skipped.
  // Any other error in a worker (a bug such as an invalid argument, std::bad_alloc) stops the
  // workers, and this call throws it as Error(ErrorKind::Batcher) naming the tile, so a run never
  // finishes as done over a bug.
  std::unique_ptr<Batch> next();
  // Hands a ring slot back to the workers; throws InvalidArgument unless the consumer holds it.
  void release(int64_t slot);
  // Stops the workers early (also called by the destructor).
  void stop();

 private:
  void worker_loop();
  void run_worker();
  // Records the first fatal worker error and stops the pool; next() throws it.
  void fail(std::exception_ptr error) noexcept;
  // `original` as Error(ErrorKind::Batcher) naming the slide and tile (tile_idx < 0: none).
  std::exception_ptr worker_error(std::exception_ptr original, int64_t tile_idx) const noexcept;
  void process_tile(int64_t tile_idx, Batch& batch, int64_t slot, std::vector<uint32_t>& scratch,
                    std::vector<uint8_t>& read_buf);
  void finalize(Batch& batch) const;

  std::shared_ptr<const Slide> slide_;
  std::vector<TileRequest> tiles_;
  int64_t out_size_;
  std::shared_ptr<const StainNormalizer> normalizer_;
  BatcherParams params_;
  int64_t num_batches_ = 0;

  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  int64_t next_tile_ = 0;      // next tile a worker will claim
  int64_t next_consume_ = 0;   // next batch the consumer expects
  bool stopping_ = false;
  std::exception_ptr fatal_;   // a worker's error other than a slide read (see next())
  std::map<int64_t, std::unique_ptr<Batch>> in_flight_;
  std::vector<RingSlot> ring_;
  std::deque<int64_t> free_slots_;  // ring slots no batch and no consumer holds, oldest first
  std::vector<uint8_t> held_;       // per ring slot: handed to the consumer, not yet released
  std::vector<std::thread> workers_;
};

}  // namespace virtime
