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

}  // namespace

Kernels kernels_avx2() noexcept {
  return Kernels{kMR,          kNR,          gemm_avx2,        finish_avx2, panel_norms_avx2,
                 pack_f32_generic, pack_f16_generic, max_abs_avx2};
}

}  // namespace knn_detail
}  // namespace structcore
