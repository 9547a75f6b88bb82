// What coding agents send: Claude Code's Messages bodies (system messages inside `messages`,
// adaptive thinking, cache_control, context_management, output_config, metadata) and Codex's
// Responses API bodies (input items, stored conversations) mapped onto V4 prompts, checked
// against hand-written V4 prompt text with the real V4 tokenizer; Responses output items and
// the response.* event sequence.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "server/anthropic_api.h"
#include "server/openai_api.h"
#include "server/responses_api.h"
#include "server/test_script.h"
#include "tests/server/api_fixture.h"

namespace dsv4::server {
namespace {

class AgentApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::dsv4::test::have_shared()) tok_ = &test::shared_tokenizer();
  }
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    cfg_.max_context = 4096;
  }
  static Json J(const std::string& s) { return Json::parse(s); }
  // The prompt text of a Messages body (max_tokens added).
  std::string messages_prompt(const std::string& fields) {
    return tok_->decode(parse_messages_request(J(R"({"max_tokens":8,)" + fields + "}"), *tok_, cfg_).gen.prompt);
  }
  std::string messages_error(const std::string& fields) {
    try {
      parse_messages_request(J(R"({"max_tokens":8,)" + fields + "}"), *tok_, cfg_);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      return e.what();
    }
    return "";
  }
  static inline const Tokenizer* tok_ = nullptr;
  ApiConfig cfg_;
};

// The shape of a Claude Code 2.1.x request (trimmed): the environment arrives as a system
// message after the first user message, and it joins that user turn.
TEST_F(AgentApi, ClaudeCodeRequestIsAccepted) {
  const std::string body = R"("model":"dsv4","stream":true,
    "system":[{"type":"text","text":"billing"},{"type":"text","text":"You are an agent.","cache_control":{"type":"ephemeral"}}],
    "messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>r</system-reminder>"},
                                          {"type":"text","text":"Read note.txt","cache_control":{"type":"ephemeral"}}]},
                {"role":"system","content":[{"type":"text","text":"# Environment","cache_control":{"type":"ephemeral"}}]}],
    "tools":[{"name":"Read","description":"Reads a file","input_schema":{"type":"object"}},
             {"name":"Later","description":"d","input_schema":{"type":"object"},"defer_loading":true}],
    "metadata":{"user_id":"{\"device_id\":\"x\"}"},"thinking":{"type":"adaptive","display":"omitted"},
    "context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},
    "output_config":{"effort":"high"},"some_future_field":{"a":1})";
  const std::string p = messages_prompt(body);
  EXPECT_EQ(p.rfind("<｜begin▁of▁sentence｜>billing\n\nYou are an agent.\n\n## Tools", 0), 0u) << p;
  const std::string tail = "<｜User｜><system-reminder>r</system-reminder>\n\nRead note.txt\n\n# Environment<｜Assistant｜><think>";
  ASSERT_GE(p.size(), tail.size());
  EXPECT_EQ(p.substr(p.size() - tail.size()), tail);
  EXPECT_TRUE(parse_messages_request(J("{\"max_tokens\":8," + body + "}"), *tok_, cfg_).thinking);
  // count_tokens takes the same body (without max_tokens) and counts the same prompt.
  EXPECT_EQ(count_message_tokens(J("{" + body + "}"), *tok_, cfg_), int64_t(tok_->encode(p).size()));
}

TEST_F(AgentApi, SystemMessageBetweenTurnsIsV4SystemText) {
  const std::string p = messages_prompt(R"("messages":[{"role":"user","content":"q1"},{"role":"assistant","content":"a1"},
      {"role":"system","content":"From now on be terse."},{"role":"system","content":"Really."},{"role":"user","content":"q2"}])");
  EXPECT_EQ(p, "<｜begin▁of▁sentence｜><｜User｜>q1<｜Assistant｜></think>a1<｜end▁of▁sentence｜>"
               "From now on be terse.\n\nReally.<｜User｜>q2<｜Assistant｜></think>");
}

TEST_F(AgentApi, SystemMessageInsideAUserTurnJoinsIt) {
  // Leading system messages join the top-level system prompt.
  EXPECT_EQ(messages_prompt(R"("system":"S","messages":[{"role":"system","content":"T"},{"role":"user","content":"q"}])"),
            "<｜begin▁of▁sentence｜>S\n\nT<｜User｜>q<｜Assistant｜></think>");
  // After tool results: the same user turn, after the results.
  EXPECT_EQ(messages_prompt(R"("messages":[{"role":"user","content":"q"},
      {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},
      {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"R"}]},
      {"role":"system","content":"S"}])"),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\n"
            "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜><｜User｜><tool_result>R</tool_result>\n\nS"
            "<｜Assistant｜></think>");
  // Last, after an assistant message: a user turn of its own, so the prompt still ends ready
  // for the assistant.
  EXPECT_EQ(messages_prompt(R"("messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"},
      {"role":"system","content":"S"}])"),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>a<｜end▁of▁sentence｜><｜User｜>S<｜Assistant｜></think>");
}

TEST_F(AgentApi, MessagesErrorsNameTheProblem) {
  EXPECT_NE(messages_error(R"("messages":[{"role":"system","content":"x"}])").find("not only system"), std::string::npos);
  EXPECT_NE(messages_error(R"("messages":[{"role":"robot","content":"x"}])").find("unknown role 'robot' (use user, assistant or system)"),
            std::string::npos);
  EXPECT_NE(messages_error(R"("messages":[{"role":"user","content":"q"},{"role":"system","content":[{"type":"image"}]}])")
                .find("messages[1].content[0] must be a text block"), std::string::npos);
  EXPECT_NE(messages_error(R"("messages":[{"role":"user","content":"q"}],"thinking":{"type":"sometimes"})")
                .find("enabled, adaptive or disabled, got 'sometimes'"), std::string::npos);
  EXPECT_NE(messages_error(R"("messages":[{"role":"user","content":"q"}],"thinking":{"type":"adaptive","display":3})")
                .find("'display' must be a string"), std::string::npos);
  EXPECT_NE(messages_error(R"("messages":[{"role":"user","content":"q"}],"output_config":"max")").find("'output_config' must be an object"),
            std::string::npos);
}

// thinking.display "omitted": the response's thinking block has no text, and its signature
// carries it (every length mod 3, multi-byte UTF-8, quotes): sent back in a tool loop (tools
// present, so V4 keeps the reasoning) it renders the same prompt as the text itself.
TEST_F(AgentApi, OmittedThinkingTravelsInTheSignature) {
  const Json req_body = J(R"({"max_tokens":8,"messages":[{"role":"user","content":"q"}],
                              "thinking":{"type":"adaptive","display":"omitted"}})");
  const MessagesRequest req = parse_messages_request(req_body, *tok_, cfg_);
  ASSERT_TRUE(req.omit_thinking);
  for (const std::string plain : {"a", "ab", "abc", "abcd", "Plan: ü → 日本", "x\n\"y\""}) {
    const Json resp = messages_response("m", cfg_, req, {JobEvent{plain + "</think>answer", {}}}, JobOutcome{});
    ASSERT_EQ(resp["content"][0]["type"], "thinking");
    EXPECT_EQ(resp["content"][0]["thinking"], "");
    const std::string sig = resp["content"][0]["signature"];
    EXPECT_EQ(sig.find(plain), std::string::npos) << "the text is not in the signature as it is";
    auto turn = [&](const Json& block) {
      Json body = J(R"({"messages":[{"role":"user","content":"q"}],"tools":[{"name":"Read","input_schema":{"type":"object"}}],
                        "thinking":{"type":"enabled"}})");
      body["messages"].push_back(Json{{"role", "assistant"}, {"content", Json::array({block, Json{{"type", "text"}, {"text", "answer"}}})}});
      body["messages"].push_back(Json{{"role", "user"}, {"content", "next"}});
      return messages_prompt(body.dump().substr(1, body.dump().size() - 2));
    };
    const std::string full = turn(Json{{"type", "thinking"}, {"thinking", plain}, {"signature", ""}});
    EXPECT_NE(full.find(plain + "</think>answer"), std::string::npos) << full;
    EXPECT_EQ(turn(resp["content"][0]), full) << plain;
  }
}

TEST_F(AgentApi, ThinkingTypesAndEffort) {
  auto thinking = [&](const std::string& t) {
    return parse_messages_request(J(R"({"max_tokens":8,"messages":[{"role":"user","content":"q"}],"thinking":)" + t + "}"),
                                  *tok_, cfg_).thinking;
  };
  EXPECT_TRUE(thinking(R"({"type":"enabled","budget_tokens":1024})"));
  EXPECT_TRUE(thinking(R"({"type":"adaptive"})"));
  EXPECT_TRUE(thinking(R"({"type":"adaptive","display":"summarized"})"));
  EXPECT_FALSE(thinking(R"({"type":"disabled"})"));
  const std::string max = messages_prompt(R"("messages":[{"role":"user","content":"q"}],"thinking":{"type":"adaptive"},
      "output_config":{"effort":"max"})");
  EXPECT_EQ(max.rfind("<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum", 0), 0u);
  // Without thinking the effort changes nothing.
  EXPECT_EQ(messages_prompt(R"("messages":[{"role":"user","content":"q"}],"output_config":{"effort":"max"})"),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>");
}

// ---- Responses API ----

const char* kCall =
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"location\" "
    "string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
const char* kTools = R"("tools":[{"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object"},"strict":false}])";

class Responses : public AgentApi {
 protected:
  ResponsesRequest parse(const std::string& fields) {
    return parse_responses_request(J("{" + fields + "}"), *tok_, cfg_, store_);
  }
  std::string prompt(const std::string& fields) { return tok_->decode(parse(fields).gen.prompt); }
  std::string error(const std::string& fields) {
    try {
      parse(fields);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      return e.what();
    }
    return "";
  }
  // Runs `completion` through a ResponsesStream; returns the SSE text.
  std::string run(ResponsesStream& s, const std::string& completion, Finish finish = Finish::kStop) {
    std::string sse = s.start();
    for (size_t i = 0; i < completion.size(); i += 5) sse += s.on_event(JobEvent{completion.substr(i, 5), {}});
    JobOutcome o;
    o.finish = finish, o.prompt_tokens = 30, o.cached_tokens = 12, o.completion_tokens = 9;
    return sse + s.finish(o);
  }
  ResponseStore store_;
};

TEST_F(Responses, InstructionsAndMessageItems) {
  EXPECT_EQ(prompt(R"("model":"m","instructions":"Be brief.","input":[{"role":"developer","content":"Dev rules."},
      {"type":"message","role":"user","content":[{"type":"input_text","text":"Hi"}]}],
      "prompt_cache_key":"k","include":["reasoning.encrypted_content"],"store":false,"parallel_tool_calls":true,
      "text":{"verbosity":"low"},"metadata":{"a":"b"},"future_field":1)"),
            "<｜begin▁of▁sentence｜>Be brief.\n\nDev rules.<｜User｜>Hi<｜Assistant｜></think>");
  EXPECT_EQ(prompt(R"("input":"Hi","reasoning":{"effort":"minimal"})"), "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>");
  EXPECT_EQ(prompt(R"("input":"Hi","reasoning":{"effort":"medium","summary":"auto"})"),
            "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>");
  EXPECT_EQ(prompt(R"("input":"Hi","reasoning":{"effort":"xhigh"})").rfind("<｜begin▁of▁sentence｜>Reasoning Effort: Absolute", 0), 0u);
  auto r = parse(R"("input":"Hi","max_output_tokens":7,"temperature":0.5,"top_p":0.9)");
  EXPECT_EQ(r.gen.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 0.9f);
  EXPECT_TRUE(r.store);
  EXPECT_FALSE(r.stream);
  // tool_choice none hides the tools.
  EXPECT_EQ(prompt(std::string(R"("input":"Hi","tool_choice":"none",)") + kTools),
            "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>");
}

// Codex 0.171 offers function tools, a `namespace` group of function tools and web_search.
TEST_F(Responses, CodexToolListIsFlattenedAndHostedToolsLeftOut) {
  const std::string codex = prompt(R"("input":"Hi","tools":[{"type":"function","name":"exec_command","parameters":{"type":"object"}},
      {"type":"namespace","name":"multi_agent_v1","description":"d","tools":[{"type":"function","name":"close_agent","strict":false}]},
      {"type":"web_search","external_web_access":false}])");
  const std::string plain = prompt(R"("input":"Hi","tools":[{"type":"function","name":"exec_command","parameters":{"type":"object"}},
      {"type":"function","name":"close_agent"}])");
  EXPECT_EQ(codex, plain);
  EXPECT_NE(plain.find(R"({"name": "close_agent", "parameters": {"type": "object"}})"), std::string::npos) << plain;
  EXPECT_EQ(prompt(R"("input":"Hi","tools":[{"type":"web_search_2025_08_26"}])"), "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>");
}

TEST_F(Responses, FunctionCallRoundTripContinuesThePrompt) {
  const std::string first_body = std::string(R"("input":"Weather in Paris?","reasoning":{"effort":"high"},)") + kTools;
  auto first = parse(first_body);
  ResponsesStream s("resp_1", cfg_, first, *tok_);
  run(s, std::string("Checking.") + "</think>" + kCall);
  const Json& out = s.response()["output"];
  ASSERT_EQ(out.size(), 2u) << s.response().dump();
  EXPECT_EQ(out[0]["type"], "reasoning");
  EXPECT_EQ(out[0]["content"][0], J(R"({"type":"reasoning_text","text":"Checking."})"));
  EXPECT_EQ(out[1]["type"], "function_call");
  EXPECT_EQ(out[1]["name"], "get_weather");
  EXPECT_EQ(J(out[1]["arguments"].get<std::string>()), J(R"({"location":"Paris"})"));
  EXPECT_EQ(s.response()["status"], "completed");
  EXPECT_EQ(s.response()["usage"]["input_tokens_details"]["cached_tokens"], 12);
  EXPECT_EQ(s.response()["usage"]["output_tokens"], 9);
  EXPECT_EQ(s.response()["usage"]["output_tokens_details"]["reasoning_tokens"], int64_t(tok_->encode("Checking.").size()));
  store_.put("resp_1", s.conversation());

  // Continued from the store: the new prompt is the old one, the generated text, then the result.
  const std::string call_id = out[1]["call_id"];
  const std::string output_item = R"({"type":"function_call_output","call_id":")" + call_id + R"(","output":"Sunny"})";
  const std::string second = prompt(R"("previous_response_id":"resp_1","reasoning":{"effort":"high"},"input":[)" +
                                    output_item + "]," + kTools);
  const std::string expected = tok_->decode(first.gen.prompt) + "Checking.</think>" + kCall +
                               "<｜end▁of▁sentence｜><｜User｜><tool_result>Sunny</tool_result><｜Assistant｜><think>";
  EXPECT_EQ(second, expected);
  // The same conversation sent whole (store: false style) renders the same prompt.
  const std::string items = R"([{"role":"user","content":"Weather in Paris?"},
      {"type":"reasoning","id":"rs_1","summary":[],"content":[{"type":"reasoning_text","text":"Checking."}]},
      {"type":"function_call","call_id":")" + call_id + R"(","name":"get_weather","arguments":)" +
                            Json(out[1]["arguments"]).dump() + "}," + output_item + "]";
  EXPECT_EQ(prompt(R"("reasoning":{"effort":"high"},"input":)" + items + "," + kTools), expected);
  EXPECT_NE(error(R"("previous_response_id":"resp_gone","input":"x")").find("previous response 'resp_gone' is not stored"),
            std::string::npos);
}

TEST_F(Responses, StreamEventSequence) {
  auto r = parse(R"("input":"Hi","stream":true)");
  ResponsesStream s("resp_2", cfg_, r, *tok_);
  const std::string sse = run(s, "Hello there, friend.");
  std::vector<std::string> types;
  int64_t last_seq = -1;
  for (size_t p = 0; (p = sse.find("data: ", p)) != std::string::npos; p += 6) {
    const Json e = Json::parse(sse.substr(p + 6, sse.find('\n', p) - p - 6));
    if (types.empty() || types.back() != e["type"]) types.push_back(e["type"]);
    EXPECT_EQ(e["sequence_number"], last_seq + 1);
    last_seq = e["sequence_number"];
  }
  EXPECT_EQ(types, (std::vector<std::string>{"response.created", "response.in_progress", "response.output_item.added",
                                             "response.content_part.added", "response.output_text.delta",
                                             "response.output_text.done", "response.content_part.done",
                                             "response.output_item.done", "response.completed"}));
  EXPECT_EQ(s.response()["output"][0]["content"][0]["text"], "Hello there, friend.");
  EXPECT_EQ(s.conversation().back(), J(R"({"role":"assistant","content":"Hello there, friend."})"));

  ResponsesStream cut("resp_3", cfg_, r, *tok_);
  const std::string sse2 = run(cut, "Hello", Finish::kLength);
  EXPECT_NE(sse2.find("event: response.incomplete\n"), std::string::npos);
  EXPECT_EQ(cut.response()["incomplete_details"], J(R"({"reason":"max_output_tokens"})"));
}

TEST_F(Responses, BadRequestsNameTheProblem) {
  EXPECT_NE(error(R"("model":"m")").find("'input' is required"), std::string::npos);
  EXPECT_NE(error(R"("input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}])")
                .find("input[0].content[0]: content type 'input_image' is not supported"), std::string::npos);
  EXPECT_NE(error(R"("input":[{"type":"item_reference","id":"x"}])").find("input item type 'item_reference'"), std::string::npos);
  EXPECT_NE(error(R"("input":[{"role":"robot","content":"x"}])").find("unknown role 'robot'"), std::string::npos);
  EXPECT_NE(error(R"("input":[{"type":"function_call","name":"f","arguments":"{}"}])").find("input[0].call_id must be a string"),
            std::string::npos);
  EXPECT_NE(error(R"("input":"x","tools":[{"type":"custom","name":"apply_patch"}])").find("tools[0]: tool type 'custom' is not supported"),
            std::string::npos);
  EXPECT_NE(error(R"("input":"x","tools":[{"type":"namespace","tools":[{"type":"function"}]}])").find("tools[0].tools[0].name"),
            std::string::npos);
  EXPECT_NE(error(R"("input":"x","reasoning":{"effort":"huge"})").find("got 'huge'"), std::string::npos);
  EXPECT_NE(error(R"("input":"x","tool_choice":"sometimes")").find("'tool_choice'"), std::string::npos);
  EXPECT_NE(error(R"("input":"x","max_output_tokens":0)").find("max_output_tokens"), std::string::npos);
  EXPECT_NE(error(R"("input":[{"role":"system","content":"only"}])").find("no user or assistant message"), std::string::npos);
  EXPECT_NE(error(R"("input":"x","background":true)").find("background"), std::string::npos);
}

TEST(ResponseStore, KeepsTheNewestWithinBounds) {
  ResponseStore by_count(2);
  for (const char* id : {"a", "b", "c"}) by_count.put(id, Json::array({Json{{"role", "user"}, {"content", id}}}));
  EXPECT_FALSE(by_count.get("a"));
  ASSERT_TRUE(by_count.get("c"));
  EXPECT_EQ((*by_count.get("c"))[0]["content"], "c");
  EXPECT_EQ(by_count.size(), 2u);
  ResponseStore by_bytes(100, 80);  // each entry is 31 bytes of JSON
  for (const char* id : {"a", "b", "c"}) by_bytes.put(id, Json::array({Json{{"role", "user"}, {"content", id}}}));
  EXPECT_EQ(by_bytes.size(), 2u);
  EXPECT_FALSE(by_bytes.get("a"));
}

TEST(ScriptedCompletions, ServedInOrderToTheRequestsTheyMatch) {
  const std::string path = testing::TempDir() + "dsv4_script_test.json";
  std::ofstream(path) << R"(["first", {"match": "title", "completion": "A title"}, "<｜DSML｜second"])";
  auto s = ScriptedCompletions::load(path);
  EXPECT_EQ(s.next("main prompt"), std::optional<std::string>("first"));
  EXPECT_EQ(s.next("main prompt"), std::optional<std::string>("<｜DSML｜second"));
  EXPECT_EQ(s.next("main prompt"), std::nullopt);
  EXPECT_EQ(s.next("make a title"), std::optional<std::string>("A title"));
  EXPECT_EQ(s.next("make a title"), std::nullopt);
  std::ofstream(path) << R"({"a": 1})";
  EXPECT_THROW(ScriptedCompletions::load(path), Error);
  std::ofstream(path) << R"([{"match": "x"}])";
  EXPECT_THROW(ScriptedCompletions::load(path), Error);
  std::remove(path.c_str());
  EXPECT_THROW(ScriptedCompletions::load(path), Error);
}

}  // namespace
}  // namespace dsv4::server
