// The prefix cache's disk tier (server/disk_cache.h) through the Worker, on the golden
// flash-mini checkpoint (window, CSA ratio 4 with the indexer, HCA ratio 128; window 128), in
// both numerics:
// - a conversation's turn 2 after a restart continues from the disk file with bit-identical
//   tokens and logprobs (top 5 too) to a worker that never stopped; the restored state (135
//   tokens) sits past the window's wrap and the first HCA block and inside a CSA block, and
//   turn 2 crosses the next HCA boundary (256);
// - while a file is being read (a slow disk), other requests run to the end;
// - a damaged file (flipped bits, truncated, the other numerics' or another model's state, or
//   another prefix's, under this file's name) is deleted and counted, and the answer is the same;
// - the directory stays within its size limit (least recently used files go), and a second
//   cache on the same directory is refused.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "core/error.h"
#include "engine/state_file.h"
#include "model/model.h"
#include "server/worker.h"
#include "tests/test_util.h"

namespace dsv4::server {
namespace {

namespace fs = std::filesystem;

struct Result {
  std::vector<TokenInfo> tokens;
  JobOutcome outcome;
};

Result wait(const std::shared_ptr<Job>& job) {
  Result r;
  std::vector<JobEvent> ev;
  while (!job->wait(&ev, std::chrono::milliseconds(100))) {
  }
  for (auto& e : ev)
    for (auto& t : e.tokens) r.tokens.push_back(t);
  r.outcome = job->outcome();
  return r;
}

std::vector<int32_t> ids(const Result& r) {
  std::vector<int32_t> v;
  for (const TokenInfo& t : r.tokens) v.push_back(t.id);
  return v;
}

// Same ids, and logprobs (chosen and top 5) equal bit for bit.
void expect_identical(const Result& a, const Result& b) {
  ASSERT_EQ(ids(a), ids(b));
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    EXPECT_EQ(std::memcmp(&a.tokens[i].logprob, &b.tokens[i].logprob, sizeof(float)), 0) << "token " << i;
    ASSERT_EQ(a.tokens[i].top.size(), b.tokens[i].top.size());
    for (size_t k = 0; k < a.tokens[i].top.size(); ++k) {
      EXPECT_EQ(a.tokens[i].top[k].first, b.tokens[i].top[k].first);
      EXPECT_EQ(std::memcmp(&a.tokens[i].top[k].second, &b.tokens[i].top[k].second, sizeof(float)), 0);
    }
  }
}

std::vector<int32_t> prompt(int seed, int n) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(int32_t(3 + (seed * 131 + i * 37) % 1000));
  return p;
}

GenParams params(std::vector<int32_t> p, int64_t n) {
  GenParams g;
  g.prompt = std::move(p);
  g.max_tokens = n;
  g.logprobs = true;
  g.sampling.top_logprobs = 5;
  return g;
}

std::vector<std::string> files(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& f : fs::directory_iterator(dir))
    if (f.path().extension() == ".dsv4kv") v.push_back(f.path().string());
  return v;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }

std::string flipped(const std::string& b, size_t at, uint8_t bit) {
  std::vector<uint8_t> v(b.begin(), b.end());
  if (at < v.size()) v[at] ^= bit;
  return std::string(v.begin(), v.end());
}

// Files are written behind the worker's back: waits (up to 30 s) until `n` have been.
void wait_for_writes(const Worker& w, int64_t n) {
  for (int i = 0; i < 3000 && w.stats().disk.writes < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(w.stats().disk.writes, n);
}

class DiskCacheTest : public ::testing::TestWithParam<Numerics> {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_shared()) return;
    tok_ = new Tokenizer(Tokenizer::load(test::shared_dir() + "/tokenizer/tokenizer.json"));
  }
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    model_ = Model::load(test::shared_dir() + "/golden/flash-mini", GetParam());
    dir_ = (fs::temp_directory_path() / cat("dsv4_disk_cache_", ::getpid(), "_", int(GetParam()))).string();
    fs::remove_all(dir_);
    turn1_ = prompt(5, 130);
  }
  void TearDown() override { fs::remove_all(dir_); }

  WorkerOptions options(size_t cache_bytes, size_t disk_bytes = size_t(1) << 30) const {
    WorkerOptions o{2, 8, 0, 64, cache_bytes};
    o.kv_cache_dir = dir_;
    o.kv_cache_disk_bytes = disk_bytes;
    return o;
  }
  // Turn 2: turn 1, its answer and 140 new tokens (past the next HCA boundary).
  std::vector<int32_t> turn2(const Result& first) const {
    std::vector<int32_t> p = turn1_;
    for (const TokenInfo& t : first.tokens) p.push_back(t.id);
    for (int32_t t : prompt(9, 140)) p.push_back(t);
    return p;
  }
  // The reference: one worker that never stops, both turns (turn 2 from its memory cache).
  std::pair<Result, Result> never_stopped() {
    Worker w(*model_, *tok_, WorkerOptions{2, 8, 0, 64, size_t(256) << 20});
    Result a = wait(w.submit(params(turn1_, 6)));
    Result b = wait(w.submit(params(turn2(a), 8)));
    EXPECT_EQ(b.outcome.cached_tokens, 130 + 6 - 1);  // the final state: all but the last token run
    return {a, b};
  }
  // Turn 1 on a worker with the disk cache, which then stops: its file is the 135-token state.
  std::string turn1_file() {
    { Worker w(*model_, *tok_, options(size_t(256) << 20)); wait(w.submit(params(turn1_, 6))); }
    std::vector<std::string> f = files(dir_);
    EXPECT_EQ(f.size(), 1u);
    return f.empty() ? "" : f[0];
  }
  // Turn 2 on a fresh worker (nothing in memory) over the same directory.
  Result restarted(const Result& first, WorkerStats* stats) {
    Worker w(*model_, *tok_, options(size_t(256) << 20));
    Result r = wait(w.submit(params(turn2(first), 8)));
    *stats = w.stats();
    return r;
  }

  static inline Tokenizer* tok_ = nullptr;
  std::unique_ptr<Model> model_;
  std::string dir_;
  std::vector<int32_t> turn1_;
};

TEST_P(DiskCacheTest, RestartContinuesBitIdenticallyFromDisk) {
  const auto [first, second] = never_stopped();
  ASSERT_FALSE(turn1_file().empty());
  WorkerStats st;
  Result r = restarted(first, &st);
  EXPECT_EQ(r.outcome.cached_tokens, 135);  // from the file
  EXPECT_EQ(st.disk.hits, 1);
  EXPECT_EQ(st.disk.damaged, 0);
  EXPECT_EQ(st.tokens_cached, 135);
  expect_identical(r, second);
}

// A slow disk: the file becomes a FIFO that delivers its bytes only when the test writes them.
// Meanwhile the request waiting for it is not scheduled and another request runs to the end.
TEST_P(DiskCacheTest, ALoadInFlightDoesNotStallOtherSequences) {
  const auto [first, second] = never_stopped();
  const std::string f = turn1_file();
  ASSERT_FALSE(f.empty());
  const std::string bytes = read_bytes(f);
  Worker w(*model_, *tok_, options(size_t(256) << 20));
  fs::remove(f);
  ASSERT_EQ(::mkfifo(f.c_str(), 0644), 0);
  auto waiting = w.submit(params(turn2(first), 8));  // its reader blocks opening the FIFO
  Result other = wait(w.submit(params(prompt(7, 40), 6)));
  EXPECT_EQ(other.outcome.finish, Finish::kLength);
  std::vector<JobEvent> ev;
  EXPECT_FALSE(waiting->wait(&ev, std::chrono::milliseconds(0)));
  EXPECT_TRUE(ev.empty());
  std::thread disk([&] { write_bytes(f, bytes); });
  Result r = wait(waiting);
  disk.join();
  EXPECT_EQ(r.outcome.cached_tokens, 135);
  expect_identical(r, second);
}

TEST_P(DiskCacheTest, DamagedFilesAreDeletedCountedAndBypassed) {
  const auto [first, second] = never_stopped();
  auto other_numerics = Model::load(test::shared_dir() + "/golden/flash-mini",
                                    GetParam() == Numerics::kReference ? Numerics::kPlain : Numerics::kReference);
  auto other_model = Model::load(test::shared_dir() + "/golden/pro-mini", GetParam());
  // Another model's / numerics' state of the same tokens (or this model's of other tokens), as a
  // whole valid file.
  auto foreign = [&](const Model& m, std::vector<int32_t> t) {
    Session s(m, SessionOptions{0, 64, false});
    s.append(t);
    const std::string p = dir_ + ".foreign";
    save_session(s, p);
    std::string b = read_bytes(p);
    fs::remove(p);
    return b;
  };
  std::vector<int32_t> state = turn1_;
  for (size_t i = 0; i + 1 < first.tokens.size(); ++i) state.push_back(first.tokens[i].id);
  const std::string numerics_file = foreign(*other_numerics, state), model_file = foreign(*other_model, state);
  const std::string other_tokens_file = foreign(*model_, prompt(6, 135));
  const std::vector<std::pair<const char*, std::function<std::string(std::string)>>> damages = {
      {"flipped bit in a layer section", [](std::string b) { return flipped(b, b.size() / 2, 0x10); }},
      // A token id: after the header (32 B), the section's tag and length (12) and the array size (8).
      {"flipped bit in the token section", [](std::string b) { return flipped(b, 56, 0x01); }},
      {"truncated", [](std::string b) { return b.substr(0, b.size() * 2 / 3); }},
      {"other numerics", [&](std::string) { return numerics_file; }},
      {"other model", [&](std::string) { return model_file; }},
      {"other tokens", [&](std::string) { return other_tokens_file; }},
  };
  for (const auto& [what, damage] : damages) {
    SCOPED_TRACE(what);
    fs::remove_all(dir_);
    const std::string f = turn1_file();
    ASSERT_FALSE(f.empty());
    write_bytes(f, damage(read_bytes(f)));
    WorkerStats st;
    Result r = restarted(first, &st);
    EXPECT_EQ(st.disk.damaged, 1);
    EXPECT_EQ(st.disk.hits, 0);
    EXPECT_EQ(r.outcome.cached_tokens, 0);
    EXPECT_FALSE(fs::exists(f));
    EXPECT_EQ(ids(r), ids(second));  // prefilled from scratch: the same answer
  }
}

TEST_P(DiskCacheTest, SizeLimitEvictsLeastRecentlyUsedFiles) {
  const std::string f = turn1_file();
  ASSERT_FALSE(f.empty());
  const size_t one = fs::file_size(f);
  fs::remove_all(dir_);
  {
    // Room for two files of this size; three distinct prompts of the same length.
    Worker w(*model_, *tok_, options(0, 2 * one + one / 2));
    int64_t written = 0;
    for (int seed : {1, 2, 1, 3}) {
      wait(w.submit(params(prompt(seed, 130), 6)));
      if (seed != 1 || written == 0) wait_for_writes(w, ++written);
    }
    const WorkerStats st = w.stats();
    EXPECT_LE(st.disk.bytes, 2 * one + one / 2);
    EXPECT_EQ(st.disk.files, 2u);
    EXPECT_EQ(st.disk.evictions, 1);
  }
  // The survivors are prompt 3's and prompt 1's (refreshed by its second request), prompt 2's went:
  // a restart finds prompt 1's state (and the mtime order).
  Worker w(*model_, *tok_, options(0, 2 * one + one / 2));
  EXPECT_EQ(w.stats().disk.files, 2u);
  std::vector<int32_t> p = prompt(1, 130);
  Result again = wait(w.submit(params(prompt(1, 130), 6)));
  for (size_t i = 0; i + 1 < again.tokens.size(); ++i) p.push_back(again.tokens[i].id);
  p.push_back(7);
  EXPECT_EQ(wait(w.submit(params(p, 2))).outcome.cached_tokens, 135);
  std::vector<int32_t> q = prompt(2, 130);
  q.push_back(7);
  EXPECT_EQ(wait(w.submit(params(q, 2))).outcome.cached_tokens, 0);
}

TEST_P(DiskCacheTest, OneServerPerDirectory) {
  Worker w(*model_, *tok_, options(0));
  try {
    Worker second(*model_, *tok_, options(0));
    FAIL() << "a second worker on the same directory started";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another dsv4 serve uses this directory"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Numerics, DiskCacheTest, ::testing::Values(Numerics::kReference, Numerics::kPlain),
                         [](const auto& info) { return info.param == Numerics::kReference ? "reference" : "plain"; });

}  // namespace
}  // namespace dsv4::server
