// The inference worker on the flash-mini golden checkpoint (vocab 1024, fast): greedy output
// is the same alone and batched, a prefix-cache hit continues exactly like a fresh prefill,
// cancellation frees the slot, and a full queue refuses jobs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "model/model.h"
#include "server/worker.h"
#include "tests/test_util.h"

namespace dsv4::server {
namespace {

class WorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_shared()) return;
    model_ = Model::load(test::shared_dir() + "/golden/flash-mini", Numerics::kReference).release();
    tok_ = new Tokenizer(Tokenizer::load(test::shared_dir() + "/tokenizer/tokenizer.json"));
  }
  void SetUp() override { DSV4_REQUIRE_SHARED(); }

  static GenParams params(std::vector<int32_t> prompt, int64_t n) {
    GenParams p;
    p.prompt = std::move(prompt);
    p.max_tokens = n;
    p.logprobs = true;  // TokenInfo carries the ids
    return p;
  }
  struct Result {
    std::vector<int32_t> ids;
    std::string text;
    JobOutcome outcome;
  };
  static Result wait(const std::shared_ptr<Job>& job) {
    Result r;
    std::vector<JobEvent> ev;
    while (!job->wait(&ev, std::chrono::milliseconds(100))) {
    }
    for (auto& e : ev) {
      r.text += e.text;
      for (auto& t : e.tokens) r.ids.push_back(t.id);
    }
    r.outcome = job->outcome();
    return r;
  }
  static std::vector<int32_t> prompt(int seed, int n) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(int32_t(3 + (seed * 131 + i * 37) % 1000));
    return p;
  }
  static inline Model* model_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
};

TEST_F(WorkerTest, GreedyOutputIsTheSameAloneAndBatched) {
  std::vector<Result> alone;
  {
    Worker w(*model_, *tok_, WorkerOptions{4, 8, 0, 64, 0});  // no cache: every run prefills
    for (int i = 0; i < 3; ++i) alone.push_back(wait(w.submit(params(prompt(i, 20 + 7 * i), 12))));
  }
  Worker w(*model_, *tok_, WorkerOptions{4, 8, 0, 64, 0});
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(w.submit(params(prompt(i, 20 + 7 * i), 12)));
  for (int i = 0; i < 3; ++i) {
    Result b = wait(jobs[size_t(i)]);
    EXPECT_EQ(b.ids, alone[size_t(i)].ids) << "job " << i;
    EXPECT_EQ(b.ids.size(), 12u);
    EXPECT_EQ(b.outcome.finish, Finish::kLength);
  }
  EXPECT_GT(w.stats().decode_rows, w.stats().decode_steps);  // some steps really were batched
}

TEST_F(WorkerTest, PrefixCacheHitContinuesLikeAFreshPrefill) {
  Worker cached(*model_, *tok_, WorkerOptions{2, 8, 0, 64, size_t(256) << 20});
  Result first = wait(cached.submit(params(prompt(5, 30), 6)));
  ASSERT_EQ(first.ids.size(), 6u);
  // The next turn: the whole first exchange plus new tokens.
  std::vector<int32_t> next = prompt(5, 30);
  next.insert(next.end(), first.ids.begin(), first.ids.end());
  for (int32_t t : prompt(9, 5)) next.push_back(t);
  Result second = wait(cached.submit(params(next, 8)));
  // The final state held the prompt and all generated tokens but the last (not yet run).
  EXPECT_EQ(second.outcome.cached_tokens, 30 + 6 - 1);
  EXPECT_EQ(second.outcome.prompt_tokens, int64_t(next.size()));

  Worker fresh(*model_, *tok_, WorkerOptions{2, 8, 0, 64, 0});
  Result ref = wait(fresh.submit(params(next, 8)));
  EXPECT_EQ(ref.outcome.cached_tokens, 0);
  EXPECT_EQ(second.ids, ref.ids);
  EXPECT_GT(cached.stats().cache_entries, 0u);
  EXPECT_EQ(cached.stats().cache_hits, 1);
}

// prompt_cache_key: the snapshots of a key's latest request outlast traffic that evicts every
// other entry (least recently used first), so that key's next turn still continues from them;
// without a key the same traffic evicts the first conversation's state.
TEST_F(WorkerTest, CacheKeyKeepsItsSnapshotsThroughOtherTraffic) {
  auto keyed = [](std::vector<int32_t> p, const std::string& key) {
    GenParams g = params(std::move(p), 2);
    g.cache_key = key;
    return g;
  };
  size_t entry = 0;  // one finished job's final state (these prompts have no turn boundaries)
  {
    Worker probe(*model_, *tok_, WorkerOptions{1, 8, 0, 64, size_t(256) << 20});
    wait(probe.submit(params(prompt(1, 40), 2)));
    // The worker publishes its stats after the step that finished the job.
    for (int i = 0; i < 200 && probe.stats().cache_entries == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    entry = probe.stats().cache_bytes;
    ASSERT_EQ(probe.stats().cache_entries, 1u);
  }
  auto run = [&](const std::string& key) {
    Worker w(*model_, *tok_, WorkerOptions{1, 8, 0, 64, entry * 3 + entry / 2});  // room for 3 entries
    Result first = wait(w.submit(keyed(prompt(1, 40), key)));
    // Six other conversations, half of them under another key, each storing one entry.
    for (int i = 0; i < 6; ++i) wait(w.submit(keyed(prompt(10 + i, 40), i % 2 ? "agent-b" : "")));
    EXPECT_LE(w.stats().cache_entries, 3u);
    std::vector<int32_t> next = prompt(1, 40);
    next.insert(next.end(), first.ids.begin(), first.ids.end());
    for (int32_t t : prompt(9, 5)) next.push_back(t);
    return wait(w.submit(keyed(next, key))).outcome.cached_tokens;
  };
  EXPECT_EQ(run("agent-a"), 40 + 2 - 1);
  EXPECT_EQ(run(""), 0);
}

TEST_F(WorkerTest, CancelFreesTheSlotAndQueueFullRefuses) {
  Worker w(*model_, *tok_, WorkerOptions{1, 1, 0, 64, 0});
  auto a = w.submit(params(prompt(1, 10), 100000));
  auto b = w.submit(params(prompt(2, 10), 4));  // waits in the queue
  EXPECT_THROW(w.submit(params(prompt(3, 10), 4)), QueueFull);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  a->cancel();
  EXPECT_EQ(wait(a).outcome.finish, Finish::kCancelled);
  EXPECT_EQ(wait(b).outcome.finish, Finish::kLength);
  for (int i = 0; i < 100 && w.stats().active > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(w.stats().active, 0);
  EXPECT_EQ(w.stats().queued, 0);
}

TEST_F(WorkerTest, StopStringsAndStopTokensEndGeneration) {
  Worker w(*model_, *tok_, WorkerOptions{1, 1, 0, 64, 0});
  Result full = wait(w.submit(params(prompt(4, 16), 10)));
  ASSERT_GE(full.ids.size(), 4u);
  // A stop token: the chosen token itself ends generation and is not returned.
  GenParams p = params(prompt(4, 16), 10);
  p.stop_tokens = {full.ids[2]};
  Result st = wait(w.submit(p));
  EXPECT_EQ(st.outcome.finish, Finish::kStop);
  EXPECT_EQ(st.ids.size(), size_t(std::find(full.ids.begin(), full.ids.end(), full.ids[2]) - full.ids.begin()));
  // A stop string: the text is cut right before it.
  if (full.text.size() >= 6) {
    const std::string stop = full.text.substr(3, 2);
    GenParams q = params(prompt(4, 16), 10);
    q.stop_strings = {stop};
    Result ss = wait(w.submit(q));
    EXPECT_EQ(ss.outcome.finish, Finish::kStop);
    EXPECT_EQ(ss.outcome.stop_string, stop);
    EXPECT_EQ(ss.text, full.text.substr(0, full.text.find(stop)));
  }
  // Forced tokens (the test hook) are emitted instead of sampled ones.
  GenParams f = params(prompt(4, 16), 10);
  f.forced = std::vector<int32_t>{5, 6, 7, 1};
  f.stop_tokens = {1};
  Result fr = wait(w.submit(f));
  EXPECT_EQ(fr.ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(fr.outcome.finish, Finish::kStop);
}

// The memory budget: a job that can never fit is refused (NeverFits → 400), one that does not
// fit beside the running ones is refused as temporarily full (QueueFull → 429), and a finished
// job gives its reservation back.
TEST_F(WorkerTest, MemoryBudgetRefusesWhatCannotFit) {
  const SequenceCost cost(model_->config(), model_->numerics(), 64);
  const int64_t ctx = model_->config().max_position_embeddings;
  const size_t one = cost.bytes(ctx), budget = one + one / 2;  // one job as long as the context, not two
  {
    Worker small(*model_, *tok_, WorkerOptions{4, 8, 0, 64, 0, one / 2});
    EXPECT_THROW(small.submit(params(prompt(1, 10), ctx)), NeverFits);
  }
  Worker w(*model_, *tok_, WorkerOptions{4, 8, 0, 64, 0, budget});
  auto a = w.submit(params(prompt(1, 10), ctx));  // holds `one` until it ends
  EXPECT_GT(w.stats().memory_reserved, 0u);
  EXPECT_THROW(w.submit(params(prompt(2, 10), ctx)), QueueFull);
  a->cancel();
  EXPECT_EQ(wait(a).outcome.finish, Finish::kCancelled);
  EXPECT_EQ(w.stats().memory_reserved, 0u);
  EXPECT_EQ(wait(w.submit(params(prompt(2, 10), 4))).outcome.finish, Finish::kLength);
  EXPECT_LE(w.stats().cache_bytes, budget);
}

// std::bad_alloc anywhere in a job (simulated by the test hook at each stage) fails that job
// with a message; the worker goes on serving.
TEST_F(WorkerTest, AllocationFailureFailsOnlyThatJob) {
  Worker w(*model_, *tok_, WorkerOptions{2, 8, 0, 64, size_t(64) << 20});
  for (FailAlloc at : {FailAlloc::kStart, FailAlloc::kPrefill, FailAlloc::kDecode}) {
    GenParams p = params(prompt(3, 20), 8);
    p.fail_alloc = at;
    Result r = wait(w.submit(p));
    EXPECT_EQ(r.outcome.finish, Finish::kError);
    EXPECT_NE(r.outcome.error.find("out of memory"), std::string::npos) << r.outcome.error;
    EXPECT_EQ(r.outcome.error_status, 500);
  }
  for (int i = 0; i < 100 && w.stats().jobs_failed < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(w.stats().jobs_failed, 3);  // (the counters are published after each step)
  Result ok = wait(w.submit(params(prompt(3, 20), 8)));
  EXPECT_EQ(ok.outcome.finish, Finish::kLength);
  EXPECT_EQ(ok.ids.size(), 8u);
}

// shutdown() ends running and queued jobs with a 503 error and refuses new ones.
// A constrained job (src/constrain) samples only tokens that keep its answer valid: the golden
// model's output, noise for a JSON request, parses and has the schema's shape, greedy or not;
// cut short by max_tokens it ends with kLength and an unfinished prefix.
TEST_F(WorkerTest, ConstrainedJobsFollowTheirSchema) {
  constrain::GrammarSpec spec;
  spec.schema = constrain::Json::parse(R"({"type": "object", "properties": {"n": {"type": "integer"},
      "ok": {"type": "boolean"}, "tag": {"enum": ["x", "y"]}}, "required": ["n", "ok", "tag"]})");
  auto vocab = std::make_shared<const constrain::Vocabulary>(*tok_, tok_->eos_id());
  auto constraint = std::make_shared<const constrain::Constraint>(vocab, constrain::build_dfa(spec));
  Worker w(*model_, *tok_, WorkerOptions{4, 8, 0, 64, 0});
  for (float temperature : {0.0f, 1.0f}) {
    GenParams p = params(prompt(3, 16), 200);
    p.stop_tokens = {tok_->eos_id()};
    p.sampling.temperature = temperature;
    p.constraint = constraint;
    const Result r = wait(w.submit(p));
    ASSERT_EQ(r.outcome.finish, Finish::kStop) << r.text;
    const auto doc = nlohmann::json::parse(r.text);
    EXPECT_TRUE(doc["n"].is_number_integer()) << r.text;
    EXPECT_TRUE(doc["ok"].is_boolean()) << r.text;
    EXPECT_TRUE(doc["tag"] == "x" || doc["tag"] == "y") << r.text;
  }
  GenParams p = params(prompt(3, 16), 2);
  p.stop_tokens = {tok_->eos_id()};
  p.constraint = constraint;
  const Result cut = wait(w.submit(p));
  EXPECT_EQ(cut.outcome.finish, Finish::kLength);
  EXPECT_EQ(std::string("{\"n\":").substr(0, cut.text.size()), cut.text);
}

TEST_F(WorkerTest, ShutdownEndsEveryJob) {
  Worker w(*model_, *tok_, WorkerOptions{1, 4, 0, 64, 0});
  auto running = w.submit(params(prompt(1, 10), 100000));
  auto queued = w.submit(params(prompt(2, 10), 100000));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  w.shutdown();
  for (auto* j : {&running, &queued}) {
    JobOutcome o = wait(*j).outcome;
    EXPECT_EQ(o.finish, Finish::kError);
    EXPECT_EQ(o.error_status, 503);
  }
  EXPECT_THROW(w.submit(params(prompt(3, 10), 4)), ShuttingDown);
  EXPECT_EQ(w.stats().memory_reserved, 0u);
}

}  // namespace
}  // namespace dsv4::server

namespace dsv4::server {
namespace {

// Message boundaries: every one of a short conversation is a snapshot point; of thousands of
// short messages only the last four and a few geometrically spaced ones are (was: all of them,
// a prefill cut and a Session copy each — quadratic time in the prompt length).
TEST(SnapshotPoints, FewPerPromptHoweverManyMessages) {
  const int32_t U = 7, A = 9;
  std::vector<int32_t> chat = {1, U, 5, 5, A, 5, 5, U, 5, A};  // positions 1, 4, 7, 9
  EXPECT_EQ(snapshot_points(chat, 0, U, A, 256), (std::vector<int64_t>{1, 4, 7, 9}));
  EXPECT_EQ(snapshot_points(chat, 4, U, A, 256), (std::vector<int64_t>{7, 9}));  // after a cached prefix

  std::vector<int32_t> many;
  for (int m = 0; m < 10000; ++m) many.insert(many.end(), {m % 2 ? A : U, 5, 5});
  const std::vector<int64_t> p = snapshot_points(many, 0, U, A, 256);
  ASSERT_GE(p.size(), 4u);
  EXPECT_LE(p.size(), 4u + 8u);  // 256, 512, ... 16384 (< 30000 tokens), then the last four
  const int64_t n = int64_t(many.size());
  EXPECT_EQ(std::vector<int64_t>(p.end() - 4, p.end()), (std::vector<int64_t>{n - 12, n - 9, n - 6, n - 3}));
  for (size_t i = 1; i + 4 < p.size(); ++i) EXPECT_GE(p[i], 2 * p[i - 1]);
  EXPECT_GE(p[0], 256);
}

}  // namespace
}  // namespace dsv4::server

namespace dsv4::server {
namespace {

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// The default budget's inputs: MemAvailable, capped by the cgroup v1 / v2 limit when one is set.
TEST(MemoryBudget, AvailableMemoryIsTheSmallerOfMemAvailableAndTheCgroupLimit) {
  const std::filesystem::path root = std::filesystem::path(testing::TempDir()) / "dsv4_fake_root";
  std::filesystem::remove_all(root);
  write_file(root / "proc/meminfo", "MemTotal:  4000000 kB\nMemFree:  100 kB\nMemAvailable:    2000000 kB\n");
  write_file(root / "proc/self/cgroup", "9:name=systemd:/\n4:cpu,memory:/box\n0::/unified\n");
  write_file(root / "sys/fs/cgroup/memory/box/memory.limit_in_bytes", "9223372036854771712\n");  // v1 "no limit"
  write_file(root / "sys/fs/cgroup/unified/memory.max", "max\n");
  EXPECT_EQ(available_memory(root.string()), uint64_t(2000000) * 1024);
  write_file(root / "sys/fs/cgroup/memory/box/memory.limit_in_bytes", "524288000\n");
  EXPECT_EQ(available_memory(root.string()), uint64_t(524288000));
  write_file(root / "sys/fs/cgroup/unified/memory.max", "104857600\n");
  EXPECT_EQ(available_memory(root.string()), uint64_t(104857600));
  // What the cgroup already uses counts against its limit, except page cache (issue 16).
  write_file(root / "sys/fs/cgroup/unified/memory.current", "62914560\n");
  write_file(root / "sys/fs/cgroup/unified/memory.stat", "anon 41943040\nfile 20971520\n");
  EXPECT_EQ(available_memory(root.string()), uint64_t(104857600 - 41943040));
  write_file(root / "sys/fs/cgroup/unified/memory.max", "max\n");
  write_file(root / "sys/fs/cgroup/memory/box/memory.usage_in_bytes", "524288000\n");
  write_file(root / "sys/fs/cgroup/memory/box/memory.stat", "cache 1\ntotal_cache 104857600\n");
  EXPECT_EQ(available_memory(root.string()), uint64_t(104857600));
  std::filesystem::remove_all(root);

  const uint64_t GiB = uint64_t(1) << 30;
  EXPECT_EQ(default_memory_budget(8 * GiB, 2 * GiB), size_t(6 * GiB / 4 * 3));
  EXPECT_EQ(default_memory_budget(1 * GiB, 4 * GiB), size_t(GiB / 8));  // a model larger than RAM (mapped)
}

}  // namespace
}  // namespace dsv4::server
