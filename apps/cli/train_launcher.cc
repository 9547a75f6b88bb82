#include "apps/cli/train_launcher.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

namespace dsv4::cli {

namespace {

constexpr const char* kSummary = "Train a tokenizer and a DeepSeek-V4 model on a text corpus";

#ifdef DSV4_HAVE_TRAIN
// dsv4-train in the directory of the running binary (not of argv[0], which may be a bare name
// found through PATH or a symbolic link elsewhere).
std::string trainer_path() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "dsv4-train";  // no /proc: execv then fails and the error names this
  return (self.parent_path() / "dsv4-train").string();
}
#endif

}  // namespace

void add_train_entry(CLI::App& app) {
#ifdef DSV4_HAVE_TRAIN
  app.add_subcommand("train", kSummary);
#else
  app.add_subcommand("train", std::string(kSummary) + " (not in this build: needs cmake -DDSV4_TRAIN=ON)");
#endif
}

int launch_trainer(char** argv) {
#ifdef DSV4_HAVE_TRAIN
  const std::string path = trainer_path();
  execv(path.c_str(), argv);
  const int err = errno;
  std::fprintf(stderr, "dsv4 train: error: cannot run the trainer program %s (%s); it is built beside dsv4 (target dsv4-train)\n",
               path.c_str(), std::strerror(err));
#else
  (void)argv;
  std::fprintf(stderr, "dsv4 train: error: this dsv4 was built without the trainer; configure with cmake -DDSV4_TRAIN=ON "
               "(needs Debian's libtorch-dev, which scripts/setup.sh installs) and build again\n");
#endif
  return 1;
}

}  // namespace dsv4::cli
