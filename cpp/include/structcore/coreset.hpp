// structcore/coreset.hpp — greedy k-center (farthest-point) coreset selection.
//
// Algorithm (Gonzalez 1985; PatchCore's "approximate greedy coreset", Roth et al. CVPR 2022):
// start from a given point; keep for every point the squared distance to its nearest selected
// point (min_dist); repeatedly select the point with the largest min_dist and lower min_dist
// with the distances to it. Selected points get min_dist = -1 so that they are never picked
// again (even when all remaining points duplicate selected ones). The result is a
// 2-approximation of the optimal k-center radius on the given points.
//
// Each selection is one fused pass over all points: distance to the new centre, min update and
// argmax, OpenMP over contiguous chunks of points. The pass is memory-bandwidth bound, so the
// points may be stored as float16 (IEEE binary16, converted exactly to float32 on the fly).
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
/// n_points floats of min_dist cannot be allocated. Thread-safe (no shared state).
void coreset(const float* points, std::int64_t n_points, std::int64_t dim, std::int64_t n_select,
             std::int64_t start, int threads, std::int64_t* out);

/// Same as above on IEEE binary16 points (n_points * dim uint16 bit patterns, finite).
void coreset_f16(const std::uint16_t* points, std::int64_t n_points, std::int64_t dim,
                 std::int64_t n_select, std::int64_t start, int threads, std::int64_t* out);

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
