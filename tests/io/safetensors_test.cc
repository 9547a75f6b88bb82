// Safetensors reader: a round trip, then every kind of damage a checkpoint can carry. Each must
// be refused with a dsv4::Error that names the file and, where there is one, the tensor — a
// loader that crashes or quietly loads the wrong bytes is worse than one that refuses.
#include "io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors_writer.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Runs f and returns the message of the dsv4::Error it throws. Any other exception escapes and
// fails the test on its own; no exception at all is a failure too.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a dsv4::Error";
  return {};
}

// A safetensors image from a header text and data bytes (the length prefix is little-endian).
std::string image(const std::string& header, const std::string& data = std::string()) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint8_t(n >> (8 * i)));
  return out + header + data;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           cat("dsv4_safetensors_", info->name(), "_", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& bytes) const {
    std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }
  // A one-tensor file whose header is `entry` for tensor "w", with `data` bytes after it.
  std::string one(const std::string& entry, size_t data_bytes) const {
    return write("bad.safetensors", image("{\"w\":" + entry + "}", std::string(data_bytes, '\x01')));
  }
  // Opening `path` must fail naming the file and every one of `names`.
  void expect_refused(const std::string& path, std::initializer_list<std::string> names,
                      const std::string& file_name = "bad.safetensors") const {
    std::string msg = error_of([&] { TensorDirectory::open(path); });
    EXPECT_THAT(msg, HasSubstr(file_name));
    for (const auto& n : names) EXPECT_THAT(msg, HasSubstr("'" + n + "'"));
  }
  void write_index(const std::string& weight_map_json) const {
    write("model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":" + weight_map_json + "}");
  }
  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripThroughWriter) {
  SafetensorsWriter w;
  w.add_f32("a.weight", {2, 3}, {1, 2, 3, 4, 5, 6});
  w.add_i32("b", {4}, {-1, 0, 7, 1 << 30});
  w.add("c.bf16", DType::BF16, {2}, {0x80, 0x3f, 0x00, 0xc0});  // 1.0, -2.0
  w.add("d.empty", DType::I8, {0, 5}, {});
  w.set_metadata("format", "pt");
  const std::string path = (dir_ / "x.safetensors").string();
  w.write(path);

  // The file and its directory, each mapped and copied (--mmap / --no-mmap).
  for (const std::string& open_path : {path, dir_.string()}) {
    for (Residency residency : {Residency::kMap, Residency::kCopy}) {
      SCOPED_TRACE(open_path + (residency == Residency::kCopy ? " copied" : " mapped"));
      auto d = TensorDirectory::open(open_path, residency);
      EXPECT_EQ(d->copied(), residency == Residency::kCopy);
      ASSERT_EQ(d->tensors().size(), 4u);
      const TensorView& a = d->get("a.weight");
      EXPECT_EQ(a.dtype, DType::F32);
      EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
      EXPECT_EQ(test::f32s(a), (std::vector<float>{1, 2, 3, 4, 5, 6}));
      EXPECT_EQ(test::i32s(d->get("b")), (std::vector<int32_t>{-1, 0, 7, 1 << 30}));
      const TensorView& c = d->get("c.bf16");
      uint16_t h[2];
      std::memcpy(h, c.data, 4);
      EXPECT_EQ(bf16_to_f32(h[0]), 1.0f);
      EXPECT_EQ(bf16_to_f32(h[1]), -2.0f);
      EXPECT_EQ(d->get("d.empty").nbytes, 0u);
      EXPECT_EQ(d->total_bytes(), 24u + 16u + 4u);
      EXPECT_EQ(*a.file, path);
      EXPECT_EQ(d->find("nope"), nullptr);
      EXPECT_THAT(error_of([&] { d->get("nope"); }), HasSubstr("'nope'"));
    }
  }
}

// A copy (--no-mmap) moves every tensor to a 64-byte boundary — the format packs them back to
// back after a header of any length, so in the file most start mid cache line — keeping its
// bytes, and still knows where each lies in the file. Tensors of odd sizes, a header of odd
// length and an empty tensor between them; the mapping keeps the file's layout.
TEST_F(SafetensorsTest, CopiedTensorsStartOnCacheLines) {
  SafetensorsWriter w;
  std::vector<std::vector<uint8_t>> bytes;
  for (int i = 0; i < 40; ++i) {
    std::vector<uint8_t> b(size_t(1 + (i * 37) % 300));
    for (size_t k = 0; k < b.size(); ++k) b[k] = uint8_t(i * 7 + k);
    w.add(cat("t", i), DType::I8, {int64_t(b.size())}, b);
    if (i == 20) w.add("empty", DType::I8, {0}, {});
    bytes.push_back(std::move(b));
  }
  w.set_metadata("odd", "x");
  const std::string path = (dir_ / "odd.safetensors").string();
  w.write(path);
  auto mapped = TensorDirectory::open(path, Residency::kMap);
  auto copied = TensorDirectory::open(path, Residency::kCopy);
  int misaligned_in_file = 0;
  for (int i = 0; i < 40; ++i) {
    SCOPED_TRACE(cat("t", i));
    const TensorView& m = mapped->get(cat("t", i));
    const TensorView& c = copied->get(cat("t", i));
    misaligned_in_file += reinterpret_cast<uintptr_t>(m.data) % 64 != 0;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(c.data) % 64, 0u);
    ASSERT_EQ(c.nbytes, bytes[size_t(i)].size());
    EXPECT_EQ(std::vector<uint8_t>(c.data, c.data + c.nbytes), bytes[size_t(i)]);
    EXPECT_EQ(std::vector<uint8_t>(m.data, m.data + m.nbytes), bytes[size_t(i)]);
    EXPECT_EQ(copied->offset_of(c), mapped->offset_of(m));
    EXPECT_EQ(&copied->file_of(c), copied->files().front().get());
  }
  EXPECT_GT(misaligned_in_file, 30);  // the case is real: the file's own layout is unaligned
  EXPECT_EQ(copied->get("empty").nbytes, 0u);
}

TEST_F(SafetensorsTest, ParsesInMemoryImage) {
  std::string img = image(R"({"__metadata__":{"k":"v"},"t":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
                          std::string(16, '\0'));
  auto views = parse_safetensors(reinterpret_cast<const uint8_t*>(img.data()), img.size(), nullptr);
  ASSERT_EQ(views.size(), 1u);
  EXPECT_EQ(views[0].name, "t");
  EXPECT_EQ(views[0].nbytes, 16u);
  EXPECT_EQ(reinterpret_cast<const char*>(views[0].data), img.data() + img.size() - 16);
}

TEST_F(SafetensorsTest, TruncatedDataIsRefused) {
  SafetensorsWriter w;
  w.add_f32("first", {4}, {1, 2, 3, 4});
  w.add_f32("second", {4}, {5, 6, 7, 8});
  const std::string path = (dir_ / "bad.safetensors").string();
  w.write(path);
  fs::resize_file(path, fs::file_size(path) - 3);  // cuts into the last tensor only
  for (Residency residency : {Residency::kMap, Residency::kCopy}) {
    std::string msg = error_of([&] { TensorDirectory::open(path, residency); });
    EXPECT_THAT(msg, AllOf(HasSubstr("bad.safetensors"), HasSubstr("'second'"), HasSubstr("truncated")));
  }
}

TEST_F(SafetensorsTest, FileShorterThanLengthPrefix) {
  EXPECT_THAT(error_of([&] { TensorDirectory::open(write("bad.safetensors", "abc")); }),
              AllOf(HasSubstr("bad.safetensors"), HasSubstr("truncated")));
  EXPECT_THAT(error_of([&] { TensorDirectory::open(write("bad.safetensors", "")); }),
              HasSubstr("bad.safetensors"));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  std::string img = image("{}");
  img[0] = char(0xff);  // header length 255 in a 10-byte file
  EXPECT_THAT(error_of([&] { TensorDirectory::open(write("bad.safetensors", img)); }),
              AllOf(HasSubstr("bad.safetensors"), HasSubstr("header length")));
  std::string huge(8, char(0xff));  // 2^64 - 1: must not wrap around in the size check
  EXPECT_THAT(error_of([&] { TensorDirectory::open(write("bad.safetensors", huge + "{}")); }),
              HasSubstr("header length"));
}

TEST_F(SafetensorsTest, HeaderThatIsNotJsonOrNotAnObject) {
  for (const char* h : {"garbage!", "{\"w\": {", "\xff\xfe\x00\x01", "{\"a\":1}}"})
    EXPECT_THAT(error_of([&] { TensorDirectory::open(write("bad.safetensors", image(h))); }),
                AllOf(HasSubstr("bad.safetensors"), HasSubstr("not valid JSON")))
        << h;
  for (const char* h : {"[1, 2]", "\"text\"", "42", "null"})
    EXPECT_THAT(error_of([&] { TensorDirectory::open(write("bad.safetensors", image(h))); }),
                AllOf(HasSubstr("bad.safetensors"), HasSubstr("not a JSON object")))
        << h;
}

TEST_F(SafetensorsTest, MalformedEntriesNameTheTensor) {
  const char* entries[] = {
      R"("not an object")",
      R"({"shape":[1],"data_offsets":[0,1]})",                     // no dtype
      R"({"dtype":"U8","data_offsets":[0,1]})",                    // no shape
      R"({"dtype":"U8","shape":[1]})",                             // no data_offsets
      R"({"dtype":"F4_E2M1","shape":[1],"data_offsets":[0,1]})",   // unknown dtype
      R"({"dtype":7,"shape":[1],"data_offsets":[0,1]})",           // dtype not a string
      R"({"dtype":"U8","shape":1,"data_offsets":[0,1]})",          // shape not an array
      R"({"dtype":"U8","shape":[1.5],"data_offsets":[0,1]})",      // fractional dimension
      R"({"dtype":"U8","shape":[-1],"data_offsets":[0,1]})",       // negative dimension
      R"({"dtype":"U8","shape":[1],"data_offsets":[0]})",          // one offset
      R"({"dtype":"U8","shape":[1],"data_offsets":[-1,0]})",       // negative offset
      R"({"dtype":"U8","shape":[1],"data_offsets":["0","1"]})",    // offsets as strings
  };
  for (const char* e : entries) {
    SCOPED_TRACE(e);
    expect_refused(one(e, 4), {"w"});
  }
}

TEST_F(SafetensorsTest, UnknownDtypeIsNamed) {
  std::string msg = error_of([&] { TensorDirectory::open(one(R"({"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]})", 4)); });
  EXPECT_THAT(msg, AllOf(HasSubstr("bad.safetensors"), HasSubstr("'w'"), HasSubstr("Q4_K")));
}

TEST_F(SafetensorsTest, ShapeAndOffsetsDisagree) {
  // F32 [3] needs 12 bytes; the offsets give 8.
  expect_refused(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 16), {"w"});
  // A shape whose byte size wraps around 2^64 (I64 × (2^61 + 1) = 2^64 + 8) must not pass as
  // 8 bytes: the view would claim far more elements than its bytes hold.
  expect_refused(one(R"({"dtype":"I64","shape":[2305843009213693953],"data_offsets":[0,8]})", 8), {"w"});
  expect_refused(one(R"({"dtype":"U8","shape":[4294967296,4294967296,4],"data_offsets":[0,8]})", 8), {"w"});
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  std::string msg = error_of([&] { TensorDirectory::open(one(R"({"dtype":"U8","shape":[0],"data_offsets":[4,2]})", 8)); });
  EXPECT_THAT(msg, AllOf(HasSubstr("bad.safetensors"), HasSubstr("'w'"), HasSubstr("begin > end")));
}

TEST_F(SafetensorsTest, OffsetsPastTheEnd) {
  expect_refused(one(R"({"dtype":"U8","shape":[4],"data_offsets":[6,10]})", 8), {"w"});
  expect_refused(one(R"({"dtype":"U8","shape":[0],"data_offsets":[9,9]})", 8), {"w"});
  expect_refused(one(R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]})", 8),
                 {"w"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  auto refuse = [&](const std::string& header, std::initializer_list<std::string> names) {
    SCOPED_TRACE(header);
    expect_refused(write("bad.safetensors", image(header, std::string(64, '\0'))), names);
  };
  refuse(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},
             "b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", {"a", "b"});
  refuse(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
             "b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", {"a", "b"});
  // An empty tensor between two overlapping ones in data order used to hide the overlap (only
  // neighbours were compared): the check must compare against the furthest end so far.
  refuse(R"({"big":{"dtype":"U8","shape":[40],"data_offsets":[0,40]},
             "empty":{"dtype":"U8","shape":[0],"data_offsets":[10,10]},
             "late":{"dtype":"U8","shape":[8],"data_offsets":[30,38]}})", {"big", "late"});
  refuse(R"({"a":{"dtype":"U8","shape":[10],"data_offsets":[10,20]},
             "e":{"dtype":"U8","shape":[0],"data_offsets":[10,10]},
             "c":{"dtype":"U8","shape":[10],"data_offsets":[15,25]}})", {"a", "c"});
  // Touching is fine; so is an empty tensor anywhere.
  std::string ok = image(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                             "e":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},
                             "b":{"dtype":"U8","shape":[8],"data_offsets":[8,16]}})", std::string(16, '\0'));
  EXPECT_EQ(TensorDirectory::open(write("ok.safetensors", ok))->tensors().size(), 3u);
}

TEST_F(SafetensorsTest, TensorNamedTwiceInOneHeader) {
  expect_refused(write("bad.safetensors",
                       image(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
                                 "w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "abcd")),
                 {"w"});
}

// ---- sharded checkpoints (model.safetensors.index.json) -------------------------------------

class ShardedTest : public SafetensorsTest {
 protected:
  void SetUp() override {
    SafetensorsTest::SetUp();
    SafetensorsWriter a, b;
    a.add_f32("x", {2}, {1, 2});
    a.add_f32("y", {1}, {3});
    b.add_f32("z", {3}, {4, 5, 6});
    a.write((dir_ / "model-00001-of-00002.safetensors").string());
    b.write((dir_ / "model-00002-of-00002.safetensors").string());
  }
  static constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
  static constexpr const char* kShard2 = "model-00002-of-00002.safetensors";
};

TEST_F(ShardedTest, ValidIndexLoadsAllShards) {
  write_index(R"({"x":"model-00001-of-00002.safetensors","y":"model-00001-of-00002.safetensors",
                  "z":"model-00002-of-00002.safetensors"})");
  auto d = TensorDirectory::open(dir_.string());
  EXPECT_EQ(d->tensors().size(), 3u);
  EXPECT_EQ(d->files().size(), 2u);
  EXPECT_THAT(*d->get("z").file, HasSubstr(kShard2));
  EXPECT_EQ(test::f32s(d->get("z")), (std::vector<float>{4, 5, 6}));
}

TEST_F(ShardedTest, IndexNamesMissingShard) {
  write_index(R"({"x":"model-00001-of-00002.safetensors","y":"model-00001-of-00002.safetensors",
                  "z":"model-00002-of-00002.safetensors","q":"model-00003-of-00002.safetensors"})");
  std::string msg = error_of([&] { TensorDirectory::open(dir_.string()); });
  EXPECT_THAT(msg, AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("model-00003-of-00002.safetensors"),
                         HasSubstr("missing")));
}

TEST_F(ShardedTest, TensorInIndexButNotInShard) {
  write_index(R"({"x":"model-00001-of-00002.safetensors","y":"model-00001-of-00002.safetensors",
                  "z":"model-00002-of-00002.safetensors","ghost":"model-00002-of-00002.safetensors"})");
  expect_refused(dir_.string(), {"ghost"}, kShard2);
}

TEST_F(ShardedTest, TensorInShardButNotInIndex) {
  write_index(R"({"x":"model-00001-of-00002.safetensors","z":"model-00002-of-00002.safetensors"})");
  expect_refused(dir_.string(), {"y"}, kShard1);
}

TEST_F(ShardedTest, TensorInTheWrongShard) {
  write_index(R"({"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors",
                  "z":"model-00002-of-00002.safetensors"})");
  expect_refused(dir_.string(), {"y"}, kShard1);
}

TEST_F(ShardedTest, DuplicateTensorAcrossShards) {
  SafetensorsWriter b;
  b.add_f32("z", {3}, {4, 5, 6});
  b.add_f32("x", {2}, {9, 9});  // also in shard 1
  b.write((dir_ / kShard2).string());
  write_index(R"({"x":"model-00001-of-00002.safetensors","y":"model-00001-of-00002.safetensors",
                  "z":"model-00002-of-00002.safetensors"})");
  expect_refused(dir_.string(), {"x"}, kShard2);
}

TEST_F(ShardedTest, ShardNamesMustBePlainFileNames) {
  for (const char* shard : {"../model-00001-of-00002.safetensors", "sub/model.safetensors", "/etc/passwd", ".."}) {
    SCOPED_TRACE(shard);
    write_index(cat(R"({"x":")", shard, R"("})"));
    EXPECT_THAT(error_of([&] { TensorDirectory::open(dir_.string()); }),
                AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr(shard)));
  }
}

TEST_F(ShardedTest, MalformedIndex) {
  for (const char* text : {"not json", "[]", R"({"metadata":{}})", R"({"weight_map":[]})",
                           R"({"weight_map":{"x":3}})"}) {
    SCOPED_TRACE(text);
    write("model.safetensors.index.json", text);
    EXPECT_THAT(error_of([&] { TensorDirectory::open(dir_.string()); }), HasSubstr("model.safetensors.index.json"));
  }
}

TEST_F(ShardedTest, DirectoryWithoutIndexNeedsExactlyOneFile) {
  EXPECT_THAT(error_of([&] { TensorDirectory::open(dir_.string()); }), HasSubstr("found 2"));
  EXPECT_THAT(error_of([&] { TensorDirectory::open((dir_ / "absent").string()); }),
              AllOf(HasSubstr("absent"), HasSubstr("does not exist")));
}

}  // namespace
}  // namespace dsv4
