// A read job's `done` (the expert cache's FP4 tiling) has run, after all its bytes landed, when
// wait() returns, now that it runs on the reader's finisher thread rather than a reader's; a job
// cancelled while queued reads nothing and runs no `done`; the reads-in-flight bookkeeping stays
// within its bounds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "io/expert_reader.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

// A 1 MB file of byte pattern i·mul + add in `dir`: its path, and its bytes in *data.
std::string pattern_file(const test::TempDir& dir, uint8_t mul, uint8_t add, std::vector<uint8_t>* data) {
  const std::string path = dir.str() + "/f.bin";
  data->resize(size_t(1) << 20);
  for (size_t i = 0; i < data->size(); ++i) (*data)[i] = uint8_t(i * mul + add);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data->data()), std::streamsize(data->size()));
  return path;
}

// n reads of 4 KB of file f, cycling over its first MB, into the same place of buf (1 MB): a queue
// the reader needs a while for.
std::vector<DirectReader::Range> small_reads(int f, uint8_t* buf, int n) {
  std::vector<DirectReader::Range> ranges;
  for (int i = 0; i < n; ++i) ranges.push_back({f, uint64_t(i % 256) * 4096, 4096, 4096, buf + (i % 256) * 4096});
  return ranges;
}

TEST(ExpertReader, DoneHasRunWhenWaitReturns) {
  test::TempDir dir("tile_done");
  std::vector<uint8_t> data;
  const std::string path = pattern_file(dir, 31, 5, &data);
  for (ReadEngine engine : {ReadEngine::kThreads, ReadEngine::kUring}) {
    DirectReader reader(4, engine);
    const int f = reader.open(path);
    alignas(4096) static uint8_t buf[8][65536];
    std::atomic<int> done_count{0};
    std::vector<std::shared_ptr<DirectReader::Job>> jobs;
    for (int j = 0; j < 8; ++j)
      jobs.push_back(reader.submit({{f, uint64_t(j) * 65536, 65536, 65536, buf[j]}}, [&, j] {
        buf[j][0] ^= 0xff;  // the job's bytes are all there when `done` runs
        done_count.fetch_add(1);
      }));
    for (int j = 0; j < 8; ++j) {
      jobs[size_t(j)]->wait();
      EXPECT_EQ(jobs[size_t(j)]->error(), "");
      EXPECT_EQ(buf[j][0], uint8_t(data[size_t(j) * 65536] ^ 0xff)) << reader.engine_name() << " job " << j;
      EXPECT_EQ(std::memcmp(buf[j] + 1, data.data() + size_t(j) * 65536 + 1, 65535), 0) << reader.engine_name();
    }
    EXPECT_EQ(done_count.load(), 8) << reader.engine_name();
  }
}


// Behind a long job on a one-read-deep reader, a second job is still queued when cancelled: it
// finishes at once with kCancelled, its buffer untouched and its `done` not run, and the reader
// goes on with the first job and later ones. A job being read or done cannot be cancelled.
TEST(ExpertReader, CancelTakesBackAQueuedJobOnly) {
  test::TempDir dir("cancel");
  std::vector<uint8_t> data;
  const std::string path = pattern_file(dir, 13, 1, &data);
  for (ReadEngine engine : {ReadEngine::kThreads, ReadEngine::kUring}) {
    DirectReader reader(1, engine);
    const int f = reader.open(path);
    alignas(4096) static uint8_t big[1 << 20], small[65536];
    int cancelled = 0;
    for (int attempt = 0; attempt < 5 && cancelled == 0; ++attempt) {
      auto first = reader.submit(small_reads(f, big, 4096));
      std::memset(small, 0xA5, sizeof small);
      std::atomic<bool> done_ran{false};
      auto second = reader.submit({{f, 0, 65536, 65536, small}}, [&] { done_ran = true; });
      if (reader.cancel(second)) {
        ++cancelled;
        EXPECT_TRUE(second->finished()) << reader.engine_name();
        EXPECT_EQ(second->error(), DirectReader::kCancelled);
        EXPECT_FALSE(reader.cancel(second)) << "cancelled twice";
      }
      first->wait();
      second->wait();
      EXPECT_EQ(first->error(), "") << reader.engine_name();
      EXPECT_EQ(std::memcmp(big, data.data(), sizeof big), 0) << reader.engine_name();
      if (second->error().empty()) {  // it had started: read whole, done run
        EXPECT_TRUE(done_ran.load());
        EXPECT_EQ(std::memcmp(small, data.data(), sizeof small), 0);
      } else {
        EXPECT_FALSE(done_ran.load()) << "a cancelled job ran its done";
        for (uint8_t b : small) ASSERT_EQ(b, 0xA5) << "a cancelled job wrote its buffer";
      }
      EXPECT_FALSE(reader.cancel(first)) << "a finished job was cancelled";
    }
    EXPECT_GT(cancelled, 0) << reader.engine_name() << ": the queued job was never still queued";
    auto after = reader.submit({{f, 65536, 65536, 65536, small}});  // the reader still reads
    after->wait();
    EXPECT_EQ(after->error(), "");
    EXPECT_EQ(std::memcmp(small, data.data() + 65536, sizeof small), 0) << reader.engine_name();
  }
}

// The depth bookkeeping: while busy at least one read and at most `depth` are in flight, so the
// integral lies between busy and depth × busy seconds, and the time at full depth within busy;
// one read deep, all three are the same time.
TEST(ExpertReader, DepthSecondsLieWithinBusySeconds) {
  test::TempDir dir("depth");
  std::vector<uint8_t> data;
  const std::string path = pattern_file(dir, 7, 3, &data);
  for (ReadEngine engine : {ReadEngine::kThreads, ReadEngine::kUring})
    for (int depth : {1, 4}) {
      DirectReader reader(depth, engine);
      EXPECT_EQ(reader.depth(), depth);
      const int f = reader.open(path);
      alignas(4096) static uint8_t buf[1 << 20];
      reader.submit(small_reads(f, buf, 2048))->wait();
      const DirectReader::Times t = reader.times();
      const double busy = t.busy, depth_s = t.depth, full = t.full;
      const double eps = 1e-9 + 1e-9 * busy;
      EXPECT_GT(busy, 0) << reader.engine_name();
      EXPECT_GE(depth_s, busy - eps) << reader.engine_name() << " depth " << depth;
      EXPECT_LE(depth_s, depth * busy + eps) << reader.engine_name() << " depth " << depth;
      EXPECT_GE(full, 0);
      EXPECT_LE(full, busy + eps) << reader.engine_name() << " depth " << depth;
      if (depth == 1) {
        EXPECT_NEAR(depth_s, busy, 1e-6 + 1e-6 * busy) << reader.engine_name();
        EXPECT_NEAR(full, busy, 1e-6 + 1e-6 * busy) << reader.engine_name();
      }
    }
}

}  // namespace
}  // namespace dsv4
