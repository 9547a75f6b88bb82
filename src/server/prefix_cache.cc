#include "server/prefix_cache.h"

#include <algorithm>

namespace dsv4::server {

namespace {
bool is_prefix(std::span<const int32_t> p, std::span<const int32_t> of) {
  return p.size() <= of.size() && std::equal(p.begin(), p.end(), of.begin());
}
}  // namespace

std::unique_ptr<Session> PrefixCache::lookup(std::span<const int32_t> prompt) {
  auto best = entries_.end();
  // A linear scan: the cache holds at most a few hundred entries and a comparison stops at the
  // first differing token, which is cheap next to one forward pass.
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const auto& t = (*it)->tokens();
    if (t.size() < prompt.size() && is_prefix(t, prompt) && (best == entries_.end() || t.size() > (*best)->tokens().size()))
      best = it;
  }
  if (best == entries_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  entries_.splice(entries_.begin(), entries_, best);
  return std::make_unique<Session>(*entries_.front());
}

int64_t PrefixCache::match_length(std::span<const int32_t> prompt) const {
  size_t best = 0;
  for (const auto& e : entries_)
    if (e->tokens().size() < prompt.size() && e->tokens().size() > best && is_prefix(e->tokens(), prompt))
      best = e->tokens().size();
  return int64_t(best);
}

bool PrefixCache::contains(std::span<const int32_t> tokens) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const auto& e) {
    return e->tokens().size() == tokens.size() && is_prefix(e->tokens(), tokens);
  });
}

std::shared_ptr<const Session> PrefixCache::insert(std::unique_ptr<Session> s) {
  if (!s || s->tokens().empty()) return nullptr;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if ((*it)->tokens() == s->tokens()) {
      entries_.splice(entries_.begin(), entries_, it);
      return nullptr;
    }
  }
  s->release_outputs();
  std::shared_ptr<Session> shared = std::move(s);
  const size_t b = entry_bytes(*shared);
  if (b > capacity_) return shared;  // would evict everything and still not fit
  evict_to(capacity_ - b);
  bytes_ += b;
  entries_.push_front(shared);
  return shared;
}

void PrefixCache::set_capacity(size_t bytes) {
  capacity_ = std::min(bytes, max_bytes_);
  evict_to(capacity_);
}

void PrefixCache::evict_to(size_t limit) {
  while (bytes_ > limit && !entries_.empty()) {
    bytes_ -= entry_bytes(*entries_.back());
    entries_.pop_back();
    ++evictions_;
  }
}

}  // namespace dsv4::server
