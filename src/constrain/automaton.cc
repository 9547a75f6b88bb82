#include "constrain/automaton.h"

#include <algorithm>
#include <map>

namespace dsv4::constrain {

// ---- Nfa ------------------------------------------------------------------------------------

int Nfa::add_state() {
  states_.emplace_back();
  return int(states_.size() - 1);
}

void Nfa::edge(int from, int to, uint8_t lo, uint8_t hi) { states_[size_t(from)].edges.push_back({lo, hi, to}); }
void Nfa::eps(int from, int to) { states_[size_t(from)].eps.push_back(to); }

Nfa::Frag Nfa::empty() {
  const int s = add_state();
  return {s, s};
}

Nfa::Frag Nfa::bytes(uint8_t lo, uint8_t hi) {
  Frag f{add_state(), add_state()};
  edge(f.in, f.out, lo, hi);
  return f;
}

Nfa::Frag Nfa::lit(std::string_view s) {
  Frag f = empty();
  for (char c : s) {
    const int n = add_state();
    edge(f.out, n, uint8_t(c), uint8_t(c));
    f.out = n;
  }
  return f;
}

Nfa::Frag Nfa::seq(std::initializer_list<Frag> parts) { return seq(std::vector<Frag>(parts)); }

Nfa::Frag Nfa::seq(const std::vector<Frag>& parts) {
  if (parts.empty()) return empty();
  for (size_t i = 1; i < parts.size(); ++i) eps(parts[i - 1].out, parts[i].in);
  return {parts.front().in, parts.back().out};
}

Nfa::Frag Nfa::alt(const std::vector<Frag>& options) {
  Frag f{add_state(), add_state()};
  for (const Frag& o : options) {
    eps(f.in, o.in);
    eps(o.out, f.out);
  }
  return f;
}

Nfa::Frag Nfa::opt(Frag f) {
  eps(f.in, f.out);
  return f;
}

Nfa::Frag Nfa::star(Frag f) {
  Frag r{add_state(), add_state()};
  eps(r.in, f.in);
  eps(r.in, r.out);
  eps(f.out, r.in);
  return r;
}

// ---- Dfa ------------------------------------------------------------------------------------

namespace {

using Set = std::vector<int>;

// Epsilon closures, after the commit / kill marks (empty when killed). `seen_` is stamped per
// call instead of cleared: the NFA can have 10^5 states and closures run per DFA edge.
class Closer {
 public:
  Closer(const std::vector<std::vector<int>>& eps, const std::vector<Nfa::Mark>& marks)
      : eps_(eps), marks_(marks), seen_(eps.size()) {}

  Set operator()(Set seeds) {
    Set c = close(std::move(seeds));
    Set commits;
    for (int s : c)
      if (marks_[size_t(s)] == Nfa::Mark::kCommit) commits.push_back(s);
    if (!commits.empty()) c = close(commits);
    for (int s : c)
      if (marks_[size_t(s)] == Nfa::Mark::kKill) return {};
    std::sort(c.begin(), c.end());
    return c;
  }

 private:
  Set close(Set todo) {
    ++stamp_;
    Set out;
    while (!todo.empty()) {
      const int s = todo.back();
      todo.pop_back();
      if (seen_[size_t(s)] == stamp_) continue;
      seen_[size_t(s)] = stamp_;
      out.push_back(s);
      for (int t : eps_[size_t(s)]) todo.push_back(t);
    }
    return out;
  }
  const std::vector<std::vector<int>>& eps_;
  const std::vector<Nfa::Mark>& marks_;
  std::vector<uint32_t> seen_;
  uint32_t stamp_ = 0;
};

}  // namespace

Dfa::Dfa(const Nfa& nfa, Nfa::Frag whole, size_t max_states) {
  // Byte classes: bytes no edge tells apart share a class.
  std::vector<bool> cut(257);
  cut[0] = true;
  for (const auto& st : nfa.states_)
    for (const auto& e : st.edges) cut[e.lo] = cut[size_t(e.hi) + 1] = true;
  std::vector<uint8_t> rep;
  for (int b = 0; b < 256; ++b) {
    if (cut[size_t(b)]) rep.push_back(uint8_t(b));
    cls_[size_t(b)] = uint8_t(rep.size() - 1);
  }
  nclass_ = rep.size();

  std::vector<std::vector<int>> eps(nfa.states_.size());
  std::vector<Nfa::Mark> marks(nfa.states_.size());
  for (size_t i = 0; i < nfa.states_.size(); ++i) {
    eps[i] = nfa.states_[i].eps;
    marks[i] = nfa.states_[i].mark;
  }
  Closer closure(eps, marks);
  std::map<Set, int> ids;
  std::vector<Set> sets;
  auto id_of = [&](Set s) {
    auto [it, fresh] = ids.emplace(s, int(sets.size()));
    if (fresh) {
      if (sets.size() >= max_states)
        throw SchemaError(cat("the constraint needs more than ", max_states, " automaton states; simplify the schema"));
      sets.push_back(std::move(s));
    }
    return it->second;
  };
  Set start = closure({whole.in});
  if (start.empty()) throw SchemaError("the constraint admits no output");
  id_of(std::move(start));
  for (size_t d = 0; d < sets.size(); ++d) {
    for (size_t c = 0; c < nclass_; ++c) {
      const uint8_t b = rep[c];
      Set moved;
      for (int s : sets[d])
        for (const auto& e : nfa.states_[size_t(s)].edges)
          if (e.lo <= b && b <= e.hi) moved.push_back(e.to);
      int target = -1;
      if (!moved.empty()) {
        Set next = closure(std::move(moved));
        if (!next.empty()) target = id_of(std::move(next));
      }
      trans_.push_back(target);
    }
    accept_.push_back(std::binary_search(sets[d].begin(), sets[d].end(), whole.out));
  }
  prune();
}

// Cuts transitions into states from which no accepting state can be reached.
void Dfa::prune() {
  const size_t n = accept_.size();
  std::vector<std::vector<int>> rev(n);
  for (size_t s = 0; s < n; ++s)
    for (size_t c = 0; c < nclass_; ++c)
      if (const int t = trans_[s * nclass_ + c]; t >= 0) rev[size_t(t)].push_back(int(s));
  std::vector<bool> live(n);
  std::vector<int> todo;
  for (size_t s = 0; s < n; ++s)
    if (accept_[s]) live[s] = true, todo.push_back(int(s));
  while (!todo.empty()) {
    const int s = todo.back();
    todo.pop_back();
    for (int p : rev[size_t(s)])
      if (!live[size_t(p)]) live[size_t(p)] = true, todo.push_back(p);
  }
  if (!live[0]) throw SchemaError("the constraint admits no output (every path is cut by a bound)");
  for (auto& t : trans_)
    if (t >= 0 && !live[size_t(t)]) t = -1;
}

int Dfa::walk(int state, std::string_view bytes) const {
  for (char c : bytes) {
    if (state < 0) return -1;
    state = next(state, uint8_t(c));
  }
  return state;
}

bool Dfa::only_end(int state) const {
  for (size_t c = 0; c < nclass_; ++c)
    if (trans_[size_t(state) * nclass_ + c] >= 0) return false;
  return true;
}

}  // namespace dsv4::constrain
