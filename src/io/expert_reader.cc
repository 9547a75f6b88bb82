#include "io/expert_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace dsv4 {

namespace {

constexpr size_t kPiece = size_t(4) << 20;  // the device's largest request here (max_sectors_kb 4096)

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void DirectReader::Job::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return finished_; });
}

bool DirectReader::Job::finished() {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

ReadEngine DirectReader::default_engine() {
  const char* v = std::getenv("DSV4_EXPERT_READER");
  if (!v || !*v) return kDefaultEngine;
  const std::string s = v;
  if (s == "threads") return ReadEngine::kThreads;
  if (s == "io_uring") return ReadEngine::kUring;
  throw Error(cat("DSV4_EXPERT_READER must be 'threads' or 'io_uring', not '", s, "'"));
}

DirectReader::DirectReader(int depth, ReadEngine engine) {
  depth = std::max(1, depth);
  depth_ = depth;
  for (int i = 0; i < kFinishers; ++i) finishers_.emplace_back([this] { finisher(); });
  if (engine == ReadEngine::kUring && start_uring(depth)) {
    engine_ = ReadEngine::kUring;
    return;
  }
  for (int i = 0; i < depth; ++i) threads_.emplace_back([this] { worker(); });
}

DirectReader::~DirectReader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  stop_uring();
  {  // the readers are gone: nothing more is handed over; the finishers drain what was
    std::lock_guard<std::mutex> lock(done_mu_);
    done_stop_ = true;
  }
  done_cv_.notify_all();
  for (auto& t : finishers_) t.join();
  for (const File& f : files_) ::close(f.fd);
}

int DirectReader::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0 && errno == EINVAL) {  // no O_DIRECT on this filesystem (tmpfs): buffered reads
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    direct_ = false;
  }
  if (fd < 0) throw Error(cat("cannot open ", path, " for expert reads: ", std::strerror(errno)));
  std::lock_guard<std::mutex> lock(mu_);
  files_.push_back({fd, path});
  return int(files_.size()) - 1;
}

std::shared_ptr<DirectReader::Job> DirectReader::submit(std::vector<Range> ranges, std::function<void()> done) {
  auto job = std::make_shared<Job>();
  job->done_ = std::move(done);
  std::vector<Piece> pieces;
  for (const Range& r : ranges)
    for (size_t at = 0; at < r.length; at += kPiece) {
      Range p = r;
      p.offset += at;
      p.dst += at;
      p.length = std::min(kPiece, r.length - at);
      p.needed = r.needed > at ? std::min(p.length, r.needed - at) : 0;
      pieces.push_back({job, p});
    }
  job->pending_ = pieces.size();
  if (pieces.empty()) {
    if (job->done_) job->done_();
    job->finished_ = true;
    return job;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Piece& p : pieces) queue_.push_back(std::move(p));
  }
  cv_.notify_all();
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);  // an eventfd write cannot block here
  }
  return job;
}

bool DirectReader::cancel(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);  // no reader takes a piece meanwhile
    size_t queued = 0;
    for (const Piece& p : queue_) queued += p.job == job;
    std::lock_guard<std::mutex> job_lock(job->mu_);
    if (queued == 0 || queued != job->pending_) return false;
    std::erase_if(queue_, [&](const Piece& p) { return p.job == job; });
    job->pending_ = 0;
    job->error_ = kCancelled;
    job->done_ = nullptr;
    job->finished_ = true;
  }
  job->cv_.notify_all();
  return true;
}

std::string DirectReader::read_piece(const Range& r) {
  const File& f = files_[size_t(r.file)];
  size_t got = 0;
  while (got < r.length) {
    const ssize_t n = ::pread(f.fd, r.dst + got, r.length - got, off_t(r.offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return piece_error(r, got, errno);
    if (n == 0) break;  // end of file
    got += size_t(n);
    if (got % kAlign) break;  // a short read ending mid-block: the end of the file (O_DIRECT cannot go on from there)
  }
  return piece_error(r, got, 0);
}

// "" when `got` bytes of the piece (and errno `err`) complete it, else the message naming the file.
std::string DirectReader::piece_error(const Range& r, size_t got, int err) const {
  const File& f = files_[size_t(r.file)];
  if (err) return cat("cannot read ", f.path, " at byte ", r.offset + got, ": ", std::strerror(err));
  if (got < r.needed)
    return cat(f.path, " ends at byte ", r.offset + got, " but the checkpoint's header placed tensor bytes up to ",
               r.offset + r.needed, ": the file was truncated or replaced after loading");
  return "";
}

// One clock reading per change, so that busy, depth and full seconds add up exactly.
void DirectReader::depth_changes_locked(int by) {
  const double t = now_s();
  if (in_flight_ > 0) {
    depth_s_ += double(in_flight_) * (t - since_);
    if (in_flight_ >= depth_) full_s_ += t - since_;
    busy_ += t - since_;
  }
  since_ = t;
  in_flight_ += by;
}

void DirectReader::started_locked() { depth_changes_locked(+1); }

void DirectReader::ended_locked(size_t bytes) {
  bytes_ += bytes;
  depth_changes_locked(-1);
}

void DirectReader::finish_piece(const std::shared_ptr<Job>& job, const std::string& error) {
  bool handed_over = false;
  {
    std::lock_guard<std::mutex> lock(job->mu_);
    if (!error.empty() && job->error_.empty()) job->error_ = error;
    if (--job->pending_ > 0) return;
    handed_over = job->error_.empty() && job->done_;
    if (handed_over) {  // the finisher runs it and finishes the job
      std::lock_guard<std::mutex> dlock(done_mu_);
      done_queue_.push_back(job);
    } else {
      job->finished_ = true;
    }
  }
  if (handed_over)
    done_cv_.notify_one();
  else
    job->cv_.notify_all();
}

void DirectReader::finisher() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(done_mu_);
      done_cv_.wait(lock, [&] { return done_stop_ || !done_queue_.empty(); });
      if (done_queue_.empty()) return;
      job = std::move(done_queue_.front());
      done_queue_.pop_front();
    }
    std::string done_error;
    const double t0 = now_s();
    try {
      job->done_();
    } catch (const std::exception& e) {
      done_error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(done_mu_);
      done_s_ += now_s() - t0;
    }
    {
      std::lock_guard<std::mutex> lock(job->mu_);
      if (!done_error.empty()) job->error_ = done_error;
      job->done_ = nullptr;
      job->finished_ = true;
    }
    job->cv_.notify_all();
  }
}

void DirectReader::worker() {
  for (;;) {
    Piece p;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      p = std::move(queue_.front());
      queue_.pop_front();
      started_locked();
    }
    const std::string error = read_piece(p.range);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended_locked(error.empty() ? p.range.length : 0);
    }
    finish_piece(p.job, error);
  }
}

uint64_t DirectReader::bytes_read() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

double DirectReader::done_seconds() const {
  std::lock_guard<std::mutex> lock(done_mu_);
  return done_s_;
}

DirectReader::Times DirectReader::times() const {
  std::lock_guard<std::mutex> lock(mu_);
  Times t{busy_, depth_s_, full_s_};
  if (in_flight_ > 0) {  // the span since the last change, as depth_changes_locked will count it
    const double d = now_s() - since_;
    t.busy += d, t.depth += double(in_flight_) * d;
    if (in_flight_ >= depth_) t.full += d;
  }
  return t;
}

}  // namespace dsv4
