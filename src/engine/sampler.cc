#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace dsv4 {

namespace {

// argmax with ties to the lowest id (NaN never wins: the logits were checked finite-or-−inf).
int32_t argmax(std::span<const float> x) {
  size_t best = 0;
  for (size_t i = 1; i < x.size(); ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

void check_logits(std::span<const float> logits) {
  if (logits.empty()) throw Error("sampler: empty logits");
  bool any = false;
  for (float v : logits) {
    if (std::isnan(v) || v == INFINITY) throw Error("sampler: logits contain NaN or +inf");
    any = any || v != -INFINITY;
  }
  if (!any) throw Error("sampler: every logit is -inf");
}

// log_softmax of the raw logits, in double for the sum.
std::vector<float> log_softmax(std::span<const float> x) {
  const float m = x[size_t(argmax(x))];
  double s = 0;
  for (float v : x) s += std::exp(double(v) - m);
  const double lse = double(m) + std::log(s);
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = float(double(x[i]) - lse);
  return out;
}

void fill_info(std::span<const float> logits, int32_t chosen, int top_n, SampleInfo* info) {
  std::vector<float> lp = log_softmax(logits);
  info->logprob = lp[size_t(chosen)];
  info->top.clear();
  const size_t n = std::min(size_t(std::max(top_n, 0)), lp.size());
  if (n == 0) return;
  std::vector<int32_t> ids(lp.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(),
                    [&](int32_t a, int32_t b) { return lp[size_t(a)] > lp[size_t(b)] || (lp[size_t(a)] == lp[size_t(b)] && a < b); });
  for (size_t i = 0; i < n; ++i) info->top.emplace_back(ids[i], lp[size_t(ids[i])]);
}

}  // namespace

std::vector<float> apply_penalties(std::span<const float> logits, std::span<const int32_t> history,
                                   const SamplingParams& p) {
  std::vector<float> out(logits.begin(), logits.end());
  if (p.presence_penalty == 0 && p.frequency_penalty == 0 && p.repetition_penalty == 1) return out;
  std::vector<int32_t> ids(history.begin(), history.end());
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size();) {
    const int32_t id = ids[i];
    size_t j = i;
    while (j < ids.size() && ids[j] == id) ++j;
    if (id < 0 || size_t(id) >= out.size())
      throw Error(cat("sampler: history token id ", id, " is outside the vocabulary of ", out.size()));
    float& l = out[size_t(id)];
    // llama.cpp's order: repetition first (sign-aware so it always lowers the token), then the
    // OpenAI additive penalties.
    l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    l -= p.presence_penalty + p.frequency_penalty * float(j - i);
    i = j;
  }
  return out;
}

Sampler::Sampler(const SamplingParams& params) : p_(params) {
  auto bad = [](const char* field, const std::string& why) { throw Error(cat("sampling: ", field, " ", why)); };
  if (!(p_.temperature >= 0) || !std::isfinite(p_.temperature)) bad("temperature", "must be a finite number >= 0");
  if (p_.top_k < 0) bad("top_k", "must be >= 0 (0 = off)");
  if (!(p_.top_p > 0 && p_.top_p <= 1)) bad("top_p", "must be in (0, 1]");
  if (!(p_.min_p >= 0 && p_.min_p <= 1)) bad("min_p", "must be in [0, 1]");
  if (!(p_.repetition_penalty > 0) || !std::isfinite(p_.repetition_penalty)) bad("repetition_penalty", "must be > 0");
  if (!std::isfinite(p_.presence_penalty)) bad("presence_penalty", "must be finite");
  if (!std::isfinite(p_.frequency_penalty)) bad("frequency_penalty", "must be finite");
  if (p_.top_logprobs < 0) bad("top_logprobs", "must be >= 0");
  // splitmix64 accepts any state; mixing the seed once keeps seeds 0, 1, 2 … far apart.
  state_ = p_.seed ^ 0x5851f42d4c957f2dull;
  next();
}

uint64_t Sampler::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float Sampler::uniform() { return float(next() >> 40) * 0x1p-24f; }

std::vector<float> Sampler::probabilities(std::span<const float> logits, std::span<const int32_t> history) const {
  check_logits(logits);
  std::vector<float> l = apply_penalties(logits, history, p_);
  const size_t V = l.size();
  std::vector<float> prob(V, 0.0f);
  if (p_.temperature == 0) {
    prob[size_t(argmax(l))] = 1;
    return prob;
  }
  // softmax(l / T) in double (small T makes the exponent range wide).
  const double inv_t = 1.0 / double(p_.temperature);
  const double m = double(l[size_t(argmax(l))]) * inv_t;
  std::vector<double> e(V);
  double z = 0;
  for (size_t i = 0; i < V; ++i) z += (e[i] = l[i] == -INFINITY ? 0.0 : std::exp(double(l[i]) * inv_t - m));
  for (double& v : e) v /= z;

  // Candidates in decreasing probability (ties: lower id first). Only as many as the filters
  // can keep get sorted: top-k bounds the count, top-p usually stops within the first few
  // hundred, so partial_sort a growing prefix.
  std::vector<int32_t> ids;
  ids.reserve(V);
  for (size_t i = 0; i < V; ++i)
    if (e[i] > 0) ids.push_back(int32_t(i));
  auto before = [&](int32_t a, int32_t b) { return e[size_t(a)] > e[size_t(b)] || (e[size_t(a)] == e[size_t(b)] && a < b); };
  size_t keep = ids.size();
  if (p_.top_k > 0) keep = std::min(keep, size_t(p_.top_k));
  size_t sorted = 0;
  auto sort_prefix = [&](size_t n) {
    n = std::min(n, ids.size());
    if (n > sorted) {
      std::partial_sort(ids.begin() + std::ptrdiff_t(sorted), ids.begin() + std::ptrdiff_t(n), ids.end(), before);
      sorted = n;
    }
  };
  if (keep < ids.size()) sort_prefix(keep);
  if (p_.top_p < 1) {
    // The smallest prefix whose mass reaches top_p of the (top-k) kept mass; at least one token.
    double total = 1;
    if (keep < ids.size()) {
      total = 0;
      for (size_t i = 0; i < keep; ++i) total += e[size_t(ids[i])];
    }
    const double target = double(p_.top_p) * total;
    double cum = 0;
    size_t n = 0;
    while (n < keep && (n == 0 || cum < target)) {
      if (n == sorted) sort_prefix(std::min(keep, std::max<size_t>(256, 4 * sorted)));
      cum += e[size_t(ids[n++])];
    }
    keep = n;
  }
  if (p_.min_p > 0) {
    sort_prefix(1);
    const double floor = double(p_.min_p) * e[size_t(ids[0])];  // p/p_max survives renormalisation
    if (sorted >= keep) {  // the kept set is sorted: it ends at the first token below the floor
      size_t n = 0;
      while (n < keep && e[size_t(ids[n])] >= floor) ++n;
      keep = n;
    } else {  // nothing was filtered (keep = all candidates): test each, no sort needed
      std::vector<int32_t> kept;
      for (int32_t id : ids)
        if (e[size_t(id)] >= floor) kept.push_back(id);
      ids.swap(kept);
      keep = ids.size();
    }
  }
  double s = 0;
  for (size_t i = 0; i < keep; ++i) s += e[size_t(ids[i])];
  for (size_t i = 0; i < keep; ++i) prob[size_t(ids[i])] = float(e[size_t(ids[i])] / s);
  return prob;
}

int32_t Sampler::sample_from(std::span<const float> probs) {
  double total = 0;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (!(probs[i] >= 0) || std::isinf(probs[i])) throw Error("sampler: probabilities must be finite and >= 0");
    if (probs[i] > 0) total += probs[i], last = int32_t(i);
  }
  if (last < 0) throw Error("sampler: all probabilities are zero");
  const double u = double(next() >> 11) * 0x1p-53 * total;  // [0, total)
  double cum = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    if (u < cum) return int32_t(i);
  }
  return last;  // u within rounding of the total
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history, SampleInfo* info) {
  int32_t id;
  if (p_.temperature == 0) {
    check_logits(logits);
    id = argmax(apply_penalties(logits, history, p_));
  } else {
    id = sample_from(probabilities(logits, history));
  }
  if (info) fill_info(logits, id, p_.top_logprobs, info);
  return id;
}

}  // namespace dsv4
