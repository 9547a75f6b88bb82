// The MoE's schedules — experts one after another with each product split over the threads,
// all experts' products in two regions (decode, short prompts), and whole experts per thread
// (long prompts) — must give bit-identical
// outputs: the engine picks between them by thread count and prompt length, and batch
// invariance (speculative verify, server batching) relies on a row never depending on that.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/arena.h"
#include "core/thread_pool.h"
#include "model/moe.h"
#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

std::vector<float> run_moe(const Model& m, int layer, bool hash, Numerics nm, const std::vector<float>& x,
                           const std::vector<int32_t>& tokens, ThreadPool* pool,
                           ExpertSchedule schedule = ExpertSchedule::kAuto) {
  const int64_t n = int64_t(tokens.size()), D = m.config().dim;
  std::vector<int64_t> pos(tokens.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = int64_t(i);
  std::vector<float> out(size_t(n * D), -1.0f);
  MoeArgs a;
  a.config = &m.config();
  a.weights = &m.weights().layers[size_t(layer)].ffn;
  a.hash_routed = hash;
  a.numerics = nm;
  a.x = x.data();
  a.tokens = tokens.data();
  a.n = n;
  a.positions = pos.data();
  a.out = out.data();
  a.pool = pool;
  a.schedule = schedule;
  ArenaScope scope;
  moe_forward(a);
  return out;
}

TEST(MoeSchedules, ExpertsPerThreadMatchExpertsInTurnBitForBit) {
  DSV4_REQUIRE_SHARED();
  auto model = Model::load(test::shared_dir() + "/golden/flash-mini", Numerics::kReference);
  const ModelConfig& c = model->config();
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size) - 1);
  ThreadPool one(1), two(2);
  // 3 tokens: few experts (in turn on every pool); 96: all 16 experts active (whole experts per thread on 2).
  for (int64_t n : {3, 96}) {
    std::vector<float> x(static_cast<size_t>(n * c.dim));
    for (float& v : x) v = nd(rng);
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (int32_t& t : tokens) t = tok(rng);
    for (int layer : {0, c.n_hash_layers}) {
      for (Numerics nm : {Numerics::kReference, Numerics::kPlain}) {
        const bool hash = layer < c.n_hash_layers;
        std::vector<float> serial = run_moe(*model, layer, hash, nm, x, tokens, &one);
        std::vector<float> threaded = run_moe(*model, layer, hash, nm, x, tokens, &two);
        ASSERT_EQ(serial.size(), threaded.size());
        EXPECT_EQ(std::memcmp(serial.data(), threaded.data(), serial.size() * sizeof(float)), 0)
            << "n " << n << " layer " << layer;
        // Every schedule, forced, on either pool: the bits of one expert after another, serial.
        const std::vector<float> in_turn = run_moe(*model, layer, hash, nm, x, tokens, &one, ExpertSchedule::kInTurn);
        for (ExpertSchedule s : {ExpertSchedule::kInTurn, ExpertSchedule::kFused, ExpertSchedule::kWholeExperts})
          for (ThreadPool* p : {&one, &two}) {
            const std::vector<float> got = run_moe(*model, layer, hash, nm, x, tokens, p, s);
            EXPECT_EQ(std::memcmp(in_turn.data(), got.data(), got.size() * sizeof(float)), 0)
                << "n " << n << " layer " << layer << " schedule " << int(s) << " threads " << p->size();
          }
        EXPECT_EQ(std::memcmp(in_turn.data(), serial.data(), serial.size() * sizeof(float)), 0) << "n " << n;
        double s = 0;
        for (float v : serial) s += std::fabs(v);
        EXPECT_GT(s, 0.0) << "the MoE output must not be all zeros";
      }
    }
  }
}

}  // namespace
}  // namespace dsv4
