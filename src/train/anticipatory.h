// Anticipatory Routing (V4 report §4.2.3, seed: "Training stability"): at step t the backbone
// runs with the current parameters θ_t, but the routed layers' expert *selection* comes from
// the parameters θ_{t−Δt}; the gate weights of the selected experts still come from θ_t's
// scores, so the router keeps learning. As DeepSeek does, the selection is not computed from
// a stored copy of old weights: at step s the batch of step s+Δt (the data order is a pure
// function of (seed, step)) is run forward once without gradients under θ_s and its selection
// cached. That is the whole network's θ_{t−Δt} — every upstream layer shapes the router's input
// — for one extra no-grad forward per active step and Δt cached index sets.
//
// A loss-spike detector switches it on (`auto`): a step whose loss exceeds mean + k·std of the
// recent calm losses; it switches off after `calm` consecutive calm steps.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "train/forward.h"
#include "train/trainer.h"

namespace dsv4::train {

// Window starts of step `step`: a pure function of (seed, step), so resuming replays the data
// and Anticipatory Routing can run a later step's batch ahead of time.
torch::Tensor sample_batch(const std::vector<int32_t>& tokens, int64_t batch, int64_t len, uint64_t seed,
                           int64_t step);

// The expert selection of every score-routed layer (main blocks in order, then the MTP block
// when with_mtp) that m's current parameters give a batch [B, S+1] of a training step: the
// selections the step's forward would make. No gradients.
std::vector<torch::Tensor> routing_of(const TrainModel& m, const torch::Tensor& batch, bool with_mtp);

// loss > mean + k·std of the last kWindow calm losses (population std; at least kMinHistory of
// them). A spike's loss does not enter the history.
class SpikeDetector {
 public:
  static constexpr int kWindow = 32, kMinHistory = 8;
  explicit SpikeDetector(double k) : k_(k) {}
  // Records the loss of one step; true when it is a spike.
  bool observe(double loss);
  // History for the training state file ([n] F64) and back.
  torch::Tensor history() const;
  void set_history(const torch::Tensor& h);

 private:
  double k_;
  std::deque<double> calm_;
};

// Step s's batch [B, S+1] (sample_batch with the run's seed and corpus).
using BatchOf = std::function<torch::Tensor(int64_t step)>;

// The switch and the cache of selections computed ahead of time.
class AnticipatoryRouting {
 public:
  explicit AnticipatoryRouting(const ArOptions& o) : opt_(o), detector_(o.sigma) {}
  bool active() const { return active_; }
  // Before step `step`'s forward, with θ_step current: when active, this step's cached
  // selections, after caching the one of step + Δt from θ_step (on a switch-on, this step's and
  // every one up to step + Δt). Empty when inactive.
  std::vector<torch::Tensor> routes_for(int64_t step, const TrainModel& m, bool with_mtp, const BatchOf& batch_of);
  // After step `step`'s loss, before its update (θ_step still current): feeds the detector;
  // on a spike in `auto` switches on, caching steps step+1 … step+Δt from θ_step.
  void after_loss(int64_t step, double loss, const TrainModel& m, bool with_mtp, const BatchOf& batch_of);

  // State for the training state file ("ar.*" entries) and back.
  void save(std::map<std::string, torch::Tensor>* out) const;
  void load(const std::map<std::string, torch::Tensor>& in);

 private:
  void cache(int64_t from, int64_t to, const TrainModel& m, bool with_mtp, const BatchOf& batch_of);
  ArOptions opt_;
  SpikeDetector detector_;
  bool active_ = false;
  int64_t calm_steps_ = 0;
  std::map<int64_t, std::vector<torch::Tensor>> cached_;  // step → selections
};

}  // namespace dsv4::train
