// `dsv4-train`: the program `dsv4 train` executes (apps/cli/train_launcher.h), with argv as the
// user typed it ("dsv4 train --corpus ..."). It is a `dsv4` whose one command is `train`; being
// separate, it alone links libtorch, and every other dsv4 command starts without loading it.
#include <string_view>
#include <vector>

#include "apps/cli/commands.h"
#include "apps/cli/run_app.h"

int main(int argc, char** argv) {
  dsv4::cli::tune_malloc();  // as in `dsv4`, so training allocates as it did inside it
  // Run directly, `dsv4-train --corpus ...` means `dsv4-train train --corpus ...`.
  std::vector<char*> args(argv, argv + argc);
  static char train[] = "train";
  if (argc < 2 || std::string_view(argv[1]) != train) args.insert(args.begin() + 1, train);
  args.push_back(nullptr);
  CLI::App app{"dsv4 — DeepSeek-V4 inference engine"};
  app.require_subcommand(1);
  dsv4::cli::add_train_commands(app);
  return dsv4::cli::run_app(app, int(args.size()) - 1, args.data());
}
