// structcore/knn.hpp — exact Euclidean k-nearest-neighbour search of queries in a bank.
//
// Algorithm (METHOD.md §2, PatchCore's patch score): for every query q and bank row b the
// squared distance is evaluated with the norms trick
//     d2~(q, b) = max(0, |q|^2 + |b|^2 - 2 q.b)
// where the dot products q.b come from a cache-blocked, register-tiled GEMM micro-kernel
// (GotoBLAS/BLIS structure: packed query panels of MR rows, packed bank panels of NR rows,
// depth chunks of KC) and each finished MR x NR distance tile is fused with a per-query
// sorted top-k buffer (threshold compare in SIMD registers, scalar insertion only for the
// rare winners). No Q x M distance matrix is ever formed: memory is O(tile) per thread
// (one packed bank block of NC x D floats, one MC x NC tile, one packed query batch of at
// most ~2048 x D floats and k entries per query per thread).
// The k winners of each query are then re-evaluated exactly, sum((q_i - b_i)^2) accumulated
// in double precision from the caller's values, and re-sorted by (exact distance, index);
// the returned distance is sqrt of that sum rounded once to float32.
//
// Centring and scaling. Distances are invariant under a common translation, but the
// selection error below grows with the norms, and PatchCore features (post-ReLU, with a
// large common mean) have norms tens of times their nearest-neighbour distances. So both
// arrays are packed relative to c = the mean row of min(M, 256) bank rows spread evenly
// over the bank (rows i * M / m; float64 sums in row order, rounded to float32;
// deterministic): each value becomes fl32(x 2^s - c 2^s), one power of two 2^s
// (exact) chosen so that the largest |value| of both arrays lies in [0.25, 0.5) (so the
// difference stays below 1 and never overflows; one rounding, relative 2^-24). The squared norms never overflow in float32, tiny (even
// subnormal) inputs are lifted to normal range, and results are invariant under
// power-of-two rescaling of the inputs. The exact re-ranking reads the caller's values.
//
// Error bound (selection stage). With u = 2^-24, n = D + 2, gamma_n = n u / (1 - n u),
// A = the largest |value| of both arrays rounded up to a power of two, and |.|_c the norm
// of the centred vector (|q - c|, |b - c|):
//     |d2~(q, b) - |q - b|^2| <= (gamma_n + 2.01 u) (|q|_c + |b|_c)^2 + (4 D + 6) 2^-148 A^2
// (gamma_n: the float32 norms-trick GEMM; 2.01 u: the rounding of x - c; the last term:
// underflow of values and products below ~2^-63 A). On WideResNet-50-2 features centring
// shrinks |q| + |b| about 4x, i.e. the bound about 16x. The returned set is therefore exact
// except that a bank row whose true squared distance is within twice this bound of the
// k-th smallest one may take its place; the returned distances are always the exact
// distances of the returned indices (double accumulation, one float32 rounding), ascending.
// Exact duplicates of a bank row get identical d2~ and the lower index wins.
//
// Ties: equal distances are ordered by lower bank index (in both stages).
//
// Threading: OpenMP over (bank block x query block) work items with per-thread top-k
// buffers merged by (d2~, index); every d2~ value is computed by the same operation
// sequence whatever the partition, so results are identical for any thread count.
// `threads` <= 0 means all OpenMP threads; never more threads than work items are used.
// The functions are re-entrant (no global state) and may run concurrently.
//
// Cost: 2 Q M D flops in the micro-kernel, plus O(M D) per query batch for packing the bank,
// O(Q k D) for the exact re-ranking and O(k) per accepted candidate (the sorted buffer is
// meant for small k, typically 1..50). Extra memory: threads * (D * 256 + 112 * 256) floats,
// one packed copy of at most ~2048 queries, and threads * min(Q, 2048) * k (float, int64).
//
// SIMD: the micro-kernels come in AVX-512 (MR x NR = 14 x 32), AVX2 (6 x 16) and portable
// scalar (4 x 8) versions; `level` selects one, clamped to structcore::simd_level(). The
// AVX-512 float32 pass chunks the depth per CPU (knn_choose(): 256 on AMD, 128 elsewhere).
// On AVX-512 BF16 CPUs the Python default is knn_bf16() (below): a bf16 candidate pass at
// twice the float32 FMA rate, with a proven bound and exact re-ranking of all candidates;
// on CPUs with usable AMX-BF16 it is knn_amx(), the same pass on AMX tiles. knn_choice()
// makes that choice (and says why) from cpu_features() and STRUCTCORE_SIMD.
#pragma once

#include <cstdint>
#include <string>

#include "structcore/common.hpp"

namespace structcore {

/// k nearest bank rows (Euclidean) of each query, float32 bank.
///
/// queries   : n_queries * dim floats, row-major (C-contiguous), finite.
/// bank      : n_bank * dim floats, row-major, finite.
/// k         : 1 <= k <= n_bank.
/// distances : out, n_queries * k floats; row i ascending, true (not squared) distances.
/// indices   : out, n_queries * k int64 bank row indices; ties -> lower index first.
/// Preconditions (checked, std::invalid_argument otherwise): n_queries >= 0, n_bank >= 1,
/// dim >= 1, 1 <= k <= n_bank, non-null pointers when sizes are > 0, all values finite
/// (checked for free during the max-|value| scaling pass: "queries must be finite" /
/// "bank must be finite"). Also throws std::invalid_argument when a returned distance would
/// overflow float32 (|q - b| > FLT_MAX, i.e. values near FLT_MAX).
void knn(const float* queries, std::int64_t n_queries, const float* bank, std::int64_t n_bank,
         std::int64_t dim, std::int64_t k, float* distances, std::int64_t* indices, int threads,
         SimdLevel level = simd_level());

/// Same as knn() with the bank stored as IEEE-754 binary16 (half the memory): `bank_f16`
/// holds n_bank * dim raw binary16 bit patterns (numpy float16), converted exactly to float32
/// inside the packing step; everything else (bound, ties, threading) is as above, with the
/// bank values taken to be exactly the float16 values.
void knn_f16(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
             std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
             std::int64_t* indices, int threads, SimdLevel level = simd_level());

/// Issue 2 stretch goal (AVX-512 BF16 CPUs only, else std::invalid_argument):
/// same contract as knn() / knn_f16(), but the candidate pass uses bf16-rounded values
/// (vdpbf16ps, float32 accumulation) of the centred, scaled vectors (norms |.|_c, see
/// "Centring and scaling") and a proven bound E(q, b) with
///     L = d2~ - E <= |q - b|^2 <= d2~ + E = U,
///     E = c1 |q|_c |b|_c + c2 (|q|_c^2 + |b|_c^2) + c3,
///     c1 = 2.02 ((2 v + v^2)(1 + g) + g) + 4.1 u (1 + g),
///     c2 = 1.01 gamma_{D+10} + 8 u + 2.1 u (1 + g),
///     c3 = D (2^-120 + 2^-147) A^2,  v = 2^-8, u = 2^-24, g = gamma_D
/// (the v terms: bf16 rounding of both operands; g: float32 accumulation; the 4.1 u and
/// 2.1 u parts: rounding of x - c, 2.01 u (|q|_c + |b|_c)^2 split by (a + b)^2 = a^2 + b^2
/// + 2ab; c3: bf16/ftz flushing of values below 2^-126 A and underflow in the centring).
/// Every bank row with L <= (k-th smallest U) is
/// re-ranked exactly (double), so the result is the exact ranking of the double-precision
/// distances (no near-tie caveat; only rows whose double-precision sums are equal up to
/// rounding may trade places), whatever the bound's slack; slack only costs re-ranking.
/// A query with more than 512 + 16 k surviving candidates (masses of near-equal distances)
/// is recomputed by knn() / knn_f16() instead, so memory stays bounded.
void knn_bf16(const float* queries, std::int64_t n_queries, const float* bank,
              std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
              std::int64_t* indices, int threads);
void knn_f16_bf16(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
                  std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
                  std::int64_t* indices, int threads);

/// Same contract as knn_bf16() / knn_f16_bf16(), with the candidate pass on AMX tiles
/// (_tile_dpbf16ps: the same bf16 products and float32 accumulation, hence the same bound E
/// and the same exact re-ranking; 32 x 32 output tiles of 2 x 2 AMX accumulators). Throws
/// std::invalid_argument unless knn_amx_usable(): AMX-TILE and AMX-BF16 (cpuid), XCR0 bits
/// 17/18, the Linux tile-data permission, AVX-512 BF16, and a compiler that built the kernel.
/// COMPILED, NOT MEASURED: written without access to an AMX CPU (see bench/README.md).
void knn_amx(const float* queries, std::int64_t n_queries, const float* bank,
             std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
             std::int64_t* indices, int threads);
void knn_f16_amx(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
                 std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
                 std::int64_t* indices, int threads);

/// Test hook (float32 bank): knn_amx() with the tile instructions replaced by a scalar
/// emulation of the same operand walk (the AMX pass's packing, padding, offsets and strides,
/// on any AVX-512 BF16 CPU; slow). std::invalid_argument without AVX-512 BF16 or without an
/// AMX-capable build.
void knn_amx_emulated(const float* queries, std::int64_t n_queries, const float* bank,
                      std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
                      std::int64_t* indices, int threads);

// ---- run-time choice of the kNN path -------------------------------------------------------

/// The kNN code paths, narrowest first. Scalar / AVX2 / AVX512: float32 norms-trick pass
/// (knn()); AVX512BF16 / AMX: bf16 candidate pass + exact re-ranking (knn_bf16(), knn_amx()).
enum class KnnPath : int { Scalar = 0, AVX2 = 1, AVX512 = 2, AVX512BF16 = 3, AMX = 4 };

/// "scalar", "avx2", "avx512", "avx512bf16", "amx".
const char* knn_path_name(KnnPath path) noexcept;

/// A kNN dispatch decision and why.
struct KnnChoice {
  KnnPath path = KnnPath::Scalar;  // what structcore.kernels.knn runs
  KnnPath f32 = KnnPath::Scalar;   // the float32 level (used alone, or for bf16 overflow redo)
  std::int64_t kc = 256;           // depth chunk of the float32 pass (floats)
  std::string tile;                // micro tile of `path`, queries x bank rows, e.g. "14x32"
  std::string reason;              // one sentence: why this path and tile (and any fallback)
};

/// Pure decision (no global state; tested with made-up feature sets):
///  * request: a STRUCTCORE_SIMD value ("" none; "scalar", "avx2", "avx512", "avx512bf16",
///    "amx"; anything else is ignored with a note). A request can only lower the choice: a
///    level the CPU lacks falls back to the widest level below it, with a note in `reason`.
///  * f32 level: AVX512 needs avx512f/bw/dq/vl + fma + OS AVX-512 state; AVX2 needs
///    avx2 + fma + OS AVX state; else scalar.
///  * bf16 candidates (k <= 64 only; longer candidate lists would cost more than they save):
///    AMX when amx_tile + amx_bf16 + os_amx + amx_permitted + AVX-512 BF16 + amx_built;
///    else AVX512BF16 when avx512_bf16 and the f32 level is AVX512; else the f32 level.
///  * kc (float32 pass, AVX-512): 256 on AMD (measured best on Zen 4), else 128 so the
///    32 x kc bank micro-panel (16 KiB) stays in a 32-48 KiB L1d beside the streaming query
///    panel (BLIS's rule for the reused micro-panel; chosen for Intel, not measured there).
KnnChoice knn_choose(const CpuFeatures& cpu, const std::string& request, std::int64_t k,
                     bool amx_built);

/// knn_choose(cpu_features(), STRUCTCORE_SIMD (read once per process), k, knn_amx_built()),
/// with the AVX-512 float32 depth chunk overridden by STRUCTCORE_KNN_KC (a multiple of 32 in
/// [32, 4096]; read once; for tuning on a new CPU) when set.
KnnChoice knn_choice(std::int64_t k);

/// True when this binary contains the AMX kernel (the compiler accepted -mamx-tile/-mamx-bf16).
bool knn_amx_built() noexcept;

/// True when knn_amx() may run here: knn_choose() would pick AMX for k = 1 with no request.
bool knn_amx_usable() noexcept;

/// One line for build_info(): "candidates avx512bf16, tile 14x32, f32 avx512 kc 256 (reason)".
std::string knn_build_note();

/// True when the default path (structcore.kernels.knn) uses a bf16 candidate pass
/// (knn_choice(k).path is AVX512BF16 or AMX) rather than knn / knn_f16.
bool knn_prefers_bf16(std::int64_t k) noexcept;

/// Exact float32 value of an IEEE binary16 bit pattern (subnormals, inf, NaN included).
float half_to_float(std::uint16_t h) noexcept;

}  // namespace structcore
