// Byte automata for constrained decoding: an NFA built from small fragments (literals, byte
// ranges, sequences, alternatives, loops) and the DFA made from it by subset construction.
//
// Everything the server constrains to (a JSON document for a schema, a DSML tool call, the
// thinking section before either) is a regular language over bytes once nesting depth and
// repetition counts are bounded, so one DFA per request shape is enough: a decoding state is
// one int, and token masks are cached per DFA state (token_mask.h).
//
// Two NFA state marks express "the first occurrence ends it", which plain NFAs cannot:
// reaching a `commit` state drops every other thread of the subset (the thinking section ends
// at its first `</think>`), and reaching a `kill` state kills the subset (a forbidden word).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace dsv4::constrain {

// A schema the automaton cannot be built for: unsupported feature, or too large.
class SchemaError : public Error {
 public:
  using Error::Error;
};

class Nfa {
 public:
  struct Frag {
    int in = -1, out = -1;  // entry and exit states; `out` has no outgoing edges yet
  };
  enum class Mark : uint8_t { kNone, kCommit, kKill };

  int add_state();
  void edge(int from, int to, uint8_t lo, uint8_t hi);
  void eps(int from, int to);
  void mark(int state, Mark m) { states_[size_t(state)].mark = m; }

  Frag empty();
  Frag bytes(uint8_t lo, uint8_t hi);
  Frag lit(std::string_view s);
  Frag seq(std::initializer_list<Frag> parts);
  Frag seq(const std::vector<Frag>& parts);
  Frag alt(const std::vector<Frag>& options);
  Frag opt(Frag f);
  Frag star(Frag f);  // zero or more

  size_t size() const { return states_.size(); }

 private:
  friend class Dfa;
  struct Edge {
    uint8_t lo, hi;
    int to;
  };
  struct State {
    std::vector<Edge> edges;
    std::vector<int> eps;
    Mark mark = Mark::kNone;
  };
  std::vector<State> states_;
};

// A deterministic automaton whose every live state can still reach an accepting one (dead
// branches are cut), so a decoder following it can never get stuck.
class Dfa {
 public:
  // Throws SchemaError when the language is empty or the DFA exceeds `max_states`.
  Dfa(const Nfa& nfa, Nfa::Frag whole, size_t max_states);

  int start() const { return 0; }
  // -1: the byte is not allowed in `state`.
  int next(int state, uint8_t byte) const { return trans_[size_t(state) * nclass_ + cls_[byte]]; }
  bool accepting(int state) const { return accept_[size_t(state)]; }
  size_t size() const { return accept_.size(); }
  // Follows `bytes` from `state`; -1 when any is not allowed.
  int walk(int state, std::string_view bytes) const;
  // Whether every byte string accepted from `state` is empty (only the end may follow).
  bool only_end(int state) const;

 private:
  void prune();
  std::vector<uint8_t> cls_ = std::vector<uint8_t>(256);  // byte → equivalence class
  size_t nclass_ = 0;
  std::vector<int32_t> trans_;  // [state][class]
  std::vector<bool> accept_;
};

}  // namespace dsv4::constrain
