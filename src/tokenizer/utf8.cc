#include "tokenizer/utf8.h"

namespace dsv4::utf8 {

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {

// For a lead byte: the total length of its character and the allowed range of the second byte
// (the ranges exclude overlongs, surrogates and code points above U+10FFFF). Length 0 = invalid.
struct Lead {
  int len;
  unsigned char lo, hi;
};

Lead lead_info(unsigned char b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes from s[i] that form a valid prefix of a character (the maximal subpart), and
// whether that prefix is a complete character.
std::size_t subpart(std::string_view s, std::size_t i, bool& complete) {
  const auto b = static_cast<unsigned char>(s[i]);
  const Lead l = lead_info(b);
  complete = false;
  if (l.len == 0) return 0;
  if (l.len == 1) {
    complete = true;
    return 1;
  }
  std::size_t n = 1;
  while (n < static_cast<std::size_t>(l.len) && i + n < s.size()) {
    const auto c = static_cast<unsigned char>(s[i + n]);
    const unsigned char lo = n == 1 ? l.lo : 0x80, hi = n == 1 ? l.hi : 0xBF;
    if (c < lo || c > hi) return n;
    ++n;
  }
  complete = n == static_cast<std::size_t>(l.len);
  return n;
}

}  // namespace

std::size_t valid_char_len(std::string_view s, std::size_t i) {
  bool complete;
  const std::size_t n = subpart(s, i, complete);
  return complete ? n : 0;
}

char32_t decode_at(std::string_view s, std::size_t i, std::size_t len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (len == 1) return b0;
  char32_t cp = b0 & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

std::size_t complete_prefix_len(std::string_view s) {
  // Only the last 3 bytes can start an unfinished character.
  const std::size_t from = s.size() > 3 ? s.size() - 3 : 0;
  for (std::size_t i = from; i < s.size(); ++i) {
    bool complete;
    const std::size_t n = subpart(s, i, complete);
    if (n > 0 && !complete && i + n == s.size()) return i;
  }
  return s.size();
}

void append_lossy(std::string& out, std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    bool complete;
    const std::size_t n = subpart(s, i, complete);
    if (complete) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += n == 0 ? 1 : n;
    }
  }
}

std::string lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_lossy(out, s);
  return out;
}

bool is_valid(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    const std::size_t n = valid_char_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace dsv4::utf8
