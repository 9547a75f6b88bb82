// Seeded random-mutation fuzzing of the two parsers that read untrusted bytes: the safetensors
// header (parse_safetensors) and config.json (parse_config). A mutated input must either parse
// into something self-consistent or throw dsv4::Error naming its origin — never crash, read out
// of bounds (the sanitizer build checks that), or throw anything else. Seeds are fixed so a
// failure reproduces; iteration counts are sized for a few seconds in CI.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/inventory.h"

namespace dsv4 {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__)
constexpr int kIterScale = 8;  // sanitized code runs ~10x slower; keep the CI time similar
#else
constexpr int kIterScale = 1;
#endif
// A wall-clock cap on top of the fixed counts, so a slow machine degrades coverage, not CI time.
constexpr double kSecondsPerTest = 1.5 * kIterScale;

std::string image(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint8_t(uint64_t(header.size()) >> (8 * i)));
  std::string data(data_bytes, '\0');
  for (size_t i = 0; i < data_bytes; ++i) data[i] = char(i * 37 + 11);
  return out + header + data;
}

// Valid starting points: several dtypes, an empty tensor, metadata, writer-style space padding.
std::vector<std::string> safetensors_seeds() {
  return {
      image(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
            R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"I64","shape":[2],"data_offsets":[32,48]},)"
            R"("d":{"dtype":"I8","shape":[0],"data_offsets":[48,48]},"e":{"dtype":"F8_E4M3","shape":[3,5],"data_offsets":[48,63]}})",
            63),
      image(R"({"layers.0.ffn.experts.0.w1.weight":{"dtype":"I8","shape":[4,8],"data_offsets":[0,32]},)"
            R"("layers.0.ffn.experts.0.w1.scale":{"dtype":"F8_E8M0","shape":[4,1],"data_offsets":[32,36]},)"
            R"("layers.0.ffn.gate.tid2eid":{"dtype":"I64","shape":[3,2],"data_offsets":[36,84]}}      )",
            84),
  };
}

const char kAlphabet[] = "{}[]\":,-+0123456789eE. \\aFIU_8x";
const char* const kNumbers[] = {"0", "1", "-1", "7", "4294967296", "9223372036854775807", "9223372036854775808",
                                "18446744073709551615", "18446744073709551616", "2305843009213693953",
                                "1e308", "1e999", "-0", "0.5", "1E2", "00"};
const char* const kDtypes[] = {"F32", "F16", "BF16", "F8_E4M3", "F8_E8M0", "I8", "U8", "I32", "I64", "F64",
                               "BOOL", "", "f32", "F8_E5M2"};

// Text edits aimed at JSON: structural characters, extreme numbers, other dtypes, repeats.
void mutate_text(std::string* s, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return size_t(rng() % (n ? n : 1)); };
  int edits = 1 + int(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    size_t pos = pick(s->size() + 1);
    switch (rng() % 7) {
      case 0: if (!s->empty()) (*s)[pick(s->size())] = kAlphabet[pick(sizeof kAlphabet - 1)]; break;
      case 1: if (!s->empty()) s->erase(pick(s->size()), 1 + pick(4)); break;
      case 2: s->insert(pos, 1, kAlphabet[pick(sizeof kAlphabet - 1)]); break;
      case 3: {  // replace the number under a random digit by an extreme one
        size_t d = s->find_first_of("0123456789", pos);
        if (d == std::string::npos) break;
        size_t end = s->find_first_not_of("0123456789", d);
        s->replace(d, (end == std::string::npos ? s->size() : end) - d, kNumbers[pick(std::size(kNumbers))]);
        break;
      }
      case 4: {  // swap a dtype
        size_t d = s->find("\"dtype\":\"", pos);
        if (d == std::string::npos) d = s->find("\"dtype\":\"");
        if (d == std::string::npos) break;
        d += 9;
        size_t end = s->find('"', d);
        if (end != std::string::npos) s->replace(d, end - d, kDtypes[pick(std::size(kDtypes))]);
        break;
      }
      case 5: {  // duplicate a slice somewhere else (repeated keys, nested garbage)
        size_t a = pick(s->size()), n = std::min(s->size() - a, 1 + pick(40));
        s->insert(pick(s->size() + 1), s->substr(a, n));
        break;
      }
      default: if (!s->empty()) (*s)[pick(s->size())] ^= char(1u << pick(8)); break;
    }
  }
}

std::string mutate_image(const std::string& seed, std::mt19937_64& rng) {
  std::string s = seed;
  switch (rng() % 6) {
    case 0:  // bit flips anywhere
      for (int k = 1 + int(rng() % 8); k > 0 && !s.empty(); --k) s[rng() % s.size()] ^= char(1u << (rng() % 8));
      break;
    case 1: s.resize(rng() % (s.size() + 1)); break;  // truncation
    case 2: s.insert(rng() % (s.size() + 1), std::string(1 + rng() % 16, char(rng()))); break;
    case 3:  // header length prefix bytes randomised
      for (size_t i = 0; i < 8 && i < s.size(); ++i) s[i] = (rng() % 2) ? char(rng()) : s[i];
      break;
    default: {  // edit the header text and re-encode its length, so the edit reaches validation
      uint64_t len = 0;
      for (int i = 7; i >= 0 && s.size() >= 8; --i) len = (len << 8) | uint8_t(s[size_t(i)]);
      if (s.size() < 8 || len > s.size() - 8) {  // an earlier mutation broke the prefix: just flip a bit
        if (!s.empty()) s[rng() % s.size()] ^= 1;
        break;
      }
      std::string header = s.substr(8, len), data = s.substr(8 + len);
      mutate_text(&header, rng);
      if (rng() % 4 == 0) data.resize(rng() % (data.size() + 16));
      std::string out(8, '\0');
      for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint8_t(uint64_t(header.size()) >> (8 * i)));
      s = out + header + data;
    }
  }
  return s;
}

volatile unsigned g_sink;  // keeps the byte-touching loop below from being optimised away

enum class Outcome { kBug, kRefused, kAccepted };

// Checks one input; kBug (after recording a failure) if the parser misbehaved.
Outcome check_safetensors(const std::string& input, const std::string& origin) {
  // An exact-size heap copy, so any read past the end is caught by AddressSanitizer.
  std::vector<uint8_t> buf(input.begin(), input.end());
  std::vector<TensorView> views;
  try {
    views = parse_safetensors(buf.data(), buf.size(), &origin);
  } catch (const Error& e) {
    if (std::string(e.what()).find(origin) == std::string::npos) {
      ADD_FAILURE() << "error does not name the file: " << e.what();
      return Outcome::kBug;
    }
    return Outcome::kRefused;
  }
  const uint8_t* lo = buf.data();
  const uint8_t* hi = lo + buf.size();
  unsigned sum = 0;
  for (const TensorView& v : views) {
    if (v.data < lo || v.data > hi || v.nbytes > size_t(hi - v.data)) {
      ADD_FAILURE() << "view '" << v.name << "' outside the buffer";
      return Outcome::kBug;
    }
    // numel × element size must equal the byte count exactly (no wrap-around).
    uint64_t n = 1;
    bool ok = true;
    for (int64_t d : v.shape) {
      if (d < 0) ok = false;
      else if (d > 0 && n > v.nbytes / uint64_t(d)) ok = false;  // the product already exceeds the bytes
      else n *= uint64_t(d);
    }
    if (!ok || n * dtype_size(v.dtype) != v.nbytes) {
      ADD_FAILURE() << "view '" << v.name << "' " << v.shape_str() << " does not match its " << v.nbytes << " bytes";
      return Outcome::kBug;
    }
    for (size_t i = 0; i < v.nbytes; ++i) sum += v.data[i];  // touch every byte
  }
  std::vector<const TensorView*> sorted;
  for (const TensorView& v : views)
    if (v.nbytes) sorted.push_back(&v);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->data < b->data; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i - 1]->data + sorted[i - 1]->nbytes > sorted[i]->data) {
      ADD_FAILURE() << "views '" << sorted[i - 1]->name << "' and '" << sorted[i]->name << "' overlap";
      return Outcome::kBug;
    }
  g_sink = sum;
  return Outcome::kAccepted;
}

TEST(FuzzTest, SafetensorsHeaderParser) {
  const std::string origin = "fuzz.safetensors";
  const auto seeds = safetensors_seeds();
  for (const auto& s : seeds) ASSERT_EQ(check_safetensors(s, origin), Outcome::kAccepted);  // valid seeds
  const auto start = Clock::now();
  int runs = 0, accepted = 0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    std::mt19937_64 rng(seed);
    for (int it = 0; it < 25000 / kIterScale; ++it, ++runs) {
      std::string input = mutate_image(seeds[rng() % seeds.size()], rng);
      if (rng() % 3 == 0) input = mutate_image(input, rng);  // stack a second mutation
      const Outcome o = check_safetensors(input, origin);
      ASSERT_NE(o, Outcome::kBug) << "seed " << seed << " iteration " << it;
      accepted += o == Outcome::kAccepted;
    }
    if (std::chrono::duration<double>(Clock::now() - start).count() > kSecondsPerTest) break;
  }
  // Most mutations are refused, but some must survive or the fuzzer only tests the JSON lexer.
  EXPECT_GT(accepted, runs / 100) << runs << " runs";
  RecordProperty("runs", runs);
}

// ---- config.json ----------------------------------------------------------------------------

// A copy of the golden flash-mini config.json (kept here so this unit test needs no ../shared).
const char* const kMiniConfig = R"({
  "architectures": ["DeepseekV4ForCausalLM"], "bos_token_id": 0, "eos_token_id": 1, "expert_dtype": "fp4",
  "hc_eps": 1e-06, "hc_mult": 4, "hc_sinkhorn_iters": 20, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 256, "index_head_dim": 64, "index_n_heads": 4, "index_topk": 8, "max_position_embeddings": 4096,
  "model_type": "deepseek_v4", "moe_intermediate_size": 128, "n_routed_experts": 16, "n_shared_experts": 1,
  "norm_topk_prob": true, "num_attention_heads": 4, "num_experts_per_tok": 6, "num_hidden_layers": 6,
  "num_hash_layers": 2, "num_key_value_heads": 1, "num_nextn_predict_layers": 1, "o_groups": 2,
  "o_lora_rank": 64, "q_lora_rank": 128, "qk_rope_head_dim": 64,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                          "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16, "original_max_position_embeddings": 65536,
                   "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus", "sliding_window": 128,
  "swiglu_limit": 10.0, "tie_word_embeddings": false, "topk_method": "noaux_tc", "vocab_size": 1024,
  "compress_rope_theta": 160000, "compress_ratios": [0, 0, 4, 128, 4, 0, 0]
})";

json random_value(std::mt19937_64& rng) {
  static const json pool[] = {nullptr, true, false, 0, 1, 2, 3, 4, 7, 63, 64, 127, 128, 129, 256, -1, -128,
                              1 << 20, 2147483647, 2147483648u, 4294967297ull, 9223372036854775807ll,
                              18446744073709551615ull, 0.5, -0.0, 1e-6, 1e308, -1e308, 3.4e39, "", "fp8", "fp4",
                              "sigmoid", "softmax", "bogus", json::array(), json::array({0}), json::object()};
  return pool[rng() % std::size(pool)];
}

// Every value's pointer in the document, for structure-aware edits.
void collect(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>* out) {
  if (!at.empty()) out->push_back(at);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) collect(it.value(), at / it.key(), out);
  else if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) collect(j[i], at / i, out);
}

std::string mutate_config(const json& base, const std::string& text, std::mt19937_64& rng) {
  if (rng() % 4 == 0) {  // raw text damage: mostly invalid JSON, sometimes odd strings/numbers
    std::string s = text;
    mutate_text(&s, rng);
    return s;
  }
  json j = base;
  for (int edits = 1 + int(rng() % 3); edits > 0; --edits) {
    std::vector<json::json_pointer> ptrs;
    collect(j, json::json_pointer(), &ptrs);
    if (ptrs.empty()) break;
    const json::json_pointer p = ptrs[rng() % ptrs.size()];
    switch (rng() % 4) {
      case 0: {  // delete the field / element
        json& parent = j[p.parent_pointer()];
        if (parent.is_object()) parent.erase(p.back());
        else if (parent.is_array()) parent.erase(size_t(std::stoul(p.back())));
        break;
      }
      case 1: {  // compress_ratios of a random length with plausible and implausible entries
        json cr = json::array();
        const int n = 7 + int(rng() % 3) - 1;
        for (int i = 0; i < n; ++i) cr.push_back(json::array({0, 4, 128, 1, 3, -4})[rng() % 6]);
        j["compress_ratios"] = cr;
        break;
      }
      default: j[p] = random_value(rng);
    }
  }
  return j.dump();
}

TEST(FuzzTest, ConfigParser) {
  const std::string origin = "fuzz/config.json";
  const json base = json::parse(kMiniConfig);
  ASSERT_NO_THROW(parse_config(kMiniConfig, origin));
  const auto start = Clock::now();
  int runs = 0, accepted = 0;
  for (uint64_t seed = 100; seed < 108; ++seed) {
    std::mt19937_64 rng(seed);
    for (int it = 0; it < 2500 / kIterScale; ++it, ++runs) {
      const std::string text = mutate_config(base, kMiniConfig, rng);
      ModelConfig c;
      try {
        c = parse_config(text, origin);
      } catch (const Error& e) {
        ASSERT_NE(std::string(e.what()).find(origin), std::string::npos) << e.what();
        continue;
      }
      ++accepted;
      // An accepted config must satisfy what the rest of the code relies on.
      ASSERT_EQ(c.compress_ratios.size(), size_t(c.n_layers + c.n_mtp_layers)) << text;
      ASSERT_EQ(c.nope_head_dim() % 64, 0) << text;
      ASSERT_EQ(c.dim % 128, 0) << text;
      ASSERT_EQ(c.n_heads % c.o_groups, 0) << text;
      ASSERT_LE(c.n_activated_experts, c.n_routed_experts) << text;
      for (int l = 0; l < c.n_layers + c.n_mtp_layers; ++l) (void)c.attention_kind(l);
      // The inventory it implies must be well formed (bounded, so a huge expert count from a
      // mutation does not turn the test into an allocation benchmark).
      if ((int64_t(c.n_layers) + 1) * (int64_t(c.n_routed_experts) + 1) <= 4096) {
        for (const TensorSpec& s : expected_tensors(c))
          for (int64_t d : s.shape) ASSERT_GT(d, 0) << s.name << " in\n" << text;
      }
    }
    if (std::chrono::duration<double>(Clock::now() - start).count() > kSecondsPerTest) break;
  }
  EXPECT_GT(accepted, runs / 50) << runs << " runs";
  RecordProperty("runs", runs);
}

}  // namespace
}  // namespace dsv4
