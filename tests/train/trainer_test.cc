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
#include "train/forward.h"
#include "train/params.h"
#include "train/trainer.h"

namespace dsv4::train {
namespace {

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
  const std::vector<int32_t> data = test::learnable_stream(20000, int32_t(c.vocab_size));
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
  const std::vector<int32_t> data = test::learnable_stream(5000, int32_t(c.vocab_size));
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

// max|a−b| / rms(b) of two equally shaped F32 row sets.
double rel_err(const std::vector<float>& a, const torch::Tensor& b) {
  const torch::Tensor ta = torch::tensor(a, torch::kDouble).view(b.sizes()), tb = b.to(torch::kDouble);
  return (ta - tb).abs().max().item<double>() / tb.pow(2).mean().sqrt().item<double>();
}

// What `dsv4 train` writes loads in the engine unchanged, and the engine's plain-numerics logits
// (main and MTP) equal the trainer's forward on the weights read back from the checkpoint.
TEST(Trainer, ExportedCheckpointRunsInTheEngine) {
  set_threads(1);
  const ModelConfig c = test::micro_config();
  const std::vector<int32_t> data = test::learnable_stream(5000, int32_t(c.vocab_size));
  TrainOptions o = short_run();
  Trainer t(c, o);
  for (int i = 0; i < 3; ++i) t.step(data);  // weights off their initial symmetric values
  const std::string dir = ::testing::TempDir() + "/dsv4_train_export";
  std::filesystem::remove_all(dir);
  t.write_checkpoint(dir);

  std::unique_ptr<Model> engine = Model::load(dir, Numerics::kPlain);
  const std::vector<int32_t> ids(data.begin(), data.begin() + 70);  // > window, several entries per ratio
  SequenceState st = engine->new_sequence();
  ForwardOutput out;
  engine->forward(&st, ids, LogitsMode::kAll, &out);
  MtpState ms = engine->new_mtp_state();
  ForwardOutput mtp_out;
  engine->mtp_forward(&ms, out.hidden.data(), std::span<const int32_t>(ids).subspan(1, 69), LogitsMode::kAll, &mtp_out);

  const ModelConfig loaded = load_config(dir);
  const TrainModel m(loaded, load_params(dir, loaded, torch::kDouble));
  torch::NoGradGuard no_grad;
  const torch::Tensor tokens = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).unsqueeze(0);
  ForwardResult r = forward(m, tokens);
  const double main_err = rel_err(out.logits, r.logits[0]);
  const double mtp_err = rel_err(mtp_out.logits, mtp_forward(m, r.hidden.narrow(1, 0, 69), tokens.narrow(1, 1, 69))[0]);
  std::printf("engine vs trainer on the exported checkpoint: main %.2e, MTP %.2e (max|a-b|/rms)\n", main_err, mtp_err);
  EXPECT_LE(main_err, 1e-4);
  EXPECT_LE(mtp_err, 1e-4);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsv4::train
