// AVX-512 sweep of describe() (compiled with -mavx512f/bw/dq/vl; run only when
// simd_level() == AVX512). Same results as the scalar sweep up to summation order.
// GCC 12's AVX-512 headers trip -Wuninitialized on their own `__Y = __Y` idiom (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "descriptors_kernels.hpp"

namespace structcore {
namespace detail {

namespace {

inline __m512d lo8(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi8(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
inline __m512d absd(__m512d v) {
  return _mm512_castsi512_pd(
      _mm512_and_si512(_mm512_castpd_si512(v), _mm512_set1_epi64(0x7fffffffffffffffLL)));
}
inline __m512d shift1(__m512d hi, __m512d lo) {  // [lo1 .. lo7, hi0]
  return _mm512_castsi512_pd(
      _mm512_alignr_epi64(_mm512_castpd_si512(hi), _mm512_castpd_si512(lo), 1));
}
inline __mmask16 head_mask(std::int64_t m) {
  return m >= 16 ? static_cast<__mmask16>(0xffff)
                 : (m <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << m) - 1u));
}

struct Acc {
  __m512d a1, b1, a2, b2, a3, b3, a4, b4, h0, h1, v0, v1;
  __m512 mn, mx;
};

template <bool kHigher>
inline void add_powers(Acc& c, __m512d dl, __m512d dh) {
  c.a1 = _mm512_add_pd(c.a1, dl);
  c.b1 = _mm512_add_pd(c.b1, dh);
  c.a2 = _mm512_fmadd_pd(dl, dl, c.a2);
  c.b2 = _mm512_fmadd_pd(dh, dh, c.b2);
  if (kHigher) {
    const __m512d ql = _mm512_mul_pd(dl, dl), qh = _mm512_mul_pd(dh, dh);
    c.a3 = _mm512_fmadd_pd(ql, dl, c.a3);
    c.b3 = _mm512_fmadd_pd(qh, dh, c.b3);
    c.a4 = _mm512_fmadd_pd(ql, ql, c.a4);
    c.b4 = _mm512_fmadd_pd(qh, qh, c.b4);
  }
}

// One row. Full blocks of 16 are software-pipelined so that each value is widened to double
// once: right neighbours come from lane shifts of this block and the next block's low half,
// upper neighbours from the previous row's doubles (up_d); this row's doubles go to cur_d.
template <bool kUp, bool kBits, bool kHigher, bool kOut>
inline void row_pass(const float* row, const float* up, const double* up_d, double* cur_d,
                     std::int64_t w, const __m512d& shift, const __m512& above, const __m512& cut,
                     std::uint64_t* bits, float* out, std::int64_t& kept, Acc& c) {
  char* bit_bytes = reinterpret_cast<char*>(bits);
  if (kBits) bits[(w - 1) >> 6] = 0;  // the slots past w stay clear
  std::int64_t x = 0;
  if (w >= 24) {
    __m512d next_lo = _mm512_cvtps_pd(_mm256_loadu_ps(row));
    for (; x + 24 <= w; x += 16) {
      const __m512 a = _mm512_loadu_ps(row + x);
      c.mn = _mm512_min_ps(c.mn, a);
      c.mx = _mm512_max_ps(c.mx, a);
      const __m512d al = next_lo, ah = hi8(a);
      next_lo = _mm512_cvtps_pd(_mm256_loadu_ps(row + x + 16));
      add_powers<kHigher>(c, _mm512_sub_pd(al, shift), _mm512_sub_pd(ah, shift));
      c.h0 = _mm512_add_pd(c.h0, absd(_mm512_sub_pd(shift1(ah, al), al)));
      c.h1 = _mm512_add_pd(c.h1, absd(_mm512_sub_pd(shift1(next_lo, ah), ah)));
      if (kUp) {
        c.v0 = _mm512_add_pd(c.v0, absd(_mm512_sub_pd(al, _mm512_loadu_pd(up_d + x))));
        c.v1 = _mm512_add_pd(c.v1, absd(_mm512_sub_pd(ah, _mm512_loadu_pd(up_d + x + 8))));
      }
      _mm512_storeu_pd(cur_d + x, al);
      _mm512_storeu_pd(cur_d + x + 8, ah);
      if (kBits) {
        const __mmask16 k = _mm512_cmp_ps_mask(a, above, _CMP_GT_OQ);
        std::memcpy(bit_bytes + (x >> 3), &k, sizeof k);
      }
      if (kOut) {
        // compress in a register and store all 16 lanes (compress-to-memory is slow on some
        // cores); out has 16 floats of slack
        const __mmask16 keep = _mm512_cmp_ps_mask(a, cut, _CMP_GE_OQ);
        _mm512_storeu_ps(out + kept, _mm512_maskz_compress_ps(keep, a));
        kept += __builtin_popcount(static_cast<unsigned>(keep));
      }
    }
  }
  // Tail (at most 2 blocks): masked loads; masked-off lanes are 0 and are not accumulated.
  for (; x < w; x += 16) {
    const __mmask16 me = head_mask(w - x);      // values x .. w-1
    const __mmask16 mp = head_mask(w - 1 - x);  // pairs x .. w-2
    const __mmask8 mel = static_cast<__mmask8>(me), meh = static_cast<__mmask8>(me >> 8);
    const __mmask8 mpl = static_cast<__mmask8>(mp), mph = static_cast<__mmask8>(mp >> 8);
    const __m512 a = _mm512_maskz_loadu_ps(me, row + x);
    const __m512 b = _mm512_maskz_loadu_ps(mp, row + x + 1);
    c.mn = _mm512_mask_min_ps(c.mn, me, c.mn, a);
    c.mx = _mm512_mask_max_ps(c.mx, me, c.mx, a);
    const __m512d al = lo8(a), ah = hi8(a);
    add_powers<kHigher>(c, _mm512_maskz_sub_pd(mel, al, shift), _mm512_maskz_sub_pd(meh, ah, shift));
    c.h0 = _mm512_mask_add_pd(c.h0, mpl, c.h0, absd(_mm512_sub_pd(lo8(b), al)));
    c.h1 = _mm512_mask_add_pd(c.h1, mph, c.h1, absd(_mm512_sub_pd(hi8(b), ah)));
    if (kUp) {
      const __m512 u = _mm512_maskz_loadu_ps(me, up + x);
      c.v0 = _mm512_add_pd(c.v0, absd(_mm512_sub_pd(al, lo8(u))));
      c.v1 = _mm512_add_pd(c.v1, absd(_mm512_sub_pd(ah, hi8(u))));
    }
    _mm512_mask_storeu_pd(cur_d + x, mel, al);
    _mm512_mask_storeu_pd(cur_d + x + 8, meh, ah);
    if (kBits) {
      const __mmask16 k = _mm512_mask_cmp_ps_mask(me, a, above, _CMP_GT_OQ);
      std::memcpy(bit_bytes + (x >> 3), &k, sizeof k);
    }
    if (kOut) {
      const __mmask16 keep = _mm512_mask_cmp_ps_mask(me, a, cut, _CMP_GE_OQ);
      _mm512_storeu_ps(out + kept, _mm512_maskz_compress_ps(keep, a));
      kept += __builtin_popcount(static_cast<unsigned>(keep));
    }
  }
}

template <bool kBits, bool kHigher, bool kOut>
void sweep_impl(const float* map, const SweepParams& p, SweepResult* r) {
  const std::int64_t h = p.h, w = p.w;
  const __m512d shift = _mm512_set1_pd(p.shift);
  const __m512 above = _mm512_set1_ps(p.above), cut = _mm512_set1_ps(p.cut);
  Acc c;
  c.a1 = c.b1 = c.a2 = c.b2 = c.a3 = c.b3 = c.a4 = c.b4 = _mm512_setzero_pd();
  c.h0 = c.h1 = c.v0 = c.v1 = _mm512_setzero_pd();
  c.mn = c.mx = _mm512_set1_ps(map[0]);
  double* cur_d = p.rowd;
  double* up_d = p.rowd + w;
  std::int64_t kept = 0;
  for (std::int64_t y = 0; y < h; ++y) {
    const float* row = map + y * w;
    if (y == 0) {
      row_pass<false, kBits, kHigher, kOut>(row, nullptr, up_d, cur_d, w, shift, above, cut,
                                            p.bits, p.out, kept, c);
    } else {
      row_pass<true, kBits, kHigher, kOut>(row, row - w, up_d, cur_d, w, shift, above, cut,
                                           p.bits, p.out, kept, c);
    }
    if (kBits) p.on_row(p.ctx, row, p.bits, y);
    std::swap(cur_d, up_d);
  }
  r->s1 = _mm512_reduce_add_pd(_mm512_add_pd(c.a1, c.b1));
  r->s2 = _mm512_reduce_add_pd(_mm512_add_pd(c.a2, c.b2));
  r->s3 = _mm512_reduce_add_pd(_mm512_add_pd(c.a3, c.b3));
  r->s4 = _mm512_reduce_add_pd(_mm512_add_pd(c.a4, c.b4));
  r->tvh = _mm512_reduce_add_pd(_mm512_add_pd(c.h0, c.h1));
  r->tvv = _mm512_reduce_add_pd(_mm512_add_pd(c.v0, c.v1));
  r->mn = _mm512_reduce_min_ps(c.mn);
  r->mx = _mm512_reduce_max_ps(c.mx);
  r->kept = kept;
}

}  // namespace

void sweep_avx512(const float* map, const SweepParams& p, SweepResult* r) {
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
