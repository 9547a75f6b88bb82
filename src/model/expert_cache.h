// The routed experts of a checkpoint larger than memory, read on demand from disk into a cache
// of fixed-size slots in RAM (issue 16).
//
// Everything else of the model is resident; a routed expert (w1, w3, w2 and their scales) is
// read with large O_DIRECT reads (io/expert_reader.h) into a slot, in the layout the kernels use
// for resident weights (FP4 rearranged into 16-row tiles where the AVX-512 kernel reads those,
// exactly as tile_routed_experts does for a copied checkpoint), so the same kernels run in the
// same order and the logits are bit-identical to a fully resident run.
//
// Reads start as early as the experts are known (prefetch): hash-routed layers' experts from the
// token ids when the token is sampled (Model::prefetch_experts), at the latest when the forward
// starts; score-routed layers' as soon as the gate has run; the shared expert and the routed
// experts already present run while the rest arrive. A prefetched expert is reserved until it is
// used, but a slot reserved for a later layer is taken back when the current layer has no other
// slot, so a small budget costs re-reads, never a deadlock.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "io/expert_reader.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

// Which cached expert to give up for a new one. Measured on decode of a real-width flash stack
// (README, "Models larger than memory"): see ExpertCache::kDefaultPolicy.
enum class CachePolicy { kLru, kLfu };

struct ExpertCacheStats {
  uint64_t uses = 0;        // acquire() calls
  uint64_t loads = 0;       // experts read from disk (misses, prefetched ones included)
  uint64_t used_loads = 0;  // of those, the ones acquired afterwards (wrong predictions are not)
  uint64_t bytes_read = 0;  // from disk, aligned reads included
  double busy_s = 0;        // seconds with at least one read in flight
  double depth_s = 0;       // reads in flight integrated over time (÷ busy_s: mean depth while busy)
  double full_s = 0;        // seconds with the reader's whole depth in flight
  double head_s = 0;        // seconds of the forwards' head passes (begin_head / end_head)
  double head_idle_s = 0;   // of those, the seconds with no read in flight: a token's end, where the
                            // next token's experts are not known yet
  double wait_s = 0;        // seconds the forward pass waited for experts
  double wait_hash_s = 0;   // of those, waiting in hash-routed layers (experts known from the token ids)
  uint64_t waits = 0;       // acquire() calls that found their expert still being read
  double tile_s = 0;        // seconds tiling read experts (FP4), summed over the reader's finisher threads
  uint64_t predicted = 0;       // experts read ahead from the next layer's gate on an earlier input
  uint64_t predicted_used = 0;  // of those, the ones the layer then used
  uint64_t cancelled = 0;       // predicted reads taken back before they started (cancel_unchosen)
  uint64_t used_bytes = 0;      // bytes of the reads whose expert was then used: the misses' bytes
  double prediction_hit_rate() const { return predicted ? double(predicted_used) / double(predicted) : 0; }
  // The uses that needed no read of their own (a read for a wrong guess is no miss of a use).
  double hit_rate() const { return uses ? 1.0 - double(used_loads) / double(uses) : 0; }
  double disk_gbs() const { return busy_s > 0 ? double(bytes_read) / 1e9 / busy_s : 0; }
};

class ExpertCache {
 public:
  static constexpr CachePolicy kDefaultPolicy = CachePolicy::kLru;

  // Slots for `budget_bytes` of experts; the routed experts' views in `w` / `dir` say where
  // each one's bytes are in the files. Throws Error when the budget holds fewer experts than one
  // token activates in a layer (n_activated_experts), naming the budget it needs.
  ExpertCache(const ModelConfig& c, const Weights& w, const TensorDirectory& dir, size_t budget_bytes,
              CachePolicy policy = kDefaultPolicy, int read_depth = 8,
              ReadEngine engine = DirectReader::default_engine());
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // Bytes one slot takes for this checkpoint (the largest expert, with read alignment).
  static size_t slot_bytes_for(const ModelConfig& c, const Weights& w, const TensorDirectory& dir);

  // Starts reading those of `experts` (of block `layer_id`) that are not cached, in order, while
  // slots not reserved are free; best effort (stops at the first that finds none). `predicted`:
  // a guess (counted in stats().predicted) rather than the layer's known choice.
  void prefetch(int layer_id, std::span<const int32_t> experts, bool predicted = false);
  // Block `layer_id` is done: its prefetched experts not used (wrong predictions) are no longer
  // reserved, so they are given up first like any other.
  void end_layer(int layer_id);
  // Block `layer_id`'s gate chose `chosen` (ascending): the reads predicted for its other experts
  // that no reader has started are taken back and their slots freed, so the disk reads what is
  // needed instead of wrong guesses. Returns how many.
  int cancel_unchosen(int layer_id, std::span<const int32_t> chosen);
  // The expert's weights, read first if needed (waiting for the read); pinned until release().
  // Throws Error if the read failed (the message names the file) or every slot is pinned.
  const ExpertWeights& acquire(int layer_id, int expert);
  void release(int layer_id, int expert);

  // A forward's head pass, timed with the reader's busy time: stats() then says how much of the
  // head the disk idled through.
  struct HeadSpan {
    double t0 = 0, busy0 = 0;
  };
  HeadSpan begin_head() const;
  void end_head(const HeadSpan& h);

  // The disk's read rate (GB/s) at the reader's full depth: up to `max_bytes` of experts spread
  // over the checkpoint read at once into the slots, which must all be empty (call before the
  // first forward; returns 0 otherwise). The slots stay empty: nothing is cached by it.
  double measure_disk_gbs(size_t max_bytes);

  size_t slots() const { return slots_.size(); }
  size_t slot_bytes() const { return slot_bytes_; }
  size_t capacity_bytes() const { return slots_.size() * slot_bytes_; }
  // Experts pinned now (acquired, not released): what a caller may still acquire is slots() − this.
  size_t pinned() const;
  // Whether the expert is cached or being read now.
  bool holds(int layer_id, int expert) const;
  bool direct_io() const { return reader_.direct(); }
  int read_depth() const { return reader_.depth(); }
  const char* read_engine() const { return reader_.engine_name(); }  // "threads" or "io_uring"
  CachePolicy policy() const { return policy_; }
  ExpertCacheStats stats() const;

 private:
  struct Source {  // where one expert's bytes are on disk, and its matrices' shapes
    std::vector<DirectReader::Range> ranges;  // dst = offset within the slot
    size_t bytes = 0;                         // read from disk: the ranges' lengths
    ExpertWeights shape;                      // formats and sizes (pointers unset)
    size_t offset[6] = {};                    // w1, w3, w2 weight then scale: where in the slot
  };
  enum class State { kEmpty, kLoading, kReady };
  struct Slot {
    int key = -1;
    State state = State::kEmpty;
    int pins = 0;
    bool reserved = false;  // prefetched, not acquired yet
    bool predicted = false;  // reserved by a prediction
    bool fresh = false;      // read from disk, not acquired since
    uint64_t last_use = 0;
    std::shared_ptr<DirectReader::Job> job;
    ExpertWeights w;  // pointers into the slot's bytes
  };

  int key(int layer_id, int expert) const;
  void settle(Slot& s);  // a finished read: ready, or empty on failure (error left in s.job)
  int victim(bool take_reserved);
  int free_slot(std::unique_lock<std::mutex>& lock);
  void start_load(int slot, int key);
  uint8_t* slot_data(int slot) const { return memory_.get() + size_t(slot) * slot_bytes_; }

  int n_experts_ = 0;
  int n_hash_layers_ = 0;  // blocks [0, n_hash_layers_) are hash-routed (the stats' wait split)
  bool tile_ = false;
  CachePolicy policy_;
  size_t slot_bytes_ = 0;
  std::vector<Source> sources_;   // [layer_id · E + e]
  std::vector<int> slot_of_;      // [layer_id · E + e] → slot, −1 when not cached
  std::vector<uint32_t> freq_;    // [layer_id · E + e] uses (LFU), halved as they age
  std::vector<Slot> slots_;
  std::shared_ptr<uint8_t> memory_;
  mutable std::mutex mu_;
  uint64_t clock_ = 0;
  ExpertCacheStats stats_;
  DirectReader reader_;  // last: its threads stop before the slots go away
};

}  // namespace dsv4
