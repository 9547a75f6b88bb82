// DeepSeek-V4 chat prompt encoding, with the semantics of the official `encoding_dsv4.py`
// (`encode_messages`). V4 ships no Jinja template; this is the only prompt format.
//
// Messages are OpenAI-style JSON objects: roles system, user, assistant (content,
// reasoning_content, tool_calls with `function.arguments` as a JSON string, wo_eos, task),
// tool (tool_call_id, content; merged into the following user turn as <tool_result> blocks in
// call order), developer, latest_reminder; `tools` (OpenAI function schemas) and
// `response_format` on system/developer messages; `task` ∈ action|query|authority|domain|title|
// read_url. The JSON type is nlohmann::ordered_json because key order is part of the prompt:
// tool schemas are re-serialized in input order with Python's json.dumps formatting.
//
// Beyond the reference: a `tools` array passed separately (as in the OpenAI request body) is
// attached to the first system message, or to a new empty system message put first; message
// `content` may also be an array of {"type":"text","text":...} parts (texts joined by a blank
// line). Inputs the reference rejects with an exception (unknown role, empty developer content,
// invalid task or reasoning_effort, non-object tool arguments) throw dsv4::Error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace dsv4 {

struct ChatOptions {
  bool thinking = false;         // thinking_mode "thinking" (true) or "chat"
  bool drop_thinking = true;     // drop reasoning of turns before the last user turn
  std::string reasoning_effort;  // "" (none), "high" or "max"
  bool add_bos = true;           // add_default_bos_token (ignored when `context` is non-empty)
  // Messages already encoded earlier in the conversation (the reference's `context`): they
  // steer how the new messages render, but only the new ones are emitted, without BOS.
  nlohmann::ordered_json context = nlohmann::ordered_json::array();
};

// Prompt text for `messages` (a JSON array). `tools` may be null or an array (see above).
std::string encode_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                        const ChatOptions& options);

struct ChatPrompt {
  std::string text;
  std::vector<int32_t> ids;
};

// encode_chat followed by tokenization; BOS comes from the literal BOS text.
ChatPrompt encode_chat_prompt(const Tokenizer& tok, const nlohmann::ordered_json& messages,
                              const nlohmann::ordered_json& tools, const ChatOptions& options);

}  // namespace dsv4
