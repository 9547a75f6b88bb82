#include "server/openai_api.h"

#include "server/constraint_request.h"

#include <algorithm>

#include "engine/sampler.h"

namespace dsv4::server {

namespace {

// content → what encode_chat accepts: a string, or text parts. Other parts are refused by name.
Json normalize_content(const Json& c, const std::string& path, bool allow_null) {
  if (c.is_null()) {
    if (!allow_null) bad_request(cat(path, " must not be null"), "messages");
    return "";
  }
  if (c.is_string()) return c;
  if (!c.is_array()) bad_request(cat(path, " must be a string or an array of content parts"), "messages");
  Json parts = Json::array();
  for (size_t i = 0; i < c.size(); ++i) {
    const Json& p = c[i];
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
      bad_request(cat(path, "[", i, "] must be an object with a 'type'"), "messages");
    const std::string type = p["type"];
    if (type != "text") bad_request(cat(path, "[", i, "]: content type '", type, "' is not supported (text only)"), "messages");
    if (!p.contains("text") || !p["text"].is_string()) bad_request(cat(path, "[", i, "].text must be a string"), "messages");
    parts.push_back(Json{{"type", "text"}, {"text", p["text"]}});
  }
  return parts;
}

Json normalize_messages(const Json& body) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty())
    bad_request("'messages' must be a non-empty array of message objects", "messages");
  Json out = Json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    const std::string path = cat("messages[", i, "]");
    if (!m.is_object()) bad_request(cat(path, " must be an object"), "messages");
    if (!m.contains("role") || !m["role"].is_string()) bad_request(cat(path, ".role must be a string"), "messages");
    const std::string role = m["role"];
    static const char* kRoles[] = {"system", "user", "assistant", "tool", "developer"};
    if (std::none_of(std::begin(kRoles), std::end(kRoles), [&](const char* r) { return role == r; }))
      bad_request(cat(path, ".role: unknown role '", role, "' (use system, user, assistant, tool or developer)"),
                  "messages");
    Json n = {{"role", role}};
    const bool has_calls = m.contains("tool_calls") && !m["tool_calls"].is_null();
    n["content"] = normalize_content(m.contains("content") ? m["content"] : Json(), path + ".content",
                                     role == "assistant");
    if (role == "assistant") {
      if (m.contains("reasoning_content") && !m["reasoning_content"].is_null()) {
        if (!m["reasoning_content"].is_string()) bad_request(cat(path, ".reasoning_content must be a string"), "messages");
        n["reasoning_content"] = m["reasoning_content"];
      }
      if (has_calls) {
        const Json& calls = m["tool_calls"];
        if (!calls.is_array()) bad_request(cat(path, ".tool_calls must be an array"), "messages");
        Json cs = Json::array();
        for (size_t k = 0; k < calls.size(); ++k) {
          const std::string cp = cat(path, ".tool_calls[", k, "]");
          const Json& c = calls[k];
          if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
            bad_request(cp + " must be an object with a 'function'", "messages");
          const Json& f = c["function"];
          if (!f.contains("name") || !f["name"].is_string()) bad_request(cp + ".function.name must be a string", "messages");
          Json args = f.contains("arguments") ? f["arguments"] : Json("{}");
          if (args.is_object()) args = dump(args);  // lenient: some clients send the object itself
          if (!args.is_string()) bad_request(cp + ".function.arguments must be a JSON string", "messages");
          Json call = {{"type", "function"}, {"function", {{"name", f["name"]}, {"arguments", args}}}};
          if (auto id = get_string(c, "id")) call["id"] = *id;
          cs.push_back(call);
        }
        n["tool_calls"] = cs;
      }
    } else if (role == "tool") {
      if (m.contains("tool_call_id")) {
        if (!m["tool_call_id"].is_string()) bad_request(cat(path, ".tool_call_id must be a string"), "messages");
        n["tool_call_id"] = m["tool_call_id"];
      }
    }
    out.push_back(std::move(n));
  }
  return out;
}

Json normalize_tools(const Json& body, const Json& tool_choice) {
  auto it = body.find("tools");
  const bool none = it == body.end() || it->is_null();
  if (!none && !it->is_array()) bad_request("'tools' must be an array of function tools", "tools");
  std::vector<std::string> names;
  for (size_t i = 0; !none && i < it->size(); ++i) {
    const Json& t = (*it)[i];
    if (!t.is_object() || (t.contains("type") && t["type"] != "function") || !t.contains("function") ||
        !t["function"].is_object() || !t["function"].contains("name") || !t["function"]["name"].is_string())
      bad_request(cat("tools[", i, "] must be {\"type\": \"function\", \"function\": {\"name\": ...}}"), "tools");
    const Json& f = t["function"];
    if (f.contains("description") && !f["description"].is_null() && !f["description"].is_string())
      bad_request(cat("tools[", i, "].function.description must be a string"), "tools");
    if (f.contains("parameters") && !f["parameters"].is_null() && !f["parameters"].is_object())
      bad_request(cat("tools[", i, "].function.parameters must be a JSON schema object"), "tools");
    names.push_back(f["name"]);
  }
  if (tool_choice.is_object()) {
    const Json* f = tool_choice.contains("function") ? &tool_choice["function"] : nullptr;
    if (!f || !f->is_object() || !f->contains("name") || !(*f)["name"].is_string())
      bad_request("'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                  "tool_choice");
    if (std::find(names.begin(), names.end(), (*f)["name"].get<std::string>()) == names.end())
      bad_request(cat("'tool_choice' names the function '", (*f)["name"].get<std::string>(), "' that is not in 'tools'"),
                  "tool_choice");
  } else if (!tool_choice.is_null()) {
    if (!tool_choice.is_string() ||
        (tool_choice != "none" && tool_choice != "auto" && tool_choice != "required"))
      bad_request("'tool_choice' must be none, auto, required or a function", "tool_choice");
    if (tool_choice == "required" && names.empty()) bad_request("'tool_choice' is required but there are no 'tools'", "tool_choice");
    if (tool_choice == "none") return nullptr;
  }
  return none || it->empty() ? Json(nullptr) : *it;
}

// Thinking switches of DeepSeek's API and of vLLM/SGLang; reasoning_effort.
void parse_thinking(const Json& body, ChatRequest* r) {
  std::optional<bool> thinking;
  if (auto it = body.find("thinking"); it != body.end() && !it->is_null()) {
    if (it->is_boolean()) {
      thinking = it->get<bool>();
    } else if (it->is_object() && it->contains("type") && (*it)["type"].is_string()) {
      const std::string t = (*it)["type"];
      if (t != "enabled" && t != "disabled") bad_request("'thinking.type' must be enabled or disabled", "thinking");
      thinking = t == "enabled";
    } else {
      bad_request("'thinking' must be {\"type\": \"enabled\" | \"disabled\"}", "thinking");
    }
  }
  if (auto it = body.find("chat_template_kwargs"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    for (const char* k : {"thinking", "enable_thinking"})
      if (auto b = get_bool(*it, k)) thinking = *b;
  }
  std::string effort = get_string(body, "reasoning_effort").value_or("");
  if (effort == "low" || effort == "medium") effort = "high";
  if (effort == "none") {
    if (!thinking) thinking = false;
    effort.clear();
  } else if (!effort.empty() && effort != "high" && effort != "max") {
    bad_request(cat("'reasoning_effort' must be high or max (low/medium count as high), got '", effort, "'"),
                "reasoning_effort");
  }
  if (!effort.empty() && !thinking) thinking = true;
  r->thinking = thinking.value_or(false);
  r->chat.thinking = r->thinking;
  r->chat.reasoning_effort = r->thinking ? effort : "";
}

Json token_logprob(const Tokenizer& tok, int32_t id, float lp) {
  std::string s(tok.id_bytes(id));
  Json bytes = Json::array();
  for (unsigned char c : s) bytes.push_back(int(c));
  return Json{{"token", s}, {"logprob", lp}, {"bytes", bytes}};
}

Json logprobs_content(const std::vector<TokenInfo>& tokens, const Tokenizer& tok) {
  Json content = Json::array();
  for (const TokenInfo& t : tokens) {
    Json e = token_logprob(tok, t.id, t.logprob);
    Json top = Json::array();
    for (auto [id, lp] : t.top) top.push_back(token_logprob(tok, id, lp));
    e["top_logprobs"] = top;
    content.push_back(std::move(e));
  }
  return Json{{"content", content}};
}

// tool_choice required / a named function and response_format json_schema / json_object are
// enforced by constrained decoding (constraint_request.h).
std::shared_ptr<const constrain::Constraint> chat_constraint(const Json& body, const ChatRequest& r, const Tokenizer& tok,
                                                             const ApiConfig& cfg) {
  ConstraintRequest c;
  c.tools = r.tools;
  c.body_tools = body.contains("tools") ? &body["tools"] : nullptr;
  c.schema_key = "function.parameters";
  if (!r.tools.is_null()) {
    const Json choice = body.value("tool_choice", Json());
    if (choice == "required") c.choice.kind = ToolChoice::Kind::kRequired;
    if (choice.is_object()) c.choice = {ToolChoice::Kind::kNamed, choice["function"]["name"].get<std::string>()};
  }
  c.choice.parallel = get_bool(body, "parallel_tool_calls").value_or(true);
  if (auto it = body.find("response_format"); it != body.end() && it->is_object()) c.response_format = *it;
  c.format_param = "response_format";
  c.format_path = "response_format.json_schema.schema";
  c.thinking = r.thinking;
  return make_constraint(c, tok, cfg.eos_id);
}

}  // namespace

std::vector<int32_t> render_chat(const Json& messages, const Json& tools, const ChatOptions& options,
                                 const Tokenizer& tok) {
  try {
    return encode_chat_prompt(tok, messages, tools, options).ids;
  } catch (const Error& e) {
    bad_request(cat("cannot render the conversation: ", e.what()), "messages");
  }
}

std::string parse_cache_key(const Json& body) {
  std::string key = get_string(body, "prompt_cache_key").value_or("");
  if (key.size() > 1024) bad_request("'prompt_cache_key' is longer than 1024 bytes", "prompt_cache_key");
  return key;
}

void parse_sampling(const Json& body, GenParams* gen, double max_temperature) {
  SamplingParams& s = gen->sampling;
  s.temperature = float(get_number(body, "temperature", 0, max_temperature).value_or(0));
  s.top_p = float(get_number(body, "top_p", 0, 1).value_or(1));
  if (s.top_p <= 0) bad_request("'top_p' must be greater than 0", "top_p");
  s.top_k = int(get_int(body, "top_k", -1, 1 << 20).value_or(0));
  if (s.top_k < 0) s.top_k = 0;  // vLLM: -1 = off
  s.min_p = float(get_number(body, "min_p", 0, 1).value_or(0));
  s.presence_penalty = float(get_number(body, "presence_penalty", -2, 2).value_or(0));
  s.frequency_penalty = float(get_number(body, "frequency_penalty", -2, 2).value_or(0));
  s.repetition_penalty = float(get_number(body, "repetition_penalty", 0.01, 10).value_or(1));
  if (auto seed = get_int(body, "seed", INT64_MIN, INT64_MAX)) s.seed = uint64_t(*seed);
  try {
    Sampler check(s);
  } catch (const Error& e) {
    bad_request(e.what());
  }
}

ChatRequest parse_chat_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg) {
  ChatRequest r;
  get_string(body, "model");
  if (auto n = get_int(body, "n", 1, 1000); n && *n != 1) bad_request("only n = 1 is supported", "n");
  r.stream = get_bool(body, "stream").value_or(false);
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_request("'stream_options' must be an object", "stream_options");
    r.include_usage = get_bool(*it, "include_usage").value_or(true);
  }
  parse_sampling(body, &r.gen, 2);
  r.gen.cache_key = parse_cache_key(body);
  auto max_tokens = get_int(body, "max_completion_tokens", 1, INT64_MAX);
  if (!max_tokens) max_tokens = get_int(body, "max_tokens", 1, INT64_MAX);
  r.gen.max_tokens = max_tokens.value_or(cfg.default_max_tokens);
  r.gen.stop_strings = get_string_list(body, "stop", 16);
  r.gen.stop_tokens = {cfg.eos_id};
  r.gen.logprobs = get_bool(body, "logprobs").value_or(false);
  r.top_logprobs = int(get_int(body, "top_logprobs", 0, 20).value_or(0));
  if (r.top_logprobs > 0 && !r.gen.logprobs) bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  r.gen.sampling.top_logprobs = r.top_logprobs;
  parse_thinking(body, &r);

  r.messages = normalize_messages(body);
  r.tools = normalize_tools(body, body.contains("tool_choice") ? body["tool_choice"] : Json());
  if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string())
      bad_request("'response_format' must be an object with a 'type'", "response_format");
    const std::string t = (*it)["type"];
    if (t != "text" && t != "json_object" && t != "json_schema")
      bad_request("'response_format.type' must be text, json_object or json_schema", "response_format");
    if (t != "text") {
      // V4 renders response_format from the system message; add one when there is none.
      if (r.messages[0]["role"] != "system") r.messages.insert(r.messages.begin(), Json{{"role", "system"}, {"content", ""}});
      r.messages[0]["response_format"] = *it;
    }
  }
  r.gen.prompt = render_chat(r.messages, r.tools, r.chat, tok);
  r.gen.constraint = chat_constraint(body, r, tok, cfg);
  apply_test_hook(body, tok, cfg, &r.gen);
  fit_context(cfg, &r.gen);
  return r;
}

CompletionRequest parse_completion_request(const Json& body, const Tokenizer& tok, const ApiConfig& cfg) {
  CompletionRequest r;
  get_string(body, "model");
  for (const char* k : {"n", "best_of"})
    if (auto n = get_int(body, k, 1, 1000); n && *n != 1) bad_request(cat("only ", k, " = 1 is supported"), k);
  if (get_bool(body, "echo").value_or(false)) bad_request("'echo' is not supported", "echo");
  if (get_string(body, "suffix")) bad_request("'suffix' is not supported", "suffix");
  r.stream = get_bool(body, "stream").value_or(false);
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_request("'stream_options' must be an object", "stream_options");
    r.include_usage = get_bool(*it, "include_usage").value_or(true);
  }
  parse_sampling(body, &r.gen, 2);
  r.gen.max_tokens = get_int(body, "max_tokens", 1, INT64_MAX).value_or(16);  // OpenAI's default
  r.gen.stop_strings = get_string_list(body, "stop", 16);
  r.gen.stop_tokens = {cfg.eos_id};
  r.logprobs = int(get_int(body, "logprobs", 0, 20).value_or(-1));
  r.gen.logprobs = r.logprobs >= 0;
  r.gen.sampling.top_logprobs = std::max(0, r.logprobs);

  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) bad_request("'prompt' is required", "prompt");
  const Json* p = &*it;
  // A batch of one is accepted in both forms: ["text"] and [[ids]].
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    r.gen.prompt = tok.encode(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && std::all_of(p->begin(), p->end(), [](const Json& x) { return x.is_number_integer(); })) {
    for (const Json& x : *p) {
      const int64_t id = x.get<int64_t>();
      if (id < 0 || id >= tok.vocab_size())
        bad_request(cat("'prompt' token id ", id, " is outside the vocabulary [0, ", tok.vocab_size(), ")"), "prompt");
      r.gen.prompt.push_back(int32_t(id));
    }
  } else {
    bad_request("'prompt' must be a string, a non-empty array of token ids, or a batch of one of these", "prompt");
  }
  apply_test_hook(body, tok, cfg, &r.gen);
  fit_context(cfg, &r.gen);
  return r;
}

Json usage_json(const JobOutcome& o) {
  return Json{{"prompt_tokens", o.prompt_tokens},
              {"completion_tokens", o.completion_tokens},
              {"total_tokens", o.prompt_tokens + o.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", o.cached_tokens}}}};
}

Json openai_error(const std::string& type, const std::string& message, const std::string& param) {
  return Json{{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? Json() : Json(param)}, {"code", nullptr}}}};
}

std::string finish_reason_openai(const JobOutcome& o, bool has_tool_calls) {
  if (o.finish == Finish::kLength) return "length";
  return has_tool_calls && o.stop_string.empty() ? "tool_calls" : "stop";
}

std::string sse_data(const Json& j) { return "data: " + dump(j) + "\n\n"; }

namespace {
Json tool_calls_json(const ParsedMessage& m) {
  Json calls = Json::array();
  for (const ToolCall& c : m.tool_calls)
    calls.push_back(Json{{"id", random_id("call_")}, {"type", "function"},
                         {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  return calls;
}
}  // namespace

Json chat_response(const std::string& id, const ApiConfig& cfg, const ChatRequest& req,
                   const std::vector<JobEvent>& events, const JobOutcome& outcome, const Tokenizer& tok) {
  CompletionSplitter sp(req.thinking);
  std::vector<TokenInfo> infos;
  for (const JobEvent& e : events) {
    sp.feed(e.text);
    infos.insert(infos.end(), e.tokens.begin(), e.tokens.end());
  }
  sp.finish();
  const ParsedMessage& m = sp.message();
  Json msg = {{"role", "assistant"}, {"content", m.content.empty() && !m.tool_calls.empty() ? Json() : Json(m.content)}};
  if (req.thinking || !m.reasoning_content.empty()) msg["reasoning_content"] = m.reasoning_content;
  if (!m.tool_calls.empty()) msg["tool_calls"] = tool_calls_json(m);
  Json choice = {{"index", 0}, {"message", msg},
                 {"logprobs", req.gen.logprobs ? logprobs_content(infos, tok) : Json()},
                 {"finish_reason", finish_reason_openai(outcome, !m.tool_calls.empty())}};
  return Json{{"id", id}, {"object", "chat.completion"}, {"created", unix_time()}, {"model", cfg.model_name},
              {"choices", Json::array({choice})}, {"usage", usage_json(outcome)}};
}

ChatStream::ChatStream(std::string id, const ApiConfig& cfg, const ChatRequest& req, const Tokenizer& tok)
    : id_(std::move(id)), created_(unix_time()), cfg_(cfg), req_(req), tok_(tok), splitter_(req.thinking) {}

std::string ChatStream::chunk(Json delta, Json finish_reason, Json logprobs) {
  Json choice = {{"index", 0}, {"delta", std::move(delta)}, {"logprobs", std::move(logprobs)},
                 {"finish_reason", std::move(finish_reason)}};
  return sse_data(Json{{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_},
                       {"model", cfg_.model_name}, {"choices", Json::array({choice})}});
}

std::string ChatStream::start() { return chunk(Json{{"role", "assistant"}, {"content", ""}}); }

std::string ChatStream::events_to_sse(const std::vector<ParseEvent>& ev, Json logprobs) {
  std::string out;
  for (const ParseEvent& e : ev) {
    Json delta;
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning: delta = {{"reasoning_content", e.text}}; break;
      case ParseEvent::Kind::Content: delta = {{"content", e.text}}; break;
      case ParseEvent::Kind::ToolCallBegin:
        ++tool_index_;
        delta = {{"tool_calls", Json::array({Json{{"index", tool_index_}, {"id", random_id("call_")}, {"type", "function"},
                                                  {"function", {{"name", e.text}, {"arguments", ""}}}}})}};
        break;
      case ParseEvent::Kind::ToolCallArgs:
        delta = {{"tool_calls", Json::array({Json{{"index", tool_index_}, {"function", {{"arguments", e.text}}}}})}};
        break;
      case ParseEvent::Kind::ToolCallEnd: continue;
    }
    out += chunk(std::move(delta), nullptr, std::move(logprobs));
    logprobs = nullptr;
  }
  // Logprobs whose text is still held back by the parser ride on an empty delta.
  if (!logprobs.is_null()) out += chunk(Json::object(), nullptr, std::move(logprobs));
  return out;
}

std::string ChatStream::on_event(const JobEvent& e) {
  return events_to_sse(splitter_.feed(e.text), e.tokens.empty() ? Json() : logprobs_content(e.tokens, tok_));
}

std::string ChatStream::finish(const JobOutcome& o) {
  std::string out = events_to_sse(splitter_.finish(), nullptr);
  out += chunk(Json::object(), finish_reason_openai(o, !splitter_.message().tool_calls.empty()));
  if (req_.include_usage)
    out += sse_data(Json{{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_},
                         {"model", cfg_.model_name}, {"choices", Json::array()}, {"usage", usage_json(o)}});
  return out + "data: [DONE]\n\n";
}

namespace {
Json completion_logprobs(const std::vector<TokenInfo>& infos, const Tokenizer& tok) {
  Json tokens = Json::array(), lps = Json::array(), tops = Json::array();
  for (const TokenInfo& t : infos) {
    tokens.push_back(std::string(tok.id_bytes(t.id)));
    lps.push_back(t.logprob);
    Json top = Json::object();
    for (auto [id, lp] : t.top) top[std::string(tok.id_bytes(id))] = lp;
    tops.push_back(top);
  }
  return Json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}};
}
}  // namespace

Json completion_response(const std::string& id, const ApiConfig& cfg, const CompletionRequest& req,
                         const std::vector<JobEvent>& events, const JobOutcome& outcome, const Tokenizer& tok) {
  std::string text;
  std::vector<TokenInfo> infos;
  for (const JobEvent& e : events) {
    text += e.text;
    infos.insert(infos.end(), e.tokens.begin(), e.tokens.end());
  }
  Json choice = {{"index", 0}, {"text", text},
                 {"logprobs", req.gen.logprobs ? completion_logprobs(infos, tok) : Json()},
                 {"finish_reason", finish_reason_openai(outcome, false)}};
  return Json{{"id", id}, {"object", "text_completion"}, {"created", unix_time()}, {"model", cfg.model_name},
              {"choices", Json::array({choice})}, {"usage", usage_json(outcome)}};
}

std::string completion_chunk(const std::string& id, const ApiConfig& cfg, const CompletionRequest& req,
                             const JobEvent* e, const JobOutcome* o, const Tokenizer& tok) {
  Json choice = {{"index", 0}, {"text", e ? e->text : std::string()},
                 {"logprobs", e && req.gen.logprobs ? completion_logprobs(e->tokens, tok) : Json()},
                 {"finish_reason", o ? Json(finish_reason_openai(*o, false)) : Json()}};
  Json j = {{"id", id}, {"object", "text_completion"}, {"created", unix_time()}, {"model", cfg.model_name},
            {"choices", Json::array({choice})}};
  std::string out = sse_data(j);
  if (o && req.include_usage) {
    j["choices"] = Json::array();
    j["usage"] = usage_json(*o);
    out += sse_data(j);
  }
  if (o) out += "data: [DONE]\n\n";
  return out;
}

}  // namespace dsv4::server
