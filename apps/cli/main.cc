// `dsv4`: the command-line front end. Subcommands are registered from cmd_*.cc; every error
// that reaches here is one clear line on stderr and a non-zero exit code.
#include <cstdio>
#include <exception>

#include "apps/cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"dsv4 — DeepSeek-V4 inference engine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dsv4 0.1.0");
  dsv4::cli::add_model_commands(app);
  dsv4::cli::add_tokenizer_commands(app);
  dsv4::cli::add_generate_commands(app);
  dsv4::cli::add_make_model_commands(app);
  dsv4::cli::add_serve_commands(app);
  dsv4::cli::add_bench_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
