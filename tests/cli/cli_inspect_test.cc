// `dsv4 inspect` end to end: the built binary on the golden flash-mini checkpoint prints the
// layer schedule and exits 0; on a path that is not a checkpoint it prints one error line and
// exits 1 (main.cc's contract for every error that reaches it).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "tests/test_util.h"

namespace dsv4 {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs the dsv4 binary with `args` (already shell-quoted where needed).
CliResult run_dsv4(const std::string& args) {
  const std::string cmd = std::string("'") + DSV4_BINARY_DIR + "/bin/dsv4' " + args + " 2>&1";
  CliResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CliInspectTest, GoldenFlashMiniPrintsTheLayerSchedule) {
  DSV4_REQUIRE_SHARED();
  CliResult r = run_dsv4("inspect --model '" + test::shared_dir() + "/golden/flash-mini'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("layers       6 main + 1 MTP"));
  // compress_ratios [0, 0, 4, 128, 4, 0 | 0], hash routing on layers 0 and 1.
  EXPECT_THAT(r.output, HasSubstr("layer 0  ratio 0    window hash-routed"));
  EXPECT_THAT(r.output, HasSubstr("layer 2  ratio 4    CSA    score-routed"));
  EXPECT_THAT(r.output, HasSubstr("layer 3  ratio 128  HCA    score-routed"));
  EXPECT_THAT(r.output, HasSubstr("mtp.0    ratio 0    window score-routed"));
  EXPECT_THAT(r.output, HasSubstr("(inventory validated)"));
}

TEST(CliInspectTest, NonexistentModelIsOneErrorLine) {
  const std::string missing = std::string(DSV4_BINARY_DIR) + "/no-such-model-dir";
  CliResult r = run_dsv4("inspect --model '" + missing + "'");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, AllOf(StartsWith("dsv4: error: "), HasSubstr(missing)));
  ASSERT_FALSE(r.output.empty());
  EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "more than one line:\n" << r.output;
}

TEST(CliInspectTest, MissingRequiredFlagIsAUsageError) {
  CliResult r = run_dsv4("inspect");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--model"));
}

}  // namespace
}  // namespace dsv4
