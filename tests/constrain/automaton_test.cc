// The schema automaton on hand-written documents: each supported keyword accepts what it must
// and refuses what it must; unsupported keywords are refused naming themselves and their path.
#include <gtest/gtest.h>

#include "constrain/grammar.h"

namespace dsv4::constrain {
namespace {

Dfa schema_dfa(const char* schema) {
  GrammarSpec spec;
  spec.schema = Json::parse(schema);
  spec.schema_path = "schema";
  return build_dfa(spec);
}

bool accepts(const Dfa& dfa, std::string_view text) {
  const int s = dfa.walk(dfa.start(), text);
  return s >= 0 && dfa.accepting(s);
}

// A prefix the automaton can still complete.
bool live(const Dfa& dfa, std::string_view text) { return dfa.walk(dfa.start(), text) >= 0; }

std::string error_of(const char* schema) {
  try {
    schema_dfa(schema);
  } catch (const SchemaError& e) {
    return e.what();
  }
  return "";
}

TEST(Automaton, Scalars) {
  const Dfa n = schema_dfa(R"({"type": "null"})");
  EXPECT_TRUE(accepts(n, "null"));
  EXPECT_FALSE(accepts(n, "nul"));
  EXPECT_FALSE(accepts(n, " null"));
  const Dfa b = schema_dfa(R"({"type": "boolean"})");
  EXPECT_TRUE(accepts(b, "true"));
  EXPECT_TRUE(accepts(b, "false"));
  EXPECT_FALSE(accepts(b, "1"));
  const Dfa i = schema_dfa(R"({"type": "integer"})");
  for (const char* ok : {"0", "-0", "7", "-12", "1234567890123456"}) EXPECT_TRUE(accepts(i, ok)) << ok;
  for (const char* bad : {"01", "1.5", "+1", "1e3", "-", "12345678901234567"}) EXPECT_FALSE(accepts(i, bad)) << bad;
  const Dfa x = schema_dfa(R"({"type": "number"})");
  for (const char* ok : {"0", "-1.25", "3e10", "2.5E-3", "1e+7"}) EXPECT_TRUE(accepts(x, ok)) << ok;
  for (const char* bad : {".5", "1.", "1e", "1e1234", "NaN", "0x10"}) EXPECT_FALSE(accepts(x, bad)) << bad;
}

TEST(Automaton, Strings) {
  const Dfa s = schema_dfa(R"({"type": "string"})");
  for (const char* ok : {R"("")", R"("abc")", R"("a\"b\\c\n\u00e9\/")", "\"h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80\"",
                         R"("\ud7ff\ue000")"})
    EXPECT_TRUE(accepts(s, ok)) << ok;
  for (const char* bad : {"\"a", "abc", "\"a\nb\"", R"("\x")", R"("\ud800")", "\"\xC3\"", "\"\xC0\xAF\"",
                          "\"\xED\xA0\x80\"", "\"a\xEF\xBD\x9C" "b\""})
    EXPECT_FALSE(accepts(s, bad)) << bad;
  const Dfa m = schema_dfa(R"({"type": "string", "minLength": 2, "maxLength": 3})");
  EXPECT_FALSE(accepts(m, R"("a")"));
  EXPECT_TRUE(accepts(m, R"("ab")"));
  EXPECT_TRUE(accepts(m, "\"\xC3\xA9\\n\xE2\x82\xAC\""));  // 3 characters, 6 bytes
  EXPECT_FALSE(accepts(m, R"("abcd")"));
}

TEST(Automaton, EnumConstAndTypeLists) {
  const Dfa e = schema_dfa(R"({"enum": ["red", "green", 3, null, {"a": [1]}]})");
  for (const char* ok : {R"("red")", R"("green")", "3", "null", R"({"a":[1]})"}) EXPECT_TRUE(accepts(e, ok)) << ok;
  for (const char* bad : {R"("blue")", "4", R"("re")"}) EXPECT_FALSE(accepts(e, bad)) << bad;
  const Dfa typed = schema_dfa(R"({"type": "string", "enum": ["a", 1]})");  // 1 is not a string
  EXPECT_TRUE(accepts(typed, R"("a")"));
  EXPECT_FALSE(accepts(typed, "1"));
  const Dfa c = schema_dfa(R"({"const": "x"})");
  EXPECT_TRUE(accepts(c, R"("x")"));
  EXPECT_FALSE(accepts(c, R"("y")"));
  const Dfa l = schema_dfa(R"({"type": ["integer", "null"]})");
  EXPECT_TRUE(accepts(l, "5"));
  EXPECT_TRUE(accepts(l, "null"));
  EXPECT_FALSE(accepts(l, R"("5")"));
}

TEST(Automaton, ObjectsPropertiesRequired) {
  const Dfa o = schema_dfa(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                                "c": {"type": "boolean"}}, "required": ["b"], "additionalProperties": false})");
  for (const char* ok : {R"({"b":"x"})", R"({"a":1,"b":"x"})", R"({"a": 1, "b": "x", "c": true})", R"({"b":"","c":false})"})
    EXPECT_TRUE(accepts(o, ok)) << ok;
  for (const char* bad : {"{}", R"({"a":1})", R"({"b":"x","a":1})", R"({"b":"x","d":1})", R"({"b":"x",})",
                          R"({ "b":"x"})", R"({"b":  "x"})", R"({"b":"x"} )", R"({"b":1})"})
    EXPECT_FALSE(accepts(o, bad)) << bad;
  // No properties: a free-form object; additionalProperties false: only {}.
  const Dfa free = schema_dfa(R"({"type": "object"})");
  EXPECT_TRUE(accepts(free, R"({"k": [1, {"z": null}], "q": "v"})"));
  EXPECT_FALSE(accepts(free, "[]"));
  EXPECT_TRUE(accepts(schema_dfa(R"({"type": "object", "additionalProperties": false})"), "{}"));
  EXPECT_FALSE(accepts(schema_dfa(R"({"type": "object", "additionalProperties": false})"), R"({"a":1})"));
  const Dfa typed_values = schema_dfa(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  EXPECT_TRUE(accepts(typed_values, R"({"a":1,"b":2})"));
  EXPECT_FALSE(accepts(typed_values, R"({"a":"1"})"));
}

TEST(Automaton, ArraysItemsBounds) {
  const Dfa a = schema_dfa(R"({"type": "array", "items": {"type": "integer"}})");
  for (const char* ok : {"[]", "[1]", "[1,2, 3]"}) EXPECT_TRUE(accepts(a, ok)) << ok;
  for (const char* bad : {"[1,]", "[,1]", "[\"a\"]", "[1  ,2]", "[ 1]"}) EXPECT_FALSE(accepts(a, bad)) << bad;
  const Dfa b = schema_dfa(R"({"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 3})");
  EXPECT_FALSE(accepts(b, "[true]"));
  EXPECT_TRUE(accepts(b, "[true,false]"));
  EXPECT_TRUE(accepts(b, "[true,false,true]"));
  EXPECT_FALSE(accepts(b, "[true,false,true,true]"));
  EXPECT_FALSE(accepts(b, "[]"));
  const Dfa one = schema_dfa(R"({"type": "array", "minItems": 1})");
  EXPECT_FALSE(accepts(one, "[]"));
  EXPECT_TRUE(accepts(one, R"([1, "x", {}])"));
  EXPECT_TRUE(accepts(schema_dfa(R"({"type": "array", "maxItems": 0})"), "[]"));
}

TEST(Automaton, AnyOfOneOfRefs) {
  const Dfa u = schema_dfa(R"({"anyOf": [{"type": "string"}, {"type": "object", "properties": {"n": {"type": "integer"}},
                                "required": ["n"]}], "description": "either"})");
  EXPECT_TRUE(accepts(u, R"("s")"));
  EXPECT_TRUE(accepts(u, R"({"n":3})"));
  EXPECT_FALSE(accepts(u, "3"));
  const Dfa o = schema_dfa(R"({"oneOf": [{"const": 1}, {"const": 2}]})");
  EXPECT_TRUE(accepts(o, "2"));
  EXPECT_FALSE(accepts(o, "3"));
  const Dfa r = schema_dfa(R"({"$defs": {"p": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
                                "type": "array", "items": {"$ref": "#/$defs/p"}})");
  EXPECT_TRUE(accepts(r, R"([{"x":1.5},{"x":2}])"));
  EXPECT_FALSE(accepts(r, R"([{"y":1}])"));
  // Recursion is unrolled a bounded number of levels; the optional branch is cut beyond it.
  const Dfa tree = schema_dfa(R"({"type": "object", "properties": {"v": {"type": "integer"},
                                   "kids": {"type": "array", "items": {"$ref": "#"}}}, "required": ["v"]})");
  EXPECT_TRUE(accepts(tree, R"({"v":1,"kids":[{"v":2,"kids":[{"v":3}]}]})"));
  std::string deep = R"({"v":0})";
  for (int i = 0; i < kMaxRefDepth + 1; ++i) deep = R"({"v":1,"kids":[)" + deep + "]}";
  EXPECT_FALSE(accepts(tree, deep));
}

TEST(Automaton, FreeFormDepthAndWhitespaceAreBounded) {
  const Dfa any = schema_dfa("{}");
  EXPECT_TRUE(accepts(any, R"({"a": [1, 2.5, "x", null, true, {"b": {}}]})"));
  EXPECT_FALSE(accepts(any, "[[[[[[1]]]]]]"));  // deeper than kFreeFormDepth
  EXPECT_FALSE(live(any, "{\"a\":  "));         // two spaces: no free whitespace
  EXPECT_FALSE(live(any, "\n"));
}

TEST(Automaton, UnsupportedKeywordsNameThemselvesAndWhere) {
  EXPECT_EQ(error_of(R"({"type": "string", "pattern": "^a"})"), "the JSON-schema keyword 'pattern' at schema is not supported");
  EXPECT_EQ(error_of(R"({"type": "object", "properties": {"when": {"type": "string", "format": "date"}}})"),
            "the JSON-schema keyword 'format' at schema.properties.when is not supported");
  EXPECT_EQ(error_of(R"({"type": "array", "items": {"type": "integer", "minimum": 0}})"),
            "the JSON-schema keyword 'minimum' at schema.items is not supported");
  EXPECT_EQ(error_of(R"({"anyOf": [{"type": "string"}, {"allOf": []}]})"),
            "the JSON-schema keyword 'allOf' at schema.anyOf[1] is not supported");
  EXPECT_EQ(error_of(R"({"$ref": "http://example.com/s.json"})"),
            "'$ref' \"http://example.com/s.json\" at schema is not supported (only \"#\", \"#/$defs/NAME\", \"#/definitions/NAME\" of this schema)");
  EXPECT_EQ(error_of(R"({"type": "date"})"),
            "'type' at schema must be one of null, boolean, integer, number, string, array, object");
  EXPECT_EQ(error_of(R"({"type": "object", "properties": {}, "required": ["x"]})"),
            "required property 'x' at schema is not in 'properties'");
  EXPECT_EQ(error_of(R"({"type": "array", "maxItems": 100000})"), "'maxItems' 100000 at schema is above the supported 256");
  EXPECT_EQ(error_of(R"({"type": "string", "minLength": 3, "maxLength": 2})"), "'maxLength' at schema is below 'minLength'");
  EXPECT_EQ(error_of("false"), "the schema at schema is false: nothing matches it");
}

// The tool-call block, exactly as V4 renders one (tokenizer/chat.cc) and parses it.
TEST(Automaton, DsmlToolCall) {
  GrammarSpec spec;
  spec.call_required = true;
  spec.tools.push_back({"get_weather", Json::parse(R"({"type": "object", "properties": {"city": {"type": "string"},
      "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["C", "F"]}}, "required": ["city"]})"), "tools[0]"});
  spec.tools.push_back({"noop", Json(), "tools[1]"});
  const Dfa d = build_dfa(spec);
  const std::string B = "\xEF\xBD\x9C";
  const std::string open = "\n\n<" + B + "DSML" + B + "tool_calls>\n", close = "\n</" + B + "DSML" + B + "tool_calls>";
  auto invoke = [&](const std::string& name, const std::string& params) {
    return "<" + B + "DSML" + B + "invoke name=\"" + name + "\">\n" + params + "</" + B + "DSML" + B + "invoke>";
  };
  auto param = [&](const std::string& name, bool str, const std::string& v) {
    return "<" + B + "DSML" + B + "parameter name=\"" + name + "\" string=\"" + (str ? "true" : "false") + "\">" + v + "</" + B +
           "DSML" + B + "parameter>\n";
  };
  EXPECT_TRUE(accepts(d, open + invoke("get_weather", param("city", true, "Paris <France>\n")) + close));
  EXPECT_TRUE(accepts(d, open + invoke("get_weather", param("city", true, "") + param("days", false, "3") + param("unit", true, "F")) +
                             "\n" + invoke("noop", "") + close));
  EXPECT_FALSE(accepts(d, open + invoke("get_weather", "") + close));                             // city is required
  EXPECT_FALSE(accepts(d, open + invoke("get_weather", param("city", false, "\"Paris\"")) + close));  // a string is raw
  EXPECT_FALSE(accepts(d, open + invoke("get_weather", param("city", true, "x") + param("unit", true, "K")) + close));
  EXPECT_FALSE(accepts(d, open + invoke("other", "") + close));
  EXPECT_FALSE(accepts(d, "Sure." + open + invoke("noop", "") + close));  // nothing before the call
  EXPECT_FALSE(accepts(d, open + close));
}

TEST(Automaton, ThinkingSectionEndsAtTheFirstThinkEnd) {
  GrammarSpec spec;
  spec.thinking = true;
  spec.schema = Json::parse(R"({"type": "boolean"})");
  const Dfa d = build_dfa(spec);
  EXPECT_TRUE(accepts(d, "</think>true"));
  EXPECT_TRUE(accepts(d, "Let me think: 1 < 2 and </b> ok.\n</think>false"));
  EXPECT_FALSE(accepts(d, "x</think>maybe</think>true"));  // the answer starts at the first </think>
  EXPECT_FALSE(live(d, "a <think>"));
  EXPECT_FALSE(live(d, "a \xEF\xBD\x9C"));
  EXPECT_FALSE(accepts(d, "true"));
}

TEST(Automaton, JsonObjectOrToolCall) {
  GrammarSpec spec;
  spec.json_object = true;
  spec.tools.push_back({"f", Json(), "tools[0]"});
  const Dfa d = build_dfa(spec);
  EXPECT_TRUE(accepts(d, R"({"any": ["thing"]})"));
  EXPECT_FALSE(accepts(d, "[1]"));
  EXPECT_TRUE(live(d, "\n\n<"));
}

}  // namespace
}  // namespace dsv4::constrain
