#include "server/worker.h"

#include <algorithm>
#include <cmath>
#include <new>

#include "engine/batch.h"
#include "tokenizer/stream_decoder.h"

namespace dsv4::server {

// ---- Job ------------------------------------------------------------------------------------

bool Job::wait(std::vector<JobEvent>* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty() || done_; });
  for (auto& e : events_) out->push_back(std::move(e));
  events_.clear();
  return done_;
}

std::optional<int64_t> Job::wait_started(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return cached_.has_value() || done_; });
  return cached_ ? cached_ : done_ ? std::optional<int64_t>(0) : std::nullopt;
}

void Job::mark_started(int64_t cached_tokens) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cached_ = cached_tokens;
  }
  cv_.notify_all();
}

JobOutcome Job::outcome() const {
  std::lock_guard<std::mutex> lock(mu_);
  return outcome_;
}

void Job::push(JobEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

void Job::finish(JobOutcome o) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    outcome_ = std::move(o);
    done_ = true;
  }
  cv_.notify_all();
}

// ---- Worker ---------------------------------------------------------------------------------

struct Worker::Seq {
  std::shared_ptr<Job> job;
  std::unique_ptr<Session> session;
  Sampler sampler;
  int64_t cached = 0;
  CacheTag tag;                     // what its snapshots are stored under
  std::vector<int64_t> boundaries;  // prompt positions to snapshot at (before a turn's role token)
  size_t next_boundary = 0;
  bool decoding = false, finished = false;
  int32_t next = -1;  // chosen; the next decode step appends it
  std::vector<int32_t> generated;
  size_t forced_pos = 0;
  int constraint_state = 0;       // the constraint's DFA state after the generated tokens
  StreamDecoder dec;
  std::string held;               // released text that may still be the start of a stop string
  std::vector<TokenInfo> infos;   // logprobs waiting for their text
  std::shared_ptr<DiskLoad> load;  // set while its prefix state is being read from disk

  Seq(std::shared_ptr<Job> j, const Tokenizer& tok)
      : job(std::move(j)), sampler(job->params.sampling), dec(tok, /*skip_special=*/false) {}
  const GenParams& p() const { return job->params; }
};

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// How a failure reads in the error the client gets.
std::string describe(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return cat("out of memory (", e.what(), ")");
  if (dynamic_cast<const std::length_error*>(&e)) return cat("out of memory (length_error: ", e.what(), ")");
  return e.what();
}

void maybe_fail(const GenParams& p, FailAlloc at) {
  if (p.fail_alloc == at) throw std::bad_alloc();
}

}  // namespace

std::vector<int64_t> snapshot_points(std::span<const int32_t> prompt, int64_t from, int32_t user, int32_t assistant,
                                     int64_t min_gap) {
  std::vector<int64_t> all;
  for (size_t i = size_t(from) + 1; i < prompt.size(); ++i)
    if (prompt[i] == user || prompt[i] == assistant) all.push_back(int64_t(i));
  constexpr size_t kRecentPoints = 4;
  const size_t recent = all.size() > kRecentPoints ? all.size() - kRecentPoints : 0;
  std::vector<int64_t> points;
  int64_t last = from;
  for (size_t k = 0; k < recent; ++k)
    if (all[k] >= 2 * last && all[k] - last >= min_gap) points.push_back(last = all[k]);
  points.insert(points.end(), all.begin() + int64_t(recent), all.end());
  return points;
}

Worker::Worker(const Model& model, const Tokenizer& tok, WorkerOptions options)
    : model_(model),
      tok_(tok),
      opt_(options),
      max_context_(options.max_context > 0 ? options.max_context : model.config().max_position_embeddings),
      cost_(model.config(), model.numerics(), options.prefill_chunk),
      cache_(options.cache_bytes) {
  user_id_ = tok.token_to_id("<｜User｜>").value_or(-1);
  assistant_id_ = tok.token_to_id("<｜Assistant｜>").value_or(-1);
  stats_.cache_max_bytes = cache_.max_bytes();
  stats_.memory_budget = opt_.memory_bytes;
  if (!opt_.kv_cache_dir.empty()) {
    disk_ = std::make_unique<DiskCache>(model, opt_.kv_cache_dir, opt_.kv_cache_disk_bytes,
                                        SessionOptions{max_context_, opt_.prefill_chunk, false}, [this] {
                                          {
                                            std::lock_guard<std::mutex> lock(mu_);
                                            disk_loaded_ = true;
                                          }
                                          cv_.notify_all();
                                        });
  }
  thread_ = std::thread([this] { run(); });
}

Worker::~Worker() { shutdown(); }

void Worker::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  std::call_once(joined_, [this] { thread_.join(); });
}

std::shared_ptr<Job> Worker::submit(GenParams params) {
  const int64_t tokens = std::min<int64_t>(int64_t(params.prompt.size()) + params.max_tokens, max_context_);
  const size_t need = cost_.bytes(tokens), budget = opt_.memory_bytes;
  if (budget > 0 && need > budget)
    throw NeverFits(cat("the request needs up to ", int64_t(need / kMiB + 1), " MiB of sequence memory (",
                        params.prompt.size(), " prompt tokens + max_tokens ", params.max_tokens,
                        ") but the server's whole memory budget is ", int64_t(budget / kMiB),
                        " MiB; lower max_tokens or shorten the prompt"));
  auto job = std::make_shared<Job>(std::move(params));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) throw ShuttingDown("the server is shutting down");
    // Jobs wait only while all `parallel` slots are busy; the queue bounds how many may wait.
    const size_t free_slots = size_t(std::max(0, opt_.parallel - stats_.active));
    if (queue_.size() >= free_slots + size_t(opt_.max_queue))
      throw QueueFull(cat("the server is busy: ", stats_.active, " requests running and ", queue_.size(),
                          " queued (limit ", opt_.max_queue, "); retry later"));
    if (budget > 0 && reserved_ + need > budget)
      throw QueueFull(cat("the server's memory is full: running and queued requests hold ", int64_t(reserved_ / kMiB),
                          " MiB of its ", int64_t(budget / kMiB), " MiB budget and this one needs up to ",
                          int64_t(need / kMiB + 1), " MiB; retry later"));
    reserved_ += need;
    job->reserved_ = need;
    queue_.push_back(job);
    stats_.queued = int(queue_.size());
  }
  cv_.notify_all();
  return job;
}

void Worker::end_job(Job& job, JobOutcome o) {
  {
    std::lock_guard<std::mutex> lock(mu_);  // released first: a finished job holds no memory
    reserved_ -= job.reserved_;
    job.reserved_ = 0;
  }
  job.finish(std::move(o));
}

WorkerStats Worker::stats() const {
  const DiskCacheStats disk = disk_ ? disk_->stats() : DiskCacheStats{};  // live: its threads write while idle
  std::lock_guard<std::mutex> lock(mu_);
  WorkerStats s = stats_;
  s.memory_reserved = reserved_;
  s.disk_cache = disk_ != nullptr;
  s.disk = disk;
  return s;
}

void Worker::publish() {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerStats s = counters_;
  s.active = int(active_.size());
  s.queued = int(queue_.size());
  s.cache_entries = cache_.entries();
  s.cache_bytes = cache_.bytes();
  s.cache_max_bytes = cache_.max_bytes();
  s.cache_hits = cache_.hits();
  s.cache_misses = cache_.misses();
  s.cache_evictions = cache_.evictions();
  s.memory_budget = opt_.memory_bytes;
  stats_ = s;
}

// The prefix cache gets what the reservations leave of the budget (at most --cache-mb).
void Worker::fit_cache() {
  size_t cap = opt_.cache_bytes;
  if (opt_.memory_bytes > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cap = std::min(cap, opt_.memory_bytes > reserved_ ? opt_.memory_bytes - reserved_ : 0);
  }
  cache_.set_capacity(cap);
}

// A message-boundary snapshot, skipped when an earlier request stored it. Only an optimisation:
// when the copy cannot be allocated, the request goes on without it.
void Worker::snapshot(const Session& session, const CacheTag& tag) {
  if (cache_.touch(session.tokens(), tag)) return;
  try {
    auto copy = std::make_unique<Session>(session);
    copy->release_outputs();
    std::shared_ptr<const Session> stored = cache_.insert(std::move(copy), tag);
    if (disk_) disk_->store(std::move(stored));
    ++counters_.snapshots;
  } catch (const std::bad_alloc&) {
  } catch (const std::length_error&) {
  }
}

void Worker::start(std::shared_ptr<Job> job) {
  auto s = std::make_unique<Seq>(std::move(job), tok_);
  maybe_fail(s->p(), FailAlloc::kStart);
  if (s->p().constraint) s->constraint_state = s->p().constraint->start();
  const std::vector<int32_t>& prompt = s->p().prompt;
  s->tag = CacheTag{s->p().cache_key, ++requests_started_};
  // A longer prefix on disk than in memory: the sequence is not scheduled until it is read.
  if (disk_) s->load = disk_->find(prompt, cache_.match_length(prompt));
  if (!s->load) begin(*s, nullptr);
  active_.push_back(std::move(s));
}

// The sequence starts from `loaded` (its prompt's prefix read from disk) or else from the
// longest prefix in memory, or from nothing.
void Worker::begin(Seq& s, std::unique_ptr<Session> loaded) {
  const std::vector<int32_t>& prompt = s.p().prompt;
  s.session = loaded ? std::move(loaded) : cache_.lookup(prompt);
  if (!s.session) s.session = std::make_unique<Session>(model_, SessionOptions{max_context_, opt_.prefill_chunk, false});
  s.cached = s.session->position();
  s.job->mark_started(s.cached);
  counters_.tokens_cached += s.cached;
  s.boundaries = snapshot_points(prompt, s.cached, user_id_, assistant_id_, opt_.prefill_chunk);
}

void Worker::adopt_loads() {
  for (auto& s : active_) {
    if (s->finished || !s->load || !s->load->done()) continue;
    std::unique_ptr<Session> loaded = s->load->take();  // nullptr: the file was rejected
    s->load.reset();
    try {
      begin(*s, std::move(loaded));
    } catch (const std::exception& e) {
      retire(*s, Finish::kError, describe(e));
    }
  }
}

// Whether a sequence can run a step now (not waiting for its state from disk).
bool Worker::runnable() const {
  return std::any_of(active_.begin(), active_.end(), [](const auto& s) { return !s->load; });
}

void Worker::admit(std::shared_ptr<Job> job) {
  const int64_t prompt_tokens = int64_t(job->params.prompt.size());
  if (job->cancelled()) {
    ++counters_.jobs_cancelled;
    end_job(*job, JobOutcome{Finish::kCancelled, "", prompt_tokens, 0, 0, ""});
    return;
  }
  try {
    start(job);
  } catch (const std::exception& e) {
    ++counters_.jobs_failed;
    end_job(*job, JobOutcome{Finish::kError, "", prompt_tokens, 0, 0, describe(e)});
  }
}

// One loop iteration: new jobs join, cancelled ones leave, one prefill chunk runs, then one
// decode step for everything that is decoding.
void Worker::step(std::vector<std::shared_ptr<Job>>& admitted) {
  fit_cache();
  for (auto& j : admitted) admit(std::move(j));
  for (auto& s : active_)
    if (!s->finished && s->job->cancelled()) retire(*s, Finish::kCancelled);
  adopt_loads();
  for (auto& s : active_) {
    if (!s->finished && !s->decoding && !s->load) {
      prefill_step(*s);
      break;
    }
  }
  decode_step();
}

void Worker::run() {
  while (true) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sequences that only wait for disk loads are looked at again when a load is in (or after
      // a while, to notice cancellations).
      const auto ready = [&] { return stop_ || !queue_.empty() || disk_loaded_ || runnable(); };
      if (active_.empty() || runnable())
        cv_.wait(lock, ready);
      else
        cv_.wait_for(lock, std::chrono::milliseconds(100), ready);
      disk_loaded_ = false;
      if (stop_) break;
      while (!queue_.empty() && active_.size() + admitted.size() < size_t(opt_.parallel)) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // Counted as active at once, so that submit()'s capacity check never sees a gap.
      stats_.active = int(active_.size() + admitted.size());
      stats_.queued = int(queue_.size());
    }
    try {
      step(admitted);
    } catch (const std::exception& e) {
      // Each stage fails only its own sequences; should anything escape, the sequences in
      // flight end with the error, not the process.
      for (auto& s : active_) retire(*s, Finish::kError, cat("internal error: ", describe(e)));
    }
    std::erase_if(active_, [](const auto& s) { return s->finished; });
    publish();
  }
  const JobOutcome stopping{Finish::kError, "", 0, 0, 0, "the server is shutting down", 503};
  for (auto& s : active_)
    if (!s->finished) end_job(*s->job, stopping);
  active_.clear();
  std::deque<std::shared_ptr<Job>> queued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued.swap(queue_);
  }
  for (auto& j : queued) end_job(*j, stopping);
  publish();
}

void Worker::prefill_step(Seq& s) {
  const std::vector<int32_t>& prompt = s.p().prompt;
  const int64_t pos = s.session->position(), n = int64_t(prompt.size());
  int64_t end = std::min(n, pos + opt_.prefill_chunk);
  while (s.next_boundary < s.boundaries.size() && s.boundaries[s.next_boundary] <= pos) ++s.next_boundary;
  const bool at_boundary = s.next_boundary < s.boundaries.size() && s.boundaries[s.next_boundary] <= end;
  if (at_boundary) end = s.boundaries[s.next_boundary];
  try {
    maybe_fail(s.p(), FailAlloc::kPrefill);
    std::span<const float> logits =
        s.session->append(std::span<const int32_t>(prompt).subspan(size_t(pos), size_t(end - pos)));
    counters_.tokens_prefilled += end - pos;
    ++counters_.prefill_steps;
    if (at_boundary) snapshot(*s.session, s.tag);
    if (end == n) {
      s.decoding = true;
      next_token(s, logits);
    }
  } catch (const std::exception& e) {
    retire(s, Finish::kError, describe(e));
  }
}

void Worker::decode_step() {
  std::vector<Seq*> batch;
  std::vector<Session*> sessions;
  std::vector<int32_t> tokens;
  for (auto& s : active_) {
    if (s->finished || !s->decoding) continue;
    batch.push_back(s.get());
    sessions.push_back(s->session.get());
    tokens.push_back(s->next);
  }
  if (batch.empty()) return;
  std::vector<float> logits;
  try {
    for (Seq* s : batch) maybe_fail(s->p(), FailAlloc::kDecode);
    decode_batch(sessions, tokens, &logits);
  } catch (const std::exception& e) {
    // A batched step that failed part-way may have advanced some states: all of them end.
    for (Seq* s : batch) retire(*s, Finish::kError, describe(e));
    return;
  }
  ++counters_.decode_steps;
  counters_.decode_rows += int64_t(batch.size());
  const size_t V = size_t(model_.config().vocab_size);
  for (size_t i = 0; i < batch.size(); ++i) {
    try {
      next_token(*batch[i], std::span<const float>(logits).subspan(i * V, V));
    } catch (const std::exception& e) {
      retire(*batch[i], Finish::kError, describe(e));
    }
  }
}

namespace {
float log_softmax_at(std::span<const float> logits, int32_t id) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float v : logits) z += std::exp(double(v - mx));
  return float(double(logits[size_t(id)] - mx) - std::log(z));
}
}  // namespace

void Worker::next_token(Seq& s, std::span<const float> logits) {
  const GenParams& p = s.p();
  if (p.forced) {
    const int32_t eos = model_.config().eos_token_id;
    const int32_t t = s.forced_pos < p.forced->size() ? (*p.forced)[s.forced_pos++] : eos;
    SampleInfo info;
    if (p.logprobs && t >= 0 && size_t(t) < logits.size()) info.logprob = log_softmax_at(logits, t);
    emit(s, t, p.logprobs ? &info : nullptr);
    return;
  }
  SampleInfo info;
  if (p.constraint) {
    std::vector<float> masked(logits.begin(), logits.end());
    p.constraint->apply(s.constraint_state, masked);
    const int32_t t = s.sampler.sample(masked, s.generated, p.logprobs ? &info : nullptr);
    // Only EOS ends the constraint; any other token moves it on (the mask allowed it).
    if (std::find(p.stop_tokens.begin(), p.stop_tokens.end(), t) == p.stop_tokens.end()) {
      s.constraint_state = p.constraint->advance(s.constraint_state, t);
      if (s.constraint_state < 0) throw Error(cat("internal error: token ", t, " left the output constraint"));
    }
    emit(s, t, p.logprobs ? &info : nullptr);
    return;
  }
  const int32_t t = s.sampler.sample(logits, s.generated, p.logprobs ? &info : nullptr);
  emit(s, t, p.logprobs ? &info : nullptr);
}

void Worker::emit(Seq& s, int32_t token, const SampleInfo* info) {
  const GenParams& p = s.p();
  if (std::find(p.stop_tokens.begin(), p.stop_tokens.end(), token) != p.stop_tokens.end()) {
    retire(s, Finish::kStop);
    return;
  }
  s.generated.push_back(token);
  ++counters_.tokens_generated;
  if (info) s.infos.push_back(TokenInfo{token, info->logprob, info->top});
  std::string text = s.held + s.dec.push(token);
  s.held.clear();
  // The earliest stop string ends generation; the text before it is released.
  size_t cut = std::string::npos;
  std::string which;
  for (const std::string& stop : p.stop_strings) {
    const size_t at = text.find(stop);
    if (at < cut) cut = at, which = stop;
  }
  if (cut != std::string::npos) {
    text.resize(cut);
    if (!text.empty() || !s.infos.empty()) s.job->push(JobEvent{std::move(text), std::move(s.infos)});
    s.infos.clear();
    retire(s, Finish::kStop, which);
    return;
  }
  // Hold back the longest tail that could still grow into a stop string.
  size_t keep = 0;
  for (const std::string& stop : p.stop_strings)
    for (size_t k = std::min(stop.size() - 1, text.size()); k > keep; --k)
      if (text.compare(text.size() - k, k, stop, 0, k) == 0) {
        keep = k;
        break;
      }
  s.held = text.substr(text.size() - keep);
  text.resize(text.size() - keep);
  if (!text.empty()) {
    s.job->push(JobEvent{std::move(text), std::move(s.infos)});
    s.infos.clear();
  }
  if (int64_t(s.generated.size()) >= p.max_tokens || s.session->position() + 1 >= s.session->max_context()) {
    retire(s, Finish::kLength);
    return;
  }
  s.next = token;
  // A streamed checkpoint starts reading the token's hash-routed experts now: the other
  // sequences' sampling and any prefill before the next decode step overlap them.
  model_.prefetch_experts(std::span<const int32_t>(&s.next, 1));
}

void Worker::retire(Seq& s, Finish f, const std::string& detail) {
  if (s.finished) return;
  s.finished = true;
  JobOutcome o;
  o.finish = f;
  o.prompt_tokens = int64_t(s.p().prompt.size());
  o.cached_tokens = s.cached;
  o.completion_tokens = int64_t(s.generated.size());
  if (f == Finish::kError) {
    o.error = detail;
    ++counters_.jobs_failed;
  } else if (f == Finish::kCancelled) {
    ++counters_.jobs_cancelled;
  } else {
    ++counters_.jobs_done;
    if (f == Finish::kStop) o.stop_string = detail;
    // A stop string's text was cut; otherwise the held-back tail and partial characters are due.
    try {
      std::string rest = o.stop_string.empty() ? s.held + s.dec.finish() : std::string();
      if (!rest.empty() || !s.infos.empty()) s.job->push(JobEvent{std::move(rest), std::move(s.infos)});
    } catch (const std::exception& e) {
      o.finish = Finish::kError;
      o.error = describe(e);
    }
  }
  s.infos.clear();
  end_job(*s.job, std::move(o));
  // The final state (prompt + generated tokens) is the most likely prefix of the next turn; it
  // goes into what the released reservation left free.
  if (f != Finish::kError && s.session && s.session->position() > 0) {
    fit_cache();
    std::shared_ptr<const Session> stored = cache_.insert(std::move(s.session), s.tag);
    if (disk_) disk_->store(std::move(stored));
  }
  s.session.reset();
}

}  // namespace dsv4::server
