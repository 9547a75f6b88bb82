// Golden completion-parse cases (chat_parse_cases.jsonl, 30 incl. 10 expected errors), through
// the one-shot parser and through the incremental parser under several chunkings.
#include <random>

#include "golden_util.h"
#include "tokenizer/completion_parser.h"
#include "tokenizer/stream_decoder.h"

namespace dsv4 {
namespace {

ParsedMessage message_of(const nlohmann::ordered_json& m) {
  ParsedMessage p;
  p.content = m.at("content").get<std::string>();
  p.reasoning_content = m.at("reasoning_content").get<std::string>();
  for (const auto& c : m.at("tool_calls"))
    p.tool_calls.push_back({c["function"]["name"].get<std::string>(), c["function"]["arguments"].get<std::string>()});
  return p;
}

// Rebuilds a message from events, checking their grammar on the way.
ParsedMessage message_from_events(const std::vector<ParseEvent>& evs, bool complete = true) {
  ParsedMessage m;
  bool open = false;
  for (const auto& e : evs) {
    switch (e.kind) {
      case ParseEvent::Kind::Reasoning:
        EXPECT_FALSE(open);
        m.reasoning_content += e.text;
        break;
      case ParseEvent::Kind::Content:
        EXPECT_FALSE(open);
        m.content += e.text;
        break;
      case ParseEvent::Kind::ToolCallBegin:
        EXPECT_FALSE(open);
        open = true;
        m.tool_calls.push_back({e.text, ""});
        break;
      case ParseEvent::Kind::ToolCallArgs:
        EXPECT_TRUE(open);
        if (!m.tool_calls.empty()) m.tool_calls.back().arguments += e.text;
        break;
      case ParseEvent::Kind::ToolCallEnd:
        EXPECT_TRUE(open);
        open = false;
        break;
    }
    if (e.kind == ParseEvent::Kind::Reasoning || e.kind == ParseEvent::Kind::Content) {
      for (const char* markup : {"｜DSML｜", "<｜end▁of▁sentence｜>", "</think>", "<think>"})
        EXPECT_EQ(e.text.find(markup), std::string::npos) << "markup leaked into text: " << e.text;
    }
  }
  if (complete) {
    EXPECT_FALSE(open);
  }
  return m;
}

struct StreamOutcome {
  std::vector<ParseEvent> events;
  std::optional<CompletionParseError> error;
  ParsedMessage result;
};

StreamOutcome stream_parse(const std::string& text, bool thinking, const std::vector<std::size_t>& cuts) {
  StreamOutcome o;
  IncrementalParser p(thinking);
  std::size_t prev = 0;
  for (std::size_t c : cuts) {
    auto ev = p.feed(std::string_view(text).substr(prev, c - prev));
    o.events.insert(o.events.end(), ev.begin(), ev.end());
    prev = c;
  }
  auto ev = p.feed(std::string_view(text).substr(prev));
  o.events.insert(o.events.end(), ev.begin(), ev.end());
  try {
    ev = p.finish();
    o.events.insert(o.events.end(), ev.begin(), ev.end());
    o.result = p.result();
  } catch (const CompletionParseError& e) {
    o.error = e;
  }
  return o;
}

std::vector<std::vector<std::size_t>> cut_sets(const std::string& text, std::mt19937& rng) {
  std::vector<std::vector<std::size_t>> sets;
  sets.push_back({});  // whole text at once
  std::vector<std::size_t> bytes, chars;
  for (std::size_t i = 1; i < text.size(); ++i) {
    bytes.push_back(i);
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) chars.push_back(i);
  }
  sets.push_back(bytes);
  sets.push_back(chars);
  for (int r = 0; r < 5; ++r) {
    std::vector<std::size_t> cuts;
    std::size_t i = 0;
    while (true) {
      i += 1 + rng() % 9;
      if (i >= text.size()) break;
      cuts.push_back(i);
    }
    sets.push_back(cuts);
  }
  return sets;
}

TEST(ParseGolden, OneShotAndIncremental) {
  DSV4_REQUIRE_SHARED();
  const auto cases = test::read_jsonl("chat_parse_cases.jsonl");
  ASSERT_EQ(cases.size(), 30u);
  std::mt19937 rng(1234);
  int errors = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto text = c["completion"].get<std::string>();
    const bool thinking = c["options"]["thinking_mode"] == "thinking";
    if (c.contains("error")) {
      ++errors;
      const auto type = c["error"]["type"].get<std::string>();
      const auto msg = c["error"]["message"].get<std::string>();
      try {
        parse_completion(text, thinking);
        ADD_FAILURE() << "expected an error";
      } catch (const CompletionParseError& e) {
        EXPECT_EQ(e.type(), type);
        EXPECT_EQ(e.message(), msg);
      }
      for (const auto& cuts : cut_sets(text, rng)) {
        const auto o = stream_parse(text, thinking, cuts);
        ASSERT_TRUE(o.error.has_value());
        EXPECT_EQ(o.error->type(), type);
        EXPECT_EQ(o.error->message(), msg);
        message_from_events(o.events, false);
      }
      continue;
    }
    const ParsedMessage want = message_of(c["message"]);
    const ParsedMessage got = parse_completion(text, thinking);
    EXPECT_EQ(got, want);
    EXPECT_EQ(got.to_json().dump(), c["message"].dump());
    for (const auto& cuts : cut_sets(text, rng)) {
      const auto o = stream_parse(text, thinking, cuts);
      ASSERT_FALSE(o.error.has_value()) << o.error->what();
      EXPECT_EQ(o.result, want);
      EXPECT_EQ(message_from_events(o.events), want) << "cuts: " << cuts.size();
    }
  }
  EXPECT_EQ(errors, 10);
}

// Token-by-token streaming as a server does it: ids → StreamDecoder → IncrementalParser.
TEST(ParseGolden, FromCompletionIdsThroughStreamDecoder) {
  DSV4_REQUIRE_SHARED();
  for (const auto& c : test::read_jsonl("chat_parse_cases.jsonl")) {
    if (c.contains("error")) continue;
    SCOPED_TRACE(c["name"].get<std::string>());
    const bool thinking = c["options"]["thinking_mode"] == "thinking";
    const auto ids = test::ids_of(c["completion_ids"]);
    EXPECT_EQ(test::shared_tokenizer().decode(ids), c["completion"].get<std::string>());
    StreamDecoder dec(test::shared_tokenizer());
    IncrementalParser p(thinking);
    std::vector<ParseEvent> evs;
    for (int32_t id : ids) {
      auto ev = p.feed(dec.push(id));
      evs.insert(evs.end(), ev.begin(), ev.end());
    }
    auto ev = p.feed(dec.finish());
    evs.insert(evs.end(), ev.begin(), ev.end());
    ev = p.finish();
    evs.insert(evs.end(), ev.begin(), ev.end());
    EXPECT_EQ(message_from_events(evs), message_of(c["message"]));
  }
}

TEST(IncrementalParser, ReportsToolCallBeforeStreamEnds) {
  IncrementalParser p(false);
  std::vector<ParseEvent> evs;
  for (std::string_view chunk :
       {"Sure.", "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n", "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n",
        "</｜DSML｜invoke>\n"}) {
    auto ev = p.feed(chunk);
    evs.insert(evs.end(), ev.begin(), ev.end());
  }
  const std::vector<ParseEvent> want = {{ParseEvent::Kind::Content, "Sure."},
                                        {ParseEvent::Kind::ToolCallBegin, "f"},
                                        {ParseEvent::Kind::ToolCallArgs, "{"},
                                        {ParseEvent::Kind::ToolCallArgs, "\"a\": \"x\""},
                                        {ParseEvent::Kind::ToolCallArgs, "}"},
                                        {ParseEvent::Kind::ToolCallEnd, ""}};
  EXPECT_EQ(evs, want);
  EXPECT_FALSE(p.failed());
  auto ev = p.feed("</｜DSML｜tool_calls><｜end▁of▁sentence｜>");
  EXPECT_TRUE(ev.empty());
  EXPECT_TRUE(p.finish().empty());
  EXPECT_EQ(p.result().tool_calls.size(), 1u);
}

TEST(IncrementalParser, FailsEarlyOnMarkupInContent) {
  IncrementalParser p(false);
  auto ev = p.feed("answer<｜DSML｜invoke");
  EXPECT_TRUE(p.failed());
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].text, "answer<");  // the `<` is content for the reference too
  EXPECT_THROW(p.finish(), CompletionParseError);
}

// A tool call is reported once its invoke element has closed: markup that turns out invalid
// later never leaves half a call behind.
TEST(IncrementalParser, ReportsACallOnlyWhenItsInvokeCloses) {
  IncrementalParser p(false);
  auto ev = p.feed("Sure.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
                   "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n");
  EXPECT_EQ(ev, (std::vector<ParseEvent>{{ParseEvent::Kind::Content, "Sure."}}));
  EXPECT_TRUE(p.result().tool_calls.empty());
  EXPECT_EQ(p.unreleased(), "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
                            "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n");
  ev = p.feed("<｜DSML｜parameter name=\"a\" string=\"true\">y</｜DSML｜parameter>\n");
  EXPECT_TRUE(p.failed());  // a duplicate parameter
  EXPECT_TRUE(ev.empty());
  EXPECT_TRUE(p.result().tool_calls.empty());
  EXPECT_EQ(p.unreleased().substr(0, 3), "\n\n<");
}

// unreleased(): the fed text no event stands for yet, whatever the chunking.
TEST(IncrementalParser, UnreleasedIsWhatNoEventStandsFor) {
  struct Case {
    bool thinking;
    std::string text, unreleased;
  };
  const Case cases[] = {
      {false, "abc", ""},
      {false, "abc<", "<"},
      {false, "abc\n\n", "\n\n"},
      {false, "a</think>b", "</think>b"},
      {false, "a<｜end▁of▁sentence｜>b", "<｜end▁of▁sentence｜>b"},
      {false, "a\xE4\xBD", "\xE4\xBD"},
      {true, "r</think>c</th", "</th"},
      {true, "r<think>", "<think>"},
      {true, "r\n\n<｜DSML｜tool_calls>", "\n\n<｜DSML｜tool_calls>"},
  };
  for (const Case& c : cases) {
    for (std::size_t step : {std::size_t(1), std::size_t(3), c.text.size()}) {
      SCOPED_TRACE(c.text + " in chunks of " + std::to_string(step));
      IncrementalParser p(c.thinking);
      std::string reasoning, content;
      for (std::size_t i = 0; i < c.text.size(); i += step)
        for (const ParseEvent& e : p.feed(std::string_view(c.text).substr(i, step)))
          (e.kind == ParseEvent::Kind::Reasoning ? reasoning : content) += e.text;
      EXPECT_EQ(p.unreleased(), c.unreleased);
      // Text events and unreleased text make up the input, with the </think> the parser passed.
      const bool passed_think_end = c.thinking && !p.in_reasoning() && !p.failed();
      EXPECT_EQ(reasoning + (passed_think_end ? "</think>" : "") + content + std::string(p.unreleased()), c.text);
    }
  }
}

}  // namespace
}  // namespace dsv4
