// Python json.dumps compatibility of the helpers the chat format relies on.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/pyjson.h"

namespace dsv4 {
namespace {

TEST(PyJson, FloatRepr) {
  EXPECT_EQ(pyjson::float_repr(1.0), "1.0");
  EXPECT_EQ(pyjson::float_repr(-0.0), "-0.0");
  EXPECT_EQ(pyjson::float_repr(1e20), "1e+20");
  EXPECT_EQ(pyjson::float_repr(1e16), "1e+16");
  EXPECT_EQ(pyjson::float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(pyjson::float_repr(1e-7), "1e-07");
  EXPECT_EQ(pyjson::float_repr(0.0001), "0.0001");
  EXPECT_EQ(pyjson::float_repr(0.00001), "1e-05");
  EXPECT_EQ(pyjson::float_repr(2.5), "2.5");
  EXPECT_EQ(pyjson::float_repr(0.1), "0.1");
  EXPECT_EQ(pyjson::float_repr(123456.789), "123456.789");
  EXPECT_EQ(pyjson::float_repr(1.5e300), "1.5e+300");
}

TEST(PyJson, LoadsDumps) {
  auto rt = [](const char* s) {
    auto v = pyjson::loads(s);
    return v ? pyjson::dumps(*v) : std::string("<error>");
  };
  EXPECT_EQ(rt(R"({"a":1,"b":[true,false,null],"c":{"d":"x"}})"), R"({"a": 1, "b": [true, false, null], "c": {"d": "x"}})");
  EXPECT_EQ(rt("123456789012345678901234567890"), "123456789012345678901234567890");
  EXPECT_EQ(rt("-0"), "0");
  EXPECT_EQ(rt("1E400"), "Infinity");
  EXPECT_EQ(rt("NaN"), "NaN");
  EXPECT_EQ(rt(R"({"a":1,"b":2,"a":3})"), R"({"a": 3, "b": 2})");
  EXPECT_EQ(rt(R"("\u00e9\ud83d\ude00\n\u0001")"), "\"é😀\\n\\u0001\"");
  EXPECT_EQ(rt("01"), "<error>");
  EXPECT_EQ(rt("\"a\tb\""), "<error>");  // strict: raw control character
  EXPECT_EQ(rt("[1,]"), "<error>");
  EXPECT_EQ(rt(" {} "), "{}");
}

// Deep values fail with an Error instead of exhausting the stack (callers outside the server
// have no body-depth check in front of them).
TEST(PyJson, NestingIsBounded) {
  const int limit = pyjson::kMaxDepth;
  auto brackets = [](std::size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  // loads and dumps agree on the limit: what loads accepts, dumps writes back.
  auto at_limit = pyjson::loads(brackets(limit + 1));
  ASSERT_TRUE(at_limit.has_value());
  EXPECT_EQ(pyjson::dumps(*at_limit).size(), 2 * std::size_t(limit + 1));
  EXPECT_FALSE(pyjson::loads(brackets(limit + 2)).has_value());
  EXPECT_FALSE(pyjson::loads(brackets(200000)).has_value());

  // nlohmann parses iteratively (and frees iteratively): a tree far deeper than the stack allows
  // to recurse over.
  const auto deep = nlohmann::ordered_json::parse(brackets(200000));
  EXPECT_THROW(pyjson::dumps(deep), Error);
  EXPECT_EQ(pyjson::dumps(nlohmann::ordered_json::parse(brackets(limit + 1))).size(), 2 * std::size_t(limit + 1));
  EXPECT_THROW(pyjson::dumps(nlohmann::ordered_json::parse(brackets(limit + 2))), Error);

  // A Value built by hand (its destructor recurses, so not too deep for this test itself).
  pyjson::Value v;
  for (int i = 0; i < 2 * limit; ++i) {
    pyjson::Value outer;
    outer.kind = pyjson::Value::Kind::Array;
    outer.items.push_back(std::move(v));
    v = std::move(outer);
  }
  EXPECT_THROW(pyjson::dumps(v), Error);
}

TEST(PyJson, TooDeepAt) {
  EXPECT_EQ(pyjson::too_deep_at("[[1]]", 2), std::string_view::npos);
  EXPECT_EQ(pyjson::too_deep_at("[[1]]", 1), 1u);
  EXPECT_EQ(pyjson::too_deep_at(R"({"a":[{"b":1}]})", 3), std::string_view::npos);
  EXPECT_EQ(pyjson::too_deep_at(R"({"a":[{"b":1}]})", 2), 6u);
  // Brackets in strings, escaped quotes and backslashes do not count.
  EXPECT_EQ(pyjson::too_deep_at(R"(["[[[", "\"[[", "\\", {"k[": "{{"}])", 2), std::string_view::npos);
  EXPECT_EQ(pyjson::too_deep_at(R"(["\\", [[0]]])", 2), 8u);
  EXPECT_EQ(pyjson::too_deep_at(std::string(1000000, '['), 128), 128u);
  EXPECT_EQ(pyjson::too_deep_at("]]]][", 1), std::string_view::npos);  // malformed: left to the parser
}

}  // namespace
}  // namespace dsv4
