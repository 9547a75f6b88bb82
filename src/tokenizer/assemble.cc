#include "tokenizer/assemble.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace dsv4 {

// Generated at configure time from data/deepseek_v4_added_tokens.json.
extern const char* const kV4AddedTokensJson;

const nlohmann::ordered_json& v4_added_token_table() {
  static const nlohmann::ordered_json table = nlohmann::ordered_json::parse(kV4AddedTokensJson);
  return table;
}

namespace {

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(cat("cannot write ", p.string()));
  f << text;
  if (!f.flush()) throw Error(cat("cannot write ", p.string()));
}

}  // namespace

void assemble_v4_tokenizer(const std::string& base_path, const std::string& out_dir) {
  namespace fs = std::filesystem;
  using OJ = nlohmann::ordered_json;
  std::ifstream in(base_path, std::ios::binary);
  if (!in) throw Error(cat("assemble_v4_tokenizer: cannot open base tokenizer ", base_path));
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();

  // Key order must survive (ordered_json), but ordered_json inserts in linear time per key,
  // which is quadratic for the 128,000-entry vocab: parse the vocab separately into a plain
  // json, leave it empty in the ordered tree and splice it back in id order (the order of the
  // base file) when writing.
  OJ base;
  nlohmann::json vocab;
  try {
    bool in_vocab = false;
    base = OJ::parse(text, [&](int depth, OJ::parse_event_t ev, OJ& parsed) {
      if (ev == OJ::parse_event_t::key && depth == 2) in_vocab = parsed == "vocab";
      return !(in_vocab && ev == OJ::parse_event_t::key && depth == 3);
    });
    nlohmann::json plain = nlohmann::json::parse(text);
    vocab = std::move(plain.at("model").at("vocab"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(base_path, ": invalid tokenizer.json: ", e.what()));
  }
  if (!base.is_object() || !base.contains("model") || !base["model"].contains("vocab") ||
      base["model"].value("type", "") != "BPE" || !vocab.is_object())
    throw Error(cat(base_path, ": not a BPE tokenizer.json"));
  // The V4 ids 128000..129279 follow the 128,000 base entries; another base would misnumber them.
  if (vocab.size() != 128000)
    throw Error(cat(base_path, ": expected the DeepSeek-V3 vocabulary of 128000 entries, found ", vocab.size()));
  std::vector<std::pair<int64_t, const std::string*>> by_id;
  by_id.reserve(vocab.size());
  for (const auto& [k, v] : vocab.items()) {
    if (!v.is_number_integer()) throw Error(cat(base_path, ": vocab entry '", k, "' is not an integer"));
    by_id.emplace_back(v.get<int64_t>(), &k);
  }
  std::sort(by_id.begin(), by_id.end());

  const auto& table = v4_added_token_table();
  OJ added = OJ::array();
  for (const auto& t : table.at("added_tokens")) {
    OJ e;
    for (const char* k : {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}) e[k] = t.at(k);
    added.push_back(std::move(e));
  }
  base["added_tokens"] = std::move(added);  // replaced in place: the base's key order is kept

  static const std::string kPlaceholder = "\x01dsv4-vocab\x01";
  base["model"]["vocab"] = kPlaceholder;
  std::string out = base.dump(2, ' ', false);
  const std::string quoted = OJ(kPlaceholder).dump(-1, ' ', false);
  const std::size_t at = out.find(quoted);
  if (at == std::string::npos) throw Error("assemble_v4_tokenizer: internal error (vocab placeholder lost)");
  std::string rendered = "{";
  for (std::size_t i = 0; i < by_id.size(); ++i) {
    rendered += i ? ",\n      " : "\n      ";
    rendered += nlohmann::json(*by_id[i].second).dump(-1, ' ', false);
    rendered += ": ";
    rendered += std::to_string(by_id[i].first);
  }
  rendered += "\n    }";
  out.replace(at, quoted.size(), rendered);

  fs::create_directories(out_dir);
  write_file(fs::path(out_dir) / "tokenizer.json", out);
  write_file(fs::path(out_dir) / "tokenizer_config.json", table.at("tokenizer_config").dump(2, ' ', false) + "\n");
}

}  // namespace dsv4
