// Batched decoding: one step for several sessions at once. Each session appends one token and
// gets the logits of that token, exactly as a single-session append() would give them (the
// kernels are batch-invariant: a row's result does not depend on the other rows).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/session.h"

namespace dsv4 {

// sessions[i] appends tokens[i]; logits_out receives [n, vocab] (row i for session i).
// All sessions must belong to the same Model; throws Error on context overflow (before any
// session is changed).
void decode_batch(std::span<Session* const> sessions, std::span<const int32_t> tokens, std::vector<float>* logits_out);

}  // namespace dsv4
