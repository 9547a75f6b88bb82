#include "tokenizer/completion_parser.h"

#include "tokenizer/chat_tokens.h"
#include "tokenizer/completion_parser_detail.h"
#include "tokenizer/pyjson.h"
#include "tokenizer/utf8.h"

namespace dsv4 {

using namespace chat_tokens;

CompletionParseError::CompletionParseError(std::string type, std::string message)
    : Error(cat("invalid completion (", type, "): ", message)), type_(std::move(type)), message_(std::move(message)) {}

nlohmann::ordered_json ParsedMessage::to_json() const {
  nlohmann::ordered_json calls = nlohmann::ordered_json::array();
  for (const auto& c : tool_calls)
    calls.push_back({{"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  return {{"role", "assistant"}, {"content", content}, {"reasoning_content", reasoning_content}, {"tool_calls", calls}};
}

namespace completion_detail {

Found read_until_stop(std::string_view text, std::size_t index, std::initializer_list<const char*> stops) {
  Found f{text.size(), text.size(), -1};
  int k = 0;
  for (const char* s : stops) {
    const std::size_t p = text.find(s, index);
    if (p != std::string_view::npos && p < f.pos) {
      f.pos = p;
      f.stop = k;
      f.next = p + std::char_traits<char>::length(s);
    }
    ++k;
  }
  return f;
}

namespace {

// Python's str.isspace(), which `\s` of the reference's regexes matches.
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool ends_with(std::string_view s, std::string_view t) {
  return s.size() >= t.size() && s.substr(s.size() - t.size()) == t;
}

}  // namespace

// re.findall(r'^\s*name="(.*?)">\n$', c, re.DOTALL) with exactly one result. `$` also matches
// before a final newline, and the lazy group takes the shortest name that lets the rest match.
bool match_tool_name(std::string_view c, std::string& name) {
  std::size_t i = 0;
  while (i < c.size()) {
    const std::size_t n = utf8::valid_char_len(c, i);
    if (n == 0 || !py_space(utf8::decode_at(c, i, n))) break;
    i += n;
  }
  if (c.substr(i, 6) != "name=\"") return false;
  const std::string_view rest = c.substr(i + 6);
  if (ends_with(rest, "\">\n\n")) {
    name = rest.substr(0, rest.size() - 4);
  } else if (ends_with(rest, "\">\n")) {
    name = rest.substr(0, rest.size() - 3);
  } else {
    return false;
  }
  return true;
}

// re.findall(r'^ name="(.*?)" string="(true|false)">(.*?)<$', c, re.DOTALL), one result.
bool match_parameter(std::string_view c, std::string& name, bool& is_string, std::string& value) {
  if (c.substr(0, 7) != " name=\"") return false;
  const std::string_view rest = c.substr(7);
  static constexpr std::string_view kTrue = "\" string=\"true\">", kFalse = "\" string=\"false\">";
  const std::size_t pt = rest.find(kTrue), pf = rest.find(kFalse);
  if (pt == std::string_view::npos && pf == std::string_view::npos) return false;
  const bool t = pt != std::string_view::npos && (pf == std::string_view::npos || pt < pf);
  const std::size_t p = t ? pt : pf;
  const std::string_view tail = rest.substr(p + (t ? kTrue : kFalse).size());
  if (ends_with(tail, "<\n")) {
    value = tail.substr(0, tail.size() - 2);
  } else if (ends_with(tail, "<")) {
    value = tail.substr(0, tail.size() - 1);
  } else {
    return false;
  }
  name = rest.substr(0, p);
  is_string = t;
  return true;
}

std::string argument_entry(const std::string& name, bool is_string, const std::string& value) {
  return cat(pyjson::dumps_string(name), ": ", is_string ? pyjson::dumps_string(value) : value);
}

[[noreturn]] void fail(const char* type, std::string message) { throw CompletionParseError(type, std::move(message)); }

}  // namespace completion_detail

namespace {

using namespace completion_detail;

std::size_t parse_tool_calls(std::string_view text, std::size_t index, int& stop, std::vector<ToolCall>& calls) {
  stop = -1;  // "None"; 0 = EOS-compatible sentinel is irrelevant here
  while (index < text.size()) {
    Found f = read_until_stop(text, index, {kInvokeOpen, kToolCallsEnd});
    std::string_view c = text.substr(index, f.pos - index);
    index = f.next;
    if (c != ">\n") fail("ValueError", cat("Tool call format error: expected '>\\n' but got '", c, "'"));
    if (f.stop == 1) {
      stop = 1;
      break;
    }
    if (f.stop < 0) fail("ValueError", "Missing special token in tool calls");

    f = read_until_stop(text, index, {kParamOpen, kInvokeClose});
    const std::string_view name_content = text.substr(index, f.pos - index);
    index = f.next;
    ToolCall call;
    if (!match_tool_name(name_content, call.name))
      fail("ValueError", cat("Tool name format error: '", name_content, "'"));
    std::vector<std::string> names;
    std::string args = "{";
    while (f.stop == 0) {
      Found pf = read_until_stop(text, index, {kParamClose});
      const std::string_view pc = text.substr(index, pf.pos - index);
      index = pf.next;
      std::string name, value;
      bool is_string = false;
      if (!match_parameter(pc, name, is_string, value)) fail("ValueError", cat("Parameter format error: '", pc, "'"));
      for (const auto& n : names)
        if (n == name) fail("ValueError", cat("Duplicate parameter name: '", name, "'"));
      if (!names.empty()) args += ", ";
      names.push_back(name);
      args += argument_entry(name, is_string, value);
      f = read_until_stop(text, index, {kParamOpen, kInvokeClose});
      const std::string_view after = text.substr(index, f.pos - index);
      index = f.next;
      if (after != ">\n") fail("ValueError", cat("Parameter format error: expected '>\\n' but got '", after, "'"));
    }
    call.arguments = args + "}";
    calls.push_back(std::move(call));
    stop = f.stop < 0 ? -1 : 2;
  }
  return index;
}

}  // namespace

ParsedMessage parse_completion(std::string_view text, bool thinking) {
  ParsedMessage m;
  std::size_t index = 0;
  if (thinking) {
    const Found f = read_until_stop(text, index, {kThinkEnd, kToolCallsStart});
    m.reasoning_content = text.substr(index, f.pos - index);
    index = f.next;
    if (f.stop != 0) fail("AssertionError", "Invalid thinking format: missing </think>");
  }
  Found f = read_until_stop(text, index, {kEos, kToolCallsStart});
  m.content = text.substr(index, f.pos - index);
  index = f.next;
  bool eos_last = f.stop == 0;  // the last stop token read was EOS (or none was found)
  bool none_last = false;
  if (f.stop == 1) {
    int stop;
    index = parse_tool_calls(text, index, stop, m.tool_calls);
    const Found e = read_until_stop(text, index, {kEos});
    if (e.pos != index) fail("AssertionError", "Unexpected content after tool calls");
    index = e.next;
    eos_last = e.stop == 0;
    none_last = e.stop < 0;
  } else if (f.stop != 0) {
    fail("AssertionError", "Invalid format: missing EOS token");
  }
  if (index != text.size() || !(eos_last || none_last)) fail("AssertionError", "Unexpected content at end");
  for (const char* sp : {kBos, kEos, kThinkStart, kThinkEnd, kDsml}) {
    if (m.content.find(sp) != std::string::npos || m.reasoning_content.find(sp) != std::string::npos)
      fail("AssertionError", cat("Unexpected special token '", sp, "' in content"));
  }
  return m;
}

}  // namespace dsv4
