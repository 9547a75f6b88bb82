// `dsv4 train` (built with DSV4_TRAIN): trains a byte-level BPE tokenizer and a DeepSeek-V4
// model on a plain-text corpus and writes an official-layout checkpoint that `dsv4 run` loads,
// with a CSV log, a loss-curve PNG (gnuplot) and a resumable training state.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "apps/cli/commands.h"
#include "apps/cli/train_bench.h"
#include "core/error.h"
#include "model/synthetic.h"
#include "tokenizer/tokenizer.h"
#include "train/bpe.h"
#include "train/trainer.h"

namespace dsv4::cli {

namespace {

namespace fs = std::filesystem;

struct TrainFlags {
  std::string corpus, val, out, config, preset = "small", resume, anticipatory = "auto";
  int vocab = 4096, threads = 1;
  int64_t save_every = 0, stop_at = 0;
  double val_fraction = 0.05;
  bool no_muon = false, bench = false;
  train::TrainOptions opt;
};

// Built-in architectures; vocab_size comes from the trained tokenizer. "micro" trains in
// seconds (CI); "small" is the golden flash-mini layout (every layer kind).
ModelConfig preset(const std::string& name) {
  ModelConfig c = preset_config("tiny");
  c.n_routed_experts = name == "micro" ? 4 : 16;
  c.n_activated_experts = name == "micro" ? 2 : 6;
  c.moe_inter_dim = 128;
  if (name == "micro") {
    c.dim = 128, c.n_layers = 4, c.n_hash_layers = 1, c.compress_ratios = {0, 4, 16, 0, 0};
    c.n_heads = 2, c.o_groups = 2, c.o_lora_rank = 64, c.index_n_heads = 2, c.index_head_dim = 64;
    c.index_topk = 4, c.window_size = 32;
  } else if (name != "small") {
    throw Error(cat("unknown --preset '", name, "' (micro, small)"));
  }
  return c;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(cat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The held-out text: --val, else the corpus' last val_fraction cut at a line start.
void split_corpus(const TrainFlags& f, std::string* train, std::string* val) {
  *train = read_file(f.corpus, "corpus");
  if (train->empty()) throw Error(cat("the corpus ", f.corpus, " is empty"));
  if (!f.val.empty()) {
    *val = read_file(f.val, "validation text");
    return;
  }
  // In (0, 1), so that cut >= 1 below (NaN fails the test too).
  if (!(f.val_fraction > 0 && f.val_fraction < 1))
    throw Error(cat("--val-fraction must be between 0 and 1 (exclusive), not ", f.val_fraction));
  size_t cut = train->size() - size_t(double(train->size()) * f.val_fraction);
  while (cut < train->size() && (*train)[cut - 1] != '\n') ++cut;
  *val = train->substr(cut);
  train->resize(cut);
}

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids = tok.encode(text);
  ids.push_back(tok.eos_id());  // documents are packed, each ending with EOS
  return ids;
}

std::string fmt_duration(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  return buf;
}

void plot(const std::string& csv, const std::string& png) {
  const std::string script = png + ".gp";
  std::ofstream g(script);
  g << "set terminal pngcairo size 900,540\nset output '" << png << "'\nset datafile separator ','\n"
    << "set xlabel 'step'\nset ylabel 'loss (nats/token)'\nset key autotitle columnhead\nset grid\n"
    << "plot '" << csv << "' using 1:3 with lines title 'train (main)', '' using 1:4 with lines title 'MTP', "
    << "'' using 1:($10 > 0 ? $10 : NaN) with linespoints title 'validation'\n";
  g.close();
  if (std::system(("gnuplot '" + script + "' 2>/dev/null").c_str()) != 0)
    std::fprintf(stderr, "warning: gnuplot failed or is not installed: no %s\n", png.c_str());
  fs::remove(script);
}

train::ArMode anticipatory_mode(const std::string& s) {
  if (s == "auto") return train::ArMode::kAuto;
  if (s == "on") return train::ArMode::kOn;
  if (s == "off") return train::ArMode::kOff;
  throw Error(cat("--anticipatory-routing must be auto, on or off, not '", s, "'"));
}

void run_train(TrainFlags f) {
  if (f.opt.seq_len < 4) throw Error("--seq must be at least 4");
  if (f.opt.batch < 1 || f.opt.steps < 1) throw Error("--batch and --steps must be positive");
  f.opt.anticipatory.mode = anticipatory_mode(f.anticipatory);  // before the tokenizer's training
  if (f.opt.anticipatory.delta < 1 || f.opt.anticipatory.calm < 1 || !(f.opt.anticipatory.sigma > 0))
    throw Error("--ar-delta and --ar-calm must be at least 1 and --ar-sigma positive");
  train::set_threads(f.threads);
  std::string train_text, val_text;
  split_corpus(f, &train_text, &val_text);
  auto t0 = std::chrono::steady_clock::now();
  train::write_tokenizer(train::train_bpe(train_text, f.vocab), f.out);
  const Tokenizer tok = Tokenizer::load(f.out);
  const std::vector<int32_t> ids = encode(tok, train_text), val_ids = encode(tok, val_text);
  std::printf("tokenizer: %d tokens (%.1f s); corpus %zu train / %zu validation tokens\n", tok.vocab_size(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), ids.size(), val_ids.size());

  ModelConfig c = f.config.empty() ? preset(f.preset) : parse_config(read_file(f.config, "config"), f.config);
  c.vocab_size = tok.vocab_size();
  c.bos_token_id = tok.bos_id();
  c.eos_token_id = tok.eos_id();
  c = parse_config(config_json(c), "model config");  // what `dsv4 run` will accept
  f.opt.muon = !f.no_muon;
  TrainBench bench;
  if (f.bench) bench.start();
  train::Trainer t(c, f.opt);
  if (!f.resume.empty()) t.load_state(f.resume);

  const std::string csv_path = (fs::path(f.out) / "train_log.csv").string();
  std::ofstream csv(csv_path, f.resume.empty() ? std::ios::trunc : std::ios::app);
  // ar: 1 where the step's expert selection came from Δt-step-old parameters. Losses with 10
  // digits, so that the spike detector's decisions can be checked from the log.
  if (f.resume.empty()) csv << "step,loss,main_loss,mtp_loss,balance,indexer,lr,grad_norm,tokens_per_s,val_loss,ar\n";
  csv << std::setprecision(10);
  const int64_t print_every = std::max<int64_t>(1, f.opt.steps / 50);
  const int64_t tokens_per_step = f.opt.batch * f.opt.seq_len;
  const auto start = std::chrono::steady_clock::now();
  const int64_t first = t.steps_done();
  const std::string state = (fs::path(f.out) / "train_state.pt").string();
  const int64_t end = f.stop_at > 0 ? std::min(f.stop_at, f.opt.steps) : f.opt.steps;
  while (t.steps_done() < end) {
    const train::StepReport r = t.step(ids);
    bench.add(r, tokens_per_step);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tps = double((r.step - first) * tokens_per_step) / elapsed;
    const bool last = r.step == end;
    const double val = last || r.step % (print_every * 10) == 0 ? t.evaluate(val_ids) : 0.0;
    csv << r.step << ',' << r.loss << ',' << r.main_loss << ',' << r.mtp_loss << ',' << r.balance << ',' << r.indexer
        << ',' << r.lr << ',' << r.grad_norm << ',' << tps << ',' << val << ',' << int(r.anticipatory) << '\n';
    if (r.step % print_every == 0 || last) {
      const double eta = elapsed / double(r.step - first) * double(f.opt.steps - r.step);
      std::printf("step %lld/%lld  loss %.4f (main %.4f, mtp %.4f)  lr %.2e  %.0f tok/s  ETA %s%s%s\n",
                  (long long)r.step, (long long)f.opt.steps, r.loss, r.main_loss, r.mtp_loss, r.lr, tps,
                  fmt_duration(eta).c_str(), val > 0 ? cat("  validation ", val).c_str() : "",
                  r.anticipatory ? "  [anticipatory routing]" : "");
      std::fflush(stdout);
    }
    if (f.save_every > 0 && r.step % f.save_every == 0) t.save_state(state);
  }
  csv.close();
  t.save_state(state);
  t.write_checkpoint(f.out);
  plot(csv_path, (fs::path(f.out) / "loss.png").string());
  const double val = t.evaluate(val_ids);
  std::printf("validation loss %.4f nats/token (perplexity %.2f); checkpoint in %s\n", val, std::exp(val), f.out.c_str());
  if (f.bench) bench.print(c, f.opt, f.threads);
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto f = std::make_shared<TrainFlags>();
  CLI::App* c = app.add_subcommand("train", "Train a tokenizer and a DeepSeek-V4 model on a text corpus");
  c->add_option("--corpus", f->corpus, "UTF-8 text file to train on")->required();
  c->add_option("--out", f->out, "Output directory: checkpoint, tokenizer, train_log.csv, loss.png, train_state.pt")
      ->required();
  c->add_option("--preset", f->preset, "Built-in architecture: micro, small (default)");
  c->add_option("--config", f->config, "config.json of the architecture (vocab_size is the tokenizer's)");
  c->add_option("--vocab", f->vocab, "Tokenizer vocabulary size, added tokens included (default 4096)");
  c->add_option("--val", f->val, "Held-out validation text (default: the last --val-fraction share of the corpus)");
  c->add_option("--val-fraction", f->val_fraction, "Share of the corpus held out when no --val (default 0.05)");
  c->add_option("--steps", f->opt.steps, "Optimizer steps (default 200)");
  c->add_option("--batch", f->opt.batch, "Sequences per step (default 8)");
  c->add_option("--seq", f->opt.seq_len, "Tokens per sequence (default 128)");
  c->add_option("--lr", f->opt.lr, "Peak learning rate (default 3e-3)");
  c->add_option("--mtp-weight", f->opt.mtp_weight, "Weight of the MTP loss (default 0.3; 0 = no MTP)");
  c->add_flag("--no-muon", f->no_muon, "AdamW for every parameter (no Muon)");
  c->add_flag("--qat", f->opt.qat, "Quantization-aware training: FP8 activations/KV/weights, FP4 experts and indexer");
  c->add_option("--seed", f->opt.seed, "Seed of the initial weights and the data order (default 0)");
  c->add_option("--anticipatory-routing", f->anticipatory,
                 "Expert selection from Δt-step-old parameters: auto (on after a loss spike; default), on, off");
  c->add_option("--ar-delta", f->opt.anticipatory.delta, "Anticipatory Routing's Δt in steps (default 2)");
  c->add_option("--ar-sigma", f->opt.anticipatory.sigma,
                "Loss spike: loss > mean + this · std of the last 32 calm losses (default 3)");
  c->add_option("--ar-calm", f->opt.anticipatory.calm, "Calm steps before auto switches it off again (default 20)");
  c->add_option("--threads", f->threads, "Threads (default 1; results are reproducible per thread count)");
  c->add_flag("--bench", f->bench,
              "Report tokens/s, achieved FLOP/s against the measured F32 peak, and peak memory against its formula");
  c->add_option("--resume", f->resume, "Continue from a train_state.pt of the same model and corpus");
  c->add_option("--save-every", f->save_every, "Also write train_state.pt every N steps");
  c->add_option("--stop-at", f->stop_at, "Stop after step N of the --steps schedule (continue later with --resume)");
  c->callback([f] { run_train(*f); });
}

}  // namespace dsv4::cli
