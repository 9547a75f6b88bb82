// Internal: per-ISA bodies of kernels::sparse_attention. Each returns false for shapes it does
// not handle; the caller then runs the scalar reference.
#pragma once

#include "kernels/sparse_attention.h"

namespace dsv4::kernels::detail {

bool sparse_attention_avx512(const SparseAttentionArgs& a);

}  // namespace dsv4::kernels::detail
