// `dsv4`: the command-line front end. Subcommands are registered from cmd_*.cc; every error
// that reaches here is one clear line on stderr and a non-zero exit code.
#include <malloc.h>

#include <cstdio>
#include <algorithm>
#include <exception>
#include <string>
#include <vector>

#include "apps/cli/commands.h"
#include "apps/cli/model_loader.h"
#include "core/error.h"

namespace {

// CLI11's parse errors as one line, like every other error: "dsv4 run: error: --prompt is
// required (see dsv4 run --help)".
std::string one_line_error(const CLI::App* app, const CLI::Error& e) {
  std::string where = "dsv4";
  for (const CLI::App* sub : app->get_subcommands()) where += " " + sub->get_name();
  std::string what = e.what();
  for (char& c : what)
    if (c == '\n') c = ' ';
  return where + ": error: " + what + " (see " + where + " --help)\n";
}

}  // namespace

int main(int argc, char** argv) {
  // A prefill chunk's activations are tens of MB per buffer. glibc would serve each from a fresh
  // mmap and unmap it on free, so every layer paid page faults and page zeroing again (~25 % of
  // prefill time, measured with perf). Keep freed memory in the heap for reuse instead.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"dsv4 — DeepSeek-V4 inference engine"};
  app.require_subcommand(1);
  app.failure_message(one_line_error);
  app.set_version_flag("--version", "dsv4 0.1.0");
  dsv4::cli::add_model_commands(app);
  dsv4::cli::add_tokenizer_commands(app);
  dsv4::cli::add_generate_commands(app);
  dsv4::cli::add_make_model_commands(app);
  dsv4::cli::add_serve_commands(app);
  dsv4::cli::add_bench_commands(app);
#ifdef DSV4_HAVE_TRAIN
  dsv4::cli::add_train_commands(app);
#endif
  // CLI11 would only say "A subcommand is required" for a misspelt one.
  const std::vector<CLI::App*> commands = app.get_subcommands({});
  auto known = [&](const std::string& name) {
    return std::any_of(commands.begin(), commands.end(), [&](const CLI::App* c) { return c->get_name() == name; });
  };
  if (argc > 1 && argv[1][0] != '-' && !known(argv[1])) {
    std::fprintf(stderr, "dsv4: error: unknown command '%s' (see dsv4 --help)\n", argv[1]);
    return 1;
  }
  int rc = 0;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    rc = app.exit(e);  // help and version as CLI11 prints them; errors through one_line_error
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    rc = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    rc = 1;
  }
  // An expert-parallel job's other ranks wait for rank 0 (apps/cli/model_loader.h).
  try {
    dsv4::cli::finish_expert_parallel();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    rc = 1;
  }
  return rc;
}
