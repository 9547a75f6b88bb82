// What the OpenAI and Anthropic front ends share: request-validation helpers that name the
// offending field, API errors carrying their HTTP status, and CompletionSplitter, which turns
// the generated text into reasoning / content / tool-call events for both APIs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "server/worker.h"
#include "tokenizer/completion_parser.h"
#include "tokenizer/tokenizer.h"

namespace dsv4::server {

// Key order matters for prompts (tool schemas are re-serialized in input order).
using Json = nlohmann::ordered_json;

// An error to send back: HTTP status, the API's error type, the message naming the problem.
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, const std::string& message, std::string param = "")
      : Error(message), status_(status), type_(std::move(type)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string type_, param_;
};

// 400 invalid_request_error naming `param`.
[[noreturn]] void bad_request(const std::string& message, const std::string& param = "");

// What both APIs need to know about the server.
struct ApiConfig {
  std::string model_name = "dsv4";
  int64_t max_context = 0;
  int32_t eos_id = 1;
  bool test_hooks = false;        // allow the `dsv4_test_*` request fields
  int64_t default_max_tokens = 1024;
};

// How deeply request JSON may nest (the body object is level 1). Copying and serializing JSON
// recurse once per level, so a body is measured, without recursion, before it is parsed.
inline constexpr std::size_t kMaxJsonDepth = 128;

// 400 naming where `text` nests deeper than kMaxJsonDepth; `what` names the text.
void check_json_depth(std::string_view text, const std::string& what);

// The body as a JSON object, or a 400 saying why not.
Json parse_body(const std::string& body);

// Returns to the system the free heap pages of this thread's malloc arena: a body of 10^6
// small values is a tree of ~100 MB, and each HTTP thread's arena would otherwise keep that
// much after the tree is gone.
void release_free_heap();

// `map(parse_body(body))`, releasing the free heap once the tree is gone if the body was large.
template <class Map>
auto map_request(const std::string& body, Map&& map) {
  struct ReleaseAfter {
    bool large;
    ~ReleaseAfter() {
      if (large) release_free_heap();
    }
  } release{body.size() >= (1u << 20)};
  return map(parse_body(body));  // the tree dies with this statement, before `release`
}

// Typed optional fields: absent or null → nullopt; a wrong type or a value outside [lo, hi]
// → 400 naming the field.
std::optional<double> get_number(const Json& o, const char* key, double lo, double hi);
std::optional<int64_t> get_int(const Json& o, const char* key, int64_t lo, int64_t hi);
std::optional<bool> get_bool(const Json& o, const char* key);
std::optional<std::string> get_string(const Json& o, const char* key);
// A string or an array of strings (stop sequences), at most `max_items`.
std::vector<std::string> get_string_list(const Json& o, const char* key, size_t max_items);

// The test hooks: `dsv4_test_completion` (text the model is made to produce, tokenized here and
// followed by EOS) and `dsv4_test_fail_alloc` (http | start | prefill | decode: where a
// std::bad_alloc is thrown). Refused unless the server runs with --test-hooks.
void apply_test_hook(const Json& body, const Tokenizer& tok, const ApiConfig& cfg, GenParams* gen);

// Checks the prompt against the context and clips max_tokens to the room left.
void fit_context(const ApiConfig& cfg, GenParams* gen);

// JSON text; invalid UTF-8 (a token cut mid-character in logprobs) becomes U+FFFD instead of
// throwing.
std::string dump(const Json& j);
// "<prefix><24 random hex digits>".
std::string random_id(const std::string& prefix);
int64_t unix_time();

// Reasoning / content / tool-call events from generated text, built on IncrementalParser. When
// the output is not valid V4 markup (e.g. a random-weight model) the rest is passed on as plain
// content, so a client always gets the text: the events stand for the completion byte for byte
// (markup only as reported tool calls and the reasoning / content switch), whatever the
// chunking. message() accumulates exactly what was emitted.
class CompletionSplitter {
 public:
  explicit CompletionSplitter(bool thinking) : parser_(thinking) {}
  std::vector<ParseEvent> feed(const std::string& text);
  std::vector<ParseEvent> finish();
  const ParsedMessage& message() const { return msg_; }

 private:
  void record(const std::vector<ParseEvent>& ev);
  // Appends `text` as one more `kind` event; an unfinished character waits unless `final`.
  void pass_on(std::string_view text, ParseEvent::Kind kind, bool final, std::vector<ParseEvent>& ev);
  IncrementalParser parser_;
  bool raw_ = false;       // the output turned out not to be V4 markup: all content
  std::string raw_tail_;   // an unfinished UTF-8 character of raw content
  ParsedMessage msg_;
};

}  // namespace dsv4::server
