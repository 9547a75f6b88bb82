#include "model/expert_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "kernels/isa.h"
#include "kernels/linear.h"

namespace dsv4 {

namespace {

constexpr size_t kAlign = DirectReader::kAlign;
constexpr uint64_t kMergeGap = 64 << 10;  // tensors this close in a file are read as one range

size_t align_down(uint64_t v) { return size_t(v / kAlign * kAlign); }
size_t align_up(uint64_t v) { return size_t((v + kAlign - 1) / kAlign * kAlign); }

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The checkpoint name prefix of block `layer_id`'s routed expert e.
std::string expert_prefix(const ModelConfig& c, int layer_id, int e) {
  const std::string block = layer_id < c.n_layers ? cat("layers.", layer_id, ".") : cat("mtp.", layer_id - c.n_layers, ".");
  return cat(block, "ffn.experts.", e, ".");
}

const BlockWeights& block_of(const ModelConfig& c, const Weights& w, int layer_id) {
  return layer_id < c.n_layers ? w.layers[size_t(layer_id)] : w.mtp[size_t(layer_id - c.n_layers)].block;
}

struct Extent {  // one tensor's bytes in its file
  int file = 0;
  uint64_t offset = 0;
  size_t bytes = 0;
  int index = 0;  // 0..5: w1, w3, w2 weight then scale
};

// The six tensors of an expert as stored (scales absent for BF16 experts: zero bytes).
std::vector<Extent> expert_extents(const ModelConfig& c, const TensorDirectory& dir, int layer_id, int e) {
  const std::string p = expert_prefix(c, layer_id, e);
  const char* names[6] = {"w1.weight", "w3.weight", "w2.weight", "w1.scale", "w3.scale", "w2.scale"};
  std::vector<Extent> out;
  for (int i = 0; i < 6; ++i) {
    const TensorView* t = dir.find(p + names[i]);
    if (!t) continue;
    const MappedFile& f = dir.file_of(*t);
    int file = 0;
    while (dir.files()[size_t(file)].get() != &f) ++file;
    out.push_back({file, dir.offset_of(*t), t->nbytes, i});
  }
  std::sort(out.begin(), out.end(), [](const Extent& a, const Extent& b) {
    return a.file != b.file ? a.file < b.file : a.offset < b.offset;
  });
  return out;
}

// Aligned reads covering the extents (neighbours merged), laid out one after another in a slot;
// offsets[i] says where tensor i starts. Returns the slot bytes used.
size_t plan_reads(const std::vector<Extent>& ext, std::vector<DirectReader::Range>* ranges, size_t* offsets) {
  size_t at = 0;
  for (size_t i = 0; i < ext.size();) {
    size_t j = i + 1;
    uint64_t end = ext[i].offset + ext[i].bytes;
    while (j < ext.size() && ext[j].file == ext[i].file && ext[j].offset <= end + kMergeGap)
      end = std::max<uint64_t>(end, ext[j].offset + ext[j].bytes), ++j;
    DirectReader::Range r;
    r.file = ext[i].file;
    r.offset = align_down(ext[i].offset);
    r.length = align_up(end) - r.offset;
    r.needed = size_t(end - r.offset);
    r.dst = reinterpret_cast<uint8_t*>(at);  // relative to the slot; rebased per read
    for (size_t k = i; k < j; ++k) offsets[ext[k].index] = at + size_t(ext[k].offset - r.offset);
    ranges->push_back(r);
    at += r.length;
    i = j;
  }
  return at;
}

std::shared_ptr<uint8_t> slot_memory(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw Error(cat("cannot allocate the expert cache (", bytes, " bytes): ", std::strerror(errno)));
  ::madvise(p, bytes, MADV_HUGEPAGE);
  // Touched now, at load: first-touch faults inside O_DIRECT reads ran at disk speed or below
  // (measured: a cold cache decoded at half its warm speed), and a budget the cgroup cannot
  // hold fails here rather than mid-answer.
  std::memset(p, 0, bytes);
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [bytes](uint8_t* q) { ::munmap(q, bytes); });
}

Linear* matrix(ExpertWeights& w, int i) { return i == 0 ? &w.w1 : i == 1 ? &w.w3 : &w.w2; }

}  // namespace

size_t ExpertCache::slot_bytes_for(const ModelConfig& c, const Weights&, const TensorDirectory& dir) {
  size_t most = 0;
  for (int l = 0; l < c.n_layers + c.n_mtp_layers; ++l)
    for (int e = 0; e < c.n_routed_experts; ++e) {
      std::vector<DirectReader::Range> r;
      size_t off[6] = {};
      most = std::max(most, plan_reads(expert_extents(c, dir, l, e), &r, off));
    }
  return most;
}

ExpertCache::ExpertCache(const ModelConfig& c, const Weights& w, const TensorDirectory& dir, size_t budget_bytes,
                         CachePolicy policy, int read_depth, ReadEngine engine)
    : n_experts_(c.n_routed_experts),
      n_hash_layers_(std::min(c.n_hash_layers, c.n_layers)),
      policy_(policy), reader_(read_depth, engine) {
  for (const auto& f : dir.files()) reader_.open(f->path());
  tile_ = kernels::active_isa() == kernels::Isa::kAvx512;
  const int L = c.n_layers + c.n_mtp_layers;
  sources_.resize(size_t(L) * size_t(n_experts_));
  for (int l = 0; l < L; ++l)
    for (int e = 0; e < n_experts_; ++e) {
      Source& s = sources_[size_t(key(l, e))];
      slot_bytes_ = std::max(slot_bytes_, plan_reads(expert_extents(c, dir, l, e), &s.ranges, s.offset));
      for (const DirectReader::Range& r : s.ranges) s.bytes += r.length;
      s.shape = block_of(c, w, l).ffn.experts[size_t(e)];
      for (int i = 0; i < 3; ++i) {
        Linear* m = matrix(s.shape, i);
        m->weight = m->scale = nullptr;
        m->tiled = tile_ && kernels::can_tile_fp4(*m);
      }
    }
  const size_t n = slot_bytes_ ? budget_bytes / slot_bytes_ : 0;
  const int K = c.n_activated_experts;
  if (n < size_t(K))
    throw Error(cat("the expert cache budget (", double(budget_bytes) / 1e6, " MB) holds ", n, " experts of ",
                    double(slot_bytes_) / 1e6, " MB, but a token uses ", K, " per layer: give at least ",
                    double(slot_bytes_) * K / 1e9 + 0.001, " GB"));
  slots_.resize(std::min(n, sources_.size()));
  slot_of_.assign(sources_.size(), -1);
  freq_.assign(sources_.size(), 0);
  memory_ = slot_memory(slots_.size() * slot_bytes_);
}

ExpertCache::~ExpertCache() {
  for (Slot& s : slots_)
    if (s.job) s.job->wait();  // no read may land in freed memory
}

int ExpertCache::key(int layer_id, int expert) const { return layer_id * n_experts_ + expert; }

void ExpertCache::settle(Slot& s) {
  if (s.state != State::kLoading || !s.job->finished()) return;
  if (s.job->error().empty()) {
    s.state = State::kReady;
    return;
  }
  s.state = State::kEmpty;  // the job keeps its error for whoever acquires it
  slot_of_[size_t(s.key)] = -1;
}

// An empty slot, else the unpinned ready one the policy gives up (LRU: least recently used;
// LFU: least used, then least recently). Reserved slots only when `take_reserved`.
int ExpertCache::victim(bool take_reserved) {
  int best = -1;
  for (int i = 0; i < int(slots_.size()); ++i) {
    Slot& s = slots_[size_t(i)];
    settle(s);
    if (s.state == State::kEmpty && s.pins == 0 && !s.reserved) return i;
    if (s.pins > 0 || s.state != State::kReady || (s.reserved && !take_reserved)) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const Slot& b = slots_[size_t(best)];
    const bool older = s.last_use < b.last_use;
    if (policy_ == CachePolicy::kLfu && freq_[size_t(s.key)] != freq_[size_t(b.key)])
      best = freq_[size_t(s.key)] < freq_[size_t(b.key)] ? i : best;
    else if (older)
      best = i;
  }
  return best;
}

void ExpertCache::start_load(int slot, int k) {
  Slot& s = slots_[size_t(slot)];
  if (s.key >= 0 && slot_of_[size_t(s.key)] == slot) slot_of_[size_t(s.key)] = -1;
  const Source& src = sources_[size_t(k)];
  uint8_t* base = slot_data(slot);
  s.key = k;
  s.state = State::kLoading;
  s.reserved = s.predicted = false;
  s.fresh = true;
  s.w = src.shape;
  for (int i = 0; i < 3; ++i) {
    Linear* m = matrix(s.w, i);
    m->weight = base + src.offset[i];
    m->scale = m->format == WeightFormat::kFP4 || m->format == WeightFormat::kFP8 ? base + src.offset[3 + i] : nullptr;
  }
  std::vector<DirectReader::Range> ranges = src.ranges;
  for (auto& r : ranges) r.dst = base + reinterpret_cast<size_t>(r.dst);
  // Tiled as tile_routed_experts tiles a copied checkpoint, on the reader's finisher threads.
  ExpertWeights w = s.w;
  s.job = reader_.submit(std::move(ranges), [w]() mutable {
    for (int i = 0; i < 3; ++i) {
      Linear* m = matrix(w, i);
      if (m->tiled) kernels::tile_fp4(const_cast<uint8_t*>(m->weight), const_cast<uint8_t*>(m->scale), m->out, m->in);
    }
  });
  slot_of_[size_t(k)] = slot;
  ++stats_.loads;
}

// A slot for a miss: one the policy gives up, else one reserved by a prefetch, else the first
// unpinned one whose read is still in flight, once it has landed.
int ExpertCache::free_slot(std::unique_lock<std::mutex>& lock) {
  for (;;) {
    int s = victim(false);
    if (s < 0) s = victim(true);
    if (s >= 0) return s;
    std::shared_ptr<DirectReader::Job> busy;
    for (const Slot& slot : slots_)
      if (slot.pins == 0 && slot.state == State::kLoading) busy = slot.job;
    if (!busy)
      throw Error(cat("the expert cache's ", slots_.size(), " slots are all in use: the budget is too small for "
                      "the experts one layer uses at once"));
    lock.unlock();
    busy->wait();
    lock.lock();
  }
}

void ExpertCache::prefetch(int layer_id, std::span<const int32_t> experts, bool predicted) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int32_t e : experts) {
    const int k = key(layer_id, e);
    int s = slot_of_[size_t(k)];
    if (s < 0) {
      s = victim(false);
      if (s < 0) return;
      start_load(s, k);
    }
    Slot& slot = slots_[size_t(s)];
    if (predicted && !slot.predicted && !slot.reserved) ++stats_.predicted;
    slot.predicted = slot.predicted || (predicted && !slot.reserved);
    slot.reserved = true;
  }
}

void ExpertCache::end_layer(int layer_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Slot& s : slots_)
    if (s.key >= 0 && s.key / n_experts_ == layer_id) s.reserved = s.predicted = false;
}

int ExpertCache::cancel_unchosen(int layer_id, std::span<const int32_t> chosen) {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (Slot& s : slots_) {
    if (s.key < 0 || s.key / n_experts_ != layer_id || !s.predicted || s.pins > 0 || s.state != State::kLoading) continue;
    if (std::binary_search(chosen.begin(), chosen.end(), s.key % n_experts_) || !reader_.cancel(s.job)) continue;
    slot_of_[size_t(s.key)] = -1;
    s = Slot{};
    --stats_.loads;
    ++stats_.cancelled;
    ++n;
  }
  return n;
}

const ExpertWeights& ExpertCache::acquire(int layer_id, int expert) {
  std::unique_lock<std::mutex> lock(mu_);
  const int k = key(layer_id, expert);
  int s = slot_of_[size_t(k)];
  if (s < 0) {
    s = free_slot(lock);
    start_load(s, k);
  }
  Slot& slot = slots_[size_t(s)];
  ++slot.pins;
  if (slot.predicted) ++stats_.predicted_used;
  if (slot.fresh) ++stats_.used_loads, stats_.used_bytes += sources_[size_t(k)].bytes;
  slot.fresh = false;
  slot.reserved = slot.predicted = false;
  slot.last_use = ++clock_;
  ++stats_.uses;
  if (++freq_[size_t(k)] == 0xffff)  // age every count, keeping their order
    for (uint32_t& f : freq_) f /= 2;
  if (slot.state == State::kLoading) {
    std::shared_ptr<DirectReader::Job> job = slot.job;
    lock.unlock();
    const double t0 = now_s();
    job->wait();
    lock.lock();
    const double waited = now_s() - t0;
    stats_.wait_s += waited;
    if (layer_id < n_hash_layers_) stats_.wait_hash_s += waited;
    ++stats_.waits;
    settle(slot);
    if (slot.state != State::kReady) {
      --slot.pins;
      throw Error(cat("cannot read routed expert ", expert, " of block ", layer_id, ": ", job->error()));
    }
  }
  return slot.w;
}

void ExpertCache::release(int layer_id, int expert) {
  std::lock_guard<std::mutex> lock(mu_);
  const int s = slot_of_[size_t(key(layer_id, expert))];
  if (s >= 0 && slots_[size_t(s)].pins > 0) --slots_[size_t(s)].pins;
}

ExpertCache::HeadSpan ExpertCache::begin_head() const { return {now_s(), reader_.busy_seconds()}; }

void ExpertCache::end_head(const HeadSpan& h) {
  const double wall = now_s() - h.t0, busy = reader_.busy_seconds() - h.busy0;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.head_s += wall;
  stats_.head_idle_s += std::clamp(wall - busy, 0.0, wall);
}

double ExpertCache::measure_disk_gbs(size_t max_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t n = std::min(slots_.size(), max_bytes / slot_bytes_);
  for (const Slot& s : slots_)
    if (s.state != State::kEmpty || s.pins > 0) return 0;
  if (n == 0) return 0;
  std::vector<DirectReader::Range> ranges;
  const size_t step = std::max<size_t>(1, sources_.size() / n);
  for (size_t i = 0; i < n; ++i)
    for (DirectReader::Range r : sources_[(i * step) % sources_.size()].ranges) {
      r.dst = slot_data(int(i)) + reinterpret_cast<size_t>(r.dst);
      ranges.push_back(r);
    }
  size_t bytes = 0;
  for (const auto& r : ranges) bytes += r.length;
  const double t0 = now_s();
  auto job = reader_.submit(std::move(ranges));
  job->wait();
  if (!job->error().empty()) throw Error(cat("cannot measure the disk: ", job->error()));
  return double(bytes) / 1e9 / (now_s() - t0);
}

size_t ExpertCache::pinned() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const Slot& s : slots_) n += s.pins > 0;
  return n;
}

bool ExpertCache::holds(int layer_id, int expert) const {
  std::lock_guard<std::mutex> lock(mu_);
  return slot_of_[size_t(key(layer_id, expert))] >= 0;
}

ExpertCacheStats ExpertCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ExpertCacheStats s = stats_;
  s.bytes_read = reader_.bytes_read();
  const DirectReader::Times t = reader_.times();
  s.busy_s = t.busy, s.depth_s = t.depth, s.full_s = t.full;
  s.tile_s = reader_.done_seconds();
  return s;
}

}  // namespace dsv4
