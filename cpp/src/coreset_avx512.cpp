// AVX-512 fused pass of the greedy coreset (compiled with -mavx512f/bw/dq/vl -mf16c; called
// only when simd_level() == AVX512). Follows the canonical summation order of coreset.hpp:
// one zmm accumulator per point (lane l <- coordinates l, l+16, ...), mul and add kept
// separate (no FMA), then the tree l+8, l+4, l+2, l+1.
#include "structcore/coreset.hpp"

#if defined(STRUCTCORE_X86)
#include <immintrin.h>

#include <cmath>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
// GCC 12's _mm512_cvtph_ps / _mm512_extract* pass _mm*_undefined_*() and trip a false
// -Wmaybe-uninitialized at every inlined call site.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace structcore::detail {
namespace {

inline __m512 load16(const float* p) noexcept { return _mm512_loadu_ps(p); }
inline __m512 load16(const std::uint16_t* p) noexcept {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load16_masked(const float* p, __mmask16 m) noexcept {
  return _mm512_maskz_loadu_ps(m, p);
}
inline __m512 load16_masked(const std::uint16_t* p, __mmask16 m) noexcept {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

inline float reduce_tree(__m512 v) noexcept {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm512_extractf32x8_ps(v, 1);
  const __m256 s8 = _mm256_add_ps(lo, hi);  // l + (l + 8)
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // l + (l + 2)
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));  // 0 + 1
  return _mm_cvtss_f32(s1);
}

inline __m512 accumulate(__m512 acc, __m512 x, __m512 c) noexcept {
  const __m512 d = _mm512_sub_ps(x, c);
  // Multiply and add stay two roundings: fp-contract is off in this file (checked in the
  // disassembly: no vfmadd).
  return _mm512_add_ps(acc, _mm512_mul_ps(d, d));
}

constexpr int kBlock = 8;  // points in flight: independent accumulation chains

}  // namespace

template <class T>
ChunkBest coreset_pass_avx512(const T* points, std::int64_t dim, const float* center,
                              std::int64_t begin, std::int64_t end, float* min_dist) noexcept {
  ChunkBest best{-INFINITY, -1};
  const std::int64_t groups = dim / 16;
  const int rem = static_cast<int>(dim % 16);
  const __mmask16 tail = static_cast<__mmask16>((1u << rem) - 1u);

  auto finish = [&](std::int64_t i, float d) {
    float m = min_dist[i];
    if (d < m) {
      m = d;
      min_dist[i] = d;
    }
    if (m > best.value) {
      best.value = m;
      best.index = i;
    }
  };

  std::int64_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    const T* row = points + i * dim;
    __m512 acc[kBlock];
    for (int k = 0; k < kBlock; ++k) acc[k] = _mm512_setzero_ps();
    for (std::int64_t g = 0; g < groups; ++g) {
      const __m512 c = _mm512_loadu_ps(center + 16 * g);
      for (int k = 0; k < kBlock; ++k) acc[k] = accumulate(acc[k], load16(row + k * dim + 16 * g), c);
    }
    if (rem) {
      const __m512 c = _mm512_loadu_ps(center + 16 * groups);
      for (int k = 0; k < kBlock; ++k)
        acc[k] = accumulate(acc[k], load16_masked(row + k * dim + 16 * groups, tail), c);
    }
    for (int k = 0; k < kBlock; ++k) finish(i + k, reduce_tree(acc[k]));
  }
  for (; i < end; ++i) {
    const T* row = points + i * dim;
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t g = 0; g < groups; ++g)
      acc = accumulate(acc, load16(row + 16 * g), _mm512_loadu_ps(center + 16 * g));
    if (rem) acc = accumulate(acc, load16_masked(row + 16 * groups, tail), _mm512_loadu_ps(center + 16 * groups));
    finish(i, reduce_tree(acc));
  }
  return best;
}

template ChunkBest coreset_pass_avx512<float>(const float*, std::int64_t, const float*,
                                              std::int64_t, std::int64_t, float*) noexcept;
template ChunkBest coreset_pass_avx512<std::uint16_t>(const std::uint16_t*, std::int64_t,
                                                      const float*, std::int64_t, std::int64_t,
                                                      float*) noexcept;

}  // namespace structcore::detail
#endif  // STRUCTCORE_X86
