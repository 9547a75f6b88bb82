// Registration of the `dsv4` subcommands. Each family adds its subcommands to the app and sets
// their callbacks; errors escape as dsv4::Error and are printed by main() as one line.
#pragma once

#include <CLI/CLI.hpp>

namespace dsv4::cli {

void add_model_commands(CLI::App& app);      // inspect, logits          (cmd_model.cc)
void add_tokenizer_commands(CLI::App& app);  // tokenize, detokenize, template, parse-completion
void add_make_model_commands(CLI::App& app);  // make-model                (cmd_make_model.cc)
void add_generate_commands(CLI::App& app);  // run, chat                  (cmd_generate.cc)
void add_serve_commands(CLI::App& app);      // serve                     (cmd_serve.cc)
void add_bench_commands(CLI::App& app);      // bench                     (cmd_bench.cc)
void add_train_commands(CLI::App& app);      // train: only in dsv4-train   (cmd_train.cc)

}  // namespace dsv4::cli
