// Plain ("no-sim") numerics, end to end against the reference: prefill, decode and MTP logits
// and every stored intermediate within 1e-4·rms, with identical indexer and expert selections
// (golden README §6).
#include <gtest/gtest.h>

#include "kernels/isa.h"
#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

using test::RecordingTrace;

constexpr double kTol = 1e-4;

class GoldenPlain : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    dir_ = test::shared_dir() + "/golden/" + GetParam();
    model_ = Model::load(dir_, Numerics::kPlain, nullptr, test::test_residency());
    if (test::test_residency() == Residency::kCopy && kernels::active_isa() == kernels::Isa::kAvx512) {
      ASSERT_TRUE(model_->weights().layers[0].ffn.experts[0].w1.tiled) << "copied experts are not tiled";
    }
    expected_ = TensorDirectory::open(dir_ + "/expected-nosim.safetensors");
  }
  std::vector<float> f(const std::string& n) { return test::f32s(expected_->get(n)); }
  std::vector<int32_t> ids(const std::string& n) { return test::i32s(expected_->get(n)); }

  // Rows of `name` at `positions` from the trace, in order.
  std::vector<std::vector<float>> rows(const RecordingTrace& t, const std::string& name, const std::vector<int32_t>& positions) {
    std::vector<std::vector<float>> out;
    for (int32_t p : positions) {
      auto it = t.f.at(name).find(p);
      EXPECT_NE(it, t.f.at(name).end()) << name << " has no row at " << p;
      out.push_back(it == t.f.at(name).end() ? std::vector<float>() : it->second);
    }
    return out;
  }

  // Compares routing and indexer selections recorded for positions first..first+count-1
  // against `<prefix>.<phase>.*` in the expected file.
  void check_selections(const RecordingTrace& t, const std::string& phase, int64_t first, int64_t count) {
    const ModelConfig& c = model_->config();
    for (int l = 0; l <= c.n_layers; ++l) {
      const bool mtp = l == c.n_layers;
      if (mtp && c.n_mtp_layers == 0) break;
      const std::string tag = mtp ? "mtp" : cat("block", l);
      if (mtp != (phase.find("mtp") != std::string::npos)) continue;
      const std::string ph = mtp ? phase.substr(4) : phase;  // "mtp_prefill" → "prefill"
      const std::string moe = cat("moe.", tag, ".", ph);
      auto experts = ids(moe + ".experts");
      auto weights = f(moe + ".weights");
      const int K = c.n_activated_experts;
      for (int64_t r = 0; r < count; ++r) {
        const auto& ge = t.i.at(cat("moe.", tag, ".experts")).at(first + r);
        const auto& gw = t.f.at(cat("moe.", tag, ".weights")).at(first + r);
        ASSERT_EQ(test::valid_set(ge.data(), K), test::valid_set(experts.data() + r * K, K)) << moe << " row " << r;
        for (int k = 0; k < K; ++k) {  // weights matched by expert id
          int32_t e = ge[size_t(k)];
          int kk = int(std::find(experts.begin() + r * K, experts.begin() + (r + 1) * K, e) - (experts.begin() + r * K));
          EXPECT_NEAR(gw[size_t(k)], weights[size_t(r * K + kk)], 1e-4 * std::fabs(weights[size_t(r * K + kk)]) + 1e-6)
              << moe << " row " << r;
        }
      }
      if (!mtp && c.attention_kind(l) == AttentionKind::kIndexed) {
        const std::string ix = cat("indexer.", tag, ".", ph);
        auto topk = ids(ix + ".topk");
        auto scores = f(ix + ".scores");
        const int64_t width = expected_->get(ix + ".scores").shape[1];
        for (int64_t r = 0; r < count; ++r) {
          const auto& gt = t.i.at(cat("indexer.", tag, ".topk")).at(first + r);
          ASSERT_EQ(test::valid_set(gt.data(), int64_t(gt.size())), test::valid_set(topk.data() + r * c.index_topk, c.index_topk))
              << ix << " row " << r;
          const auto& gs = t.f.at(cat("indexer.", tag, ".scores")).at(first + r);
          const float* ref = scores.data() + r * width;
          double rr = test::rms(ref, size_t(gs.size()));
          for (size_t j = 0; j < gs.size(); ++j) EXPECT_NEAR(gs[j], ref[j], kTol * rr + 1e-30) << ix << " row " << r;
        }
      }
    }
  }

  std::string dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<TensorDirectory> expected_;
};

TEST_P(GoldenPlain, EndToEnd) {
  const ModelConfig& c = model_->config();
  const int64_t V = c.vocab_size, stride = c.hc_mult * c.dim;
  auto prompt = ids("input.prompt_ids");
  auto decode = ids("input.decode_ids");
  auto positions = ids("hidden.positions");
  const int64_t P = int64_t(prompt.size()), T = int64_t(decode.size());

  RecordingTrace trace;
  SequenceState st = model_->new_sequence();
  ForwardOutput out;
  model_->forward(&st, prompt, LogitsMode::kAll, &out, &trace);
  std::vector<float> hidden_prefill = out.hidden;
  EXPECT_LE(test::rel_max_err(out.logits.data(), f("logits.prefill").data(), size_t(P * V)), kTol);

  // Intermediates at the stored positions, first deviating one reported by name.
  for (int l = -1; l < c.n_layers; ++l) {
    const std::string name = l < 0 ? "hidden.embed" : cat("hidden.block", l);
    auto s = test::compare_rows(rows(trace, name, positions), f(name + ".prefill"), stride, kTol);
    EXPECT_LE(s.worst, kTol) << name << " worst at stored row " << s.worst_row;
    if (l >= 0) {
      const std::string an = cat("attn_out.block", l);
      auto sa = test::compare_rows(rows(trace, an, positions), f(an + ".prefill"), c.dim, kTol);
      EXPECT_LE(sa.worst, kTol) << an << " worst at stored row " << sa.worst_row;
    }
  }
  check_selections(trace, "prefill", 0, P);

  // Decode one token at a time.
  trace.clear();
  std::vector<float> logits_decode, hidden_decode;
  for (int64_t t = 0; t < T; ++t) {
    model_->forward(&st, std::span<const int32_t>(decode.data() + t, 1), LogitsMode::kLast, &out, &trace);
    logits_decode.insert(logits_decode.end(), out.logits.begin(), out.logits.end());
    hidden_decode.insert(hidden_decode.end(), out.hidden.begin(), out.hidden.end());
  }
  EXPECT_LE(test::rel_max_err(logits_decode.data(), f("logits.decode").data(), size_t(T * V)), kTol);
  check_selections(trace, "decode", P, T);

  // MTP over the prompt (hidden at i with token i+1), then its decode steps.
  trace.clear();
  MtpState ms = model_->new_mtp_state();
  auto mtp_ids = ids("input.mtp_prefill_ids");
  model_->mtp_forward(&ms, hidden_prefill.data(), mtp_ids, LogitsMode::kAll, &out, &trace);
  EXPECT_LE(test::rel_max_err(out.logits.data(), f("logits.mtp_prefill").data(), size_t(P * V)), kTol);
  auto sm = test::compare_rows(rows(trace, "hidden.mtp", positions), f("hidden.mtp.prefill"), stride, kTol);
  EXPECT_LE(sm.worst, kTol) << "hidden.mtp worst at stored row " << sm.worst_row;
  auto sa = test::compare_rows(rows(trace, "attn_out.mtp", positions), f("attn_out.mtp.prefill"), c.dim, kTol);
  EXPECT_LE(sa.worst, kTol) << "attn_out.mtp worst at stored row " << sa.worst_row;
  check_selections(trace, "mtp_prefill", 0, P);
  trace.clear();
  auto mtp_decode_ids = ids("input.mtp_decode_ids");
  std::vector<float> logits_mtp;
  for (int64_t t = 0; t + 1 < T; ++t) {
    model_->mtp_forward(&ms, hidden_decode.data() + t * stride, std::span<const int32_t>(mtp_decode_ids.data() + t, 1),
                        LogitsMode::kLast, &out, &trace);
    logits_mtp.insert(logits_mtp.end(), out.logits.begin(), out.logits.end());
  }
  EXPECT_LE(test::rel_max_err(logits_mtp.data(), f("logits.mtp_decode").data(), size_t((T - 1) * V)), kTol);
  check_selections(trace, "mtp_decode", P, T - 1);
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenPlain, ::testing::ValuesIn(test::golden_cases()));

}  // namespace
}  // namespace dsv4
