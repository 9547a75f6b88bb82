// What the `dsv4` and `dsv4-train` programs share around their subcommands: the allocator
// settings, and parsing + running with every error as one clear line on stderr.
#pragma once

#include <CLI/CLI.hpp>

namespace dsv4::cli {

// Keeps large freed buffers in the heap for reuse (see run_app.cc); call first thing in main().
void tune_malloc();

// Parses argv into the app and runs the chosen subcommand's callback. Help and version are
// printed as CLI11 prints them; every error is one "dsv4 ...: error: ..." line. Returns the
// process exit code.
int run_app(CLI::App& app, int argc, char** argv);

}  // namespace dsv4::cli
