#include "apps/cli/model_loader.h"

#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#ifdef DSV4_HAVE_MPI
#include "distributed/expert_parallel.h"
#endif

namespace dsv4::cli {

// Each rank keeps its share of the routed experts resident; the expert cache streams a whole
// checkpoint's experts and knows no share (not combined yet).
[[maybe_unused]] constexpr const char* kCacheWithEp =
    "--expert-cache-gb cannot be combined with --expert-parallel (each rank keeps its share of the routed experts "
    "in memory)";

#ifdef DSV4_HAVE_MPI

namespace {
std::unique_ptr<dist::ExpertParallel> g_ep;
int g_waves = 0;
}

std::unique_ptr<Model> load_model(const std::string& dir, const LoadFlags& f, ThreadPool* pool) {
  if (!f.expert_parallel) return Model::load(dir, f.numerics_mode(), pool, f.residency, f.expert_cache_bytes());
  g_ep = dist::ExpertParallel::join({f.ep_waves, f.ep_timeout_s});
  g_waves = f.ep_waves;
  std::unique_ptr<Model> model;
  std::string error;
  try {
    // The share needs the expert count: config.json alone is cheap to read twice.
    if (f.expert_cache_gb > 0) throw Error(kCacheWithEp);
    const int n_experts = load_config(dir).n_routed_experts;
    model = Model::load(dir, f.numerics_mode(), pool, f.residency, 0, g_ep->my_experts(n_experts));
  } catch (const Error& e) {
    error = e.what();
  }
  try {
    g_ep->agree(model.get(), dir, error);  // throws on every rank if any rank failed or differs
  } catch (const Error&) {
    if (g_ep->rank() == 0) throw;
    g_ep.reset();  // rank 0 says why, once
    std::exit(1);
  }
  if (g_ep->rank() > 0) {
    g_ep->serve(*model);
    model.reset();
    g_ep.reset();  // MPI_Finalize
    std::fflush(stdout);
    std::exit(0);
  }
  model->set_expert_executor(g_ep->executor());
  return model;
}

EpReport expert_parallel_report() {
  EpReport r;
  if (!g_ep) return r;
  g_ep->release();
  const dist::EpStats s = g_ep->stats();
  r.ranks = g_ep->size();
  r.calls = s.calls;
  r.token_layers = s.token_layers;
  r.bytes_sent = s.bytes_sent;
  r.bytes_received = s.bytes_received;
  r.local_s = s.local_s;
  r.wait_s = s.wait_s;
  r.remote_compute_s = s.remote_compute_s;
  r.remote_idle_s = s.remote_idle_s;
  r.max_remote_rss_gb = s.max_remote_rss_gb;
  r.remote_span_s = s.remote_span_s;
  r.waves = g_waves;
  return r;
}

void finish_expert_parallel() { g_ep.reset(); }

#else

std::unique_ptr<Model> load_model(const std::string& dir, const LoadFlags& f, ThreadPool* pool) {
  if (f.expert_parallel)
    throw Error("--expert-parallel: this dsv4 was built without MPI (configure with -DDSV4_MPI=ON)");
  return Model::load(dir, f.numerics_mode(), pool, f.residency, f.expert_cache_bytes());
}

EpReport expert_parallel_report() { return {}; }
void finish_expert_parallel() {}

#endif

}  // namespace dsv4::cli
