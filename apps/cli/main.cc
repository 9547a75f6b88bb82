// `dsv4`: the command-line front end. Subcommands are registered from cmd_*.cc; every error
// that reaches here is one clear line on stderr and a non-zero exit code. `dsv4 train` runs in a
// program of its own (apps/cli/train_launcher.h), so that only training loads libtorch.
#include <cstdio>
#include <algorithm>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "apps/cli/commands.h"
#include "apps/cli/model_loader.h"
#include "apps/cli/run_app.h"
#include "apps/cli/train_launcher.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "train") return dsv4::cli::launch_trainer(argv);
  dsv4::cli::tune_malloc();
  CLI::App app{"dsv4 — DeepSeek-V4 inference engine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dsv4 0.1.0");
  dsv4::cli::add_model_commands(app);
  dsv4::cli::add_tokenizer_commands(app);
  dsv4::cli::add_generate_commands(app);
  dsv4::cli::add_make_model_commands(app);
  dsv4::cli::add_serve_commands(app);
  dsv4::cli::add_bench_commands(app);
  dsv4::cli::add_train_entry(app);
  // CLI11 would only say "A subcommand is required" for a misspelt one.
  const std::vector<CLI::App*> commands = app.get_subcommands({});
  auto known = [&](const std::string& name) {
    return std::any_of(commands.begin(), commands.end(), [&](const CLI::App* c) { return c->get_name() == name; });
  };
  if (argc > 1 && argv[1][0] != '-' && !known(argv[1])) {
    std::fprintf(stderr, "dsv4: error: unknown command '%s' (see dsv4 --help)\n", argv[1]);
    return 1;
  }
  int rc = dsv4::cli::run_app(app, argc, argv);
  // An expert-parallel job's other ranks wait for rank 0 (apps/cli/model_loader.h).
  try {
    dsv4::cli::finish_expert_parallel();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    rc = 1;
  }
  return rc;
}
