// The API mapping without sockets: OpenAI / Anthropic bodies → prompt ids and GenParams (with
// errors that name the field), and worker output → responses and SSE chunks, with the real V4
// tokenizer from ../shared.
#include <gtest/gtest.h>

#include "server/anthropic_api.h"
#include "server/openai_api.h"
#include "tests/server/api_fixture.h"

namespace dsv4::server {
namespace {

const char* kToolCompletion =
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"location\" "
    "string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

class Api : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::dsv4::test::have_shared()) tok_ = &test::shared_tokenizer();
  }
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    cfg_.max_context = 4096;
  }
  static Json J(const char* s) { return Json::parse(s); }
  // The ApiError a chat body raises ("" when it is accepted).
  std::string chat_error(const std::string& body) {
    try {
      parse_chat_request(parse_body(body), *tok_, cfg_);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      return e.what();
    }
    return "";
  }
  static inline const Tokenizer* tok_ = nullptr;
  ApiConfig cfg_;
};

TEST_F(Api, ChatRequestRendersTheV4Prompt) {
  auto r = parse_chat_request(J(R"({"model":"x","messages":[{"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":7,"temperature":0.5,"seed":3,
      "stop":"END","stream":true,"stream_options":{"include_usage":false}})"), *tok_, cfg_);
  Json msgs = J(R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}])");
  EXPECT_EQ(r.gen.prompt, encode_chat_prompt(*tok_, msgs, nullptr, ChatOptions{}).ids);
  EXPECT_EQ(r.gen.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.5f);
  EXPECT_EQ(r.gen.sampling.seed, 3u);
  EXPECT_EQ(r.gen.stop_strings, std::vector<std::string>{"END"});
  EXPECT_EQ(r.gen.stop_tokens, std::vector<int32_t>{1});
  EXPECT_TRUE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.thinking);
}

TEST_F(Api, ThinkingSwitches) {
  auto thinking = [&](const char* extra) {
    return parse_chat_request(parse_body(std::string(R"({"messages":[{"role":"user","content":"q"}])") + extra + "}"),
                              *tok_, cfg_).thinking;
  };
  EXPECT_FALSE(thinking(""));
  EXPECT_TRUE(thinking(R"(,"thinking":{"type":"enabled"})"));
  EXPECT_FALSE(thinking(R"(,"thinking":{"type":"disabled"},"reasoning_effort":"max")"));
  EXPECT_TRUE(thinking(R"(,"chat_template_kwargs":{"thinking":true})"));
  EXPECT_TRUE(thinking(R"(,"chat_template_kwargs":{"enable_thinking":true})"));
  EXPECT_TRUE(thinking(R"(,"reasoning_effort":"high")"));
  auto r = parse_chat_request(J(R"({"messages":[{"role":"user","content":"q"}],"reasoning_effort":"max"})"), *tok_, cfg_);
  EXPECT_EQ(r.chat.reasoning_effort, "max");
  const std::string text = tok_->decode(r.gen.prompt);
  EXPECT_NE(text.find("<think>"), std::string::npos);
}

TEST_F(Api, BadRequestsNameTheProblem) {
  EXPECT_NE(chat_error("{nope").find("not valid JSON"), std::string::npos);
  EXPECT_NE(chat_error("[1]").find("JSON object"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[]})").find("messages"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"robot","content":"x"}]})").find("unknown role 'robot'"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":5}]})").find("messages[0].content"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})").find("'temperature' must be a number"),
            std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"temperature":3})").find("between 0 and 2"),
            std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})").find("max_tokens"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"n":2})").find("n = 1"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":3})").find("logprobs"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"dsv4_test_completion":"hi"})").find("--test-hooks"),
            std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}}})")
                .find("tool_choice"), std::string::npos);
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})").find("image_url"),
            std::string::npos);
  cfg_.max_context = 8;
  EXPECT_NE(chat_error(R"({"messages":[{"role":"user","content":"a long enough question for eight tokens"}]})").find("context"),
            std::string::npos);
}

TEST_F(Api, ToolCallsComeBackInOpenAiForm) {
  auto r = parse_chat_request(J(R"({"messages":[{"role":"user","content":"Weather in Paris?"}],
      "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]})"), *tok_, cfg_);
  EXPECT_NE(tok_->decode(r.gen.prompt).find("get_weather"), std::string::npos);
  JobOutcome o;
  o.prompt_tokens = 10, o.completion_tokens = 5, o.cached_tokens = 4;
  // Split the completion at every byte boundary class: one event per 3 bytes.
  std::vector<JobEvent> events;
  const std::string c = kToolCompletion;
  for (size_t i = 0; i < c.size(); i += 3) events.push_back(JobEvent{c.substr(i, 3), {}});
  Json resp = chat_response("id", cfg_, r, events, o, *tok_);
  const Json& ch = resp["choices"][0];
  EXPECT_EQ(ch["finish_reason"], "tool_calls");
  EXPECT_TRUE(ch["message"]["content"].is_null());
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(Json::parse(ch["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>()), J(R"({"location":"Paris"})"));
  EXPECT_EQ(resp["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

  ChatStream s("id", cfg_, r, *tok_);
  std::string sse = s.start();
  for (auto& e : events) sse += s.on_event(e);
  sse += s.finish(o);
  EXPECT_EQ(sse.find("DSML"), std::string::npos);
  EXPECT_NE(sse.find(R"("name":"get_weather")"), std::string::npos);
  EXPECT_NE(sse.find(R"("finish_reason":"tool_calls")"), std::string::npos);
  EXPECT_NE(sse.find(R"("usage")"), std::string::npos);
  EXPECT_EQ(sse.substr(sse.size() - 14), "data: [DONE]\n\n");
}

TEST_F(Api, ReasoningIsSeparateAndGarbageFallsBackToContent) {
  auto r = parse_chat_request(J(R"({"messages":[{"role":"user","content":"q"}],"thinking":{"type":"enabled"}})"), *tok_, cfg_);
  JobOutcome o;
  Json resp = chat_response("id", cfg_, r, {JobEvent{"Let me see.</think>Four.", {}}}, o, *tok_);
  EXPECT_EQ(resp["choices"][0]["message"]["reasoning_content"], "Let me see.");
  EXPECT_EQ(resp["choices"][0]["message"]["content"], "Four.");
  EXPECT_EQ(resp["choices"][0]["finish_reason"], "stop");
  // Chat mode with a stray </think>: not V4 markup; the text still reaches the client.
  auto c = parse_chat_request(J(R"({"messages":[{"role":"user","content":"q"}]})"), *tok_, cfg_);
  Json g = chat_response("id", cfg_, c, {JobEvent{"a</think>b", {}}}, o, *tok_);
  EXPECT_EQ(g["choices"][0]["message"]["content"], "a</think>b");  // splitter_test.cc has the whole table
}

TEST_F(Api, CompletionsTakeTextOrIds) {
  auto a = parse_completion_request(J(R"({"prompt":"Hello world","max_tokens":3,"logprobs":2})"), *tok_, cfg_);
  EXPECT_EQ(a.gen.prompt, tok_->encode("Hello world"));
  EXPECT_TRUE(a.gen.logprobs);
  EXPECT_EQ(a.gen.sampling.top_logprobs, 2);
  auto b = parse_completion_request(J(R"({"prompt":[[1,2,3]]})"), *tok_, cfg_);
  EXPECT_EQ(b.gen.prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(b.gen.max_tokens, 16);
  EXPECT_THROW(parse_completion_request(J(R"({"prompt":[1,-2]})"), *tok_, cfg_), ApiError);
  EXPECT_THROW(parse_completion_request(J(R"({"prompt":{}})"), *tok_, cfg_), ApiError);
  EXPECT_THROW(parse_completion_request(J(R"({"prompt":"x","echo":true})"), *tok_, cfg_), ApiError);
}

TEST_F(Api, AnthropicMessagesMapOntoTheSamePrompt) {
  Json body = J(R"({"model":"m","max_tokens":5,"system":"S","tools":[{"name":"get_weather","description":"d",
    "input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"Weather?"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"location":"Paris"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Sunny"}]}]})");
  auto a = parse_messages_request(body, *tok_, cfg_);
  Json oai = J(R"({"max_tokens":5,"messages":[{"role":"system","content":"S"},{"role":"user","content":"Weather?"},
    {"role":"assistant","content":"","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather",
    "arguments":"{\"location\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"toolu_1","content":"Sunny"}],
    "tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object"}}}]})");
  EXPECT_EQ(a.gen.prompt, parse_chat_request(oai, *tok_, cfg_).gen.prompt);
  EXPECT_NE(tok_->decode(a.gen.prompt).find("Sunny"), std::string::npos);
  EXPECT_THROW(parse_messages_request(J(R"({"messages":[{"role":"user","content":"x"}]})"), *tok_, cfg_), ApiError);
  EXPECT_THROW(parse_messages_request(J(R"({"max_tokens":3,"messages":[{"role":"system","content":"x"}]})"), *tok_, cfg_),
               ApiError);

  JobOutcome o;
  Json resp = messages_response("msg", cfg_, a, {JobEvent{kToolCompletion, {}}}, o);
  EXPECT_EQ(resp["stop_reason"], "tool_use");
  EXPECT_EQ(resp["content"][0]["type"], "tool_use");
  EXPECT_EQ(resp["content"][0]["input"], J(R"({"location":"Paris"})"));

  MessagesStream s("msg", cfg_, a);
  std::string sse = s.start(10, 4);
  // message_start splits the prompt like the final usage: 6 prefilled + 4 from the prefix cache.
  EXPECT_NE(sse.find(R"("usage":{"input_tokens":6,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":0})"),
            std::string::npos) << sse;
  sse += s.on_event(JobEvent{"Hello", {}});
  sse += s.on_event(JobEvent{kToolCompletion, {}});
  sse += s.finish(o);
  for (const char* ev : {"message_start", "content_block_start", "text_delta", "content_block_stop", "input_json_delta",
                         "message_delta", "message_stop"})
    EXPECT_NE(sse.find(std::string("event: ") + (std::string(ev).find("delta") != std::string::npos &&
                                                         std::string(ev) != "message_delta" ? "content_block_delta" : ev)),
              std::string::npos) << ev;
  EXPECT_NE(sse.find(R"("stop_reason":"tool_use")"), std::string::npos);
  EXPECT_EQ(sse.find("DSML"), std::string::npos);
}

}  // namespace
}  // namespace dsv4::server
