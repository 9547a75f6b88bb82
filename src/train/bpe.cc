#include "train/bpe.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "tokenizer/assemble.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_tokens.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv4::train {

namespace {

// The DeepSeek-V3/V4 pre-tokenizer (tokenizer.json "pre_tokenizer"): digits in groups of up to
// three, CJK runs, then words / punctuation / whitespace; bytes then map to the alphabet.
const char* kPreTokenizer = R"json({"type": "Sequence", "pretokenizers": [
 {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
 {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})json";

const char* const kAdded[] = {chat_tokens::kBos, chat_tokens::kEos, "<｜▁pad▁｜>", chat_tokens::kUser,
                              chat_tokens::kAssistant, chat_tokens::kThinkStart, chat_tokens::kThinkEnd,
                              chat_tokens::kDsml, chat_tokens::kLatestReminder};

// Bytes in the byte-level alphabet (each byte one code point, UTF-8 encoded).
std::string alphabet(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    const char32_t cp = byte_level::byte_to_char()[b];
    if (cp < 0x80) out += char(cp);
    else out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));  // < 0x800 always
  }
  return out;
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count = 0;
};

// Piece frequencies of the corpus, as byte-symbol sequences (sorted by piece: deterministic).
std::vector<Word> count_words(std::string_view text) {
  const PreTokenizer pre = PreTokenizer::from_json(nlohmann::json::parse(kPreTokenizer));
  std::vector<std::string_view> pieces;
  pre.split(text, pieces);
  std::map<std::string_view, int64_t> freq;
  for (std::string_view p : pieces) ++freq[p];
  std::vector<Word> words;
  for (const auto& [piece, n] : freq) {
    Word w;
    for (unsigned char b : piece) w.symbols.push_back(b);
    w.count = n;
    words.push_back(std::move(w));
  }
  return words;
}

uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

// The most frequent adjacent pair (ties to the smallest key); false if no pair occurs.
bool best_pair(const std::vector<Word>& words, int32_t* a, int32_t* b) {
  std::unordered_map<uint64_t, int64_t> counts;
  for (const Word& w : words)
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) counts[pair_key(w.symbols[i], w.symbols[i + 1])] += w.count;
  uint64_t best = 0;
  int64_t best_n = 0;
  for (const auto& [k, n] : counts)
    if (n > best_n || (n == best_n && k < best)) best = k, best_n = n;
  if (best_n == 0) return false;
  *a = int32_t(best >> 32), *b = int32_t(uint32_t(best));
  return true;
}

void apply_merge(std::vector<Word>* words, int32_t a, int32_t b, int32_t merged) {
  for (Word& w : *words) {
    std::vector<int32_t>& s = w.symbols;
    size_t o = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) s[o++] = merged, ++i;
      else s[o++] = s[i];
    }
    s.resize(o);
  }
}

// The official table's entry for `content` (its flags), re-numbered to `id`.
nlohmann::ordered_json added_entry(const std::string& content, int32_t id) {
  for (const auto& e : v4_added_token_table()["added_tokens"])
    if (e["content"] == content) {
      nlohmann::ordered_json out;
      for (const char* k : {"single_word", "lstrip", "rstrip", "normalized", "special"}) out[k] = e[k];
      nlohmann::ordered_json r = {{"id", id}, {"content", content}};
      r.update(out);
      return r;
    }
  throw Error(cat("tokenizer: ", content, " missing from the V4 added-token table"));
}

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
  if (!f.flush()) throw Error(cat("cannot write ", p.string()));
}

}  // namespace

int bpe_added_token_count() { return int(std::size(kAdded)); }

nlohmann::ordered_json train_bpe(std::string_view text, int vocab_size) {
  if (text.empty()) throw Error("the corpus is empty");
  if (!utf8::is_valid(text)) {
    size_t i = 0;
    while (i < text.size() && utf8::valid_char_len(text, i) > 0) i += utf8::valid_char_len(text, i);
    throw Error(cat("the corpus is not valid UTF-8 (first bad byte at offset ", i, ")"));
  }
  const int n_added = bpe_added_token_count();
  if (vocab_size < 256 + n_added) throw Error(cat("tokenizer vocabulary must be at least ", 256 + n_added));
  std::vector<std::string> tokens(256);
  for (int b = 0; b < 256; ++b) tokens[size_t(b)] = std::string(1, char(b));
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  std::vector<Word> words = count_words(text);
  int32_t a = 0, b = 0;
  while (int(tokens.size()) + n_added < vocab_size && best_pair(words, &a, &b)) {
    const int32_t id = int32_t(tokens.size());
    tokens.push_back(tokens[size_t(a)] + tokens[size_t(b)]);
    merges.push_back(alphabet(tokens[size_t(a)]) + " " + alphabet(tokens[size_t(b)]));
    apply_merge(&words, a, b, id);
  }
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[alphabet(tokens[i])] = int32_t(i);
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (int k = 0; k < n_added; ++k) added.push_back(added_entry(kAdded[k], int32_t(tokens.size()) + k));

  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", nlohmann::ordered_json::array()}};
  j["pre_tokenizer"] = nlohmann::ordered_json::parse(kPreTokenizer);
  j["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                {"vocab", vocab}, {"merges", merges}};
  return j;
}

void write_tokenizer(const nlohmann::ordered_json& tokenizer_json, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(cat("cannot create ", dir, ": ", ec.message()));
  write_file(std::filesystem::path(dir) / "tokenizer.json", tokenizer_json.dump(2) + "\n");
  write_file(std::filesystem::path(dir) / "tokenizer_config.json",
             v4_added_token_table()["tokenizer_config"].dump(2) + "\n");
}

}  // namespace dsv4::train
