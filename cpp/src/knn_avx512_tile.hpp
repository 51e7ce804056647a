// The 14 x 32 register-tiled micro-kernel loop shared by the AVX-512 float32 (knn_avx512.cpp)
// and AVX-512 BF16 (knn_avx512bf16.cpp) candidate passes. Header-only and included only by
// those two files, so each instantiation is compiled with its file's ISA flags; it uses
// AVX-512F intrinsics only. Not installed.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace structcore {
namespace knn_detail {

constexpr int kAvx512MR = 14;  // 14 x 2 accumulators + 2 bank vectors: 30 of the 32 zmm
constexpr int kAvx512NR = 32;

// tile (MR x NR floats, 64-byte aligned) = (accumulate ? tile : 0) + sum over kc depth steps
// of Op::madd(c, broadcast A[i], B row). A: kc * MR words, B: kc * NR words (64-byte
// aligned). Op supplies the word type and vector ops: `using Word`, `using Vec`,
// `static Vec load(const Word*)` (16 words), `static Vec broadcast(Word)` and
// `static __m512 madd(__m512 c, Vec a, Vec b)`. The prefetch runs 8 depth steps ahead.
template <class Op>
inline void gemm_14x32(std::int64_t kc, const typename Op::Word* A,
                       const typename Op::Word* B, float* tile, bool accumulate) {
  constexpr int MR = kAvx512MR, NR = kAvx512NR;
  __m512 c0[MR], c1[MR];
  if (accumulate) {
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm512_load_ps(tile + i * NR);
      c1[i] = _mm512_load_ps(tile + i * NR + 16);
    }
  } else {
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm512_setzero_ps();
      c1[i] = _mm512_setzero_ps();
    }
  }
  for (std::int64_t p = 0; p < kc; ++p) {
    const typename Op::Vec b0 = Op::load(B);
    const typename Op::Vec b1 = Op::load(B + 16);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * NR), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * NR + 16), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      const typename Op::Vec a = Op::broadcast(A[i]);
      c0[i] = Op::madd(c0[i], a, b0);
      c1[i] = Op::madd(c1[i], a, b1);
    }
    A += MR;
    B += NR;
  }
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    _mm512_store_ps(tile + i * NR, c0[i]);
    _mm512_store_ps(tile + i * NR + 16, c1[i]);
  }
}

}  // namespace knn_detail
}  // namespace structcore
