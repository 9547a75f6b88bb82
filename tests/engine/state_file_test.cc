// State files (engine/state_file.h) on the golden flash-mini checkpoint, whose layers cover the
// window-only, CSA (ratio 4, with indexer) and HCA (ratio 128) kinds and whose window is 128:
// save → load → continue must give bit-identical logits (main and MTP) to never having
// stopped, in both numerics; corruption, truncation, another model's or numerics' file and a
// crash mid-write must each be rejected with a message naming the cause.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "engine/state_file.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

std::string golden(const char* name) { return test::shared_dir() + "/golden/" + name; }

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / cat("dsv4_state_", ::getpid(), "_", name)).string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }

// Token ids that cover the vocabulary without structure (the model's weights are random anyway).
std::vector<int32_t> prompt_ids(int n, int64_t vocab) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(int32_t((i * 379 + 17) % vocab));
  return v;
}

// The message of the Error that loading `path` into a fresh session throws ("" if none).
std::string load_error(const Model& m, const std::string& path) {
  Session s(m, SessionOptions{0, 256, true});
  try {
    load_session(&s, path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool same_floats(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The published CRC-32C check value (RFC 3720 / the CRC catalogue: "123456789" → E3069283).
TEST(Crc32c, CheckValue) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c({reinterpret_cast<const uint8_t*>(s.data()), s.size()}), 0xE3069283u);
  // Continuing over a split gives the same value as one pass.
  const auto* b = reinterpret_cast<const uint8_t*>(s.data());
  EXPECT_EQ(crc32c({b + 4, 5}, crc32c({b, 4})), 0xE3069283u);
}

class StateFile : public ::testing::TestWithParam<Numerics> {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    model_ = Model::load(golden("flash-mini"), GetParam());
    ids_ = prompt_ids(150, model_->config().vocab_size);
    path_ = tmp_path("state.dsv4");
  }
  void TearDown() override { std::filesystem::remove(path_); }

  // A session holding the first `n` prompt tokens, chunked like a prefill of 64.
  std::unique_ptr<Session> session_at(int n) {
    auto s = std::make_unique<Session>(*model_, SessionOptions{0, 64, true});
    s->append(std::span<const int32_t>(ids_.data(), size_t(n)));
    return s;
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> ids_;
  std::string path_;
};

// 133 tokens: the ring has wrapped (window 128), one HCA entry and 33 CSA entries are complete,
// and both compressors hold a partial block; the MTP block trails with unpaired positions.
TEST_P(StateFile, RestoredSessionContinuesBitIdentically) {
  auto live = session_at(133);
  live->mtp_draft(ids_[133]);  // the MTP state moves too
  live->append(std::span<const int32_t>(&ids_[133], 1));
  save_session(*live, path_, "app blob");
  Session restored(*model_, SessionOptions{0, 64, true});
  EXPECT_EQ(load_session(&restored, path_), "app blob");
  EXPECT_EQ(restored.tokens(), live->tokens());
  for (int p = 134; p < 150; ++p) {
    const std::span<const int32_t> t(&ids_[size_t(p)], 1);
    std::span<const float> a = live->append(t);
    const std::vector<float> expect(a.begin(), a.end());
    ASSERT_TRUE(same_floats(expect, restored.append(t))) << "logits differ at position " << p;
    const int32_t next = ids_[size_t(p + 1) % ids_.size()];
    std::span<const float> d = live->mtp_draft(next);
    const std::vector<float> expect_draft(d.begin(), d.end());
    ASSERT_TRUE(same_floats(expect_draft, restored.mtp_draft(next))) << "MTP draft differs at position " << p;
  }
}

TEST_P(StateFile, SavingARestoredSessionWritesTheSameBytes) {
  save_session(*session_at(140), path_, "x");
  const std::string first = read_bytes(path_);
  Session s(*model_, SessionOptions{0, 64, true});
  load_session(&s, path_);
  save_session(s, path_, "x");
  EXPECT_EQ(read_bytes(path_), first);
}

TEST_P(StateFile, CorruptionIsRejectedAndLeavesTheSessionUnchanged) {
  save_session(*session_at(140), path_);
  const std::string good = read_bytes(path_);
  // A flipped bit in the header, in each kind of section, and in the last byte.
  for (size_t off : {size_t(13), size_t(30), good.size() / 3, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[off] = char(bad[off] ^ 0x10);
    write_bytes(path_, bad);
    EXPECT_NE(load_error(*model_, path_).find("checksum mismatch"), std::string::npos)
        << "offset " << off << ": " << load_error(*model_, path_);
  }
  for (size_t len : {size_t(0), size_t(5), size_t(27), size_t(40), good.size() / 2, good.size() - 1}) {
    write_bytes(path_, good.substr(0, len));
    const std::string e = load_error(*model_, path_);
    EXPECT_TRUE(e.find("truncated") != std::string::npos || e.find("not a dsv4 state file") != std::string::npos)
        << "length " << len << ": " << e;
  }
  write_bytes(path_, good + "zz");
  EXPECT_NE(load_error(*model_, path_).find("garbage after the last section"), std::string::npos);
  // A failed load changes nothing.
  auto s = session_at(10);
  const std::vector<int32_t> before = s->tokens();
  EXPECT_THROW(load_session(s.get(), path_), Error);
  EXPECT_EQ(s->tokens(), before);
  EXPECT_NE(load_error(*model_, tmp_path("missing")).find("cannot open the state file"), std::string::npos);
}

TEST_P(StateFile, AnotherModelsOrNumericsFileIsRejected) {
  save_session(*session_at(20), path_);
  auto other = Model::load(golden("pro-mini"), GetParam());
  EXPECT_NE(load_error(*other, path_).find("different model"), std::string::npos) << load_error(*other, path_);
  auto flipped = Model::load(golden("flash-mini"), GetParam() == Numerics::kPlain ? Numerics::kReference : Numerics::kPlain);
  EXPECT_NE(load_error(*flipped, path_).find("numerics"), std::string::npos) << load_error(*flipped, path_);
}

// A writer killed mid-write (the test hook _exits after N bytes of the temporary file) leaves
// the old file, which still loads; the partial temporary file does not load.
TEST_P(StateFile, CrashWhileWritingKeepsTheOldFile) {
  // The default ("fast") death-test style forks: the child writes to this test's path_ (a
  // re-executed child would compute another one from its own pid).
  save_session(*session_at(20), path_, "old");
  const std::string old = read_bytes(path_);
  auto s = session_at(140);
  save_session(*s, path_ + ".probe");
  const long long new_size = (long long)std::filesystem::file_size(path_ + ".probe");
  std::filesystem::remove(path_ + ".probe");
  for (long long after : {0LL, 20LL, 5000LL, new_size - 1}) {
    EXPECT_EXIT(
        {
          ::setenv("DSV4_STATE_FILE_CRASH_AFTER", std::to_string(after).c_str(), 1);
          save_session(*s, path_, "new");
        },
        ::testing::ExitedWithCode(86), "");
    EXPECT_EQ(read_bytes(path_), old) << "crash after " << after << " bytes";
    Session r(*model_, SessionOptions{0, 64, true});
    EXPECT_EQ(load_session(&r, path_), "old");
    int partial = 0;  // the crashed writer's temporary file: proof it died writing to path_
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path_).parent_path())) {
      if (e.path().string().rfind(path_ + ".tmp.", 0) != 0) continue;
      ++partial;
      EXPECT_EQ(std::filesystem::file_size(e.path()), uint64_t(after));
      EXPECT_NE(load_error(*model_, e.path().string()), "") << "a partial temporary file loads";
      std::filesystem::remove(e.path());
    }
    EXPECT_EQ(partial, 1) << "crash after " << after << " bytes";
  }
}

INSTANTIATE_TEST_SUITE_P(Numerics, StateFile, ::testing::Values(Numerics::kReference, Numerics::kPlain),
                         [](const auto& i) { return i.param == Numerics::kPlain ? "plain" : "reference"; });

}  // namespace
}  // namespace dsv4
