#include "server/api_common.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "tokenizer/pyjson.h"
#include "tokenizer/utf8.h"

namespace dsv4::server {

void bad_request(const std::string& message, const std::string& param) {
  throw ApiError(400, "invalid_request_error", message, param);
}

namespace {

// The path of the value that byte `at` of JSON text lies in ("tools[0].function.parameters"),
// and the top-level key it is under; for messages about where a body is wrong. Iterative; the
// text before `at` must nest at most kMaxJsonDepth deep, which bounds the frames kept.
std::pair<std::string, std::string> json_path_at(std::string_view text, std::size_t at) {
  struct Frame {
    bool object;
    std::string key;  // objects: the key whose value is being read
    std::size_t index = 0;
  };
  std::vector<Frame> stack;
  bool expect_key = false;  // in an object, before its next key (or inside it)
  for (std::size_t i = 0; i < at && i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"') {
      const std::size_t start = ++i;
      while (i < at && i < text.size() && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
      if (i >= at) break;  // `at` is inside this string
      if (expect_key && !stack.empty()) stack.back().key = std::string(text.substr(start, std::min<std::size_t>(i - start, 64)));
      expect_key = false;
    } else if (c == '[' || c == '{') {
      stack.push_back(Frame{c == '{', "", 0});
      expect_key = c == '{';
    } else if ((c == ']' || c == '}') && !stack.empty()) {
      stack.pop_back();
      expect_key = false;
    } else if (c == ',' && !stack.empty()) {
      if (stack.back().object) expect_key = true;
      else ++stack.back().index;
    }
  }
  if (!stack.empty() && stack.back().object && expect_key) stack.pop_back();  // at a key, not a value
  std::string path;
  for (std::size_t k = 0; k < stack.size() && k < 12; ++k)
    path += stack[k].object ? cat(k ? "." : "", stack[k].key) : cat("[", stack[k].index, "]");
  if (stack.size() > 12) path += "…";
  return {path.empty() ? "the top level" : path, !stack.empty() && stack[0].object ? stack[0].key : std::string()};
}

// A parser message quotes the text it read last, which can be most of the body.
std::string clip(std::string s, std::size_t max) {
  if (s.size() > max) s = s.substr(0, max) + "…";
  return s;
}

}  // namespace

void check_json_depth(std::string_view text, const std::string& what) {
  const std::size_t at = pyjson::too_deep_at(text, kMaxJsonDepth);
  if (at == std::string_view::npos) return;
  const auto [path, param] = json_path_at(text, at);
  bad_request(cat(what, " nests JSON deeper than ", kMaxJsonDepth, " levels (at ", path, ")"), param);
}

Json parse_body(const std::string& body) {
  check_json_depth(body, "the request body");  // before anything recursive reads it
  Json j;
  try {
    j = Json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    const auto [path, param] = json_path_at(body, e.byte > 0 ? e.byte - 1 : 0);
    bad_request(cat("the request body is not valid JSON at ", path, ": ", clip(e.what(), 300)), param);
  } catch (const nlohmann::json::exception& e) {
    // A number beyond double (1e400) has no offset; the message quotes it: find it for the path.
    const std::string what = e.what();
    const std::size_t q = what.find('\''), q2 = what.rfind('\'');
    const std::size_t at = q < q2 ? body.find(what.substr(q + 1, q2 - q - 1)) : std::string::npos;
    const auto [path, param] = json_path_at(body, at == std::string::npos ? 0 : at);
    bad_request(cat("the request body is not valid JSON at ", path, ": ", clip(what, 300)), param);
  }
  if (!j.is_object()) bad_request("the request body must be a JSON object");
  return j;
}

void release_free_heap() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

namespace {
const Json* present(const Json& o, const char* key) {
  auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}
}  // namespace

std::optional<double> get_number(const Json& o, const char* key, double lo, double hi) {
  const Json* v = present(o, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad_request(cat("'", key, "' must be a number"), key);
  const double d = v->get<double>();
  if (!(d >= lo && d <= hi)) bad_request(cat("'", key, "' must be between ", lo, " and ", hi, ", got ", d), key);
  return d;
}

std::optional<int64_t> get_int(const Json& o, const char* key, int64_t lo, int64_t hi) {
  const Json* v = present(o, key);
  if (!v) return std::nullopt;
  if (v->is_number_float() && v->get<double>() == std::floor(v->get<double>()) && std::abs(v->get<double>()) < 1e15)
    return get_int(Json{{key, int64_t(v->get<double>())}}, key, lo, hi);
  if (!v->is_number_integer()) bad_request(cat("'", key, "' must be an integer"), key);
  const int64_t i = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
  if (i < lo || i > hi) bad_request(cat("'", key, "' must be between ", lo, " and ", hi, ", got ", i), key);
  return i;
}

std::optional<bool> get_bool(const Json& o, const char* key) {
  const Json* v = present(o, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad_request(cat("'", key, "' must be a boolean"), key);
  return v->get<bool>();
}

std::optional<std::string> get_string(const Json& o, const char* key) {
  const Json* v = present(o, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad_request(cat("'", key, "' must be a string"), key);
  return v->get<std::string>();
}

std::vector<std::string> get_string_list(const Json& o, const char* key, size_t max_items) {
  const Json* v = present(o, key);
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const Json& s : *v) {
      if (!s.is_string()) bad_request(cat("'", key, "' must be a string or an array of strings"), key);
      out.push_back(s.get<std::string>());
    }
  } else {
    bad_request(cat("'", key, "' must be a string or an array of strings"), key);
  }
  if (out.size() > max_items) bad_request(cat("'", key, "' may hold at most ", max_items, " entries"), key);
  for (const std::string& s : out)
    if (s.empty()) bad_request(cat("'", key, "' entries must not be empty"), key);
  return out;
}

namespace {
// A test hook's value as a string; refused unless the server runs with --test-hooks.
std::optional<std::string> test_hook(const Json& body, const ApiConfig& cfg, const char* key) {
  const Json* v = present(body, key);
  if (!v) return std::nullopt;
  if (!cfg.test_hooks) bad_request(cat("'", key, "' is a test hook; it needs a server started with --test-hooks"), key);
  if (!v->is_string()) bad_request(cat("'", key, "' must be a string"), key);
  return v->get<std::string>();
}
}  // namespace

void apply_test_hook(const Json& body, const Tokenizer& tok, const ApiConfig& cfg, GenParams* gen) {
  if (auto text = test_hook(body, cfg, "dsv4_test_completion")) {
    gen->forced = tok.encode(*text);
    gen->forced->push_back(cfg.eos_id);
  }
  if (auto at = test_hook(body, cfg, "dsv4_test_fail_alloc")) {
    const std::pair<const char*, FailAlloc> stages[] = {
        {"http", FailAlloc::kHttp},
        {"start", FailAlloc::kStart},
        {"prefill", FailAlloc::kPrefill},
        {"decode", FailAlloc::kDecode}};
    auto it = std::find_if(std::begin(stages), std::end(stages), [&](const auto& st) { return *at == st.first; });
    if (it == std::end(stages))
      bad_request("'dsv4_test_fail_alloc' must be one of http, start, prefill, decode", "dsv4_test_fail_alloc");
    gen->fail_alloc = it->second;
  }
}

void fit_context(const ApiConfig& cfg, GenParams* gen) {
  const int64_t n = int64_t(gen->prompt.size());
  if (n == 0) bad_request("the prompt is empty");
  if (n >= cfg.max_context)
    throw ApiError(400, "invalid_request_error",
                   cat("the prompt is ", n, " tokens but the context holds ", cfg.max_context,
                       " (one more is needed to generate)"),
                   "messages");
  gen->max_tokens = std::min(gen->max_tokens, cfg.max_context - n);
}

std::string dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

std::string random_id(const std::string& prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string s = prefix;
  for (int i = 0; i < 24; ++i) s += hex[rng() & 15];
  return s;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void CompletionSplitter::record(const std::vector<ParseEvent>& ev) {
  for (const ParseEvent& e : ev) {
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning: msg_.reasoning_content += e.text; break;
      case ParseEvent::Kind::Content: msg_.content += e.text; break;
      case ParseEvent::Kind::ToolCallBegin: msg_.tool_calls.push_back(ToolCall{e.text, ""}); break;
      case ParseEvent::Kind::ToolCallArgs:
        if (!msg_.tool_calls.empty()) msg_.tool_calls.back().arguments += e.text;
        break;
      case ParseEvent::Kind::ToolCallEnd: break;
    }
  }
}

std::vector<ParseEvent> CompletionSplitter::feed(const std::string& text) {
  std::vector<ParseEvent> ev;
  if (text.empty()) return ev;
  if (raw_) {
    pass_on(text, ParseEvent::Kind::Content, false, ev);
  } else {
    ev = parser_.feed(text);
    if (parser_.failed()) {
      // Not V4 markup after all: from here on everything is content, starting with what the
      // parser had not reported yet (held-back bytes included, nothing twice).
      raw_ = true;
      pass_on(parser_.unreleased(), ParseEvent::Kind::Content, false, ev);
    }
  }
  record(ev);
  return ev;
}

std::vector<ParseEvent> CompletionSplitter::finish() {
  std::vector<ParseEvent> ev;
  if (raw_) {
    pass_on("", ParseEvent::Kind::Content, true, ev);
  } else {
    try {
      ev = parser_.finish();
    } catch (const Error&) {
      // Cut off (max_tokens) or ended without EOS (the worker does not pass it on) where the
      // reference wants one: the text not reported yet still reaches the client, as what was
      // being read.
      ev.clear();
      pass_on(parser_.unreleased(), parser_.in_reasoning() ? ParseEvent::Kind::Reasoning : ParseEvent::Kind::Content,
              true, ev);
    }
  }
  record(ev);
  return ev;
}

void CompletionSplitter::pass_on(std::string_view text, ParseEvent::Kind kind, bool final, std::vector<ParseEvent>& ev) {
  // Like the parser's own events, never split a UTF-8 character (each event becomes JSON text).
  std::string s = std::move(raw_tail_);
  s += text;
  raw_tail_ = final ? "" : s.substr(utf8::complete_prefix_len(s));
  s.resize(s.size() - raw_tail_.size());
  if (s.empty()) return;
  if (!ev.empty() && ev.back().kind == kind)
    ev.back().text += s;
  else
    ev.push_back(ParseEvent{kind, std::move(s)});
}

}  // namespace dsv4::server
