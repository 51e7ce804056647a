// AVX-512 BF16 candidate-pass kernels of the knn driver (compiled with -mavx512bf16; only
// called when structcore::cpu_has_avx512_bf16()). Experimental: see knn_impl.hpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>
#include <limits>

#include "knn_impl.hpp"

namespace structcore {
namespace knn_detail {
namespace {

constexpr int kMR = 14;
constexpr int kNR = 32;

void gemm_bf16(std::int64_t kc2, const std::uint32_t* A, const std::uint32_t* B, float* tile,
               bool accumulate) {
  __m512 c0[kMR], c1[kMR];
  if (accumulate) {
#pragma GCC unroll 14
    for (int i = 0; i < kMR; ++i) {
      c0[i] = _mm512_load_ps(tile + i * kNR);
      c1[i] = _mm512_load_ps(tile + i * kNR + 16);
    }
  } else {
#pragma GCC unroll 14
    for (int i = 0; i < kMR; ++i) {
      c0[i] = _mm512_setzero_ps();
      c1[i] = _mm512_setzero_ps();
    }
  }
  for (std::int64_t p = 0; p < kc2; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(B);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(B + 16);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * kNR), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * kNR + 16), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int i = 0; i < kMR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[i]));
      c0[i] = _mm512_dpbf16_ps(c0[i], a, b0);
      c1[i] = _mm512_dpbf16_ps(c1[i], a, b1);
    }
    A += kMR;
    B += kNR;
  }
#pragma GCC unroll 14
  for (int i = 0; i < kMR; ++i) {
    _mm512_store_ps(tile + i * kNR, c0[i]);
    _mm512_store_ps(tile + i * kNR + 16, c1[i]);
  }
}

inline __m512i bf16_words(__m512 x) {
  // 16 floats -> 16 bf16 (round to nearest even) zero-extended to 32-bit lanes
  return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
}

void to_pairs_bf16(const float* P, std::int64_t dim, int width, std::uint32_t* out) {
  const std::int64_t d2 = (dim + 1) / 2;
  if (width % 16 != 0) {
    for (std::int64_t p2 = 0; p2 < d2; ++p2)
      for (int j = 0; j < width; ++j) {
        // scalar lanes through the same vector conversion (identical rounding)
        const float lo = P[2 * p2 * width + j];
        const float hi = 2 * p2 + 1 < dim ? P[(2 * p2 + 1) * width + j] : 0.0f;
        alignas(64) std::uint32_t w[16];
        _mm512_store_si512(w, _mm512_or_si512(bf16_words(_mm512_set1_ps(lo)),
                                              _mm512_slli_epi32(bf16_words(_mm512_set1_ps(hi)), 16)));
        out[p2 * width + j] = w[0];
      }
    return;
  }
  for (std::int64_t p2 = 0; p2 < d2; ++p2) {
    const float* l0 = P + 2 * p2 * width;
    const float* l1 = P + (2 * p2 + 1) * width;
    const bool has_hi = 2 * p2 + 1 < dim;
    for (int j = 0; j < width; j += 16) {
      const __m512i lo = bf16_words(_mm512_loadu_ps(l0 + j));
      const __m512i hi = has_hi ? bf16_words(_mm512_loadu_ps(l1 + j)) : _mm512_setzero_si512();
      _mm512_storeu_si512(out + p2 * width + j, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

std::uint32_t finish_bf16(float* tile, float* utile, const float* qn, const float* qr,
                          const float* bn, const float* br, int cols, float c1, float c2,
                          float c3, const float* tau, int rows) {
  const __mmask16 v0 = static_cast<__mmask16>(cols >= 16 ? 0xffff : (1u << cols) - 1u);
  const __mmask16 v1 = static_cast<__mmask16>(
      cols >= 32 ? 0xffff : (cols > 16 ? (1u << (cols - 16)) - 1u : 0u));
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  const __m512 bn0 = _mm512_loadu_ps(bn), bn1 = _mm512_loadu_ps(bn + 16);
  const __m512 br0 = _mm512_loadu_ps(br), br1 = _mm512_loadu_ps(br + 16);
  const __m512 two = _mm512_set1_ps(2.0f), zero = _mm512_setzero_ps();
  const __m512 vc2 = _mm512_set1_ps(c2), vc3 = _mm512_set1_ps(c3);
  std::uint32_t mask = 0;
  for (int i = 0; i < rows; ++i) {
    const __m512 q = _mm512_set1_ps(qn[i]);
    const __m512 qc1 = _mm512_set1_ps(c1 * qr[i]);
    const __m512 t = _mm512_set1_ps(tau[i]);
    float* row = tile + i * kNR;
    float* urow = utile + i * kNR;
    __mmask16 any = 0;
    for (int h = 0; h < 2; ++h) {
      const __m512 s = _mm512_add_ps(q, h ? bn1 : bn0);
      const __m512 d = _mm512_max_ps(_mm512_fnmadd_ps(two, _mm512_load_ps(row + 16 * h), s), zero);
      const __m512 e = _mm512_fmadd_ps(qc1, h ? br1 : br0, _mm512_fmadd_ps(vc2, s, vc3));
      const __mmask16 valid = h ? v1 : v0;
      const __m512 lo = _mm512_mask_blend_ps(valid, inf, _mm512_sub_ps(d, e));
      const __m512 up = _mm512_mask_blend_ps(valid, inf, _mm512_add_ps(d, e));
      _mm512_store_ps(row + 16 * h, lo);
      _mm512_store_ps(urow + 16 * h, up);
      any |= _mm512_mask_cmp_ps_mask(valid, lo, t, _CMP_LE_OQ);
    }
    if (any) mask |= 1u << i;
  }
  return mask;
}

}  // namespace

Bf16Kernels kernels_avx512bf16() noexcept {
  return Bf16Kernels{kMR, kNR, gemm_bf16, to_pairs_bf16, finish_bf16};
}

}  // namespace knn_detail
}  // namespace structcore
