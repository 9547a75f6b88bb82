#include "tokenizer/stream_decoder.h"

#include "tokenizer/utf8.h"

namespace dsv4 {

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special) : tok_(&tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_->id_bytes(id, skip_special_);
  const std::size_t n = utf8::complete_prefix_len(pending_);
  if (n == 0) return {};
  std::string out = utf8::lossy(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = utf8::lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv4
