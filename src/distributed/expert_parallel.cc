#include "distributed/expert_parallel.h"

#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "distributed/heartbeat.h"
#include "distributed/mpi_wait.h"
#include "distributed/remote_experts.h"
#include "distributed/wire.h"
#include "kernels/isa.h"

namespace dsv4::dist {

namespace {

// FNV-1a, 64 bit: a fingerprint to compare, not a security measure.
struct Hash {
  uint64_t h = 1469598103934665603ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void add(const std::string& s) { add(s.data(), s.size() + 1); }
};

// What must be equal on every rank: config.json, the tensor inventory (names, dtypes, shapes),
// the first and last bytes of every tensor every rank holds (two checkpoints of one shape differ
// there), the numerics and the kernels' ISA (the same bits need the same kernels).
std::string fingerprint(const Model& m, const std::string& dir) {
  Hash h;
  const std::string config = std::filesystem::is_directory(dir) ? read_text_file(dir + "/config.json") : dir;
  h.add(config);
  for (const auto& [name, t] : m.tensors().tensors()) {
    h.add(name);
    h.add(&t.dtype, sizeof t.dtype);
    h.add(t.shape.data(), t.shape.size() * sizeof(int64_t));
    if (routed_expert_of(name) >= 0 || !t.nbytes) continue;
    const size_t k = std::min<size_t>(t.nbytes, 256);
    h.add(t.data, k);
    h.add(t.data + t.nbytes - k, k);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h.h);
  return cat("checkpoint ", hex, ", numerics ", m.numerics() == Numerics::kPlain ? "plain" : "reference", ", isa ",
             kernels::isa_name(kernels::active_isa()));
}

constexpr int kCheckBytes = 512;

}  // namespace

double resident_gb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0 / 1024.0;
  return 0;
}

ExpertRange expert_share(int n_experts, int rank, int n_ranks) {
  const int base = n_experts / n_ranks, extra = n_experts % n_ranks;
  const int begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::unique_ptr<ExpertParallel> ExpertParallel::join(const EpOptions& options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) throw Error("expert parallelism: MPI is already initialised in this process");
  int provided = 0;
  // The server runs the model on a worker thread, one thread at a time.
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  std::unique_ptr<ExpertParallel> ep(new ExpertParallel());
  ep->options_ = options;
  MPI_Comm_rank(MPI_COMM_WORLD, &ep->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &ep->size_);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    throw Error("expert parallelism: this MPI library does not support MPI_THREAD_SERIALIZED");
  }
  return ep;
}

void ExpertParallel::agree(const Model* model, const std::string& dir, const std::string& load_error) {
  std::string mine = load_error.empty() ? "ok " + fingerprint(*model, dir) : "error " + load_error;
  if (load_error.empty() && size_ > model->config().n_routed_experts)
    mine = cat("error ", size_, " ranks but only ", model->config().n_routed_experts, " routed experts to share");
  std::vector<char> buf(size_t(kCheckBytes), 0), all(size_t(kCheckBytes) * size_t(size_));
  std::memcpy(buf.data(), mine.data(), std::min(mine.size(), size_t(kCheckBytes) - 1));
  MPI_Allgather(buf.data(), kCheckBytes, MPI_CHAR, all.data(), kCheckBytes, MPI_CHAR, MPI_COMM_WORLD);
  auto of = [&](int r) { return std::string(all.data() + size_t(r) * kCheckBytes); };
  for (int r = 0; r < size_; ++r)
    if (of(r).rfind("error ", 0) == 0) throw Error(cat("expert parallelism: rank ", r, ": ", of(r).substr(6)));
  for (int r = 1; r < size_; ++r)
    if (of(r) != of(0))
      throw Error(cat("expert parallelism: rank ", r, " loaded a different model than rank 0 (", of(r).substr(3),
                      " vs ", of(0).substr(3), ")"));
  serving_ = true;
  if (rank_ > 0) return;
  heartbeat_ = std::make_unique<Heartbeat>(size_, options_.timeout_s);
  executor_ = std::make_unique<RemoteExperts>(size_, model->config().n_routed_experts, options_, &heartbeat_->mpi());
}

void ExpertParallel::serve(const Model& model) {
  DSV4_CHECK(rank_ > 0 && serving_, "serve() is for ranks > 0 after agree()");
  EpStats st = serve_requests(model, options_);
  const double figures[4] = {st.remote_compute_s, st.remote_idle_s, resident_gb(), st.remote_span_s};
  MPI_Send(figures, 4, MPI_DOUBLE, 0, wire::kTagStats, MPI_COMM_WORLD);
  serving_ = false;
}

void ExpertParallel::release() {
  if (rank_ != 0 || !serving_) return;
  serving_ = false;
  heartbeat_->stop();  // no ping in flight behind the stop message
  const int64_t stop = wire::kOpStop;
  for (int r = 1; r < size_; ++r) MPI_Send(&stop, 1, MPI_INT64_T, r, wire::kTagHeader, MPI_COMM_WORLD);
  for (int r = 1; r < size_; ++r) {
    double figures[4];
    MPI_Request req;
    MPI_Irecv(figures, 4, MPI_DOUBLE, r, wire::kTagStats, MPI_COMM_WORLD, &req);
    wait_one(&req, options_.timeout_s, "expert parallelism: releasing the other ranks");
    remote_.remote_compute_s += figures[0];
    remote_.remote_idle_s += figures[1];
    remote_.remote_span_s += figures[3];
    remote_.max_remote_rss_gb = std::max(remote_.max_remote_rss_gb, figures[2]);
  }
}

EpStats ExpertParallel::stats() const {
  EpStats s = executor_ ? static_cast<const RemoteExperts&>(*executor_).stats() : EpStats{};
  s.remote_compute_s = remote_.remote_compute_s;
  s.remote_idle_s = remote_.remote_idle_s;
  s.remote_span_s = remote_.remote_span_s;
  s.max_remote_rss_gb = remote_.max_remote_rss_gb;
  return s;
}

ExpertParallel::~ExpertParallel() {
  release();
  MPI_Finalize();
}

}  // namespace dsv4::dist
