// PrefixCache: snapshots of sequence states keyed by the tokens they hold, so that a request
// whose prompt starts with a cached sequence continues from it instead of prefilling again.
//
// Multi-turn chat and agent loops resend the whole conversation each turn. The worker stores a
// snapshot (a Session copy) at every message boundary of a prompt and the final state of every
// finished sequence; the next turn then only prefills what is new. Snapshots at boundaries (not
// only the final state) matter because V4 drops earlier turns' reasoning: the re-rendered
// conversation diverges inside the previous assistant turn, and the snapshot taken just before
// that turn's `<｜Assistant｜>` still matches.
//
// Memory is bounded by `max_bytes` (Session::memory_bytes() of each entry, whose last outputs
// are released on insertion), and further by a capacity the worker lowers while running
// requests reserve the memory budget; the least recently used entries are evicted, except that
// the entries a keyed request stored (`prompt_cache_key`, CacheTag) stay while that key's latest
// request is the one that stored them: they go only after every other entry, so one agent's
// traffic cannot evict the snapshots another agent's next turn continues from. Not thread-safe:
// only the worker thread touches it.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/session.h"

namespace dsv4::server {

// Who stores an entry: the request's prompt_cache_key (empty: none) and a number that grows with
// each request, so that the entries of a key's latest request can be told from older ones.
struct CacheTag {
  std::string key;
  int64_t request = 0;
};

class PrefixCache {
 public:
  explicit PrefixCache(size_t max_bytes) : max_bytes_(max_bytes), capacity_(max_bytes) {}

  // The longest cached entry whose tokens are a prefix of `prompt` and strictly shorter than
  // it (at least one prompt token is always run, so the caller gets fresh logits), as a copy;
  // nullptr when none matches.
  std::unique_ptr<Session> lookup(std::span<const int32_t> prompt);

  // Stores `session` (taking ownership; its last outputs are released), tagged. An entry with the
  // same tokens is only refreshed (and, for a keyed tag, changes hands). Returns the snapshot
  // (shared, never modified again, also when it did not fit) for the disk tier; nullptr when
  // nothing new was stored.
  std::shared_ptr<const Session> insert(std::unique_ptr<Session> session, const CacheTag& tag = {});
  // The bytes entries may use now (at most max_bytes()); evicts down to it.
  void set_capacity(size_t bytes);
  // Whether an entry with exactly these tokens exists (the caller can skip making a copy); if
  // so, it is refreshed and retagged, as insert() would.
  bool touch(std::span<const int32_t> tokens, const CacheTag& tag = {});
  // The length of the entry lookup() would return (0: none), without copying it.
  int64_t match_length(std::span<const int32_t> prompt) const;

  size_t entries() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  size_t max_bytes() const { return max_bytes_; }
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }
  int64_t evictions() const { return evictions_; }

  static size_t entry_bytes(const Session& s) { return s.memory_bytes(); }

 private:
  struct Entry {
    std::shared_ptr<Session> session;  // shared with the disk tier's writer until it has written it
    CacheTag tag;
  };
  struct KeyState {
    int64_t latest = 0;  // the key's latest request that stored or refreshed an entry
    int64_t entries = 0;
  };
  using Entries = std::list<Entry>;
  void retag(Entry& e, const CacheTag& tag);
  bool kept(const Entry& e) const;  // stored by its key's latest request
  void evict(Entries::iterator it);
  void evict_to(size_t limit);
  Entries entries_;  // most recently used first
  std::map<std::string, KeyState> keys_;
  size_t max_bytes_, capacity_, bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace dsv4::server
