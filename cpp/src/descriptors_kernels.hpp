// Internal: the per-ISA sweep of describe() (descriptors.cpp: scalar, descriptors_avx2.cpp,
// descriptors_avx512.cpp). Not part of the public C++ API.
#pragma once

#include <cstdint>

namespace structcore {
namespace detail {

/// Inputs of one sweep over a map (all pointers owned by the caller).
struct SweepParams {
  std::int64_t h = 0, w = 0;  ///< map shape, both >= 1
  /// Shift K of the power sums: s_p = sum (x - K)^p. The caller picks K close to the mean (a
  /// sample mean), which keeps the shifted sums well conditioned; it checks afterwards.
  double shift = 0;
  bool higher = false;  ///< also s3 and s4
  /// Threshold bits: when `bits` is not null, each row's bits (ceil(w / 64) words, bit x set iff
  /// row[x] > above, bits past w clear) are written there and `on_row(ctx, row, bits, y)` is
  /// called once per row, in order, before the next row is swept.
  float above = 0;
  std::uint64_t* bits = nullptr;
  void (*on_row)(void* ctx, const float* row, const std::uint64_t* bits, std::int64_t y) = nullptr;
  void* ctx = nullptr;
  /// Compaction: when `out` is not null, every x >= cut is appended to out, in raster order;
  /// out holds h * w + 16 floats (the vector kernels store whole blocks).
  float cut = 0;
  float* out = nullptr;
  /// 2 * w doubles of scratch (a kernel may keep the widened previous row there).
  double* rowd = nullptr;
};

/// Outputs of one sweep (float64 sums, exact float extrema).
struct SweepResult {
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0;  ///< sum (x - K)^p, p = 1..4 (s3, s4 only if higher)
  double tvh = 0;  ///< sum |S[y, x+1] - S[y, x]| (differences in float64)
  double tvv = 0;  ///< sum |S[y+1, x] - S[y, x]|
  float mn = 0, mx = 0;
  std::int64_t kept = 0;  ///< values appended to out
};

/// One fused pass over `map` (h * w floats, C order). A NaN or Inf in the map makes s1 non-finite.
using SweepFn = void (*)(const float* map, const SweepParams& p, SweepResult* r);

void sweep_scalar(const float* map, const SweepParams& p, SweepResult* r);
#ifdef STRUCTCORE_X86
void sweep_avx2(const float* map, const SweepParams& p, SweepResult* r);
void sweep_avx512(const float* map, const SweepParams& p, SweepResult* r);
#endif

}  // namespace detail
}  // namespace structcore
