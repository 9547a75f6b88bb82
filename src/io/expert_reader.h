// Large reads of checkpoint byte ranges that bypass the page cache (O_DIRECT), on a pool of
// reader threads: the expert cache's path to the disk (issue 16).
//
// Why not the file mapping: a mapping reads 4 KB page faults one at a time on the thread that
// touches them, the page cache it fills is charged to the process's cgroup and evicted at
// random, and nothing overlaps with compute. Here a request is split into pieces of up to 4 MB
// read by several threads at once (a queue depth of `threads` on the device), straight into the
// caller's buffer, while the caller computes.
//
// Two engines issue the reads: a pool of threads each blocking in pread (queue depth = threads),
// or one thread driving an io_uring (Debian's liburing; queue depth `depth`, no thread per
// read). Builds without liburing, and kernels that refuse io_uring, use the pool.
//
// O_DIRECT needs offsets, lengths and buffers aligned to the device's block size; the caller
// reads the aligned range around what it needs (kAlign). Filesystems without O_DIRECT (tmpfs)
// fall back to ordinary reads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dsv4 {

enum class ReadEngine { kThreads, kUring };

class DirectReader {
 public:
  static constexpr size_t kAlign = 4096;

  // The engine a reader uses unless told: DSV4_EXPERT_READER=threads|io_uring, else the measured
  // default (README, "Models larger than memory"). Throws Error on another value.
  static ReadEngine default_engine();
  static constexpr ReadEngine kDefaultEngine = ReadEngine::kUring;
  static bool uring_built();  // this build links liburing

  // One read: file bytes [offset, offset + length) into dst (all kAlign-aligned). At least
  // `needed` bytes must exist (the aligned tail past the end of the file may be short; fewer
  // than `needed` means the file shrank: an error).
  struct Range {
    int file = 0;
    uint64_t offset = 0;
    size_t length = 0;
    size_t needed = 0;
    uint8_t* dst = nullptr;
  };

  // A batch of ranges in flight. wait() returns once every range is read (or failed); error()
  // then holds "" or a message naming the file. `done` (if set) runs after the last range
  // succeeds, before wait() returns (rearrangements of the bytes), on one of kFinishers threads:
  // on a reader thread it kept that reader's share of the queue depth idle meanwhile (on the
  // io_uring thread, every read's: ~9 ms per 12.76 MB expert with no new read issued).
  class Job {
   public:
    void wait();
    bool finished();
    const std::string& error() const { return error_; }

   private:
    friend class DirectReader;
    std::mutex mu_;
    std::condition_variable cv_;
    size_t pending_ = 0;
    bool finished_ = false;
    std::string error_;
    std::function<void()> done_;
  };

  // `depth` reads in flight at once: that many threads, or an io_uring of that depth (falling
  // back to threads where the kernel refuses one).
  explicit DirectReader(int depth, ReadEngine engine = ReadEngine::kThreads);
  ~DirectReader();
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;

  // Opens `path` for reading; returns its index for Range::file. Throws Error if it cannot.
  int open(const std::string& path);
  std::shared_ptr<Job> submit(std::vector<Range> ranges, std::function<void()> done = nullptr);
  // Takes back a job whose remaining pieces are all still queued (none being read): it is then
  // finished with error() == kCancelled, its `done` not run, and true is returned. False when a
  // piece is being read or the job is over: it then runs to its end as usual.
  bool cancel(const std::shared_ptr<Job>& job);
  static constexpr const char* kCancelled = "cancelled";

  // Bytes read so far and the seconds during which at least one read was in flight: their ratio
  // is the disk bandwidth this process saw.
  uint64_t bytes_read() const;
  // Seconds with reads in flight (busy), the integral of the reads in flight over time (depth;
  // ÷ busy: the mean depth while busy) and the seconds with all `depth` in flight (full: whether
  // the queue was kept full), up to one clock reading so that they agree.
  struct Times {
    double busy = 0, depth = 0, full = 0;
  };
  Times times() const;
  double busy_seconds() const { return times().busy; }
  double done_seconds() const;  // spent running the jobs' `done` (the cache's FP4 tiling)
  int depth() const { return depth_; }  // reads in flight at most
  bool direct() const { return direct_; }  // every file opened with O_DIRECT
  ReadEngine engine() const { return engine_; }
  const char* engine_name() const { return engine_ == ReadEngine::kUring ? "io_uring" : "threads"; }

 private:
  struct Piece {
    std::shared_ptr<Job> job;
    Range range;
  };
  void worker();
  void finisher();  // runs the jobs' `done` as they come
  // Threads running `done`: two, so that tiling keeps up with the disk on a busy machine
  // (one tiled a 12.76 MB expert in 10-13 ms at load 10, while the disk read one in ~8).
  static constexpr int kFinishers = 2;
  std::string read_piece(const Range& r);
  void finish_piece(const std::shared_ptr<Job>& job, const std::string& error);
  // Bookkeeping shared by both engines (under mu_): a piece starts / ends being read.
  void started_locked();
  void ended_locked(size_t bytes);
  void depth_changes_locked(int by);
  // io_uring engine (expert_reader_uring.cc): false where unavailable; else runs in uring_thread_.
  bool start_uring(int depth);
  void stop_uring();
  std::string piece_error(const Range& r, size_t got, int err) const;

  struct Uring;
  struct UringDeleter {
    void operator()(Uring* u) const;
  };
  std::unique_ptr<Uring, UringDeleter> uring_;
  int wake_fd_ = -1;  // eventfd the io_uring thread also waits on: new pieces, or stop
  ReadEngine engine_ = ReadEngine::kThreads;

  struct File {
    int fd = -1;
    std::string path;
  };
  std::vector<File> files_;
  bool direct_ = true;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Piece> queue_;
  bool stop_ = false;
  int in_flight_ = 0;
  uint64_t bytes_ = 0;
  int depth_ = 1;
  double busy_ = 0, depth_s_ = 0, full_s_ = 0, since_ = 0;  // since_: the last change of in_flight_
  std::vector<std::thread> threads_;
  // Jobs whose reads are done and whose `done` is to run, on finishers_ (its own lock: a reader
  // hands a job over without waiting for the queue's lock).
  mutable std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::deque<std::shared_ptr<Job>> done_queue_;
  bool done_stop_ = false;
  double done_s_ = 0;
  std::vector<std::thread> finishers_;
};

}  // namespace dsv4
