// AVX2 fused pass of the greedy coreset (compiled with -mavx2 -mfma -mf16c; called only when
// simd_level() == AVX2). Same canonical order as coreset.hpp: the 16 lanes live in two ymm
// registers (lanes 0-7 and 8-15), whose sum is the tree's first level (l + 8).
#include "structcore/coreset.hpp"

#if defined(STRUCTCORE_X86)
#include <immintrin.h>

#include <cmath>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace structcore::detail {
namespace {

inline void load16(const float* p, __m256& lo, __m256& hi) noexcept {
  lo = _mm256_loadu_ps(p);
  hi = _mm256_loadu_ps(p + 8);
}
inline void load16(const std::uint16_t* p, __m256& lo, __m256& hi) noexcept {
  lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
}
template <class T>
inline void load16_tail(const T* p, int rem, __m256& lo, __m256& hi) noexcept {
  T buf[16] = {};
  std::memcpy(buf, p, static_cast<std::size_t>(rem) * sizeof(T));
  load16(buf, lo, hi);
}

inline float reduce_tree(__m256 lo, __m256 hi) noexcept {
  const __m256 s8 = _mm256_add_ps(lo, hi);  // l + (l + 8)
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

struct Acc {
  __m256 lo, hi;
};

inline void accumulate(Acc& a, __m256 xlo, __m256 xhi, __m256 clo, __m256 chi) noexcept {
  const __m256 dlo = _mm256_sub_ps(xlo, clo);
  const __m256 dhi = _mm256_sub_ps(xhi, chi);
  a.lo = _mm256_add_ps(a.lo, _mm256_mul_ps(dlo, dlo));
  a.hi = _mm256_add_ps(a.hi, _mm256_mul_ps(dhi, dhi));
}

constexpr int kBlock = 4;

}  // namespace

template <class T>
ChunkBest coreset_pass_avx2(const T* points, std::int64_t dim, const float* center,
                            std::int64_t begin, std::int64_t end, float* min_dist) noexcept {
  ChunkBest best{-INFINITY, -1};
  const std::int64_t groups = dim / 16;
  const int rem = static_cast<int>(dim % 16);

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
  auto one_group = [&](const T* p, std::int64_t g, bool partial, Acc& a) {
    __m256 xlo, xhi;
    if (partial) load16_tail(p, rem, xlo, xhi);
    else load16(p, xlo, xhi);
    accumulate(a, xlo, xhi, _mm256_loadu_ps(center + 16 * g), _mm256_loadu_ps(center + 16 * g + 8));
  };

  std::int64_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    const T* row = points + i * dim;
    Acc acc[kBlock];
    for (int k = 0; k < kBlock; ++k) acc[k] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (std::int64_t g = 0; g < groups; ++g)
      for (int k = 0; k < kBlock; ++k) one_group(row + k * dim + 16 * g, g, false, acc[k]);
    if (rem)
      for (int k = 0; k < kBlock; ++k) one_group(row + k * dim + 16 * groups, groups, true, acc[k]);
    for (int k = 0; k < kBlock; ++k) finish(i + k, reduce_tree(acc[k].lo, acc[k].hi));
  }
  for (; i < end; ++i) {
    const T* row = points + i * dim;
    Acc acc{_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (std::int64_t g = 0; g < groups; ++g) one_group(row + 16 * g, g, false, acc);
    if (rem) one_group(row + 16 * groups, groups, true, acc);
    finish(i, reduce_tree(acc.lo, acc.hi));
  }
  return best;
}

template ChunkBest coreset_pass_avx2<float>(const float*, std::int64_t, const float*,
                                            std::int64_t, std::int64_t, float*) noexcept;
template ChunkBest coreset_pass_avx2<std::uint16_t>(const std::uint16_t*, std::int64_t,
                                                    const float*, std::int64_t, std::int64_t,
                                                    float*) noexcept;

}  // namespace structcore::detail
#endif  // STRUCTCORE_X86
