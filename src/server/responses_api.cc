// /v1/responses requests: input items → chat messages → V4 prompt; the response store.
#include "server/responses_api.h"

#include "server/constraint_request.h"

#include "server/anthropic_api.h"
#include "server/openai_api.h"

namespace dsv4::server {

void ResponseStore::put(const std::string& id, Json conversation) {
  const size_t bytes = dump(conversation).size();
  std::lock_guard<std::mutex> lock(mu_);
  entries_[id] = {std::move(conversation), bytes};
  order_.push_back(id);
  bytes_ += bytes;
  while (!order_.empty() && (order_.size() > max_entries_ || bytes_ > max_bytes_)) {
    auto it = entries_.find(order_.front());
    bytes_ -= it->second.second;
    entries_.erase(it);
    order_.pop_front();
  }
}

std::optional<Json> ResponseStore::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second.first;
}

size_t ResponseStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

namespace {

// The text of a message's content: a string or an array of text parts.
std::string content_text(const Json& c, const std::string& path) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad_request(path + " must be a string or an array of content parts", "input");
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const Json& p = c[i];
    const std::string type = p.is_object() && p.contains("type") && p["type"].is_string() ? p["type"].get<std::string>() : "";
    const char* key = type == "refusal" ? "refusal" : "text";
    if (type != "input_text" && type != "output_text" && type != "text" && type != "refusal")
      bad_request(cat(path, "[", i, "]: content type '", type, "' is not supported (text only)"), "input");
    if (!p.contains(key) || !p[key].is_string()) bad_request(cat(path, "[", i, "].", key, " must be a string"), "input");
    if (!out.empty()) out += "\n\n";
    out += p[key].get<std::string>();
  }
  return out;
}

std::string required_string(const Json& item, const char* key, const std::string& path) {
  if (!item.contains(key) || !item[key].is_string()) bad_request(cat(path, ".", key, " must be a string"), "input");
  return item[key];
}

// Input items appended to the chat messages `out` (which may already hold a stored conversation).
class InputConverter {
 public:
  explicit InputConverter(Json& out) : out_(out) {}

  void add(const Json& items) {
    if (items.is_string()) return add_message("user", items.get<std::string>());
    if (!items.is_array()) bad_request("'input' must be a string or an array of input items", "input");
    for (size_t i = 0; i < items.size(); ++i) add_item(items, i);
  }

 private:
  void add_item(const Json& items, size_t i) {
    const Json& item = items[i];
    const std::string path = cat("input[", i, "]");
    if (!item.is_object()) bad_request(path + " must be an object", "input");
    const std::string type = item.contains("type") && item["type"].is_string() ? item["type"].get<std::string>()
                             : item.contains("role")                             ? "message"
                                                                                 : "";
    if (type == "message") {
      const std::string role = required_string(item, "role", path);
      if (!item.contains("content")) bad_request(path + ".content is required", "input");
      const std::string text = content_text(item["content"], path + ".content");
      if (role == "system" || role == "developer") {
        place_system_message(out_, text, user_after(items, i));
      } else if (role == "user" || role == "assistant") {
        add_message(role, text);
      } else {
        bad_request(cat(path, ".role: unknown role '", role, "' (use user, assistant, system or developer)"), "input");
      }
    } else if (type == "function_call") {
      add_call(item, path);
    } else if (type == "function_call_output") {
      const std::string call_id = required_string(item, "call_id", path);
      if (!item.contains("output")) bad_request(path + ".output is required", "input");
      out_.push_back(Json{{"role", "tool"}, {"tool_call_id", call_id}, {"content", content_text(item["output"], path + ".output")}});
    } else if (type == "reasoning") {
      reasoning_ += reasoning_text(item);
    } else {
      bad_request(cat(path, ": input item type '", type,
                      "' is not supported (message, function_call, function_call_output, reasoning)"), "input");
    }
  }

  static bool user_after(const Json& items, size_t i) {
    for (size_t k = i + 1; k < items.size(); ++k) {
      const Json& it = items[k];
      if (it.is_object() && it.value("role", "") == "user") return true;
    }
    return false;
  }

  static std::string reasoning_text(const Json& item) {
    // V4's thinking comes back as content; summaries (from other servers) are used otherwise.
    for (const char* key : {"content", "summary"}) {
      if (!item.contains(key) || !item[key].is_array() || item[key].empty()) continue;
      std::string text;
      for (const Json& p : item[key])
        if (p.is_object() && p.contains("text") && p["text"].is_string()) text += p["text"].get<std::string>();
      return text;
    }
    return "";
  }

  void add_message(const std::string& role, const std::string& text) {
    Json m = {{"role", role}, {"content", text}};
    if (role == "assistant") take_reasoning(m);
    out_.push_back(std::move(m));
  }

  // A function_call joins the assistant turn just before it (V4 writes calls after the text).
  void add_call(const Json& item, const std::string& path) {
    Json args = item.contains("arguments") ? item["arguments"] : Json("{}");
    if (!args.is_string()) bad_request(path + ".arguments must be a JSON string", "input");
    Json call = {{"id", required_string(item, "call_id", path)}, {"type", "function"},
                 {"function", {{"name", required_string(item, "name", path)}, {"arguments", args}}}};
    if (out_.empty() || out_.back()["role"] != "assistant") {
      out_.push_back(Json{{"role", "assistant"}, {"content", ""}});
      take_reasoning(out_.back());
    }
    Json& a = out_.back();
    if (!a.contains("tool_calls")) a["tool_calls"] = Json::array();
    a["tool_calls"].push_back(std::move(call));
  }

  void take_reasoning(Json& m) {
    if (!reasoning_.empty()) m["reasoning_content"] = reasoning_;
    reasoning_.clear();
  }

  Json& out_;
  std::string reasoning_;  // from reasoning items, for the next assistant turn
};

// Tools that run on OpenAI's side (Codex always offers web_search): nothing here can run them,
// so they are left out of the prompt.
bool hosted_tool(const std::string& type) {
  static const char* kHosted[] = {"web_search", "web_search_preview", "file_search", "code_interpreter",
                                  "image_generation", "computer_use_preview", "mcp"};
  for (const char* h : kHosted)
    if (type == h || type.rfind(std::string(h) + "_2", 0) == 0) return true;  // dated variants
  return false;
}

// Function tools (also inside Codex's `namespace` groups, flattened) as chat tool schemas.
void add_tools(const Json& list, const std::string& path, Json& tools) {
  if (!list.is_array()) bad_request(path + " must be an array of function tools", "tools");
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& t = list[i];
    const std::string p = cat(path, "[", i, "]");
    const std::string type = t.is_object() ? t.value("type", "") : "";
    if (type == "namespace") {
      add_tools(t.contains("tools") ? t["tools"] : Json(), p + ".tools", tools);
      continue;
    }
    if (hosted_tool(type)) continue;
    if (type != "function")
      bad_request(cat(p, ": tool type '", type, "' is not supported (function tools; hosted tools are ignored)"), "tools");
    if (!t.contains("name") || !t["name"].is_string()) bad_request(p + ".name must be a string", "tools");
    Json fn = {{"name", t["name"]}};
    if (t.contains("description") && t["description"].is_string()) fn["description"] = t["description"];
    fn["parameters"] = t.contains("parameters") && t["parameters"].is_object() ? t["parameters"] : Json{{"type", "object"}};
    tools.push_back(Json{{"type", "function"}, {"function", fn}});
  }
}

Json convert_tools(const Json& body) {
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return nullptr;
  Json tools = Json::array();
  add_tools(*it, "tools", tools);
  return tools.empty() ? Json(nullptr) : tools;
}

// tool_choice: none | auto | required | {"type": "function", "name": ...}. Returns false for none.
bool tools_allowed(const Json& body) {
  auto it = body.find("tool_choice");
  if (it == body.end() || it->is_null()) return true;
  if (it->is_string()) {
    const std::string c = *it;
    if (c != "none" && c != "auto" && c != "required") bad_request("'tool_choice' must be none, auto, required or a function", "tool_choice");
    return c != "none";
  }
  if (!it->is_object() || it->value("type", "") != "function" || !it->contains("name") || !(*it)["name"].is_string())
    bad_request("'tool_choice' must be none, auto, required or {\"type\": \"function\", \"name\": ...}", "tool_choice");
  return true;
}

// reasoning.effort → V4 thinking mode and effort.
ChatOptions parse_reasoning(const Json& body) {
  ChatOptions o;
  auto it = body.find("reasoning");
  if (it == body.end() || it->is_null()) return o;
  if (!it->is_object()) bad_request("'reasoning' must be an object", "reasoning");
  const std::string effort = get_string(*it, "effort").value_or("medium");
  get_string(*it, "summary");
  if (effort == "none" || effort == "minimal") return o;
  if (effort != "low" && effort != "medium" && effort != "high" && effort != "xhigh")
    bad_request(cat("'reasoning.effort' must be none, minimal, low, medium, high or xhigh, got '", effort, "'"), "reasoning");
  o.thinking = true;
  o.reasoning_effort = effort == "xhigh" ? "max" : "high";
  return o;
}

// text.format → V4's response_format on the system message.
Json response_format(const Json& body) {
  auto it = body.find("text");
  if (it == body.end() || it->is_null()) return nullptr;
  if (!it->is_object()) bad_request("'text' must be an object", "text");
  auto f = it->find("format");
  if (f == it->end() || f->is_null()) return nullptr;
  const std::string type = f->is_object() ? f->value("type", "") : "";
  if (type == "text") return nullptr;
  if (type == "json_object") return Json{{"type", "json_object"}};
  if (type != "json_schema") bad_request("'text.format.type' must be text, json_object or json_schema", "text");
  Json schema = {{"name", f->value("name", "response")}, {"schema", f->contains("schema") ? (*f)["schema"] : Json::object()}};
  if (f->contains("strict")) schema["strict"] = (*f)["strict"];
  return Json{{"type", "json_schema"}, {"json_schema", schema}};
}

// tool_choice required / {"type": "function", "name"} and text.format json_schema / json_object
// enforced by constrained decoding.
std::shared_ptr<const constrain::Constraint> responses_constraint(const Json& body, const Json& tools, bool thinking,
                                                                  const Tokenizer& tok, const ApiConfig& cfg) {
  ConstraintRequest c;
  c.tools = tools;
  c.body_tools = body.contains("tools") ? &body["tools"] : nullptr;
  c.schema_key = "parameters";
  c.thinking = thinking;
  c.choice.parallel = get_bool(body, "parallel_tool_calls").value_or(true);
  const Json choice = body.value("tool_choice", Json());
  if (choice == "required") {
    if (tools.is_null()) bad_request("'tool_choice' is required but there are no function 'tools'", "tool_choice");
    c.choice.kind = ToolChoice::Kind::kRequired;
  } else if (choice.is_object()) {
    const std::string name = choice["name"];
    const bool known = tools.is_array() &&
                       std::any_of(tools.begin(), tools.end(), [&](const Json& t) { return t["function"]["name"] == name; });
    if (!known) bad_request(cat("'tool_choice' names the function '", name, "' that is not in 'tools'"), "tool_choice");
    c.choice = {ToolChoice::Kind::kNamed, name, c.choice.parallel};
  }
  c.response_format = response_format(body);
  c.format_param = "text";
  c.format_path = "text.format.schema";
  return make_constraint(c, tok, cfg.eos_id);
}

// The chat messages to render: the instructions (this request's only), then the conversation,
// with a response_format from text.format on the leading system message.
Json chat_messages(const Json& body, const Json& history) {
  Json messages = Json::array();
  if (auto ins = get_string(body, "instructions"); ins && !ins->empty()) messages.push_back(Json{{"role", "system"}, {"content", *ins}});
  for (const Json& m : history) {
    if (m["role"] == "system" && !messages.empty() && messages.back()["role"] == "system")
      messages.back()["content"] = messages.back()["content"].get<std::string>() + "\n\n" + m["content"].get<std::string>();
    else
      messages.push_back(m);
  }
  if (messages.empty() || messages.back()["role"] == "system")
    bad_request("'input' holds no user or assistant message", "input");
  if (Json rf = response_format(body); !rf.is_null()) {
    if (messages[0]["role"] != "system") messages.insert(messages.begin(), Json{{"role", "system"}, {"content", ""}});
    messages[0]["response_format"] = rf;
  }
  return messages;
}

// Request settings the response object repeats (their types were checked while parsing).
Json echo_fields(const Json& body, const ResponsesRequest& r, const ChatOptions& chat) {
  auto given = [&](const char* key, Json fallback) {
    auto it = body.find(key);
    return it == body.end() || it->is_null() ? fallback : *it;
  };
  return Json{{"instructions", given("instructions", nullptr)},
              {"max_output_tokens", given("max_output_tokens", nullptr)},
              {"parallel_tool_calls", given("parallel_tool_calls", true)},
              {"previous_response_id", given("previous_response_id", nullptr)},
              {"reasoning", {{"effort", chat.thinking ? Json(chat.reasoning_effort) : Json()}, {"summary", nullptr}}},
              {"store", r.store},
              {"temperature", r.gen.sampling.temperature},
              {"text", given("text", Json{{"format", {{"type", "text"}}}})},
              {"tool_choice", given("tool_choice", "auto")},
              {"tools", given("tools", Json::array())},
              {"top_p", r.gen.sampling.top_p},
              {"truncation", "disabled"},
              {"metadata", given("metadata", Json::object())}};
}

}  // namespace

ResponsesRequest parse_responses_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg,
                                         const ResponseStore& store) {
  ResponsesRequest r;
  get_string(body, "model");
  r.gen.cache_key = parse_cache_key(body);
  get_bool(body, "parallel_tool_calls");
  if (get_bool(body, "background").value_or(false)) bad_request("'background' responses are not supported", "background");
  r.stream = get_bool(body, "stream").value_or(false);
  r.store = get_bool(body, "store").value_or(true);
  parse_sampling(body, &r.gen, 2);
  r.gen.max_tokens = get_int(body, "max_output_tokens", 1, INT64_MAX).value_or(cfg.default_max_tokens);
  r.gen.stop_tokens = {cfg.eos_id};
  const ChatOptions chat = parse_reasoning(body);
  r.thinking = chat.thinking;

  r.history = Json::array();
  const auto prev = get_string(body, "previous_response_id");
  if (prev) {
    auto stored = store.get(*prev);
    if (!stored) bad_request(cat("previous response '", *prev, "' is not stored (store was false, or it was evicted)"),
                             "previous_response_id");
    r.history = std::move(*stored);
  }
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) bad_request("'input' is required", "input");
  InputConverter(r.history).add(*input);

  const Json messages = chat_messages(body, r.history);
  const Json tools = tools_allowed(body) ? convert_tools(body) : Json(nullptr);
  r.gen.prompt = render_chat(messages, tools, chat, tok);
  r.gen.constraint = responses_constraint(body, tools, chat.thinking, tok, cfg);
  apply_test_hook(body, tok, cfg, &r.gen);
  fit_context(cfg, &r.gen);

  r.echo = echo_fields(body, r, chat);
  return r;
}

}  // namespace dsv4::server
