// Private to cpp/src/postprocess*.cpp: the inner loops of structcore::anomaly_map, one copy per
// instruction set (postprocess.cpp: baseline x86-64 / any CPU; postprocess_avx2.cpp;
// postprocess_avx512.cpp), chosen once per call through structcore::simd_level().
#pragma once

#include <cstdint>

namespace structcore {
namespace postprocess_detail {

/// One output row of a "vertical" pass (a sparse matrix times a row-major image):
///   out[c] = sum_{k < nnz} wts[k] * src[idx[k] * stride + c]   for c in [0, cols),
/// summed in k order starting from wts[0] * src[idx[0] * stride + c] (SIMD levels fuse each
/// step with FMA). nnz == 0 writes zeros.
/// out: cols floats; src: rows read are idx[k] * stride + [0, cols); idx, wts: nnz entries.
using VRowFn = void (*)(float* out, const float* src, std::int64_t stride, std::int64_t cols,
                        const std::int32_t* idx, const float* wts, std::int64_t nnz);

/// One output row of a "horizontal" pass (a row vector times a matrix stored in column
/// chunks of `lanes` output columns; lanes = 8 for the scalar and AVX2 code, 16 for AVX-512):
///   out[c * lanes + l] = sum_{t < nj[c]} src[j0[c] + t] * blk[off[c] + t * lanes + l]
/// for every chunk c < ceil(cols / lanes) and lane l with c * lanes + l < cols, summed in t
/// order starting from 0.0f (blocks hold explicit zeros where the matrix is zero).
/// out: cols floats; src: the input row (every j0[c] + nj[c] <= its length); j0, nj, off:
/// one entry per chunk; blk: sum(nj) * lanes floats.
using HRowFn = void (*)(float* out, std::int64_t cols, const float* src, const std::int32_t* j0,
                        const std::int32_t* nj, const std::int64_t* off, const float* blk);

void vrow_scalar(float*, const float*, std::int64_t, std::int64_t, const std::int32_t*,
                 const float*, std::int64_t);
void hrow_scalar(float*, std::int64_t, const float*, const std::int32_t*, const std::int32_t*,
                 const std::int64_t*, const float*);
#if defined(STRUCTCORE_X86)
void vrow_avx2(float*, const float*, std::int64_t, std::int64_t, const std::int32_t*,
               const float*, std::int64_t);
void hrow_avx2(float*, std::int64_t, const float*, const std::int32_t*, const std::int32_t*,
               const std::int64_t*, const float*);
void vrow_avx512(float*, const float*, std::int64_t, std::int64_t, const std::int32_t*,
                 const float*, std::int64_t);
void hrow_avx512(float*, std::int64_t, const float*, const std::int32_t*, const std::int32_t*,
                 const std::int64_t*, const float*);
#endif

}  // namespace postprocess_detail
}  // namespace structcore
