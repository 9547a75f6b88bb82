// Pre-tokenization: the `pre_tokenizer` of an HF tokenizer.json, limited to what byte-level BPE
// tokenizers of the DeepSeek family use — a Sequence of `Split` steps (behavior Isolated,
// invert false) followed by a `ByteLevel` step that only maps bytes (use_regex=false,
// add_prefix_space=false). Anything else is rejected at load time rather than approximated.
//
// The Split regexes have Oniguruma semantics in the reference (HF `tokenizers`). They run on
// PCRE2 (UTF + UCP, JIT), which agrees except for `\s`: PCRE2 also matches U+180E, so `\s` and
// `\S` are rewritten into explicit classes of the Unicode White_Space code points before
// compiling. Each Split runs over each piece of the previous step separately, so a lookahead
// never sees past the end of its piece.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4 {

class PreTokenizer {
 public:
  // `config` is the tokenizer.json "pre_tokenizer" value (may be null: no splitting).
  static PreTokenizer from_json(const nlohmann::json& config);

  // Splits valid UTF-8 `text` into pieces (views into `text`), appending them to `out`.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  // Rewrites `\s` / `\S` of a regex into explicit White_Space classes (exposed for tests).
  static std::string rewrite_whitespace_escapes(std::string_view pattern);

 private:
  struct Regex;
  std::vector<std::shared_ptr<const Regex>> splits_;
};

}  // namespace dsv4
