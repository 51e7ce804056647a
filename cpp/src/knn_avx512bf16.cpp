// AVX-512 BF16 candidate-pass kernels of the knn driver (compiled with -mavx512bf16; only
// called when structcore::cpu_has_avx512_bf16()). Experimental: see knn_impl.hpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>
#include <limits>

#include "knn_avx512_tile.hpp"
#include "knn_impl.hpp"

namespace structcore {
namespace knn_detail {
namespace {

struct Bf16Dot {  // bf16 pair panels: c += a.lo * b.lo + a.hi * b.hi (vdpbf16ps)
  using Word = std::uint32_t;
  using Vec = __m512bh;
  static Vec load(const std::uint32_t* p) { return (__m512bh)_mm512_load_si512(p); }
  static Vec broadcast(std::uint32_t x) {
    return (__m512bh)_mm512_set1_epi32(static_cast<int>(x));
  }
  static __m512 madd(__m512 c, Vec a, Vec b) { return _mm512_dpbf16_ps(c, a, b); }
};

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
    float* row = tile + i * kAvx512NR;
    float* urow = utile + i * kAvx512NR;
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

// Query operand of the register-tiled kernel: the same pair panel as the bank's (d2p is
// ceil(dim / 2): depth_align 1).
void to_pairs_a_bf16(const float* P, std::int64_t dim, int width, std::int64_t,
                     std::uint32_t* out) {
  to_pairs_bf16(P, dim, width, out);
}

}  // namespace

Bf16Kernels kernels_avx512bf16() noexcept {
  return Bf16Kernels{kAvx512MR,   kAvx512NR,       gemm_14x32<Bf16Dot>, to_pairs_bf16,
                     finish_bf16, to_pairs_a_bf16, 1,                   nullptr,
                     nullptr};
}

}  // namespace knn_detail
}  // namespace structcore
