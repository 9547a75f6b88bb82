#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace dsv4 {

namespace {

// Unicode White_Space (Oniguruma's \s), as PCRE2 class items.
constexpr const char* kWhiteSpaceItems =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
    "\\x{202f}\\x{205f}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

std::string escape_literal(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  std::string source;
  ~Regex() { pcre2_code_free(code); }
};

std::string PreTokenizer::rewrite_whitespace_escapes(std::string_view p) {
  std::string out;
  bool in_class = false;
  bool class_start = false;  // just after `[` or `[^`: a `]` here is a literal
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      class_start = false;
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceItems) : cat("[", kWhiteSpaceItems, "]");
      } else if (e == 'S') {
        if (in_class) throw Error(cat("tokenizer regex: \\S inside a character class is not supported: ", p));
        out += cat("[^", kWhiteSpaceItems, "]");
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      class_start = true;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      continue;
    }
    if (in_class && c == ']' && !class_start) in_class = false;
    class_start = false;
  }
  return out;
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& config) {
  PreTokenizer pt;
  if (config.is_null()) return pt;
  std::vector<nlohmann::json> steps;
  const std::string type = config.value("type", "");
  if (type == "Sequence") {
    for (const auto& s : config.at("pretokenizers")) steps.push_back(s);
  } else {
    steps.push_back(config);
  }
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const auto& s = steps[k];
    const std::string t = s.value("type", "");
    if (t == "Split") {
      if (s.value("behavior", "") != "Isolated" || s.value("invert", false))
        throw Error(cat("tokenizer.json: pre_tokenizer Split #", k, " uses behavior '", s.value("behavior", ""),
                        "'/invert; only Isolated without invert is supported"));
      const auto& pat = s.at("pattern");
      std::string regex;
      if (pat.contains("Regex")) {
        regex = rewrite_whitespace_escapes(pat.at("Regex").get<std::string>());
      } else if (pat.contains("String")) {
        regex = escape_literal(pat.at("String").get<std::string>());
      } else {
        throw Error(cat("tokenizer.json: pre_tokenizer Split #", k, " has no Regex/String pattern"));
      }
      int err = 0;
      PCRE2_SIZE off = 0;
      auto r = std::make_shared<Regex>();
      r->source = regex;
      r->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex.data()), regex.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
      if (!r->code)
        throw Error(cat("tokenizer.json: pre_tokenizer Split #", k, " regex does not compile at offset ", off, ": ",
                        pcre2_message(err)));
      // JIT is an optimisation; the interpreter gives the same results if it is unavailable.
      pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);
      pt.splits_.push_back(std::move(r));
    } else if (t == "ByteLevel") {
      if (s.value("add_prefix_space", false) || s.value("use_regex", false))
        throw Error("tokenizer.json: pre_tokenizer ByteLevel with add_prefix_space/use_regex is not supported");
      if (k + 1 != steps.size()) throw Error("tokenizer.json: pre_tokenizer ByteLevel must be the last step");
    } else {
      throw Error(cat("tokenizer.json: unsupported pre_tokenizer type '", t, "'"));
    }
  }
  return pt;
}

namespace {

// Per-thread match state: match data with one pair (only the whole match is needed) and a JIT
// stack large enough for long whitespace runs, where `\s*[\r\n]+` backtracks.
struct MatchState {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* js = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
  MatchState() { pcre2_jit_stack_assign(mc, nullptr, js); }
  ~MatchState() {
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
  }
};

MatchState& match_state() {
  thread_local MatchState st;
  return st;
}

void split_one(const pcre2_code* code, std::string_view piece, std::vector<std::string_view>& out) {
  MatchState& st = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  std::size_t pos = 0;     // start of the not-yet-emitted text
  std::size_t search = 0;  // where the next match attempt starts
  while (search <= piece.size()) {
    const int rc = pcre2_match(code, subject, piece.size(), search, PCRE2_NO_UTF_CHECK, st.md, st.mc);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error(cat("tokenizer: regex match failed: ", pcre2_message(rc)));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
    const std::size_t s = ov[0], e = ov[1];
    if (e == s) {  // empty match: not a piece; step over one character
      if (s >= piece.size()) break;
      std::size_t n = 1;
      while (s + n < piece.size() && (static_cast<unsigned char>(piece[s + n]) & 0xC0) == 0x80) ++n;
      search = s + n;
      continue;
    }
    if (s > pos) out.push_back(piece.substr(pos, s - pos));
    out.push_back(piece.substr(s, e - s));
    pos = search = e;
  }
  if (pos < piece.size()) out.push_back(piece.substr(pos));
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  if (splits_.empty()) {
    out.push_back(text);
    return;
  }
  thread_local std::vector<std::string_view> a, b;
  a.clear();
  a.push_back(text);
  for (std::size_t k = 0; k < splits_.size(); ++k) {
    const bool last = k + 1 == splits_.size();
    std::vector<std::string_view>& dst = last ? out : b;
    if (!last) b.clear();
    for (std::string_view piece : a) split_one(splits_[k]->code, piece, dst);
    if (!last) std::swap(a, b);
  }
}

}  // namespace dsv4
