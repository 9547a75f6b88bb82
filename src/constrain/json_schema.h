// JSON schema → NFA fragments (automaton.h) for the documents, and DSML parameter lists, that
// match it. The output grammar is deliberately narrower than the schema — fixed property order,
// no properties the schema does not list, bounded number syntax and whitespace — so that every
// document it produces validates while a sampler can never loop outside the content itself.
//
// Supported keywords: type (incl. lists), properties, required, additionalProperties, enum,
// const, items, anyOf, oneOf (as anyOf: branches should be disjoint), minItems, maxItems,
// minLength, maxLength, $ref to "#", "#/$defs/…" or "#/definitions/…" (recursion unrolled
// kMaxRefDepth deep), and the annotations (description, title, default, examples, …). Any other
// keyword is a SchemaError naming it and where it is.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "constrain/automaton.h"

namespace dsv4::constrain {

using Json = nlohmann::ordered_json;

// Nesting of free-form values (a schema without a type, json_object output): objects and
// arrays inside it nest at most this deep.
inline constexpr int kFreeFormDepth = 4;
inline constexpr int kMaxRefDepth = 4;
inline constexpr int64_t kMaxItemsBound = 256;  // minItems / maxItems beyond this are refused
inline constexpr int64_t kMaxLengthBound = 2048;

class SchemaCompiler {
 public:
  // `root` resolves $ref; `root_path` names it in errors (e.g. "response_format.json_schema.schema").
  SchemaCompiler(Nfa& nfa, Json root, std::string root_path)
      : nfa_(nfa), root_(std::move(root)), root_path_(std::move(root_path)) {}

  // A JSON document matching the root schema.
  Nfa::Frag document();
  // A JSON value matching `schema` (found at `path`).
  Nfa::Frag value(const Json& schema, const std::string& path);
  // The DSML parameters of a tool call whose arguments match the root (an object schema):
  // `<｜DSML｜parameter name="P" string="true|false">V</｜DSML｜parameter>\n` per property.
  Nfa::Frag dsml_parameters();
  // Any JSON value nesting at most `depth` levels.
  Nfa::Frag free_form(int depth);
  // Any JSON object (response_format json_object).
  Nfa::Frag free_form_object() { return free_object(nullptr, root_path_); }

 private:
  struct Ref {
    const Json* schema;
    std::string path;
  };
  Ref resolve(const Json& schema, const std::string& path);
  void check_keywords(const Json& schema, const std::string& path);
  Nfa::Frag typed(const Json& schema, const std::string& type, const std::string& path);
  Nfa::Frag literal_values(const Json& values, const Json& schema, const std::string& path);
  Nfa::Frag string(const Json& schema, const std::string& path, bool raw);
  Nfa::Frag array(const Json& schema, const std::string& path);
  Nfa::Frag object(const Json& schema, const std::string& path);
  Nfa::Frag free_object(const Json* values, const std::string& path);
  Nfa::Frag dsml_value(const Json& schema, const std::string& path);

  Nfa& nfa_;
  const Json root_;  // a copy: $ref targets point into it
  const std::string root_path_;
  int ref_depth_ = 0;
};

// Byte-level pieces shared with the DSML grammar.
Nfa::Frag json_string_char(Nfa& nfa);  // one character inside "…" (escapes included)
Nfa::Frag raw_char(Nfa& nfa);          // one character of a DSML string="true" value
Nfa::Frag utf8_multibyte(Nfa& nfa);    // one valid non-ASCII UTF-8 character other than U+FF5C
Nfa::Frag ows(Nfa& nfa);               // the optional single space after ',' and ':'

}  // namespace dsv4::constrain
