// structcore/descriptors.hpp — the structural descriptor phi(S) of an anomaly map (METHOD.md §3-§4).
//
// describe() turns each map S (H x W float32, N = H * W pixels) into a row of float64 statistics,
// one per requested component code, in the order asked. The paper's descriptor (StructCore,
// Chae et al., arXiv 2602.17048) is {Std, TopMean, Tv}; the rest is the extended descriptor.
//
// Algorithm, per map (one thread per map; maps of a batch run in parallel under OpenMP):
//   sample      a fixed pixel sample (the whole map up to 256 pixels, else clamp(4.5 sqrt(N),
//               256, 8192) pixels, one at a hashed offset in each of as many equal strides). Its mean
//               is the shift K of the power sums; one of its order statistics, with a wide
//               margin, is the cut g below which no needed order statistic can lie.
//   one pass    row by row, SIMD (scalar / AVX2 / AVX-512 chosen at run time): shifted power sums
//               sum (S - K)^p, p = 1..4, extrema, horizontal and vertical total variation, all in
//               float64; the bitmask of S > t, row by row, handed to the run-based
//               connected-component scanner of components.hpp (which also accumulates the
//               above-threshold mass moments) while the row is in L1; and a branch-free
//               compaction of the values >= g into a per-thread scratch.
//   moments     central moments from the shifted sums; when |mean - K| exceeds one standard
//               deviation (the sample was unrepresentative) they are recomputed exactly in a
//               second, two-pass sweep, so the shifted formula is never ill-conditioned.
//               The float64 sum doubles as the finiteness check (a NaN or Inf poisons it).
//   selection   std::nth_element on the (small) candidate set for the tail mean and the
//               quantiles; if fewer values than needed passed the cut, all N values are
//               copied and selected instead, so the result is always exact.
//
// Determinism: every statistic of a map is computed by one thread in a fixed order, so results do
// not depend on the number of threads. They may differ in the last bits between SIMD levels
// (scalar / AVX2 / AVX-512 sum in different orders); the level is fixed per process.
#pragma once

#include <cstddef>
#include <cstdint>

namespace structcore {

/// Component codes of describe(). The Python layer maps names to these codes (see
/// descriptor_code_table()); strings never reach the kernel.
enum class DescriptorCode : std::int32_t {
  Std = 0,          ///< population standard deviation of S
  TopMean = 1,      ///< mean of the top_k largest values
  Tv = 2,           ///< (sum |S[i,j+1]-S[i,j]| + sum |S[i+1,j]-S[i,j]|) / N
  Max = 3,          ///< max(S)
  Min = 4,          ///< min(S)
  Mean = 5,         ///< mean(S)
  Quantile = 6,     ///< quantile q (parameter), NumPy's default 'linear' method
  Skew = 7,         ///< m3 / m2^1.5 (population moments); 0 for a constant map
  Kurtosis = 8,     ///< excess kurtosis m4 / m2^2 - 3; 0 for a constant map
  CentroidY = 9,    ///< row coordinate (pixels) of the centroid of w = S - t over S > t
  CentroidX = 10,   ///< column coordinate (pixels) of that centroid
  Mu20 = 11,        ///< sum w (y - cy)^2 / sum w  (pixels^2; first index = rows)
  Mu02 = 12,        ///< sum w (x - cx)^2 / sum w
  Mu11 = 13,        ///< sum w (y - cy)(x - cx) / sum w
  Spread = 14,      ///< sqrt(mu20 + mu02) (pixels)
  Eccentricity = 15,///< sqrt(1 - l2 / l1), l1 >= l2 the eigenvalues of [[mu20, mu11], [mu11, mu02]]
  Orientation = 16, ///< major-axis angle (radians, (-pi/2, pi/2]) from +x (columns) toward +y (rows)
  CcCount = 17,     ///< number of connected components of S > t
  CcLargestArea = 18,         ///< pixels of the largest component / N
  CcLargestMass = 19,         ///< sum of S - t over the largest component
  CcTotalArea = 20,           ///< pixels above t / N
  CcTotalMass = 21,           ///< sum of S - t over all pixels above t
  CcLargestCompactness = 22,  ///< 4 pi area / perimeter^2 of the largest (crack perimeter)
  CcLargestFill = 23,         ///< area / bounding-box area of the largest component
};

/// Number of codes (one past the largest).
inline constexpr std::int32_t kDescriptorCodeCount = 24;

/// One entry of the code table: canonical name, code, whether it needs a threshold.
struct DescriptorCodeInfo {
  const char* name;
  std::int32_t code;
  bool needs_threshold;
};

/// The table of every code (kDescriptorCodeCount entries, in code order); `*count` receives its
/// length. Static storage; thread-safe. The name of Quantile is "quantile" (its Python names are
/// "q99", "q<percent>", "q:<fraction>").
const DescriptorCodeInfo* descriptor_code_table(std::size_t* count) noexcept;

/// Computes the descriptor of each map.
///
///   maps        n_maps * height * width floats, C order (map, row, column). Must be finite: a map
///               holding NaN or Inf makes the call throw std::invalid_argument naming the map.
///   codes       n_components codes (DescriptorCode values, repeats allowed).
///   quantiles   n_components doubles; quantiles[j] in [0, 1] is read when codes[j] == Quantile,
///               ignored otherwise.
///   top_k       1 <= top_k <= height * width: how many of the largest values TopMean averages
///               (the caller computes k = max(1, round(top_ratio * N))).
///   has_threshold, threshold
///               threshold t (finite) for codes 9..23; these codes require has_threshold.
///               Pixels with (double)S > t are "above"; their mass is w = (double)S - t > 0.
///   connectivity 4 or 8 (components of S > t).
///   phi         output, n_maps * n_components doubles, C order (map, component).
///   threads     OpenMP threads over maps; <= 0 means all.
///
/// Preconditions (std::invalid_argument otherwise): n_maps >= 1, height >= 1, width >= 1,
/// n_components >= 1, valid codes, quantiles in [0, 1], top_k in range, connectivity 4 or 8,
/// threshold present and finite when needed.
///
/// Defined values for degenerate maps (never NaN):
///   constant map: Std = 0, Skew = 0, Kurtosis = 0, Tv = 0;
///   nothing above t: CentroidY/X = the map centre ((H-1)/2, (W-1)/2), Mu* = Spread =
///     Eccentricity = Orientation = 0, every Cc* = 0;
///   mass without extent (one pixel, or all mass on one point): Mu* = Spread = 0,
///     Eccentricity = 0, Orientation = 0; isotropic mass (l1 - l2 <= 1e-9 (l1 + l2)):
///     Orientation = 0;
///   1 x N and N x 1 maps: the missing direction contributes 0 to Tv.
/// Tie-breaking: the "largest" component is the one with the most pixels; among equals, the one
/// whose first pixel comes first in raster order (lowest scipy.ndimage.label label).
///
/// Threading: parallel over maps (schedule dynamic), each thread owns its scratch (thread_local,
/// grown to the largest N seen, released when above 64 MiB); safe to call concurrently from
/// several threads. Allocates O(N) scratch per thread, no image-sized label buffer.
void describe(const float* maps, std::int64_t n_maps, std::int64_t height, std::int64_t width,
              const std::int32_t* codes, const double* quantiles, std::int64_t n_components,
              std::int64_t top_k, bool has_threshold, double threshold, int connectivity,
              double* phi, int threads);

}  // namespace structcore
