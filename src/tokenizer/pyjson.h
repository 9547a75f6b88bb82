// JSON with Python's `json` module semantics, as the official DeepSeek-V4 encoder uses it.
//
// The prompt format embeds JSON produced by `json.dumps(value, ensure_ascii=False)`: separators
// ", " and ": ", non-ASCII kept raw, floats in Python repr (1.0, 1e+20, 1e-07), integers exact at
// any size. Tool-call arguments are `json.loads`-ed and re-dumped, so they get their own small
// value type here that keeps the raw integer text and Python's duplicate-key rule (first
// position, last value); nlohmann::json would round big integers through double.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4::pyjson {

struct Value {
  enum class Kind { Null, False, True, Int, Float, String, Array, Object };
  Kind kind = Kind::Null;
  std::string text;  // Int: canonical digits; String: the decoded UTF-8 string
  double number = 0;  // Float
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;
};

// How many arrays/objects may enclose a value (in `[[1]]` the 1 is 2 deep). Python raises
// RecursionError near 1000; a bound of that order keeps the recursion here off the stack limit.
inline constexpr int kMaxDepth = 900;

// Python json.loads (strict): nullopt where Python raises (including nesting beyond kMaxDepth).
std::optional<Value> loads(std::string_view text);

// Python json.dumps(..., ensure_ascii=False). A value nested deeper than kMaxDepth throws
// dsv4::Error instead of recursing on.
std::string dumps(const Value& v);
std::string dumps(const nlohmann::ordered_json& v);

// Where JSON text first nests deeper than `limit` arrays/objects (the offset of the bracket
// that opens level limit + 1; brackets inside strings do not count), or npos. Iterative and
// allocation-free, so that text can be refused before anything recursive (building a tree,
// copying, dumping) touches it. Not a validator: malformed text is left to the parser.
std::size_t too_deep_at(std::string_view text, std::size_t limit);
// json.dumps of a str.
std::string dumps_string(std::string_view s);
// Python repr(float).
std::string float_repr(double d);

}  // namespace dsv4::pyjson
