// The multi-token-prediction block (spec §6), mirroring the reference `MTPBlock.forward`:
//   e  = enorm(embed[next token]);  Xn_s = hnorm(X_s) per stream
//   X' = e_proj(e) + h_proj(Xn_s)   (broadcast over the hc streams)
//   X' = Block(X');  logits = head(norm(hc_head(X')))  with the MTP's own norm and hc_head.
// X is the main model's final residual streams (before its hc_head).
#include "core/arena.h"
#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/block.h"
#include "model/model.h"
#include "model/numerics.h"
#include "model/trace.h"

namespace dsv4 {

void Model::mtp_forward(MtpState* state, const float* hidden, std::span<const int32_t> next_tokens, LogitsMode logits,
                        ForwardOutput* out, Trace* trace) const {
  if (weights_.mtp.empty()) throw Error("this checkpoint has no MTP block (num_nextn_predict_layers = 0)");
  const MtpWeights& w = weights_.mtp[0];
  ArenaScope scope;
  const int64_t n = int64_t(next_tokens.size()), D = config_.dim, hc = config_.hc_mult;
  Scratch<float> e(size_t(n * D)), ep(size_t(n * D)), hn(size_t(n * hc * D)), hp(size_t(n * hc * D));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = next_tokens[size_t(i)];
    if (t < 0 || t >= config_.vocab_size) throw Error(cat("token id ", t, " outside the vocabulary"));
    kernels::dequant_row(weights_.embed, t, e.data() + i * D);
    kernels::rms_norm(e.data() + i * D, w.enorm.data(), D, config_.norm_eps, e.data() + i * D);
    for (int64_t s = 0; s < hc; ++s)
      kernels::rms_norm(hidden + (i * hc + s) * D, w.hnorm.data(), D, config_.norm_eps, hn.data() + (i * hc + s) * D);
  }
  Scratch<float> eq = gemm_input(e.data(), n, D, numerics_);
  Scratch<float> hq = gemm_input(hn.data(), n * hc, D, numerics_);
  kernels::linear(w.e_proj, eq.data(), n, ep.data(), pool_);
  kernels::linear(w.h_proj, hq.data(), n * hc, hp.data(), pool_);
  out->hidden.resize(size_t(n * hc * D));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < hc; ++s)
      for (int64_t d = 0; d < D; ++d)
        out->hidden[size_t((i * hc + s) * D + d)] = ep[size_t(i * D + d)] + hp[size_t((i * hc + s) * D + d)];

  Segment seg{&state->layer, state->pos, 0, n};
  BlockArgs a{&config_, &w.block, &ropes_[size_t(config_.n_layers)], numerics_, out->hidden.data(),
              next_tokens.data(), n, &seg, 1, trace, "mtp", pool_, cache_.get(), executor_};
  dsv4::block_forward(a);
  if (trace)
    for (int64_t i = 0; i < n; ++i) trace->f32("hidden.mtp", state->pos + i, out->hidden.data() + i * hc * D, hc * D);
  state->pos += n;
  logits_rows(w.hc_head, w.norm, out->hidden.data(), n, logits, &out->logits);
}

}  // namespace dsv4
