// The DeepSeek-V4 text tokenizer: byte-level BPE loaded from an HF `tokenizers` tokenizer.json.
//
// encode(text) = cut out added tokens (leftmost-longest, anywhere, all of them regardless of
// `special`) → identity normalizer → pre-tokenizer splits (see pretokenizer.h) → GPT-2 byte
// alphabet → BPE per piece. No BOS/EOS is ever added: V4's chat prompts carry BOS as literal text.
// decode(ids) maps ids back to bytes (added tokens to their content), optionally dropping
// special added tokens, and converts the bytes to UTF-8 replacing invalid sequences by U+FFFD;
// ids outside the vocabulary are dropped, as the reference does.
//
// A Tokenizer is immutable after load and cheap to copy (shared state); encode/decode are safe
// to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4 {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
};

class Tokenizer {
 public:
  // Accepts a model directory (reads DIR/tokenizer.json and, if present,
  // DIR/tokenizer_config.json) or the path of a tokenizer.json file (its sibling
  // tokenizer_config.json is read if present). Throws dsv4::Error naming the file on failure.
  static Tokenizer load(const std::string& model_dir_or_tokenizer_json);

  // Builds from already-parsed JSON; `config` may be null. `source` names the input in errors.
  static Tokenizer from_json(const nlohmann::json& tokenizer_json, const nlohmann::json& config,
                             const std::string& source);

  // Text that is not valid UTF-8 is first made valid by replacing each invalid sequence with
  // U+FFFD (the reference only accepts Unicode strings).
  std::vector<int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Raw bytes of one id (added tokens: their content); empty for unknown ids or, with
  // skip_special_tokens, special ones. Concatenating these and applying the lossy UTF-8 rule
  // is decode().
  std::string_view id_bytes(int32_t id, bool skip_special_tokens = false) const;

  // One past the largest id (129,280 for V4).
  int32_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocab or added-token string
  // The token string of an id: vocab entries in the byte alphabet, added tokens as their content.
  std::optional<std::string> id_to_token(int32_t id) const;
  int32_t bos_id() const;  // -1 if the tokenizer has none
  int32_t eos_id() const;
  bool is_special(int32_t id) const;   // an added token flagged special
  bool is_added(int32_t id) const;     // any added token
  const std::vector<AddedToken>& added_tokens() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace dsv4
