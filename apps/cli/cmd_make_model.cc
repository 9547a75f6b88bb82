// `dsv4 make-model`: write a synthetic checkpoint (random weights, official layout) — the tiny
// model of `--model synthetic`, or real-width Flash / Pro models cut to a few layers for benchmarks.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "apps/cli/checks.h"
#include "apps/cli/commands.h"
#include "apps/cli/demo_model.h"
#include "core/error.h"
#include "model/synthetic.h"

namespace dsv4::cli {

namespace {

struct MakeModelFlags {
  std::string preset, out, tokenizer_base;
  uint64_t seed = 0;
  int layers = 0, experts = 0;
  bool no_tokenizer = false, force = false;
};

void run_make_model(const MakeModelFlags& f) {
  namespace fs = std::filesystem;
  const ModelConfig c = preset_config(f.preset, f.layers, f.experts);
  std::error_code ec;
  if (fs::exists(fs::path(f.out) / "config.json", ec)) {
    if (!f.force) throw Error(cat(f.out, " already holds a checkpoint (config.json); pass --force to overwrite it"));
    // Shards of the old checkpoint would linger beside the new ones (their count may differ).
    for (const auto& e : fs::directory_iterator(f.out, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("model", 0) == 0 && e.path().extension() == ".safetensors") fs::remove(e.path(), ec);
    }
  }
  // Fail before writing gigabytes: the tokenizer base must exist, and the disk must hold the model.
  if (!f.no_tokenizer) require_tokenizer_base(f.tokenizer_base);
  const int64_t bytes = synthetic_checkpoint_bytes(c);
  fs::path probe = fs::absolute(f.out, ec);
  while (!probe.empty() && !fs::exists(probe, ec)) probe = probe.parent_path();
  if (!probe.empty()) {
    fs::space_info sp = fs::space(probe, ec);
    if (!ec && sp.available < uintmax_t(bytes))
      throw Error(cat("the checkpoint needs ", double(bytes) / 1e9, " GB but ", probe.string(), " has only ",
                      double(sp.available) / 1e9, " GB free"));
  }
  std::printf("preset %s: dim %lld, %d layers (compress ratios", f.preset.c_str(), (long long)c.dim, c.n_layers);
  for (int r : c.compress_ratios) std::printf(" %d", r);
  std::printf("; last = MTP), %d experts, vocab %lld, seed %llu\n", c.n_routed_experts, (long long)c.vocab_size,
              (unsigned long long)f.seed);
  std::printf("writing %.2f GB of tensors to %s\n", double(bytes) / 1e9, f.out.c_str());
  std::fflush(stdout);
  auto t0 = std::chrono::steady_clock::now();
  write_synthetic_checkpoint(c, f.out, f.seed, stderr_progress());
  if (!f.no_tokenizer) write_tokenizer_files(f.out, f.tokenizer_base);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("done in %.1f s (%.0f MB/s)%s\n", s, double(bytes) / 1e6 / std::max(s, 1e-9),
              f.no_tokenizer ? "; no tokenizer files (--no-tokenizer)" : "");
}

}  // namespace

void add_make_model_commands(CLI::App& app) {
  auto f = std::make_shared<MakeModelFlags>();
  CLI::App* c = app.add_subcommand(
      "make-model", "Write a synthetic checkpoint (random weights, official HF layout) from a seed");
  c->add_option("--preset", f->preset, cat("Model shape: ", kSyntheticPresets,
                                           " (tiny: seconds to make and run; flash/pro: the official widths)"))
      ->required();
  c->add_option("--out", f->out, "Output directory (created if missing)")->required();
  c->add_option("--seed", f->seed, "Random seed; the same seed gives the same bytes")->check(integer_at_least(0));
  c->add_option("--layers", f->layers, "Keep the first N layers of the preset (flash/pro: to fit the machine)")
      ->check(integer_at_least(1));
  c->add_option("--experts", f->experts, "Routed experts per layer (>= 6)")->check(integer_at_least(6));
  c->add_flag("--no-tokenizer", f->no_tokenizer, "Do not write tokenizer.json / tokenizer_config.json");
  c->add_option("--tokenizer-base", f->tokenizer_base,
                "The DeepSeek-V3 base tokenizer.json (default: from scripts/fetch_tokenizer_base.sh)");
  c->add_flag("--force", f->force, "Overwrite an existing checkpoint in --out");
  c->callback([f] { run_make_model(*f); });
}

}  // namespace dsv4::cli
