// Parsing DeepSeek-V4 completions back into assistant messages, with the semantics of the
// official `parse_message_from_completion_text`.
//
// A completion is the generated text right after the prompt's `<think>` (thinking mode) or
// `</think>` (chat mode): [reasoning `</think>`] content [`\n\n<｜DSML｜tool_calls>` … block]
// [EOS]. Tool calls come back in OpenAI form: arguments as a JSON string built from the DSML
// parameters (string="true" values JSON-escaped, string="false" values pasted verbatim, as the
// reference does — even when they are not valid JSON).
//
// parse_completion() is the one-shot parser; it throws CompletionParseError exactly where the
// reference raises, with the reference's exception type and message. IncrementalParser is fed
// the completion as it streams (any chunk boundaries) and reports each piece as soon as its
// role is decidable, never releasing text that could still turn out to be markup (a tool call
// once its invoke element has closed); its final result is by construction that of the
// one-shot parser.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON object text
  bool operator==(const ToolCall&) const = default;
};

struct ParsedMessage {
  std::string content;
  std::string reasoning_content;
  std::vector<ToolCall> tool_calls;
  bool operator==(const ParsedMessage&) const = default;

  // {"role":"assistant","content":…,"reasoning_content":…,"tool_calls":[{"type":"function",
  //  "function":{"name":…,"arguments":…}}]}, the reference's dict.
  nlohmann::ordered_json to_json() const;
};

class CompletionParseError : public Error {
 public:
  // `type` is the reference's exception class ("AssertionError" or "ValueError").
  CompletionParseError(std::string type, std::string message);
  const std::string& type() const { return type_; }
  const std::string& message() const { return message_; }

 private:
  std::string type_, message_;
};

ParsedMessage parse_completion(std::string_view text, bool thinking);

struct ParseEvent {
  enum class Kind { Reasoning, Content, ToolCallBegin, ToolCallArgs, ToolCallEnd };
  Kind kind;
  std::string text;  // Reasoning/Content: the delta; ToolCallBegin: the name; ToolCallArgs: delta
  bool operator==(const ParseEvent&) const = default;
};

class IncrementalParser {
 public:
  explicit IncrementalParser(bool thinking);

  // Never throws on bad input: once the stream can no longer be valid, events stop and
  // failed() turns true; finish() then throws the reference's error.
  std::vector<ParseEvent> feed(std::string_view chunk);
  // Ends the stream: returns the remaining events, or throws CompletionParseError.
  std::vector<ParseEvent> finish();
  // Before finish(): what the events so far describe; after: the one-shot parse result.
  ParsedMessage result() const { return result_; }
  bool failed() const { return state_ == State::Failed; }
  // The fed text no event stands for yet: bytes held back because they may start a control
  // token, a tool call whose invoke element has not closed, and after a failure everything
  // from the failure point on. A caller that passes invalid output on as plain text sends
  // exactly this, so that nothing is lost or repeated.
  std::string_view unreleased() const { return std::string_view(buf_).substr(released_); }
  // Still reading reasoning (thinking mode, before </think>).
  bool in_reasoning() const { return state_ == State::Reasoning; }

 private:
  enum class State { Reasoning, Content, Tools, AfterTools, Done, Failed };
  enum class ToolState { ExpectInvoke, Name, Param, AfterParam };

  void advance(std::vector<ParseEvent>& ev);
  bool step_text(std::vector<ParseEvent>& ev);
  bool step_tools(std::vector<ParseEvent>& ev);
  void emit_text(std::vector<ParseEvent>& ev, ParseEvent::Kind kind, std::size_t end, bool final);
  void close_call(std::vector<ParseEvent>& ev);

  bool thinking_;
  bool finished_ = false;
  State state_;
  ToolState tool_state_ = ToolState::ExpectInvoke;
  std::string buf_;
  std::size_t pos_ = 0;        // everything before pos_ has been consumed
  std::size_t scan_from_ = 0;  // no stop token starts in [pos_, scan_from_) (search hint)
  std::size_t released_ = 0;   // the events so far stand for buf_[0, released_)
  std::vector<std::string> param_names_;
  // The tool call being read: reported (events and result_) only once its invoke element has
  // closed, so that a call is never left half-reported when the markup turns out invalid.
  ToolCall open_call_;
  std::vector<ParseEvent> open_events_;
  ParsedMessage result_;
};

}  // namespace dsv4
