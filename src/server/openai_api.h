// The OpenAI API: /v1/chat/completions and /v1/completions bodies → GenParams + prompt ids, and
// worker output → response objects and SSE chunks. Pure JSON ↔ structs (no sockets), so the
// whole mapping is unit-tested.
//
// Chat requests accept what DeepSeek's own API and vLLM/SGLang accept for V4: messages with
// tool calls and tool results, tools, tool_choice (none hides the tools; other values are
// enforced by constrained decoding, constraint_request.h), response_format (rendered into the
// system prompt, V4's own mechanism, and json_schema / json_object enforced the same way), thinking on/off as `thinking: {type: enabled|disabled}`
// or `chat_template_kwargs: {thinking|enable_thinking: bool}`, and reasoning_effort high|max
// (low/medium map to high; none switches thinking off; any effort switches it on unless
// thinking is disabled explicitly). Thinking is off by default. vLLM's sampling extras top_k,
// min_p and repetition_penalty are accepted too. Penalties look at the generated tokens only.
#pragma once

#include <string>
#include <vector>

#include "server/api_common.h"
#include "tokenizer/chat.h"

namespace dsv4::server {

struct ChatRequest {
  GenParams gen;
  bool stream = false;
  bool include_usage = true;  // stream_options.include_usage (default on: a final usage chunk)
  bool thinking = false;
  int top_logprobs = 0;
  Json messages;              // normalized for encode_chat
  Json tools;                 // null or the OpenAI function schemas
  ChatOptions chat;
};

// Parses, validates and renders the prompt; throws ApiError (400) naming the problem.
ChatRequest parse_chat_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg);

// encode_chat_prompt with its Errors turned into 400s.
std::vector<int32_t> render_chat(const Json& messages, const Json& tools, const ChatOptions& options,
                                 const Tokenizer& tok);

// Shared by chat (via messages) and the Anthropic API: sampling fields common to both.
void parse_sampling(const Json& body, GenParams* gen, double max_temperature);
// `prompt_cache_key` (chat completions and Responses): a string of at most 1024 bytes that tags
// the request's prefix-cache snapshots (worker.h GenParams::cache_key); "" when absent.
std::string parse_cache_key(const Json& body);

struct CompletionRequest {
  GenParams gen;
  bool stream = false;
  bool include_usage = true;
  int logprobs = 0;  // /v1/completions `logprobs`: number of alternatives
};
CompletionRequest parse_completion_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg);

// Non-streaming chat response from everything the worker sent.
Json chat_response(const std::string& id, const ApiConfig& cfg, const ChatRequest& req,
                   const std::vector<JobEvent>& events, const JobOutcome& outcome, const Tokenizer& tok);

// SSE chunks of one streamed chat completion.
class ChatStream {
 public:
  ChatStream(std::string id, const ApiConfig& cfg, const ChatRequest& req, const Tokenizer& tok);
  std::string start();
  std::string on_event(const JobEvent& e);
  std::string finish(const JobOutcome& o);

 private:
  std::string chunk(Json delta, Json finish_reason = nullptr, Json logprobs = nullptr);
  std::string events_to_sse(const std::vector<ParseEvent>& ev, Json logprobs);
  std::string id_;
  int64_t created_;
  const ApiConfig& cfg_;
  const ChatRequest& req_;
  const Tokenizer& tok_;
  CompletionSplitter splitter_;
  int tool_index_ = -1;
};

Json completion_response(const std::string& id, const ApiConfig& cfg, const CompletionRequest& req,
                         const std::vector<JobEvent>& events, const JobOutcome& outcome, const Tokenizer& tok);
// One streamed /v1/completions chunk (text delta, or the final finish_reason), as an SSE line.
std::string completion_chunk(const std::string& id, const ApiConfig& cfg, const CompletionRequest& req,
                             const JobEvent* e, const JobOutcome* o, const Tokenizer& tok);

Json usage_json(const JobOutcome& o);
// {"error": {"message", "type", "param", "code"}}
Json openai_error(const std::string& type, const std::string& message, const std::string& param = "");
std::string finish_reason_openai(const JobOutcome& o, bool has_tool_calls);
// "data: <json>\n\n"
std::string sse_data(const Json& j);

}  // namespace dsv4::server
