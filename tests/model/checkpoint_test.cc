// Corrupt-checkpoint tests: a copy of the golden flash-mini checkpoint with exactly one defect
// (truncated shard, garbage header, a missing / extra / mistyped / misshaped tensor, index out
// of sync, bad config). Model::load must refuse each with a dsv4::Error naming the file and the
// tensor — the same copy without the defect loads, so the defect is what is refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/inventory.h"
#include "model/model.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Tensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    golden_ = test::shared_dir() + "/golden/flash-mini";
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / cat("dsv4_ckpt_", info->name(), "_", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Only what a checkpoint consists of; the golden files are read-only, the copies must not be.
    for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json"}) {
      fs::copy_file(fs::path(golden_) / f, dir_ / f);
      fs::permissions(dir_ / f, fs::perms::owner_read | fs::perms::owner_write);
    }
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string shard() const { return (dir_ / "model.safetensors").string(); }

  // The golden tensors, in name order, as editable copies.
  std::vector<Tensor> golden_tensors() const {
    MappedFile f(golden_ + "/model.safetensors");
    std::vector<Tensor> out;
    for (const TensorView& v : parse_safetensors(f.data(), f.size(), &f.path()))
      out.push_back({v.name, v.dtype, v.shape, std::vector<uint8_t>(v.data, v.data + v.nbytes)});
    std::sort(out.begin(), out.end(), [](const Tensor& a, const Tensor& b) { return a.name < b.name; });
    return out;
  }
  Tensor& find(std::vector<Tensor>& ts, const std::string& name) const {
    for (Tensor& t : ts)
      if (t.name == name) return t;
    throw std::runtime_error("golden checkpoint lacks " + name);
  }
  // Writes `ts` as the shard; the index lists exactly `index_names` (default: the shard's names),
  // so an index/shard disagreement is only there when a test asks for it.
  void write_checkpoint(const std::vector<Tensor>& ts, const std::vector<std::string>* index_names = nullptr) const {
    SafetensorsWriter w;
    for (const Tensor& t : ts) w.add(t.name, t.dtype, t.shape, t.bytes);
    w.write(shard());
    json index = json::parse(read_text_file((dir_ / "model.safetensors.index.json").string()));
    index["weight_map"] = json::object();
    if (index_names)
      for (const auto& n : *index_names) index["weight_map"][n] = "model.safetensors";
    else
      for (const Tensor& t : ts) index["weight_map"][t.name] = "model.safetensors";
    std::ofstream((dir_ / "model.safetensors.index.json").string(), std::ios::trunc) << index.dump(2);
  }
  std::string load_error() const {
    try {
      Model::load(dir_.string());
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "the damaged checkpoint loaded";
    return {};
  }

  std::string golden_;
  fs::path dir_;
};

TEST_F(CheckpointTest, UndamagedCopyAndRewrittenCopyLoad) {
  auto m = Model::load(dir_.string());
  EXPECT_EQ(m->tensors().tensors().size(), expected_tensors(m->config()).size());
  write_checkpoint(golden_tensors());  // the rewrite path alone must not damage anything
  EXPECT_NO_THROW(Model::load(dir_.string()));
}

TEST_F(CheckpointTest, TruncatedShard) {
  // Cutting the last byte damages exactly the tensor that ends last in the data section.
  MappedFile f(golden_ + "/model.safetensors");
  const TensorView* last = nullptr;
  auto views = parse_safetensors(f.data(), f.size(), &f.path());
  for (const TensorView& v : views)
    if (!last || v.data + v.nbytes > last->data + last->nbytes) last = &v;
  ASSERT_NE(last, nullptr);
  fs::resize_file(shard(), f.size() - 1);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("'" + last->name + "'"),
                                  HasSubstr("truncated")));
  fs::resize_file(shard(), 5);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("truncated")));
}

TEST_F(CheckpointTest, GarbageHeader) {
  {
    std::fstream io(shard(), std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(8);
    io.write("#garbage#garbage", 16);
  }
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("not valid JSON")));
}

TEST_F(CheckpointTest, HeaderLengthPastTheEnd) {
  {
    std::fstream io(shard(), std::ios::in | std::ios::out | std::ios::binary);
    const char len[8] = {0, 0, 0, 0, 1, 0, 0, 0};  // 2^32 bytes of header
    io.write(len, 8);
  }
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("header length")));
}

TEST_F(CheckpointTest, MissingTensor) {
  auto ts = golden_tensors();
  std::erase_if(ts, [](const Tensor& t) { return t.name == "layers.1.attn.wkv.scale"; });
  write_checkpoint(ts);
  EXPECT_THAT(load_error(), AllOf(HasSubstr(dir_.string()), HasSubstr("missing"), HasSubstr("'layers.1.attn.wkv.scale'")));
}

TEST_F(CheckpointTest, ExtraTensor) {
  auto ts = golden_tensors();
  ts.push_back({"layers.0.attn.bogus.weight", DType::F32, {2}, std::vector<uint8_t>(8, 0)});
  write_checkpoint(ts);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("unexpected"),
                                  HasSubstr("'layers.0.attn.bogus.weight'")));
}

TEST_F(CheckpointTest, WrongDtype) {
  auto ts = golden_tensors();
  ASSERT_EQ(find(ts, "layers.2.attn_norm.weight").dtype, DType::BF16);
  find(ts, "layers.2.attn_norm.weight").dtype = DType::F16;  // same byte count: only the dtype is wrong
  write_checkpoint(ts);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("'layers.2.attn_norm.weight'"),
                                  HasSubstr("F16"), HasSubstr("expected BF16")));
}

TEST_F(CheckpointTest, WrongExpertDtype) {
  // FP8 where config.json says FP4 experts: same bytes and shape, wrong format.
  auto ts = golden_tensors();
  find(ts, "layers.3.ffn.experts.5.w2.weight").dtype = DType::F8_E4M3;
  write_checkpoint(ts);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("'layers.3.ffn.experts.5.w2.weight'"), HasSubstr("expected I8")));
}

TEST_F(CheckpointTest, WrongShape) {
  auto ts = golden_tensors();
  Tensor& bias = find(ts, "layers.3.ffn.gate.bias");
  ASSERT_EQ(bias.shape, (std::vector<int64_t>{16}));
  bias.shape = {4, 4};
  write_checkpoint(ts);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("'layers.3.ffn.gate.bias'"),
                                  HasSubstr("[4, 4]"), HasSubstr("[16]")));
}

TEST_F(CheckpointTest, IndexListsATensorTheShardLacks) {
  auto ts = golden_tensors();
  std::vector<std::string> names;
  for (const Tensor& t : ts) names.push_back(t.name);
  std::erase_if(ts, [](const Tensor& t) { return t.name == "mtp.0.enorm.weight"; });
  write_checkpoint(ts, &names);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("'mtp.0.enorm.weight'"),
                                  HasSubstr("not stored")));
}

TEST_F(CheckpointTest, ShardHoldsATensorTheIndexLacks) {
  auto ts = golden_tensors();
  std::vector<std::string> names;
  for (const Tensor& t : ts)
    if (t.name != "norm.weight") names.push_back(t.name);
  write_checkpoint(ts, &names);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("'norm.weight'"), HasSubstr("not listed")));
}

TEST_F(CheckpointTest, HashRoutingTableOutOfRange) {
  auto ts = golden_tensors();
  Tensor& t = find(ts, "layers.0.ffn.gate.tid2eid");
  const int64_t bad = 16;  // n_routed_experts = 16: ids are 0..15
  std::memcpy(t.bytes.data() + 8 * 7, &bad, 8);
  write_checkpoint(ts);
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("layers.0.ffn.gate.tid2eid"),
                                  HasSubstr("16")));
}

TEST_F(CheckpointTest, BadOrMissingConfig) {
  json c = json::parse(read_text_file((dir_ / "config.json").string()));
  c["compress_ratios"] = {0, 0, 4};
  std::ofstream((dir_ / "config.json").string(), std::ios::trunc) << c.dump();
  EXPECT_THAT(load_error(), AllOf(HasSubstr("config.json"), HasSubstr("compress_ratios")));
  // Configs that disagree with the checkpoint: one more expert than it stores (the router shape
  // is the first mismatch), and far more (refused by count before the inventory is built).
  c = json::parse(read_text_file(golden_ + "/config.json"));
  c["n_routed_experts"] = 17;
  std::ofstream((dir_ / "config.json").string(), std::ios::trunc) << c.dump();
  EXPECT_THAT(load_error(), AllOf(HasSubstr("'layers.0.ffn.gate.weight'"), HasSubstr("[17, 256]")));
  c["n_routed_experts"] = 2147483647;
  std::ofstream((dir_ / "config.json").string(), std::ios::trunc) << c.dump();
  EXPECT_THAT(load_error(), AllOf(HasSubstr("model.safetensors"), HasSubstr("2147483647 routed experts")));
  fs::remove(dir_ / "config.json");
  EXPECT_THAT(load_error(), AllOf(HasSubstr(dir_.string()), HasSubstr("config.json")));
}

}  // namespace
}  // namespace dsv4
