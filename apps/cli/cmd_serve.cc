// `dsv4 serve`: the OpenAI / Anthropic-compatible HTTP server (src/server).
//
// One Worker thread owns the model's sequences and batches their decode steps; cpp-httplib's
// threads parse requests and stream answers. SIGINT / SIGTERM stop the server cleanly: requests
// in flight end (an error event, or a 503), and the process exits with status 0.
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "apps/cli/model_loader.h"
#include "apps/cli/load_flags.h"
#include "core/error.h"
#include "model/model.h"
#include "server/http_server.h"
#include "server/memory_budget.h"
#include "server/test_script.h"
#include "server/worker.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::cli {

namespace {

struct ServeFlags {
  std::string model = "demo";
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  int parallel = 4;
  int queue = 16;
  int64_t ctx = 0;
  int64_t cache_mb = 1024;
  int64_t memory_mb = 0;  // 0 = derived from the memory available
  std::string kv_cache_dir;
  double kv_cache_disk_gb = 10;
  int64_t max_body_mb = 8;
  int64_t default_max_tokens = 1024;
  std::string name;
  LoadFlags load;
  bool test_hooks = false;
  std::string test_completions;
};

// Threads that libraries start before main() (MPI's, say)
// do not inherit serve()'s blocked mask, so a stop signal may land on one of them: this handler
// hands it to the stopper thread's sigwait() (or leaves it for the stopper to find at its start)
// instead of letting the default action kill the process. Lock-free atomics and pthread_kill
// are async-signal-safe.
pthread_t g_stopper;
std::atomic<bool> g_stopper_ready{false};
std::atomic<int> g_pending_signal{0};

extern "C" void forward_stop_signal(int sig) {
  g_pending_signal = sig;
  if (g_stopper_ready) pthread_kill(g_stopper, sig);
}

void forward_stop_signals_from_foreign_threads() {
  struct sigaction sa {};
  sa.sa_handler = forward_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Waits for SIGINT / SIGTERM (or a release once listen() has returned by itself), then ends
// the requests in flight and stops the HTTP server.
void stop_on_signal(const sigset_t& set, const std::atomic<bool>& listen_done, server::Worker& worker,
                    server::HttpServer& http) {
  g_stopper = pthread_self();
  g_stopper_ready = true;
  int sig = g_pending_signal.load();
  if (sig == 0) sigwait(&set, &sig);
  g_stopper_ready = false;  // later signals: nothing more to do
  if (listen_done) return;
  std::fprintf(stderr, "dsv4 serve: %s, stopping\n", strsignal(sig));
  worker.shutdown();  // running and queued requests end now (error event / 503)
  http.drain_streams(std::chrono::seconds(3));  // let those last events go out before stop()
  // A signal that came while the model was loading: stop() acts only once listen() runs.
  while (!listen_done && !http.running()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (!listen_done) http.stop();
}

void serve(const ServeFlags& f) {
  // Before any thread exists (the kernels' pool starts while the model loads): every thread
  // inherits the blocked mask, so the signals wait for sigwait() in the stopper thread instead
  // of killing the process through some thread's default action.
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  forward_stop_signals_from_foreign_threads();
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
  if (!f.test_completions.empty()) server::ScriptedCompletions::load(f.test_completions);  // fail before loading
  const std::string dir = resolve_model_dir(f.model);
  const uint64_t available = server::available_memory();  // before the weights take their share
  std::fprintf(stderr, "loading %s ...\n", dir.c_str());
  std::unique_ptr<Model> model = load_model(dir, f.load);
  Tokenizer tok = Tokenizer::load(dir);
  if (tok.vocab_size() > model->config().vocab_size)
    throw Error(cat(dir, ": the tokenizer has ", tok.vocab_size(), " tokens but the model only ", model->config().vocab_size));

  server::WorkerOptions wo;
  wo.parallel = f.parallel;
  wo.max_queue = f.queue;
  wo.max_context = f.ctx;
  wo.cache_bytes = size_t(f.cache_mb) << 20;
  wo.memory_bytes = f.memory_mb > 0 ? size_t(f.memory_mb) << 20
                                    : server::default_memory_budget(available, server::checkpoint_bytes(dir));
  wo.kv_cache_dir = f.kv_cache_dir;
  wo.kv_cache_disk_bytes = size_t(f.kv_cache_disk_gb * double(size_t(1) << 30));
  server::Worker worker(*model, tok, wo);
  if (const server::WorkerStats st = worker.stats(); st.disk_cache)
    std::fprintf(stderr, "dsv4 serve: kv cache %s: %zu files, %.1f of %.1f MiB%s\n", f.kv_cache_dir.c_str(),
                 st.disk.files, double(st.disk.bytes) / (1 << 20), double(st.disk.max_bytes) / (1 << 20),
                 st.disk.damaged ? cat(", ", st.disk.damaged, " damaged files deleted").c_str() : "");

  server::ApiConfig api;
  const bool builtin = f.model == "demo" || f.model == "synthetic";
  api.model_name = !f.name.empty() ? f.name
                   : builtin      ? "dsv4-" + f.model
                                  : std::filesystem::path(dir).filename().string();
  api.max_context = worker.max_context();
  api.eos_id = model->config().eos_token_id;
  api.test_hooks = f.test_hooks;
  api.default_max_tokens = f.default_max_tokens;

  server::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.api_key = f.api_key;
  so.max_body_bytes = size_t(f.max_body_mb) << 20;
  so.connections.max_threads = std::max(so.connections.max_threads, 2 * (f.parallel + f.queue) + 16);
  so.test_completions = f.test_completions;
  server::HttpServer http(worker, tok, api, so);

  const int port = http.bind();
  std::atomic<bool> listen_done{false};
  std::thread stopper([&] { stop_on_signal(set, listen_done, worker, http); });
  std::fprintf(stderr, "dsv4 serve: %s (context %lld, parallel %d, memory budget %lld MiB) on http://%s:%d%s%s\n",
               api.model_name.c_str(), (long long)api.max_context, f.parallel, (long long)(wo.memory_bytes >> 20),
               f.host.c_str(), port, f.api_key.empty() ? "" : " (API key required)",
               f.test_hooks ? " [test hooks ON]" : "");
  http.listen();
  listen_done = true;
  pthread_kill(stopper.native_handle(), SIGTERM);  // releases the stopper if no signal came
  stopper.join();
  worker.shutdown();
}

}  // namespace

void add_serve_commands(CLI::App& app) {
  static ServeFlags f;
  auto* c = app.add_subcommand("serve", "OpenAI / Anthropic-compatible HTTP server");
  c->add_option("--model", f.model, "Checkpoint directory, 'demo' (KJV-trained) or 'synthetic' (random)");
  c->add_option("--host", f.host, "Address to listen on (default loopback only)");
  c->add_option("--port", f.port, "TCP port (0 = any free port)")->check(CLI::Range(0, 65535));
  c->add_option("--api-key", f.api_key, "Require this key (Authorization: Bearer KEY or x-api-key: KEY)");
  c->add_option("--parallel", f.parallel, "Sequences decoded together in one batched step")->check(CLI::Range(1, 256));
  c->add_option("--queue", f.queue, "Requests that may wait for a slot before 429")->check(CLI::Range(0, 4096));
  c->add_option("--ctx", f.ctx, "Context limit per sequence in tokens (default: the model's)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  c->add_option("--cache-mb", f.cache_mb, "Memory for cached prefix states (MiB; within --memory-mb)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  c->add_option("--memory-mb", f.memory_mb,
                "Memory budget for sequence states: KV of running requests plus cached prefix states (MiB; "
                "default: 3/4 of the RAM left after the model, from MemAvailable and the cgroup limit)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  auto* kv_dir = c->add_option("--kv-cache-dir", f.kv_cache_dir,
                               "Keep cached prefix states on disk in this directory too: survives restarts "
                               "(one server per directory; docs/server.md)");
  c->add_option("--kv-cache-disk-gb", f.kv_cache_disk_gb, "Disk space for --kv-cache-dir (GB; least recently used files go)")
      ->check(CLI::Range(1e-6, 1e6))
      ->needs(kv_dir);
  c->add_option("--max-body-mb", f.max_body_mb, "Largest accepted request body (MiB)")->check(CLI::Range(1, 1024));
  c->add_option("--default-max-tokens", f.default_max_tokens, "max_tokens when a chat request gives none")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  c->add_option("--served-model-name", f.name, "Model name reported by the API");
  add_load_flags(c, f.load);
  auto* hooks = c->add_flag("--test-hooks", f.test_hooks,
                            "Testing only: accept the request fields 'dsv4_test_completion' (forces the generated "
                            "text) and 'dsv4_test_fail_alloc' (simulates an allocation failure)");
  c->add_option("--test-completions", f.test_completions,
                "Testing only: a JSON array of completions forced, in order, on requests without that field")
      ->needs(hooks);
  c->callback([] { serve(f); });
}

}  // namespace dsv4::cli
