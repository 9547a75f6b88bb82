// The GPT-2 byte alphabet used by byte-level BPE: each of the 256 byte values is shown as one
// printable code point, so that vocabulary entries and merges are plain strings. Printable
// Latin-1 bytes map to themselves; the other 68 map, in byte order, to U+0100.. (space → `Ġ`,
// `\n` → `Ċ`).
#pragma once

#include <array>
#include <cstdint>

namespace dsv4::byte_level {

// byte value -> code point of its alphabet character
inline const std::array<char32_t, 256>& byte_to_char() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

// code point -> byte value, or -1 for code points outside the alphabet (< 0x144 suffices)
inline int char_to_byte(char32_t cp) {
  static const std::array<int16_t, 0x144> table = [] {
    std::array<int16_t, 0x144> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_char()[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

}  // namespace dsv4::byte_level
