// tool_choice and response_format as a decoding constraint (src/constrain), shared by the
// OpenAI chat, Anthropic Messages and Responses front ends.
//
// * A required call (chat/Responses "required", Anthropic "any") or a named function (chat
//   {"type":"function","function":{"name"}}, Responses {"type":"function","name"}, Anthropic
//   {"type":"tool","name"}): the answer is a DSML tool-call block naming one of the allowed
//   tools with arguments matching its parameters schema.
// * response_format json_schema (Responses text.format) / json_object: the answer is a JSON
//   document matching the schema (any object), or — when tools are offered with tool_choice
//   auto — a tool call instead.
// * Thinking mode: the reasoning is free and the constraint applies after its `</think>`.
// An unsupported schema feature is a 400 naming it; a json_schema without `strict: true` falls
// back to the prompt-only rendering instead.
#pragma once

#include <memory>
#include <string>

#include "constrain/token_mask.h"
#include "server/api_common.h"

namespace dsv4::server {

struct ToolChoice {
  enum class Kind { kAuto, kRequired, kNamed } kind = Kind::kAuto;
  std::string name;              // kNamed
  bool parallel = true;          // more than one call allowed
};

struct ConstraintRequest {
  Json tools;                    // OpenAI function tools as rendered ([{type, function: {name, parameters}}]) or null
  const Json* body_tools = nullptr;  // the request's own `tools`, to name a tool's index in errors
  std::string schema_key;        // where a tool's schema sits in body_tools[i]: "function.parameters", …
  ToolChoice choice;
  Json response_format;          // chat-style {"type": "json_schema", "json_schema": {...}} / json_object, or null
  std::string format_param;      // "response_format" / "text" (400s name it)
  std::string format_path;       // "response_format.json_schema.schema" / "text.format.schema"
  bool thinking = false;
};

// The constraint for the request (null: decode freely). Throws ApiError 400 on an unsupported
// schema. Compiled constraints are cached by their canonical text.
std::shared_ptr<const constrain::Constraint> make_constraint(const ConstraintRequest& r, const Tokenizer& tok,
                                                             int32_t eos_id);

// Compiled constraints kept (most recently used), and how often a request found one there.
inline constexpr size_t kConstraintCacheEntries = 16;
int64_t constraint_cache_hits();

}  // namespace dsv4::server
