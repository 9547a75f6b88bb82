#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <malloc.h>
#include <time.h>

#include "core/error.h"
#include "model/synthetic.h"
#include "train/anticipatory.h"
#include "train/export.h"
#include "train/forward.h"
#include "train/optim.h"

// Present when libblas.so.3 is OpenBLAS (weak: the reference BLAS has no threads).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace dsv4::train {

namespace {

namespace F = torch::nn::functional;

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets) {
  return F::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape(-1));
}

// Bytes of heap in use (glibc; libtorch's CPU tensors are malloc'd): the activation measurement.
double heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return double(mi.uordblks + mi.hblkhd);
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

OptimConfig optim_config(const TrainOptions& o) {
  OptimConfig oc;
  oc.lr = o.lr;
  oc.weight_decay = o.weight_decay;
  oc.muon = o.muon;
  return oc;
}

}  // namespace

void check_trainable(const ModelConfig& c) {
  if (c.score_func != ScoreFunc::kSqrtSoftplus) throw Error("train: only scoring_func sqrtsoftplus is supported");
  if (c.n_mtp_layers > 1) throw Error("train: num_nextn_predict_layers must be 0 or 1");
  if (c.window_size <= 0) throw Error("train: sliding_window must be positive");
  for (int r : c.compress_ratios)
    if (r != 0 && r != 4 && r < 2) throw Error(cat("train: compress ratio ", r, " is not trainable"));
  if (c.index_head_dim & (c.index_head_dim - 1)) throw Error("train: index_head_dim must be a power of two (Hadamard)");
  // (QAT's 128-wide activation blocks need what parse_config already demands of a checkpoint.)
}

void set_threads(int n) {
  torch::set_num_threads(std::max(1, n));
  // libtorch's BLAS (OpenBLAS through Debian's libblas.so.3 alternative) keeps its own thread
  // count, and its sums depend on it.
  if (openblas_set_num_threads) openblas_set_num_threads(std::max(1, n));
}

struct Trainer::Impl {
  TrainOptions opt;
  TrainModel model;
  Optimizer optim;
  AnticipatoryRouting routing;
  std::vector<torch::Tensor> last_routes;
  Impl(const ModelConfig& c, const TrainOptions& o)
      : opt(o), model(c, init_params(c, o.seed, torch::kFloat)), optim(&model.params, optim_config(o)),
        routing(o.anticipatory) {
    enable_grad(&model.params);
    model.qat = o.qat;
  }
};

Trainer::Trainer(const ModelConfig& config, const TrainOptions& options) {
  check_trainable(config);
  impl_ = std::make_unique<Impl>(config, options);
}

Trainer::~Trainer() = default;

int64_t Trainer::steps_done() const { return impl_->optim.steps_taken(); }

std::vector<int64_t> Trainer::last_routing() const {
  std::vector<int64_t> out;
  for (const torch::Tensor& e : impl_->last_routes) {
    const torch::Tensor v = e.to(torch::kLong).contiguous();
    out.insert(out.end(), v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel());
  }
  return out;
}

StepReport Trainer::step(const std::vector<int32_t>& tokens) {
  Impl& I = *impl_;
  const TrainOptions& o = I.opt;
  const ModelConfig& c = I.model.config;
  const auto t0 = std::chrono::steady_clock::now();
  const double cpu0 = process_cpu_seconds();
  const int64_t S = o.seq_len, step = I.optim.steps_taken();
  if (int64_t(tokens.size()) < S + 1) throw Error(cat("train: the corpus has ", tokens.size(), " tokens, fewer than seq_len + 1 = ", S + 1));
  const BatchOf batch_of = [&](int64_t s) { return sample_batch(tokens, o.batch, S + 1, o.seed, s); };
  const torch::Tensor batch = batch_of(step);
  const torch::Tensor in = batch.narrow(1, 0, S);
  const bool with_mtp = o.mtp_weight > 0 && c.n_mtp_layers > 0;

  StepReport r;
  const double heap_before = heap_in_use();
  ForwardTrace trace;
  trace.forced_experts = I.routing.routes_for(step, I.model, with_mtp, batch_of);
  r.anticipatory = !trace.forced_experts.empty();
  ForwardResult f = forward(I.model, in, &trace);
  torch::Tensor main = cross_entropy(f.logits, batch.narrow(1, 1, S));
  torch::Tensor loss = main;
  r.main_loss = main.item<double>();
  if (with_mtp) {
    // Row s of the MTP block carries token s+1 and predicts token s+2.
    torch::Tensor mtp = mtp_forward(I.model, f.hidden.narrow(1, 0, S - 1), in.narrow(1, 1, S - 1), &trace);
    torch::Tensor mtp_loss = cross_entropy(mtp, batch.narrow(1, 2, S - 1));
    r.mtp_loss = mtp_loss.item<double>();
    loss = loss + o.mtp_weight * mtp_loss;
  }
  torch::Tensor balance = torch::zeros({}, f.logits.options());
  for (const RouteStats& rs : trace.routes) balance = balance + balance_loss(rs, c.n_routed_experts);
  r.balance = balance.item<double>();
  loss = loss + o.balance_weight * balance;
  torch::Tensor indexer = torch::zeros({}, f.logits.options());
  for (const IndexerStats& is : trace.indexers) indexer = indexer + indexer_loss(is);
  r.indexer = indexer.item<double>();
  loss = loss + indexer;  // reaches only the indexers (their inputs are detached)
  r.loss = loss.item<double>();
  if (!std::isfinite(r.loss)) throw Error(cat("train: the loss became ", r.loss, " at step ", step + 1, " (lower --lr?)"));
  r.activation_bytes = heap_in_use() - heap_before;
  I.routing.after_loss(step, r.loss, I.model, with_mtp, batch_of);  // θ_step is still current
  I.last_routes.clear();
  for (const RouteStats& rs : trace.routes) I.last_routes.push_back(rs.experts);

  for (auto& [name, t] : I.model.params.tensors)
    if (t.grad().defined()) t.mutable_grad().zero_();
  loss.backward();
  r.grad_norm = clip_gradients(&I.model.params, o.clip);
  const int64_t warmup = o.warmup >= 0 ? o.warmup : std::max<int64_t>(1, o.steps / 20);
  r.lr = lr_at(step, o.steps, warmup, o.lr, o.min_lr_ratio);
  I.optim.step(r.lr);
  for (const RouteStats& rs : trace.routes) update_balance_bias(&I.model.params, rs, c.n_routed_experts, o.bias_speed);
  r.step = step + 1;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.cpu_seconds = process_cpu_seconds() - cpu0;
  return r;
}

double Trainer::evaluate(const std::vector<int32_t>& tokens, int64_t max_windows) const {
  torch::NoGradGuard no_grad;
  const int64_t S = impl_->opt.seq_len;
  const int64_t windows = std::min<int64_t>(max_windows, (int64_t(tokens.size()) - 1) / S);
  if (windows <= 0) throw Error(cat("train: validation text has ", tokens.size(), " tokens, fewer than seq_len + 1"));
  double sum = 0;
  for (int64_t w = 0; w < windows; ++w) {
    torch::Tensor ids = torch::empty({1, S + 1}, torch::kLong);
    for (int64_t i = 0; i <= S; ++i) ids[0][i] = tokens[size_t(w * S + i)];
    ForwardResult f = forward(impl_->model, ids.narrow(1, 0, S));
    sum += cross_entropy(f.logits, ids.narrow(1, 1, S)).item<double>();
  }
  return sum / double(windows);
}

void Trainer::save_state(const std::string& path) const {
  torch::serialize::OutputArchive a;
  a.write("dsv4.config", c10::IValue(config_json(impl_->model.config)));
  a.write("dsv4.step", torch::tensor(impl_->optim.steps_taken(), torch::kLong));
  for (const auto& [name, t] : impl_->model.params.tensors) a.write("param." + name, t.detach());
  for (const auto& [name, t] : impl_->optim.state()) a.write("optim." + name, t);
  std::map<std::string, torch::Tensor> routing;
  impl_->routing.save(&routing);
  for (const auto& [name, t] : routing) a.write(name, t);
  const std::string tmp = path + ".tmp";
  a.save_to(tmp);
  std::filesystem::rename(tmp, path);  // never a half-written state under the real name
}

void Trainer::load_state(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw Error(cat("resume: ", path, " is not a file"));
  torch::serialize::InputArchive a;
  try {
    a.load_from(path);
  } catch (const c10::Error&) {
    throw Error(cat("resume: ", path, " is not a dsv4 training state"));
  }
  c10::IValue config;
  if (!a.try_read("dsv4.config", config) || !config.isString())
    throw Error(cat("resume: ", path, " is not a dsv4 training state"));
  if (config.toStringRef() != config_json(impl_->model.config))
    throw Error(cat("resume: ", path, " holds the state of another model (its config.json differs from this run's)"));
  torch::NoGradGuard no_grad;
  torch::Tensor step;
  a.read("dsv4.step", step);
  for (auto& [name, t] : impl_->model.params.tensors) {
    torch::Tensor v;
    a.read("param." + name, v);
    t.copy_(v);
  }
  impl_->optim.state().clear();
  std::map<std::string, torch::Tensor> routing;
  for (const std::string& key : a.keys()) {
    const bool optim = key.rfind("optim.", 0) == 0;
    if (!optim && key.rfind("ar.", 0) != 0) continue;
    torch::Tensor v;
    a.read(key, v);
    if (optim) impl_->optim.state()[key.substr(6)] = v;
    else routing[key] = v;
  }
  impl_->routing.load(routing);
  impl_->optim.set_steps_taken(step.item<int64_t>());
}

void Trainer::write_checkpoint(const std::string& dir) const {
  ExportTensors out;
  for (const auto& [name, t] : impl_->model.params.tensors) {
    torch::Tensor v = t.detach().contiguous();
    if (v.scalar_type() == torch::kLong) out.ids[name].assign(v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel());
    else {
      v = v.to(torch::kFloat).contiguous();
      out.values[name].assign(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
    }
  }
  dsv4::train::write_checkpoint(impl_->model.config, out, dir);
}

}  // namespace dsv4::train
