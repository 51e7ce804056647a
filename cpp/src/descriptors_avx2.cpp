// AVX2 sweep of describe() (compiled with -mavx2 -mfma; run when simd_level() == AVX2). Same
// results as the scalar sweep up to summation order.
#include <immintrin.h>

#include <array>
#include <cmath>
#include <cstdint>

#include "descriptors_kernels.hpp"

namespace structcore {
namespace detail {

namespace {

inline __m256d lo4(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d hi4(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
inline __m256d absd(__m256d v) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), v); }
inline double hsum(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// For each 8-bit keep mask, the lane indices of the kept lanes packed to the front (bytes).
struct CompressTable {
  std::array<std::uint64_t, 256> idx{};
  constexpr CompressTable() {
    for (unsigned m = 0; m < 256; ++m) {
      std::uint64_t packed = 0;
      unsigned k = 0;
      for (unsigned lane = 0; lane < 8; ++lane)
        if (m & (1u << lane)) packed |= static_cast<std::uint64_t>(lane) << (8 * k++);
      idx[m] = packed;
    }
  }
};
constexpr CompressTable kCompress{};

struct Acc {
  __m256d a1, b1, a2, b2, a3, b3, a4, b4, h0, h1, v0, v1;
  __m256 mn, mx;
};

template <bool kUp, bool kBits, bool kHigher, bool kOut>
inline void row_pass(const float* row, const float* up, std::int64_t w, double shift_s,
                     const __m256d& shift, float above_s, const __m256& above, float cut_s,
                     const __m256& cut, std::uint64_t* bits, float* out, std::int64_t& kept,
                     Acc& c, SweepResult& tail) {
  unsigned char* bit_bytes = reinterpret_cast<unsigned char*>(bits);
  if (kBits) {
    for (std::int64_t i = 0; i < (w + 63) >> 6; ++i) bits[i] = 0;
  }
  std::int64_t x = 0;
  for (; x + 9 <= w; x += 8) {  // 8 values and the 8 pairs (x+i, x+i+1)
    const __m256 a = _mm256_loadu_ps(row + x);
    const __m256 b = _mm256_loadu_ps(row + x + 1);
    c.mn = _mm256_min_ps(c.mn, a);
    c.mx = _mm256_max_ps(c.mx, a);
    const __m256d al = lo4(a), ah = hi4(a);
    const __m256d dl = _mm256_sub_pd(al, shift), dh = _mm256_sub_pd(ah, shift);
    c.a1 = _mm256_add_pd(c.a1, dl);
    c.b1 = _mm256_add_pd(c.b1, dh);
    c.a2 = _mm256_fmadd_pd(dl, dl, c.a2);
    c.b2 = _mm256_fmadd_pd(dh, dh, c.b2);
    if (kHigher) {
      const __m256d ql = _mm256_mul_pd(dl, dl), qh = _mm256_mul_pd(dh, dh);
      c.a3 = _mm256_fmadd_pd(ql, dl, c.a3);
      c.b3 = _mm256_fmadd_pd(qh, dh, c.b3);
      c.a4 = _mm256_fmadd_pd(ql, ql, c.a4);
      c.b4 = _mm256_fmadd_pd(qh, qh, c.b4);
    }
    c.h0 = _mm256_add_pd(c.h0, absd(_mm256_sub_pd(lo4(b), al)));
    c.h1 = _mm256_add_pd(c.h1, absd(_mm256_sub_pd(hi4(b), ah)));
    if (kUp) {
      const __m256 u = _mm256_loadu_ps(up + x);
      c.v0 = _mm256_add_pd(c.v0, absd(_mm256_sub_pd(al, lo4(u))));
      c.v1 = _mm256_add_pd(c.v1, absd(_mm256_sub_pd(ah, hi4(u))));
    }
    if (kBits) {
      bit_bytes[x >> 3] =
          static_cast<unsigned char>(_mm256_movemask_ps(_mm256_cmp_ps(a, above, _CMP_GT_OQ)));
    }
    if (kOut) {
      const unsigned keep =
          static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, cut, _CMP_GE_OQ)));
      const __m256i perm =
          _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(kCompress.idx[keep])));
      _mm256_storeu_ps(out + kept, _mm256_permutevar8x32_ps(a, perm));  // 16 floats of slack
      kept += __builtin_popcount(keep);
    }
  }
  for (; x < w; ++x) {  // scalar tail, into the scalar totals
    const float f = row[x];
    const double a = f, d = a - shift_s, d2 = d * d;
    tail.s1 += d;
    tail.s2 += d2;
    if (kHigher) {
      tail.s3 += d2 * d;
      tail.s4 += d2 * d2;
    }
    if (x + 1 < w) tail.tvh += std::abs(static_cast<double>(row[x + 1]) - a);
    if (kUp) tail.tvv += std::abs(a - static_cast<double>(up[x]));
    tail.mn = f < tail.mn ? f : tail.mn;
    tail.mx = f > tail.mx ? f : tail.mx;
    if (kBits && f > above_s) bits[x >> 6] |= std::uint64_t(1) << (x & 63);
    if (kOut) {
      out[kept] = f;
      kept += f >= cut_s ? 1 : 0;
    }
  }
}

template <bool kBits, bool kHigher, bool kOut>
void sweep_impl(const float* map, const SweepParams& p, SweepResult* r) {
  const std::int64_t h = p.h, w = p.w;
  const __m256d shift = _mm256_set1_pd(p.shift);
  const __m256 above = _mm256_set1_ps(p.above), cut = _mm256_set1_ps(p.cut);
  Acc c;
  c.a1 = c.b1 = c.a2 = c.b2 = c.a3 = c.b3 = c.a4 = c.b4 = _mm256_setzero_pd();
  c.h0 = c.h1 = c.v0 = c.v1 = _mm256_setzero_pd();
  c.mn = c.mx = _mm256_set1_ps(map[0]);
  SweepResult tail;
  tail.mn = tail.mx = map[0];
  std::int64_t kept = 0;
  for (std::int64_t y = 0; y < h; ++y) {
    const float* row = map + y * w;
    if (y == 0) {
      row_pass<false, kBits, kHigher, kOut>(row, nullptr, w, p.shift, shift, p.above, above,
                                            p.cut, cut, p.bits, p.out, kept, c, tail);
    } else {
      row_pass<true, kBits, kHigher, kOut>(row, row - w, w, p.shift, shift, p.above, above,
                                           p.cut, cut, p.bits, p.out, kept, c, tail);
    }
    if (kBits) p.on_row(p.ctx, row, p.bits, y);
  }
  r->s1 = hsum(_mm256_add_pd(c.a1, c.b1)) + tail.s1;
  r->s2 = hsum(_mm256_add_pd(c.a2, c.b2)) + tail.s2;
  r->s3 = hsum(_mm256_add_pd(c.a3, c.b3)) + tail.s3;
  r->s4 = hsum(_mm256_add_pd(c.a4, c.b4)) + tail.s4;
  r->tvh = hsum(_mm256_add_pd(c.h0, c.h1)) + tail.tvh;
  r->tvv = hsum(_mm256_add_pd(c.v0, c.v1)) + tail.tvv;
  alignas(32) float f[8];
  _mm256_store_ps(f, c.mn);
  float lo = tail.mn;
  for (int i = 0; i < 8; ++i) lo = f[i] < lo ? f[i] : lo;
  _mm256_store_ps(f, c.mx);
  float hi = tail.mx;
  for (int i = 0; i < 8; ++i) hi = f[i] > hi ? f[i] : hi;
  r->mn = lo;
  r->mx = hi;
  r->kept = kept;
}

}  // namespace

void sweep_avx2(const float* map, const SweepParams& p, SweepResult* r) {
  const int key = (p.bits ? 4 : 0) | (p.higher ? 2 : 0) | (p.out ? 1 : 0);
  switch (key) {
    case 0: return sweep_impl<false, false, false>(map, p, r);
    case 1: return sweep_impl<false, false, true>(map, p, r);
    case 2: return sweep_impl<false, true, false>(map, p, r);
    case 3: return sweep_impl<false, true, true>(map, p, r);
    case 4: return sweep_impl<true, false, false>(map, p, r);
    case 5: return sweep_impl<true, false, true>(map, p, r);
    case 6: return sweep_impl<true, true, false>(map, p, r);
    default: return sweep_impl<true, true, true>(map, p, r);
  }
}

}  // namespace detail
}  // namespace structcore
