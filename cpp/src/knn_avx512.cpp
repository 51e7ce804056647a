// AVX-512 micro-kernels of the knn driver (compiled with -mavx512f/bw/dq/vl -mfma -mf16c;
// only called when structcore::simd_level() reports AVX-512). See knn_impl.hpp.
// GCC 12's AVX-512 headers use _mm512_undefined_*() placeholders that trip -Wuninitialized
// false positives once inlined; they are not about this file's code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "knn_avx512_tile.hpp"
#include "knn_impl.hpp"
#include "structcore/knn.hpp"

namespace structcore {
namespace knn_detail {
namespace {

struct F32Fma {  // float32 panels: c += a * b
  using Word = float;
  using Vec = __m512;
  static Vec load(const float* p) { return _mm512_load_ps(p); }
  static Vec broadcast(float x) { return _mm512_set1_ps(x); }
  static __m512 madd(__m512 c, Vec a, Vec b) { return _mm512_fmadd_ps(a, b, c); }
};

std::uint32_t finish_avx512(float* tile, const float* qn, const float* bn, const float* tau,
                            int rows) {
  const __m512 bn0 = _mm512_loadu_ps(bn), bn1 = _mm512_loadu_ps(bn + 16);
  const __m512 two = _mm512_set1_ps(2.0f), zero = _mm512_setzero_ps();
  std::uint32_t mask = 0;
  for (int i = 0; i < rows; ++i) {
    const __m512 q = _mm512_set1_ps(qn[i]);
    const __m512 t = _mm512_set1_ps(tau[i]);
    float* row = tile + i * kAvx512NR;
    const __m512 d0 = _mm512_max_ps(
        _mm512_fnmadd_ps(two, _mm512_load_ps(row), _mm512_add_ps(q, bn0)), zero);
    const __m512 d1 = _mm512_max_ps(
        _mm512_fnmadd_ps(two, _mm512_load_ps(row + 16), _mm512_add_ps(q, bn1)), zero);
    _mm512_store_ps(row, d0);
    _mm512_store_ps(row + 16, d1);
    const __mmask16 m = static_cast<__mmask16>(_mm512_cmp_ps_mask(d0, t, _CMP_LT_OQ) |
                                               _mm512_cmp_ps_mask(d1, t, _CMP_LT_OQ));
    if (m) mask |= 1u << i;
  }
  return mask;
}

void panel_norms_avx512(const float* P, std::int64_t dim, int width, float* out) {
  if (width % 16 != 0) {
    for (int j = 0; j < width; ++j) out[j] = 0.0f;
    for (std::int64_t p = 0; p < dim; ++p)
      for (int j = 0; j < width; ++j) out[j] = out[j] + P[p * width + j] * P[p * width + j];
    return;
  }
  for (int j0 = 0; j0 < width; j0 += 16) {
    __m512 s = _mm512_setzero_ps();
    for (std::int64_t p = 0; p < dim; ++p) {
      const __m512 v = _mm512_loadu_ps(P + p * width + j0);
      s = _mm512_fmadd_ps(v, v, s);
    }
    _mm512_storeu_ps(out + j0, s);
  }
}

std::uint32_t max_abs_avx512(const float* x, std::int64_t n) {
  __m512i m = _mm512_setzero_si512();
  const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_loadu_si512(x + i), absmask));
  std::uint32_t r = _mm512_reduce_max_epu32(m);
  const std::uint32_t tail = max_abs_generic(x + i, n - i);
  return tail > r ? tail : r;
}

// Scaling by 2^s in float equals the exact double product rounded once, as long as 2^s is
// a normal float; outside that range the generic (double) path is used.
inline bool float_scale_ok(double scale) { return scale >= 0x1p-126 && scale <= 0x1p127; }

inline __m512 unpacklo_pd(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
inline __m512 unpackhi_pd(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}

// In-register 16 x 16 transpose: r[i] holds row i on entry and column i on exit
// (4 stages of 16 shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {
    r[4 * g] = unpacklo_pd(t[4 * g], t[4 * g + 2]);
    r[4 * g + 1] = unpackhi_pd(t[4 * g], t[4 * g + 2]);
    r[4 * g + 2] = unpacklo_pd(t[4 * g + 1], t[4 * g + 3]);
    r[4 * g + 3] = unpackhi_pd(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

// Transpose-pack 16 rows at a time: 16 contiguous values of each row (converted and scaled
// by load_row) -> one in-register 16 x 16 transpose -> 16 panel lines.
template <class LoadRow>
void pack_blocks(int rows, std::int64_t dim, int width, float* P, const LoadRow& load_row) {
  __m512 r[16];
  for (int r0 = 0; r0 < width; r0 += 16) {
    const int nr = rows - r0 < 16 ? (rows - r0 > 0 ? rows - r0 : 0) : 16;
    std::int64_t p0 = 0;
    for (; p0 + 16 <= dim; p0 += 16) {
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) r[i] = i < nr ? load_row(r0 + i, p0) : _mm512_setzero_ps();
      transpose16(r);
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) _mm512_store_ps(P + (p0 + c) * width + r0, r[c]);
    }
    for (; p0 < dim; ++p0)
      for (int i = 0; i < 16; ++i)
        P[p0 * width + r0 + i] = i < nr ? load_row.scalar(r0 + i, p0) : 0.0f;
  }
}

// Row loaders of pack_blocks: 16 values of row r from depth p, scaled (exact: sf is a normal
// power of two, or the product underflows as in the generic path) and centred (one
// rounding, as pack_*_generic).
struct F32Rows {
  using Src = float;
  static constexpr auto generic = pack_f32_generic;
  const float* src;
  std::int64_t ld;
  const float* centre;  // dim floats, already scaled
  __m512 s;
  float sf;
  __m512 operator()(int r, std::int64_t p) const {
    return _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(src + r * ld + p), s),
                         _mm512_loadu_ps(centre + p));
  }
  float scalar(int r, std::int64_t p) const { return src[r * ld + p] * sf - centre[p]; }
};

struct F16Rows {
  using Src = std::uint16_t;
  static constexpr auto generic = pack_f16_generic;
  const std::uint16_t* src;
  std::int64_t ld;
  const float* centre;
  __m512 s;
  float sf;
  __m512 operator()(int r, std::int64_t p) const {
    const __m512 x =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + r * ld + p)));
    return _mm512_sub_ps(_mm512_mul_ps(x, s), _mm512_loadu_ps(centre + p));
  }
  float scalar(int r, std::int64_t p) const { return half_to_float(src[r * ld + p]) * sf - centre[p]; }
};

// Rows::Src panels via pack_blocks; the generic (double) path where the float product would
// not be exact or the width is not a whole number of vectors.
template <class Rows>
void pack_avx512(const typename Rows::Src* src, std::int64_t ld, int rows, std::int64_t dim,
                 const float* centre, double scale, int width, float* P) {
  if (!float_scale_ok(scale) || width % 16 != 0) {
    Rows::generic(src, ld, rows, dim, centre, scale, width, P);
    return;
  }
  const float sf = static_cast<float>(scale);
  pack_blocks(rows, dim, width, P, Rows{src, ld, centre, _mm512_set1_ps(sf), sf});
}

}  // namespace

Kernels kernels_avx512() noexcept {
  return Kernels{kAvx512MR,          kAvx512NR,          gemm_14x32<F32Fma>,   finish_avx512,
                 panel_norms_avx512, pack_avx512<F32Rows>, pack_avx512<F16Rows>, max_abs_avx512};
}

}  // namespace knn_detail
}  // namespace structcore
