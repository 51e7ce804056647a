// structcore/postprocess.hpp — anomaly-map post-processing (METHOD.md §2, issue 3 §1).
//
// A patch-score grid (h x w) becomes a pixel map (H x W) in two linear steps:
//
//  1. Bilinear resampling with the convention of
//     torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False):
//     along an axis of n input and N output samples, ratio = float(n) / float(N) and output
//     index o reads the source coordinate s = max(0, ratio * (o + 0.5) - 0.5) (half-pixel
//     centres, computed in float32 exactly as PyTorch does), i0 = min(floor(s), n - 1),
//     i1 = min(i0 + 1, n - 1), lambda1 = s - i0, lambda0 = 1 - lambda1. When n == N the axis
//     is copied. Downsampling (N < n) uses the same two-tap rule (no antialiasing).
//  2. A separable Gaussian blur with the weights of scipy.ndimage.gaussian_filter
//     (truncate = 4): radius r = int(4 * sigma + 0.5), g[k] = exp(-0.5 / sigma^2 * k^2)
//     for k in [-r, r], normalised to sum 1 (float64). Border: scipy's default
//     mode='reflect', the half-sample symmetric extension (d c b a | a b c d | d c b a),
//     applied repeatedly (period 2N) when the kernel is wider than the image, as scipy does.
//     sigma == 0 (or any sigma with r == 0, i.e. sigma < 0.125) means no blur.
//
// Both steps are linear and separable, so per axis they fuse into one matrix
// A = G (N x N, blur with reflection) * U (N x n, bilinear), built once per call in float64
// and rounded to float32. A map is then A_y * P * A_x^T: one pass over the h input rows
// (horizontal, banded axpy) and one over the H output rows (vertical, contiguous axpy over W),
// or the transposed order when it is cheaper (chosen from the shapes only). Accumulation is
// float32; against torch interpolate + scipy gaussian_filter the result agrees to ~5e-7
// relative for non-negative scores (measured; and to ~1e-6 of max|patch_scores| in general),
// so float64 accumulation is not needed for the 1e-5 contract.
// The bilinear coordinate reproduces ATen's vectorised (AVX2/AVX-512) CPU kernels bit for bit:
// ratio * (o + 0.5) - 0.5 rounded once (they fuse it into an FMA). ATen's scalar fallback
// (CPUs without AVX2) rounds twice, which moves lambda by up to one float32 ulp of the
// coordinate (~4e-6 for a 40-cell axis), i.e. pixel differences up to ~4e-6 times the
// difference of neighbouring patch scores against such a PyTorch.
#pragma once

#include <cstdint>

namespace structcore {

/// Largest accepted output side (H or W), in pixels.
constexpr std::int64_t kAnomalyMapMaxSide = 16384;
/// Largest accepted number of output elements n_maps * H * W (4 GiB of float32).
constexpr std::int64_t kAnomalyMapMaxElements = std::int64_t(1) << 30;
/// Largest accepted sigma, in output pixels. Building an axis operator costs
/// O(N * min(8 * sigma + 1, 2 * N)) time (about 2 s for N = 16384 at this limit).
constexpr double kAnomalyMapMaxSigma = 1000.0;

/// Upsample (or downsample) each patch-score grid bilinearly to H x W, then blur it with a
/// Gaussian of standard deviation `sigma` output pixels (see the file comment for the exact
/// conventions).
///
/// patch_scores: n_maps * h * w floats, C order (map, row, column); finite.
/// maps:         n_maps * H * W floats, C order; written entirely (need not be initialised).
/// Preconditions (std::invalid_argument otherwise): n_maps, h, w >= 1;
///   1 <= H, W <= kAnomalyMapMaxSide; n_maps * H * W <= kAnomalyMapMaxElements;
///   0 <= sigma <= kAnomalyMapMaxSigma (finite). Values are not checked for NaN/Inf here.
/// Threading: OpenMP with at most `threads` threads (<= 0: all). Maps are distributed over
///   threads when there are at least as many maps as threads, otherwise the rows of each map
///   are. Every output element is computed by the same sequence of float operations whatever
///   the thread count, so results are bitwise identical for any `threads` (for one SIMD
///   level; AVX2/AVX-512 use fused multiply-add, the scalar path does not).
/// Reentrant: safe to call concurrently from several threads. The per-axis operators depend
///   only on (n, N, sigma, SIMD level); the last 8 built (up to 1 Mi floats each) are kept in
///   a mutex-protected process-wide cache, so repeated calls with the same shapes skip the
///   construction. Exceptions: std::invalid_argument (preconditions), std::bad_alloc.
void anomaly_map(const float* patch_scores, std::int64_t n_maps, std::int64_t h, std::int64_t w,
                 float* maps, std::int64_t H, std::int64_t W, double sigma, int threads);

}  // namespace structcore
