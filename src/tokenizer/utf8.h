// UTF-8 helpers shared by the tokenizer, the stream decoder and the chat parsers.
//
// Decoding follows the WHATWG / `String::from_utf8_lossy` rule: every maximal invalid subpart of
// the byte string becomes one U+FFFD. That rule is what the reference tokenizer applies when ids
// decode to bytes that are not valid UTF-8, and it is incremental by construction, which lets the
// stream decoder hold back only an unfinished trailing character and still match decode().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::utf8 {

// Appends the UTF-8 encoding of code point `cp` (must be <= 0x10FFFF).
void append(std::string& out, char32_t cp);

// Length of the valid UTF-8 character starting at s[i], or 0 if the bytes there are not the
// start of a complete valid character (invalid lead, bad continuation, or truncated).
std::size_t valid_char_len(std::string_view s, std::size_t i);

// Decodes the complete character at s[i] (caller checked valid_char_len > 0).
char32_t decode_at(std::string_view s, std::size_t i, std::size_t len);

// Length of the longest prefix of `s` that a lossy decoder can convert now without waiting for
// more bytes: everything except a trailing sequence that is a valid but unfinished character.
std::size_t complete_prefix_len(std::string_view s);

// Appends `s` to `out`, replacing each maximal invalid subpart by U+FFFD.
void append_lossy(std::string& out, std::string_view s);
std::string lossy(std::string_view s);

bool is_valid(std::string_view s);

}  // namespace dsv4::utf8
