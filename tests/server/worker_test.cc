// The inference worker on the flash-mini golden checkpoint (vocab 1024, fast): greedy output
// is the same alone and batched, a prefix-cache hit continues exactly like a fresh prefill,
// cancellation frees the slot, and a full queue refuses jobs.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dsv4::server
