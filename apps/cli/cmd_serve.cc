// `dsv4 serve`: the OpenAI / Anthropic-compatible HTTP server (src/server).
//
// One Worker thread owns the model's sequences and batches their decode steps; cpp-httplib's
// threads parse requests and stream answers. SIGINT / SIGTERM stop the server cleanly.
#include <pthread.h>

#include <csignal>
#include <filesystem>
#include <cstdio>
#include <thread>

#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "apps/cli/load_flags.h"
#include "core/error.h"
#include "model/model.h"
#include "server/http_server.h"
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
  int64_t max_body_mb = 8;
  int64_t default_max_tokens = 1024;
  std::string name;
  LoadFlags load;
  bool test_hooks = false;
  std::string test_completions;
};

void serve(const ServeFlags& f) {
  if (!f.test_completions.empty()) server::ScriptedCompletions::load(f.test_completions);  // fail before loading
  const std::string dir = resolve_model_dir(f.model);
  std::fprintf(stderr, "loading %s ...\n", dir.c_str());
  std::unique_ptr<Model> model = Model::load(dir, f.load.numerics_mode(), nullptr, f.load.residency);
  Tokenizer tok = Tokenizer::load(dir);
  if (tok.vocab_size() > model->config().vocab_size)
    throw Error(cat(dir, ": the tokenizer has ", tok.vocab_size(), " tokens but the model only ", model->config().vocab_size));

  server::WorkerOptions wo;
  wo.parallel = f.parallel;
  wo.max_queue = f.queue;
  wo.max_context = f.ctx;
  wo.cache_bytes = size_t(f.cache_mb) << 20;
  server::Worker worker(*model, tok, wo);

  server::ApiConfig api;
  api.model_name = !f.name.empty() ? f.name : f.model == "demo" ? "dsv4-demo" : std::filesystem::path(dir).filename().string();
  api.max_context = worker.max_context();
  api.eos_id = model->config().eos_token_id;
  api.test_hooks = f.test_hooks;
  api.default_max_tokens = f.default_max_tokens;

  server::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.api_key = f.api_key;
  so.max_body_bytes = size_t(f.max_body_mb) << 20;
  so.http_threads = 2 * (f.parallel + f.queue) + 16;
  so.test_completions = f.test_completions;
  server::HttpServer http(worker, tok, api, so);

  // Signals go to one thread that stops the server; every other thread has them blocked.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
  const int port = http.bind();
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&set, &sig);
    if (sig != SIGUSR1) std::fprintf(stderr, "dsv4 serve: stopping\n");
    http.stop();
  });
  std::fprintf(stderr, "dsv4 serve: %s (context %lld, parallel %d) on http://%s:%d%s%s\n", api.model_name.c_str(),
               (long long)api.max_context, f.parallel, f.host.c_str(), port, f.api_key.empty() ? "" : " (API key required)",
               f.test_hooks ? " [test hooks ON]" : "");
  http.listen();
  pthread_kill(stopper.native_handle(), SIGINT);  // listen() ended by itself: release the stopper
  stopper.join();
}

}  // namespace

void add_serve_commands(CLI::App& app) {
  static ServeFlags f;
  auto* c = app.add_subcommand("serve", "OpenAI / Anthropic-compatible HTTP server");
  c->add_option("--model", f.model, "Checkpoint directory, or 'demo' (a tiny random-weight model)");
  c->add_option("--host", f.host, "Address to listen on (default loopback only)");
  c->add_option("--port", f.port, "TCP port (0 = any free port)")->check(CLI::Range(0, 65535));
  c->add_option("--api-key", f.api_key, "Require this key (Authorization: Bearer KEY or x-api-key: KEY)");
  c->add_option("--parallel", f.parallel, "Sequences decoded together in one batched step")->check(CLI::Range(1, 256));
  c->add_option("--queue", f.queue, "Requests that may wait for a slot before 429")->check(CLI::Range(0, 4096));
  c->add_option("--ctx", f.ctx, "Context limit per sequence in tokens (default: the model's)")->check(CLI::PositiveNumber);
  c->add_option("--cache-mb", f.cache_mb, "Memory for cached prefix states (MiB)")->check(CLI::NonNegativeNumber);
  c->add_option("--max-body-mb", f.max_body_mb, "Largest accepted request body (MiB)")->check(CLI::Range(1, 1024));
  c->add_option("--default-max-tokens", f.default_max_tokens, "max_tokens when a chat request gives none")
      ->check(CLI::PositiveNumber);
  c->add_option("--served-model-name", f.name, "Model name reported by the API");
  add_load_flags(c, f.load);
  auto* hooks = c->add_flag("--test-hooks", f.test_hooks,
                            "Testing only: accept the request field 'dsv4_test_completion' that forces the generated text");
  c->add_option("--test-completions", f.test_completions,
                "Testing only: a JSON array of completions forced, in order, on requests without that field")
      ->needs(hooks);
  c->callback([] { serve(f); });
}

}  // namespace dsv4::cli
