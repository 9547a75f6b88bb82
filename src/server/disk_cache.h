// DiskCache: the prefix cache's second tier, state files in a directory (`serve --kv-cache-dir`).
//
// Every snapshot the memory cache stores is also written here, behind the worker's back (a
// writer thread, crash-safe state files: docs/state-file.md), so the directory holds what the
// memory LRU evicted and what a killed server had — it survives restarts. A request whose
// prompt extends a file's tokens further than any memory entry loads that file on a reader
// thread; the worker does not schedule the request until the load is in, so a slow disk never
// stalls the other sequences' decode steps.
//
// Files are named `<model key>-<token digest>.dsv4kv` (the model key covers the weights'
// fingerprint and the numerics). The name only routes: the index is rebuilt at start from the
// token ids stored in each file (header and token section checked), and a load checks the whole
// file again and compares its tokens with the request's prompt. A file that fails any check
// (flipped bits, truncated, another model's or numerics' state under this model's name) is
// deleted and counted as damaged; the request then prefills as if there had been no file.
// Files of other models (another key in the name) are left alone and not counted.
//
// Bounded by `max_bytes` of file sizes; the least recently used files (by mtime, which a hit
// refreshes, so the order survives restarts) are deleted first. One server per directory: a
// lock file (flock) refuses a second one.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/session.h"

namespace dsv4::server {

struct DiskCacheStats {
  size_t files = 0, bytes = 0, max_bytes = 0;
  int64_t hits = 0, misses = 0, damaged = 0;  // loads used; requests without a longer file; files rejected
  int64_t writes = 0, write_errors = 0, evictions = 0, skipped = 0;  // skipped: writes dropped (queue full / too big)
};

// One asynchronous load: the worker polls done(); session is the loaded state (nullptr when the
// file was rejected or vanished: the request then goes on without it).
class DiskLoad {
 public:
  bool done() const { return done_.load(std::memory_order_acquire); }
  std::unique_ptr<Session> take() { return std::move(session_); }
  int64_t tokens() const { return int64_t(prefix_.size()); }

 private:
  friend class DiskCache;
  std::vector<int32_t> prefix_;  // the request's prompt up to the file's length
  std::string name_;
  std::unique_ptr<Session> session_;
  std::atomic<bool> done_{false};
};

class DiskCache {
 public:
  // Opens (creating) `dir`, takes its lock and indexes the files of this model. `session` are
  // the options loaded sessions get; `on_loaded` is called (on the reader thread) after each
  // load finishes. Throws Error when the directory cannot be used.
  DiskCache(const Model& model, std::string dir, size_t max_bytes, SessionOptions session,
            std::function<void()> on_loaded);
  ~DiskCache();  // writes what is queued, drops queued loads
  DiskCache(const DiskCache&) = delete;
  DiskCache& operator=(const DiskCache&) = delete;

  // Starts loading the longest file whose tokens are a strict prefix of `prompt` and longer
  // than `longer_than` tokens (what the memory cache has); nullptr (a miss) when there is none.
  std::shared_ptr<DiskLoad> find(std::span<const int32_t> prompt, int64_t longer_than);
  // Queues writing `snapshot` (shared with the memory cache; never modified) unless a file with
  // its tokens exists or is queued.
  void store(std::shared_ptr<const Session> snapshot);
  // Waits until the write queue is empty (tests).
  void flush();

  DiskCacheStats stats() const;
  const std::string& dir() const { return dir_; }

 private:
  struct Entry {
    std::string name;
    std::vector<int32_t> tokens;
    size_t bytes = 0;
    int64_t used = 0;  // LRU clock (file mtime at start, then a counter)
    int pins = 0;      // loads in flight: not evicted meanwhile
  };
  void scan();
  void reader_loop();
  void writer_loop();
  void load_one(DiskLoad& load);
  void write_one(const Session& s);
  void evict_locked(size_t limit);
  void reject_locked(const std::string& name, const std::string& why);
  Entry* entry_locked(const std::string& name);
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string file_name(std::span<const int32_t> tokens) const;

  const Model& model_;
  const std::string dir_;
  const size_t max_bytes_;
  const SessionOptions session_opts_;
  const std::function<void()> on_loaded_;
  std::string key_;  // model key: the file name prefix of this model's files
  int lock_fd_ = -1;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;
  std::deque<std::shared_ptr<DiskLoad>> loads_;
  std::deque<std::shared_ptr<const Session>> writes_;
  bool writing_ = false, stop_ = false;
  int64_t clock_ = 0;
  DiskCacheStats stats_;
  std::thread reader_, writer_;
};

}  // namespace dsv4::server
