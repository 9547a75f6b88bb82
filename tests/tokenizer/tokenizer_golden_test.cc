// Golden encode/decode cases from ../shared/tokenizer: tokenize_cases (698), decode_cases (377),
// reference_v4_cases (98), plus load-time sanity of the shared tokenizer.json.
#include <chrono>

#include "golden_util.h"

namespace dsv4 {
namespace {

using test::read_jsonl;
using test::shared_tokenizer;

TEST(TokenizerGolden, LoadsSharedTokenizer) {
  DSV4_REQUIRE_SHARED();
  const auto t0 = std::chrono::steady_clock::now();
  const Tokenizer tok = Tokenizer::load(test::shared_tokenizer_dir().string());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("tokenizer.json load: %.1f ms\n", ms);
  EXPECT_EQ(tok.vocab_size(), 129280);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.added_tokens().size(), 1283u);
  EXPECT_EQ(tok.token_to_id("<think>"), 128821);
  EXPECT_EQ(tok.token_to_id("</think>"), 128822);
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(128803));
  EXPECT_EQ(tok.id_to_token(223), "Ġ");
}

TEST(TokenizerGolden, TokenizeCases) {
  DSV4_REQUIRE_SHARED();
  const auto cases = read_jsonl("tokenize_cases.jsonl");
  ASSERT_EQ(cases.size(), 698u);
  int failed = 0;
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto got = shared_tokenizer().encode(text);
    const auto want = test::ids_of(c["ids"]);
    if (got != want) {
      ++failed;
      ADD_FAILURE() << "category " << c["category"] << " text " << nlohmann::json(text).dump()
                    << "\n got  " << nlohmann::json(got).dump() << "\n want " << nlohmann::json(want).dump();
    }
    EXPECT_EQ(shared_tokenizer().decode(got), text);
  }
  EXPECT_EQ(failed, 0);
}

TEST(TokenizerGolden, DecodeCases) {
  DSV4_REQUIRE_SHARED();
  const auto cases = read_jsonl("decode_cases.jsonl");
  ASSERT_EQ(cases.size(), 377u);
  for (const auto& c : cases) {
    const auto ids = test::ids_of(c["ids"]);
    const bool skip = c["skip_special_tokens"].get<bool>();
    EXPECT_EQ(shared_tokenizer().decode(ids, skip), c["text"].get<std::string>())
        << "category " << c["category"] << " ids " << nlohmann::json(ids).dump() << " skip " << skip;
  }
}

TEST(TokenizerGolden, ReferenceV4Cases) {
  DSV4_REQUIRE_SHARED();
  const auto cases = read_jsonl("reference_v4_cases.jsonl");
  ASSERT_EQ(cases.size(), 98u);
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto want = test::ids_of(c["ids"]);
    EXPECT_EQ(shared_tokenizer().encode(text), want) << nlohmann::json(text).dump();
    EXPECT_EQ(shared_tokenizer().decode(want, true), c["decoded_skip_special"].get<std::string>())
        << nlohmann::json(text).dump();
  }
}

}  // namespace
}  // namespace dsv4
