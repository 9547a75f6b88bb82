// /v1/responses output: items and the response.* SSE events, from the worker's text.
#include "server/responses_api.h"

namespace dsv4::server {

ResponsesStream::ResponsesStream(std::string id, const ApiConfig& cfg, const ResponsesRequest& req, const Tokenizer& tok)
    : id_(std::move(id)), created_(unix_time()), cfg_(cfg), req_(req), tok_(tok), splitter_(req.thinking) {}

std::string ResponsesStream::event(const std::string& type, Json fields) {
  Json j = {{"type", type}, {"sequence_number", seq_++}};
  for (auto& [k, v] : fields.items()) j[k] = std::move(v);
  return "event: " + type + "\ndata: " + dump(j) + "\n\n";
}

Json ResponsesStream::snapshot(const std::string& status) const {
  Json r = {{"id", id_}, {"object", "response"}, {"created_at", created_}, {"status", status}, {"error", nullptr},
            {"incomplete_details", nullptr}, {"model", cfg_.model_name},
            {"output", status == "in_progress" ? Json::array() : output_}, {"usage", nullptr}};
  for (const auto& [k, v] : req_.echo.items()) r[k] = v;
  return r;
}

std::string ResponsesStream::start() {
  std::string out = event("response.created", {{"response", snapshot("in_progress")}});
  return out + event("response.in_progress", {{"response", snapshot("in_progress")}});
}

std::string ResponsesStream::open_item(Json item) {
  std::string out = close_item();
  const int64_t index = int64_t(output_.size());
  const std::string id = item["id"];
  const bool message = item["type"] == "message";
  output_.push_back(item);
  open_ = true;
  text_.clear();
  out += event("response.output_item.added", {{"output_index", index}, {"item", std::move(item)}});
  if (message)
    out += event("response.content_part.added", {{"item_id", id}, {"output_index", index}, {"content_index", 0},
                                                  {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", Json::array()}}}});
  return out;
}

std::string ResponsesStream::close_item() {
  if (!open_) return "";
  open_ = false;
  Json& item = output_.back();
  const int64_t index = int64_t(output_.size()) - 1;
  const std::string type = item["type"], id = item["id"];
  std::string out;
  if (type == "reasoning") {
    item["content"] = Json::array({Json{{"type", "reasoning_text"}, {"text", text_}}});
    out = event("response.reasoning_text.done", {{"item_id", id}, {"output_index", index}, {"content_index", 0}, {"text", text_}});
  } else if (type == "message") {
    Json part = {{"type", "output_text"}, {"text", text_}, {"annotations", Json::array()}, {"logprobs", Json::array()}};
    item["content"] = Json::array({part});
    out = event("response.output_text.done", {{"item_id", id}, {"output_index", index}, {"content_index", 0},
                                              {"text", text_}, {"logprobs", Json::array()}});
    out += event("response.content_part.done", {{"item_id", id}, {"output_index", index}, {"content_index", 0}, {"part", part}});
  } else {
    item["arguments"] = text_;
    out = event("response.function_call_arguments.done",
                {{"item_id", id}, {"output_index", index}, {"name", item["name"]}, {"arguments", text_}});
  }
  item["status"] = "completed";
  return out + event("response.output_item.done", {{"output_index", index}, {"item", item}});
}

std::string ResponsesStream::to_sse(const std::vector<ParseEvent>& ev) {
  std::string out;
  auto open_type = [&] { return open_ ? output_.back()["type"].get<std::string>() : std::string(); };
  auto delta = [&](const char* type, const std::string& d, Json extra) {
    text_ += d;
    Json f = {{"item_id", output_.back()["id"]}, {"output_index", int64_t(output_.size()) - 1}};
    for (auto& [k, v] : extra.items()) f[k] = std::move(v);
    f["delta"] = d;
    out += event(type, std::move(f));
  };
  for (const ParseEvent& e : ev) {
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning:
        if (open_type() != "reasoning")
          out += open_item(Json{{"id", random_id("rs_")}, {"type", "reasoning"}, {"summary", Json::array()},
                                {"content", Json::array()}, {"status", "in_progress"}});
        delta("response.reasoning_text.delta", e.text, Json{{"content_index", 0}});
        break;
      case ParseEvent::Kind::Content:
        if (open_type() != "message")
          out += open_item(Json{{"id", random_id("msg_")}, {"type", "message"}, {"status", "in_progress"},
                                {"role", "assistant"}, {"content", Json::array()}});
        delta("response.output_text.delta", e.text, Json{{"content_index", 0}, {"logprobs", Json::array()}});
        break;
      case ParseEvent::Kind::ToolCallBegin:
        out += open_item(Json{{"id", random_id("fc_")}, {"type", "function_call"}, {"status", "in_progress"},
                              {"arguments", ""}, {"call_id", random_id("call_")}, {"name", e.text}});
        break;
      case ParseEvent::Kind::ToolCallArgs: delta("response.function_call_arguments.delta", e.text, Json::object()); break;
      case ParseEvent::Kind::ToolCallEnd: out += close_item(); break;
    }
  }
  return out;
}

std::string ResponsesStream::on_event(const JobEvent& e) { return to_sse(splitter_.feed(e.text)); }

std::string ResponsesStream::finish(const JobOutcome& o) {
  std::string out = to_sse(splitter_.finish());
  out += close_item();
  const bool cut = o.finish == Finish::kLength;
  response_ = snapshot(cut ? "incomplete" : "completed");
  if (cut) response_["incomplete_details"] = Json{{"reason", "max_output_tokens"}};
  const std::string& reasoning = splitter_.message().reasoning_content;
  const int64_t reasoning_tokens = reasoning.empty() ? 0 : int64_t(tok_.encode(reasoning).size());
  response_["usage"] = Json{{"input_tokens", o.prompt_tokens},
                            {"input_tokens_details", {{"cached_tokens", o.cached_tokens}}},
                            {"output_tokens", o.completion_tokens},
                            {"output_tokens_details", {{"reasoning_tokens", reasoning_tokens}}},
                            {"total_tokens", o.prompt_tokens + o.completion_tokens}};
  return out + event(cut ? "response.incomplete" : "response.completed", {{"response", response_}});
}

std::string ResponsesStream::fail(const std::string& message) {
  response_ = snapshot("failed");
  response_["error"] = Json{{"code", "server_error"}, {"message", message}};
  return event("response.failed", {{"response", response_}});
}

Json ResponsesStream::conversation() const {
  Json m = {{"role", "assistant"}, {"content", ""}};
  std::string content, reasoning;
  Json calls = Json::array();
  for (const Json& item : output_) {
    if (item["type"] == "reasoning") reasoning += item["content"][0]["text"].get<std::string>();
    if (item["type"] == "message") content += item["content"][0]["text"].get<std::string>();
    if (item["type"] == "function_call")
      calls.push_back(Json{{"id", item["call_id"]}, {"type", "function"},
                           {"function", {{"name", item["name"]}, {"arguments", item["arguments"]}}}});
  }
  m["content"] = content;
  if (!reasoning.empty()) m["reasoning_content"] = reasoning;
  if (!calls.empty()) m["tool_calls"] = calls;
  Json conv = req_.history;
  conv.push_back(std::move(m));
  return conv;
}

}  // namespace dsv4::server
