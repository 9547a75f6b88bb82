// What `dsv4 run --save-state/--load-state` and `dsv4 chat --session` keep in a state file
// (engine/state_file.h) besides the session: the conversation so far and where generation
// stopped, stored as the file's JSON application blob.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/generate.h"

namespace dsv4::cli {

struct SavedConversation {
  nlohmann::ordered_json history = nlohmann::ordered_json::array();  // chat messages so far
  // Ids already chosen but not yet run through the session: the last generated token of an
  // answer cut off by -n, or the end-of-sentence token that closes a finished answer.
  std::vector<int32_t> pending;
  bool has_rng = false;  // the sampler's stream after the answer, for a --seed that matches
  uint64_t seed = 0, rng = 0;
};

// Replaces `session` by the file's state; throws Error naming the file and the cause.
SavedConversation load_conversation(Session* session, const std::string& path);
void save_conversation(const Session& session, const SavedConversation& c, const std::string& path);

// Throws Error unless a state file can be created at `path` (checked before a long generation).
void check_can_save(const std::string& path);

// The ids a generate() call chose that `session` has not consumed (see `pending`); `expected`
// is the position the session would have if it had consumed them all.
std::vector<int32_t> unconsumed(const Session& session, int64_t expected, const GenerateResult& r, int32_t eos);

// What a new user turn starts with after `pending`: the pending ids, closed with EOS.
std::vector<int32_t> close_answer(const std::vector<int32_t>& pending, int32_t eos);

}  // namespace dsv4::cli
