#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace dsv4 {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kContext: return "context";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;

int32_t argmax(std::span<const float> v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// Emits `t`; returns false when generation must end (and sets the reason).
struct Emitter {
  const GenerateOptions& o;
  GenerateResult& r;
  bool operator()(int32_t t) {
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), t) != o.stop_tokens.end()) {
      r.finish = FinishReason::kStop;
      return false;
    }
    r.tokens.push_back(t);
    if (o.on_token && !o.on_token(t)) {
      r.finish = FinishReason::kCancelled;
      return false;
    }
    if (int64_t(r.tokens.size()) >= o.max_tokens) {
      r.finish = FinishReason::kLength;
      return false;
    }
    return true;
  }
};

// A streamed checkpoint's reads for the hash-routed experts of x, the token just sampled, start
// now rather than when its forward starts: they overlap the token's callback and, speculating,
// the MTP draft. Not for a token that ends the answer (nothing would use them).
void read_ahead(Session* s, const GenerateOptions& o, const GenerateResult& r, int32_t x) {
  const bool last = std::find(o.stop_tokens.begin(), o.stop_tokens.end(), x) != o.stop_tokens.end() ||
                    int64_t(r.tokens.size()) + 1 >= o.max_tokens || s->position() + 1 >= s->max_context();
  if (!last) s->model().prefetch_experts(std::span<const int32_t>(&x, 1));
}

}  // namespace

GenerateResult generate(Session* s, std::span<const int32_t> prompt, const GenerateOptions& o,
                        const PrefillProgressFn& progress) {
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  if (prompt.empty() && s->position() == 0) throw Error("empty prompt: nothing to continue from");
  if (s->position() + int64_t(prompt.size()) >= s->max_context())
    throw Error(cat("the prompt (", s->position() + int64_t(prompt.size()), " tokens) does not fit the context of ",
                    s->max_context(), " tokens"));
  Sampler sampler(o.sampling);
  if (o.rng_state) sampler.set_rng_state(*o.rng_state);
  const bool greedy = o.sampling.temperature <= 0;
  auto t0 = Clock::now();
  std::vector<float> logits;
  {
    auto l = prompt.empty() ? s->last_logits() : s->append(prompt, progress);
    logits.assign(l.begin(), l.end());
  }
  auto t1 = Clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  r.rng_state = sampler.rng_state();
  if (o.max_tokens <= 0) return r;
  Emitter emit{o, r};
  int32_t x = sampler.sample(logits, s->tokens());
  const int64_t V = s->model().config().vocab_size;
  for (;;) {
    read_ahead(s, o, r, x);
    if (!emit(x)) break;
    if (s->position() + 1 >= s->max_context()) {
      r.finish = FinishReason::kContext;
      break;
    }
    const bool speculate = o.speculative && s->position() + 2 < s->max_context() &&
                           int64_t(r.tokens.size()) + 1 < o.max_tokens;
    if (!speculate) {
      auto l = s->append(std::span<const int32_t>(&x, 1));
      x = sampler.sample(l, s->tokens());
      continue;
    }
    // Draft the token after x with the MTP block; verify [x, draft] in one forward.
    std::vector<int32_t> history(s->tokens());
    history.push_back(x);
    std::span<const float> draft_logits = s->mtp_draft(x);
    std::vector<float> q;
    int32_t d;
    if (greedy) {
      d = argmax(draft_logits);
    } else {
      q = sampler.probabilities(draft_logits, history);
      d = sampler.sample_from(q);
    }
    ++r.drafted;
    const int32_t pair[2] = {x, d};
    const std::vector<float>& ver = s->verify(pair);
    std::span<const float> p0(ver.data(), size_t(V)), p1(ver.data() + V, size_t(V));
    bool accept;
    int32_t next = 0;
    if (greedy) {
      accept = argmax(p0) == d;
      if (!accept) next = argmax(p0);
    } else {
      std::vector<float> p = sampler.probabilities(p0, history);
      accept = q[size_t(d)] > 0 && sampler.uniform() * q[size_t(d)] < p[size_t(d)];
      if (!accept) {
        // Residual distribution max(0, p − q), renormalised.
        double z = 0;
        for (size_t i = 0; i < p.size(); ++i) z += (p[i] = std::max(0.0f, p[i] - q[i]));
        if (z <= 0) p = sampler.probabilities(p0, history);
        else for (float& v : p) v = float(v / z);
        next = sampler.sample_from(p);
      }
    }
    if (accept) {
      ++r.accepted;
      if (!emit(d)) {
        s->rollback_verify(1);  // the draft was emitted but the sequence ends: keep x only in state
        break;
      }
      history.push_back(d);
      x = sampler.sample(p1, history);
    } else {
      s->rollback_verify(1);
      x = next;
    }
  }
  r.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  r.rng_state = sampler.rng_state();
  return r;
}

}  // namespace dsv4
