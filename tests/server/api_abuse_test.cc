// Hostile request bodies through the API mapping (no sockets): JSON nested far too deep in
// every field that is copied or re-rendered, every field with every wrong JSON type, numbers at
// the edges, invalid UTF-8, huge arrays. Each must be refused with a 4xx naming the field (or be
// served where it is valid): never a crash, never another exception type.
#include <cstdint>
#include <string>
#include <vector>

#include "api_fixture.h"

namespace dsv4::server {
namespace {

using test::Endpoint;
using test::map_body;
using test::Outcome;

class ApiAbuse : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    cfg_.max_context = 4096;
  }
  Outcome run(Endpoint e, const std::string& body) { return map_body(e, body, cfg_); }
  Outcome run(Endpoint e, const Json& body) { return map_body(e, body.dump(), cfg_); }
  ApiConfig cfg_;
};

// `depth` levels of alternating arrays and objects around a number, as text (building it as
// a Json tree would itself recurse).
std::string nested(size_t depth) {
  std::string open, close;
  open.reserve(depth * 6);
  for (size_t i = 0; i < depth; ++i) {
    open += i % 2 ? "{\"k\":" : "[";
    close += i % 2 ? "}" : "]";
  }
  return open + "1" + std::string(close.rbegin(), close.rend());
}

// A valid body of each endpoint with `@` where the nested value goes.
struct DeepCase {
  Endpoint endpoint;
  const char* body;
  const char* path;  // where the error must say the nesting is
  const char* param;
};

const DeepCase kDeepCases[] = {
    {Endpoint::kChat,
     R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":@}}]})",
     "tools[0].function.parameters", "tools"},
    {Endpoint::kChat,
     R"({"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":@}}})",
     "response_format.json_schema.schema", "response_format"},
    {Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],"metadata":{"m":@}})", "metadata.m", "metadata"},
    {Endpoint::kChat, R"({"messages":[{"role":"user","content":@}]})", "messages[0].content", "messages"},
    {Endpoint::kChat,
     R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"","tool_calls":[{"id":"c",
        "type":"function","function":{"name":"f","arguments":{"a":@}}}]}]})",
     "messages[1].tool_calls[0].function.arguments.a", "messages"},
    {Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],"stop":@})", "stop", "stop"},
    {Endpoint::kCompletions, R"({"prompt":@})", "prompt", "prompt"},
    {Endpoint::kMessages,
     R"({"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":@}]})",
     "tools[0].input_schema", "tools"},
    {Endpoint::kMessages,
     R"({"max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use",
        "id":"t","name":"f","input":{"x":@}}]}]})",
     "messages[1].content[0].input.x", "messages"},
    {Endpoint::kMessages, R"({"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"metadata":@})", "metadata",
     "metadata"},
    {Endpoint::kMessages, R"({"max_tokens":5,"system":@,"messages":[{"role":"user","content":"hi"}]})", "system", "system"},
    {Endpoint::kMessages,
     R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":@}]}]})",
     "messages[0].content[0].content", "messages"},
    {Endpoint::kCountTokens, R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":@}]})",
     "tools[0].input_schema", "tools"},
};

std::string with(const char* body, const std::string& value) {
  std::string s = body;
  s.replace(s.find('@'), 1, value);
  return s;
}

TEST_F(ApiAbuse, DeepNestingIsRefusedNamingWhere) {
  const std::string deep = nested(100000);
  for (const DeepCase& c : kDeepCases) {
    SCOPED_TRACE(c.path);
    const Outcome o = run(c.endpoint, with(c.body, deep));
    ASSERT_FALSE(o.accepted);
    EXPECT_EQ(o.status, 400);
    EXPECT_NE(o.message.find("nests JSON deeper than 128 levels"), std::string::npos) << o.message;
    EXPECT_NE(o.message.find(std::string("at ") + c.path), std::string::npos) << o.message;
    EXPECT_EQ(o.param, c.param);
  }
  // Brackets inside strings are text, not nesting.
  const Outcome s = run(Endpoint::kChat, Json{{"messages", {{{"role", "user"}, {"content", std::string(100000, '[')}}}}});
  EXPECT_NE(s.message.find("context"), std::string::npos) << s.message;  // too long, but not too deep
}

TEST_F(ApiAbuse, NestingUpToTheLimitIsServed) {
  // The body is level 1, tools 2, the tool 3, function 4, parameters 5, properties 6.
  const char* body = R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f",
      "parameters":{"type":"object","properties":{"p":@}}}}]})";
  const Outcome ok = run(Endpoint::kChat, with(body, nested(128 - 6)));
  ASSERT_TRUE(ok.accepted) << ok.message;
  const std::string prompt = test::shared_tokenizer().decode(ok.gen.prompt);
  EXPECT_NE(prompt.find(R"("p": [{"k": [{"k": )"), std::string::npos);
  const Outcome deep = run(Endpoint::kChat, with(body, nested(128 - 5)));
  EXPECT_FALSE(deep.accepted);
  EXPECT_NE(deep.message.find("at tools[0].function.parameters.properties.p[0].k"), std::string::npos) << deep.message;
}

// Every field, every JSON type: a type the field does not take is refused naming the field; a
// type it takes is served, or refused naming the field (a value out of range).
enum Type : unsigned { kNull = 1, kBool = 2, kInt = 4, kFloat = 8, kString = 16, kArray = 32, kObject = 64 };
constexpr unsigned kNumber = kInt | kFloat;

struct FieldCase {
  Endpoint endpoint;
  const char* pointer;  // JSON pointer into the base body
  const char* name;     // what the error message must mention
  unsigned takes;
};

const char* kChatBase = R"({"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"},
  {"role":"assistant","content":"ok","reasoning_content":"r","tool_calls":[{"id":"c1","type":"function",
  "function":{"name":"f","arguments":"{\"a\": 1}"}}]},{"role":"tool","tool_call_id":"c1","content":"res"},
  {"role":"user","content":[{"type":"text","text":"more"}]}],"tools":[{"type":"function","function":{"name":"f",
  "description":"d","parameters":{"type":"object"}}}],"tool_choice":"auto","max_tokens":5,"stream":false,
  "stream_options":{"include_usage":true},"thinking":{"type":"enabled"},"chat_template_kwargs":{"thinking":true},
  "response_format":{"type":"json_object"},"stop":["END"],"temperature":0.5,"top_p":0.9,"seed":1})";
const char* kCompletionsBase = R"({"model":"m","prompt":"Hello","max_tokens":5,"stop":"END","logprobs":1})";
const char* kMessagesBase = R"({"model":"m","max_tokens":5,"system":[{"type":"text","text":"S"}],
  "messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"t",
  "signature":""},{"type":"text","text":"calling"},{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
  {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"res","is_error":false},
  {"type":"text","text":"more"}]}],"tools":[{"name":"f","description":"d","input_schema":{"type":"object"}}],
  "tool_choice":{"type":"auto"},"thinking":{"type":"enabled","budget_tokens":100},"stop_sequences":["END"],
  "temperature":0.5,"top_k":5,"stream":false})";

const FieldCase kFields[] = {
    {Endpoint::kChat, "/model", "model", kNull | kString},
    {Endpoint::kChat, "/messages", "messages", kArray},
    {Endpoint::kChat, "/messages/1", "messages[1]", kObject},
    {Endpoint::kChat, "/messages/1/role", "role", kString},
    {Endpoint::kChat, "/messages/1/content", "content", kString | kArray},
    {Endpoint::kChat, "/messages/2/content", "content", kNull | kString | kArray},
    {Endpoint::kChat, "/messages/2/reasoning_content", "reasoning_content", kNull | kString},
    {Endpoint::kChat, "/messages/2/tool_calls", "tool_calls", kNull | kArray},
    {Endpoint::kChat, "/messages/2/tool_calls/0", "tool_calls[0]", kObject},
    {Endpoint::kChat, "/messages/2/tool_calls/0/id", "id", kNull | kString},
    {Endpoint::kChat, "/messages/2/tool_calls/0/function", "function", kObject},
    {Endpoint::kChat, "/messages/2/tool_calls/0/function/name", "name", kString},
    {Endpoint::kChat, "/messages/2/tool_calls/0/function/arguments", "arguments", kString | kObject},
    {Endpoint::kChat, "/messages/3/tool_call_id", "tool_call_id", kNull | kString},
    {Endpoint::kChat, "/messages/3/content", "content", kString | kArray},
    {Endpoint::kChat, "/messages/4/content/0", "content[0]", kObject},
    {Endpoint::kChat, "/messages/4/content/0/type", "type", kString},
    {Endpoint::kChat, "/messages/4/content/0/text", "text", kString},
    {Endpoint::kChat, "/tools", "tools", kNull | kArray},
    {Endpoint::kChat, "/tools/0", "tools[0]", kObject},
    {Endpoint::kChat, "/tools/0/type", "type", kString},
    {Endpoint::kChat, "/tools/0/function", "function", kObject},
    {Endpoint::kChat, "/tools/0/function/name", "name", kString},
    {Endpoint::kChat, "/tools/0/function/description", "description", kNull | kString},
    {Endpoint::kChat, "/tools/0/function/parameters", "parameters", kNull | kObject},
    {Endpoint::kChat, "/tool_choice", "tool_choice", kNull | kString | kObject},
    {Endpoint::kChat, "/response_format", "response_format", kNull | kObject},
    {Endpoint::kChat, "/response_format/type", "response_format", kString},
    {Endpoint::kChat, "/stream", "stream", kNull | kBool},
    {Endpoint::kChat, "/stream_options", "stream_options", kNull | kObject},
    {Endpoint::kChat, "/stream_options/include_usage", "include_usage", kNull | kBool},
    {Endpoint::kChat, "/thinking", "thinking", kNull | kBool | kObject},
    {Endpoint::kChat, "/thinking/type", "thinking", kString},
    {Endpoint::kChat, "/chat_template_kwargs", "chat_template_kwargs", kNull | kObject},
    {Endpoint::kChat, "/chat_template_kwargs/thinking", "thinking", kNull | kBool},
    {Endpoint::kChat, "/reasoning_effort", "reasoning_effort", kNull | kString},
    {Endpoint::kChat, "/stop", "stop", kNull | kString | kArray},
    {Endpoint::kChat, "/stop/0", "stop", kString},
    {Endpoint::kChat, "/temperature", "temperature", kNull | kNumber},
    {Endpoint::kChat, "/top_p", "top_p", kNull | kNumber},
    {Endpoint::kChat, "/top_k", "top_k", kNull | kInt},
    {Endpoint::kChat, "/min_p", "min_p", kNull | kNumber},
    {Endpoint::kChat, "/presence_penalty", "presence_penalty", kNull | kNumber},
    {Endpoint::kChat, "/frequency_penalty", "frequency_penalty", kNull | kNumber},
    {Endpoint::kChat, "/repetition_penalty", "repetition_penalty", kNull | kNumber},
    {Endpoint::kChat, "/seed", "seed", kNull | kInt},
    {Endpoint::kChat, "/max_tokens", "max_tokens", kNull | kInt},
    {Endpoint::kChat, "/max_completion_tokens", "max_completion_tokens", kNull | kInt},
    {Endpoint::kChat, "/logprobs", "logprobs", kNull | kBool},
    {Endpoint::kChat, "/top_logprobs", "logprobs", kNull | kInt},
    {Endpoint::kChat, "/n", "n", kNull | kInt},
    {Endpoint::kChat, "/dsv4_test_completion", "dsv4_test_completion", kNull},
    {Endpoint::kCompletions, "/prompt", "prompt", kString | kArray},
    {Endpoint::kCompletions, "/max_tokens", "max_tokens", kNull | kInt},
    {Endpoint::kCompletions, "/logprobs", "logprobs", kNull | kInt},
    {Endpoint::kCompletions, "/echo", "echo", kNull | kBool},
    {Endpoint::kCompletions, "/suffix", "suffix", kNull},
    {Endpoint::kCompletions, "/best_of", "best_of", kNull | kInt},
    {Endpoint::kCompletions, "/stream", "stream", kNull | kBool},
    {Endpoint::kCompletions, "/stop", "stop", kNull | kString | kArray},
    {Endpoint::kMessages, "/model", "model", kNull | kString},
    {Endpoint::kMessages, "/max_tokens", "max_tokens", kInt},
    {Endpoint::kMessages, "/system", "system", kNull | kString | kArray},
    {Endpoint::kMessages, "/system/0", "system[0]", kObject},
    {Endpoint::kMessages, "/system/0/text", "system[0]", kString},
    {Endpoint::kMessages, "/messages", "messages", kArray},
    {Endpoint::kMessages, "/messages/0", "messages[0]", kObject},
    {Endpoint::kMessages, "/messages/0/role", "role", kString},
    {Endpoint::kMessages, "/messages/0/content", "content", kString | kArray},
    {Endpoint::kMessages, "/messages/1/content/0/thinking", "thinking", kNull | kString},
    {Endpoint::kMessages, "/messages/1/content/1", "content[1]", kObject},
    {Endpoint::kMessages, "/messages/1/content/1/type", "type", kString},
    {Endpoint::kMessages, "/messages/1/content/1/text", "text", kString},
    {Endpoint::kMessages, "/messages/1/content/2/id", "id", kNull | kString},
    {Endpoint::kMessages, "/messages/1/content/2/name", "name", kString},
    {Endpoint::kMessages, "/messages/1/content/2/input", "input", kObject},
    {Endpoint::kMessages, "/messages/2/content/0/tool_use_id", "tool_use_id", kNull | kString},
    {Endpoint::kMessages, "/messages/2/content/0/content", "content", kNull | kString | kArray},
    {Endpoint::kMessages, "/messages/2/content/0/is_error", "is_error", kNull | kBool},
    {Endpoint::kMessages, "/tools", "tools", kNull | kArray},
    {Endpoint::kMessages, "/tools/0", "tools[0]", kObject},
    {Endpoint::kMessages, "/tools/0/name", "name", kString},
    {Endpoint::kMessages, "/tools/0/description", "description", kNull | kString},
    {Endpoint::kMessages, "/tools/0/input_schema", "input_schema", kNull | kObject},
    {Endpoint::kMessages, "/tools/0/type", "type", kNull | kString},
    {Endpoint::kMessages, "/tool_choice", "tool_choice", kNull | kObject},
    {Endpoint::kMessages, "/tool_choice/type", "tool_choice", kString},
    {Endpoint::kMessages, "/thinking", "thinking", kNull | kObject},
    {Endpoint::kMessages, "/thinking/type", "thinking", kString},
    {Endpoint::kMessages, "/thinking/budget_tokens", "budget_tokens", kNull | kInt},
    {Endpoint::kMessages, "/stop_sequences", "stop_sequences", kNull | kString | kArray},
    {Endpoint::kMessages, "/temperature", "temperature", kNull | kNumber},
    {Endpoint::kMessages, "/top_k", "top_k", kNull | kInt},
    {Endpoint::kMessages, "/stream", "stream", kNull | kBool},
    {Endpoint::kCountTokens, "/messages/0/content", "content", kString | kArray},
    {Endpoint::kCountTokens, "/tools/0/input_schema", "input_schema", kNull | kObject},
};

const char* base_of(Endpoint e) {
  switch (e) {
    case Endpoint::kChat: return kChatBase;
    case Endpoint::kCompletions: return kCompletionsBase;
    default: return kMessagesBase;
  }
}

TEST_F(ApiAbuse, EveryFieldWithEveryTypeIsServedOrNamed) {
  const std::pair<Type, Json> values[] = {{kNull, nullptr},      {kBool, true},          {kInt, 3},
                                          {kFloat, 0.5},         {kString, "s"},         {kArray, Json::array({1})},
                                          {kObject, {{"k", 1}}}};
  for (Endpoint e : {Endpoint::kChat, Endpoint::kCompletions, Endpoint::kMessages}) {
    const Outcome base = run(e, std::string(base_of(e)));
    ASSERT_TRUE(base.accepted) << test::endpoint_name(e) << ": " << base.message;
  }
  int refused = 0, served = 0;
  for (const FieldCase& f : kFields) {
    for (const auto& [type, value] : values) {
      Json body = Json::parse(base_of(f.endpoint));
      body[Json::json_pointer(f.pointer)] = value;
      SCOPED_TRACE(std::string(test::endpoint_name(f.endpoint)) + " " + f.pointer + " = " + value.dump());
      const Outcome o = run(f.endpoint, body);
      if (o.accepted) {
        EXPECT_TRUE(f.takes & type) << "a wrong type was accepted";
        ++served;
      } else {
        EXPECT_EQ(o.status, 400);
        EXPECT_NE(o.message.find(f.name), std::string::npos) << o.message;
        ++refused;
      }
    }
  }
  std::printf("%d refused, %d served\n", refused, served);
}

TEST_F(ApiAbuse, MaxTokensAtTheEdges) {
  auto chat = [&](const std::string& v) {
    return run(Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":)" + v + "}");
  };
  auto messages = [&](const std::string& v) {
    return run(Endpoint::kMessages, R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":)" + v + "}");
  };
  auto completions = [&](const std::string& v) { return run(Endpoint::kCompletions, R"({"prompt":"hi","max_tokens":)" + v + "}"); };
  for (const char* bad : {"0", "-1", "-9223372036854775808", "1.5", "1e300", "18446744073709551616", "\"5\"", "true"}) {
    SCOPED_TRACE(bad);
    for (const Outcome& o : {chat(bad), messages(bad), completions(bad)}) {
      EXPECT_FALSE(o.accepted);
      EXPECT_NE(o.message.find("max_tokens"), std::string::npos) << o.message;
      EXPECT_EQ(o.param, "max_tokens");
    }
  }
  // 2^63 (and 2^64 - 1) are integers beyond int64: as many as fit in the context.
  for (const char* huge : {"9223372036854775807", "9223372036854775808", "18446744073709551615", "5e6"}) {
    SCOPED_TRACE(huge);
    for (const Outcome& o : {chat(huge), messages(huge), completions(huge)}) {
      ASSERT_TRUE(o.accepted) << o.message;
      EXPECT_EQ(o.gen.max_tokens, cfg_.max_context - int64_t(o.gen.prompt.size()));
    }
  }
}

TEST_F(ApiAbuse, OtherNumbersAtTheEdges) {
  auto chat = [&](const std::string& field, const std::string& v) {
    return run(Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],")" + field + "\":" + v + "}");
  };
  for (const char* field : {"temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                            "repetition_penalty", "top_k", "seed", "n", "top_logprobs"}) {
    for (const char* v : {"1e400", "-1e400", "1e308", "-1e308", "18446744073709551616", "-9223372036854775809"}) {
      SCOPED_TRACE(std::string(field) + " = " + v);
      const Outcome o = chat(field, v);
      EXPECT_FALSE(o.accepted);
      EXPECT_NE(o.message.find(field), std::string::npos) << o.message;
    }
  }
  EXPECT_TRUE(chat("seed", "-9223372036854775808").accepted);
  EXPECT_TRUE(chat("seed", "18446744073709551615").accepted);
  // Token ids beyond int64 or the vocabulary.
  for (const char* ids : {"[18446744073709551615]", "[9223372036854775808]", "[-1]", "[1e3]", "[1,[2]]", "[]", "[[]]"}) {
    const Outcome o = run(Endpoint::kCompletions, std::string(R"({"prompt":)") + ids + "}");
    EXPECT_FALSE(o.accepted) << ids;
    EXPECT_NE(o.message.find("prompt"), std::string::npos) << o.message;
  }
}

TEST_F(ApiAbuse, InvalidUtf8IsRefusedNamingTheField) {
  struct Case {
    Endpoint e;
    std::string body;
    const char* where;
  };
  const std::string bad = "x\xff\xfey";
  const Case cases[] = {
      {Endpoint::kChat, R"({"messages":[{"role":"user","content":")" + bad + R"("}]})", "messages[0].content"},
      {Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],"stop":["a",")" + bad + R"("]})", "stop[1]"},
      {Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":")" + bad + R"("}}]})",
       "tools[0].function.name"},
      {Endpoint::kChat, R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{")" + bad + R"(":1}}}]})",
       "tools[0].function.parameters"},
      {Endpoint::kChat, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}", "messages[0].content"},
      {Endpoint::kCompletions, R"({"prompt":")" + bad + R"("})", "prompt"},
      {Endpoint::kMessages, R"({"max_tokens":5,"system":")" + bad + R"(","messages":[{"role":"user","content":"hi"}]})", "system"},
      {Endpoint::kMessages, R"({"max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":")" + bad + R"("}]}]})",
       "messages[0].content[0].text"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.where);
    const Outcome o = run(c.e, c.body);
    ASSERT_FALSE(o.accepted);
    EXPECT_EQ(o.status, 400);
    EXPECT_NE(o.message.find(std::string("at ") + c.where), std::string::npos) << o.message;
    EXPECT_TRUE(o.message.find("UTF-8") != std::string::npos || o.message.find("surrogate") != std::string::npos)
        << o.message;
  }
}

TEST_F(ApiAbuse, HugeArraysAndManyMessages) {
  auto repeat = [](const std::string& item, size_t n) {
    std::string s = "[";
    for (size_t i = 0; i < n; ++i) s += (i ? "," : "") + item;
    return s + "]";
  };
  const std::string hi = R"({"messages":[{"role":"user","content":"hi"}],)";
  struct Case {
    Endpoint e;
    std::string body;
    const char* names;
  };
  const Case cases[] = {
      {Endpoint::kChat, hi + R"("stop":)" + repeat("\"a\"", 1000000) + "}", "stop"},
      {Endpoint::kChat, R"({"messages":)" + repeat("0", 1000000) + "}", "messages[0]"},
      {Endpoint::kChat, hi + R"("tools":)" + repeat("1", 1000000) + "}", "tools[0]"},
      {Endpoint::kChat, R"({"messages":[{"role":"user","content":)" + repeat("7", 1000000) + "}]}", "messages[0].content[0]"},
      {Endpoint::kCompletions, R"({"prompt":)" + repeat("1", 1000000) + "}", "context"},
      {Endpoint::kMessages, R"({"max_tokens":5,"messages":)" + repeat("[]", 1000000) + "}", "messages[0]"},
      {Endpoint::kMessages, R"({"max_tokens":5,"stop_sequences":)" + repeat("\"a\"", 1000000) + R"(,"messages":[{"role":"user","content":"hi"}]})",
       "stop_sequences"},
      {Endpoint::kChat, R"({"messages":)" + repeat(R"({"role":"user","content":"x"})", 10000) + "}", "context"},
      {Endpoint::kMessages, R"({"max_tokens":5,"messages":)" + repeat(R"({"role":"user","content":"x"})", 10000) + "}", "context"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 60));
    const Outcome o = run(c.e, c.body);
    ASSERT_FALSE(o.accepted);
    EXPECT_NE(o.message.find(c.names), std::string::npos) << o.message;
  }
  // With room for them, 10^4 messages are served.
  cfg_.max_context = 1 << 20;
  std::string many = R"({"messages":[)";
  for (int i = 0; i < 10000; ++i) many += cat(i ? "," : "", R"({"role":")", i % 2 ? "assistant" : "user", R"(","content":"m)", i, "\"}");
  const Outcome o = run(Endpoint::kChat, many + "]}");
  ASSERT_TRUE(o.accepted) << o.message;
  EXPECT_NE(test::shared_tokenizer().decode(o.gen.prompt).find("m9999"), std::string::npos);
}

}  // namespace
}  // namespace dsv4::server
