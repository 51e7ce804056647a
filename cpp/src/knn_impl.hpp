// Private interface between the knn driver (knn.cpp, baseline x86-64) and its per-ISA
// micro-kernels (knn_avx2.cpp, knn_avx512.cpp, knn_avx512bf16.cpp, knn_amx.cpp; the AVX-512
// ones share the register-tiled loop of knn_avx512_tile.hpp). Not installed, not part of the
// API.
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
  // Transpose-pack rows (rows <= width) of a row-major matrix src (row stride ld) into P
  // (dim * width floats, padded rows zero): P[p * width + r] = fl32(fl32(src[r][p] * scale)
  // - centre[p]), scale a power of two (the product rounded once), centre: dim floats
  // already multiplied by scale. Every kernel gives the same bits.
  void (*pack_f32)(const float* src, std::int64_t ld, int rows, std::int64_t dim,
                   const float* centre, double scale, int width, float* P);
  void (*pack_f16)(const std::uint16_t* src, std::int64_t ld, int rows, std::int64_t dim,
                   const float* centre, double scale, int width, float* P);
  // max over i < n of |x[i]| as the bit pattern of a non-negative float (x finite).
  std::uint32_t (*max_abs_f32)(const float* x, std::int64_t n);
};

// Experimental AVX-512 BF16 candidate pass (knn_avx512bf16.cpp): dot products of bf16-rounded
// values (vdpbf16ps, two depth values per 32-bit word), with a proven error bound E so that
// L = d2~ - E <= |q - b|^2 <= d2~ + E = U; the driver keeps every row whose L is <= the
// k-th smallest U and re-ranks those exactly. Pair panels: ceil(dim / 2) x width uint32
// words, word (p2, j) = bf16(x[j][2 p2]) | bf16(x[j][2 p2 + 1]) << 16 (0 past dim).
//
// Query operand layout (`to_pairs_a`): AVX-512 BF16 uses the pair panel above (width MR).
// AMX needs each query's pairs contiguous in steps of 16 (one 64-byte tile row): word
// (p2, i) at [((p2 / 16) * MR + i) * 16 + p2 % 16]. Either way the words of depth pairs
// [pc, pc + kc2) of a panel start at pc * MR (pc a multiple of depth_align), so the driver's
// block loop addresses both alike.
struct Bf16Kernels {
  int mr, nr;  // AVX-512 BF16: the float kernels' (14, 32); AMX: (32, 32)
  // tile (mr x nr floats, row stride nr) = (accumulate ? tile : 0) + sum over kc2 pair steps;
  // kc2 a multiple of depth_align.
  void (*gemm)(std::int64_t kc2, const std::uint32_t* A, const std::uint32_t* B, float* tile,
               bool accumulate);
  // Float panel (dim x width) -> pair panel (ceil(dim/2) x width), round to nearest even.
  // (Bank operand; rows past ceil(dim/2) up to the padded depth are zeroed by the driver.)
  void (*to_pairs)(const float* P, std::int64_t dim, int width, std::uint32_t* out);
  // In place: tile <- L, utile <- U for i < rows, j < nr (columns >= cols: L = U = +inf).
  // qn/bn: squared norms, qr/br: norms; c1, c2, c3: E = c1 qr br + c2 (qn + bn) + c3.
  // Returns the mask of rows with some L <= tau[i].
  std::uint32_t (*finish)(float* tile, float* utile, const float* qn, const float* qr,
                          const float* bn, const float* br, int cols, float c1, float c2,
                          float c3, const float* tau, int rows);
  // Float query panel (dim x mr) -> the query operand layout above, d2p pair rows
  // (d2p = ceil(dim/2) rounded up to depth_align; zero words past dim).
  void (*to_pairs_a)(const float* P, std::int64_t dim, int width, std::int64_t d2p,
                     std::uint32_t* out);
  int depth_align;  // pair depth padding: 1 (AVX-512 BF16) or 16 (AMX tile rows)
  // Per-thread set-up / tear-down around a run of gemm calls (AMX: load / release the tile
  // configuration); null when not needed.
  void (*begin)();
  void (*end)();
};
Kernels kernels_scalar() noexcept;
#if defined(STRUCTCORE_X86)
Kernels kernels_avx2() noexcept;
Kernels kernels_avx512() noexcept;
Bf16Kernels kernels_avx512bf16() noexcept;
// AMX-BF16 kernels (knn_amx.cpp). amx_built(): false when the compiler could not build them
// (kernels_amx() then returns null function pointers and must not be used).
bool amx_built() noexcept;
Bf16Kernels kernels_amx() noexcept;
// Test hook: kernels_amx() with the tile instructions replaced by a scalar emulation of the
// same operand walk (runs on any AVX-512 BF16 CPU; checks layouts and offsets, not hardware).
Bf16Kernels kernels_amx_emulated() noexcept;
#endif

// Portable helpers shared by the ISA files (defined in knn.cpp).
void pack_f32_generic(const float* src, std::int64_t ld, int rows, std::int64_t dim,
                      const float* centre, double scale, int width, float* P);
void pack_f16_generic(const std::uint16_t* src, std::int64_t ld, int rows, std::int64_t dim,
                      const float* centre, double scale, int width, float* P);
std::uint32_t max_abs_generic(const float* x, std::int64_t n);

}  // namespace knn_detail
}  // namespace structcore
