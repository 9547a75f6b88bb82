// Byte-level BPE model (tokenizer.json "model" of type BPE): vocabulary, merge ranks and the
// merge loop applied to one pre-tokenized piece.
//
// Symbols are kept as vocabulary ids from the start (each byte has its own token), and merges
// are looked up by id pair, so no strings are built while encoding. The merge loop uses a heap of
// candidate pairs ordered by (rank, position): pieces can be thousands of bytes long (a run of
// 1,000 letters is one piece), and the textbook "rescan for the best pair" loop is quadratic.
// Results for short pieces are memoised in a per-thread cache (words repeat a lot in text),
// which keeps encode() lock-free when several threads share one tokenizer.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4 {

class BpeModel {
 public:
  // `model` is the tokenizer.json "model" value.
  static BpeModel from_json(const nlohmann::json& model);

  // Appends the ids of the UTF-8 bytes of `piece` after merging.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  // Vocabulary entries as (id, token string in the byte alphabet).
  const std::vector<std::pair<int32_t, std::string>>& entries() const { return entries_; }
  std::size_t merge_count() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge(std::string_view piece, std::vector<int32_t>& out) const;

  uint64_t instance_ = 0;  // identifies the model in the per-thread cache
  std::array<int32_t, 256> byte_ids_{};
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<std::pair<int32_t, std::string>> entries_;
};

}  // namespace dsv4
