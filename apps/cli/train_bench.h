// `dsv4 train --bench`: training throughput (tokens/s, achieved FLOP/s against the F32 FMA peak
// measured in the same run) and peak memory against the memory formula (train/cost.h).
#pragma once

#include <cstdint>

#include "model/config.h"
#include "train/trainer.h"

namespace dsv4::cli {

class TrainBench {
 public:
  // Call right before the model is built: resets the process's peak-RSS mark (the tokenizer's
  // training before it is not the trainer's memory) and notes the resident baseline.
  void start();
  // Every step's report (the first step, warm-up, is left out of the rate).
  void add(const train::StepReport& r, int64_t tokens_per_step);
  // Prints the report; `threads` is the run's --threads (the peak is measured on as many).
  void print(const ModelConfig& c, const train::TrainOptions& o, int threads) const;

 private:
  double baseline_bytes_ = 0, seconds_ = 0, cpu_seconds_ = 0, max_activations_ = 0;
  int64_t steps_ = 0, tokens_ = 0;
};

}  // namespace dsv4::cli
