// parse_config: the golden configs read back with the right values, and every kind of invalid
// config.json is refused with a dsv4::Error that names the offending field.
#include "model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/mapped_file.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string golden_config_path(const char* model) { return test::shared_dir() + "/golden/" + model + "/config.json"; }

TEST(ConfigTest, GoldenFlashMini) {
  DSV4_REQUIRE_SHARED();
  ModelConfig c = load_config(test::shared_dir() + "/golden/flash-mini");
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_EQ(c.dim, 256);
  EXPECT_EQ(c.moe_inter_dim, 128);
  EXPECT_EQ(c.n_layers, 6);
  EXPECT_EQ(c.n_mtp_layers, 1);
  EXPECT_EQ(c.n_hash_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_head_dim, 64);
  EXPECT_EQ(c.q_lora_rank, 128);
  EXPECT_EQ(c.o_groups, 2);
  EXPECT_EQ(c.o_lora_rank, 64);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.n_activated_experts, 6);
  EXPECT_EQ(c.score_func, ScoreFunc::kSqrtSoftplus);
  EXPECT_FLOAT_EQ(c.route_scale, 1.5f);
  EXPECT_FLOAT_EQ(c.swiglu_limit, 10.0f);
  EXPECT_EQ(c.window_size, 128);
  EXPECT_EQ(c.compress_ratios, (std::vector<int>{0, 0, 4, 128, 4, 0, 0}));
  EXPECT_EQ(c.rope_theta, 10000);
  EXPECT_EQ(c.compress_rope_theta, 160000);
  EXPECT_EQ(c.rope_factor, 16);
  EXPECT_EQ(c.original_seq_len, 65536);
  EXPECT_EQ(c.beta_fast, 32);
  EXPECT_EQ(c.beta_slow, 1);
  EXPECT_EQ(c.index_n_heads, 4);
  EXPECT_EQ(c.index_head_dim, 64);
  EXPECT_EQ(c.index_topk, 8);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_FLOAT_EQ(c.hc_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_TRUE(c.has_expert_dtype);
  EXPECT_EQ(c.expert_format, ExpertFormat::kFp4);
  EXPECT_EQ(c.attention_kind(1), AttentionKind::kWindow);
  EXPECT_EQ(c.attention_kind(2), AttentionKind::kIndexed);
  EXPECT_EQ(c.attention_kind(3), AttentionKind::kCompressed);
  EXPECT_TRUE(c.is_hash_layer(1));
  EXPECT_FALSE(c.is_hash_layer(2));
}

TEST(ConfigTest, GoldenProMini) {
  DSV4_REQUIRE_SHARED();
  ModelConfig c = parse_config(read_text_file(golden_config_path("pro-mini")), "pro-mini/config.json");
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.n_hash_layers, 3);
  EXPECT_EQ(c.o_groups, 4);
  EXPECT_EQ(c.o_lora_rank, 32);
  EXPECT_FLOAT_EQ(c.route_scale, 2.5f);
  EXPECT_EQ(c.compress_ratios, (std::vector<int>{128, 128, 4, 128, 4, 0, 0}));
  EXPECT_EQ(c.attention_kind(0), AttentionKind::kCompressed);
}

TEST(ConfigTest, MissingConfigFileNamesTheDirectory) {
  try {
    load_config("/nonexistent/model-dir");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("/nonexistent/model-dir"), HasSubstr("config.json")));
  }
}

// Invalid variants of the golden flash-mini config; each error must name the file and `field`.
class ConfigVariantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    base_ = json::parse(read_text_file(golden_config_path("flash-mini")));
  }
  // parse_config(edited) must throw an Error mentioning every string in `expect`.
  void expect_refused(const json& edited, std::initializer_list<std::string> expect) const {
    SCOPED_TRACE(edited.dump());
    try {
      parse_config(edited.dump(), "variant/config.json");
      ADD_FAILURE() << "accepted an invalid config";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("variant/config.json"));
      for (const auto& s : expect) EXPECT_THAT(e.what(), HasSubstr(s));
    }
  }
  json with(const std::string& key, const json& value) const {
    json j = base_;
    j[key] = value;
    return j;
  }
  json without(const std::string& key) const {
    json j = base_;
    j.erase(key);
    return j;
  }
  json base_;
};

TEST_F(ConfigVariantTest, BaseIsValid) { EXPECT_NO_THROW(parse_config(base_.dump(), "variant/config.json")); }

TEST_F(ConfigVariantTest, NotJsonOrNotAnObject) {
  auto error_text = [](const std::string& text) {
    try {
      parse_config(text, "variant/config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  for (const char* text : {"", "{", "{\"vocab_size\": 1,}", "nope"})
    EXPECT_THAT(error_text(text), AllOf(HasSubstr("variant/config.json"), HasSubstr("not valid JSON"))) << text;
  EXPECT_THAT(error_text("[1, 2]"), HasSubstr("JSON object"));
}

TEST_F(ConfigVariantTest, MissingRequiredField) {
  for (const char* key : {"vocab_size", "hidden_size", "moe_intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "head_dim", "qk_rope_head_dim", "q_lora_rank", "o_groups",
                          "o_lora_rank", "n_routed_experts", "num_experts_per_tok", "sliding_window", "rope_theta",
                          "index_n_heads", "index_head_dim", "index_topk", "hc_mult", "hc_sinkhorn_iters",
                          "hc_eps", "compress_ratios"})
    expect_refused(without(key), {cat("\"", key, "\""), "missing"});
}

TEST_F(ConfigVariantTest, WrongTypes) {
  expect_refused(with("hidden_size", "256"), {"\"hidden_size\"", "integer"});
  expect_refused(with("hidden_size", 256.5), {"\"hidden_size\"", "integer"});
  expect_refused(with("num_hidden_layers", nullptr), {"\"num_hidden_layers\"", "integer"});
  expect_refused(with("rope_theta", "10000"), {"\"rope_theta\"", "number"});
  expect_refused(with("hc_eps", json::array()), {"\"hc_eps\"", "number"});
  expect_refused(with("compress_ratios", "0,0,4"), {"compress_ratios", "array"});
  expect_refused(with("compress_ratios", {0, 0, 4, 128, 4, 0, "0"}), {"compress_ratios", "invalid entry"});
  expect_refused(with("compress_ratios", {0, 0, 4, 128, 4, 0, -4}), {"compress_ratios", "invalid entry"});
  expect_refused(with("compress_ratios", {0, 0, 4, 128, 4.5, 0, 0}), {"compress_ratios", "invalid entry"});
  expect_refused(with("rope_scaling", "yarn"), {"\"rope_scaling\"", "object"});
  expect_refused(with("expert_dtype", 4), {"\"expert_dtype\""});
  expect_refused(with("expert_dtype", "int4"), {"\"expert_dtype\""});
  // A non-string scoring_func used to escape as nlohmann::type_error instead of Error.
  expect_refused(with("scoring_func", 1), {"\"scoring_func\"", "string"});
  json nested = base_;
  nested["rope_scaling"]["factor"] = "16";
  expect_refused(nested, {"\"rope_scaling.factor\"", "number"});
}

TEST_F(ConfigVariantTest, OutOfRangeNumbers) {
  expect_refused(with("vocab_size", 0), {"\"vocab_size\"", ">= 1"});
  expect_refused(with("num_hidden_layers", -6), {"\"num_hidden_layers\""});
  // Values beyond an int used to be truncated silently: 2^32 + 6 layers read as 6.
  expect_refused(with("num_hidden_layers", 4294967302ull), {"\"num_hidden_layers\"", "<="});
  expect_refused(with("n_routed_experts", 18446744073709551615ull), {"\"n_routed_experts\"", "<="});
  expect_refused(with("hidden_size", 9223372036854775807ll), {"\"hidden_size\""});
  expect_refused(with("routed_scaling_factor", 1e300), {"\"routed_scaling_factor\"", "float range"});
  expect_refused(with("rope_theta", -1.0), {"rope"});
  expect_refused(with("eos_token_id", 5000), {"eos"});
}

TEST_F(ConfigVariantTest, CompressRatiosLength) {
  // num_hidden_layers (6) + num_nextn_predict_layers (1) = 7 entries.
  expect_refused(with("compress_ratios", {0, 0, 4, 128, 4, 0}), {"compress_ratios", "6 entries", "= 7"});
  expect_refused(with("compress_ratios", {0, 0, 4, 128, 4, 0, 0, 0}), {"compress_ratios", "8 entries"});
  expect_refused(with("num_hidden_layers", 5), {"compress_ratios", "num_hidden_layers"});
  json no_mtp = with("num_nextn_predict_layers", 0);
  expect_refused(no_mtp, {"compress_ratios", "7 entries", "= 6"});
  no_mtp["compress_ratios"] = {0, 0, 4, 128, 4, 0};
  EXPECT_NO_THROW(parse_config(no_mtp.dump(), "variant/config.json"));
  expect_refused(with("compress_ratios", {0, 0, 4, 128, 4, 0, 4}), {"compress_ratios", "MTP"});
  expect_refused(with("num_nextn_predict_layers", 2), {"num_nextn_predict_layers"});
}

TEST_F(ConfigVariantTest, DimensionsTheMathNeeds) {
  expect_refused(with("hidden_size", 200), {"hidden_size", "128"});
  expect_refused(with("q_lora_rank", 100), {"q_lora_rank", "128"});
  expect_refused(with("moe_intermediate_size", 96), {"moe_intermediate_size", "128"});
  expect_refused(with("qk_rope_head_dim", 63), {"qk_rope_head_dim"});
  expect_refused(with("qk_rope_head_dim", 128), {"qk_rope_head_dim"});  // not smaller than head_dim
  expect_refused(with("head_dim", 160), {"head_dim - qk_rope_head_dim", "64"});
  expect_refused(with("num_attention_heads", 3), {"num_attention_heads", "o_groups"});
  expect_refused(with("o_lora_rank", 60), {"o_lora_rank", "128"});
  expect_refused(with("index_head_dim", 96), {"index_head_dim"});
  expect_refused(with("index_head_dim", 32), {"index_head_dim"});  // < qk_rope_head_dim
  expect_refused(with("num_experts_per_tok", 17), {"num_experts_per_tok", "n_routed_experts"});
  expect_refused(with("num_hash_layers", 7), {"num_hash_layers"});
  expect_refused(with("n_shared_experts", 2), {"n_shared_experts"});
  expect_refused(with("hc_mult", 17), {"hc_mult"});
}

TEST_F(ConfigVariantTest, ScoringFunc) {
  expect_refused(with("scoring_func", "relu"), {"\"scoring_func\"", "relu"});
  EXPECT_EQ(parse_config(with("scoring_func", "sigmoid").dump(), "x").score_func, ScoreFunc::kSigmoid);
  EXPECT_EQ(parse_config(with("scoring_func", "softmax").dump(), "x").score_func, ScoreFunc::kSoftmax);
  EXPECT_EQ(parse_config(without("scoring_func").dump(), "x").score_func, ScoreFunc::kSqrtSoftplus);
}

TEST_F(ConfigVariantTest, OptionalFieldsTakeDocumentedDefaults) {
  json j = base_;
  for (const char* k : {"num_nextn_predict_layers", "rms_norm_eps", "expert_dtype", "compress_rope_theta"}) j.erase(k);
  ModelConfig c = parse_config(j.dump(), "x");
  EXPECT_EQ(c.n_mtp_layers, 1);  // spec §1.1: not in inference/config.json → default 1
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FALSE(c.has_expert_dtype);
  EXPECT_EQ(c.compress_rope_theta, c.rope_theta);
}

}  // namespace
}  // namespace dsv4
