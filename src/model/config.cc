#include "model/config.h"

#include <climits>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace dsv4 {

using nlohmann::json;

AttentionKind ModelConfig::attention_kind(int layer) const {
  int r = compress_ratio(layer);
  if (r == 0) return AttentionKind::kWindow;
  return r == 4 ? AttentionKind::kIndexed : AttentionKind::kCompressed;
}

const char* attention_kind_name(AttentionKind k) {
  switch (k) {
    case AttentionKind::kWindow: return "window";
    case AttentionKind::kCompressed: return "HCA";
    case AttentionKind::kIndexed: return "CSA";
  }
  return "?";
}

namespace {

// Every field fits an int: larger values are corruption, and refusing them here keeps the int
// fields below from silently truncating (num_hidden_layers 2^32 + 1 would read as 1).
constexpr int64_t kMaxInt = INT32_MAX;

struct Reader {
  const json& j;
  const std::string& origin;
  std::string prefix = {};  // "rope_scaling." for the nested object, so errors name the full field

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(cat(origin, ": field \"", prefix, key, "\" ", what));
  }
  const json& at(const std::string& key) const {
    if (!j.contains(key)) fail(key, "is missing");
    return j[key];
  }
  int64_t integer(const std::string& key, int64_t min_value, int64_t max_value = kMaxInt) const {
    const json& v = at(key);
    if (!v.is_number_integer()) fail(key, cat("must be an integer, got ", v.dump()));
    // Unsigned values above INT64_MAX would wrap to negative through get<int64_t>().
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(max_value))
      fail(key, cat("must be <= ", max_value, ", got ", v.dump()));
    int64_t x = v.get<int64_t>();
    if (x < min_value) fail(key, cat("must be >= ", min_value, ", got ", x));
    if (x > max_value) fail(key, cat("must be <= ", max_value, ", got ", x));
    return x;
  }
  int64_t integer_or(const std::string& key, int64_t dflt, int64_t min_value, int64_t max_value = kMaxInt) const {
    return j.contains(key) ? integer(key, min_value, max_value) : dflt;
  }
  double number(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number()) fail(key, cat("must be a number, got ", v.dump()));
    double x = v.get<double>();
    if (!std::isfinite(x)) fail(key, cat("must be finite, got ", v.dump()));  // 1e999 parses as inf
    return x;
  }
  double number_or(const std::string& key, double dflt) const { return j.contains(key) ? number(key) : dflt; }
  // For float fields: a double beyond FLT_MAX has no float value (the conversion is undefined).
  float number_f32_or(const std::string& key, double dflt) const {
    double x = number_or(key, dflt);
    if (std::fabs(x) > double(FLT_MAX)) fail(key, cat("is out of float range: ", x));
    return float(x);
  }
};

void require(bool ok, const std::string& origin, const std::string& what) {
  if (!ok) throw Error(cat(origin, ": ", what));
}

}  // namespace

ModelConfig parse_config(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(cat(origin, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw Error(cat(origin, ": config must be a JSON object"));
  Reader r{j, origin};
  ModelConfig c;
  c.vocab_size = r.integer("vocab_size", 1);
  c.dim = r.integer("hidden_size", 1);
  c.moe_inter_dim = r.integer("moe_intermediate_size", 1);
  c.n_layers = int(r.integer("num_hidden_layers", 1));
  c.n_mtp_layers = int(r.integer_or("num_nextn_predict_layers", 1, 0));
  c.n_hash_layers = int(r.integer_or("num_hash_layers", 0, 0));
  c.n_heads = int(r.integer("num_attention_heads", 1));
  c.head_dim = r.integer("head_dim", 1);
  c.rope_head_dim = r.integer("qk_rope_head_dim", 2);
  c.q_lora_rank = r.integer("q_lora_rank", 1);
  c.o_groups = int(r.integer("o_groups", 1));
  c.o_lora_rank = r.integer("o_lora_rank", 1);
  c.n_routed_experts = int(r.integer("n_routed_experts", 1));
  c.n_shared_experts = int(r.integer_or("n_shared_experts", 1, 0));
  c.n_activated_experts = int(r.integer("num_experts_per_tok", 1));
  // Not j.value(): for a non-string it throws nlohmann's type_error, which is not an Error.
  if (j.contains("scoring_func") && !j["scoring_func"].is_string())
    r.fail("scoring_func", cat("must be a string, got ", j["scoring_func"].dump()));
  std::string sf = j.value("scoring_func", std::string("sqrtsoftplus"));
  if (sf == "sqrtsoftplus") c.score_func = ScoreFunc::kSqrtSoftplus;
  else if (sf == "sigmoid") c.score_func = ScoreFunc::kSigmoid;
  else if (sf == "softmax") c.score_func = ScoreFunc::kSoftmax;
  else r.fail("scoring_func", cat("has unsupported value \"", sf, "\" (sqrtsoftplus, sigmoid, softmax)"));
  c.route_scale = r.number_f32_or("routed_scaling_factor", 1.0);
  c.swiglu_limit = r.number_f32_or("swiglu_limit", 0.0);
  c.window_size = int(r.integer("sliding_window", 1));
  c.rope_theta = r.number("rope_theta");
  c.compress_rope_theta = r.number_or("compress_rope_theta", c.rope_theta);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& rs = j["rope_scaling"];
    if (!rs.is_object()) r.fail("rope_scaling", "must be an object");
    Reader rr{rs, origin, "rope_scaling."};
    c.rope_factor = rr.number_or("factor", 1.0);
    c.original_seq_len = rr.integer_or("original_max_position_embeddings", 0, 0);
    c.beta_fast = rr.number_or("beta_fast", 32);
    c.beta_slow = rr.number_or("beta_slow", 1);
  }
  c.index_n_heads = int(r.integer("index_n_heads", 1));
  c.index_head_dim = r.integer("index_head_dim", 1);
  c.index_topk = int(r.integer("index_topk", 1));
  c.hc_mult = int(r.integer("hc_mult", 1));
  c.hc_sinkhorn_iters = int(r.integer("hc_sinkhorn_iters", 1));
  r.at("hc_eps");  // required, unlike the other float fields
  c.hc_eps = r.number_f32_or("hc_eps", 0.0);
  c.norm_eps = r.number_f32_or("rms_norm_eps", 1e-6);
  c.max_position_embeddings = r.integer_or("max_position_embeddings", 1 << 20, 1, INT64_MAX);
  c.bos_token_id = int(r.integer_or("bos_token_id", 0, 0));
  c.eos_token_id = int(r.integer_or("eos_token_id", 1, 0));
  if (j.contains("expert_dtype") && !j["expert_dtype"].is_null()) {
    std::string ed = j["expert_dtype"].is_string() ? j["expert_dtype"].get<std::string>() : "";
    if (ed == "fp4") c.expert_format = ExpertFormat::kFp4;
    else if (ed == "fp8") c.expert_format = ExpertFormat::kFp8;
    else r.fail("expert_dtype", "must be \"fp4\" or \"fp8\"");
    c.has_expert_dtype = true;
  }
  const json& cr = r.at("compress_ratios");
  if (!cr.is_array()) r.fail("compress_ratios", "must be an array");
  for (const json& v : cr) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 20))
      r.fail("compress_ratios", cat("has an invalid entry ", v.dump()));
    c.compress_ratios.push_back(v.get<int>());
  }

  // What the math needs (each check names the reason).
  require(c.n_mtp_layers <= 1, origin, "num_nextn_predict_layers > 1 is not supported (one MTP block)");
  require(c.compress_ratios.size() == size_t(c.n_layers) + size_t(c.n_mtp_layers), origin,
          cat("compress_ratios has ", c.compress_ratios.size(), " entries; expected num_hidden_layers + "
              "num_nextn_predict_layers = ", int64_t(c.n_layers) + c.n_mtp_layers));  // int64: no overflow
  for (int i = c.n_layers; i < c.n_layers + c.n_mtp_layers; ++i)
    require(c.compress_ratios[size_t(i)] == 0, origin, "compress_ratios: the MTP block's (last) entry must be 0");
  require(c.n_shared_experts == 1, origin, "n_shared_experts must be 1 (as in the reference)");
  require(c.n_activated_experts <= c.n_routed_experts, origin, "num_experts_per_tok exceeds n_routed_experts");
  require(c.n_hash_layers <= c.n_layers, origin, "num_hash_layers exceeds num_hidden_layers");
  require(c.rope_head_dim % 2 == 0 && c.rope_head_dim < c.head_dim, origin,
          "qk_rope_head_dim must be even and smaller than head_dim");
  require(c.nope_head_dim() % 64 == 0, origin, "head_dim - qk_rope_head_dim must be a multiple of 64 (KV FP8 blocks)");
  require(c.dim % 128 == 0, origin, "hidden_size must be a multiple of 128 (FP8 activation blocks)");
  require(c.q_lora_rank % 128 == 0, origin, "q_lora_rank must be a multiple of 128 (FP8 activation blocks)");
  require(c.moe_inter_dim % 128 == 0, origin, "moe_intermediate_size must be a multiple of 128 (FP8 activation blocks)");
  require(c.n_heads % c.o_groups == 0, origin, "num_attention_heads must be divisible by o_groups");
  require((c.o_groups * c.o_lora_rank) % 128 == 0, origin, "o_groups * o_lora_rank must be a multiple of 128");
  require(c.index_head_dim >= c.rope_head_dim && (c.index_head_dim & (c.index_head_dim - 1)) == 0 &&
              c.index_head_dim % 32 == 0,
          origin, "index_head_dim must be a power of two >= 32 and >= qk_rope_head_dim (Hadamard, FP4 blocks)");
  require(c.window_size >= 1, origin, "sliding_window must be positive");
  require(c.hc_mult >= 1 && c.hc_mult <= 16, origin, "hc_mult must be in 1..16");
  require(c.rope_theta > 0 && c.compress_rope_theta > 0, origin, "rope thetas must be positive");
  require(c.original_seq_len == 0 || (c.rope_factor > 0 && c.beta_fast > 0 && c.beta_slow > 0), origin,
          "rope_scaling needs positive factor, beta_fast and beta_slow");
  require(c.bos_token_id < c.vocab_size && c.eos_token_id < c.vocab_size, origin, "bos/eos ids exceed vocab_size");
  return c;
}

ModelConfig load_config(const std::string& model_dir) {
  std::filesystem::path p = std::filesystem::path(model_dir) / "config.json";
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) throw Error(cat(model_dir, ": no config.json (is this a model directory?)"));
  return parse_config(read_text_file(p.string()), p.string());
}

}  // namespace dsv4
