// What coding agents send: Claude Code's Messages bodies (system messages inside `messages`,
// adaptive thinking, cache_control, context_management, output_config, metadata) mapped onto
// V4 prompts, checked against hand-written V4 prompt text, with the real V4 tokenizer.
#include <gtest/gtest.h>

#include "server/anthropic_api.h"
#include "tests/test_util.h"

namespace dsv4::server {
namespace {

class AgentApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::have_shared()) tok_ = new Tokenizer(Tokenizer::load(test::shared_dir() + "/tokenizer/tokenizer.json"));
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
  static inline Tokenizer* tok_ = nullptr;
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

}  // namespace
}  // namespace dsv4::server
