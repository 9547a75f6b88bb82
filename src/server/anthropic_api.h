// The Anthropic Messages API (/v1/messages): requests are mapped onto the OpenAI-style messages
// encode_chat takes (system → system message, tool_use blocks → assistant tool_calls,
// tool_result blocks → tool messages, which V4 merges into the user turn), responses and the
// SSE event sequence (message_start, content_block_start/delta/stop, message_delta,
// message_stop) are built from the same worker output as the OpenAI API.
//
// System messages may also appear inside `messages` (as Claude Code sends them): see
// place_system_message for where V4's format puts them.
// `thinking: {type: enabled | adaptive, budget_tokens, display}` switches V4's thinking mode on
// (the budget is not enforced; max_tokens bounds the whole answer); thinking blocks carry an
// empty signature. tool_choice none hides the tools; any / tool are enforced by constrained
// decoding (constraint_request.h).
// Fields a client sends that have no meaning here (cache_control, context_management,
// metadata, output_config other than effort, unknown top-level fields) are ignored.
#pragma once

#include <string>
#include <vector>

#include "server/api_common.h"

namespace dsv4::server {

struct MessagesRequest {
  GenParams gen;
  bool stream = false;
  bool thinking = false;
  bool omit_thinking = false;  // thinking.display "omitted": thinking text goes in the signature only
};

MessagesRequest parse_messages_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg);
// Adds a system message met inside a conversation to the chat messages built so far (V4 has no
// role marker for system text; see the .cc). `user_follows`: a user message comes later. Shared
// with the Responses API.
void place_system_message(Json& messages, const std::string& text, bool user_follows);

// /v1/messages/count_tokens: the prompt length of a Messages request.
int64_t count_message_tokens(const Json& body, const Tokenizer& tok, const ApiConfig& cfg);

Json messages_response(const std::string& id, const ApiConfig& cfg, const MessagesRequest& req,
                       const std::vector<JobEvent>& events, const JobOutcome& outcome);

class MessagesStream {
 public:
  MessagesStream(std::string id, const ApiConfig& cfg, const MessagesRequest& req);
  // message_start; usage splits the prompt as the final usage does (cached_tokens: prefix cache).
  std::string start(int64_t prompt_tokens, int64_t cached_tokens);
  std::string on_event(const JobEvent& e);
  std::string finish(const JobOutcome& o);

 private:
  std::string open_block(const std::string& type, Json block);
  std::string close_block();
  std::string to_sse(const std::vector<ParseEvent>& ev);
  std::string id_;
  const ApiConfig& cfg_;
  CompletionSplitter splitter_;
  int index_ = -1;
  std::string open_type_;  // "" when no block is open
  bool omit_thinking_ = false;
  std::string thinking_;   // the open thinking block's text (omit_thinking_: sent as its signature)
};

// {"type":"error","error":{"type", "message"}}
Json anthropic_error(const std::string& type, const std::string& message);
// Anthropic's error type for an HTTP status.
std::string anthropic_error_type(int status);
// "event: <type>\ndata: <json>\n\n"
std::string sse_event(const Json& j);

}  // namespace dsv4::server
