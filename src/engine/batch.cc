#include "engine/batch.h"

#include "core/error.h"

namespace dsv4 {

void decode_batch(std::span<Session* const> sessions, std::span<const int32_t> tokens, std::vector<float>* logits_out) {
  DSV4_CHECK(sessions.size() == tokens.size(), "decode_batch: one token per session");
  if (sessions.empty()) return;
  const Model& model = sessions[0]->model();
  const int64_t V = model.config().vocab_size;
  for (Session* s : sessions) {
    DSV4_CHECK(&s->model() == &model, "decode_batch: sessions of different models");
    if (s->position() + 1 > s->max_context())
      throw Error(cat("context overflow: a session holds ", s->position(), " of ", s->max_context(), " tokens"));
  }
  // One forward over all sessions: the weights are read once per step for everyone.
  std::vector<Model::BatchItem> items;
  for (size_t i = 0; i < sessions.size(); ++i) items.push_back({&sessions[i]->state_, tokens.subspan(i, 1), LogitsMode::kLast});
  std::vector<ForwardOutput> outs;
  model.forward_batch(items, &outs);
  logits_out->resize(sessions.size() * size_t(V));
  for (size_t i = 0; i < sessions.size(); ++i) {
    Session* s = sessions[i];
    s->tokens_.push_back(tokens[i]);
    s->out_ = std::move(outs[i]);
    s->keep_hidden();
    std::copy(s->out_.logits.begin(), s->out_.logits.end(), logits_out->begin() + int64_t(i) * V);
  }
}

}  // namespace dsv4
