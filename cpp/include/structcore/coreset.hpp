// structcore/coreset.hpp — greedy k-center (farthest-point) coreset selection.
//
// Algorithm (Gonzalez 1985; PatchCore's "approximate greedy coreset", Roth et al. CVPR 2022):
// start from a given point; keep for every point the squared distance to its nearest selected
// point (min_dist); repeatedly select the point with the largest min_dist and lower min_dist
// with the distances to it. Selected points get min_dist = -1 so that they are never picked
// again (even when all remaining points duplicate selected ones). The result is a
// 2-approximation of the optimal k-center radius on the given points.
//
// Two exact ways to run a step (same min_dist values bit for bit, hence the same selection):
//
// * Full pass: one fused pass over all points: distance to the new centre, min update and
//   argmax, OpenMP over contiguous chunks of points. The pass is memory-bandwidth bound, so the
//   points may be stored as float16 (IEEE binary16, converted exactly to float32 on the fly).
//
// * Pruned step (triangle inequality, as in accelerated farthest-point sampling / Elkan's
//   k-means bounds): every unselected point belongs to the group of the selected centre s
//   that gave its current min_dist (min_dist = D(x, s) exactly); each group keeps its members,
//   its radius r2 (largest member min_dist) and its argmax (largest, lowest index). For a new
//   centre c, a group is skipped when sqrt(D(s, c)) >= 2 (1 + 1e-3 + 8 gamma) sqrt(r2) + 2^-60:
//   then D(x, c) >= D(x, s) for every member despite float32 rounding (proof and bounds at
//   can_skip in coreset.cpp), so min(min_dist, D(x, c)) = min_dist and nothing changes. The
//   members of the other groups are evaluated with the same canonical distance (same SIMD
//   pass, on gathered rows); those strictly closer to c move to c's group. The next centre is
//   the best of the group argmaxes: no full pass. Cost per step: one distance per existing
//   centre plus the evaluated members. OpenMP over fixed slices of the evaluated groups; the
//   bookkeeping is serial in group order, so nothing depends on the thread count.
//   Extra memory: O(n_points + n_select * dim).
//
// CoresetMode::kAuto (the default) runs step 1 as a full pass and pruned steps afterwards,
// except for small problems (n_points < 4096 or n_select < 32: full passes only); it falls
// back to full passes for good when, after 40 pruned steps, a moving average of the work per
// step stays above 85% of a full pass (e.g. high-dimensional Gaussian data, where distances
// concentrate and no group is ever skipped).
//
// Canonical distance (bit-identical on every SIMD level and in structcore.reference.coreset):
// coordinates padded with zeros to a multiple of 16; lane l (0..15) accumulates
// (x[j] - c[j])^2 over j = l, l+16, ... in increasing j in float32, with one rounding per
// subtraction, product and addition (no fused multiply-add); then lanes are summed as a tree
// (l += l+8; l += l+4; l += l+2; l += l+1). Because every operation is specified, the selection
// order does not depend on the SIMD level, the number of threads or the chunking.
//
// Ties: the lowest index among the points of largest min_dist is selected.
#pragma once

#include <cstdint>

namespace structcore {

/// Greedy k-center selection on float32 points.
///
/// points   : n_points * dim floats, row-major (row i = point i), finite, and small enough
///            that squared distances do not overflow (the Python layer scales by a power of
///            two so that max |x| < 2^15).
/// n_select : number of points to select, 1 <= n_select <= n_points.
/// start    : first selected index, 0 <= start < n_points.
/// threads  : OpenMP threads (<= 0: all); the result does not depend on it.
/// out      : n_select int64, receives the selected indices in selection order (out[0] = start);
///            all distinct.
/// Throws std::invalid_argument on violated size preconditions, std::bad_alloc when the
/// working memory (O(n_points + n_select * dim)) cannot be allocated. Thread-safe (no shared state).
void coreset(const float* points, std::int64_t n_points, std::int64_t dim, std::int64_t n_select,
             std::int64_t start, int threads, std::int64_t* out);

/// Same as above on IEEE binary16 points (n_points * dim uint16 bit patterns, finite).
void coreset_f16(const std::uint16_t* points, std::int64_t n_points, std::int64_t dim,
                 std::int64_t n_select, std::int64_t start, int threads, std::int64_t* out);

/// How the steps run (see the file comment); every mode gives the same indices.
enum class CoresetMode : int { kAuto = 0, kFullPass = 1, kPruned = 2 };

/// Work counters of one selection (for tests and benchmarks).
struct CoresetStats {
  std::int64_t full_passes = 0;       // steps run as a full pass
  std::int64_t pruned_steps = 0;      // steps run with pruning
  std::int64_t points_evaluated = 0;  // distances to points computed in pruned steps
  std::int64_t points_checked = 0;    // members of visited groups (bound checked) in pruned steps
  std::int64_t groups_skipped = 0;    // groups skipped by the triangle inequality
};

/// coreset / coreset_f16 with an explicit mode (kPruned: pruned from step 2 on, whatever the
/// size) and optional counters (`stats` may be null). Same preconditions, throws and
/// threading; std::invalid_argument on an unknown mode.
void coreset_ex(const float* points, std::int64_t n_points, std::int64_t dim,
                std::int64_t n_select, std::int64_t start, int threads, CoresetMode mode,
                std::int64_t* out, CoresetStats* stats);
void coreset_f16_ex(const std::uint16_t* points, std::int64_t n_points, std::int64_t dim,
                    std::int64_t n_select, std::int64_t start, int threads, CoresetMode mode,
                    std::int64_t* out, CoresetStats* stats);

/// Canonical squared distances (see the file comment) from `center` to every point, with the
/// SIMD level dispatched at run time; for tests.
/// points: n_points * dim, center: dim, out: n_points floats. Single-threaded.
void coreset_distances(const float* points, std::int64_t n_points, std::int64_t dim,
                       const float* center, float* out);

namespace detail {

/// Best (largest min_dist, lowest index on ties) of a chunk; index -1 when every point of the
/// chunk has min_dist < -0.5 (all selected).
struct ChunkBest {
  float value;
  std::int64_t index;
};

/// One fused pass over points [begin, end): d = canonical squared distance to `center`
/// (dim floats, already converted to float32), min_dist[i] = min(min_dist[i], d), and the
/// argmax of the updated min_dist. T is float or std::uint16_t (binary16). noexcept.
template <class T>
ChunkBest coreset_pass_scalar(const T* points, std::int64_t dim, const float* center,
                              std::int64_t begin, std::int64_t end, float* min_dist) noexcept;
template <class T>
ChunkBest coreset_pass_avx2(const T* points, std::int64_t dim, const float* center,
                            std::int64_t begin, std::int64_t end, float* min_dist) noexcept;
template <class T>
ChunkBest coreset_pass_avx512(const T* points, std::int64_t dim, const float* center,
                              std::int64_t begin, std::int64_t end, float* min_dist) noexcept;

/// Exact binary16 -> float32 conversion (portable).
float half_to_float(std::uint16_t h) noexcept;

}  // namespace detail
}  // namespace structcore
