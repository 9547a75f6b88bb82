// Session: one sequence on a loaded Model — its token history, main-model state and MTP state.
//
// The engine deals in token ids only; text lives in the tokenizer and the apps. A Session
// prefills in chunks (with progress), decodes, verifies several tokens in one forward (for
// speculative decoding), and can roll back the last unaccepted tokens exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "model/model.h"

namespace dsv4 {

struct SessionOptions {
  int64_t max_context = 0;    // 0 = the config's max_position_embeddings
  int64_t prefill_chunk = 256;
  bool keep_mtp = false;      // maintain the MTP block's state (needed for speculative decoding)
};

// Called during prefill with (tokens done, tokens total).
using PrefillProgressFn = std::function<void(int64_t, int64_t)>;

class Session {
 public:
  Session(const Model& model, SessionOptions options);

  const Model& model() const { return model_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t position() const { return int64_t(tokens_.size()); }
  int64_t max_context() const { return max_context_; }

  // Appends tokens and runs them through the model in chunks. Returns the logits of the last
  // token [vocab]. Throws Error if the context would overflow (nothing is changed then).
  std::span<const float> append(std::span<const int32_t> tokens, const PrefillProgressFn& progress = {});

  // Appends tokens in ONE forward and returns logits for each [n, vocab] (multi-token decode:
  // each row equals what single-token decode would give). Keeps a checkpoint so that
  // `rollback_to` can drop any suffix of these tokens.
  const std::vector<float>& verify(std::span<const int32_t> tokens);
  // Keeps only the first `keep` tokens of the last verify() (re-running them from the checkpoint).
  void rollback_verify(int64_t keep);

  // Logits of the last appended token [vocab]; final hidden streams of the last call [n, hc, dim].
  std::span<const float> last_logits() const;
  const std::vector<float>& last_hidden() const { return out_.hidden; }

  // The MTP draft for the token after `next`: pairs every consumed position the MTP block has
  // not seen yet with its following token (the last one with `next`, the token just chosen
  // after the history), runs the MTP block over those pairs and returns the last row's logits
  // [vocab] — the draft distribution for position()+1. Needs keep_mtp.
  std::span<const float> mtp_draft(int32_t next);

  void reset();
  size_t state_bytes() const { return state_.bytes(); }
  // Everything the session holds: state, token list and the last call's outputs.
  size_t memory_bytes() const;
  // Frees the last call's outputs (logits, hidden streams: a prefill chunk's are MBs at real
  // widths). For stored snapshots, which only need the state: last_logits() is empty until
  // the next append.
  void release_outputs();

 private:
  friend struct SessionFileAccess;  // engine/state_file.cc: saves and restores all of the above
  friend void decode_batch(std::span<Session* const>, std::span<const int32_t>, std::vector<float>*);
  void check_room(int64_t n) const;
  void keep_hidden();

  const Model& model_;
  SessionOptions options_;
  int64_t max_context_ = 0;
  std::vector<int32_t> tokens_;
  SequenceState state_;
  MtpState mtp_;
  ForwardOutput out_, mtp_out_;
  SequenceCheckpoint checkpoint_;
  std::vector<float> unpaired_hidden_;  // [position() − mtp_.pos, hc, dim] final streams the MTP has not consumed
  std::vector<int32_t> verify_tokens_;
};

}  // namespace dsv4
