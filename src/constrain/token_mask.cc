#include "constrain/token_mask.h"

#include <algorithm>
#include <cmath>

namespace dsv4::constrain {

// ---- Vocabulary -----------------------------------------------------------------------------

Vocabulary::Vocabulary(const Tokenizer& tok, int32_t eos_id) : eos_(eos_id), size_(tok.vocab_size()) {
  bytes_.resize(size_t(size_));
  for (int32_t id = 0; id < size_; ++id)
    if (!tok.is_added(id)) bytes_[size_t(id)] = std::string(tok.id_bytes(id));
  for (const char* spelled : {"\xEF\xBD\x9C" "DSML\xEF\xBD\x9C", "</think>"})
    if (auto id = tok.token_to_id(spelled); id && *id < size_) bytes_[size_t(*id)] = spelled;

  std::vector<int32_t> order;
  for (int32_t id = 0; id < size_; ++id)
    if (!bytes_[size_t(id)].empty() && id != eos_) order.push_back(id);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return bytes_[size_t(a)] != bytes_[size_t(b)] ? bytes_[size_t(a)] < bytes_[size_t(b)] : a < b;
  });
  // Preorder trie of the sorted strings: a node's subtree closes when a string leaves its prefix.
  std::vector<int32_t> path;  // node index per depth - 1
  std::string_view prev;
  for (int32_t id : order) {
    const std::string_view s = bytes_[size_t(id)];
    size_t common = 0;
    while (common < std::min(prev.size(), s.size()) && prev[common] == s[common]) ++common;
    common = std::min(common, path.size());
    while (path.size() > common) {
      nodes_[size_t(path.back())].skip = int32_t(nodes_.size());
      path.pop_back();
    }
    for (size_t d = common; d < s.size(); ++d) {
      path.push_back(int32_t(nodes_.size()));
      nodes_.push_back(Node{uint8_t(s[d]), uint16_t(d + 1), 0, 0, 0});
    }
    Node& last = nodes_[size_t(path.back())];
    if (last.n_ids == 0) last.first_id = int32_t(ids_.size());
    ids_.push_back(id);
    ++last.n_ids;
    max_depth_ = std::max(max_depth_, s.size());
    prev = s;
  }
  for (int32_t n : path) nodes_[size_t(n)].skip = int32_t(nodes_.size());
}

std::string_view Vocabulary::bytes(int32_t id) const {
  return id >= 0 && id < size_ ? std::string_view(bytes_[size_t(id)]) : std::string_view();
}

// ---- Constraint -----------------------------------------------------------------------------

Constraint::Constraint(std::shared_ptr<const Vocabulary> vocab, Dfa dfa) : vocab_(std::move(vocab)), dfa_(std::move(dfa)) {}

int Constraint::advance(int state, int32_t token) const {
  const std::string_view b = vocab_->bytes(token);
  if (state < 0 || b.empty() || token == vocab_->eos()) return -1;
  return dfa_.walk(state, b);
}

Mask Constraint::compute(int state) const {
  Mask m((size_t(vocab_->size()) + 63) / 64);
  const auto& nodes = vocab_->nodes();
  const auto& ids = vocab_->ids();
  std::vector<int> at(vocab_->max_depth() + 1);
  at[0] = state;
  for (size_t i = 0; i < nodes.size();) {
    const Vocabulary::Node& n = nodes[i];
    const int next = dfa_.next(at[n.depth - 1u], n.byte);
    if (next < 0) {
      i = size_t(n.skip);
      continue;
    }
    at[n.depth] = next;
    for (int32_t k = 0; k < n.n_ids; ++k) {
      const int32_t id = ids[size_t(n.first_id + k)];
      m[size_t(id) / 64] |= uint64_t(1) << (id % 64);
    }
    ++i;
  }
  if (dfa_.accepting(state) && vocab_->eos() >= 0 && vocab_->eos() < vocab_->size())
    m[size_t(vocab_->eos()) / 64] |= uint64_t(1) << (vocab_->eos() % 64);
  return m;
}

std::shared_ptr<const Mask> Constraint::mask(int state) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = masks_.find(state); it != masks_.end()) return it->second;
  }
  auto m = std::make_shared<const Mask>(compute(state));
  std::lock_guard<std::mutex> lock(mu_);
  if (masks_.size() >= kMaxCachedMasks) masks_.clear();  // bounded: start over
  masks_.emplace(state, m);
  return m;
}

// Visits only the disallowed tokens of each 64-token word: a few where most are allowed
// (free text), a plain fill where none is (literals, numbers).
void Constraint::apply(int state, std::span<float> logits) const {
  const std::shared_ptr<const Mask> m = mask(state);
  const size_t n = std::min(logits.size(), size_t(vocab_->size()));
  float* out = logits.data();
  for (size_t w = 0; w * 64 < n; ++w) {
    const size_t base = w * 64, end = std::min(n, base + 64);
    uint64_t off = ~(*m)[w];
    if (end - base < 64) off &= (uint64_t(1) << (end - base)) - 1;
    if (off == ~uint64_t(0)) {
      std::fill(out + base, out + end, -INFINITY);
      continue;
    }
    for (; off; off &= off - 1) out[base + size_t(__builtin_ctzll(off))] = -INFINITY;
  }
  std::fill(out + n, out + logits.size(), -INFINITY);
}

size_t Constraint::cached_masks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return masks_.size();
}

// ---- ConstraintCache ------------------------------------------------------------------------

std::shared_ptr<const Constraint> ConstraintCache::get(const GrammarSpec& spec) {
  const std::string key = spec.canonical();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = lru_.begin(); it != lru_.end(); ++it)
      if (it->first == key) {
        lru_.splice(lru_.begin(), lru_, it);
        ++hits_;
        return lru_.front().second;
      }
  }
  auto c = std::make_shared<const Constraint>(vocab_, build_dfa(spec));  // outside the lock: may be slow
  std::lock_guard<std::mutex> lock(mu_);
  lru_.emplace_front(key, c);
  while (lru_.size() > capacity_) lru_.pop_back();
  return c;
}

size_t ConstraintCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

int64_t ConstraintCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

}  // namespace dsv4::constrain
