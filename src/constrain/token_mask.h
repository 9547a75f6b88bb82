// Token masks: which tokens of the vocabulary keep a DFA (grammar.h) on a path to acceptance.
//
// The vocabulary is a byte trie in preorder (shared prefixes are walked once); a mask is one
// walk of it from a DFA state, skipping a whole subtree as soon as its prefix leaves the
// automaton. Masks are computed the first time a state is met and cached in the Constraint;
// compiled Constraints are cached by their spec's canonical text (ConstraintCache), so a
// repeated schema costs neither compilation nor cold masks.
//
// Tokens the automaton walks: every byte-level vocabulary entry, plus the added tokens the
// output grammar spells (`｜DSML｜`, `</think>`); other added (control) tokens are never
// allowed, and EOS is allowed exactly in accepting states.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "constrain/grammar.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::constrain {

class Vocabulary {
 public:
  Vocabulary(const Tokenizer& tok, int32_t eos_id);
  int32_t eos() const { return eos_; }
  int32_t size() const { return size_; }
  // The bytes a token stands for in the automaton; empty: never allowed.
  std::string_view bytes(int32_t id) const;

  struct Node {
    uint8_t byte;
    uint16_t depth;     // 1 for a first byte
    int32_t skip;       // the next node outside this one's subtree
    int32_t first_id;   // tokens ending here: ids_[first_id, first_id + n_ids)
    int32_t n_ids;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& ids() const { return ids_; }
  size_t max_depth() const { return max_depth_; }

 private:
  int32_t eos_, size_;
  std::vector<std::string> bytes_;  // [id]
  std::vector<Node> nodes_;
  std::vector<int32_t> ids_;
  size_t max_depth_ = 0;
};

using Mask = std::vector<uint64_t>;  // bit i: token i allowed

class Constraint {
 public:
  Constraint(std::shared_ptr<const Vocabulary> vocab, Dfa dfa);
  int start() const { return dfa_.start(); }
  bool accepting(int state) const { return dfa_.accepting(state); }
  // The state after `token`; -1 if the token is not allowed (EOS counts as not allowed: it ends).
  int advance(int state, int32_t token) const;
  // Allowed tokens in `state`, computed on first use and cached.
  std::shared_ptr<const Mask> mask(int state) const;
  // Sets the logits of disallowed tokens to -inf (ids beyond the vocabulary are disallowed).
  void apply(int state, std::span<float> logits) const;
  size_t states() const { return dfa_.size(); }
  size_t cached_masks() const;
  const Dfa& dfa() const { return dfa_; }

 private:
  Mask compute(int state) const;
  std::shared_ptr<const Vocabulary> vocab_;
  Dfa dfa_;
  mutable std::mutex mu_;
  mutable std::unordered_map<int, std::shared_ptr<const Mask>> masks_;
};

inline constexpr size_t kMaxCachedMasks = 512;  // per constraint (16 KB each for V4: 8 MiB)

// Compiled constraints by GrammarSpec::canonical(), least recently used dropped beyond
// `capacity`. Thread-safe.
class ConstraintCache {
 public:
  ConstraintCache(std::shared_ptr<const Vocabulary> vocab, size_t capacity) : vocab_(std::move(vocab)), capacity_(capacity) {}
  // Throws SchemaError (from build_dfa).
  std::shared_ptr<const Constraint> get(const GrammarSpec& spec);
  size_t size() const;
  int64_t hits() const;

 private:
  std::shared_ptr<const Vocabulary> vocab_;
  size_t capacity_;
  mutable std::mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<const Constraint>>> lru_;  // most recent first
  int64_t hits_ = 0;
};

}  // namespace dsv4::constrain
