// Golden chat prompt cases (chat_encode_cases.jsonl, 75): prompt text and prompt ids.
#include "golden_util.h"
#include "core/error.h"
#include "tokenizer/chat.h"

namespace dsv4 {
namespace {

ChatOptions options_of(const nlohmann::ordered_json& o) {
  ChatOptions opt;
  opt.thinking = o.at("thinking_mode") == "thinking";
  opt.drop_thinking = o.value("drop_thinking", true);
  if (o.contains("reasoning_effort") && o["reasoning_effort"].is_string())
    opt.reasoning_effort = o["reasoning_effort"].get<std::string>();
  opt.add_bos = o.value("add_default_bos_token", true);
  if (o.contains("context")) opt.context = o["context"];
  return opt;
}

TEST(ChatGolden, EncodeCases) {
  DSV4_REQUIRE_SHARED();
  const auto cases = test::read_jsonl("chat_encode_cases.jsonl");
  ASSERT_EQ(cases.size(), 75u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const ChatPrompt p = encode_chat_prompt(test::shared_tokenizer(), c["messages"], nullptr, options_of(c["options"]));
    EXPECT_EQ(p.text, c["prompt"].get<std::string>());
    EXPECT_EQ(p.ids, test::ids_of(c["prompt_ids"]));
  }
}

TEST(ChatGolden, SeparateToolsEqualToolsOnSystemMessage) {
  DSV4_REQUIRE_SHARED();
  for (const auto& c : test::read_jsonl("chat_encode_cases.jsonl")) {
    const auto& msgs = c["messages"];
    if (msgs.empty() || msgs[0].value("role", "") != "system" || !msgs[0].contains("tools")) continue;
    SCOPED_TRACE(c["name"].get<std::string>());
    auto stripped = msgs;
    const auto tools = stripped[0]["tools"];
    stripped[0].erase("tools");
    EXPECT_EQ(encode_chat(stripped, tools, options_of(c["options"])), c["prompt"].get<std::string>());
  }
}

TEST(Chat, RejectsBadInput) {
  const nlohmann::ordered_json user = nlohmann::ordered_json::parse(R"([{"role":"user","content":"hi"}])");
  ChatOptions o;
  o.reasoning_effort = "low";
  EXPECT_THROW(encode_chat(user, nullptr, o), Error);
  EXPECT_THROW(encode_chat(nlohmann::ordered_json::parse(R"([{"role":"robot","content":"x"}])"), nullptr, {}), Error);
  EXPECT_THROW(encode_chat(nlohmann::ordered_json::parse(R"([{"role":"developer","content":""}])"), nullptr, {}), Error);
  EXPECT_THROW(encode_chat(nlohmann::ordered_json::parse(R"([{"role":"user","content":"x","task":"nope"}])"), nullptr, {}),
               Error);
  EXPECT_THROW(encode_chat(nlohmann::ordered_json::parse(R"({"role":"user"})"), nullptr, {}), Error);
}

}  // namespace
}  // namespace dsv4
