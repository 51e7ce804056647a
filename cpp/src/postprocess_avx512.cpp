// AVX-512 inner loops of structcore::anomaly_map (compiled with -mavx512f ... -mfma; called
// only when simd_level() == AVX512). Contracts: postprocess_kernels.hpp.
#include "postprocess_kernels.hpp"

#if defined(STRUCTCORE_X86)
#include <immintrin.h>

namespace structcore {
namespace postprocess_detail {
namespace {

inline __mmask16 tail_mask(std::int64_t n) {  // n in [1, 16)
  return static_cast<__mmask16>((1u << n) - 1u);
}

// NB full 16-float vectors of out[c .. c + 16 * NB).
template <int NB>
inline void vblock(float* out, const float* src, std::int64_t stride, std::int64_t c,
                   const std::int32_t* idx, const float* wts, std::int64_t nnz) {
  __m512 acc[NB];
  {
    const float* s = src + static_cast<std::int64_t>(idx[0]) * stride + c;
    const __m512 w = _mm512_set1_ps(wts[0]);
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_mul_ps(w, _mm512_loadu_ps(s + 16 * b));
  }
  for (std::int64_t k = 1; k < nnz; ++k) {
    const float* s = src + static_cast<std::int64_t>(idx[k]) * stride + c;
    const __m512 w = _mm512_set1_ps(wts[k]);
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 16 * b), acc[b]);
  }
  for (int b = 0; b < NB; ++b) _mm512_storeu_ps(out + c + 16 * b, acc[b]);
}

}  // namespace

void vrow_avx512(float* out, const float* src, std::int64_t stride, std::int64_t cols,
                 const std::int32_t* idx, const float* wts, std::int64_t nnz) {
  if (nnz == 0) {
    for (std::int64_t c = 0; c < cols; ++c) out[c] = 0.0f;
    return;
  }
  std::int64_t c = 0;
  for (; c + 128 <= cols; c += 128) vblock<8>(out, src, stride, c, idx, wts, nnz);
  if (c + 64 <= cols) { vblock<4>(out, src, stride, c, idx, wts, nnz); c += 64; }
  if (c + 32 <= cols) { vblock<2>(out, src, stride, c, idx, wts, nnz); c += 32; }
  if (c + 16 <= cols) { vblock<1>(out, src, stride, c, idx, wts, nnz); c += 16; }
  if (c < cols) {
    const __mmask16 m = tail_mask(cols - c);
    const float* s = src + static_cast<std::int64_t>(idx[0]) * stride + c;
    __m512 acc = _mm512_mul_ps(_mm512_set1_ps(wts[0]), _mm512_maskz_loadu_ps(m, s));
    for (std::int64_t k = 1; k < nnz; ++k) {
      s = src + static_cast<std::int64_t>(idx[k]) * stride + c;
      acc = _mm512_fmadd_ps(_mm512_set1_ps(wts[k]), _mm512_maskz_loadu_ps(m, s), acc);
    }
    _mm512_mask_storeu_ps(out + c, m, acc);
  }
}

void hrow_avx512(float* out, std::int64_t cols, const float* src, const std::int32_t* j0,
                 const std::int32_t* nj, const std::int64_t* off, const float* blk) {
  const std::int64_t n_chunks = (cols + 15) / 16;
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    const float* s = src + j0[c];
    const float* b = blk + off[c];
    const std::int32_t n = nj[c];
    // Two partial sums would change the rounding; keep one chain per chunk (chunks overlap
    // in the out-of-order window).
    __m512 acc = _mm512_setzero_ps();
    for (std::int32_t t = 0; t < n; ++t)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(s[t]), _mm512_loadu_ps(b + 16 * t), acc);
    const std::int64_t x = c * 16;
    if (x + 16 <= cols) {
      _mm512_storeu_ps(out + x, acc);
    } else {
      _mm512_mask_storeu_ps(out + x, tail_mask(cols - x), acc);
    }
  }
}

}  // namespace postprocess_detail
}  // namespace structcore
#endif
