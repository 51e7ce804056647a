// AVX-512 sweeps of describe() (compiled with -mavx512f/bw/dq/vl; run only when
// simd_level() == AVX512). Same results as the scalar kernels up to summation order.
// GCC 12's AVX-512 headers trip -Wuninitialized on their own `__Y = __Y` idiom (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

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
inline __mmask16 head_mask(std::int64_t m) {
  return m >= 16 ? static_cast<__mmask16>(0xffff)
                 : (m <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << m) - 1u));
}

}  // namespace

namespace {

template <bool kUp, bool kBits>
void sweep_impl(const float* row, const float* up, std::int64_t w, float above,
                std::uint64_t* bits, RowSweep* acc) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  __m512d h0 = _mm512_setzero_pd(), h1 = _mm512_setzero_pd();
  __m512d v0 = _mm512_setzero_pd(), v1 = _mm512_setzero_pd();
  __m512 mn = _mm512_set1_ps(acc->mn), mx = _mm512_set1_ps(acc->mx);
  const __m512 av = _mm512_set1_ps(above);
  char* bit_bytes = reinterpret_cast<char*>(bits);
  if (kBits) bits[(w - 1) >> 6] = 0;  // the slots past w stay clear
  std::int64_t x = 0;
  // Full blocks: 16 values and the 16 horizontal pairs (x+i, x+i+1), which need x + 17 <= w.
  for (; x + 17 <= w; x += 16) {
    const __m512 a = _mm512_loadu_ps(row + x);
    const __m512 b = _mm512_loadu_ps(row + x + 1);
    mn = _mm512_min_ps(mn, a);
    mx = _mm512_max_ps(mx, a);
    const __m512d al = lo8(a), ah = hi8(a);
    s0 = _mm512_add_pd(s0, al);
    s1 = _mm512_add_pd(s1, ah);
    h0 = _mm512_add_pd(h0, absd(_mm512_sub_pd(lo8(b), al)));
    h1 = _mm512_add_pd(h1, absd(_mm512_sub_pd(hi8(b), ah)));
    if (kUp) {
      const __m512 u = _mm512_loadu_ps(up + x);
      v0 = _mm512_add_pd(v0, absd(_mm512_sub_pd(al, lo8(u))));
      v1 = _mm512_add_pd(v1, absd(_mm512_sub_pd(ah, hi8(u))));
    }
    if (kBits) {
      const __mmask16 k = _mm512_cmp_ps_mask(a, av, _CMP_GT_OQ);
      std::memcpy(bit_bytes + (x >> 3), &k, sizeof k);
    }
  }
  // Tail (at most 2 blocks): masked loads; masked-off lanes are 0 and are not accumulated.
  for (; x < w; x += 16) {
    const __mmask16 me = head_mask(w - x);      // values x .. w-1
    const __mmask16 mp = head_mask(w - 1 - x);  // pairs x .. w-2
    const __m512 a = _mm512_maskz_loadu_ps(me, row + x);
    const __m512 b = _mm512_maskz_loadu_ps(mp, row + x + 1);
    mn = _mm512_mask_min_ps(mn, me, mn, a);
    mx = _mm512_mask_max_ps(mx, me, mx, a);
    const __m512d al = lo8(a), ah = hi8(a);
    s0 = _mm512_add_pd(s0, al);
    s1 = _mm512_add_pd(s1, ah);
    const __mmask8 mpl = static_cast<__mmask8>(mp), mph = static_cast<__mmask8>(mp >> 8);
    h0 = _mm512_mask_add_pd(h0, mpl, h0, absd(_mm512_sub_pd(lo8(b), al)));
    h1 = _mm512_mask_add_pd(h1, mph, h1, absd(_mm512_sub_pd(hi8(b), ah)));
    if (kUp) {
      const __m512 u = _mm512_maskz_loadu_ps(me, up + x);
      v0 = _mm512_add_pd(v0, absd(_mm512_sub_pd(al, lo8(u))));
      v1 = _mm512_add_pd(v1, absd(_mm512_sub_pd(ah, hi8(u))));
    }
    if (kBits) {
      const __mmask16 k = _mm512_mask_cmp_ps_mask(me, a, av, _CMP_GT_OQ);
      std::memcpy(bit_bytes + (x >> 3), &k, sizeof k);
    }
  }
  acc->sum += _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  acc->tvh += _mm512_reduce_add_pd(_mm512_add_pd(h0, h1));
  acc->tvv += _mm512_reduce_add_pd(_mm512_add_pd(v0, v1));
  acc->mn = _mm512_reduce_min_ps(mn);
  acc->mx = _mm512_reduce_max_ps(mx);
}

}  // namespace

void sweep_row_avx512(const float* row, const float* up, std::int64_t w, float above,
                      std::uint64_t* bits, RowSweep* acc) {
  if (up) {
    if (bits) return sweep_impl<true, true>(row, up, w, above, bits, acc);
    return sweep_impl<true, false>(row, up, w, above, bits, acc);
  }
  if (bits) return sweep_impl<false, true>(row, up, w, above, bits, acc);
  sweep_impl<false, false>(row, up, w, above, bits, acc);
}

namespace {

template <bool kDev, bool kHigher, bool kOut>
std::int64_t dev_impl(const float* x, std::int64_t n, double mean, float g, float* out,
                      DevSums* acc) {
  const __m512d mu = _mm512_set1_pd(mean);
  const __m512 gv = _mm512_set1_ps(g);
  __m512d a2 = _mm512_setzero_pd(), b2 = _mm512_setzero_pd();
  __m512d a3 = _mm512_setzero_pd(), b3 = _mm512_setzero_pd();
  __m512d a4 = _mm512_setzero_pd(), b4 = _mm512_setzero_pd();
  std::int64_t m = 0;
  auto block = [&](__m512 v, __mmask16 me) {
    if (kDev) {
      // masked-off lanes would hold 0 - mean: zero them out of the sums
      const __mmask8 ml = static_cast<__mmask8>(me), mh = static_cast<__mmask8>(me >> 8);
      const __m512d dl = _mm512_maskz_sub_pd(ml, lo8(v), mu);
      const __m512d dh = _mm512_maskz_sub_pd(mh, hi8(v), mu);
      const __m512d ql = _mm512_mul_pd(dl, dl), qh = _mm512_mul_pd(dh, dh);
      a2 = _mm512_add_pd(a2, ql);
      b2 = _mm512_add_pd(b2, qh);
      if (kHigher) {
        a3 = _mm512_add_pd(a3, _mm512_mul_pd(ql, dl));
        b3 = _mm512_add_pd(b3, _mm512_mul_pd(qh, dh));
        a4 = _mm512_add_pd(a4, _mm512_mul_pd(ql, ql));
        b4 = _mm512_add_pd(b4, _mm512_mul_pd(qh, qh));
      }
    }
    if (kOut) {
      // Compress into a register and store all 16 lanes (compress-to-memory is slow on some
      // cores); out has n + 16 floats of room.
      const __mmask16 keep = _mm512_mask_cmp_ps_mask(me, v, gv, _CMP_GE_OQ);
      _mm512_storeu_ps(out + m, _mm512_maskz_compress_ps(keep, v));
      m += __builtin_popcount(static_cast<unsigned>(keep));
    }
  };
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) block(_mm512_loadu_ps(x + i), static_cast<__mmask16>(0xffff));
  if (i < n) {
    const __mmask16 me = head_mask(n - i);
    block(_mm512_maskz_loadu_ps(me, x + i), me);
  }
  acc->s2 += _mm512_reduce_add_pd(_mm512_add_pd(a2, b2));
  acc->s3 += _mm512_reduce_add_pd(_mm512_add_pd(a3, b3));
  acc->s4 += _mm512_reduce_add_pd(_mm512_add_pd(a4, b4));
  return m;
}

}  // namespace

std::int64_t dev_avx512(const float* x, std::int64_t n, double mean, bool deviations, bool higher,
                        float g, float* out, DevSums* acc) {
  if (out) {
    if (!deviations) return dev_impl<false, false, true>(x, n, mean, g, out, acc);
    if (higher) return dev_impl<true, true, true>(x, n, mean, g, out, acc);
    return dev_impl<true, false, true>(x, n, mean, g, out, acc);
  }
  if (!deviations) return 0;
  if (higher) return dev_impl<true, true, false>(x, n, mean, g, out, acc);
  return dev_impl<true, false, false>(x, n, mean, g, out, acc);
}

}  // namespace detail
}  // namespace structcore
