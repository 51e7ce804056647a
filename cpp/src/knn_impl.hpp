// Private interface between the knn driver (knn.cpp, baseline x86-64) and its per-ISA
// micro-kernels (knn_avx2.cpp, knn_avx512.cpp). Not installed, not part of the API.
//
// Packed layouts (all 64-byte aligned):
//   query panel : dim x MR floats, element (p, i) at [p * MR + i]  (MR query rows)
//   bank panel  : dim x NR floats, element (p, j) at [p * NR + j]  (NR bank rows)
//   tile        : MR x NR floats, element (i, j) at [i * NR + j]
// Rows beyond the valid count are zero in panels.
#pragma once

#include <cstdint>

namespace structcore {
namespace knn_detail {

struct Kernels {
  int mr;  // query rows per micro tile
  int nr;  // bank rows per micro tile (a multiple of the vector width)
  // tile = (accumulate ? tile : 0) + sum_{p < kc} A[p * mr + i] * B[p * nr + j]
  // A: kc * mr floats, B: kc * nr floats, tile: mr * nr floats.
  void (*gemm)(std::int64_t kc, const float* A, const float* B, float* tile, bool accumulate);
  // In place: tile[i, j] = max(0, qn[i] + bn[j] - 2 tile[i, j]) for i < rows, j < nr.
  // Returns a bit mask of the rows i < rows for which some tile[i, j] < tau[i].
  // qn: rows floats, bn: nr floats (+inf for padded columns), tau: rows floats.
  std::uint32_t (*finish)(float* tile, const float* qn, const float* bn, const float* tau,
                          int rows);
  // out[j] = sum_p P[p * width + j]^2 for j < width (sequential in p). P: dim * width floats.
  void (*panel_norms)(const float* P, std::int64_t dim, int width, float* out);
  // Transpose-pack rows (rows <= width) of a row-major matrix src (row stride ld) times
  // `scale` into P (dim * width floats, padded rows zero).
  void (*pack_f32)(const float* src, std::int64_t ld, int rows, std::int64_t dim, double scale,
                   int width, float* P);
  void (*pack_f16)(const std::uint16_t* src, std::int64_t ld, int rows, std::int64_t dim,
                   double scale, int width, float* P);
  // max over i < n of |x[i]| as the bit pattern of a non-negative float (x finite).
  std::uint32_t (*max_abs_f32)(const float* x, std::int64_t n);
};

Kernels kernels_scalar() noexcept;
#if defined(STRUCTCORE_X86)
Kernels kernels_avx2() noexcept;
Kernels kernels_avx512() noexcept;
#endif

// Portable helpers shared by the ISA files (defined in knn.cpp).
void pack_f32_generic(const float* src, std::int64_t ld, int rows, std::int64_t dim,
                      double scale, int width, float* P);
void pack_f16_generic(const std::uint16_t* src, std::int64_t ld, int rows, std::int64_t dim,
                      double scale, int width, float* P);
std::uint32_t max_abs_generic(const float* x, std::int64_t n);

}  // namespace knn_detail
}  // namespace structcore
