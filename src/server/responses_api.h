// The OpenAI Responses API (/v1/responses), the wire protocol of Codex CLI. A request's
// `instructions` and `input` items (messages, function_call, function_call_output, reasoning)
// are mapped onto the chat messages encode_chat takes; system and developer messages are
// system text, placed as for the Anthropic API (place_system_message). The output is a list of
// items — reasoning (V4's thinking, as `reasoning_text` content), message (`output_text`),
// function_call — and, streamed, the standard response.* event sequence.
//
// `reasoning.effort` switches V4's thinking on (none/minimal: off; low/medium/high: on; xhigh:
// V4's maximum effort); absent, thinking is off as in chat completions. `tool_choice` none hides
// the tools; required / a named function, `parallel_tool_calls: false` and text.format are
// enforced by constrained decoding (constraint_request.h).
// `store` (default true) keeps the conversation in memory (ResponseStore, bounded) so that a
// later request can continue it with `previous_response_id`. `prompt_cache_key`, `include`,
// `metadata`, `user`, `safety_identifier`, `service_tier`, `truncation`, `text.verbosity` and
// unknown fields are accepted and ignored (the prefix cache matches by tokens anyway).
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/api_common.h"

namespace dsv4::server {

// Conversations of stored responses, by response id: the chat messages (without the
// instructions, which a continuation does not inherit) up to and including the response's
// own assistant turn. Oldest first out beyond `max_entries` or `max_bytes`. Thread-safe.
class ResponseStore {
 public:
  explicit ResponseStore(size_t max_entries = 1024, size_t max_bytes = size_t(64) << 20)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}
  void put(const std::string& id, Json conversation);
  std::optional<Json> get(const std::string& id) const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::pair<Json, size_t>> entries_;  // conversation, bytes
  std::deque<std::string> order_;
  size_t max_entries_, max_bytes_, bytes_ = 0;
};

struct ResponsesRequest {
  GenParams gen;
  bool stream = false;
  bool thinking = false;
  bool store = true;
  Json history;  // chat messages of the conversation so far, without the instructions
  Json echo;     // request settings repeated in the response object
};

// Parses and renders a /v1/responses body; previous_response_id is looked up in `store`.
ResponsesRequest parse_responses_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg,
                                         const ResponseStore& store);

// Builds the response from the worker's output: SSE events as text arrives, and the response
// object. The non-streaming path feeds the same events and ignores the SSE text.
class ResponsesStream {
 public:
  ResponsesStream(std::string id, const ApiConfig& cfg, const ResponsesRequest& req, const Tokenizer& tok);
  std::string start();                      // response.created, response.in_progress
  std::string on_event(const JobEvent& e);  // item and delta events
  std::string finish(const JobOutcome& o);  // closing events, response.completed / incomplete
  std::string fail(const std::string& message);  // response.failed
  const Json& response() const { return response_; }
  // req.history plus this response's assistant turn (for ResponseStore).
  Json conversation() const;

 private:
  std::string event(const std::string& type, Json fields);
  std::string open_item(Json item);
  std::string close_item();
  std::string to_sse(const std::vector<ParseEvent>& ev);
  Json snapshot(const std::string& status) const;

  std::string id_;
  int64_t created_;
  const ApiConfig& cfg_;
  const ResponsesRequest& req_;
  const Tokenizer& tok_;
  CompletionSplitter splitter_;
  int64_t seq_ = 0;
  Json output_ = Json::array();  // items; the last one is open while open_ is true
  bool open_ = false;
  std::string text_;             // text of the open reasoning / message item
  Json response_;
};

}  // namespace dsv4::server
