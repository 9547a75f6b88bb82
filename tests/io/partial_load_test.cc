// TensorDirectory::open with a `keep` filter (expert parallelism: a process reads only the
// tensors it holds): every tensor is listed and validated, only kept ones are read.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace dsv4 {
namespace {

std::string write_two(const std::string& name) {
  const std::string path = testing::TempDir() + name;
  std::vector<uint8_t> a(size_t(3) << 20), b(size_t(3) << 20);  // larger than huge pages: whole pages unread
  std::iota(a.begin(), a.end(), uint8_t(1));
  std::iota(b.begin(), b.end(), uint8_t(7));
  for (auto& x : b) x |= 1;  // no zero byte: unread memory (zeros) cannot pass for it
  SafetensorsWriter w;
  w.add("held", DType::U8, {int64_t(a.size())}, a);
  w.add("other", DType::U8, {int64_t(b.size())}, b);
  w.write(path);
  return path;
}

TEST(PartialLoad, CopyReadsOnlyKeptTensors) {
  const std::string path = write_two("partial_copy.safetensors");
  auto full = TensorDirectory::open(path, Residency::kCopy);
  auto part = TensorDirectory::open(path, Residency::kCopy, [](const std::string& n) { return n == "held"; });
  ASSERT_TRUE(part->copied());
  ASSERT_EQ(part->tensors().size(), 2u);  // listed and validated all the same
  const TensorView &h = part->get("held"), &o = part->get("other");
  EXPECT_EQ(0, std::memcmp(h.data, full->get("held").data, h.nbytes));
  // The other tensor's bytes were never read: its pages are untouched anonymous memory.
  size_t nonzero = 0;
  for (size_t i = 0; i < o.nbytes; ++i) nonzero += o.data[i] != 0;
  EXPECT_LT(nonzero, size_t(64) << 10) << "most of 'other' should be unread";
  std::remove(path.c_str());
}

TEST(PartialLoad, MappedKeepsEveryByteReadable) {
  const std::string path = write_two("partial_map.safetensors");
  auto full = TensorDirectory::open(path, Residency::kMap);
  auto part = TensorDirectory::open(path, Residency::kMap, [](const std::string& n) { return n == "held"; });
  for (const char* n : {"held", "other"})
    EXPECT_EQ(0, std::memcmp(part->get(n).data, full->get(n).data, part->get(n).nbytes)) << n;
  std::remove(path.c_str());
}

TEST(PartialLoad, BadFileStillRefused) {
  const std::string path = testing::TempDir() + "partial_bad.safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fputs("\xff\xff\xff\xff\xff\xff\x00\x00{}", f);
  std::fclose(f);
  EXPECT_THROW(TensorDirectory::open(path, Residency::kCopy, [](const std::string&) { return true; }), Error);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace dsv4
