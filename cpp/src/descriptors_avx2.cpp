// AVX2 sweeps of describe() (compiled with -mavx2 -mfma; run only when simd_level() >= AVX2 and
// AVX-512 is unavailable or disabled). Same results as the scalar kernels up to summation order.
#include <immintrin.h>

#include <array>
#include <cstdint>
#include <cmath>

#include "descriptors_kernels.hpp"

namespace structcore {
namespace detail {

namespace {

inline __m256d lo4(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d hi4(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
inline __m256d absd(__m256d v) {
  return _mm256_andnot_pd(_mm256_set1_pd(-0.0), v);
}
inline double hsum(__m256d v) {
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// For each 8-bit keep mask, the lane indices of the kept lanes, packed to the front.
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

}  // namespace

namespace {

template <bool kUp, bool kBits>
void sweep_impl(const float* row, const float* up, std::int64_t w, float above,
                std::uint64_t* bits, RowSweep* acc) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  __m256d h0 = _mm256_setzero_pd(), h1 = _mm256_setzero_pd();
  __m256d v0 = _mm256_setzero_pd(), v1 = _mm256_setzero_pd();
  __m256 mn = _mm256_set1_ps(acc->mn), mx = _mm256_set1_ps(acc->mx);
  const __m256 av = _mm256_set1_ps(above);
  unsigned char* bit_bytes = reinterpret_cast<unsigned char*>(bits);
  if (kBits) {
    for (std::int64_t i = 0; i < (w + 63) >> 6; ++i) bits[i] = 0;
  }
  std::int64_t x = 0;
  for (; x + 9 <= w; x += 8) {  // 8 values and the 8 pairs (x+i, x+i+1)
    const __m256 a = _mm256_loadu_ps(row + x);
    const __m256 b = _mm256_loadu_ps(row + x + 1);
    mn = _mm256_min_ps(mn, a);
    mx = _mm256_max_ps(mx, a);
    const __m256d al = lo4(a), ah = hi4(a);
    s0 = _mm256_add_pd(s0, al);
    s1 = _mm256_add_pd(s1, ah);
    h0 = _mm256_add_pd(h0, absd(_mm256_sub_pd(lo4(b), al)));
    h1 = _mm256_add_pd(h1, absd(_mm256_sub_pd(hi4(b), ah)));
    if (kUp) {
      const __m256 u = _mm256_loadu_ps(up + x);
      v0 = _mm256_add_pd(v0, absd(_mm256_sub_pd(al, lo4(u))));
      v1 = _mm256_add_pd(v1, absd(_mm256_sub_pd(ah, hi4(u))));
    }
    if (kBits) {
      bit_bytes[x >> 3] =
          static_cast<unsigned char>(_mm256_movemask_ps(_mm256_cmp_ps(a, av, _CMP_GT_OQ)));
    }
  }
  double sum = hsum(_mm256_add_pd(s0, s1));
  double tvh = hsum(_mm256_add_pd(h0, h1));
  double tvv = hsum(_mm256_add_pd(v0, v1));
  alignas(32) float f[8];
  _mm256_store_ps(f, mn);
  float lo = f[0];
  for (int i = 1; i < 8; ++i) lo = f[i] < lo ? f[i] : lo;
  _mm256_store_ps(f, mx);
  float hi = f[0];
  for (int i = 1; i < 8; ++i) hi = f[i] > hi ? f[i] : hi;
  for (; x < w; ++x) {  // scalar tail
    const double a = row[x];
    sum += a;
    if (x + 1 < w) tvh += std::abs(static_cast<double>(row[x + 1]) - a);
    if (kUp) tvv += std::abs(a - static_cast<double>(up[x]));
    lo = row[x] < lo ? row[x] : lo;
    hi = row[x] > hi ? row[x] : hi;
    if (kBits && row[x] > above) bits[x >> 6] |= std::uint64_t(1) << (x & 63);
  }
  acc->sum += sum;
  acc->tvh += tvh;
  acc->tvv += tvv;
  acc->mn = lo;
  acc->mx = hi;
}

}  // namespace

void sweep_row_avx2(const float* row, const float* up, std::int64_t w, float above,
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
  const __m256d mu = _mm256_set1_pd(mean);
  const __m256 gv = _mm256_set1_ps(g);
  __m256d a2 = _mm256_setzero_pd(), b2 = _mm256_setzero_pd();
  __m256d a3 = _mm256_setzero_pd(), b3 = _mm256_setzero_pd();
  __m256d a4 = _mm256_setzero_pd(), b4 = _mm256_setzero_pd();
  std::int64_t m = 0;
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    if (kDev) {
      const __m256d dl = _mm256_sub_pd(lo4(v), mu), dh = _mm256_sub_pd(hi4(v), mu);
      const __m256d ql = _mm256_mul_pd(dl, dl), qh = _mm256_mul_pd(dh, dh);
      a2 = _mm256_add_pd(a2, ql);
      b2 = _mm256_add_pd(b2, qh);
      if (kHigher) {
        a3 = _mm256_add_pd(a3, _mm256_mul_pd(ql, dl));
        b3 = _mm256_add_pd(b3, _mm256_mul_pd(qh, dh));
        a4 = _mm256_add_pd(a4, _mm256_mul_pd(ql, ql));
        b4 = _mm256_add_pd(b4, _mm256_mul_pd(qh, qh));
      }
    }
    if (kOut) {
      const unsigned keep =
          static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, gv, _CMP_GE_OQ)));
      const __m256i perm =
          _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(kCompress.idx[keep])));
      _mm256_storeu_ps(out + m, _mm256_permutevar8x32_ps(v, perm));  // out has n + 16 floats
      m += __builtin_popcount(keep);
    }
  }
  double s2 = hsum(_mm256_add_pd(a2, b2));
  double s3 = hsum(_mm256_add_pd(a3, b3));
  double s4 = hsum(_mm256_add_pd(a4, b4));
  for (; i < n; ++i) {
    if (kDev) {
      const double d = static_cast<double>(x[i]) - mean, d2 = d * d;
      s2 += d2;
      if (kHigher) {
        s3 += d2 * d;
        s4 += d2 * d2;
      }
    }
    if (kOut) {
      out[m] = x[i];
      m += x[i] >= g ? 1 : 0;
    }
  }
  acc->s2 += s2;
  acc->s3 += s3;
  acc->s4 += s4;
  return m;
}

}  // namespace

std::int64_t dev_avx2(const float* x, std::int64_t n, double mean, bool deviations, bool higher,
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
