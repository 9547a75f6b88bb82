// Synthetic checkpoints (model/synthetic.h): the tiny preset loads (full inventory), runs with
// healthy activations through every layer kind and MTP, is a pure function of the seed, and the
// real presets carry the official widths. No real-size files are written here.
#include "model/synthetic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "model/inventory.h"
#include "model/model.h"
#include "model/trace.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

// Every file of a checkpoint directory, name → bytes.
std::map<std::string, std::string> read_all(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    out[e.path().filename().string()] = ss.str();
  }
  return out;
}

// Records the worst hidden-state rms per traced name, and whether anything was not finite.
class HealthTrace : public Trace {
 public:
  std::map<std::string, double> max_rms, min_rms;
  bool finite = true;
  void f32(const std::string& name, int64_t, const float* d, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) finite = finite && std::isfinite(d[i]);
    if (name.rfind("hidden.", 0) != 0) return;
    double r = test::rms(d, size_t(n));
    max_rms[name] = std::max(max_rms.count(name) ? max_rms[name] : 0.0, r);
    min_rms[name] = std::min(min_rms.count(name) ? min_rms[name] : 1e30, r);
  }
  void i32(const std::string&, int64_t, const int32_t*, int64_t) override {}
};

void expect_healthy_logits(const std::vector<float>& logits, int64_t rows, int64_t vocab) {
  ASSERT_EQ(int64_t(logits.size()), rows * vocab);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0, s2 = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      float x = logits[size_t(r * vocab + v)];
      ASSERT_TRUE(std::isfinite(x)) << "row " << r << " id " << v;
      s += x, s2 += double(x) * x;
    }
    double mean = s / double(vocab), sd = std::sqrt(std::max(0.0, s2 / double(vocab) - mean * mean));
    EXPECT_GT(sd, 0.1) << "row " << r;
    EXPECT_LT(sd, 100.0) << "row " << r;
  }
}

std::vector<int32_t> some_ids(int64_t n, int64_t vocab, int32_t salt) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(int32_t((i * 7919 + salt * 104729 + 13) % vocab));
  return ids;
}

TEST(Synthetic, TinyLoadsAndRunsHealthy) {
  TempDir dir("tiny");
  const ModelConfig c = preset_config("tiny");
  int64_t last_done = 0, total = 0;
  write_synthetic_checkpoint(c, dir.str(), 1, [&](int64_t done, int64_t t, const std::string&) {
    EXPECT_GE(done, last_done);
    last_done = done, total = t;
  });
  EXPECT_EQ(last_done, total);
  EXPECT_EQ(total, synthetic_checkpoint_bytes(c));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir.str())) shards += e.path().extension() == ".safetensors";
  EXPECT_GE(shards, 2);  // the sharded layout is exercised even for tiny

  std::unique_ptr<Model> model = Model::load(dir.str());  // checks the full inventory
  const ModelConfig& m = model->config();
  EXPECT_EQ(m.vocab_size, 129280);
  EXPECT_EQ(m.compress_ratios, c.compress_ratios);
  bool kinds[3] = {};
  for (int l = 0; l < m.n_layers; ++l) kinds[int(m.attention_kind(l))] = true;
  EXPECT_TRUE(kinds[0] && kinds[1] && kinds[2]) << "tiny must hold window, HCA and CSA layers";
  EXPECT_EQ(m.n_mtp_layers, 1);
  EXPECT_GT(m.n_hash_layers, 0);

  // 40 tokens with all logits, then 100 more so the ratio-128 compressors emit an entry.
  SequenceState st = model->new_sequence();
  HealthTrace trace;
  ForwardOutput out;
  std::vector<int32_t> ids = some_ids(40, m.vocab_size, 1);
  model->forward(&st, ids, LogitsMode::kAll, &out, &trace);
  expect_healthy_logits(out.logits, 40, m.vocab_size);
  std::vector<int32_t> more = some_ids(100, m.vocab_size, 2);
  model->forward(&st, more, LogitsMode::kLast, &out, &trace);
  expect_healthy_logits(out.logits, 1, m.vocab_size);
  EXPECT_TRUE(trace.finite);
  ASSERT_EQ(int(trace.max_rms.count("hidden.block0")), 1) << "the model traces hidden.block<i>";
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string n = cat("hidden.block", l);
    EXPECT_GT(trace.min_rms[n], 0.1) << n;
    EXPECT_LT(trace.max_rms[n], 50.0) << n;
    std::printf("%s rms %.3g..%.3g\n", n.c_str(), trace.min_rms[n], trace.max_rms[n]);
  }

  // MTP: streams at positions 0..n-2 with the tokens at 1..n-1.
  const int64_t n = int64_t(more.size()), stride = m.hc_mult * m.dim;
  MtpState ms = model->new_mtp_state();
  ForwardOutput mo;
  model->mtp_forward(&ms, out.hidden.data(), std::span<const int32_t>(more.data() + 1, size_t(n - 1)),
                     LogitsMode::kLast, &mo, &trace);
  ASSERT_EQ(int64_t(out.hidden.size()), n * stride);
  expect_healthy_logits(mo.logits, 1, m.vocab_size);
  EXPECT_TRUE(trace.finite);
}

// A small-vocabulary tiny model: determinism tests write it several times.
ModelConfig small_config() {
  ModelConfig c = preset_config("tiny");
  c.vocab_size = 1024;
  return c;
}

TEST(Synthetic, SameSeedSameBytesAnyThreadCount) {
  TempDir a("a"), b("b"), d("d");
  const ModelConfig c = small_config();
  write_synthetic_checkpoint(c, a.str(), 7, {}, SyntheticOptions{.shard_bytes = 1 << 20, .threads = 1});
  write_synthetic_checkpoint(c, b.str(), 7, {}, SyntheticOptions{.shard_bytes = 1 << 20, .threads = 3});
  write_synthetic_checkpoint(c, d.str(), 8, {}, SyntheticOptions{.shard_bytes = 1 << 20, .threads = 2});
  auto fa = read_all(a.str()), fb = read_all(b.str()), fd = read_all(d.str());
  EXPECT_GT(fa.size(), 4u);  // config, index, several shards
  EXPECT_TRUE(fa == fb) << "same seed must give identical files";
  ASSERT_EQ(fa.size(), fd.size());
  for (const auto& [name, bytes] : fa) {
    if (name.find(".safetensors") != std::string::npos && name.find(".json") == std::string::npos)
      EXPECT_NE(bytes, fd[name]) << name << " does not depend on the seed";
    else
      EXPECT_EQ(bytes, fd[name]) << name;  // config and index depend on the config only
  }
  Model::load(d.str());  // loads with the small vocabulary too
}

// Dequantised weights have the intended spread: FP8 128×128 and FP4 1×32 blocks decode to
// ~N(0, gain²/fan_in); the hash table rows are distinct experts.
TEST(Synthetic, WeightStatistics) {
  TempDir dir("stats");
  const ModelConfig c = small_config();
  write_synthetic_checkpoint(c, dir.str(), 3);
  auto td = TensorDirectory::open(dir.str());
  auto dequant_std = [&](const std::string& p, bool fp4) {
    const TensorView& w = td->get(p + ".weight");
    const TensorView& s = td->get(p + ".scale");
    const int64_t rows = w.shape[0], k = w.shape[1] * (fp4 ? 2 : 1);
    double s2 = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < k; ++j) {
        float q = fp4 ? fp4_packed_at(w.data + r * w.shape[1], size_t(j)) : e4m3_to_f32(w.data[r * k + j]);
        float sc = fp4 ? e8m0_to_f32(s.data[r * (k / 32) + j / 32]) : e8m0_to_f32(s.data[(r / 128) * s.shape[1] + j / 128]);
        s2 += double(q * sc) * (q * sc);
      }
    return std::sqrt(s2 / double(rows * k));
  };
  EXPECT_NEAR(dequant_std("layers.2.attn.wq_a", false), 1 / std::sqrt(double(c.dim)), 0.1 / std::sqrt(double(c.dim)));
  EXPECT_NEAR(dequant_std("layers.2.ffn.experts.3.w1", true), 1 / std::sqrt(double(c.dim)), 0.15 / std::sqrt(double(c.dim)));
  const TensorView& t = td->get("layers.0.ffn.gate.tid2eid");
  ASSERT_EQ(t.dtype, DType::I64);
  std::vector<int64_t> ids(size_t(t.numel()));
  std::memcpy(ids.data(), t.data, t.nbytes);
  for (int64_t r = 0; r < t.shape[0]; ++r) {
    std::set<int64_t> row(ids.begin() + r * t.shape[1], ids.begin() + (r + 1) * t.shape[1]);
    EXPECT_EQ(int64_t(row.size()), t.shape[1]) << "row " << r;
    for (int64_t e : row) ASSERT_TRUE(e >= 0 && e < c.n_routed_experts);
  }
}

// The generator's FP4 encoder is the reference encoder (core/dtype.h), value for value: every
// float in [-6, 6] on a fine grid plus each tie point and its neighbours.
TEST(Synthetic, BranchlessE2m1MatchesReference) {
  std::vector<float> xs = {0.0f, -0.0f, 6.0f, -6.0f};
  for (float mid : {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f})
    for (float m : {mid, -mid}) xs.insert(xs.end(), {m, std::nextafter(m, 0.0f), std::nextafter(m, 10.0f * m)});
  for (int i = -600000; i <= 600000; ++i) xs.push_back(float(i) * 1e-5f);
  for (float x : xs) ASSERT_EQ(int(detail::e2m1_branchless(x)), int(f32_to_e2m1(x))) << x;
}

TEST(Synthetic, ConfigJsonRoundTrips) {
  for (const char* name : {"tiny", "flash", "pro"}) {
    ModelConfig c = preset_config(name);
    ModelConfig r = parse_config(config_json(c), name);
    EXPECT_EQ(r.dim, c.dim) << name;
    EXPECT_EQ(r.compress_ratios, c.compress_ratios) << name;
    EXPECT_EQ(r.n_hash_layers, c.n_hash_layers) << name;
    EXPECT_EQ(r.route_scale, c.route_scale) << name;
    EXPECT_EQ(r.hc_eps, c.hc_eps) << name;
    EXPECT_EQ(r.original_seq_len, c.original_seq_len) << name;
    EXPECT_EQ(r.compress_rope_theta, c.compress_rope_theta) << name;
    EXPECT_EQ(r.index_topk, c.index_topk) << name;
    EXPECT_EQ(r.expert_format, ExpertFormat::kFp4) << name;
    EXPECT_TRUE(r.has_expert_dtype) << name;
  }
  EXPECT_NE(config_json(preset_config("tiny")).find("\"hc_eps\": 1e-06"), std::string::npos);
}

TEST(Synthetic, FlashPresetHasOfficialWidths) {
  ModelConfig c = preset_config("flash", 4, 256);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.dim, 4096);
  EXPECT_EQ(c.n_heads, 64);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.rope_head_dim, 64);
  EXPECT_EQ(c.q_lora_rank, 1024);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.moe_inter_dim, 2048);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.n_activated_experts, 6);
  EXPECT_FLOAT_EQ(c.route_scale, 1.5f);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_topk, 512);
  EXPECT_EQ(c.n_layers, 4);
  EXPECT_EQ(c.n_hash_layers, 3);
  EXPECT_EQ(c.compress_ratios, (std::vector<int>{0, 0, 4, 128, 0}));  // official prefix + MTP
  ModelConfig full = preset_config("flash");
  EXPECT_EQ(full.n_layers, 43);
  EXPECT_EQ(full.compress_ratios.size(), 44u);
  EXPECT_EQ(full.compress_ratios[42], 4);
  // 4 layers × 256 experts: ~19 GB, most of it FP4 experts (spec §2.2 shapes).
  const double gb = double(synthetic_checkpoint_bytes(c)) / 1e9;
  EXPECT_GT(gb, 15.0);
  EXPECT_LT(gb, 22.0);
}

TEST(Synthetic, ProPresetHasOfficialWidths) {
  ModelConfig c = preset_config("pro", 2, 16);
  EXPECT_EQ(c.dim, 7168);
  EXPECT_EQ(c.n_heads, 128);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.o_groups, 16);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.moe_inter_dim, 3072);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_FLOAT_EQ(c.route_scale, 2.5f);
  EXPECT_EQ(c.index_topk, 1024);
  EXPECT_EQ(c.compress_ratios, (std::vector<int>{128, 128, 0}));
  ModelConfig full = preset_config("pro");
  EXPECT_EQ(full.n_layers, 61);
  EXPECT_EQ(full.n_routed_experts, 384);
  int csa = 0, hca = 0;
  for (int l = 0; l < full.n_layers; ++l) (full.compress_ratios[size_t(l)] == 4 ? csa : hca) += 1;
  EXPECT_EQ(csa, 30);
  EXPECT_EQ(hca, 31);
  // The inventory of a real-width config is consistent (shapes from spec §2.2).
  for (const TensorSpec& s : expected_tensors(c)) {
    if (s.name == "layers.0.attn.wo_a.weight") {
      EXPECT_EQ(s.shape, (std::vector<int64_t>{16384, 4096}));
    }
  }
}

TEST(Synthetic, BadPresetArguments) {
  EXPECT_THROW(preset_config("huge"), Error);
  EXPECT_THROW(preset_config("flash", 44, 0), Error);
  EXPECT_THROW(preset_config("flash", 0, 5), Error);
  EXPECT_THROW(preset_config("tiny", -1, 0), Error);
  try {
    preset_config("huge");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny, flash, pro"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsv4
