// Incremental detokenization for streaming generation: ids arrive one at a time and text is
// released only once it forms complete UTF-8 characters (an emoji is often split over two
// tokens). Invalid byte sequences become U+FFFD exactly as in Tokenizer::decode, so the
// concatenation of all push() results and finish() equals decode(all ids).
#pragma once

#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace dsv4 {

class StreamDecoder {
 public:
  // Keeps a reference to `tok`, which must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);

  // Text that became complete with this id (often empty).
  std::string push(int32_t id);
  // Flushes held-back bytes (an unfinished character becomes U+FFFD) and resets the decoder.
  std::string finish();
  // Bytes held back, waiting for the rest of a character.
  std::size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace dsv4
