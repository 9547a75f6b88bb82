// `dsv4 train`: the trainer is a separate program, dsv4-train, built beside dsv4 with
// -DDSV4_TRAIN=ON. Linking libtorch into dsv4 itself made every command pay for loading it
// (~0.5 s per start idle, tens of seconds under load); an exec of the sibling keeps that cost
// to training, and passes argv, stdin/stdout/stderr, signals and the exit status through
// unchanged because the trainer replaces this process.
#pragma once

#include <CLI/CLI.hpp>

namespace dsv4::cli {

// Lists `train` among the subcommands in `dsv4 --help` (main() hands `dsv4 train` to
// launch_trainer before parsing, so the entry itself never runs).
void add_train_entry(CLI::App& app);

// Replaces this process with dsv4-train, argv unchanged. Returns only on failure: after one
// error line (no trainer in this build, or the sibling program missing), with exit code 1.
int launch_trainer(char** argv);

}  // namespace dsv4::cli
