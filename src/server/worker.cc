#include "server/worker.h"

#include <algorithm>
#include <cmath>

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
  std::vector<int64_t> boundaries;  // prompt positions to snapshot at (before a turn's role token)
  size_t next_boundary = 0;
  bool decoding = false, finished = false;
  int32_t next = -1;  // chosen; the next decode step appends it
  std::vector<int32_t> generated;
  size_t forced_pos = 0;
  StreamDecoder dec;
  std::string held;               // released text that may still be the start of a stop string
  std::vector<TokenInfo> infos;   // logprobs waiting for their text

  Seq(std::shared_ptr<Job> j, const Tokenizer& tok)
      : job(std::move(j)), sampler(job->params.sampling), dec(tok, /*skip_special=*/false) {}
  const GenParams& p() const { return job->params; }
};

Worker::Worker(const Model& model, const Tokenizer& tok, WorkerOptions options)
    : model_(model),
      tok_(tok),
      opt_(options),
      max_context_(options.max_context > 0 ? options.max_context : model.config().max_position_embeddings),
      cache_(options.cache_bytes) {
  user_id_ = tok.token_to_id("<｜User｜>").value_or(-1);
  assistant_id_ = tok.token_to_id("<｜Assistant｜>").value_or(-1);
  stats_.cache_max_bytes = cache_.max_bytes();
  thread_ = std::thread([this] { run(); });
}

Worker::~Worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::shared_ptr<Job> Worker::submit(GenParams params) {
  auto job = std::make_shared<Job>(std::move(params));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) throw QueueFull("the server is shutting down");
    // Jobs wait only while all `parallel` slots are busy; the queue bounds how many may wait.
    const size_t free_slots = size_t(std::max(0, opt_.parallel - stats_.active));
    if (queue_.size() >= free_slots + size_t(opt_.max_queue))
      throw QueueFull(cat("the server is busy: ", stats_.active, " requests running and ", queue_.size(),
                          " queued (limit ", opt_.max_queue, "); retry later"));
    queue_.push_back(job);
    stats_.queued = int(queue_.size());
  }
  cv_.notify_all();
  return job;
}

WorkerStats Worker::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
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
  stats_ = s;
}

void Worker::start(std::shared_ptr<Job> job) {
  auto s = std::make_unique<Seq>(std::move(job), tok_);
  const std::vector<int32_t>& prompt = s->p().prompt;
  s->session = cache_.lookup(prompt);
  if (!s->session) s->session = std::make_unique<Session>(model_, SessionOptions{max_context_, opt_.prefill_chunk, false});
  s->cached = s->session->position();
  counters_.tokens_cached += s->cached;
  for (size_t i = size_t(s->cached) + 1; i < prompt.size(); ++i)
    if (prompt[i] == user_id_ || prompt[i] == assistant_id_) s->boundaries.push_back(int64_t(i));
  active_.push_back(std::move(s));
}

void Worker::run() {
  while (true) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !active_.empty() || !queue_.empty(); });
      if (stop_) break;
      while (!queue_.empty() && active_.size() + admitted.size() < size_t(opt_.parallel)) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // Counted as active at once, so that submit()'s capacity check never sees a gap.
      stats_.active = int(active_.size() + admitted.size());
      stats_.queued = int(queue_.size());
    }
    for (auto& j : admitted) {
      if (j->cancelled()) {
        ++counters_.jobs_cancelled;
        j->finish(JobOutcome{Finish::kCancelled, "", int64_t(j->params.prompt.size()), 0, 0, ""});
      } else {
        try {
          start(j);
        } catch (const std::exception& e) {
          ++counters_.jobs_failed;
          j->finish(JobOutcome{Finish::kError, "", int64_t(j->params.prompt.size()), 0, 0, e.what()});
        }
      }
    }
    for (auto& s : active_)
      if (!s->finished && s->job->cancelled()) retire(*s, Finish::kCancelled);
    // One prefill chunk, then one decode step for everything that is decoding.
    for (auto& s : active_) {
      if (!s->finished && !s->decoding) {
        prefill_step(*s);
        break;
      }
    }
    decode_step();
    std::erase_if(active_, [](const auto& s) { return s->finished; });
    publish();
  }
  for (auto& s : active_)
    if (!s->finished) s->job->finish(JobOutcome{Finish::kCancelled, "", 0, 0, 0, "server shutting down"});
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& j : queue_) j->finish(JobOutcome{Finish::kCancelled, "", 0, 0, 0, "server shutting down"});
  queue_.clear();
}

void Worker::prefill_step(Seq& s) {
  const std::vector<int32_t>& prompt = s.p().prompt;
  const int64_t pos = s.session->position(), n = int64_t(prompt.size());
  int64_t end = std::min(n, pos + opt_.prefill_chunk);
  while (s.next_boundary < s.boundaries.size() && s.boundaries[s.next_boundary] <= pos) ++s.next_boundary;
  const bool at_boundary = s.next_boundary < s.boundaries.size() && s.boundaries[s.next_boundary] <= end;
  if (at_boundary) end = s.boundaries[s.next_boundary];
  std::span<const float> logits;
  try {
    logits = s.session->append(std::span<const int32_t>(prompt).subspan(size_t(pos), size_t(end - pos)));
  } catch (const Error& e) {
    retire(s, Finish::kError, e.what());
    return;
  }
  counters_.tokens_prefilled += end - pos;
  // A snapshot at a message boundary; the copy is skipped when an earlier request stored it.
  if (at_boundary && !cache_.contains(s.session->tokens())) cache_.insert(std::make_unique<Session>(*s.session));
  if (end == n) {
    s.decoding = true;
    next_token(s, logits);
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
    decode_batch(sessions, tokens, &logits);
  } catch (const Error& e) {
    for (Seq* s : batch) retire(*s, Finish::kError, e.what());
    return;
  }
  ++counters_.decode_steps;
  counters_.decode_rows += int64_t(batch.size());
  const size_t V = size_t(model_.config().vocab_size);
  for (size_t i = 0; i < batch.size(); ++i) next_token(*batch[i], std::span<const float>(logits).subspan(i * V, V));
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
    std::string rest = o.stop_string.empty() ? s.held + s.dec.finish() : std::string();
    if (!rest.empty() || !s.infos.empty()) s.job->push(JobEvent{std::move(rest), std::move(s.infos)});
  }
  s.infos.clear();
  s.job->finish(std::move(o));
  // The final state (prompt + generated tokens) is the most likely prefix of the next turn.
  if (f != Finish::kError && s.session && s.session->position() > 0) cache_.insert(std::move(s.session));
  s.session.reset();
}

}  // namespace dsv4::server
