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
    const auto& t = it->session->tokens();
    if (t.size() < prompt.size() && is_prefix(t, prompt) &&
        (best == entries_.end() || t.size() > best->session->tokens().size()))
      best = it;
  }
  if (best == entries_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  entries_.splice(entries_.begin(), entries_, best);
  return std::make_unique<Session>(*entries_.front().session);
}

// The entry now belongs to the tag's key (if any), as an entry of that key's latest request.
void PrefixCache::retag(Entry& e, const CacheTag& tag) {
  if (tag.key.empty()) return;  // an unkeyed request leaves an entry's owner as it was
  if (!e.tag.key.empty()) {
    auto old = keys_.find(e.tag.key);
    if (--old->second.entries == 0 && e.tag.key != tag.key) keys_.erase(old);
  }
  e.tag = tag;
  KeyState& k = keys_[tag.key];
  k.latest = std::max(k.latest, tag.request);
  ++k.entries;
}

bool PrefixCache::kept(const Entry& e) const {
  if (e.tag.key.empty()) return false;
  auto it = keys_.find(e.tag.key);
  return it != keys_.end() && it->second.latest == e.tag.request;
}

void PrefixCache::evict(Entries::iterator it) {
  bytes_ -= entry_bytes(*it->session);
  if (!it->tag.key.empty()) {
    auto k = keys_.find(it->tag.key);
    if (--k->second.entries == 0) keys_.erase(k);
  }
  entries_.erase(it);
  ++evictions_;
}

bool PrefixCache::touch(std::span<const int32_t> tokens, const CacheTag& tag) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const auto& t = it->session->tokens();
    if (t.size() == tokens.size() && is_prefix(t, tokens)) {
      entries_.splice(entries_.begin(), entries_, it);
      retag(entries_.front(), tag);
      return true;
    }
  }
  return false;
}

int64_t PrefixCache::match_length(std::span<const int32_t> prompt) const {
  size_t best = 0;
  for (const auto& e : entries_) {
    const auto& t = e.session->tokens();
    if (t.size() < prompt.size() && t.size() > best && is_prefix(t, prompt)) best = t.size();
  }
  return int64_t(best);
}

std::shared_ptr<const Session> PrefixCache::insert(std::unique_ptr<Session> s, const CacheTag& tag) {
  if (!s || s->tokens().empty() || touch(s->tokens(), tag)) return nullptr;
  s->release_outputs();
  std::shared_ptr<Session> shared = std::move(s);
  const size_t b = entry_bytes(*shared);
  if (b > capacity_) return shared;  // would evict everything and still not fit
  evict_to(capacity_ - b);
  bytes_ += b;
  entries_.push_front(Entry{shared, CacheTag{}});
  retag(entries_.front(), tag);
  return shared;
}

void PrefixCache::set_capacity(size_t bytes) {
  capacity_ = std::min(bytes, max_bytes_);
  evict_to(capacity_);
}

// Least recently used first, but entries that a key's latest request stored only once nothing
// else is left.
void PrefixCache::evict_to(size_t limit) {
  while (bytes_ > limit && !entries_.empty()) {
    auto victim = std::prev(entries_.end());
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
      if (!kept(*it)) {
        victim = std::prev(it.base());
        break;
      }
    evict(victim);
  }
}

}  // namespace dsv4::server
