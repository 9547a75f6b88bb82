// Python json.dumps compatibility of the helpers the chat format relies on.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dsv4
