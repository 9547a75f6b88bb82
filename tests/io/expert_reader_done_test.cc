// A read job's `done` (the expert cache's FP4 tiling) has run, after all its bytes landed, when
// wait() returns, now that it runs on the reader's finisher thread rather than a reader's.
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

TEST(ExpertReader, DoneHasRunWhenWaitReturns) {
  test::TempDir dir("tile_done");
  const std::string path = dir.str() + "/f.bin";
  std::vector<uint8_t> data(size_t(1) << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 31 + 5);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
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

}  // namespace
}  // namespace dsv4
