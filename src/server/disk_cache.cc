#include "server/disk_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "engine/state_file.h"

namespace dsv4::server {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxQueuedWrites = 4;  // snapshots waiting for the writer (each holds its memory)
constexpr const char* kSuffix = ".dsv4kv";

uint64_t fnv1a(const void* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 0x100000001b3ull;
  return h;
}

std::string hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

bool is_prefix(std::span<const int32_t> p, std::span<const int32_t> of) {
  return p.size() <= of.size() && std::equal(p.begin(), p.end(), of.begin());
}

int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// Refreshes the file's mtime: the LRU order the next start reads.
void touch(const std::string& path) { ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0); }

}  // namespace

DiskCache::DiskCache(const Model& model, std::string dir, size_t max_bytes, SessionOptions session,
                     std::function<void()> on_loaded)
    : model_(model), dir_(std::move(dir)), max_bytes_(max_bytes), session_opts_(session), on_loaded_(std::move(on_loaded)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_)) throw Error(cat("--kv-cache-dir ", dir_, ": cannot create the directory: ", ec.message()));
  const std::string lock = path("lock");
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw Error(cat("--kv-cache-dir ", dir_, ": cannot write there: ", std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    throw Error(cat("--kv-cache-dir ", dir_, ": another dsv4 serve uses this directory (its lock file is held)"));
  }
  const uint64_t fp = model_fingerprint(model), numerics = uint64_t(model.numerics());
  key_ = hex16(fnv1a(&numerics, sizeof numerics, fnv1a(&fp, sizeof fp)));
  stats_.max_bytes = max_bytes_;
  scan();
  reader_ = std::thread([this] { reader_loop(); });
  writer_ = std::thread([this] { writer_loop(); });
}

DiskCache::~DiskCache() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  reader_.join();
  writer_.join();
  ::close(lock_fd_);
}

std::string DiskCache::file_name(std::span<const int32_t> tokens) const {
  return cat(key_, "-", hex16(fnv1a(tokens.data(), tokens.size_bytes())), kSuffix);
}

// Rebuilds the index from the files of this model: their token ids are read from the files
// (whose name must be the digest of those ids); left-over temporary files of a crash go.
void DiskCache::scan() {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& f : fs::directory_iterator(dir_, ec))
    if (f.is_regular_file(ec)) names.push_back(f.path().filename().string());
  std::sort(names.begin(), names.end());
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& name : names) {
    if (name.rfind(key_ + "-", 0) != 0) continue;  // another model's file, or not ours
    if (name.find(".tmp.") != std::string::npos) {
      fs::remove(path(name), ec);
      continue;
    }
    if (name.size() < std::strlen(kSuffix) || name.compare(name.size() - std::strlen(kSuffix), std::string::npos, kSuffix) != 0)
      continue;
    try {
      std::vector<int32_t> tokens = read_state_tokens(model_, path(name));
      if (file_name(tokens) != name) throw Error(cat(path(name), ": its tokens do not match its name"));
      Entry e{name, std::move(tokens), size_t(fs::file_size(path(name))), mtime_ns(path(name)), 0};
      clock_ = std::max(clock_, e.used);
      stats_.bytes += e.bytes;
      entries_.push_back(std::move(e));
    } catch (const std::exception& e) {
      entries_.push_back(Entry{name, {}, 0, 0, 0});
      reject_locked(name, e.what());
    }
  }
  evict_locked(max_bytes_);
}

DiskCache::Entry* DiskCache::entry_locked(const std::string& name) {
  for (Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

// A file that failed a check: deleted, dropped from the index, counted, and said once.
void DiskCache::reject_locked(const std::string& name, const std::string& why) {
  std::error_code ec;
  const bool existed = fs::remove(path(name), ec);
  std::erase_if(entries_, [&](const Entry& e) {
    if (e.name != name) return false;
    stats_.bytes -= e.bytes;
    return true;
  });
  if (!existed) return;  // deleted by someone else: nothing was damaged
  ++stats_.damaged;
  std::fprintf(stderr, "dsv4 serve: kv cache: deleted a damaged file: %s\n", why.c_str());
}

void DiskCache::evict_locked(size_t limit) {
  while (stats_.bytes > limit) {
    auto victim = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->pins == 0 && (victim == entries_.end() || it->used < victim->used)) victim = it;
    if (victim == entries_.end()) return;
    std::error_code ec;
    fs::remove(path(victim->name), ec);
    stats_.bytes -= victim->bytes;
    ++stats_.evictions;
    entries_.erase(victim);
  }
}

std::shared_ptr<DiskLoad> DiskCache::find(std::span<const int32_t> prompt, int64_t longer_than) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* best = nullptr;
  for (Entry& e : entries_)
    if (e.tokens.size() < prompt.size() && int64_t(e.tokens.size()) > longer_than && is_prefix(e.tokens, prompt) &&
        (!best || e.tokens.size() > best->tokens.size()))
      best = &e;
  if (!best) {
    ++stats_.misses;
    return nullptr;
  }
  ++best->pins;
  auto load = std::make_shared<DiskLoad>();
  load->prefix_.assign(prompt.begin(), prompt.begin() + int64_t(best->tokens.size()));
  load->name_ = best->name;
  loads_.push_back(load);
  cv_.notify_all();
  return load;
}

void DiskCache::reader_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !loads_.empty(); });
    if (stop_) break;
    std::shared_ptr<DiskLoad> load = std::move(loads_.front());
    loads_.pop_front();
    lock.unlock();
    load_one(*load);
    load->done_.store(true, std::memory_order_release);
    if (on_loaded_) on_loaded_();
    lock.lock();
  }
  for (auto& l : loads_) l->done_.store(true, std::memory_order_release);  // shutting down: no state
}

// The whole file is checked (load_session) and its tokens compared with the request's prompt:
// a file that fails is rejected; the request goes on without it either way.
void DiskCache::load_one(DiskLoad& load) {
  std::unique_ptr<Session> s;
  std::string damage;
  try {
    s = std::make_unique<Session>(model_, session_opts_);
    load_session(s.get(), path(load.name_));
    if (s->tokens() != load.prefix_) damage = cat(path(load.name_), ": its tokens are not the request's prefix");
  } catch (const Error& e) {
    damage = e.what();
  } catch (const std::exception&) {
    s.reset();  // out of memory: not the file's fault
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (Entry* e = entry_locked(load.name_)) --e->pins;
  if (!damage.empty()) {
    reject_locked(load.name_, damage);
  } else if (s) {
    ++stats_.hits;
    if (Entry* e = entry_locked(load.name_)) e->used = ++clock_;
    touch(path(load.name_));
    load.session_ = std::move(s);
  }
}

void DiskCache::store(std::shared_ptr<const Session> snapshot) {
  if (!snapshot || snapshot->tokens().empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return;
  const std::vector<int32_t>& t = snapshot->tokens();
  if (Entry* e = entry_locked(file_name(t)); e && e->tokens == t) {
    e->used = ++clock_;
    touch(path(e->name));
    return;
  }
  for (const auto& w : writes_)
    if (w->tokens() == t) return;
  if (writes_.size() >= kMaxQueuedWrites || snapshot->state_bytes() > max_bytes_) {
    ++stats_.skipped;
    return;
  }
  writes_.push_back(std::move(snapshot));
  cv_.notify_all();
}

void DiskCache::writer_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !writes_.empty(); });
    if (writes_.empty()) break;  // stopping, and everything queued is written
    std::shared_ptr<const Session> s = std::move(writes_.front());
    writes_.pop_front();
    writing_ = true;
    lock.unlock();
    write_one(*s);
    s.reset();
    lock.lock();
    writing_ = false;
    cv_.notify_all();
  }
}

void DiskCache::write_one(const Session& s) {
  const std::string name = file_name(s.tokens());
  size_t bytes = 0;
  try {
    save_session(s, path(name));
    bytes = size_t(fs::file_size(path(name)));
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.write_errors;
    std::fprintf(stderr, "dsv4 serve: kv cache: cannot write a snapshot: %s\n", e.what());
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(entries_, [&](const Entry& e) {  // a file with the same digest but other tokens: replaced
    if (e.name != name || e.pins > 0) return false;
    stats_.bytes -= e.bytes;
    return true;
  });
  if (bytes > max_bytes_ || entry_locked(name)) {
    if (!entry_locked(name)) fs::remove(path(name));
    ++stats_.skipped;
    return;
  }
  evict_locked(max_bytes_ - bytes);
  entries_.push_back(Entry{name, s.tokens(), bytes, ++clock_, 0});
  stats_.bytes += bytes;
  ++stats_.writes;
}

void DiskCache::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return writes_.empty() && !writing_; });
}

DiskCacheStats DiskCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  DiskCacheStats s = stats_;
  s.files = entries_.size();
  return s;
}

}  // namespace dsv4::server
