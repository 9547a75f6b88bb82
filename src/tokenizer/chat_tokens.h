// Literal control strings of the DeepSeek-V4 chat format, shared by the prompt encoder and the
// completion parsers. Each is one added token of the V4 vocabulary (｜DSML｜ is id 128825; the
// DSML tags are `<` + ｜DSML｜ + name).
#pragma once

namespace dsv4::chat_tokens {

inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kThinkStart = "<think>";
inline constexpr const char* kThinkEnd = "</think>";
inline constexpr const char* kDsml = "｜DSML｜";
inline constexpr const char* kUser = "<｜User｜>";
inline constexpr const char* kAssistant = "<｜Assistant｜>";
inline constexpr const char* kLatestReminder = "<｜latest_reminder｜>";

// "\n\n<｜DSML｜tool_calls": where a tool-call block starts in a completion.
inline constexpr const char* kToolCallsStart = "\n\n<｜DSML｜tool_calls";
inline constexpr const char* kToolCallsEnd = "</｜DSML｜tool_calls>";
inline constexpr const char* kInvokeOpen = "<｜DSML｜invoke";
inline constexpr const char* kInvokeClose = "</｜DSML｜invoke";
inline constexpr const char* kParamOpen = "<｜DSML｜parameter";
inline constexpr const char* kParamClose = "/｜DSML｜parameter";

}  // namespace dsv4::chat_tokens
