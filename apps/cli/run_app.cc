#include "apps/cli/run_app.h"

#include <malloc.h>

#include <cstdio>
#include <exception>
#include <string>

namespace dsv4::cli {

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

void tune_malloc() {
  // A prefill chunk's activations are tens of MB per buffer. glibc would serve each from a fresh
  // mmap and unmap it on free, so every layer paid page faults and page zeroing again (~25 % of
  // prefill time, measured with perf). Keep freed memory in the heap for reuse instead.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int run_app(CLI::App& app, int argc, char** argv) {
  app.failure_message(one_line_error);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);  // help and version as CLI11 prints them; errors through one_line_error
  } catch (const std::exception& e) {  // dsv4::Error and anything else the command threw
    std::fprintf(stderr, "dsv4: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace dsv4::cli
