// Cached KV rows in the form the numerics leaves them in (spec §3.6).
//
// Reference numerics rounds cached vectors onto low-precision grids before anyone reads them:
// window and compressed KV rows have their non-rope dims FP8-simulated per 64, indexer keys are
// FP4-simulated per 32. Such a row is stored exactly as
//   kFp8Nope: [nope] E4M3 codes, [nope/64] UE8M0 scales, [rope] F32   (711 B for 448 + 64 dims)
//   kFp4:     [dim/2] E2M1 code pairs (low nibble first), [dim/32] UE8M0 scales  (68 B for 128)
// instead of [dim] F32 (kF32, plain numerics: nothing is rounded, nothing is compacted).
// The rope dims stay F32: our reference numerics keeps activations in F32 like the golden
// reference runs (no BF16 rounding anywhere); the official BF16 engine holds them as BF16
// (583 B per row, the spec's ~3.5 KB/token for Flash), which here would be a lossy step.
// Storing is lossless by construction, and every store checks it: a row that does not decode
// back to the same floats is an internal error, never a silent change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace dsv4 {

enum class KvFormat { kF32, kFp8Nope, kFp4 };

class KvRows {
 public:
  KvRows() = default;
  // rope_dim: trailing dims kept in BF16 (kFp8Nope only).
  KvRows(KvFormat format, int64_t dim, int64_t rope_dim = 0);

  KvFormat format() const { return format_; }
  int64_t dim() const { return dim_; }
  int64_t size() const { return row_bytes_ ? int64_t(data_.size() / row_bytes_) : 0; }
  size_t row_bytes() const { return row_bytes_; }
  size_t bytes() const { return data_.capacity(); }

  void resize(int64_t rows);                  // new rows decode as zeros
  void reserve(int64_t rows);                 // room for `rows` without reallocating
  void set(int64_t i, const float* row);      // row: [dim]
  void push_back(const float* row);
  void get(int64_t i, float* out) const;      // out: [dim]
  // Row i's stored bytes (row_bytes() of them; rows follow each other): kernels read FP4 codes.
  const uint8_t* row_data(int64_t i) const { return data_.data() + size_t(i) * row_bytes_; }

  // The stored bytes, [size(), row_bytes()], and their replacement by such bytes (state files
  // keep rows exactly as stored; the caller checks the length is a multiple of row_bytes()).
  std::span<const uint8_t> raw() const { return data_; }
  void assign_raw(std::span<const uint8_t> bytes) { data_.assign(bytes.begin(), bytes.end()); }

  // Bytes one row takes in `format` (inspect's KV size per token).
  static size_t row_bytes_for(KvFormat format, int64_t dim, int64_t rope_dim);

 private:
  void encode(const float* row, uint8_t* dst) const;
  void decode(const uint8_t* src, float* out) const;

  KvFormat format_ = KvFormat::kF32;
  int64_t dim_ = 0, rope_dim_ = 0;
  size_t row_bytes_ = 0;
  std::vector<uint8_t> data_;  // [size(), row_bytes_]
};

}  // namespace dsv4
