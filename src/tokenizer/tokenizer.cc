#include "tokenizer/tokenizer.h"

#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv4 {

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(cat("cannot open ", p.string()));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json parse_json_file(const std::filesystem::path& p) {
  const std::string text = read_file(p);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(p.string(), ": invalid JSON: ", e.what()));
  }
}

// Byte trie over added-token contents for leftmost-longest matching.
class AddedTrie {
 public:
  void insert(std::string_view s, int32_t id) {
    int32_t node = 0;
    for (char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      int32_t child = -1;
      for (const auto& [b, k] : nodes_[node].kids)
        if (b == c) child = k;
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_[node].kids.emplace_back(c, child);
        nodes_.emplace_back();
      }
      node = child;
    }
    nodes_[node].id = id;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  // Length and id of the longest token starting at text[i]; length 0 if none.
  std::pair<std::size_t, int32_t> longest_at(std::string_view text, std::size_t i) const {
    if (!first_[static_cast<unsigned char>(text[i])]) return {0, -1};
    std::size_t best_len = 0;
    int32_t best_id = -1;
    int32_t node = 0;
    for (std::size_t j = i; j < text.size(); ++j) {
      const auto c = static_cast<unsigned char>(text[j]);
      int32_t child = -1;
      for (const auto& [b, k] : nodes_[node].kids)
        if (b == c) {
          child = k;
          break;
        }
      if (child < 0) break;
      node = child;
      if (nodes_[node].id >= 0) {
        best_len = j + 1 - i;
        best_id = nodes_[node].id;
      }
    }
    return {best_len, best_id};
  }
  bool empty() const { return nodes_.size() == 1; }

 private:
  struct Node {
    int32_t id = -1;
    std::vector<std::pair<unsigned char, int32_t>> kids;
  };
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_{};
};

enum : uint8_t { kPresent = 1, kSpecial = 2, kAdded = 4 };

std::string token_content(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v.at("content").get<std::string>();
  return {};
}

}  // namespace

struct Tokenizer::Impl {
  BpeModel bpe;
  PreTokenizer pre;
  AddedTrie trie;
  std::vector<AddedToken> added;
  std::vector<std::string> bytes;   // per id: raw bytes
  std::vector<std::string> tokens;  // per id: token string
  std::vector<uint8_t> flags;       // per id
  std::unordered_map<std::string, int32_t> by_token;
  int32_t bos = -1, eos = -1;
};

Tokenizer Tokenizer::load(const std::string& path_str) {
  namespace fs = std::filesystem;
  fs::path p(path_str);
  fs::path json_path = fs::is_directory(p) ? p / "tokenizer.json" : p;
  if (!fs::exists(json_path)) throw Error(cat("tokenizer: ", json_path.string(), " does not exist"));
  const nlohmann::json tj = parse_json_file(json_path);
  const fs::path cfg_path = json_path.parent_path() / "tokenizer_config.json";
  nlohmann::json cfg;
  if (fs::exists(cfg_path)) cfg = parse_json_file(cfg_path);
  return from_json(tj, cfg, json_path.string());
}

Tokenizer Tokenizer::from_json(const nlohmann::json& tj, const nlohmann::json& cfg, const std::string& source) {
  auto impl = std::make_shared<Impl>();
  try {
    if (tj.contains("normalizer") && !tj["normalizer"].is_null()) {
      const auto& n = tj["normalizer"];
      if (!(n.value("type", "") == "Sequence" && n.value("normalizers", nlohmann::json::array()).empty()))
        throw Error(cat("normalizer of type '", n.value("type", ""), "' is not supported (only the identity)"));
    }
    impl->pre = PreTokenizer::from_json(tj.value("pre_tokenizer", nlohmann::json()));
    impl->bpe = BpeModel::from_json(tj.at("model"));

    int32_t max_id = -1;
    for (const auto& [id, tok] : impl->bpe.entries()) max_id = std::max(max_id, id);
    for (const auto& a : tj.value("added_tokens", nlohmann::json::array())) {
      AddedToken t;
      t.id = a.at("id").get<int32_t>();
      t.content = a.at("content").get<std::string>();
      t.special = a.value("special", false);
      if (t.content.empty()) throw Error(cat("added token ", t.id, " has empty content"));
      if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false))
        throw Error(cat("added token ", t.id, " uses lstrip/rstrip/single_word, which is not supported"));
      max_id = std::max(max_id, t.id);
      impl->added.push_back(std::move(t));
    }
    if (max_id < 0) throw Error("empty vocabulary");
    const auto n = static_cast<std::size_t>(max_id) + 1;
    impl->bytes.resize(n);
    impl->tokens.resize(n);
    impl->flags.assign(n, 0);
    impl->by_token.reserve(n * 2);
    for (const auto& [id, tok] : impl->bpe.entries()) {
      if (id < 0) throw Error(cat("vocab entry '", tok, "' has negative id"));
      std::string b;
      for (std::size_t i = 0; i < tok.size();) {
        const std::size_t len = utf8::valid_char_len(tok, i);
        if (len == 0) throw Error(cat("vocab entry ", id, " is not valid UTF-8"));
        const int byte = byte_level::char_to_byte(utf8::decode_at(tok, i, len));
        if (byte >= 0)
          b += static_cast<char>(byte);
        else
          b.append(tok, i, len);  // not in the byte alphabet: the reference keeps it as text
        i += len;
      }
      impl->bytes[id] = std::move(b);
      impl->tokens[id] = tok;
      impl->flags[id] |= kPresent;
      impl->by_token.emplace(tok, id);
    }
    for (const auto& t : impl->added) {
      impl->bytes[t.id] = t.content;
      impl->tokens[t.id] = t.content;
      impl->flags[t.id] = kPresent | kAdded | (t.special ? kSpecial : 0);
      impl->by_token[t.content] = t.id;
      impl->trie.insert(t.content, t.id);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(source, ": malformed tokenizer: ", e.what()));
  } catch (const Error& e) {
    throw Error(cat(source, ": ", e.what()));
  }
  auto find = [&](const std::string& s) -> int32_t {
    auto it = impl->by_token.find(s);
    return it == impl->by_token.end() ? -1 : it->second;
  };
  std::string bos = "<｜begin▁of▁sentence｜>", eos = "<｜end▁of▁sentence｜>";
  if (cfg.is_object()) {
    if (cfg.contains("bos_token") && !token_content(cfg["bos_token"]).empty()) bos = token_content(cfg["bos_token"]);
    if (cfg.contains("eos_token") && !token_content(cfg["eos_token"]).empty()) eos = token_content(cfg["eos_token"]);
  }
  impl->bos = find(bos);
  impl->eos = find(eos);
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  std::string fixed;
  if (!utf8::is_valid(text)) {
    fixed = utf8::lossy(text);
    text = fixed;
  }
  const Impl& im = *impl_;
  thread_local std::vector<std::string_view> pieces;
  auto encode_segment = [&](std::string_view seg) {
    if (seg.empty()) return;
    pieces.clear();
    im.pre.split(seg, pieces);
    for (std::string_view p : pieces) im.bpe.encode_piece(p, out);
  };
  std::size_t seg_start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const auto [len, id] = im.trie.longest_at(text, i);
    if (len == 0) {
      ++i;
      continue;
    }
    encode_segment(text.substr(seg_start, i - seg_start));
    out.push_back(id);
    i += len;
    seg_start = i;
  }
  encode_segment(text.substr(seg_start));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_append(text, out);
  return out;
}

std::string_view Tokenizer::id_bytes(int32_t id, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  if (id < 0 || static_cast<std::size_t>(id) >= im.flags.size()) return {};
  const uint8_t f = im.flags[id];
  if (!(f & kPresent) || (skip_special_tokens && (f & kSpecial))) return {};
  return im.bytes[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string raw;
  for (int32_t id : ids) raw += id_bytes(id, skip_special_tokens);
  if (utf8::is_valid(raw)) return raw;
  return utf8::lossy(raw);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->flags.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->by_token.find(std::string(token));
  if (it == impl_->by_token.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !(impl_->flags[id] & kPresent)) return std::nullopt;
  return impl_->tokens[id];
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && (impl_->flags[id] & kSpecial);
}

bool Tokenizer::is_added(int32_t id) const { return id >= 0 && id < vocab_size() && (impl_->flags[id] & kAdded); }

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

}  // namespace dsv4
