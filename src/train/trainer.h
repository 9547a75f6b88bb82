// Training a DeepSeek-V4 model on a token stream (no torch types here: the CLI includes this).
//
// Each step samples `batch` windows of seq_len + 1 tokens from the packed stream (documents
// joined by EOS), a pure function of (seed, step), so a resumed run sees the same data as an
// uninterrupted one. Loss = CE(main) + mtp_weight · CE(MTP, token s+2) + balance_weight · Σ
// sequence-wise balance losses + the indexers' distillation losses; gradients are clipped, then
// Muon / AdamW update the weights and the balancing biases move (aux-loss-free).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"

namespace dsv4::train {

// Anticipatory Routing (anticipatory.h): off, always on, or switched on by a loss spike.
enum class ArMode { kOff, kOn, kAuto };

struct ArOptions {
  ArMode mode = ArMode::kAuto;
  int64_t delta = 2;   // Δt: the selection comes from the parameters this many steps old
  double sigma = 3.0;  // spike: loss > mean + sigma · std of the recent calm losses
  int64_t calm = 20;   // consecutive calm steps before `auto` switches off again
};

struct TrainOptions {
  int64_t steps = 200;
  int64_t batch = 8;
  int64_t seq_len = 128;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup = -1;          // -1: 5 % of the steps
  double weight_decay = 0.1;
  double clip = 1.0;
  double mtp_weight = 0.3;      // 0: no MTP loss (the ablation)
  double balance_weight = 1e-4;
  double bias_speed = 1e-3;
  bool muon = true;
  bool qat = false;             // FP8/FP4 fake quantization with straight-through gradients
  uint64_t seed = 0;
  ArOptions anticipatory;
};

struct StepReport {
  int64_t step = 0;  // 1-based, after the update
  double loss = 0, main_loss = 0, mtp_loss = 0, balance = 0, indexer = 0;
  double lr = 0, grad_norm = 0;
  double seconds = 0;      // of this step (wall clock)
  double cpu_seconds = 0;  // of this step, all of the process's threads
  bool anticipatory = false;  // this step's expert selection came from Δt-step-old parameters
  double activation_bytes = 0;  // heap the forward added and backward needs (the autograd graph)
};

class Trainer {
 public:
  // A fresh model (init_params from the seed). Throws Error if the config cannot be trained
  // (e.g. a routing function other than sqrt(softplus), or a window-less layout).
  Trainer(const ModelConfig& config, const TrainOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One optimizer step on windows of `tokens` (ids < vocab_size, at least seq_len + 1 of them).
  StepReport step(const std::vector<int32_t>& tokens);
  // Mean main-head cross-entropy (nats/token) over consecutive windows of `tokens`.
  double evaluate(const std::vector<int32_t>& tokens, int64_t max_windows = 64) const;
  int64_t steps_done() const;
  // The expert ids the last step's score-routed layers selected (main blocks in order, then MTP),
  // each [batch, seq, n_activated] flattened row-major, concatenated.
  std::vector<int64_t> last_routing() const;

  // Training state (weights, optimizer moments, step, config) to resume from.
  void save_state(const std::string& path) const;
  // Throws Error if the file is not a state file or belongs to another model config.
  void load_state(const std::string& path);

  // The model as an official-layout checkpoint directory (config.json, FP8/FP4/BF16 weights).
  void write_checkpoint(const std::string& dir) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Threads of the tensor library (results are deterministic for a given count).
void set_threads(int n);

// Throws Error naming the first field of `c` the trainer cannot build a model from.
void check_trainable(const ModelConfig& c);

}  // namespace dsv4::train
