// The expert cache's fast FP4 tiling gives kernels::tile_fp4's bytes exactly, on every shape the
// fast path takes and on one it leaves to tile_fp4; and a read job's `done` (the tiling) has run
// when wait() returns, now that it runs on the reader's finisher thread.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/expert_reader.h"
#include "kernels/linear.h"
#include "model/expert_cache_tile.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

TEST(ExpertCacheTile, SameBytesAsKernelsTileFp4) {
  std::mt19937 rng(7);
  // (out, in): flash's w1/w3 and w2 shapes, small ones, and in = 96 (rows of 48 bytes: tile_fp4 itself).
  const std::pair<int64_t, int64_t> shapes[] = {{2048, 4096}, {4096, 2048}, {16, 128}, {48, 256}, {32, 96}};
  for (auto [out, in] : shapes) {
    std::vector<uint8_t> w(size_t(out * in / 2)), s(size_t(out * in / 32));
    for (auto& b : w) b = uint8_t(rng());
    for (auto& b : s) b = uint8_t(rng());
    std::vector<uint8_t> w_ref = w, s_ref = s;
    kernels::tile_fp4(w_ref.data(), s_ref.data(), out, in);
    tile_fp4_streamed(w.data(), s.data(), out, in);
    EXPECT_EQ(w, w_ref) << out << " x " << in << " weights";
    EXPECT_EQ(s, s_ref) << out << " x " << in << " scales";
  }
}

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
