// AVX2 + FMA inner loops of structcore::anomaly_map (compiled with -mavx2 -mfma; called only
// when simd_level() == AVX2). Contracts: postprocess_kernels.hpp.
#include "postprocess_kernels.hpp"

#if defined(STRUCTCORE_X86)
#include <immintrin.h>

namespace structcore {
namespace postprocess_detail {
namespace {

inline __m256i tail_mask(std::int64_t n) {  // n in [1, 8): lanes < n set
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lanes);
}

template <int NB>
inline void vblock(float* out, const float* src, std::int64_t stride, std::int64_t c,
                   const std::int32_t* idx, const float* wts, std::int64_t nnz) {
  __m256 acc[NB];
  {
    const float* s = src + static_cast<std::int64_t>(idx[0]) * stride + c;
    const __m256 w = _mm256_set1_ps(wts[0]);
    for (int b = 0; b < NB; ++b) acc[b] = _mm256_mul_ps(w, _mm256_loadu_ps(s + 8 * b));
  }
  for (std::int64_t k = 1; k < nnz; ++k) {
    const float* s = src + static_cast<std::int64_t>(idx[k]) * stride + c;
    const __m256 w = _mm256_set1_ps(wts[k]);
    for (int b = 0; b < NB; ++b) acc[b] = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8 * b), acc[b]);
  }
  for (int b = 0; b < NB; ++b) _mm256_storeu_ps(out + c + 8 * b, acc[b]);
}

}  // namespace

void vrow_avx2(float* out, const float* src, std::int64_t stride, std::int64_t cols,
               const std::int32_t* idx, const float* wts, std::int64_t nnz) {
  if (nnz == 0) {
    for (std::int64_t c = 0; c < cols; ++c) out[c] = 0.0f;
    return;
  }
  std::int64_t c = 0;
  for (; c + 64 <= cols; c += 64) vblock<8>(out, src, stride, c, idx, wts, nnz);
  if (c + 32 <= cols) { vblock<4>(out, src, stride, c, idx, wts, nnz); c += 32; }
  if (c + 16 <= cols) { vblock<2>(out, src, stride, c, idx, wts, nnz); c += 16; }
  if (c + 8 <= cols) { vblock<1>(out, src, stride, c, idx, wts, nnz); c += 8; }
  if (c < cols) {
    const __m256i m = tail_mask(cols - c);
    const float* s = src + static_cast<std::int64_t>(idx[0]) * stride + c;
    __m256 acc = _mm256_mul_ps(_mm256_set1_ps(wts[0]), _mm256_maskload_ps(s, m));
    for (std::int64_t k = 1; k < nnz; ++k) {
      s = src + static_cast<std::int64_t>(idx[k]) * stride + c;
      acc = _mm256_fmadd_ps(_mm256_set1_ps(wts[k]), _mm256_maskload_ps(s, m), acc);
    }
    _mm256_maskstore_ps(out + c, m, acc);
  }
}

void hrow_avx2(float* out, std::int64_t cols, const float* src, const std::int32_t* j0,
               const std::int32_t* nj, const std::int64_t* off, const float* blk) {
  const std::int64_t n_chunks = (cols + 7) / 8;
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    const float* s = src + j0[c];
    const float* b = blk + off[c];
    const std::int32_t n = nj[c];
    // Two partial sums would change the rounding; keep one chain per chunk (chunks overlap
    // in the out-of-order window).
    __m256 acc = _mm256_setzero_ps();
    for (std::int32_t t = 0; t < n; ++t)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(s[t]), _mm256_loadu_ps(b + 8 * t), acc);
    const std::int64_t x = c * 8;
    if (x + 8 <= cols) {
      _mm256_storeu_ps(out + x, acc);
    } else {
      _mm256_maskstore_ps(out + x, tail_mask(cols - x), acc);
    }
  }
}

}  // namespace postprocess_detail
}  // namespace structcore
#endif
