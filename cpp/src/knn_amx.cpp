// AMX-BF16 candidate-pass kernels of the knn driver (see knn_impl.hpp, Bf16Kernels).
// Compiled with -mamx-tile -mamx-bf16 and the AVX-512 BF16 flags where the compiler accepts
// them (CMakeLists.txt; otherwise this file builds to amx_built() == false). Only called when
// knn_choose() picked AMX: cpuid reports AMX-TILE + AMX-BF16 + AVX-512 BF16, the OS enabled
// XCR0 bits 17/18, and Linux granted this process the tile-data permission
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), common.cpp). A CPU or kernel without
// AMX therefore never executes a tile instruction.
//
// COMPILED, NOT MEASURED: written and reviewed without access to an AMX CPU. Where the CPU has
// AMX, tests/test_knn.py::test_amx_matches_f32_path compares it with the float32 path.
//
// Micro tile: 32 queries x 32 bank rows held in 2 x 2 fp32 accumulator tiles (tmm0..tmm3,
// 16 rows x 16 floats = 16 x 64 bytes each). Per step of 16 depth pairs (32 bf16 values):
//   tmm4, tmm5: queries 0-15 / 16-31, 16 rows (one per query) x 16 pair words (64 bytes),
//               loaded from the query operand (knn_impl.hpp: word (p2, i) at
//               [((p2 / 16) * 32 + i) * 16 + p2 % 16], so a tile is 1 KiB contiguous);
//   tmm6, tmm7: bank rows 0-15 / 16-31 in the "VNNI" pair layout TDPBF16PS expects for its
//               second source: tile row r = depth pair p2 = s + r, word n = bank row n's values
//               at depths 2 p2 (low half) and 2 p2 + 1 (high half). That is exactly the pair
//               panel of the AVX-512 BF16 kernel (word (p2, j) at [p2 * 32 + j]), read with a
//               row stride of 32 words = 128 bytes;
//   tmm0 += tmm4 . tmm6, tmm1 += tmm4 . tmm7, tmm2 += tmm5 . tmm6, tmm3 += tmm5 . tmm7.
// TDPBF16PS: dst[m][n] += a[m].pair[k] . b[k].pair[n] over k, products of bf16 values (exact
// in fp32), accumulated in fp32 with round-to-nearest-even, denormal inputs as zero and
// denormal outputs flushed: the arithmetic of vdpbf16ps, so the bound E of knn.hpp holds as it
// is (padding depth pairs are zero words and add exact zeros).
// GCC 12's AVX-512 headers use _mm512_undefined_*() placeholders that trip -Wuninitialized
// false positives once inlined (as in knn_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "knn_impl.hpp"

#if defined(STRUCTCORE_X86) && defined(__AMX_TILE__) && defined(__AMX_BF16__) && \
    defined(__AVX512BF16__)
#include <immintrin.h>

#include <cstring>

namespace structcore {
namespace knn_detail {
namespace {

constexpr int kAmxMR = 32;  // queries per micro tile (two 16-row tiles)
constexpr int kAmxNR = 32;  // bank rows per micro tile (two 16-column tiles)
constexpr int kPairStep = 16;  // depth pairs per tile step (64-byte tile rows)

// The 64-byte LDTILECFG operand (palette 1): byte 0 palette, byte 1 start_row, 14 reserved
// bytes, colsb[16] (bytes per row of tmm0..tmm15), rows[16].
struct alignas(64) TileConfig {
  std::uint8_t palette_id;
  std::uint8_t start_row;
  std::uint8_t reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG operand is 64 bytes");

// Every tile used here (tmm0..tmm7) is 16 rows x 64 bytes.
//
// LDTILECFG is issued with our own asm: GCC 12's _tile_loadconfig() declares its operand as
// one pointer-sized object ("m" (*(const void**)p)), so the compiler treated the colsb/rows
// stores as dead and removed them (seen in the disassembly: only the palette byte was
// written). Here the operand is the whole 64-byte struct, plus a memory clobber.
void amx_begin() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  __asm__ volatile("ldtilecfg %0" : : "m"(cfg) : "memory");
}

void amx_end() { _tile_release(); }

// tile (32 x 32 floats, row stride 32 floats = 128 bytes) = (accumulate ? tile : 0) + the
// dot products over kc2 pairs (a multiple of 16). A: the query operand from the chunk's first
// pair, kc2 * 32 words; B: the bank pair panel from the chunk's first pair, kc2 * 32 words.
// Precondition: amx_begin() ran on this thread (tile configuration loaded).
void gemm_amx(std::int64_t kc2, const std::uint32_t* A, const std::uint32_t* B, float* tile,
              bool accumulate) {
  // GCC's tileloadd asm has no memory input either: a compiler barrier so that no store to
  // A, B or tile can be moved past the loads (none can today: they happen in other functions
  // called through pointers; this keeps it true if that changes).
  __asm__ volatile("" : : : "memory");
  constexpr long kCStride = kAmxNR * sizeof(float);            // 128 bytes
  constexpr long kAStride = kPairStep * sizeof(std::uint32_t);  // 64 bytes
  constexpr long kBStride = kAmxNR * sizeof(std::uint32_t);     // 128 bytes
  float* c01 = tile + 16;            // rows 0-15, columns 16-31
  float* c10 = tile + 16 * kAmxNR;   // rows 16-31, columns 0-15
  float* c11 = c10 + 16;             // rows 16-31, columns 16-31
  if (accumulate) {
    _tile_loadd(0, tile, kCStride);
    _tile_loadd(1, c01, kCStride);
    _tile_loadd(2, c10, kCStride);
    _tile_loadd(3, c11, kCStride);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (std::int64_t s = 0; s < kc2; s += kPairStep) {
    const std::uint32_t* a = A + s * kAmxMR;  // (s / 16) * 32 rows * 16 words
    const std::uint32_t* b = B + s * kAmxNR;  // pair row s of the panel
    _tile_loadd(4, a, kAStride);                    // queries 0-15
    _tile_loadd(5, a + 16 * kPairStep, kAStride);   // queries 16-31
    _tile_loadd(6, b, kBStride);                    // bank rows 0-15
    _tile_loadd(7, b + 16, kBStride);               // bank rows 16-31
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, tile, kCStride);
  _tile_stored(1, c01, kCStride);
  _tile_stored(2, c10, kCStride);
  _tile_stored(3, c11, kCStride);
}

// Float query panel (dim x width, width a multiple of 16) -> the AMX query operand, d2p pair
// rows (a multiple of 16; words past ceil(dim / 2) are zero). The bf16 rounding is the same
// instruction as the AVX-512 BF16 kernel's (vcvtneps2bf16, round to nearest even), so both
// candidate passes see identical bf16 values. (No std:: containers in this file: inline
// library code compiled with AMX/AVX-512 flags could be picked by the linker for baseline
// callers.)
void to_pairs_a_amx(const float* P, std::int64_t dim, int width, std::int64_t d2p,
                    std::uint32_t* out) {
  const std::int64_t d2 = (dim + 1) / 2;
  alignas(64) std::uint32_t w[16];
  for (std::int64_t p2 = 0; p2 < d2p; ++p2) {
    const std::int64_t base = (p2 / kPairStep) * width * kPairStep + p2 % kPairStep;
    for (int i0 = 0; i0 < width; i0 += 16) {
      __m512i words = _mm512_setzero_si512();
      if (p2 < d2) {
        const __m512 lo = _mm512_loadu_ps(P + 2 * p2 * width + i0);
        const __m512 hi =
            2 * p2 + 1 < dim ? _mm512_loadu_ps(P + (2 * p2 + 1) * width + i0) : _mm512_setzero_ps();
        const __m512i lo16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
        const __m512i hi16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
        words = _mm512_or_si512(lo16, _mm512_slli_epi32(hi16, 16));
      }
      _mm512_store_si512(w, words);
      for (int i = 0; i < 16; ++i)
        out[base + static_cast<std::int64_t>(i0 + i) * kPairStep] = w[i];
    }
  }
}

// ---- test hook: the same operand walk with scalar "tiles" (runs without AMX) -------------
// Mirrors gemm_amx line by line: the same base pointers and byte strides, a 16 x 64-byte
// tile load, and TDPBF16PS's definition (dst[m][n] += a[m].lo * b[k][n].lo, then
// += a[m].hi * b[k][n].hi, fp32 round to nearest even; bf16 products are exact in fp32).
// What it cannot check is the hardware itself (LDTILECFG, the instructions); what it does
// check is every layout and offset the AMX pass relies on.
struct EmuTile {
  std::uint32_t w[16][16];  // 16 rows x 64 bytes
};
void emu_load(EmuTile& t, const void* base, long stride) {
  for (int r = 0; r < 16; ++r)
    std::memcpy(t.w[r], static_cast<const char*>(base) + r * stride, 64);
}
void emu_store(const EmuTile& t, void* base, long stride) {
  for (int r = 0; r < 16; ++r) std::memcpy(static_cast<char*>(base) + r * stride, t.w[r], 64);
}
float bf16_lo(std::uint32_t w) {
  const std::uint32_t b = w << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
float bf16_hi(std::uint32_t w) {
  const std::uint32_t b = w & 0xffff0000u;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
void emu_dpbf16ps(EmuTile& c, const EmuTile& a, const EmuTile& b) {
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc;
      std::memcpy(&acc, &c.w[m][n], 4);
      for (int k = 0; k < 16; ++k) {
        acc += bf16_lo(a.w[m][k]) * bf16_lo(b.w[k][n]);
        acc += bf16_hi(a.w[m][k]) * bf16_hi(b.w[k][n]);
      }
      std::memcpy(&c.w[m][n], &acc, 4);
    }
}
void gemm_amx_emulated(std::int64_t kc2, const std::uint32_t* A, const std::uint32_t* B,
                       float* tile, bool accumulate) {
  constexpr long kCStride = kAmxNR * sizeof(float);
  constexpr long kAStride = kPairStep * sizeof(std::uint32_t);
  constexpr long kBStride = kAmxNR * sizeof(std::uint32_t);
  float* c01 = tile + 16;
  float* c10 = tile + 16 * kAmxNR;
  float* c11 = c10 + 16;
  EmuTile t[8];
  if (accumulate) {
    emu_load(t[0], tile, kCStride);
    emu_load(t[1], c01, kCStride);
    emu_load(t[2], c10, kCStride);
    emu_load(t[3], c11, kCStride);
  } else {
    std::memset(t, 0, 4 * sizeof(EmuTile));
  }
  for (std::int64_t s = 0; s < kc2; s += kPairStep) {
    const std::uint32_t* a = A + s * kAmxMR;
    const std::uint32_t* b = B + s * kAmxNR;
    emu_load(t[4], a, kAStride);
    emu_load(t[5], a + 16 * kPairStep, kAStride);
    emu_load(t[6], b, kBStride);
    emu_load(t[7], b + 16, kBStride);
    emu_dpbf16ps(t[0], t[4], t[6]);
    emu_dpbf16ps(t[1], t[4], t[7]);
    emu_dpbf16ps(t[2], t[5], t[6]);
    emu_dpbf16ps(t[3], t[5], t[7]);
  }
  emu_store(t[0], tile, kCStride);
  emu_store(t[1], c01, kCStride);
  emu_store(t[2], c10, kCStride);
  emu_store(t[3], c11, kCStride);
}

}  // namespace

bool amx_built() noexcept { return true; }

Bf16Kernels kernels_amx() noexcept {
  const Bf16Kernels bf = kernels_avx512bf16();  // bank pair panels and the bound: shared
  return Bf16Kernels{kAmxMR,    kAmxNR,         gemm_amx,  bf.to_pairs, bf.finish,
                     to_pairs_a_amx, kPairStep, amx_begin, amx_end};
}

Bf16Kernels kernels_amx_emulated() noexcept {
  Bf16Kernels k = kernels_amx();
  k.gemm = gemm_amx_emulated;
  k.begin = nullptr;
  k.end = nullptr;
  return k;
}

}  // namespace knn_detail
}  // namespace structcore

#elif defined(STRUCTCORE_X86)

namespace structcore {
namespace knn_detail {

bool amx_built() noexcept { return false; }

Bf16Kernels kernels_amx() noexcept {
  return Bf16Kernels{0, 0, nullptr, nullptr, nullptr, nullptr, 1, nullptr, nullptr};
}

Bf16Kernels kernels_amx_emulated() noexcept { return kernels_amx(); }

}  // namespace knn_detail
}  // namespace structcore

#endif
