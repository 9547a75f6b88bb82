#include "tokenizer/pyjson.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace dsv4::pyjson {

std::string float_repr(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view s(buf, static_cast<std::size_t>(res.ptr - buf));
  std::string out;
  if (s.front() == '-') {
    out += '-';
    s.remove_prefix(1);
  }
  const auto epos = s.find('e');
  std::string digits;
  for (char c : s.substr(0, epos))
    if (c != '.') digits += c;
  const int exp = std::atoi(std::string(s.substr(epos + 1)).c_str());
  const int decpt = exp + 1;  // value = 0.DIGITS * 10^decpt
  const int nd = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (nd > 1) out += cat(".", digits.substr(1));
    const int e = decpt - 1;
    out += e < 0 ? "e-" : "e+";
    const int ae = e < 0 ? -e : e;
    if (ae < 10) out += '0';
    out += std::to_string(ae);
  } else if (decpt <= 0) {
    out += "0." + std::string(static_cast<std::size_t>(-decpt), '0') + digits;
  } else if (decpt >= nd) {
    out += digits + std::string(static_cast<std::size_t>(decpt - nd), '0') + ".0";
  } else {
    out += digits.substr(0, decpt) + "." + digits.substr(decpt);
  }
  return out;
}

std::string dumps_string(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

namespace {

void check_depth(int depth) {
  if (depth > kMaxDepth) throw Error(cat("JSON value nested deeper than ", kMaxDepth, " levels"));
}

void dump_to(const Value& v, std::string& out, int depth) {
  check_depth(depth);
  switch (v.kind) {
    case Value::Kind::Null: out += "null"; break;
    case Value::Kind::False: out += "false"; break;
    case Value::Kind::True: out += "true"; break;
    case Value::Kind::Int: out += v.text; break;
    case Value::Kind::Float: out += float_repr(v.number); break;
    case Value::Kind::String: out += dumps_string(v.text); break;
    case Value::Kind::Array:
      out += '[';
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        dump_to(v.items[i], out, depth + 1);
      }
      out += ']';
      break;
    case Value::Kind::Object:
      out += '{';
      for (std::size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ", ";
        out += dumps_string(v.members[i].first);
        out += ": ";
        dump_to(v.members[i].second, out, depth + 1);
      }
      out += '}';
      break;
  }
}

void dump_to(const nlohmann::ordered_json& v, std::string& out, int depth) {
  check_depth(depth);
  using T = nlohmann::ordered_json::value_t;
  switch (v.type()) {
    case T::null: out += "null"; break;
    case T::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case T::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case T::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case T::number_float: out += float_repr(v.get<double>()); break;
    case T::string: out += dumps_string(v.get_ref<const std::string&>()); break;
    case T::array: {
      out += '[';
      bool first = true;
      for (const auto& x : v) {
        if (!first) out += ", ";
        first = false;
        dump_to(x, out, depth + 1);
      }
      out += ']';
      break;
    }
    case T::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, x] : v.items()) {
        if (!first) out += ", ";
        first = false;
        out += dumps_string(k);
        out += ": ";
        dump_to(x, out, depth + 1);
      }
      out += '}';
      break;
    }
    default: throw Error("cannot serialize a binary JSON value");
  }
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  std::optional<Value> parse_document() {
    Value v;
    skip_ws();
    if (!parse_value(v, 0)) return std::nullopt;
    skip_ws();
    if (i_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool lit(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  static bool digit(char c) { return c >= '0' && c <= '9'; }

  bool parse_value(Value& v, int depth) {
    if (depth > kMaxDepth || i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '{') return parse_object(v, depth);
    if (c == '[') return parse_array(v, depth);
    if (c == '"') {
      v.kind = Value::Kind::String;
      return parse_string(v.text);
    }
    if (lit("null")) return v.kind = Value::Kind::Null, true;
    if (lit("true")) return v.kind = Value::Kind::True, true;
    if (lit("false")) return v.kind = Value::Kind::False, true;
    if (lit("NaN")) return v.kind = Value::Kind::Float, v.number = NAN, true;
    if (lit("Infinity")) return v.kind = Value::Kind::Float, v.number = INFINITY, true;
    if (lit("-Infinity")) return v.kind = Value::Kind::Float, v.number = -INFINITY, true;
    return parse_number(v);
  }

  bool parse_number(Value& v) {
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !digit(s_[i_])) return false;
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    bool is_float = false;
    if (i_ + 1 < s_.size() && s_[i_] == '.' && digit(s_[i_ + 1])) {
      is_float = true;
      i_ += 2;
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      std::size_t j = i_ + 1;
      if (j < s_.size() && (s_[j] == '+' || s_[j] == '-')) ++j;
      if (j < s_.size() && digit(s_[j])) {
        is_float = true;
        i_ = j;
        while (i_ < s_.size() && digit(s_[i_])) ++i_;
      }
    }
    const std::string raw(s_.substr(start, i_ - start));
    if (is_float) {
      v.kind = Value::Kind::Float;
      v.number = std::strtod(raw.c_str(), nullptr);
    } else {
      v.kind = Value::Kind::Int;
      v.text = raw == "-0" ? "0" : raw;
    }
    return true;
  }

  bool hex4(unsigned& out) {
    if (i_ + 4 > s_.size()) return false;
    out = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      out <<= 4;
      if (c >= '0' && c <= '9') out |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') out |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') out |= static_cast<unsigned>(c - 'A' + 10);
      else return false;
    }
    return true;
  }

  bool parse_string(std::string& out) {
    ++i_;  // opening quote
    out.clear();
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return false;  // strict mode rejects raw control characters
      if (c != '\\') {
        out += static_cast<char>(c);
        ++i_;
        continue;
      }
      if (++i_ >= s_.size()) return false;
      const char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned u;
          if (!hex4(u)) return false;
          char32_t cp = u;
          if (u >= 0xD800 && u <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
            const std::size_t save = i_;
            i_ += 2;
            unsigned lo;
            if (hex4(lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
              cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              i_ = save;
            }
          }
          // A lone surrogate has no UTF-8 form; Python would fail later when encoding the prompt.
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
          utf8::append(out, cp);
          break;
        }
        default: return false;
      }
    }
    return false;
  }

  bool parse_array(Value& v, int depth) {
    ++i_;
    v.kind = Value::Kind::Array;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
    while (true) {
      skip_ws();
      Value item;
      if (!parse_value(item, depth + 1)) return false;
      v.items.push_back(std::move(item));
      skip_ws();
      if (i_ >= s_.size()) return false;
      if (s_[i_] == ']') return ++i_, true;
      if (s_[i_] != ',') return false;
      ++i_;
    }
  }

  bool parse_object(Value& v, int depth) {
    ++i_;
    v.kind = Value::Kind::Object;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
    while (true) {
      skip_ws();
      if (i_ >= s_.size() || s_[i_] != '"') return false;
      std::string key;
      if (!parse_string(key)) return false;
      skip_ws();
      if (i_ >= s_.size() || s_[i_] != ':') return false;
      ++i_;
      skip_ws();
      Value item;
      if (!parse_value(item, depth + 1)) return false;
      bool replaced = false;
      for (auto& [k, x] : v.members)
        if (k == key) {
          x = std::move(item);
          replaced = true;
          break;
        }
      if (!replaced) v.members.emplace_back(std::move(key), std::move(item));
      skip_ws();
      if (i_ >= s_.size()) return false;
      if (s_[i_] == '}') return ++i_, true;
      if (s_[i_] != ',') return false;
      ++i_;
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

}  // namespace

std::optional<Value> loads(std::string_view text) { return Parser(text).parse_document(); }

std::string dumps(const Value& v) {
  std::string out;
  dump_to(v, out, 0);
  return out;
}

std::string dumps(const nlohmann::ordered_json& v) {
  std::string out;
  dump_to(v, out, 0);
  return out;
}

std::size_t too_deep_at(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string_view::npos;
}

}  // namespace dsv4::pyjson
