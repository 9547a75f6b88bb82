// tool_choice / response_format → the request's decoding constraint, through each API's
// request parser: which requests get one, what it admits, its cache, and the 400s.
#include "server/constraint_request.h"
#include "server/responses_api.h"
#include "tests/server/api_fixture.h"

namespace dsv4::server::test {
namespace {

const std::string kBar = "\xEF\xBD\x9C";
const std::string kTools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}}, "required": ["city"]}}}, {"type": "function", "function": {"name": "noop"}}])";

std::string call(const std::string& name, const std::string& params) {
  return "\n\n<" + kBar + "DSML" + kBar + "tool_calls>\n<" + kBar + "DSML" + kBar + "invoke name=\"" + name + "\">\n" + params +
         "</" + kBar + "DSML" + kBar + "invoke>\n</" + kBar + "DSML" + kBar + "tool_calls>";
}
const std::string kCity = "<" + kBar + "DSML" + kBar + "parameter name=\"city\" string=\"true\">Oslo</" + kBar + "DSML" + kBar + "parameter>\n";

ApiConfig config() {
  ApiConfig cfg;
  cfg.max_context = 65536;
  return cfg;
}

bool admits(const GenParams& g, const std::string& text) {
  const auto& d = g.constraint->dfa();
  const int s = d.walk(d.start(), text);
  return s >= 0 && d.accepting(s);
}

TEST(ConstraintApi, ChatToolChoice) {
  const ApiConfig cfg = config();
  const std::string msgs = R"("messages": [{"role": "user", "content": "hi"}], "tools": )" + kTools;
  Outcome o = map_body(Endpoint::kChat, "{" + msgs + R"(, "tool_choice": "required"})", cfg);
  ASSERT_TRUE(o.accepted) << o.message;
  ASSERT_TRUE(o.gen.constraint);
  EXPECT_TRUE(admits(o.gen, call("get_weather", kCity)));
  EXPECT_TRUE(admits(o.gen, call("noop", "")));
  EXPECT_FALSE(admits(o.gen, "Hello"));
  o = map_body(Endpoint::kChat, "{" + msgs + R"(, "tool_choice": {"type": "function", "function": {"name": "noop"}}})", cfg);
  ASSERT_TRUE(o.gen.constraint);
  EXPECT_TRUE(admits(o.gen, call("noop", "")));
  EXPECT_FALSE(admits(o.gen, call("get_weather", kCity)));
  for (const char* free : {R"(, "tool_choice": "auto")", "", R"(, "tool_choice": "none")"})
    EXPECT_FALSE(map_body(Endpoint::kChat, "{" + msgs + free + "}", cfg).gen.constraint) << free;
}

TEST(ConstraintApi, ChatResponseFormatStrictAndBestEffort) {
  const ApiConfig cfg = config();
  auto body = [](const std::string& schema, bool strict, const std::string& extra = "") {
    return R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": )" +
           std::string(strict ? "true" : "false") + R"(, "schema": )" + schema + "}}" + extra + "}";
  };
  const Outcome o = map_body(Endpoint::kChat, body(R"({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})", true), cfg);
  ASSERT_TRUE(o.gen.constraint);
  EXPECT_TRUE(admits(o.gen, R"({"n": 42})"));
  EXPECT_FALSE(admits(o.gen, R"({})"));
  // Same schema, same compiled constraint (cached by its canonical text).
  const int64_t hits = constraint_cache_hits();
  EXPECT_EQ(map_body(Endpoint::kChat, body(R"({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})", true), cfg)
                .gen.constraint,
            o.gen.constraint);
  EXPECT_EQ(constraint_cache_hits(), hits + 1);
  const Outcome bad = map_body(Endpoint::kChat, body(R"({"type": "string", "pattern": "x"})", true), cfg);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.param, "response_format");
  EXPECT_EQ(bad.message,
            "cannot constrain the output: the JSON-schema keyword 'pattern' at response_format.json_schema.schema is not supported");
  const Outcome lenient = map_body(Endpoint::kChat, body(R"({"type": "string", "pattern": "x"})", false), cfg);
  EXPECT_TRUE(lenient.accepted);
  EXPECT_FALSE(lenient.gen.constraint);
  // Thinking: free reasoning first, the document after </think>.
  const Outcome think = map_body(Endpoint::kChat, body(R"({"type": "boolean"})", true, R"(, "thinking": {"type": "enabled"})"), cfg);
  ASSERT_TRUE(think.gen.constraint);
  EXPECT_TRUE(admits(think.gen, "hmm</think>true"));
  EXPECT_FALSE(admits(think.gen, "true"));
}

TEST(ConstraintApi, MessagesToolChoice) {
  const ApiConfig cfg = config();
  const std::string base = R"({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
      "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])";
  Outcome o = map_body(Endpoint::kMessages, base + R"(, "tool_choice": {"type": "any"}})", cfg);
  ASSERT_TRUE(o.gen.constraint);
  EXPECT_TRUE(admits(o.gen, call("get_weather", kCity)));
  EXPECT_FALSE(admits(o.gen, call("get_weather", "")));
  o = map_body(Endpoint::kMessages, base + R"(, "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}})", cfg);
  ASSERT_TRUE(o.gen.constraint);
  const std::string one = call("get_weather", kCity);
  const std::string two = one.substr(0, one.rfind("\n</")) + "\n" + one.substr(one.find("<" + kBar + "DSML" + kBar + "invoke"));
  EXPECT_TRUE(admits(o.gen, one));
  EXPECT_FALSE(admits(o.gen, two));
  o = map_body(Endpoint::kMessages, base + R"(, "tool_choice": {"type": "tool", "name": "other"}})", cfg);
  EXPECT_EQ(o.status, 400);
  EXPECT_EQ(o.message, "'tool_choice' names the tool 'other' that is not in 'tools'");
  for (const char* free : {R"(, "tool_choice": {"type": "auto"}})", R"(, "tool_choice": {"type": "none"}})", "}"})
    EXPECT_FALSE(map_body(Endpoint::kMessages, base + free, cfg).gen.constraint) << free;
  o = map_body(Endpoint::kMessages, R"({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
      "tool_choice": {"type": "any"}})", cfg);
  EXPECT_EQ(o.status, 400);
  EXPECT_EQ(o.message, "'tool_choice' any needs 'tools'");
}

TEST(ConstraintApi, ResponsesToolChoiceAndTextFormat) {
  const ApiConfig cfg = config();
  ResponseStore store;
  auto map = [&](const std::string& fields) {
    return parse_responses_request(Json::parse("{\"input\": \"hi\", " + fields + "}"), shared_tokenizer(), cfg, store).gen;
  };
  const std::string tools = R"("tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}, {"type": "function", "name": "noop"}])";
  GenParams g = map(tools + R"(, "tool_choice": "required")");
  ASSERT_TRUE(g.constraint);
  EXPECT_TRUE(admits(g, call("noop", "")));
  g = map(tools + R"(, "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": false)");
  ASSERT_TRUE(g.constraint);
  EXPECT_TRUE(admits(g, call("get_weather", kCity)));
  EXPECT_FALSE(admits(g, call("noop", "")));
  EXPECT_FALSE(map(tools).constraint);
  g = map(R"("text": {"format": {"type": "json_schema", "name": "r", "strict": true, "schema": {"type": "array",
      "items": {"type": "integer"}, "maxItems": 2}}})");
  ASSERT_TRUE(g.constraint);
  EXPECT_TRUE(admits(g, "[1, 2]"));
  EXPECT_FALSE(admits(g, "[1, 2, 3]"));
  try {
    map(R"("text": {"format": {"type": "json_schema", "name": "r", "strict": true, "schema": {"type": "object",
        "properties": {"a": {"type": "string", "format": "email"}}}}})");
    ADD_FAILURE() << "no 400";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "text");
    EXPECT_STREQ(e.what(), "cannot constrain the output: the JSON-schema keyword 'format' at text.format.schema.properties.a is not supported");
  }
}

}  // namespace
}  // namespace dsv4::server::test
