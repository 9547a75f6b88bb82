#include "constrain/json_schema.h"

#include <algorithm>
#include <array>
#include <set>

namespace dsv4::constrain {

namespace {

const std::set<std::string>& annotations() {
  static const std::set<std::string> s = {"description", "title",   "default",  "examples", "$schema", "$id",
                                          "$comment",    "deprecated", "readOnly", "writeOnly", "$defs", "definitions"};
  return s;
}

const std::set<std::string>& supported() {
  static const std::set<std::string> s = {"type",     "properties", "required", "additionalProperties", "enum",
                                          "const",    "items",      "anyOf",    "oneOf",                "minItems",
                                          "maxItems", "minLength",  "maxLength", "$ref"};
  return s;
}

std::string dump_compact(const Json& v) { return v.dump(-1, ' ', false, Json::error_handler_t::replace); }

int64_t count_of(const Json& schema, const char* key, const std::string& path, int64_t bound) {
  auto it = schema.find(key);
  if (it == schema.end()) return -1;
  if (!it->is_number_integer() && !it->is_number_unsigned())
    throw SchemaError(cat("'", key, "' at ", path, " must be a non-negative integer"));
  if (it->is_number_integer() && it->get<int64_t>() < 0)
    throw SchemaError(cat("'", key, "' at ", path, " must be a non-negative integer"));
  const uint64_t v = it->get<uint64_t>();
  if (v > uint64_t(bound)) throw SchemaError(cat("'", key, "' ", v, " at ", path, " is above the supported ", bound));
  return int64_t(v);
}

bool type_matches(const Json& v, const std::string& t) {
  if (t == "null") return v.is_null();
  if (t == "boolean") return v.is_boolean();
  if (t == "integer") return v.is_number_integer() || v.is_number_unsigned();
  if (t == "number") return v.is_number();
  if (t == "string") return v.is_string();
  if (t == "array") return v.is_array();
  if (t == "object") return v.is_object();
  return false;
}

std::vector<std::string> types_of(const Json& schema, const std::string& path) {
  auto it = schema.find("type");
  if (it == schema.end()) return {};
  std::vector<std::string> out;
  auto add = [&](const Json& t) {
    static const std::set<std::string> known = {"null", "boolean", "integer", "number", "string", "array", "object"};
    if (!t.is_string() || !known.count(t.get<std::string>()))
      throw SchemaError(cat("'type' at ", path, " must be one of null, boolean, integer, number, string, array, object"));
    out.push_back(t.get<std::string>());
  };
  if (it->is_array()) {
    for (const Json& t : *it) add(t);
    if (out.empty()) throw SchemaError(cat("'type' at ", path, " is an empty list"));
  } else {
    add(*it);
  }
  return out;
}

// Up to `n` more copies of `make()`, each optional after the previous: (x (x (x)?)?)?.
template <class Make>
Nfa::Frag up_to(Nfa& nfa, int64_t n, Make make) {
  Nfa::Frag f = nfa.empty();
  for (int64_t i = 0; i < n; ++i) f = nfa.opt(nfa.seq({make(), f}));
  return f;
}

Nfa::Frag digits(Nfa& nfa, int64_t min, int64_t max) {
  std::vector<Nfa::Frag> parts;
  for (int64_t i = 0; i < min; ++i) parts.push_back(nfa.bytes('0', '9'));
  parts.push_back(up_to(nfa, max - min, [&] { return nfa.bytes('0', '9'); }));
  return nfa.seq(parts);
}

// -?(0|[1-9][0-9]{0,15}): 16 significant digits at most, so no number can run on forever.
Nfa::Frag integer(Nfa& nfa) {
  return nfa.seq({nfa.opt(nfa.lit("-")), nfa.alt({nfa.lit("0"), nfa.seq({nfa.bytes('1', '9'), digits(nfa, 0, 15)})})});
}

Nfa::Frag number(Nfa& nfa) {
  Nfa::Frag frac = nfa.opt(nfa.seq({nfa.lit("."), digits(nfa, 1, 16)}));
  Nfa::Frag exp = nfa.opt(nfa.seq({nfa.alt({nfa.lit("e"), nfa.lit("E")}), nfa.opt(nfa.alt({nfa.lit("+"), nfa.lit("-")})),
                                   digits(nfa, 1, 3)}));
  return nfa.seq({integer(nfa), frac, exp});
}

Nfa::Frag sep(Nfa& nfa) { return nfa.seq({nfa.lit(","), nfa.opt(nfa.lit(" "))}); }

// open (close | E (sep E)* close) with one copy of the element E, which loops back on itself.
template <class Make>
Nfa::Frag list(Nfa& nfa, const char* open, const char* close, Make make) {
  Nfa::Frag o = nfa.lit(open), c = nfa.lit(close), e = make(), s = sep(nfa);
  nfa.eps(o.out, c.in);
  nfa.eps(o.out, e.in);
  nfa.eps(e.out, s.in);
  nfa.eps(s.out, e.in);
  nfa.eps(e.out, c.in);
  return {o.in, c.out};
}

}  // namespace

Nfa::Frag ows(Nfa& nfa) { return nfa.opt(nfa.lit(" ")); }

namespace {

// Edges from `in` to `out` for one non-ASCII UTF-8 character other than U+FF5C (EF BD 9C, the
// fullwidth bar every V4 control token is made of), through states shared by all lead bytes
// ("n continuation bytes due"), so the DFA gets a handful of states per character, not one per
// branch.
void utf8_edges(Nfa& nfa, int in, int out) {
  const int c1 = nfa.add_state(), c2 = nfa.add_state(), c3 = nfa.add_state();
  nfa.edge(c1, out, 0x80, 0xBF);
  nfa.edge(c2, c1, 0x80, 0xBF);
  nfa.edge(c3, c2, 0x80, 0xBF);
  nfa.edge(in, c1, 0xC2, 0xDF);
  nfa.edge(in, c2, 0xE1, 0xEC);
  nfa.edge(in, c2, 0xEE, 0xEE);
  nfa.edge(in, c3, 0xF1, 0xF3);
  // Lead bytes whose first continuation byte is narrower (no overlongs, surrogates, > U+10FFFF).
  auto narrow = [&](uint8_t lead, uint8_t lo, uint8_t hi, int then) {
    const int s = nfa.add_state();
    nfa.edge(in, s, lead, lead);
    nfa.edge(s, then, lo, hi);
    return s;
  };
  narrow(0xE0, 0xA0, 0xBF, c1);
  narrow(0xED, 0x80, 0x9F, c1);
  narrow(0xF0, 0x90, 0xBF, c2);
  narrow(0xF4, 0x80, 0x8F, c2);
  const int ef = narrow(0xEF, 0x80, 0xBC, c1), bd = nfa.add_state();
  nfa.edge(ef, c1, 0xBE, 0xBF);
  nfa.edge(ef, bd, 0xBD, 0xBD);
  nfa.edge(bd, out, 0x80, 0x9B);
  nfa.edge(bd, out, 0x9D, 0xBF);
}

void hex_edges(Nfa& nfa, int from, int to) {
  nfa.edge(from, to, '0', '9');
  nfa.edge(from, to, 'a', 'f');
  nfa.edge(from, to, 'A', 'F');
}

}  // namespace

Nfa::Frag utf8_multibyte(Nfa& nfa) {
  Nfa::Frag f{nfa.add_state(), nfa.add_state()};
  utf8_edges(nfa, f.in, f.out);
  return f;
}

Nfa::Frag json_string_char(Nfa& nfa) {
  Nfa::Frag f{nfa.add_state(), nfa.add_state()};
  nfa.edge(f.in, f.out, 0x20, 0x21);  // all of ASCII but controls, '"' and '\'
  nfa.edge(f.in, f.out, 0x23, 0x5B);
  nfa.edge(f.in, f.out, 0x5D, 0x7F);
  utf8_edges(nfa, f.in, f.out);
  const int esc = nfa.add_state();
  nfa.edge(f.in, esc, '\\', '\\');
  for (char c : std::string_view("\"\\/bfnrt")) nfa.edge(esc, f.out, uint8_t(c), uint8_t(c));
  // \uXXXX outside the surrogates D800-DFFF (a lone surrogate is not valid JSON for most parsers).
  const int u = nfa.add_state(), h2 = nfa.add_state(), d2 = nfa.add_state(), h3 = nfa.add_state(), h4 = nfa.add_state();
  nfa.edge(esc, u, 'u', 'u');
  nfa.edge(u, h2, '0', '9');
  nfa.edge(u, h2, 'a', 'c');
  nfa.edge(u, h2, 'A', 'C');
  nfa.edge(u, h2, 'e', 'f');
  nfa.edge(u, h2, 'E', 'F');
  nfa.edge(u, d2, 'd', 'd');
  nfa.edge(u, d2, 'D', 'D');
  nfa.edge(d2, h3, '0', '7');
  hex_edges(nfa, h2, h3);
  hex_edges(nfa, h3, h4);
  hex_edges(nfa, h4, f.out);
  return f;
}

Nfa::Frag raw_char(Nfa& nfa) {
  Nfa::Frag f{nfa.add_state(), nfa.add_state()};
  nfa.edge(f.in, f.out, '\t', '\n');
  nfa.edge(f.in, f.out, '\r', '\r');
  nfa.edge(f.in, f.out, 0x20, 0x7F);
  utf8_edges(nfa, f.in, f.out);
  return f;
}

SchemaCompiler::Ref SchemaCompiler::resolve(const Json& schema, const std::string& path) {
  const Json* s = &schema;
  std::string p = path;
  for (int hops = 0; s->is_object() && s->contains("$ref"); ++hops) {
    if (hops > 16) throw SchemaError(cat("'$ref' at ", p, " loops"));
    for (const auto& [k, v] : s->items())
      if (k != "$ref" && !annotations().count(k))
        throw SchemaError(cat("'", k, "' beside '$ref' at ", p, " is not supported"));
    const Json& r = (*s)["$ref"];
    if (!r.is_string()) throw SchemaError(cat("'$ref' at ", p, " must be a string"));
    const std::string ref = r;
    const Json* target = nullptr;
    if (ref == "#") {
      target = &root_;
    } else {
      for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
        const std::string pre = prefix;
        if (ref.rfind(pre, 0) != 0) continue;
        const std::string name = ref.substr(pre.size());
        const std::string group = pre.substr(2, pre.size() - 3);
        if (root_.is_object() && root_.contains(group) && root_[group].is_object() && root_[group].contains(name))
          target = &root_[group][name];
      }
    }
    if (!target) throw SchemaError(cat("'$ref' \"", ref, "\" at ", p, " is not supported (only \"#\", \"#/$defs/NAME\", \"#/definitions/NAME\" of this schema)"));
    s = target;
    p = cat(root_path_, ref.substr(1));
  }
  return {s, p};
}

void SchemaCompiler::check_keywords(const Json& schema, const std::string& path) {
  for (const auto& [k, v] : schema.items())
    if (!supported().count(k) && !annotations().count(k))
      throw SchemaError(cat("the JSON-schema keyword '", k, "' at ", path, " is not supported"));
}

Nfa::Frag SchemaCompiler::document() { return value(root_, root_path_); }

Nfa::Frag SchemaCompiler::value(const Json& schema_in, const std::string& path_in) {
  if (schema_in.is_boolean()) {
    if (!schema_in.get<bool>()) throw SchemaError(cat("the schema at ", path_in, " is false: nothing matches it"));
    return free_form(kFreeFormDepth);
  }
  if (!schema_in.is_object()) throw SchemaError(cat("the schema at ", path_in, " must be an object"));
  if (schema_in.contains("$ref")) {
    const Ref r = resolve(schema_in, path_in);
    if (ref_depth_ >= kMaxRefDepth) return Nfa::Frag{nfa_.add_state(), nfa_.add_state()};  // cut: unreachable
    ++ref_depth_;
    Nfa::Frag f = value(*r.schema, r.path);
    --ref_depth_;
    return f;
  }
  const Json& schema = schema_in;
  const std::string& path = path_in;
  check_keywords(schema, path);
  const std::vector<std::string> types = types_of(schema, path);
  for (const char* key : {"anyOf", "oneOf"}) {
    auto it = schema.find(key);
    if (it == schema.end()) continue;
    if (!it->is_array() || it->empty()) throw SchemaError(cat("'", key, "' at ", path, " must be a non-empty array"));
    for (const auto& [k, v] : schema.items())
      if (k != key && !annotations().count(k))
        throw SchemaError(cat("'", k, "' beside '", key, "' at ", path, " is not supported"));
    std::vector<Nfa::Frag> options;
    for (size_t i = 0; i < it->size(); ++i) options.push_back(value((*it)[i], cat(path, ".", key, "[", i, "]")));
    return nfa_.alt(options);
  }
  if (auto it = schema.find("const"); it != schema.end()) return literal_values(Json::array({*it}), schema, path);
  if (auto it = schema.find("enum"); it != schema.end()) {
    if (!it->is_array() || it->empty()) throw SchemaError(cat("'enum' at ", path, " must be a non-empty array"));
    return literal_values(*it, schema, path);
  }
  if (types.empty()) {
    if (schema.contains("properties") || schema.contains("required") || schema.contains("additionalProperties"))
      return object(schema, path);
    if (schema.contains("items") || schema.contains("minItems") || schema.contains("maxItems")) return array(schema, path);
    if (schema.contains("minLength") || schema.contains("maxLength")) return string(schema, path, false);
    return free_form(kFreeFormDepth);
  }
  std::vector<Nfa::Frag> options;
  for (const std::string& t : types) options.push_back(typed(schema, t, path));
  return options.size() == 1 ? options[0] : nfa_.alt(options);
}

Nfa::Frag SchemaCompiler::typed(const Json& schema, const std::string& t, const std::string& path) {
  if (t == "null") return nfa_.lit("null");
  if (t == "boolean") return nfa_.alt({nfa_.lit("true"), nfa_.lit("false")});
  if (t == "integer") return integer(nfa_);
  if (t == "number") return number(nfa_);
  if (t == "string") return string(schema, path, false);
  if (t == "array") return array(schema, path);
  return object(schema, path);
}

Nfa::Frag SchemaCompiler::literal_values(const Json& values, const Json& schema, const std::string& path) {
  const std::vector<std::string> types = types_of(schema, path);
  std::vector<Nfa::Frag> options;
  for (const Json& v : values) {
    const bool ok = types.empty() || std::any_of(types.begin(), types.end(), [&](const std::string& t) { return type_matches(v, t); });
    if (ok) options.push_back(nfa_.lit(dump_compact(v)));
  }
  if (options.empty()) throw SchemaError(cat("no 'enum' / 'const' value at ", path, " has the schema's 'type'"));
  return nfa_.alt(options);
}

Nfa::Frag SchemaCompiler::string(const Json& schema, const std::string& path, bool raw) {
  const int64_t min = std::max<int64_t>(0, count_of(schema, "minLength", path, kMaxLengthBound));
  const int64_t max = count_of(schema, "maxLength", path, kMaxLengthBound);
  if (max >= 0 && max < min) throw SchemaError(cat("'maxLength' at ", path, " is below 'minLength'"));
  auto ch = [&] { return raw ? raw_char(nfa_) : json_string_char(nfa_); };
  std::vector<Nfa::Frag> parts;
  if (!raw) parts.push_back(nfa_.lit("\""));
  for (int64_t i = 0; i < min; ++i) parts.push_back(ch());
  parts.push_back(max < 0 ? nfa_.star(ch()) : up_to(nfa_, max - min, ch));
  if (!raw) parts.push_back(nfa_.lit("\""));
  return nfa_.seq(parts);
}

Nfa::Frag SchemaCompiler::array(const Json& schema, const std::string& path) {
  const int64_t min = std::max<int64_t>(0, count_of(schema, "minItems", path, kMaxItemsBound));
  const int64_t max = count_of(schema, "maxItems", path, kMaxItemsBound);
  if (max >= 0 && max < min) throw SchemaError(cat("'maxItems' at ", path, " is below 'minItems'"));
  const auto items_it = schema.find("items");
  if (items_it != schema.end() && !items_it->is_object() && !items_it->is_boolean())
    throw SchemaError(cat("'items' at ", path, " must be a schema (tuple forms are not supported)"));
  const Json any = Json::object();
  const Json& items = items_it != schema.end() ? *items_it : any;
  const std::string ipath = path + ".items";
  if (max == 0 || (items.is_boolean() && !items.get<bool>())) {
    if (min > 0) throw SchemaError(cat("the array at ", ipath, " can hold no item but 'minItems' is ", min));
    return nfa_.lit("[]");
  }
  auto item = [&] { return value(items, ipath); };
  if (min == 0 && max < 0) return list(nfa_, "[", "]", item);
  auto more = [&] { return nfa_.seq({sep(nfa_), item()}); };
  std::vector<Nfa::Frag> body = {item()};
  for (int64_t i = 1; i < min; ++i) body.push_back(more());
  body.push_back(max < 0 ? nfa_.star(more()) : up_to(nfa_, max - std::max<int64_t>(min, 1), more));
  Nfa::Frag items_frag = nfa_.seq(body);
  return nfa_.seq({nfa_.lit("["), min == 0 ? nfa_.opt(items_frag) : items_frag, nfa_.lit("]")});
}

// Properties in the schema's order, each optional one skippable; nothing else.
Nfa::Frag SchemaCompiler::object(const Json& schema, const std::string& path) {
  auto props_it = schema.find("properties");
  const Json* additional = nullptr;
  if (auto a = schema.find("additionalProperties"); a != schema.end()) {
    if (!a->is_boolean() && !a->is_object())
      throw SchemaError(cat("'additionalProperties' at ", path, " must be a boolean or a schema"));
    additional = &*a;
  }
  std::set<std::string> required;
  if (auto r = schema.find("required"); r != schema.end()) {
    if (!r->is_array()) throw SchemaError(cat("'required' at ", path, " must be an array of names"));
    for (const Json& n : *r) {
      if (!n.is_string()) throw SchemaError(cat("'required' at ", path, " must be an array of names"));
      if (props_it == schema.end() || !props_it->is_object() || !props_it->contains(n.get<std::string>()))
        throw SchemaError(cat("required property '", n.get<std::string>(), "' at ", path, " is not in 'properties'"));
      required.insert(n.get<std::string>());
    }
  }
  if (props_it == schema.end()) {
    if (additional && additional->is_boolean() && !additional->get<bool>()) return nfa_.lit("{}");
    return free_object(additional && additional->is_object() ? additional : nullptr, path + ".additionalProperties");
  }
  if (!props_it->is_object()) throw SchemaError(cat("'properties' at ", path, " must be an object"));
  // at[i][f]: before property i, f = whether one was written (a comma is due).
  const size_t k = props_it->size();
  std::vector<std::array<int, 2>> at(k + 1);
  for (auto& a : at) a = {nfa_.add_state(), nfa_.add_state()};
  size_t i = 0;
  for (const auto& [name, sub] : props_it->items()) {
    const int entry = nfa_.add_state();
    for (int f = 0; f < 2; ++f) {
      Nfa::Frag key = nfa_.seq({f ? sep(nfa_) : nfa_.empty(), nfa_.lit(dump_compact(Json(name))), nfa_.lit(":"), ows(nfa_)});
      nfa_.eps(at[i][size_t(f)], key.in);
      nfa_.eps(key.out, entry);
      if (!required.count(name)) nfa_.eps(at[i][size_t(f)], at[i + 1][size_t(f)]);
    }
    Nfa::Frag v = value(sub, cat(path, ".properties.", name));
    nfa_.eps(entry, v.in);
    nfa_.eps(v.out, at[i + 1][1]);
    ++i;
  }
  Nfa::Frag open = nfa_.lit("{"), close = nfa_.lit("}");
  nfa_.eps(open.out, at[0][0]);
  nfa_.eps(at[k][0], close.in);
  nfa_.eps(at[k][1], close.in);
  return {open.in, close.out};
}

Nfa::Frag SchemaCompiler::free_object(const Json* values, const std::string& path) {
  return list(nfa_, "{", "}", [&] {
    return nfa_.seq({string(Json::object(), path, false), nfa_.lit(":"), ows(nfa_),
                     values ? value(*values, path) : free_form(kFreeFormDepth - 1)});
  });
}

// Each level holds one copy of the level below for arrays and one for objects: 2^depth copies.
Nfa::Frag SchemaCompiler::free_form(int depth) {
  std::vector<Nfa::Frag> options = {nfa_.lit("null"), nfa_.lit("true"), nfa_.lit("false"), number(nfa_),
                                    string(Json::object(), "", false)};
  if (depth > 0) {
    options.push_back(list(nfa_, "[", "]", [&] { return free_form(depth - 1); }));
    options.push_back(list(nfa_, "{", "}", [&] {
      return nfa_.seq({string(Json::object(), "", false), nfa_.lit(":"), ows(nfa_), free_form(depth - 1)});
    }));
  }
  return nfa_.alt(options);
}

}  // namespace dsv4::constrain

namespace dsv4::constrain {

namespace {

void check_dsml_name(const std::string& name, const std::string& what, const std::string& path) {
  if (name.empty() || name.find('"') != std::string::npos || name.find("\xEF\xBD\x9C") != std::string::npos)
    throw SchemaError(cat(what, " '", name, "' at ", path, " cannot be written in a DSML tool call (empty, '\"' or '｜')"));
}

}  // namespace

// A property written as string="true" is the raw text of a string schema; everything else is
// JSON with string="false" (the V4 format's own rule for tool arguments).
Nfa::Frag SchemaCompiler::dsml_value(const Json& schema_in, const std::string& path_in) {
  const Ref r = schema_in.is_object() && schema_in.contains("$ref") ? resolve(schema_in, path_in) : Ref{&schema_in, path_in};
  const Json& s = *r.schema;
  const bool raw = s.is_object() && !s.contains("anyOf") && !s.contains("oneOf") && types_of(s, r.path) == std::vector<std::string>{"string"};
  if (!raw) return nfa_.seq({nfa_.lit("false\">"), value(schema_in, path_in)});
  check_keywords(s, r.path);
  std::vector<Nfa::Frag> options;
  if (s.contains("const") || s.contains("enum")) {
    const Json values = s.contains("const") ? Json::array({s["const"]}) : s["enum"];
    if (!values.is_array() || values.empty()) throw SchemaError(cat("'enum' at ", r.path, " must be a non-empty array"));
    for (const Json& v : values)
      if (v.is_string()) options.push_back(nfa_.lit(v.get<std::string>()));
    if (options.empty()) throw SchemaError(cat("no 'enum' / 'const' value at ", r.path, " is a string"));
  } else {
    options.push_back(string(s, r.path, true));
  }
  return nfa_.seq({nfa_.lit("true\">"), nfa_.alt(options)});
}

Nfa::Frag SchemaCompiler::dsml_parameters() {
  const Ref r = resolve(root_, root_path_);
  const Json& s = *r.schema;
  if (!s.is_object()) throw SchemaError(cat("the tool parameters at ", r.path, " must be an object schema"));
  check_keywords(s, r.path);
  const std::vector<std::string> types = types_of(s, r.path);
  if (s.contains("anyOf") || s.contains("oneOf") || s.contains("enum") || s.contains("const") ||
      !(types.empty() || types == std::vector<std::string>{"object"}))
    throw SchemaError(cat("the tool parameters at ", r.path, " must be a plain {\"type\": \"object\"} schema"));
  auto props_it = s.find("properties");
  std::set<std::string> required;
  if (auto req = s.find("required"); req != s.end()) {
    if (!req->is_array()) throw SchemaError(cat("'required' at ", r.path, " must be an array of names"));
    for (const Json& n : *req) {
      if (!n.is_string() || props_it == s.end() || !props_it->is_object() || !props_it->contains(n.get<std::string>()))
        throw SchemaError(cat("required property ", dump_compact(n), " at ", r.path, " is not in 'properties'"));
      required.insert(n.get<std::string>());
    }
  }
  if (props_it == s.end()) return nfa_.empty();  // free-form: the empty argument object
  if (!props_it->is_object()) throw SchemaError(cat("'properties' at ", r.path, " must be an object"));
  std::vector<Nfa::Frag> parts;
  for (const auto& [name, sub] : props_it->items()) {
    const std::string p = cat(r.path, ".properties.", name);
    check_dsml_name(name, "the parameter name", p);
    Nfa::Frag f = nfa_.seq({nfa_.lit(cat("<\xEF\xBD\x9C" "DSML\xEF\xBD\x9Cparameter name=\"", name, "\" string=\"")), dsml_value(sub, p),
                            nfa_.lit("</\xEF\xBD\x9C" "DSML\xEF\xBD\x9Cparameter>\n")});
    parts.push_back(required.count(name) ? f : nfa_.opt(f));
  }
  return nfa_.seq(parts);
}

}  // namespace dsv4::constrain
