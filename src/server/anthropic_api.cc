#include "server/anthropic_api.h"

#include "server/constraint_request.h"

#include <algorithm>

#include "server/openai_api.h"
#include "tokenizer/pyjson.h"

namespace dsv4::server {

// Where a system message inside `messages` goes (Claude Code sends one after the first user
// message). V4 renders a system message as bare text with no role marker, so one can only sit
// between turns (after an assistant's end of sentence, before the next <｜User｜>): there it is
// kept as a system message, as the reference encoder would render it. Before any turn it joins
// the leading system prompt. Anywhere else it would fall inside a user turn (or leave the prompt
// without its <｜Assistant｜> marker), so its text becomes part of that user turn instead.
void place_system_message(Json& out, const std::string& text, bool user_follows) {
  if (!out.empty() && out.back()["role"] == "system") {  // consecutive system texts: one block
    out.back()["content"] = out.back()["content"].get<std::string>() + "\n\n" + text;
  } else if (out.empty() || (out.back()["role"] == "assistant" && user_follows)) {
    out.push_back(Json{{"role", "system"}, {"content", text}});
  } else if (out.back()["role"] == "user") {
    const std::string prev = out.back()["content"];
    out.back()["content"] = prev.empty() ? text : prev + "\n\n" + text;
  } else {
    // After tool results (the same user turn) or after the last assistant message.
    out.push_back(Json{{"role", "user"}, {"content", text}});
  }
}

namespace {

// thinking.display "omitted" returns thinking blocks with empty text; their signature carries
// the text instead (base64 after a "dsv4:" tag), so a client that sends the block back (Claude
// Code does, in a tool loop) gives V4 its reasoning back and the prompt still matches the cached
// prefix. Signatures from elsewhere are ignored.
constexpr std::string_view kSignatureTag = "dsv4:";
constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string thinking_signature(const std::string& text) {
  std::string out(kSignatureTag);
  for (size_t i = 0; i < text.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(text[i])) << 16;
    if (i + 1 < text.size()) v |= uint32_t(uint8_t(text[i + 1])) << 8;
    if (i + 2 < text.size()) v |= uint8_t(text[i + 2]);
    const size_t chars = std::min<size_t>(3, text.size() - i) + 1;  // n bytes → n + 1 digits, '=' pads to 4
    for (size_t k = 0; k < 4; ++k) out += k < chars ? kBase64[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

// The thinking text of one of our signatures; "" for any other string.
std::string thinking_from_signature(const std::string& sig) {
  if (sig.rfind(kSignatureTag, 0) != 0) return "";
  std::string out;
  uint32_t v = 0;
  int bits = 0;
  for (size_t i = kSignatureTag.size(); i < sig.size() && sig[i] != '='; ++i) {
    const size_t d = kBase64.find(sig[i]);
    if (d == std::string_view::npos) return "";
    v = v << 6 | uint32_t(d);
    if ((bits += 6) >= 8) out += char((v >> (bits -= 8)) & 0xff);
  }
  return out;
}

// Text of a string or an array of text blocks; other block types are refused by name.
std::string block_text(const Json& c, const std::string& path) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad_request(path + " must be a string or an array of text blocks", "messages");
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const Json& b = c[i];
    if (!b.is_object() || !b.contains("type") || b["type"] != "text" || !b.contains("text") || !b["text"].is_string())
      bad_request(cat(path, "[", i, "] must be a text block"), "messages");
    if (!out.empty()) out += "\n\n";
    out += b["text"].get<std::string>();
  }
  return out;
}

// Whether a user message comes after messages[i] (before the end).
bool user_after(const Json& msgs, size_t i) {
  for (size_t k = i + 1; k < msgs.size(); ++k)
    if (msgs[k].is_object() && msgs[k].value("role", "") == "user") return true;
  return false;
}

Json convert_messages(const Json& body) {
  Json out = Json::array();
  if (auto it = body.find("system"); it != body.end() && !it->is_null())
    out.push_back(Json{{"role", "system"}, {"content", block_text(*it, "system")}});
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty())
    bad_request("'messages' must be a non-empty array of message objects", "messages");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    const std::string path = cat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad_request(path + " must be an object with a string 'role'", "messages");
    const std::string role = m["role"];
    if (role != "user" && role != "assistant" && role != "system")
      bad_request(cat(path, ".role: unknown role '", role, "' (use user, assistant or system)"), "messages");
    if (!m.contains("content")) bad_request(path + ".content is required", "messages");
    const Json& c = m["content"];
    if (role == "system") {
      place_system_message(out, block_text(c, path + ".content"), user_after(*it, i));
      continue;
    }
    if (c.is_string()) {
      out.push_back(Json{{"role", role}, {"content", c}});
      continue;
    }
    if (!c.is_array()) bad_request(path + ".content must be a string or an array of content blocks", "messages");
    std::string text, thinking;
    Json calls = Json::array();
    for (size_t k = 0; k < c.size(); ++k) {
      const Json& b = c[k];
      const std::string bp = cat(path, ".content[", k, "]");
      if (!b.is_object() || !b.contains("type") || !b["type"].is_string())
        bad_request(bp + " must be an object with a 'type'", "messages");
      const std::string type = b["type"];
      if (type == "text") {
        if (!b.contains("text") || !b["text"].is_string()) bad_request(bp + ".text must be a string", "messages");
        if (!text.empty()) text += "\n\n";
        text += b["text"].get<std::string>();
      } else if (type == "thinking" && role == "assistant") {
        const std::string t = get_string(b, "thinking").value_or("");
        thinking += t.empty() ? thinking_from_signature(get_string(b, "signature").value_or("")) : t;
      } else if (type == "redacted_thinking" && role == "assistant") {
      } else if (type == "tool_use" && role == "assistant") {
        if (!b.contains("name") || !b["name"].is_string()) bad_request(bp + ".name must be a string", "messages");
        const Json input = b.contains("input") ? b["input"] : Json::object();
        if (!input.is_object()) bad_request(bp + ".input must be an object", "messages");
        calls.push_back(Json{{"id", get_string(b, "id").value_or("")}, {"type", "function"},
                             {"function", {{"name", b["name"]}, {"arguments", dump(input)}}}});
      } else if (type == "tool_result" && role == "user") {
        Json content = b.contains("content") ? b["content"] : Json("");
        std::string result = content.is_null() ? "" : block_text(content, bp + ".content");
        if (get_bool(b, "is_error").value_or(false)) result = "Error: " + result;
        // Tool messages come before the user's text: V4 renders them first in the turn anyway.
        out.push_back(Json{{"role", "tool"}, {"tool_call_id", get_string(b, "tool_use_id").value_or("")}, {"content", result}});
      } else {
        bad_request(cat(bp, ": block type '", type, "' is not supported in a ", role, " message"), "messages");
      }
    }
    if (role == "assistant") {
      Json a = {{"role", "assistant"}, {"content", text}};
      if (!thinking.empty()) a["reasoning_content"] = thinking;
      if (!calls.empty()) a["tool_calls"] = calls;
      out.push_back(std::move(a));
    } else if (!text.empty() || out.empty() || out.back()["role"] != "tool") {
      out.push_back(Json{{"role", "user"}, {"content", text}});
    }
  }
  if (std::all_of(out.begin(), out.end(), [](const Json& m) { return m["role"] == "system"; }))
    bad_request("'messages' must hold a user or assistant message, not only system messages", "messages");
  return out;
}

Json convert_tools(const Json& body) {
  auto it = body.find("tools");
  if (it != body.end() && !it->is_null() && !it->is_array()) bad_request("'tools' must be an array", "tools");
  if (auto tc = body.find("tool_choice"); tc != body.end() && !tc->is_null()) {
    if (!tc->is_object() || !tc->contains("type") || !(*tc)["type"].is_string())
      bad_request("'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}", "tool_choice");
    const std::string t = (*tc)["type"];
    if (t != "auto" && t != "any" && t != "tool" && t != "none")
      bad_request("'tool_choice.type' must be auto, any, tool or none", "tool_choice");
    if (t == "none") return nullptr;
  }
  if (it == body.end() || it->is_null()) return nullptr;
  Json tools = Json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& t = (*it)[i];
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string())
      bad_request(cat("tools[", i, "] must be an object with a string 'name'"), "tools");
    if (t.contains("type") && t["type"] != "custom")
      bad_request(cat("tools[", i, "]: tool type '", t["type"].is_string() ? t["type"].get<std::string>() : "?",
                      "' is not supported (custom tools only)"), "tools");
    Json fn = {{"name", t["name"]}};
    if (auto d = get_string(t, "description")) fn["description"] = *d;
    const bool schema = t.contains("input_schema") && !t["input_schema"].is_null();
    if (schema && !t["input_schema"].is_object()) bad_request(cat("tools[", i, "].input_schema must be a JSON schema object"), "tools");
    fn["parameters"] = schema ? t["input_schema"] : Json{{"type", "object"}};
    tools.push_back(Json{{"type", "function"}, {"function", fn}});
  }
  return tools.empty() ? Json(nullptr) : tools;
}

// `thinking` {type: enabled | adaptive | disabled, budget_tokens, display}: enabled and adaptive
// switch V4's thinking mode on (V4 has no adaptive mode; the budget is not enforced); display
// "omitted" returns thinking blocks without their text (*omit; any other display shows it).
// `output_config.effort` "max" selects V4's maximum reasoning effort; other efforts are V4's
// default (high).
ChatOptions parse_thinking(const Json& body, bool* omit = nullptr) {
  ChatOptions o;
  if (auto it = body.find("thinking"); it != body.end() && !it->is_null()) {
    if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string())
      bad_request("'thinking' must be {\"type\": \"enabled\" | \"adaptive\" | \"disabled\"}", "thinking");
    const std::string t = (*it)["type"];
    if (t != "enabled" && t != "disabled" && t != "adaptive")
      bad_request(cat("'thinking.type' must be enabled, adaptive or disabled, got '", t, "'"), "thinking");
    get_int(*it, "budget_tokens", 0, INT64_MAX);
    const bool omitted = get_string(*it, "display").value_or("") == "omitted";
    o.thinking = t != "disabled";
    if (omit) *omit = o.thinking && omitted;
  }
  if (auto it = body.find("output_config"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_request("'output_config' must be an object", "output_config");
    if (o.thinking) o.reasoning_effort = get_string(*it, "effort").value_or("") == "max" ? "max" : "high";
  }
  return o;
}

std::vector<int32_t> render(const Json& body, const Tokenizer& tok, const ChatOptions& o) {
  return render_chat(convert_messages(body), convert_tools(body), o, tok);
}

// tool_choice any / {"type": "tool", "name"} enforced by constrained decoding.
std::shared_ptr<const constrain::Constraint> messages_constraint(const Json& body, bool thinking, const Tokenizer& tok,
                                                                 const ApiConfig& cfg) {
  ConstraintRequest c;
  c.tools = convert_tools(body);
  c.body_tools = body.contains("tools") ? &body["tools"] : nullptr;
  c.schema_key = "input_schema";
  c.thinking = thinking;
  const Json choice = body.value("tool_choice", Json());
  if (!choice.is_object()) return nullptr;
  const std::string type = choice["type"];
  if (c.tools.is_null()) {
    if (type == "any" || type == "tool") bad_request(cat("'tool_choice' ", type, " needs 'tools'"), "tool_choice");
    return nullptr;
  }
  c.choice.parallel = !get_bool(choice, "disable_parallel_tool_use").value_or(false);
  if (type == "any") {
    c.choice.kind = ToolChoice::Kind::kRequired;
  } else if (type == "tool") {
    const auto name = get_string(choice, "name");
    if (!name) bad_request("'tool_choice' {\"type\": \"tool\"} needs the tool's 'name'", "tool_choice");
    const bool known = std::any_of(c.tools.begin(), c.tools.end(), [&](const Json& t) { return t["function"]["name"] == *name; });
    if (!known) bad_request(cat("'tool_choice' names the tool '", *name, "' that is not in 'tools'"), "tool_choice");
    c.choice = {ToolChoice::Kind::kNamed, *name, c.choice.parallel};
  } else {
    return nullptr;
  }
  return make_constraint(c, tok, cfg.eos_id);
}

// Anthropic's split of the prompt: input_tokens + cache_creation_input_tokens +
// cache_read_input_tokens = all of it. Read = the tokens continued from the prefix cache; the
// rest is input_tokens. Creation stays 0: snapshots are stored automatically at no extra cost
// (no cache_control breakpoints, no write price), so no part of the prompt counts as a write.
Json usage(int64_t prompt_tokens, int64_t cached_tokens, int64_t output_tokens) {
  return Json{{"input_tokens", prompt_tokens - cached_tokens}, {"cache_creation_input_tokens", 0},
              {"cache_read_input_tokens", cached_tokens}, {"output_tokens", output_tokens}};
}
Json usage(const JobOutcome& o) { return usage(o.prompt_tokens, o.cached_tokens, o.completion_tokens); }

std::string stop_reason(const JobOutcome& o, bool tool_use) {
  if (o.finish == Finish::kLength) return "max_tokens";
  if (!o.stop_string.empty()) return "stop_sequence";
  return tool_use ? "tool_use" : "end_turn";
}

Json tool_input(const std::string& args) {
  // The parser builds argument JSON from DSML; a value the model wrote that is not JSON (or
  // nests deeper than a request may) is kept as text.
  Json j = pyjson::too_deep_at(args, kMaxJsonDepth) == std::string_view::npos ? Json::parse(args, nullptr, false) : Json();
  return j.is_object() ? j : Json{{"arguments", args}};
}

}  // namespace

MessagesRequest parse_messages_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg) {
  MessagesRequest r;
  get_string(body, "model");
  auto max_tokens = get_int(body, "max_tokens", 1, INT64_MAX);
  if (!max_tokens) bad_request("'max_tokens' is required", "max_tokens");
  r.gen.max_tokens = *max_tokens;
  r.stream = get_bool(body, "stream").value_or(false);
  parse_sampling(body, &r.gen, 1);
  r.gen.stop_strings = get_string_list(body, "stop_sequences", 16);
  r.gen.stop_tokens = {cfg.eos_id};
  const ChatOptions chat = parse_thinking(body, &r.omit_thinking);
  r.thinking = chat.thinking;
  r.gen.prompt = render(body, tok, chat);
  r.gen.constraint = messages_constraint(body, chat.thinking, tok, cfg);
  apply_test_hook(body, tok, cfg, &r.gen);
  fit_context(cfg, &r.gen);
  return r;
}

int64_t count_message_tokens(const Json& body, const Tokenizer& tok, const ApiConfig&) {
  return int64_t(render(body, tok, parse_thinking(body)).size());
}

Json messages_response(const std::string& id, const ApiConfig& cfg, const MessagesRequest& req,
                       const std::vector<JobEvent>& events, const JobOutcome& outcome) {
  CompletionSplitter sp(req.thinking);
  for (const JobEvent& e : events) sp.feed(e.text);
  sp.finish();
  const ParsedMessage& m = sp.message();
  Json content = Json::array();
  if (!m.reasoning_content.empty()) {
    if (req.omit_thinking)
      content.push_back(Json{{"type", "thinking"}, {"thinking", ""}, {"signature", thinking_signature(m.reasoning_content)}});
    else
      content.push_back(Json{{"type", "thinking"}, {"thinking", m.reasoning_content}, {"signature", ""}});
  }
  if (!m.content.empty()) content.push_back(Json{{"type", "text"}, {"text", m.content}});
  for (const ToolCall& c : m.tool_calls)
    content.push_back(Json{{"type", "tool_use"}, {"id", random_id("toolu_")}, {"name", c.name}, {"input", tool_input(c.arguments)}});
  return Json{{"id", id}, {"type", "message"}, {"role", "assistant"}, {"model", cfg.model_name}, {"content", content},
              {"stop_reason", stop_reason(outcome, !m.tool_calls.empty())},
              {"stop_sequence", outcome.stop_string.empty() ? Json() : Json(outcome.stop_string)},
              {"usage", usage(outcome)}};
}

std::string sse_event(const Json& j) { return "event: " + j["type"].get<std::string>() + "\ndata: " + dump(j) + "\n\n"; }

MessagesStream::MessagesStream(std::string id, const ApiConfig& cfg, const MessagesRequest& req)
    : id_(std::move(id)), cfg_(cfg), splitter_(req.thinking), omit_thinking_(req.omit_thinking) {}

std::string MessagesStream::start(int64_t prompt_tokens, int64_t cached_tokens) {
  Json msg = {{"id", id_}, {"type", "message"}, {"role", "assistant"}, {"model", cfg_.model_name},
              {"content", Json::array()}, {"stop_reason", nullptr}, {"stop_sequence", nullptr},
              {"usage", usage(prompt_tokens, cached_tokens, 0)}};
  return sse_event(Json{{"type", "message_start"}, {"message", msg}});
}

std::string MessagesStream::open_block(const std::string& type, Json block) {
  std::string out = close_block();
  ++index_;
  open_type_ = type;
  return out + sse_event(Json{{"type", "content_block_start"}, {"index", index_}, {"content_block", std::move(block)}});
}

std::string MessagesStream::close_block() {
  if (open_type_.empty()) return "";
  std::string out;
  if (open_type_ == "thinking") {
    const std::string sig = omit_thinking_ ? thinking_signature(thinking_) : "";
    out = sse_event(Json{{"type", "content_block_delta"}, {"index", index_}, {"delta", {{"type", "signature_delta"}, {"signature", sig}}}});
    thinking_.clear();
  }
  open_type_.clear();
  return out + sse_event(Json{{"type", "content_block_stop"}, {"index", index_}});
}

std::string MessagesStream::to_sse(const std::vector<ParseEvent>& ev) {
  std::string out;
  auto delta = [&](Json d) { out += sse_event(Json{{"type", "content_block_delta"}, {"index", index_}, {"delta", std::move(d)}}); };
  for (const ParseEvent& e : ev) {
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning:
        if (open_type_ != "thinking") out += open_block("thinking", Json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
        if (omit_thinking_) thinking_ += e.text;  // no deltas: the text leaves in the signature
        else delta(Json{{"type", "thinking_delta"}, {"thinking", e.text}});
        break;
      case ParseEvent::Kind::Content:
        if (open_type_ != "text") out += open_block("text", Json{{"type", "text"}, {"text", ""}});
        delta(Json{{"type", "text_delta"}, {"text", e.text}});
        break;
      case ParseEvent::Kind::ToolCallBegin:
        out += open_block("tool_use", Json{{"type", "tool_use"}, {"id", random_id("toolu_")}, {"name", e.text}, {"input", Json::object()}});
        break;
      case ParseEvent::Kind::ToolCallArgs: delta(Json{{"type", "input_json_delta"}, {"partial_json", e.text}}); break;
      case ParseEvent::Kind::ToolCallEnd: out += close_block(); break;
    }
  }
  return out;
}

std::string MessagesStream::on_event(const JobEvent& e) { return to_sse(splitter_.feed(e.text)); }

std::string MessagesStream::finish(const JobOutcome& o) {
  std::string out = to_sse(splitter_.finish()) + close_block();
  Json d = {{"stop_reason", stop_reason(o, !splitter_.message().tool_calls.empty())},
            {"stop_sequence", o.stop_string.empty() ? Json() : Json(o.stop_string)}};
  out += sse_event(Json{{"type", "message_delta"}, {"delta", d}, {"usage", usage(o)}});
  return out + sse_event(Json{{"type", "message_stop"}});
}

Json anthropic_error(const std::string& type, const std::string& message) {
  return Json{{"type", "error"}, {"error", {{"type", type}, {"message", message}}}};
}

std::string anthropic_error_type(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

}  // namespace dsv4::server
