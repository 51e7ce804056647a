// AVX2 + FMA micro-kernels of the knn driver (compiled with -mavx2 -mfma -mf16c; only called
// when structcore::simd_level() reports AVX2 or wider). See knn_impl.hpp.
#include <immintrin.h>

#include "knn_impl.hpp"
#include "structcore/knn.hpp"

namespace structcore {
namespace knn_detail {
namespace {

constexpr int kMR = 6;   // 6 x 2 accumulators + 2 bank vectors + 1 broadcast: 15 of 16 ymm
constexpr int kNR = 16;

void gemm_avx2(std::int64_t kc, const float* A, const float* B, float* tile, bool accumulate) {
  __m256 c0[kMR], c1[kMR];
  if (accumulate) {
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      c0[i] = _mm256_load_ps(tile + i * kNR);
      c1[i] = _mm256_load_ps(tile + i * kNR + 8);
    }
  } else {
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      c0[i] = _mm256_setzero_ps();
      c1[i] = _mm256_setzero_ps();
    }
  }
  for (std::int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(B);
    const __m256 b1 = _mm256_load_ps(B + 8);
    _mm_prefetch(reinterpret_cast<const char*>(B + 8 * kNR), _MM_HINT_T0);
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const __m256 a = _mm256_broadcast_ss(A + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
    A += kMR;
    B += kNR;
  }
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile + i * kNR, c0[i]);
    _mm256_store_ps(tile + i * kNR + 8, c1[i]);
  }
}

std::uint32_t finish_avx2(float* tile, const float* qn, const float* bn, const float* tau,
                          int rows) {
  const __m256 bn0 = _mm256_loadu_ps(bn), bn1 = _mm256_loadu_ps(bn + 8);
  const __m256 two = _mm256_set1_ps(2.0f), zero = _mm256_setzero_ps();
  std::uint32_t mask = 0;
  for (int i = 0; i < rows; ++i) {
    const __m256 q = _mm256_set1_ps(qn[i]);
    const __m256 t = _mm256_set1_ps(tau[i]);
    float* row = tile + i * kNR;
    const __m256 d0 =
        _mm256_max_ps(_mm256_fnmadd_ps(two, _mm256_load_ps(row), _mm256_add_ps(q, bn0)), zero);
    const __m256 d1 = _mm256_max_ps(
        _mm256_fnmadd_ps(two, _mm256_load_ps(row + 8), _mm256_add_ps(q, bn1)), zero);
    _mm256_store_ps(row, d0);
    _mm256_store_ps(row + 8, d1);
    const int m = _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(d0, t, _CMP_LT_OQ),
                                                  _mm256_cmp_ps(d1, t, _CMP_LT_OQ)));
    if (m) mask |= 1u << i;
  }
  return mask;
}

void panel_norms_avx2(const float* P, std::int64_t dim, int width, float* out) {
  if (width % 8 != 0) {
    for (int j = 0; j < width; ++j) out[j] = 0.0f;
    for (std::int64_t p = 0; p < dim; ++p)
      for (int j = 0; j < width; ++j) out[j] = out[j] + P[p * width + j] * P[p * width + j];
    return;
  }
  for (int j0 = 0; j0 < width; j0 += 8) {
    __m256 s = _mm256_setzero_ps();
    for (std::int64_t p = 0; p < dim; ++p) {
      const __m256 v = _mm256_loadu_ps(P + p * width + j0);
      s = _mm256_fmadd_ps(v, v, s);
    }
    _mm256_storeu_ps(out + j0, s);
  }
}

std::uint32_t max_abs_avx2(const float* x, std::int64_t n) {
  __m256i m = _mm256_setzero_si256();
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_epu32(
        m, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), absmask));
  alignas(32) std::uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m);
  std::uint32_t r = max_abs_generic(x + i, n - i);
  for (int l = 0; l < 8; ++l) r = lanes[l] > r ? lanes[l] : r;
  return r;
}

// In-register 8 x 8 transpose: r[i] holds row i on entry and column i on exit.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {
    u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Row loaders: 8 values of row r from depth p, scaled (exact: sf is a normal power of two,
// or the product underflows exactly as the generic double path rounds it) and centred (one
// rounding): the same bits as pack_*_generic.
struct F32Rows {
  static constexpr auto generic = pack_f32_generic;
  using Src = float;
  const float* src;
  std::int64_t ld;
  const float* centre;
  __m256 s;
  float sf;
  __m256 operator()(int r, std::int64_t p) const {
    return _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(src + r * ld + p), s),
                         _mm256_loadu_ps(centre + p));
  }
  float scalar(int r, std::int64_t p) const { return src[r * ld + p] * sf - centre[p]; }
};

struct F16Rows {
  static constexpr auto generic = pack_f16_generic;
  using Src = std::uint16_t;
  const std::uint16_t* src;
  std::int64_t ld;
  const float* centre;
  __m256 s;
  float sf;
  __m256 operator()(int r, std::int64_t p) const {
    const __m256 x =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * ld + p)));
    return _mm256_sub_ps(_mm256_mul_ps(x, s), _mm256_loadu_ps(centre + p));
  }
  float scalar(int r, std::int64_t p) const {
    return half_to_float(src[r * ld + p]) * sf - centre[p];
  }
};

// Transpose-pack 8 rows x 8 depth values at a time; the generic (double) path where the
// float product would not be exact or the width is not a whole number of vectors.
template <class Rows>
void pack_avx2(const typename Rows::Src* src, std::int64_t ld, int rows, std::int64_t dim,
               const float* centre, double scale, int width, float* P) {
  if (!(scale >= 0x1p-126 && scale <= 0x1p127) || width % 8 != 0) {
    Rows::generic(src, ld, rows, dim, centre, scale, width, P);
    return;
  }
  const float sf = static_cast<float>(scale);
  const Rows load_row{src, ld, centre, _mm256_set1_ps(sf), sf};
  __m256 r[8];
  for (int r0 = 0; r0 < width; r0 += 8) {
    const int nr = rows - r0 < 8 ? (rows - r0 > 0 ? rows - r0 : 0) : 8;
    std::int64_t p0 = 0;
    for (; p0 + 8 <= dim; p0 += 8) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) r[i] = i < nr ? load_row(r0 + i, p0) : _mm256_setzero_ps();
      transpose8(r);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(P + (p0 + c) * width + r0, r[c]);
    }
    for (; p0 < dim; ++p0)
      for (int i = 0; i < 8; ++i)
        P[p0 * width + r0 + i] = i < nr ? load_row.scalar(r0 + i, p0) : 0.0f;
  }
}

}  // namespace

Kernels kernels_avx2() noexcept {
  return Kernels{kMR,          kNR,          gemm_avx2,        finish_avx2, panel_norms_avx2,
                 pack_avx2<F32Rows>, pack_avx2<F16Rows>, max_abs_avx2};
}

}  // namespace knn_detail
}  // namespace structcore
