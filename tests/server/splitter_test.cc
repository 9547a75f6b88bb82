// Output that is not valid V4 markup reaches the client as it was generated: a table of
// malformed (and cut-off) completions through CompletionSplitter and the response builders of
// both APIs, whole (non-streaming), byte by byte, and token by token as the server streams them.
// The text must come out exactly: nothing repeated, nothing held back and lost.
#include <random>
#include <string>
#include <vector>

#include "api_fixture.h"
#include "tokenizer/stream_decoder.h"

namespace dsv4::server {
namespace {

struct Split {
  std::string reasoning, content;
  std::vector<ToolCall> calls;
  bool operator==(const Split&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Split& s) {
  os << "reasoning " << Json(s.reasoning).dump() << ", content " << Json(s.content).dump() << ", calls [";
  for (const ToolCall& c : s.calls) os << c.name << Json(c.arguments).dump() << " ";
  return os << "]";
}

struct Case {
  const char* name;
  bool thinking;
  std::string completion;
  Split want;
};

const std::string kOpen = "\n\n<｜DSML｜tool_calls>\n";
const std::string kInvokeF = "<｜DSML｜invoke name=\"f\">\n";
const std::string kParamA1 = "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n";
const std::string kClose = "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

std::vector<Case> cases() {
  std::vector<Case> c;
  auto plain = [&](const char* name, bool thinking, const std::string& text) { c.push_back({name, thinking, text, {"", text, {}}}); };
  // Chat mode: everything that is not valid markup is content, byte for byte.
  plain("stray </think>", false, "a</think>b");
  plain("stray <think>", false, "<think>x");
  plain("BOS in the middle", false, "x<｜begin▁of▁sentence｜>y");
  plain("bare DSML token", false, "a ｜DSML｜ b");
  plain("EOS then more text", false, "a<｜end▁of▁sentence｜>b");
  plain("ends in a token's first byte", false, "1 < 2 <");
  plain("ends in two newlines", false, "Paragraph.\n\n");
  plain("ends mid character", false, "caf\xC3");
  plain("tool-call opener then junk", false, "x" + kOpen + "junk");
  plain("unknown element", false, "x" + kOpen + "<｜DSML｜call name=\"f\">\n" + kClose);
  plain("bad parameter attribute", false,
        "x" + kOpen + kInvokeF + "<｜DSML｜parameter name=\"a\" string=\"maybe\">1</｜DSML｜parameter>\n" + kClose);
  plain("duplicate parameter", false, "x" + kOpen + kInvokeF + kParamA1 + kParamA1 + kClose);
  plain("cut inside a parameter", false, "x" + kOpen + kInvokeF + "<｜DSML｜parameter name=\"a\" string=\"true\">Par");
  plain("cut inside the invoke tag", false, "x" + kOpen + "<｜DSML｜invoke name=\"f");
  // Thinking mode: reasoning until the stream goes wrong, then content.
  c.push_back({"cut off while thinking", true, "I wonder", {"I wonder", "", {}}});
  c.push_back({"cut inside </think>", true, "I wonder</thi", {"I wonder</thi", "", {}}});
  c.push_back({"<think> while thinking", true, "abc<think>def", {"abc", "<think>def", {}}});
  c.push_back({"tool calls while thinking", true, "abc" + kOpen + kInvokeF + kClose, {"abc", kOpen + kInvokeF + kClose, {}}});
  c.push_back({"second </think>", true, "r</think>a</think>b", {"r", "a</think>b", {}}});
  c.push_back({"content ends in a newline", true, "r</think>c\n", {"r", "c\n", {}}});
  // A complete call stands; what follows it is passed on.
  c.push_back({"junk after the block", false, "Sure." + kOpen + kInvokeF + kParamA1 + kClose + "junk",
               {"", "Sure.>\n</｜DSML｜tool_calls>junk", {{"f", "{\"a\": \"1\"}"}}}});
  c.push_back({"second call broken", false, "Sure." + kOpen + kInvokeF + kParamA1 + "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"g\">\nxx",
               {"", "Sure.>\n<｜DSML｜invoke name=\"g\">\nxx", {{"f", "{\"a\": \"1\"}"}}}});
  // Valid output is split as before.
  c.push_back({"valid reasoning and content", true, "Let me see.</think>Four.", {"Let me see.", "Four.", {}}});
  c.push_back({"valid tool call", false, "Sure." + kOpen + kInvokeF + kParamA1 + kClose, {"", "Sure.", {{"f", "{\"a\": \"1\"}"}}}});
  return c;
}

Split collect(const std::vector<ParseEvent>& evs, Split s = {}) {
  for (const ParseEvent& e : evs) {
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning: s.reasoning += e.text; break;
      case ParseEvent::Kind::Content: s.content += e.text; break;
      case ParseEvent::Kind::ToolCallBegin: s.calls.push_back({e.text, ""}); break;
      case ParseEvent::Kind::ToolCallArgs: s.calls.back().arguments += e.text; break;
      case ParseEvent::Kind::ToolCallEnd: break;
    }
  }
  return s;
}

// The splitter fed `chunks`; what its events and its message say must agree.
Split split(bool thinking, const std::vector<std::string>& chunks) {
  CompletionSplitter sp(thinking);
  Split s;
  for (const std::string& c : chunks) s = collect(sp.feed(c), s);
  s = collect(sp.finish(), s);
  const ParsedMessage& m = sp.message();
  EXPECT_EQ(m.content, s.content);
  EXPECT_EQ(m.reasoning_content, s.reasoning);
  EXPECT_EQ(m.tool_calls, s.calls);
  return s;
}

std::vector<std::string> bytes_of(const std::string& text) {
  std::vector<std::string> out;
  for (char ch : text) out.emplace_back(1, ch);
  return out;
}

// As the worker releases it: token by token through the stream decoder.
std::vector<std::string> tokens_of(const std::string& text) {
  const Tokenizer& tok = test::shared_tokenizer();
  StreamDecoder dec(tok);
  std::vector<std::string> out;
  for (int32_t id : tok.encode(text)) out.push_back(dec.push(id));
  out.push_back(dec.finish());
  return out;
}

class Splitter : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    cfg_.max_context = 4096;
  }
  ApiConfig cfg_;
};

TEST_F(Splitter, MalformedOutputPassesOnExactly) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(split(c.thinking, {c.completion}), c.want) << "whole";
    EXPECT_EQ(split(c.thinking, bytes_of(c.completion)), c.want) << "byte by byte";
    if (c.completion.back() != '\xC3') {  // the decoder would make the cut character U+FFFD
      EXPECT_EQ(split(c.thinking, tokens_of(c.completion)), c.want) << "token by token";
    }
  }
}

TEST_F(Splitter, ChunkingNeverChangesTheResult) {
  std::mt19937_64 rng(7);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::string> chunks;
      for (size_t i = 0; i < c.completion.size();) {
        const size_t n = 1 + rng() % 9;
        chunks.push_back(c.completion.substr(i, n));
        i += n;
      }
      EXPECT_EQ(split(c.thinking, chunks), c.want);
    }
  }
}

// The same through the responses and SSE streams the server sends.
TEST_F(Splitter, ResponsesOfBothApisCarryTheExactText) {
  const Tokenizer& tok = test::shared_tokenizer();
  for (const Case& c : cases()) {
    // (Tool calls are covered above; an invalid UTF-8 tail becomes U+FFFD in JSON text.)
    if (!c.want.calls.empty() || c.completion.back() == '\xC3') continue;
    SCOPED_TRACE(c.name);
    ChatRequest chat;
    chat.thinking = c.thinking;
    MessagesRequest msgs;
    msgs.thinking = c.thinking;
    JobOutcome o;
    std::vector<JobEvent> whole = {JobEvent{c.completion, {}}}, bytes;
    for (const std::string& b : bytes_of(c.completion)) bytes.push_back(JobEvent{b, {}});

    const Json r = chat_response("id", cfg_, chat, whole, o, tok);
    const Json& m = r["choices"][0]["message"];
    EXPECT_EQ(m["content"].get<std::string>(), c.want.content);
    EXPECT_EQ(m.value("reasoning_content", ""), c.want.reasoning);

    ChatStream cs("id", cfg_, chat, tok);
    std::string sse = cs.start();
    for (const JobEvent& e : bytes) sse += cs.on_event(e);
    sse += cs.finish(o);
    Split streamed;
    for (size_t at = 0; (at = sse.find("data: {", at)) != std::string::npos; ++at) {
      const Json chunk = Json::parse(sse.substr(at + 6, sse.find("\n\n", at) - at - 6));
      if (chunk["choices"].empty()) continue;
      const Json& d = chunk["choices"][0]["delta"];
      streamed.content += d.value("content", "");
      streamed.reasoning += d.value("reasoning_content", "");
    }
    EXPECT_EQ(streamed, c.want) << "OpenAI stream";

    const Json a = messages_response("id", cfg_, msgs, whole, o);
    Split anthropic;
    for (const Json& b : a["content"]) {
      if (b["type"] == "text") anthropic.content += b["text"].get<std::string>();
      if (b["type"] == "thinking") anthropic.reasoning += b["thinking"].get<std::string>();
    }
    EXPECT_EQ(anthropic, c.want) << "Anthropic response";

    MessagesStream ms("id", cfg_, msgs);
    std::string events = ms.start(1, 0);
    for (const JobEvent& e : bytes) events += ms.on_event(e);
    events += ms.finish(o);
    Split astream;
    for (size_t at = 0; (at = events.find("data: {", at)) != std::string::npos; ++at) {
      const Json ev = Json::parse(events.substr(at + 6, events.find("\n\n", at) - at - 6));
      if (ev["type"] != "content_block_delta") continue;
      astream.content += ev["delta"].value("text", "");
      astream.reasoning += ev["delta"].value("thinking", "");
    }
    EXPECT_EQ(astream, c.want) << "Anthropic stream";
  }
}

}  // namespace
}  // namespace dsv4::server
