// The inference worker: one thread owns the model's Sessions; HTTP threads submit Jobs and read
// their output through a Job's event queue.
//
// Why one thread: Sessions are not thread-safe and a forward pass already uses the machine's
// cores, so concurrency comes from batching instead — every loop iteration runs at most one
// prefill chunk (so a long prompt does not stall streams in flight) and then ONE decode_batch()
// step over all decoding sequences. New jobs join between steps, up to `parallel` at a time;
// further jobs wait in a bounded queue, and submit() refuses jobs beyond it (HTTP 429).
// Memory is budgeted (memory_budget.h): submit() reserves what a job's sequence can grow to and
// refuses jobs that do not fit; snapshots use what reservations leave free.
//
// A failure inside one request (an Error, or std::bad_alloc / std::length_error from any
// allocation) ends that request with Finish::kError, never the worker thread or the process.
//
// Text handling also happens here (detokenization, stop strings), because a stop string must
// end generation before another token is spent; the HTTP side only formats what it receives.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "constrain/token_mask.h"
#include "core/error.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "server/disk_cache.h"
#include "server/memory_budget.h"
#include "server/prefix_cache.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::server {

// Test hook (server --test-hooks only): where to simulate an allocation failure.
enum class FailAlloc { kNone, kHttp, kStart, kPrefill, kDecode };

struct GenParams {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;       // end of generation, not returned (EOS)
  std::vector<std::string> stop_strings;  // end of generation, cut from the text
  bool logprobs = false;                  // report TokenInfo for each token
  std::string cache_key;                  // prompt_cache_key: its snapshots outlast other traffic
  // Test hook (server --test-hooks only): these tokens are emitted instead of sampled ones
  // (still run through the model, so the state and the prefix cache stay consistent).
  std::optional<std::vector<int32_t>> forced;
  FailAlloc fail_alloc = FailAlloc::kNone;  // test hook: throw std::bad_alloc at that stage
  // tool_choice / response_format: tokens outside it are masked before sampling (not `forced`).
  std::shared_ptr<const constrain::Constraint> constraint;
};

struct TokenInfo {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

// One delivery from the worker: text released since the last one, and the tokens behind it.
struct JobEvent {
  std::string text;
  std::vector<TokenInfo> tokens;  // only with GenParams::logprobs
};

enum class Finish { kStop, kLength, kCancelled, kError };

struct JobOutcome {
  Finish finish = Finish::kStop;
  std::string stop_string;  // the stop string that ended generation, if one did
  int64_t prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  std::string error;        // kError: what went wrong
  int error_status = 500;   // kError: the HTTP status it maps to (503: the server is stopping)
};

// submit() refusals: temporarily full (HTTP 429: the queue, or memory reserved by other jobs),
// never fits (400: more memory than the whole budget), shutting down (503).
class QueueFull : public Error {
 public:
  using Error::Error;
};
class NeverFits : public Error {
 public:
  using Error::Error;
};
class ShuttingDown : public Error {
 public:
  using Error::Error;
};

// Shared by the HTTP thread (reader) and the worker (writer).
class Job {
 public:
  explicit Job(GenParams p) : params(std::move(p)) {}
  const GenParams params;

  // Reader: waits up to `timeout` for events; moves them into *out. Returns true once the job
  // has finished and every event has been taken (outcome() is then final).
  bool wait(std::vector<JobEvent>* out, std::chrono::milliseconds timeout);
  JobOutcome outcome() const;
  // Reader: waits up to `timeout` for the worker to start the job; then the prompt tokens it
  // takes from the prefix cache (0 when the job ended before it started), else nullopt.
  std::optional<int64_t> wait_started(std::chrono::milliseconds timeout);
  // Reader: the client went away or stopped reading; the worker drops the sequence.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  // Writer.
  void mark_started(int64_t cached_tokens);
  void push(JobEvent e);
  void finish(JobOutcome o);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<JobEvent> events_;
  bool done_ = false;
  std::optional<int64_t> cached_;  // set once the worker has started the job
  JobOutcome outcome_;
  std::atomic<bool> cancelled_{false};
  friend class Worker;
  size_t reserved_ = 0;  // memory reserved for it; guarded by the Worker's mutex
};

// Where a prompt (from position `from` on) is snapshotted for the prefix cache: before its last
// four message-boundary tokens (what the next turn of a conversation continues from) and, earlier,
// before boundaries at least doubling the previous point's position and `min_gap` past it. A
// prompt of thousands of short messages thus costs a few copies and prefill cuts, not one of each
// per message (quadratic in its length).
std::vector<int64_t> snapshot_points(std::span<const int32_t> prompt, int64_t from, int32_t user, int32_t assistant,
                                     int64_t min_gap);

struct WorkerOptions {
  int parallel = 4;           // sequences decoded together
  int max_queue = 16;         // jobs waiting for a slot
  int64_t max_context = 0;    // per sequence; 0 = the model's
  int64_t prefill_chunk = 256;
  size_t cache_bytes = size_t(1) << 30;
  size_t memory_bytes = 0;    // budget for sequence states and snapshots; 0 = unlimited
  std::string kv_cache_dir = {};  // the prefix cache's disk tier (disk_cache.h); empty = none
  size_t kv_cache_disk_bytes = size_t(10) << 30;
};

struct WorkerStats {
  int active = 0, queued = 0;
  size_t cache_entries = 0, cache_bytes = 0, cache_max_bytes = 0;
  int64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0;
  int64_t jobs_done = 0, jobs_cancelled = 0, jobs_failed = 0;
  int64_t tokens_prefilled = 0, tokens_cached = 0, tokens_generated = 0;
  int64_t decode_steps = 0, decode_rows = 0;  // rows / steps = mean batch size
  int64_t prefill_steps = 0, snapshots = 0;    // prefill chunks run; message-boundary snapshots stored
  size_t memory_budget = 0, memory_reserved = 0;
  bool disk_cache = false;  // --kv-cache-dir given; then `disk` holds its counters
  DiskCacheStats disk;
};

class Worker {
 public:
  Worker(const Model& model, const Tokenizer& tok, WorkerOptions options);
  ~Worker();  // shutdown()
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues a job. Throws QueueFull (queue or memory full), NeverFits, ShuttingDown.
  std::shared_ptr<Job> submit(GenParams params);
  // Refuses new jobs, ends every running and queued one with a 503 error ("shutting down") and
  // stops the thread once its current step is done. Idempotent.
  void shutdown();
  WorkerStats stats() const;
  int64_t max_context() const { return max_context_; }

 private:
  struct Seq;
  void run();
  void step(std::vector<std::shared_ptr<Job>>& admitted);
  void admit(std::shared_ptr<Job> job);
  void end_job(Job& job, JobOutcome o);  // finishes the job and releases its memory reservation
  void fit_cache();
  void snapshot(const Session& session, const CacheTag& tag);
  void prefill_step(Seq& s);
  void decode_step();
  void start(std::shared_ptr<Job> job);
  void begin(Seq& s, std::unique_ptr<Session> loaded);
  void adopt_loads();
  bool runnable() const;
  void next_token(Seq& s, std::span<const float> logits);
  void emit(Seq& s, int32_t token, const SampleInfo* info);
  void retire(Seq& s, Finish f, const std::string& detail = "");
  void publish();

  const Model& model_;
  const Tokenizer& tok_;
  const WorkerOptions opt_;
  const int64_t max_context_;
  const SequenceCost cost_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  size_t reserved_ = 0;  // memory reserved by admitted and queued jobs
  WorkerStats stats_;  // guarded by mu_; the worker publishes its counters after each step
  bool disk_loaded_ = false;  // guarded by mu_: a disk load finished since the worker last looked
  std::unique_ptr<DiskCache> disk_;  // after mu_ and cv_: its reader thread signals them until joined

  // Worker thread only.
  std::vector<std::unique_ptr<Seq>> active_;
  PrefixCache cache_;
  WorkerStats counters_;
  int32_t user_id_ = -1, assistant_id_ = -1;  // message-boundary tokens (snapshot points)
  int64_t requests_started_ = 0;               // numbers the CacheTags
  std::thread thread_;
  std::once_flag joined_;
};

}  // namespace dsv4::server
