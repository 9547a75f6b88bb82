// `dsv4 inspect` and `dsv4 logits`: look at a checkpoint, and compute its logits for given ids
// (the interface for comparing dsv4 with any other implementation).
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "apps/cli/checks.h"
#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "apps/cli/model_loader.h"
#include "io/safetensors_writer.h"
#include "core/error.h"
#include "model/inventory.h"
#include "core/memory_info.h"
#include "model/expert_cache.h"
#include "model/model.h"
#include "model/stream_plan.h"

namespace dsv4::cli {

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return buf;
}

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

// Where `dsv4 run` / `bench` / `serve` would keep this checkpoint's bytes by default, from the
// memory this process may use (issue 16: copied, streamed through an expert cache, or mapped).
void print_memory_plan(const std::string& dir, const Model& model) {
  const StreamPlan plan = plan_residency(dir, Residency::kCopy, 0);
  uint64_t resident = 0, experts = 0;
  for (const auto& [name, t] : model.tensors().tensors()) (is_routed_expert_tensor(name) ? experts : resident) += t.nbytes;
  const uint64_t limit = cgroup_memory_limit();
  std::printf("memory       %s available to this process (%s)\n", human_bytes(double(plan.available)).c_str(),
              limit ? cat("cgroup headroom ", human_bytes(double(limit))).c_str() : "no cgroup limit");
  std::printf("  resident   %s without the routed experts, routed experts %s\n", human_bytes(double(resident)).c_str(),
              human_bytes(double(experts)).c_str());
  const size_t slot = ExpertCache::slot_bytes_for(model.config(), model.weights(), model.tensors());
  const size_t cache = default_cache_bytes(plan.available, resident, experts);
  if (plan.residency == Residency::kCopy)
    std::printf("  default    copied into memory (fits)\n");
  else if (cache > 0)
    std::printf("  default    streamed: %s resident + an expert cache of %s (%zu experts of %s each)\n",
                human_bytes(double(resident)).c_str(), human_bytes(double(cache)).c_str(), slot ? cache / slot : 0,
                human_bytes(double(slot)).c_str());
  else
    std::printf("  default    memory-mapped (even the part without routed experts does not fit)\n");
}

// Parameters a decoded token touches: everything but the unselected routed experts and the
// embedding table (one row), counted from the inventory.
void run_inspect(const std::string& dir, int64_t context) {
  std::unique_ptr<Model> model = Model::load(dir);  // validates config + full inventory
  const ModelConfig& c = model->config();
  std::printf("model        %s\n", dir.c_str());
  std::printf("dims         dim %lld, heads %d x %lld (rope %lld), q_lora %lld, o_groups %d x %lld\n",
              (long long)c.dim, c.n_heads, (long long)c.head_dim, (long long)c.rope_head_dim,
              (long long)c.q_lora_rank, c.o_groups, (long long)c.o_lora_rank);
  std::printf("moe          %d routed experts (top %d, %s) + %d shared, inter %lld, route_scale %g, "
              "swiglu_limit %g, experts %s\n",
              c.n_routed_experts, c.n_activated_experts,
              c.score_func == ScoreFunc::kSqrtSoftplus ? "sqrtsoftplus" : c.score_func == ScoreFunc::kSigmoid ? "sigmoid" : "softmax",
              c.n_shared_experts, (long long)c.moe_inter_dim, c.route_scale, c.swiglu_limit,
              c.expert_format == ExpertFormat::kFp4 ? "FP4" : "FP8");
  std::printf("attention    window %d, indexer %d x %lld top-%d, hc_mult %d, vocab %lld\n", c.window_size,
              c.index_n_heads, (long long)c.index_head_dim, c.index_topk, c.hc_mult, (long long)c.vocab_size);
  std::printf("rope         theta %g (window layers), %g + YaRN x%g from %lld (compressed layers)\n", c.rope_theta,
              c.compress_rope_theta, c.rope_factor, (long long)c.original_seq_len);
  std::printf("layers       %d main + %d MTP\n", c.n_layers, c.n_mtp_layers);
  for (int l = 0; l < c.n_layers + c.n_mtp_layers; ++l) {
    bool mtp = l >= c.n_layers;
    std::printf("  %-8s ratio %-4d %-6s %s\n", mtp ? "mtp.0" : cat("layer ", l).c_str(), c.compress_ratio(l),
                attention_kind_name(c.attention_kind(l)), !mtp && c.is_hash_layer(l) ? "hash-routed" : "score-routed");
  }
  std::map<std::string, std::pair<double, double>> by_kind;
  double params = 0, bytes = 0;
  for (const TensorSpec& s : expected_tensors(c)) {
    double n = double(s.numel());
    if (s.dtype == DType::I8) n *= 2;  // packed FP4 pairs
    by_kind[tensor_kind_name(s.kind)].first += n;
    by_kind[tensor_kind_name(s.kind)].second += double(s.nbytes());
    params += n;
    bytes += double(s.nbytes());
  }
  std::printf("tensors      %zu (inventory validated)\n", model->tensors().tensors().size());
  std::printf("parameters   %s in %s\n", human_count(params).c_str(), human_bytes(bytes).c_str());
  for (const auto& [k, v] : by_kind)
    std::printf("  %-18s %10s params %12s\n", k.c_str(), human_count(v.first).c_str(), human_bytes(v.second).c_str());
  // KV state per token of context: the window ring is fixed; compressed entries grow by 1/ratio.
  for (Numerics n : {Numerics::kReference, Numerics::kPlain}) {
    double fixed = 0;
    const double per_token = kv_bytes_per_token(c, n, &fixed);
    std::printf("kv state     %s fixed + %s per token (%s) -> %s at %lld tokens\n", human_bytes(fixed).c_str(),
                human_bytes(per_token).c_str(),
                n == Numerics::kReference ? "reference: FP8 + F32 rope dims, FP4 indexer keys" : "plain: F32",
                human_bytes(fixed + per_token * double(context)).c_str(), (long long)context);
  }
  print_memory_plan(dir, *model);
}

void run_logits(const std::string& dir, const LoadFlags& ep, const std::string& ids_file, const std::string& numerics, bool mtp,
                int64_t chunk, const std::string& out_path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(ids_file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(ids_file, ": not valid JSON: ", e.what()));
  }
  auto ids = [&](const char* key) {
    std::vector<int32_t> v;
    if (!j.is_object() || !j.contains(key)) return v;
    if (!j[key].is_array()) throw Error(cat(ids_file, ": \"", key, "\" must be an array of token ids"));
    for (const auto& x : j[key]) {
      if (!x.is_number_integer()) throw Error(cat(ids_file, ": \"", key, "\" holds a non-integer ", x.dump()));
      v.push_back(x.get<int32_t>());
    }
    return v;
  };
  std::vector<int32_t> prompt = ids("prompt"), decode = ids("decode");
  if (prompt.empty()) throw Error(cat(ids_file, ": needs a non-empty \"prompt\" array"));
  LoadFlags lf = ep;
  lf.numerics = numerics;
  lf.residency = Residency::kMap;
  std::unique_ptr<Model> model = load_model(dir, lf);
  const ModelConfig& c = model->config();
  if (mtp && c.n_mtp_layers == 0) throw Error("--mtp: this checkpoint has no MTP block");
  const int64_t V = c.vocab_size, stride = c.hc_mult * c.dim, P = int64_t(prompt.size()), T = int64_t(decode.size());
  SequenceState st = model->new_sequence();
  std::vector<float> lp, ld, hidden_p, hidden_d;
  ForwardOutput o;
  if (chunk <= 0) chunk = P;
  for (int64_t s = 0; s < P; s += chunk) {
    int64_t n = std::min(chunk, P - s);
    model->forward(&st, std::span<const int32_t>(prompt.data() + s, size_t(n)), LogitsMode::kAll, &o);
    lp.insert(lp.end(), o.logits.begin(), o.logits.end());
    hidden_p.insert(hidden_p.end(), o.hidden.begin(), o.hidden.end());
  }
  for (int64_t t = 0; t < T; ++t) {
    model->forward(&st, std::span<const int32_t>(decode.data() + t, 1), LogitsMode::kAll, &o);
    ld.insert(ld.end(), o.logits.begin(), o.logits.end());
    hidden_d.insert(hidden_d.end(), o.hidden.begin(), o.hidden.end());
  }
  SafetensorsWriter w;
  w.add_f32("logits.prefill", {P, V}, lp);
  w.add_f32("logits.decode", {T, V}, ld);
  if (mtp) {
    // Row i pairs the final streams at position i with the token at i+1 (spec §6).
    std::vector<int32_t> all(prompt);
    all.insert(all.end(), decode.begin(), decode.end());
    MtpState ms = model->new_mtp_state();
    ForwardOutput mo;
    const int64_t np = std::min<int64_t>(P, int64_t(all.size()) - 1);
    model->mtp_forward(&ms, hidden_p.data(), std::span<const int32_t>(all.data() + 1, size_t(np)), LogitsMode::kAll, &mo);
    w.add_f32("logits.mtp_prefill", {np, V}, mo.logits);
    std::vector<float> md;
    for (int64_t t = 0; t + 1 < T; ++t) {
      model->mtp_forward(&ms, hidden_d.data() + t * stride, std::span<const int32_t>(all.data() + P + t + 1, 1),
                         LogitsMode::kAll, &mo);
      md.insert(md.end(), mo.logits.begin(), mo.logits.end());
    }
    w.add_f32("logits.mtp_decode", {std::max<int64_t>(T - 1, 0), V}, md);
  }
  w.write(out_path);
  std::fprintf(stderr, "wrote %s (%lld prefill + %lld decode positions, numerics %s)\n", out_path.c_str(),
               (long long)P, (long long)T, numerics.c_str());
}

}  // namespace

void add_model_commands(CLI::App& app) {
  auto* inspect = app.add_subcommand("inspect", "Summarise a checkpoint and validate its tensor inventory");
  static std::string dir;
  static int64_t context = 65536;
  inspect->add_option("--model", dir, "Checkpoint directory (config.json + safetensors), 'demo' or 'synthetic'")->required();
  inspect->add_option("--context", context, "Context length for the KV-state estimate")->check(integer_at_least(1));
  inspect->callback([] { run_inspect(resolve_model_dir(dir), context); });

  auto* logits = app.add_subcommand("logits", "Prefill + decode given ids and write the logits as safetensors");
  static std::string ids, numerics = "reference", out;
  static bool mtp = false;
  static int64_t chunk = 0;
  logits->add_option("--model", dir, "Checkpoint directory")->required();
  logits->add_option("--ids", ids, "JSON file {\"prompt\": [ids], \"decode\": [ids]}")->required();
  logits->add_option("--numerics", numerics, "reference (official QAT numerics) or plain")
      ->check(CLI::IsMember({"reference", "plain"}));
  logits->add_flag("--mtp", mtp, "Also run the MTP block (logits.mtp_prefill, logits.mtp_decode)");
  logits->add_option("--chunk", chunk, "Prefill in chunks of N tokens")->check(integer_at_least(1));
  logits->add_option("--out", out, "Output .safetensors path")->required();
  static LoadFlags ep;
  add_expert_parallel_flags(logits, ep);
  logits->callback([] { run_logits(resolve_model_dir(dir), ep, ids, numerics, mtp, chunk, out); });
}

}  // namespace dsv4::cli
