#include "model/kv_rows.h"

#include <algorithm>
#include <cstring>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/quant.h"

namespace dsv4 {

namespace {
constexpr int kFp8Block = 64, kFp4Block = 32;
}

size_t KvRows::row_bytes_for(KvFormat format, int64_t dim, int64_t rope_dim) {
  switch (format) {
    case KvFormat::kF32: return size_t(dim) * 4;
    case KvFormat::kFp8Nope: {
      const int64_t nope = dim - rope_dim;
      return size_t(nope + nope / kFp8Block + rope_dim * 4);
    }
    case KvFormat::kFp4: return size_t(dim / 2 + dim / kFp4Block);
  }
  return 0;
}

KvRows::KvRows(KvFormat format, int64_t dim, int64_t rope_dim) : format_(format), dim_(dim), rope_dim_(rope_dim) {
  DSV4_CHECK(dim > 0 && rope_dim >= 0 && rope_dim <= dim, "KV rows of ", dim, " dims with ", rope_dim, " rope dims");
  if (format == KvFormat::kFp8Nope)
    DSV4_CHECK((dim - rope_dim) % kFp8Block == 0, "FP8 KV: ", dim - rope_dim, " non-rope dims, not a multiple of 64");
  if (format == KvFormat::kFp4) DSV4_CHECK(dim % kFp4Block == 0, "FP4 KV: ", dim, " dims, not a multiple of 32");
  row_bytes_ = row_bytes_for(format, dim, rope_dim);
}

void KvRows::resize(int64_t rows) { data_.resize(size_t(rows) * row_bytes_, 0); }

void KvRows::reserve(int64_t rows) { data_.reserve(size_t(rows) * row_bytes_); }

void KvRows::set(int64_t i, const float* row) {
  DSV4_CHECK(i >= 0 && i < size(), "KV row ", i, " of ", size());
  encode(row, data_.data() + size_t(i) * row_bytes_);
}

void KvRows::push_back(const float* row) {
  // Grow by an eighth (at least 16 rows), not the vector's doubling: the state's measured bytes
  // stay within 1/8 of its rows' bytes at any context (inspect's KV bytes per token holds), for
  // about 8 copies of a row over its life.
  if (data_.size() + row_bytes_ > data_.capacity())
    data_.reserve(data_.size() + std::max(data_.size() / 8 / row_bytes_, size_t(16)) * row_bytes_);
  data_.resize(data_.size() + row_bytes_);
  encode(row, data_.data() + data_.size() - row_bytes_);
}

void KvRows::get(int64_t i, float* out) const {
  DSV4_CHECK(i >= 0 && i < size(), "KV row ", i, " of ", size());
  decode(data_.data() + size_t(i) * row_bytes_, out);
}

void KvRows::encode(const float* row, uint8_t* dst) const {
  ArenaScope scope;
  if (format_ == KvFormat::kF32) {
    std::memcpy(dst, row, row_bytes_);
    return;
  }
  if (format_ == KvFormat::kFp8Nope) {
    const int64_t nope = dim_ - rope_dim_;
    kernels::fp8_quantize(row, nope, kFp8Block, dst, dst + nope);
    std::memcpy(dst + nope + nope / kFp8Block, row + nope, size_t(rope_dim_) * 4);
  } else {
    Scratch<uint8_t> codes(static_cast<size_t>(dim_));
    kernels::fp4_quantize(row, dim_, kFp4Block, codes.data(), dst + dim_ / 2);
    for (int64_t k = 0; k < dim_; k += 2) dst[k / 2] = uint8_t(codes[size_t(k)] | (codes[size_t(k + 1)] << 4));
  }
  // Lossless by construction (the row is already on this grid); checked, since a row that is
  // not would change every later attention result without a trace.
  Scratch<float> back(static_cast<size_t>(dim_));
  decode(dst, back.data());
  DSV4_CHECK(std::memcmp(back.data(), row, size_t(dim_) * 4) == 0,
             "a KV row is not on its storage grid (it must be QAT-rounded before it is cached)");
}

void KvRows::decode(const uint8_t* src, float* out) const {
  switch (format_) {
    case KvFormat::kF32: std::memcpy(out, src, row_bytes_); return;
    case KvFormat::kFp8Nope: {
      const int64_t nope = dim_ - rope_dim_;
      const uint8_t* scales = src + nope;
      for (int64_t b = 0; b < nope / kFp8Block; ++b) {
        const float s = e8m0_to_f32(scales[b]);
        for (int64_t k = b * kFp8Block; k < (b + 1) * kFp8Block; ++k) out[k] = e4m3_to_f32(src[k]) * s;
      }
      std::memcpy(out + nope, scales + nope / kFp8Block, size_t(rope_dim_) * 4);
      return;
    }
    case KvFormat::kFp4: {
      const uint8_t* scales = src + dim_ / 2;
      for (int64_t k = 0; k < dim_; ++k) out[k] = fp4_packed_at(src, size_t(k)) * e8m0_to_f32(scales[k / kFp4Block]);
      return;
    }
  }
}

}  // namespace dsv4
