#include "tokenizer/chat.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "tokenizer/chat_tokens.h"
#include "tokenizer/pyjson.h"

namespace dsv4 {

namespace {

using J = nlohmann::ordered_json;
using namespace chat_tokens;

constexpr const char* kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

constexpr const char* kResponseFormatPrefix =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

std::string tools_prompt(const std::string& schemas) {
  const std::string d = kDsml;
  return "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools "
         "by writing a \"<" + d + "tool_calls>\" block like the following:\n\n"
         "<" + d + "tool_calls>\n"
         "<" + d + "invoke name=\"$TOOL_NAME\">\n"
         "<" + d + "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" + d + "parameter>\n"
         "...\n"
         "</" + d + "invoke>\n"
         "<" + d + "invoke name=\"$TOOL_NAME2\">\n"
         "...\n"
         "</" + d + "invoke>\n"
         "</" + d + "tool_calls>\n\n"
         "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
         "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
         "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
         "<think>...</think> BEFORE any tool calls or final response.\n\n"
         "Otherwise, output directly after </think> with tool calls or final response.\n\n"
         "### Available Tool Schemas\n\n" + schemas +
         "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
}

const std::map<std::string, std::string>& task_tokens() {
  static const std::map<std::string, std::string> m = {
      {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
      {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"},   {"read_url", "<｜read_url｜>"}};
  return m;
}

const J* field(const J& m, const char* key) {
  if (!m.is_object()) return nullptr;
  auto it = m.find(key);
  return it == m.end() ? nullptr : &*it;
}

// Python truthiness of an optional value.
bool truthy(const J* v) {
  if (!v || v->is_null()) return false;
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_number_integer()) return v->get<int64_t>() != 0;
  if (v->is_number_unsigned()) return v->get<uint64_t>() != 0;
  if (v->is_number_float()) return v->get<double>() != 0;
  if (v->is_string()) return !v->get_ref<const std::string&>().empty();
  if (v->is_array() || v->is_object()) return !v->empty();
  return true;
}

bool is_none(const J* v) { return !v || v->is_null(); }

std::string role_of(const J& m) {
  const J* r = field(m, "role");
  return r && r->is_string() ? r->get<std::string>() : std::string();
}

// A text field: a string, or an array of {"type":"text","text":...} parts joined by a blank line.
std::string text_value(const J& v, const std::string& path) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out;
    bool first = true;
    for (const auto& part : v) {
      const J* t = field(part, "text");
      if (!t || !t->is_string()) throw Error(cat(path, ": content parts must be {\"type\": \"text\", \"text\": ...}"));
      if (!first) out += "\n\n";
      first = false;
      out += t->get<std::string>();
    }
    return out;
  }
  throw Error(cat(path, ": must be a string"));
}

// `value or ""`.
std::string text_or_empty(const J* v, const std::string& path) {
  if (!truthy(v)) return {};
  return text_value(*v, path);
}

// str.format of a value that may be None (the reference prints "None").
std::string format_value(const J* v, const std::string& path) {
  if (is_none(v)) return "None";
  return text_value(*v, path);
}

std::string render_tools(const J& tools, const std::string& path) {
  if (!tools.is_array()) throw Error(cat(path, ": tools must be an array"));
  std::string schemas;
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const J* fn = field(tools[i], "function");
    if (!fn) throw Error(cat(path, "[", i, "]: missing \"function\""));
    if (i) schemas += "\n";
    schemas += pyjson::dumps(*fn);
  }
  return tools_prompt(schemas);
}

std::string encode_arguments(const J& call, const std::string& path) {
  const J* fn = field(call, "function");
  const J* args = fn ? field(*fn, "arguments") : nullptr;
  pyjson::Value obj;
  std::optional<pyjson::Value> parsed;
  if (args && args->is_string()) parsed = pyjson::loads(args->get_ref<const std::string&>());
  if (parsed) {
    if (parsed->kind != pyjson::Value::Kind::Object)
      throw Error(cat(path, ".function.arguments: must encode a JSON object"));
    obj = std::move(*parsed);
  } else {
    // The reference wraps whatever it could not json.loads as one parameter named "arguments".
    obj.kind = pyjson::Value::Kind::Object;
    pyjson::Value v;
    if (args && args->is_string()) {
      v.kind = pyjson::Value::Kind::String;
      v.text = args->get<std::string>();
    } else {
      auto reparsed = pyjson::loads(args ? pyjson::dumps(*args) : "null");
      v = reparsed ? std::move(*reparsed) : pyjson::Value{};
    }
    obj.members.emplace_back("arguments", std::move(v));
  }
  std::string out;
  for (std::size_t i = 0; i < obj.members.size(); ++i) {
    const auto& [k, v] = obj.members[i];
    const bool is_str = v.kind == pyjson::Value::Kind::String;
    if (i) out += "\n";
    out += cat("<", kDsml, "parameter name=\"", k, "\" string=\"", is_str ? "true" : "false", "\">",
               is_str ? v.text : pyjson::dumps(v), "</", kDsml, "parameter>");
  }
  return out;
}

std::string render_tool_calls(const J& calls, const std::string& path) {
  if (!calls.is_array()) throw Error(cat(path, ": tool_calls must be an array"));
  std::string list;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const std::string p = cat(path, "[", i, "]");
    const J* fn = field(calls[i], "function");
    if (!fn) throw Error(cat(p, ": missing \"function\""));
    const J* name = field(*fn, "name");
    if (!name) throw Error(cat(p, ".function: missing \"name\""));
    if (i) list += "\n";
    list += cat("<", kDsml, "invoke name=\"", format_value(name, p + ".function.name"), "\">\n",
                encode_arguments(calls[i], p), "\n</", kDsml, "invoke>");
  }
  return cat("\n\n<", kDsml, "tool_calls>\n", list, "\n</", kDsml, "tool_calls>");
}

int find_last_user_index(const std::vector<J>& msgs) {
  for (int i = static_cast<int>(msgs.size()) - 1; i >= 0; --i) {
    const std::string r = role_of(msgs[i]);
    if (r == "user" || r == "developer") return i;
  }
  return -1;
}

std::vector<J> merge_tool_messages(const std::vector<J>& messages) {
  std::vector<J> merged;
  for (const J& msg : messages) {
    const std::string role = role_of(msg);
    auto last_is_user_with_blocks = [&] {
      return !merged.empty() && role_of(merged.back()) == "user" && merged.back().contains("content_blocks");
    };
    if (role == "tool") {
      const J* id = field(msg, "tool_call_id");
      const J* content = field(msg, "content");
      J block = {{"type", "tool_result"}, {"tool_use_id", id ? *id : J("")}, {"content", content ? *content : J("")}};
      if (last_is_user_with_blocks()) {
        merged.back()["content_blocks"].push_back(std::move(block));
      } else {
        merged.push_back(J{{"role", "user"}, {"content_blocks", J::array({std::move(block)})}});
      }
    } else if (role == "user") {
      const J* content = field(msg, "content");
      const J text = content ? *content : J("");
      J block = {{"type", "text"}, {"text", text}};
      if (last_is_user_with_blocks() && is_none(field(merged.back(), "task"))) {
        merged.back()["content_blocks"].push_back(std::move(block));
      } else {
        J m = {{"role", "user"}, {"content", text}, {"content_blocks", J::array({std::move(block)})}};
        for (const char* k : {"task", "wo_eos", "mask"})
          if (const J* v = field(msg, k)) m[k] = *v;
        merged.push_back(std::move(m));
      }
    } else {
      merged.push_back(msg);
    }
  }
  return merged;
}

void sort_tool_results_by_call_order(std::vector<J>& messages) {
  std::map<std::string, int> order;
  for (J& msg : messages) {
    const std::string role = role_of(msg);
    const J* calls = field(msg, "tool_calls");
    if (role == "assistant" && truthy(calls)) {
      order.clear();
      if (!calls->is_array()) continue;
      for (std::size_t i = 0; i < calls->size(); ++i) {
        const J& tc = (*calls)[i];
        std::string id;
        if (const J* v = field(tc, "id"); truthy(v) && v->is_string()) {
          id = v->get<std::string>();
        } else if (const J* fn = field(tc, "function")) {
          if (const J* fid = field(*fn, "id"); fid && fid->is_string()) id = fid->get<std::string>();
        }
        if (!id.empty()) order[id] = static_cast<int>(i);
      }
    } else if (role == "user" && truthy(field(msg, "content_blocks"))) {
      J& blocks = msg["content_blocks"];
      if (!blocks.is_array()) continue;
      std::vector<J> tool_blocks;
      for (const J& b : blocks)
        if (const J* t = field(b, "type"); t && *t == "tool_result") tool_blocks.push_back(b);
      if (tool_blocks.size() <= 1 || order.empty()) continue;
      auto key = [&](const J& b) {
        const J* id = field(b, "tool_use_id");
        if (!id || !id->is_string()) return 0;
        auto it = order.find(id->get<std::string>());
        return it == order.end() ? 0 : it->second;
      };
      std::stable_sort(tool_blocks.begin(), tool_blocks.end(), [&](const J& a, const J& b) { return key(a) < key(b); });
      std::size_t k = 0;
      for (J& b : blocks)
        if (const J* t = field(b, "type"); t && *t == "tool_result") b = tool_blocks[k++];
    }
  }
}

std::vector<J> drop_thinking_messages(const std::vector<J>& messages) {
  const int last_user = find_last_user_index(messages);
  std::vector<J> out;
  for (int i = 0; i < static_cast<int>(messages.size()); ++i) {
    const std::string role = role_of(messages[i]);
    if (role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
        role == "direct_search_results" || i >= last_user) {
      out.push_back(messages[i]);
    } else if (role == "assistant") {
      J m = messages[i];
      m.erase("reasoning_content");
      out.push_back(std::move(m));
    }
  }
  return out;
}

std::string render_user_blocks(const J& blocks, const std::string& path) {
  std::string out;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const J& b = blocks[i];
    const J* type = field(b, "type");
    const std::string t = type && type->is_string() ? type->get<std::string>() : "None";
    if (i) out += "\n\n";
    if (t == "text") {
      const J* text = field(b, "text");
      out += is_none(text) ? std::string() : text_value(*text, path + ".content");
    } else if (t == "tool_result") {
      const J* content = field(b, "content");
      std::string c;
      if (content && content->is_array()) {
        bool first = true;
        for (const J& part : *content) {
          if (!first) c += "\n\n";
          first = false;
          const J* pt = field(part, "type");
          if (pt && *pt == "text") {
            const J* text = field(part, "text");
            c += text && text->is_string() ? text->get<std::string>() : std::string();
          } else {
            c += cat("[Unsupported ", pt && pt->is_string() ? pt->get<std::string>() : "None", "]");
          }
        }
      } else {
        c = format_value(content, path + ".content");
      }
      out += cat("<tool_result>", c, "</tool_result>");
    } else {
      out += cat("[Unsupported ", t, "]");
    }
  }
  return out;
}

struct RenderCtx {
  bool thinking;
  bool drop_thinking;
  bool effort_max;
  int last_user;  // find_last_user_index of the messages, once (per message it was quadratic)
};

std::string render_message(int index, const std::vector<J>& msgs, const RenderCtx& ctx) {
  std::string prompt;
  const J& msg = msgs[index];
  const std::string path = cat("messages[", index, "]");
  const int last_user = ctx.last_user;
  const std::string role = role_of(msg);
  const J* content = field(msg, "content");
  const J* tools = field(msg, "tools");
  const J* response_format = field(msg, "response_format");

  if (index == 0 && ctx.thinking && ctx.effort_max) prompt += kReasoningEffortMax;

  auto tools_and_format = [&](std::string& out) {
    if (truthy(tools)) out += "\n\n" + render_tools(*tools, path + ".tools");
    if (truthy(response_format)) out += cat("\n\n", kResponseFormatPrefix, pyjson::dumps(*response_format));
  };

  if (role == "system") {
    prompt += text_or_empty(content, path + ".content");
    tools_and_format(prompt);
  } else if (role == "developer") {
    if (!truthy(content)) throw Error(cat(path, ": a developer message needs non-empty content"));
    std::string c = kUser + text_value(*content, path + ".content");
    tools_and_format(c);
    prompt += c;
  } else if (role == "user") {
    prompt += kUser;
    const J* blocks = field(msg, "content_blocks");
    if (truthy(blocks) && blocks->is_array())
      prompt += render_user_blocks(*blocks, path);
    else
      prompt += text_or_empty(content, path + ".content");
  } else if (role == "latest_reminder") {
    prompt += kLatestReminder + format_value(content, path + ".content");
  } else if (role == "assistant") {
    std::string tc;
    if (const J* calls = field(msg, "tool_calls"); truthy(calls)) tc = render_tool_calls(*calls, path + ".tool_calls");
    const std::string summary = text_or_empty(content, path + ".content");
    const std::string rc = text_or_empty(field(msg, "reasoning_content"), path + ".reasoning_content");
    const bool prev_has_task = index >= 1 && !is_none(field(msgs[index - 1], "task"));
    std::string thinking_part;
    if (ctx.thinking && !prev_has_task && (!ctx.drop_thinking || index > last_user)) thinking_part = rc + kThinkEnd;
    prompt += thinking_part + summary + tc;
    if (!truthy(field(msg, "wo_eos"))) prompt += kEos;
  } else {
    throw Error(cat(path, ": unsupported role '", role, "'"));
  }

  if (index + 1 < static_cast<int>(msgs.size())) {
    const std::string next = role_of(msgs[index + 1]);
    if (next != "assistant" && next != "latest_reminder") return prompt;
  }

  const J* task = field(msg, "task");
  if (!is_none(task)) {
    const std::string t = task->is_string() ? task->get<std::string>() : pyjson::dumps(*task);
    auto it = task_tokens().find(t);
    if (it == task_tokens().end())
      throw Error(cat(path, ".task: invalid task '", t, "' (valid: action, query, authority, domain, title, read_url)"));
    if (t != "action") {
      prompt += it->second;
    } else {
      prompt += kAssistant;
      prompt += ctx.thinking ? kThinkStart : kThinkEnd;
      prompt += it->second;
    }
  } else if (role == "user" || role == "developer") {
    prompt += kAssistant;
    const bool open = ctx.thinking && (!ctx.drop_thinking || index >= last_user);
    prompt += open ? kThinkStart : kThinkEnd;
  }
  return prompt;
}

std::vector<J> to_vector(const J& arr, const char* what) {
  if (arr.is_null()) return {};
  if (!arr.is_array()) throw Error(cat(what, " must be a JSON array of message objects"));
  std::vector<J> out;
  for (std::size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_object()) throw Error(cat(what, "[", i, "] must be an object"));
    out.push_back(arr[i]);
  }
  return out;
}

}  // namespace

std::string encode_chat(const J& messages_json, const J& tools, const ChatOptions& options) {
  if (!options.reasoning_effort.empty() && options.reasoning_effort != "high" && options.reasoning_effort != "max")
    throw Error(cat("invalid reasoning_effort '", options.reasoning_effort, "' (use none, high or max)"));
  std::vector<J> messages = to_vector(messages_json, "messages");
  std::vector<J> context = to_vector(options.context, "context");

  if (truthy(&tools)) {
    if (!tools.is_array()) throw Error("tools must be a JSON array of OpenAI function schemas");
    if (!messages.empty() && role_of(messages[0]) == "system") {
      if (truthy(field(messages[0], "tools")))
        throw Error("tools are given both separately and on the first system message");
      messages[0]["tools"] = tools;
    } else {
      messages.insert(messages.begin(), J{{"role", "system"}, {"content", ""}, {"tools", tools}});
    }
  }

  messages = merge_tool_messages(messages);
  {
    std::vector<J> all = context;
    all.insert(all.end(), messages.begin(), messages.end());
    sort_tool_results_by_call_order(all);
    messages.assign(all.begin() + static_cast<std::ptrdiff_t>(context.size()), all.end());
  }
  if (!context.empty()) {
    context = merge_tool_messages(context);
    sort_tool_results_by_call_order(context);
  }
  std::vector<J> full = context;
  full.insert(full.end(), messages.begin(), messages.end());

  std::string prompt = options.add_bos && context.empty() ? kBos : "";
  const bool any_tools = std::any_of(full.begin(), full.end(), [](const J& m) { return truthy(field(m, "tools")); });
  const bool drop = options.drop_thinking && !any_tools;
  std::size_t num_to_render, context_len;
  if (options.thinking && drop) {
    full = drop_thinking_messages(full);
    const std::size_t kept_context = drop_thinking_messages(context).size();
    num_to_render = full.size() > kept_context ? full.size() - kept_context : 0;
    context_len = full.size() - num_to_render;
  } else {
    num_to_render = messages.size();
    context_len = context.size();
  }
  const RenderCtx ctx{options.thinking, drop, options.reasoning_effort == "max", find_last_user_index(full)};
  for (std::size_t i = 0; i < num_to_render; ++i) prompt += render_message(static_cast<int>(i + context_len), full, ctx);
  return prompt;
}

ChatPrompt encode_chat_prompt(const Tokenizer& tok, const J& messages, const J& tools, const ChatOptions& options) {
  ChatPrompt p;
  p.text = encode_chat(messages, tools, options);
  p.ids = tok.encode(p.text);
  return p;
}

}  // namespace dsv4
