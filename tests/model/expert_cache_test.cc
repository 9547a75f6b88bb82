// Routed experts streamed from disk through the expert cache (issue 16): the logits are
// bit-identical to the fully resident model (same kernels, same order) with a budget that forces
// evictions, on the golden checkpoints and on a synthetic stack; a file truncated after loading,
// a read error and a budget too small for one token's experts are clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/expert_reader.h"
#include "model/expert_cache.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

std::vector<int32_t> some_ids(int64_t n, int64_t vocab, int32_t salt) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(int32_t((i * 7919 + salt * 104729 + 13) % vocab));
  return ids;
}

// Logits of a prefill of `prompt` tokens (all rows) and then `decode` single-token steps.
std::vector<float> run_logits(const Model& m, int64_t prompt, int decode) {
  const int64_t V = m.config().vocab_size;
  SequenceState st = m.new_sequence();
  ForwardOutput out;
  std::vector<int32_t> ids = some_ids(prompt + decode, V, 3);
  m.forward(&st, std::span<const int32_t>(ids.data(), size_t(prompt)), LogitsMode::kAll, &out);
  std::vector<float> all = out.logits;
  for (int i = 0; i < decode; ++i) {
    m.forward(&st, std::span<const int32_t>(&ids[size_t(prompt + i)], 1), LogitsMode::kLast, &out);
    all.insert(all.end(), out.logits.begin(), out.logits.end());
  }
  return all;
}

// A budget of `slots` experts of this checkpoint.
size_t budget_for(const std::string& dir, size_t slots) {
  std::unique_ptr<Model> probe = Model::load(dir, Numerics::kReference, nullptr, Residency::kMap);
  return slots * ExpertCache::slot_bytes_for(probe->config(), probe->weights(), probe->tensors());
}

void expect_streaming_identical(const std::string& dir, Numerics numerics, size_t slots) {
  ThreadPool pool(2);  // two threads: long prompts take the whole-experts-per-thread path
  std::unique_ptr<Model> resident = Model::load(dir, numerics, &pool, Residency::kCopy);
  std::unique_ptr<Model> streamed = Model::load(dir, numerics, &pool, Residency::kCopy, budget_for(dir, slots));
  ASSERT_EQ(resident->expert_cache(), nullptr);
  ASSERT_NE(streamed->expert_cache(), nullptr);
  EXPECT_EQ(streamed->expert_cache()->slots(), slots);
  const int E = resident->config().n_routed_experts;
  for (int64_t prompt : {int64_t(3), int64_t(48)}) {  // 48 tokens: > 8 experts per thread active
    SCOPED_TRACE(cat("prompt ", prompt));
    const std::vector<float> want = run_logits(*resident, prompt, 6);
    const std::vector<float> got = run_logits(*streamed, prompt, 6);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << "logits differ";
  }
  const ExpertCacheStats s = streamed->expert_cache()->stats();
  // Fewer slots than experts in use: the cache evicted and read experts again.
  EXPECT_GT(s.loads, uint64_t(slots));
  EXPECT_LT(slots, size_t(E) * size_t(resident->config().n_layers));
  // Every read is a miss of acquire(), or a prefetch: known experts (used later) or predicted ones.
  EXPECT_GE(s.uses + s.predicted, s.loads);
  EXPECT_LE(s.predicted_used, s.predicted);
  EXPECT_LE(s.cancelled, s.predicted - s.predicted_used);  // only wrong guesses are taken back
  EXPECT_LE(s.used_bytes, s.bytes_read);
  EXPECT_GT(s.used_bytes, uint64_t(0));
  EXPECT_LE(s.used_loads, s.loads);
  EXPECT_GE(s.hit_rate(), 0.0);
  EXPECT_LE(s.hit_rate(), 1.0);
  bool score_layer_after_first = false;  // the layers whose experts decode predicts
  for (int l = 1; l < resident->config().n_layers; ++l) score_layer_after_first |= !resident->config().is_hash_layer(l);
  if (score_layer_after_first) {
    EXPECT_GT(s.predicted, uint64_t(0)) << "decode predicted no experts";
  }
  EXPECT_GT(s.bytes_read, uint64_t(0));
  // The head passes were timed, and the disk idled through part of them (nothing is read after the
  // last layer's experts until the next token), never through more than all of them.
  EXPECT_GT(s.head_s, 0.0);
  EXPECT_GT(s.head_idle_s, 0.0);
  EXPECT_LE(s.head_idle_s, s.head_s);
}

class ExpertCacheGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ExpertCacheGolden, StreamedLogitsAreBitIdenticalToResident) {
  DSV4_REQUIRE_SHARED();
  if (GetParam() == "none") GTEST_SKIP() << "no golden cases";
  const std::string dir = test::shared_dir() + "/golden/" + GetParam();
  std::unique_ptr<Model> m = Model::load(dir);
  const size_t K = size_t(m->config().n_activated_experts);
  for (Numerics n : {Numerics::kReference, Numerics::kPlain}) expect_streaming_identical(dir, n, K + 2);
}

INSTANTIATE_TEST_SUITE_P(Cases, ExpertCacheGolden, ::testing::ValuesIn(test::golden_cases()));

// Both read engines where this build has them (io_uring only with liburing).
std::vector<ReadEngine> engines() {
  std::vector<ReadEngine> e{ReadEngine::kThreads};
  if (DirectReader::uring_built()) e.push_back(ReadEngine::kUring);
  return e;
}

TEST(ExpertCache, SyntheticStackStreamedIsBitIdentical) {
  TempDir dir("stack");
  write_synthetic_checkpoint(preset_config("tiny", 4, 32), dir.str(), 5);
  for (ReadEngine e : engines()) {  // through each read engine (the cache picks it from the environment)
    SCOPED_TRACE(e == ReadEngine::kUring ? "io_uring" : "threads");
    ::setenv("DSV4_EXPERT_READER", e == ReadEngine::kUring ? "io_uring" : "threads", 1);
    expect_streaming_identical(dir.str(), Numerics::kReference, 9);
  }
  ::unsetenv("DSV4_EXPERT_READER");
}

TEST(ExpertCache, BudgetBelowOneTokensExpertsIsAClearError) {
  DSV4_REQUIRE_SHARED();
  const std::string dir = test::shared_dir() + "/golden/flash-mini";
  std::unique_ptr<Model> m = Model::load(dir);
  const size_t K = size_t(m->config().n_activated_experts);
  try {
    Model::load(dir, Numerics::kReference, nullptr, Residency::kCopy, budget_for(dir, K - 1));
    FAIL() << "a budget of K-1 experts was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert cache budget"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("give at least"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(Model::load(dir, Numerics::kReference, nullptr, Residency::kCopy, budget_for(dir, K)));
}

// The checkpoint's files shrink after the model was loaded: the next expert read says so (an
// Error naming the file), and the model keeps failing cleanly instead of computing garbage.
TEST(ExpertCache, FileTruncatedAfterLoadingIsAClearError) {
  for (ReadEngine engine : engines()) {
    SCOPED_TRACE(engine == ReadEngine::kUring ? "io_uring" : "threads");
    ::setenv("DSV4_EXPERT_READER", engine == ReadEngine::kUring ? "io_uring" : "threads", 1);
    TempDir dir("truncated");
    write_synthetic_checkpoint(preset_config("tiny", 4, 32), dir.str(), 5);
    ThreadPool pool(1);
    std::unique_ptr<Model> m = Model::load(dir.str(), Numerics::kReference, &pool, Residency::kCopy, budget_for(dir.str(), 8));
    ::unsetenv("DSV4_EXPERT_READER");
    for (const auto& e : fs::directory_iterator(dir.str()))
      if (e.path().extension() == ".safetensors") fs::resize_file(e.path(), fs::file_size(e.path()) / 3);
    for (int attempt = 0; attempt < 2; ++attempt) {
      SequenceState st = m->new_sequence();
      ForwardOutput out;
      const std::vector<int32_t> ids = some_ids(20, m->config().vocab_size, 1);
      try {
        m->forward(&st, ids, LogitsMode::kLast, &out);
        FAIL() << "forward over a truncated checkpoint succeeded";
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("truncated"), std::string::npos) << what;
        EXPECT_NE(what.find(".safetensors"), std::string::npos) << what;
      }
    }
  }
}

class ExpertReaderEngine : public ::testing::TestWithParam<ReadEngine> {
 protected:
  // A reader on the engine under test; fails the test if the engine asked for did not start.
  std::unique_ptr<DirectReader> make(int depth) {
    auto r = std::make_unique<DirectReader>(depth, GetParam());
    EXPECT_EQ(r->engine(), GetParam()) << "the io_uring engine did not start (kernel refused io_uring?)";
    return r;
  }
};

INSTANTIATE_TEST_SUITE_P(Engines, ExpertReaderEngine, ::testing::ValuesIn(engines()),
                         [](const auto& info) { return info.param == ReadEngine::kUring ? "io_uring" : "threads"; });

// A read the kernel refuses (here: a directory) comes back as the job's error, naming the file.
TEST_P(ExpertReaderEngine, ReadErrorIsReportedWithTheFile) {
  TempDir dir("eio");
  auto reader_ptr = make(2);
  DirectReader& reader = *reader_ptr;
  const int f = reader.open(dir.str());
  alignas(4096) static uint8_t buf[8192];
  auto job = reader.submit({{f, 0, 8192, 4096, buf}});
  job->wait();
  EXPECT_NE(job->error().find(dir.str()), std::string::npos) << job->error();
  EXPECT_NE(job->error().find("cannot read"), std::string::npos) << job->error();
}

// Ranges are read exactly, including ones split over several reads in flight and a short tail.
TEST_P(ExpertReaderEngine, ReadsAlignedRangesExactly) {
  TempDir dir("read");
  const std::string path = dir.str() + "/f.bin";
  std::vector<uint8_t> data(3 * (1 << 20) + 12345);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 131 + i / 4096);
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fwrite(data.data(), 1, data.size(), fp), data.size());
  std::fclose(fp);
  auto reader_ptr = make(3);
  DirectReader& reader = *reader_ptr;
  const int f = reader.open(path);
  const size_t len = (data.size() - 8192 + 4095) / 4096 * 4096;
  std::vector<uint8_t> out(len + 8192 + 4096);  // room for the read past the end too
  uint8_t* dst = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(out.data()) + 4095) / 4096 * 4096);
  auto job = reader.submit({{f, 8192, len, data.size() - 8192, dst}});
  job->wait();
  ASSERT_EQ(job->error(), "");
  EXPECT_EQ(std::memcmp(dst, data.data() + 8192, data.size() - 8192), 0);
  // Past the end of the file: an error that says the file is shorter than needed.
  auto past = reader.submit({{f, 8192, len + 8192, len + 8192, dst}});
  past->wait();
  EXPECT_NE(past->error().find("truncated"), std::string::npos) << past->error();
  // Many jobs at once, more pieces than reads in flight, each read whole (pieces of 4 MB: a
  // 9 MB range is three of them).
  const size_t big = 9 << 20;
  std::vector<uint8_t> bigdata(big + 6 * 4096);
  for (size_t i = 0; i < bigdata.size(); ++i) bigdata[i] = uint8_t(i * 7 + i / 65536);
  const std::string bigpath = dir.str() + "/big.bin";
  fp = std::fopen(bigpath.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fwrite(bigdata.data(), 1, bigdata.size(), fp), bigdata.size());
  std::fclose(fp);
  const int g = reader.open(bigpath);
  std::vector<uint8_t> many(6 * big + 4096);
  uint8_t* at = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(many.data()) + 4095) / 4096 * 4096);
  std::vector<std::shared_ptr<DirectReader::Job>> jobs;
  for (size_t j = 0; j < 6; ++j) jobs.push_back(reader.submit({{g, 4096 * j, big, big, at + j * big}}));
  for (size_t j = 0; j < 6; ++j) {
    jobs[j]->wait();
    ASSERT_EQ(jobs[j]->error(), "");
    EXPECT_EQ(std::memcmp(at + j * big, bigdata.data() + 4096 * j, big), 0) << "job " << j;
  }
}

// The engine comes from DSV4_EXPERT_READER; another value is a clear error.
TEST(ExpertReader, EngineFromTheEnvironment) {
  ::setenv("DSV4_EXPERT_READER", "threads", 1);
  EXPECT_EQ(DirectReader::default_engine(), ReadEngine::kThreads);
  ::setenv("DSV4_EXPERT_READER", "io_uring", 1);
  EXPECT_EQ(DirectReader::default_engine(), ReadEngine::kUring);
  ::setenv("DSV4_EXPERT_READER", "aio", 1);
  try {
    DirectReader::default_engine();
    ADD_FAILURE() << "DSV4_EXPERT_READER=aio was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DSV4_EXPERT_READER"), std::string::npos) << e.what();
  }
  ::unsetenv("DSV4_EXPERT_READER");
  EXPECT_EQ(DirectReader::default_engine(), DirectReader::kDefaultEngine);
}

}  // namespace
}  // namespace dsv4
