// `dsv4 bench`: this machine's measured limits, then the model's prefill and decode speed
// against them (issue 5). Decode is memory-bound: its figure of merit is the weight bytes a
// decoded token touches × tokens/s over the measured read bandwidth. Prefill is compute-bound:
// linear-layer FLOPs × tokens/s over the measured dot-product peak of the instructions the
// kernels use (BF16 dot on AVX-512, else F32).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "apps/cli/bench_passes.h"
#include "apps/cli/checks.h"
#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "apps/cli/model_loader.h"
#include "apps/cli/load_flags.h"
#include "core/error.h"
#include "core/memory_info.h"
#include "core/thread_pool.h"
#include "kernels/isa.h"
#include "kernels/linear.h"
#include "kernels/probe.h"
#include "model/expert_cache.h"
#include "model/model.h"

namespace dsv4::cli {

namespace {

struct BenchFlags {
  std::string model, isa;
  LoadFlags load;
  int prompt = 512, gen = 16, context = 0, threads = 0, reps = 3;
  bool json = false, profile = false;
  std::vector<int> batch, verify;  // sequences decoding together; draft lengths
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t linear_bytes(const Linear& l) { return kernels::weight_bytes(l); }
int64_t macs(const Linear& l) { return l.empty() ? 0 : l.out * l.in; }
int64_t vec_bytes(const Vec& v) { return int64_t(v.size()) * 4; }

struct PerToken {
  int64_t bytes = 0;  // weight bytes one decoded token reads
  int64_t macs = 0;   // multiply-adds of one token's matrix products (excluding the head)
};

PerToken per_token(const Model& m) {
  const ModelConfig& c = m.config();
  const Weights& w = m.weights();
  PerToken p;
  auto lin = [&](const Linear& l) { p.bytes += linear_bytes(l), p.macs += macs(l); };
  auto expert = [&](const ExpertWeights& e) { lin(e.w1), lin(e.w2), lin(e.w3); };
  auto hc = [&](const HcWeights& h) { p.bytes += vec_bytes(h.fn), p.macs += int64_t(h.fn.size()); };
  auto comp = [&](const CompressorWeights& cw) { lin(cw.wkv), lin(cw.wgate), p.bytes += vec_bytes(cw.ape) + vec_bytes(cw.norm); };
  for (const BlockWeights& b : w.layers) {
    hc(b.hc_attn), hc(b.hc_ffn);
    const AttentionWeights& a = b.attn;
    lin(a.wq_a), lin(a.wq_b), lin(a.wkv), lin(a.wo_a), lin(a.wo_b);
    p.bytes += vec_bytes(a.q_norm) + vec_bytes(a.kv_norm) + vec_bytes(a.attn_sink) + vec_bytes(b.attn_norm) + vec_bytes(b.ffn_norm);
    if (a.compressor) comp(*a.compressor);
    if (a.indexer) lin(a.indexer->wq_b), lin(a.indexer->weights_proj), comp(a.indexer->compressor);
    lin(b.ffn.gate);
    expert(b.ffn.shared);
    for (int k = 0; k < c.n_activated_experts && !b.ffn.experts.empty(); ++k) expert(b.ffn.experts[0]);
  }
  p.bytes += linear_bytes(w.head) + vec_bytes(w.hc_head.fn) + c.dim * 2;  // + one embedding row
  return p;
}

// What a decode step reads, split into the part every row shares and one routed expert's part.
StepBytes step_bytes(const Model& m, const PerToken& pt) {
  StepBytes s;
  auto expert = [](const ExpertWeights& e) { return linear_bytes(e.w1) + linear_bytes(e.w2) + linear_bytes(e.w3); };
  int64_t routed = 0;
  for (const BlockWeights& b : m.weights().layers) {
    s.shared_expert = expert(b.ffn.shared);
    if (b.ffn.experts.empty()) continue;
    s.expert = expert(b.ffn.experts[0]);
    routed += m.config().n_activated_experts * s.expert;
  }
  s.dense = pt.bytes - routed;
  return s;
}

// Draft lengths to verify, 1 (the decode step the others are set against) first.
std::vector<int> draft_lengths(std::vector<int> ks) {
  ks.push_back(1);
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

// Multiply-adds of the attention itself in a prefill of positions 0 … n−1 (what the per-token
// matrix products above leave out, and what grows with the prompt): per layer, position t and
// head, q·k and p·v over its keys — the window (up to window_size) plus the compressed entries it
// reads (ratio 4: the indexer's top index_topk of the (t+1)/4 complete ones; ratio 128: all
// (t+1)/128) — and the indexer's scoring of every complete ratio-4 entry.
int64_t prefill_attention_macs(const ModelConfig& c, int64_t n) {
  int64_t macs = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const int ratio = c.compress_ratio(l);
    for (int64_t t = 0; t < n; ++t) {
      int64_t keys = std::min<int64_t>(t + 1, c.window_size);
      if (ratio == 4) {
        keys += std::min<int64_t>((t + 1) / 4, c.index_topk);
        macs += int64_t(c.index_n_heads) * c.index_head_dim * ((t + 1) / 4);
      } else if (ratio > 0) {
        keys += (t + 1) / ratio;
      }
      macs += 2 * int64_t(c.n_heads) * c.head_dim * keys;
    }
  }
  return macs;
}

// Whether loading put the routed experts in 16-row tiles (model/weights.h, tile_routed_experts).
bool experts_tiled(const Model& m) {
  for (const BlockWeights& b : m.weights().layers)
    if (!b.ffn.experts.empty()) return b.ffn.experts[0].w1.tiled;
  return false;
}

double rss_gb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::atof(line.c_str() + std::strlen(field)) / 1024.0 / 1024.0;
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

ExpertCacheStats cache_stats(const Model& m) { return m.expert_cache() ? m.expert_cache()->stats() : ExpertCacheStats{}; }

// Expert cache traffic summed over the measured passes of one kind (decode or prefill).
struct IoTotals {
  double uses = 0, loads = 0, used_loads = 0, bytes = 0, wait_s = 0, tokens = 0, predicted = 0, predicted_used = 0;
  double wait_hash_s = 0, busy_s = 0, tile_s = 0, waits = 0, wall_s = 0;  // wall_s: the passes' own time
  double used_bytes = 0, cancelled = 0, depth_s = 0, full_s = 0, head_idle_s = 0;
  void add(const ExpertCacheStats& a, const ExpertCacheStats& b, int n) {
    uses += double(b.uses - a.uses), loads += double(b.loads - a.loads), bytes += double(b.bytes_read - a.bytes_read);
    wait_s += b.wait_s - a.wait_s, tokens += n;
    wait_hash_s += b.wait_hash_s - a.wait_hash_s, busy_s += b.busy_s - a.busy_s, tile_s += b.tile_s - a.tile_s;
    waits += double(b.waits - a.waits);
    predicted += double(b.predicted - a.predicted), predicted_used += double(b.predicted_used - a.predicted_used);
    used_loads += double(b.used_loads - a.used_loads), used_bytes += double(b.used_bytes - a.used_bytes);
    cancelled += double(b.cancelled - a.cancelled);
    depth_s += b.depth_s - a.depth_s, full_s += b.full_s - a.full_s, head_idle_s += b.head_idle_s - a.head_idle_s;
  }
  double prediction_hit_rate() const { return predicted > 0 ? predicted_used / predicted : 0; }
  double hit_rate() const { return uses > 0 ? 1 - used_loads / uses : 0; }
  double per_token(double v) const { return tokens > 0 ? v / tokens : 0; }
  double bytes_per_token() const { return per_token(bytes); }  // every read, wrong guesses included
  double miss_bytes_per_token() const { return per_token(used_bytes); }  // the reads the pass needed
  double wait_per_token() const { return per_token(wait_s); }
  double wait_hash_per_token() const { return per_token(wait_hash_s); }  // in hash-routed layers
  double wait_score_per_token() const { return per_token(wait_s - wait_hash_s); }
  double step_s() const { return per_token(wall_s); }  // mean, where tok/s are medians
  // Where a step's time goes: waiting for reads, else computing (reads overlap the computing).
  double compute_per_token() const { return std::max(0.0, step_s() - wait_per_token()); }
  // Reads in flight for this share of the passes' time, at this rate while they were.
  double disk_busy_fraction() const { return wall_s > 0 ? std::min(1.0, busy_s / wall_s) : 0; }
  double disk_gbs() const { return busy_s > 0 ? bytes / 1e9 / busy_s : 0; }
  double mean_depth() const { return busy_s > 0 ? depth_s / busy_s : 0; }  // reads in flight while busy
  double full_fraction() const { return busy_s > 0 ? std::min(1.0, full_s / busy_s) : 0; }  // of busy, at full depth
  // Tokens/s if nothing but reading the misses took time: disk bandwidth ÷ miss bytes per token
  // (reads of wrongly predicted experts are time lost, not part of the bound).
  double bound(double disk_gbs) const { return miss_bytes_per_token() > 0 ? disk_gbs * 1e9 / miss_bytes_per_token() : 0; }
};

void print_expert_cache(const Model& m, const IoTotals& dec_io, const IoTotals& pre_io, double dec, double probe_gbs) {
  const ExpertCache* cache = m.expert_cache();
  if (!cache) return;
  const ExpertCacheStats all = cache->stats();
  std::printf("  %-34s %10.2f GB\n", "resident (all but routed experts)", double(m.tensors().resident_bytes()) / 1e9);
  std::printf("  %-34s %10.2f GB      (%zu experts, %s, %s on %s)\n", "expert cache", double(cache->capacity_bytes()) / 1e9,
              cache->slots(), cache->policy() == CachePolicy::kLru ? "LRU" : "LFU",
              cache->direct_io() ? "O_DIRECT reads" : "buffered reads", cache->read_engine());
  std::printf("  %-34s %10.1f %%       (decode %.1f %%, prefill %.1f %%)\n", "expert cache hit rate",
              100 * all.hit_rate(), 100 * dec_io.hit_rate(), 100 * pre_io.hit_rate());
  std::printf("  %-34s %10.1f MB/token (misses %.1f MB/token; prefill %.1f MB/token)\n", "disk reads, decode",
              dec_io.bytes_per_token() / 1e6, dec_io.miss_bytes_per_token() / 1e6, pre_io.bytes_per_token() / 1e6);
  std::printf("  %-34s %10.2f GB/s      (up to 1 GB at full read depth, this run; %.2f GB/s over its reads)\n",
              "disk bandwidth (measured)", probe_gbs, all.disk_gbs());
  std::printf("  %-34s %10.1f %%       (%.1f experts read ahead per decoded token, %.1f wrong ones taken back unread)\n",
              "next-layer prediction hit rate", 100 * dec_io.prediction_hit_rate(), dec_io.per_token(dec_io.predicted),
              dec_io.per_token(dec_io.cancelled));
  const double bound = dec_io.bound(probe_gbs > 0 ? probe_gbs : all.disk_gbs());
  std::printf("  %-34s %10.2f tok/s  decode at %.0f %% of it; %.1f ms/token waiting for experts\n",
              "I/O bound (misses / disk bandwidth)", bound, bound > 0 ? 100 * dec / bound : 0,
              1e3 * dec_io.wait_per_token());
  std::printf("  %-34s %10.1f ms       (%.1f computing, waiting %.1f in hash-routed and %.1f in score-routed "
              "layers; reads in flight %.0f %% of it at %.2f GB/s, %.1f at once on average, all %d %.0f %% of that; "
              "none through %.1f ms of the head)\n",
              "decode step, mean", 1e3 * dec_io.step_s(), 1e3 * dec_io.compute_per_token(),
              1e3 * dec_io.wait_hash_per_token(), 1e3 * dec_io.wait_score_per_token(),
              100 * dec_io.disk_busy_fraction(), dec_io.disk_gbs(), dec_io.mean_depth(), cache->read_depth(),
              100 * dec_io.full_fraction(), 1e3 * dec_io.per_token(dec_io.head_idle_s));
}

// Expert parallelism over the whole run (warm-up, decode and prefill together): traffic per token
// per MoE layer, and where rank 0's MoE time went (docs/distributed.md).
nlohmann::ordered_json ep_json(const EpReport& e) {
  nlohmann::ordered_json j;
  const double tl = double(std::max<int64_t>(e.token_layers, 1));
  j["ranks"] = e.ranks;
  j["waves"] = e.waves;
  j["moe_calls"] = e.calls;
  j["token_layers"] = e.token_layers;
  j["bytes_sent_per_token_layer"] = e.bytes_sent / tl;
  j["bytes_received_per_token_layer"] = e.bytes_received / tl;
  j["rank0_local_experts_s"] = e.local_s;
  j["rank0_wait_s"] = e.wait_s;
  j["remote_compute_s"] = e.remote_compute_s;
  j["remote_idle_in_call_s"] = e.remote_idle_s;
  j["remote_span_s"] = e.remote_span_s;
  j["rank0_rss_gb"] = rss_gb("VmRSS:");
  j["max_other_rank_rss_gb"] = e.max_remote_rss_gb;
  return j;
}

void print_ep(const EpReport& e) {
  const double tl = double(std::max<int64_t>(e.token_layers, 1));
  std::printf("  %-34s %10d ranks, %d waves, %lld MoE calls\n", "expert parallel", e.ranks, e.waves,
              (long long)e.calls);
  std::printf("  %-34s %10.0f B sent, %.0f B received (rank 0)\n", "per token per MoE layer", e.bytes_sent / tl,
              e.bytes_received / tl);
  std::printf("  %-34s %10.3f s own experts + shared, %.3f s waiting for the others\n", "rank 0 MoE time", e.local_s,
              e.wait_s);
  std::printf("  %-34s %10.3f s computing, %.3f s waiting for rows inside calls, %.3f s from request to "
              "last output\n", "other ranks (summed)", e.remote_compute_s, e.remote_idle_s, e.remote_span_s);
  std::printf("  %-34s %10.2f GB (the largest other rank: %.2f GB)\n", "rank 0 resident memory", rss_gb("VmRSS:"),
              e.max_remote_rss_gb);
}

void run_bench(const BenchFlags& f) {
  if (!f.isa.empty()) kernels::set_isa(kernels::parse_isa(f.isa));
  // OpenBLAS settings of this environment must not shape a benchmark (machine notes).
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv("OPENBLAS_L2_SIZE");
  const int T = f.threads > 0 ? f.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(T);
  const std::string dir = resolve_model_dir(f.model);

  // 1. Machine limits (measured again in every repetition below: this machine type is shared,
  // and its bandwidth drifts by 2× within minutes, so each speed is set against the limit
  // measured next to it).
  const double f32_peak = kernels::measure_dot_peak(&pool, false);

  // 2. Model.
  double t0 = now_s();
  std::unique_ptr<Model> model = load_model(dir, f.load, &pool);
  const double load_s = now_s() - t0;
  const double load_gbs = double(model->tensors().total_bytes()) / 1e9 / load_s;
  const ModelConfig& c = model->config();
  const PerToken pt = per_token(*model);
  // FLOP per prefilled token: the matrix products plus the prompt's attention, averaged.
  const double attn_flop = 2.0 * double(prefill_attention_macs(c, f.prompt)) / std::max(1, f.prompt);
  const double prefill_flop = 2.0 * double(pt.macs) + attn_flop;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(100, int32_t(std::min<int64_t>(c.vocab_size, 100000)) - 1);
  auto tokens = [&](int n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& t : v) t = tok(rng);
    return v;
  };
  ForwardOutput out;
  // tokens/s of n single-token forwards (median per-token time); their summed time added to *wall
  auto decode = [&](SequenceState* st, int n, double* wall = nullptr) {
    std::vector<double> dt;
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> t1 = tokens(1);
      const double a = now_s();
      model->forward(st, t1, LogitsMode::kLast, &out);
      dt.push_back(now_s() - a);
      if (wall) *wall += dt.back();
    }
    return 1.0 / median(dt);
  };
  // The disk's rate at full read depth, before anything is cached (streaming only): the I/O
  // bound below divides it by the bytes each decoded token misses.
  const double disk_probe_gbs =
      model->expert_cache() ? model->expert_cache()->measure_disk_gbs(size_t(1) << 30) : 0;
  // Warm-up: first touch of the weights (page faults, page cache) is not what we measure.
  {
    SequenceState st = model->new_sequence();
    decode(&st, 2);
  }
  // The bandwidth probe's buffer: 1 GB, less where the memory this process may use (its cgroup
  // limit in a container) is small, so that the probe itself is not what gets OOM-killed.
  const size_t probe_bytes = std::clamp<size_t>(size_t(available_memory() / 8), size_t(64) << 20, size_t(1) << 30);
  IoTotals io_decode, io_prefill;  // expert cache traffic of the measured passes (streaming only)
  std::vector<double> dec_empty, prefill, dec_filled, bws, peaks, frac_dec, frac_decf, frac_pre;
  std::vector<PhaseSample> profiles, prefill_profiles;      // --profile, per repetition
  std::vector<std::vector<BatchSample>> batches, verifies;  // --batch / --verify, per repetition
  const StepBytes sb = step_bytes(*model, pt);
  const std::vector<int> drafts = f.verify.empty() ? std::vector<int>{} : draft_lengths(f.verify);
  const int64_t fill = std::max(f.context, f.prompt);  // the context of --batch and --verify
  double kv_measured = 0, kv_fixed = 0;  // the filled sequence's state; inspect's figure below
  const double kv_per_token = kv_bytes_per_token(c, model->numerics(), &kv_fixed);
  for (int r = 0; r < f.reps; ++r) {
    bws.push_back(kernels::measure_read_bandwidth(&pool, probe_bytes, 3));
    peaks.push_back(kernels::measure_dot_peak(&pool, true));
    SequenceState st = model->new_sequence();
    const ExpertCacheStats before_decode = cache_stats(*model);
    dec_empty.push_back(decode(&st, f.gen, &io_decode.wall_s));
    io_decode.add(before_decode, cache_stats(*model), f.gen);
    SequenceState sp = model->new_sequence();
    std::vector<int32_t> prompt = tokens(f.prompt);
    const ExpertCacheStats before_prefill = cache_stats(*model);
    const double a = now_s();
    model->forward(&sp, prompt, LogitsMode::kLast, &out);
    prefill.push_back(f.prompt / (now_s() - a));
    io_prefill.add(before_prefill, cache_stats(*model), f.prompt);
    for (int64_t left = f.context - f.prompt; left > 0; left -= 512)
      model->forward(&sp, tokens(int(std::min<int64_t>(left, 512))), LogitsMode::kNone, &out);
    dec_filled.push_back(decode(&sp, f.gen));
    kv_measured = double(sp.bytes());
    if (f.profile) profiles.push_back(profile_decode(*model, &sp, f.gen, tokens));
    if (f.profile) prefill_profiles.push_back(profile_prefill(*model, f.prompt, tokens));
    if (!f.batch.empty()) batches.emplace_back();
    for (int n : f.batch) batches.back().push_back(measure_batch(*model, n, fill, f.gen, tokens, sb));
    if (!drafts.empty()) verifies.emplace_back();
    for (int k : drafts) verifies.back().push_back(measure_verify(*model, k, fill, f.gen, tokens, sb));
    frac_dec.push_back(dec_empty.back() * double(pt.bytes) / 1e9 / bws.back());
    frac_decf.push_back(dec_filled.back() * double(pt.bytes) / 1e9 / bws.back());
    frac_pre.push_back(prefill.back() * prefill_flop / 1e9 / peaks.back());
  }
  const double dec = median(dec_empty), pre = median(prefill), decf = median(dec_filled);
  const double bw = median(bws), dot_peak = median(peaks);
  const double dec_gbs = dec * double(pt.bytes) / 1e9;
  const double pre_gflops = pre * prefill_flop / 1e9;
  const int64_t ctx = std::max(f.context, f.prompt) + f.gen;
  // Fractions: medians over repetitions of (speed ÷ the limit measured in that repetition).
  const double fdec = median(frac_dec), fdecf = median(frac_decf), fpre = median(frac_pre);
  const EpReport ep = expert_parallel_report();  // releases the other ranks: measuring is over

  if (f.json) {
    nlohmann::ordered_json j;
    j["model"] = dir;
    j["isa"] = std::string(kernels::isa_name(kernels::active_isa()));
    j["threads"] = T;
    j["numerics"] = f.load.numerics;
    j["read_bandwidth_gbs"] = bw;
    // The limit prefill_peak_fraction is measured against, named for what it is: a BF16 figure
    // only where the kernels have the BF16 dot (AVX-512), else the ISA's F32 arithmetic.
    j["dot_peak_gflops"] = dot_peak;
    j["dot_peak_kind"] = kernels::dot_peak_kind(true);
    if (kernels::active_isa() == kernels::Isa::kAvx512) j["bf16_peak_gflops"] = dot_peak;
    j["f32_peak_gflops"] = f32_peak;
    j["f32_peak_kind"] = kernels::dot_peak_kind(false);
    j["load_s"] = load_s;
    j["load_gbs"] = load_gbs;
    j["weights_copied"] = model->tensors().copied();
    j["experts_tiled"] = experts_tiled(*model);
    j["rss_gb"] = rss_gb("VmRSS:");
    j["rss_peak_gb"] = rss_gb("VmHWM:");
    j["prompt_tokens"] = f.prompt;
    j["prefill_tokens_per_s"] = pre;
    j["prefill_gflops"] = pre_gflops;
    j["prefill_flop_per_token"] = prefill_flop;
    j["prefill_attention_flop_per_token"] = attn_flop;
    j["prefill_peak_fraction"] = fpre;
    j["decode_tokens_per_s"] = dec;
    j["decode_filled_context"] = ctx;
    j["decode_filled_tokens_per_s"] = decf;
    j["decode_bytes_per_token"] = pt.bytes;
    j["decode_gbs"] = dec_gbs;
    j["decode_bandwidth_fraction"] = fdec;
    j["decode_filled_bandwidth_fraction"] = fdecf;
    j["kv_bytes_per_token"] = kv_per_token;
    j["kv_fixed_bytes"] = kv_fixed;
    j["kv_state_bytes"] = kv_measured;
    if (const ExpertCache* cache = model->expert_cache()) {
      const ExpertCacheStats all = cache->stats();
      nlohmann::ordered_json e;
      e["resident_bytes"] = model->tensors().resident_bytes();
      e["cache_bytes"] = cache->capacity_bytes();
      e["cache_experts"] = cache->slots();
      e["direct_io"] = cache->direct_io();
      e["read_engine"] = cache->read_engine();
      e["hit_rate"] = all.hit_rate();
      e["disk_gbs"] = all.disk_gbs();
      e["disk_probe_gbs"] = disk_probe_gbs;
      const double disk = disk_probe_gbs > 0 ? disk_probe_gbs : all.disk_gbs();  // the I/O bound's rate
      e["decode_hit_rate"] = io_decode.hit_rate();
      e["decode_disk_bytes_per_token"] = io_decode.bytes_per_token();
      e["decode_miss_bytes_per_token"] = io_decode.miss_bytes_per_token();
      e["decode_io_bound_tokens_per_s"] = io_decode.bound(disk);
      e["decode_io_bound_fraction"] = io_decode.bound(disk) > 0 ? dec / io_decode.bound(disk) : 0;
      e["decode_prediction_hit_rate"] = io_decode.prediction_hit_rate();
      e["decode_predicted_per_token"] = io_decode.per_token(io_decode.predicted);
      e["decode_cancelled_per_token"] = io_decode.per_token(io_decode.cancelled);
      e["decode_wait_s_per_token"] = io_decode.wait_per_token();
      // Where the rest of a decode step goes (README, "Models larger than memory").
      e["decode_step_s"] = io_decode.step_s();
      e["decode_compute_s_per_token"] = io_decode.compute_per_token();
      e["decode_wait_hash_s_per_token"] = io_decode.wait_hash_per_token();
      e["decode_wait_score_s_per_token"] = io_decode.wait_score_per_token();
      e["decode_disk_busy_fraction"] = io_decode.disk_busy_fraction();
      e["decode_disk_gbs"] = io_decode.disk_gbs();
      e["decode_disk_mean_depth"] = io_decode.mean_depth();
      e["decode_disk_full_fraction"] = io_decode.full_fraction();
      e["decode_disk_idle_in_head_s_per_token"] = io_decode.per_token(io_decode.head_idle_s);
      e["decode_waits_per_token"] = io_decode.per_token(io_decode.waits);
      e["decode_tile_s_per_token"] = io_decode.per_token(io_decode.tile_s);
      e["prefill_hit_rate"] = io_prefill.hit_rate();
      e["prefill_disk_bytes_per_token"] = io_prefill.bytes_per_token();
      j["expert_cache"] = e;
    }
    if (f.profile) j["profile"] = profile_json(profiles, bws);
    if (f.profile) j["prefill_profile"] = profile_json(prefill_profiles, bws);
    if (!f.batch.empty()) j["batch"] = batch_json(f.batch, batches, bws);
    if (!drafts.empty()) j["verify"] = verify_json(drafts, verifies);
    j["repetitions"] = f.reps;
    if (ep.ranks) j["expert_parallel"] = ep_json(ep);
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("dsv4 bench: %s (%s numerics), ISA %s, %d threads\n", dir.c_str(), f.load.numerics.c_str(),
              std::string(kernels::isa_name(kernels::active_isa())).c_str(), T);
  std::printf("  %-34s %10.1f GB/s      (median of %d, %.1f–%.1f)\n", "read bandwidth (measured)", bw, f.reps,
              *std::min_element(bws.begin(), bws.end()), *std::max_element(bws.begin(), bws.end()));
  std::printf("  %-34s %10.1f GFLOP/s   (median of %d; %s)\n", "dot-product peak (measured)", dot_peak, f.reps,
              kernels::dot_peak_kind(true));
  std::printf("  %-34s %10.1f GFLOP/s   (%s)\n", "F32 peak (measured)", f32_peak, kernels::dot_peak_kind(false));
  std::printf("  %-34s %10.2f s       %7.2f GB/s     %s\n", "load time", load_s, load_gbs,
              model->expert_cache()     ? "resident part copied, routed experts streamed"
              : !model->tensors().copied() ? "memory-mapped (--mmap)"
              : experts_tiled(*model)    ? "copied to huge pages (--no-mmap), experts in 16-row tiles"
                                         : "copied to huge pages (--no-mmap)");
  std::printf("  %-34s %10.2f GB (peak %.2f)\n", "resident memory", rss_gb("VmRSS:"), rss_gb("VmHWM:"));
  std::printf("  %-34s %10.1f tok/s  %7.1f GFLOP/s  %5.1f%% of peak\n", cat("prefill (", f.prompt, " tokens)").c_str(), pre,
              pre_gflops, 100 * fpre);
  std::printf("  %-34s %10.2f tok/s  %7.1f GB/s     %5.1f%% of bandwidth\n", "decode (empty context)", dec, dec_gbs,
              100 * fdec);
  std::printf("  %-34s %10.2f tok/s  %7.1f GB/s     %5.1f%% of bandwidth\n", cat("decode (context ", ctx, ")").c_str(),
              decf, decf * double(pt.bytes) / 1e9, 100 * fdecf);
  std::printf("  %-34s %10.1f MB\n", "weight bytes per decoded token", double(pt.bytes) / 1e6);
  std::printf("  %-34s %10.1f MFLOP      (attention %.1f of it)\n", "prefill work per token", prefill_flop / 1e6,
              attn_flop / 1e6);
  std::printf("  %-34s %10.1f B     + %.2f MB fixed; measured %.2f MB at context %lld (predicted %.2f)\n",
              "KV state per token", kv_per_token, kv_fixed / 1e6, kv_measured / 1e6,
              (long long)ctx, (kv_fixed + kv_per_token * double(ctx)) / 1e6);
  print_expert_cache(*model, io_decode, io_prefill, dec, disk_probe_gbs);
  if (f.profile) print_profile(profiles, bws);
  if (f.profile) print_profile(prefill_profiles, bws, cat("prefill of ", f.prompt, " tokens by phase").c_str());
  if (!f.batch.empty()) print_batch(f.batch, batches, bws);
  if (!drafts.empty()) print_verify(drafts, verifies);
  if (ep.ranks) print_ep(ep);
  std::printf("  (speeds: medians of %d repetitions; each %% is the median of speed ÷ the limit measured in the\n"
              "   same repetition)\n", f.reps);
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* c = app.add_subcommand("bench", "Measure memory bandwidth / compute peak, then prefill and decode speed");
  c->add_option("--model", f->model, "Checkpoint directory, 'demo' or 'synthetic'")->required();
  c->add_option("--prompt", f->prompt, "Prefill length in tokens")->check(integer_at_least(1));
  c->add_option("--gen", f->gen, "Decoded tokens per measurement")->check(integer_at_least(1));
  c->add_option("--context", f->context, "Context filled before the second decode measurement (default: --prompt)")
      ->check(integer_at_least(0));
  c->add_option("--threads", f->threads, "Kernel threads (default: all CPUs)")->check(integer_at_least(0));
  c->add_option("--reps", f->reps, "Repetitions (medians are reported)")->check(integer_at_least(1));
  c->add_flag("--profile", f->profile, "Also time a decode step and a prefill by phase (time, bytes, GB/s of each)");
  c->add_option("--batch", f->batch, "Also decode N sequences together, for each N in a comma-separated list (e.g. 1,2,4,8)")
      ->delimiter(',')
      ->check(integer_in(1, 256));
  c->add_option("--verify", f->verify, "Also time multi-token verify forwards of these draft lengths (e.g. 2,4,8)")
      ->delimiter(',')
      ->check(integer_in(1, 256));
  add_load_flags(c, f->load);
  c->add_option("--isa", f->isa, "Force kernels: scalar | avx2 | avx512 (default: best, or $DSV4_ISA)");
  c->add_flag("--json", f->json, "Print one JSON object");
  c->callback([f] { run_bench(*f); });
}

}  // namespace dsv4::cli
