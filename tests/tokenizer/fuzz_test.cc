// Seeded fuzz loops, a few seconds in all: random bytes and random Unicode through the
// tokenizer (round trip), random id streams through the stream decoder, garbage through both
// completion parsers, random chat JSON through the prompt encoder. Nothing may crash; errors
// must be dsv4::Error.
#include <random>

#include "core/error.h"
#include "golden_util.h"
#include "tokenizer/chat.h"
#include "tokenizer/completion_parser.h"
#include "tokenizer/pyjson.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/utf8.h"

namespace dsv4 {
namespace {

using Rng = std::mt19937_64;

std::string show(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string random_unicode(Rng& rng, std::size_t max_chars) {
  static const std::vector<std::string> frags = {
      " ", "  ", "\n", "\r\n", "\t", "\xC2\x85", "\xEF\xBB\xBF", "\xC2\xA0", "\xE3\x80\x80", "\xE1\xA0\x8E",
      "a", "Hello", " world", "'s", ".com", "123", "4567", "\xEF\xBC\x91", "\xE2\x85\xA7", "\xE4\xBD\xA0\xE5\xA5\xBD",
      "\xE3\x81\x82", "\xF0\x9F\x98\x80", "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "\xCC\x81", "<", "<think>", "</think>",
      "<｜User｜>", "｜DSML｜", "<｜/table>｜", "<|place_holder_mm_span_0021|>", "<｜end▁of▁sentence｜>", "Ġ", "▁", "!!",
      "{\"a\": 1}", "\x00", "\x7F", "\xEF\xBF\xBF", "\xF4\x8F\xBF\xBF", "\xD8\xA7\xD9\x84", "\xE0\xA4\xB9\xE0\xA4\xBF"};
  std::string s;
  const std::size_t n = rng() % (max_chars + 1);
  for (std::size_t i = 0; i < n; ++i) {
    if (rng() % 3 == 0) {
      // a random code point (no surrogates)
      char32_t cp;
      do {
        cp = static_cast<char32_t>(rng() % 4 == 0 ? rng() % 0x110000 : rng() % 0x3000);
      } while (cp >= 0xD800 && cp <= 0xDFFF);
      utf8::append(s, cp);
    } else {
      s += frags[rng() % frags.size()];
    }
  }
  return s;
}

TEST(Fuzz, TokenizerRoundTrip) {
  DSV4_REQUIRE_SHARED();
  const Tokenizer& tok = test::shared_tokenizer();
  Rng rng(42);
  for (int it = 0; it < 3000; ++it) {
    const std::string s = random_unicode(rng, 60);
    ASSERT_TRUE(utf8::is_valid(s));
    const auto ids = tok.encode(s);
    ASSERT_EQ(tok.decode(ids), s) << nlohmann::json(s).dump();
  }
  // Long runs stay fast (the merge loop must not be quadratic).
  const std::string long_run(20000, 'a');
  EXPECT_EQ(tok.decode(tok.encode(long_run)), long_run);
  const std::string spaces(10000, ' ');
  EXPECT_EQ(tok.decode(tok.encode(spaces + "x" + spaces)), spaces + "x" + spaces);
}

TEST(Fuzz, RandomBytes) {
  DSV4_REQUIRE_SHARED();
  const Tokenizer& tok = test::shared_tokenizer();
  Rng rng(7);
  for (int it = 0; it < 3000; ++it) {
    std::string s(rng() % 80, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    const auto ids = tok.encode(s);
    EXPECT_EQ(tok.decode(ids), utf8::lossy(s));
  }
}

TEST(Fuzz, StreamDecoderMatchesDecode) {
  DSV4_REQUIRE_SHARED();
  const Tokenizer& tok = test::shared_tokenizer();
  Rng rng(11);
  for (int it = 0; it < 3000; ++it) {
    std::vector<int32_t> ids(rng() % 30);
    for (auto& id : ids) {
      const auto r = rng() % 10;
      id = r < 6 ? static_cast<int32_t>(3 + rng() % 256)  // single bytes: partial UTF-8
           : r < 8 ? static_cast<int32_t>(rng() % 129280)
           : r < 9 ? static_cast<int32_t>(rng() % 3)
                   : static_cast<int32_t>(rng() % 300000) - 1000;  // incl. out of range
    }
    for (bool skip : {false, true}) {
      StreamDecoder d(tok, skip);
      std::string out;
      for (int32_t id : ids) out += d.push(id);
      out += d.finish();
      ASSERT_EQ(out, tok.decode(ids, skip)) << nlohmann::json(ids).dump();
    }
  }
}

TEST(Fuzz, ParsersNeverCrashAndAgree) {
  static const std::vector<std::string> frags = {
      "text", " ", "\n", "\n\n", ">\n", ">", "<", "</think>", "<think>", "<｜end▁of▁sentence｜>",
      "<｜begin▁of▁sentence｜>", "\n\n<｜DSML｜tool_calls", "</｜DSML｜tool_calls>", "<｜DSML｜invoke", " name=\"f\"",
      "</｜DSML｜invoke", "<｜DSML｜parameter", " name=\"a\" string=\"true\">", " string=\"false\">", "1",
      "</｜DSML｜parameter", "/｜DSML｜parameter", "｜DSML｜", "\"", "\xE4\xBD\xA0", "\xF0\x9F\x98\x80", "\xE4"};
  Rng rng(99);
  for (int it = 0; it < 20000; ++it) {
    std::string s;
    const std::size_t n = rng() % 14;
    for (std::size_t i = 0; i < n; ++i) s += frags[rng() % frags.size()];
    const bool thinking = rng() % 2;
    std::optional<ParsedMessage> one;
    std::string err;
    try {
      one = parse_completion(s, thinking);
    } catch (const CompletionParseError& e) {
      err = e.message();
    }
    IncrementalParser p(thinking);
    for (std::size_t i = 0; i < s.size();) {
      const std::size_t k = 1 + rng() % 6;
      p.feed(std::string_view(s).substr(i, k));
      i += k;
    }
    // Giving up early is only allowed for completions the reference rejects.
    if (p.failed()) {
      EXPECT_FALSE(one.has_value()) << show(s);
    }
    try {
      p.finish();
      ASSERT_TRUE(one.has_value()) << show(s);
      EXPECT_EQ(p.result(), *one);
    } catch (const CompletionParseError& e) {
      ASSERT_FALSE(one.has_value()) << show(s);
      EXPECT_EQ(e.message(), err);
    }
  }
}

nlohmann::ordered_json random_value(Rng& rng, int depth) {
  switch (rng() % (depth > 2 ? 5 : 7)) {
    case 0: return nullptr;
    case 1: return rng() % 2 == 0;
    case 2: return static_cast<int64_t>(rng() % 2000) - 1000;
    case 3: return static_cast<double>(rng() % 100000) / 7.0;
    case 4: return random_unicode(rng, 6);
    case 5: {
      auto a = nlohmann::ordered_json::array();
      for (std::size_t i = rng() % 3; i > 0; --i) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      auto o = nlohmann::ordered_json::object();
      static const char* keys[] = {"role", "content", "tools", "tool_calls", "type", "function", "name",
                                   "arguments", "task", "wo_eos", "reasoning_content", "tool_call_id", "text"};
      for (std::size_t i = rng() % 4; i > 0; --i) o[keys[rng() % 13]] = random_value(rng, depth + 1);
      return o;
    }
  }
}

TEST(Fuzz, ChatEncoderOnRandomMessages) {
  static const char* roles[] = {"system", "user", "assistant", "tool", "developer", "latest_reminder", "other"};
  static const char* tasks[] = {"action", "query", "title", "bogus"};
  Rng rng(5);
  int ok = 0;
  for (int it = 0; it < 3000; ++it) {
    auto msgs = nlohmann::ordered_json::array();
    for (std::size_t i = rng() % 6; i > 0; --i) {
      nlohmann::ordered_json m = {{"role", roles[rng() % 7]}};
      if (rng() % 4) m["content"] = rng() % 5 ? nlohmann::ordered_json(random_unicode(rng, 8)) : random_value(rng, 0);
      if (rng() % 5 == 0) m["reasoning_content"] = random_unicode(rng, 5);
      if (rng() % 6 == 0) m["task"] = tasks[rng() % 4];
      if (rng() % 6 == 0) m["wo_eos"] = true;
      if (rng() % 5 == 0) {
        const std::string args = rng() % 2 ? pyjson::dumps(random_value(rng, 0)) : random_unicode(rng, 5);
        m["tool_calls"] = {{{"id", "c1"}, {"type", "function"}, {"function", {{"name", "f"}, {"arguments", args}}}}};
      }
      if (rng() % 6 == 0) m["tools"] = {{{"type", "function"}, {"function", random_value(rng, 0)}}};
      if (rng() % 8 == 0) m = random_value(rng, 0);
      msgs.push_back(m);
    }
    ChatOptions o;
    o.thinking = rng() % 2;
    o.drop_thinking = rng() % 3 != 0;
    o.reasoning_effort = rng() % 3 == 0 ? "max" : "";
    try {
      encode_chat(msgs, nullptr, o);
      ++ok;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(ok, 500);
}

TEST(Fuzz, PyJsonLoadsGarbage) {
  Rng rng(3);
  static const std::string alphabet = "{}[]\",:0123456789.eE+-tfnrulasNIy \\u\n";
  for (int it = 0; it < 20000; ++it) {
    std::string s(rng() % 24, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    if (auto v = pyjson::loads(s)) {
      // What loads accepts, dumps writes back as JSON that loads again to the same text.
      const std::string d = pyjson::dumps(*v);
      auto again = pyjson::loads(d);
      ASSERT_TRUE(again.has_value()) << s << " -> " << d;
      EXPECT_EQ(pyjson::dumps(*again), d);
    }
  }
  EXPECT_FALSE(pyjson::loads(std::string(5000, '[')).has_value());
}

}  // namespace
}  // namespace dsv4
