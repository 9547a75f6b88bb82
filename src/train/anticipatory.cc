#include "train/anticipatory.h"

#include <cmath>
#include <random>

#include "core/error.h"

namespace dsv4::train {

torch::Tensor sample_batch(const std::vector<int32_t>& tokens, int64_t batch, int64_t len, uint64_t seed,
                           int64_t step) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(step) * 0xBF58476D1CE4E5B9ull + 1);
  std::uniform_int_distribution<int64_t> start(0, int64_t(tokens.size()) - len);
  torch::Tensor out = torch::empty({batch, len}, torch::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t s = start(rng);
    for (int64_t i = 0; i < len; ++i) o[b * len + i] = tokens[size_t(s + i)];
  }
  return out;
}

std::vector<torch::Tensor> routing_of(const TrainModel& m, const torch::Tensor& batch, bool with_mtp) {
  torch::NoGradGuard no_grad;
  const int64_t S = batch.size(1) - 1;
  const torch::Tensor in = batch.narrow(1, 0, S);
  ForwardTrace trace;
  ForwardResult f = forward(m, in, &trace);
  // The same rows as the training step's MTP pass (trainer.cc).
  if (with_mtp) mtp_forward(m, f.hidden.narrow(1, 0, S - 1), in.narrow(1, 1, S - 1), &trace);
  std::vector<torch::Tensor> out;
  for (const RouteStats& r : trace.routes) out.push_back(r.experts);
  return out;
}

bool SpikeDetector::observe(double loss) {
  if (int(calm_.size()) >= kMinHistory) {
    double mean = 0, var = 0;
    for (double l : calm_) mean += l;
    mean /= double(calm_.size());
    for (double l : calm_) var += (l - mean) * (l - mean);
    const double std = std::sqrt(var / double(calm_.size()));
    if (loss > mean + k_ * std) return true;  // kept out of the history
  }
  calm_.push_back(loss);
  if (int(calm_.size()) > kWindow) calm_.pop_front();
  return false;
}

torch::Tensor SpikeDetector::history() const {
  return torch::tensor(std::vector<double>(calm_.begin(), calm_.end()), torch::kDouble);
}

void SpikeDetector::set_history(const torch::Tensor& h) {
  calm_.clear();
  const torch::Tensor v = h.to(torch::kDouble).contiguous();
  calm_.assign(v.data_ptr<double>(), v.data_ptr<double>() + v.numel());
}

void AnticipatoryRouting::cache(int64_t from, int64_t to, const TrainModel& m, bool with_mtp, const BatchOf& batch_of) {
  for (int64_t s = from; s <= to; ++s)
    if (!cached_.count(s)) cached_[s] = routing_of(m, batch_of(s), with_mtp);
}

std::vector<torch::Tensor> AnticipatoryRouting::routes_for(int64_t step, const TrainModel& m, bool with_mtp,
                                                           const BatchOf& batch_of) {
  if (opt_.mode != ArMode::kAuto) active_ = opt_.mode == ArMode::kOn;  // whatever a resumed state says
  if (!active_) return {};
  cache(step, step + opt_.delta, m, with_mtp, batch_of);
  std::vector<torch::Tensor> routes = std::move(cached_.at(step));
  cached_.erase(cached_.begin(), cached_.upper_bound(step));
  return routes;
}

void AnticipatoryRouting::after_loss(int64_t step, double loss, const TrainModel& m, bool with_mtp,
                                     const BatchOf& batch_of) {
  if (opt_.mode != ArMode::kAuto) return;
  if (detector_.observe(loss)) {
    calm_steps_ = 0;
    if (!active_) cache(step + 1, step + opt_.delta, m, with_mtp, batch_of);
    active_ = true;
  } else if (active_ && ++calm_steps_ >= opt_.calm) {
    active_ = false;
    cached_.clear();
  }
}

void AnticipatoryRouting::save(std::map<std::string, torch::Tensor>* out) const {
  (*out)["ar.flags"] = torch::tensor(std::vector<int64_t>{active_ ? 1 : 0, calm_steps_}, torch::kLong);
  (*out)["ar.history"] = detector_.history();
  for (const auto& [step, routes] : cached_)
    for (size_t i = 0; i < routes.size(); ++i) (*out)[cat("ar.cache.", step, ".", i)] = routes[i];
}

void AnticipatoryRouting::load(const std::map<std::string, torch::Tensor>& in) {
  cached_.clear();
  active_ = false, calm_steps_ = 0;
  detector_.set_history(torch::zeros({0}, torch::kDouble));
  for (const auto& [key, t] : in) {
    if (key == "ar.flags") {
      active_ = t[0].item<int64_t>() != 0, calm_steps_ = t[1].item<int64_t>();
    } else if (key == "ar.history") {
      detector_.set_history(t);
    } else if (key.rfind("ar.cache.", 0) == 0) {
      // "ar.cache.<step>.<layer>": std::map orders "10" before "2", so place by index.
      const std::string rest = key.substr(9);
      const size_t dot = rest.find('.');
      const int64_t step = std::stoll(rest.substr(0, dot));
      const size_t i = std::stoul(rest.substr(dot + 1));
      std::vector<torch::Tensor>& v = cached_[step];
      if (v.size() <= i) v.resize(i + 1);
      v[i] = t;
    }
  }
}

}  // namespace dsv4::train
