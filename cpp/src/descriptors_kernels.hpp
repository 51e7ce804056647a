// Internal: the per-ISA sweep kernels of describe() (descriptors.cpp, descriptors_avx2.cpp,
// descriptors_avx512.cpp). Not part of the public C++ API.
#pragma once

#include <cstdint>

namespace structcore {
namespace detail {

/// Running totals of pass 1 (all float64 except the exact float extrema).
struct RowSweep {
  double sum = 0;   ///< sum of S
  double tvh = 0;   ///< sum |S[y, x+1] - S[y, x]|
  double tvv = 0;   ///< sum |S[y, x] - S[y-1, x]|
  float mn = 0, mx = 0;  ///< extrema; the caller seeds both with the map's first value
};

/// Adds one row to `acc`: row has `w` >= 1 floats; `up` is the previous row (w floats) or null
/// for the first row. Differences are taken in float64, as NumPy's float64 reference does.
/// When `bits` is not null it receives ceil(w / 64) words: bit x set iff row[x] > above, bits
/// past w cleared.
using SweepRowFn = void (*)(const float* row, const float* up, std::int64_t w, float above,
                            std::uint64_t* bits, RowSweep* acc);

/// Sums of powers of the deviations d = x - mean (float64).
struct DevSums {
  double s2 = 0, s3 = 0, s4 = 0;
};

/// Pass 2 over `n` values: adds sum d^2 (and, when `higher`, sum d^3 and sum d^4) to `acc`. When
/// `out` is not null, also copies every x >= g to out (in order; `out` holds n + 16 floats,
/// the vector kernels store whole blocks past the kept ones) and returns
/// how many were copied; returns 0 when `out` is null. With `deviations` false only the copy runs.
using DevFn = std::int64_t (*)(const float* x, std::int64_t n, double mean, bool deviations,
                               bool higher, float g, float* out, DevSums* acc);

void sweep_row_scalar(const float* row, const float* up, std::int64_t w, float above,
                      std::uint64_t* bits, RowSweep* acc);
std::int64_t dev_scalar(const float* x, std::int64_t n, double mean, bool deviations, bool higher,
                        float g, float* out, DevSums* acc);
#ifdef STRUCTCORE_X86
void sweep_row_avx2(const float* row, const float* up, std::int64_t w, float above,
                      std::uint64_t* bits, RowSweep* acc);
std::int64_t dev_avx2(const float* x, std::int64_t n, double mean, bool deviations, bool higher,
                      float g, float* out, DevSums* acc);
void sweep_row_avx512(const float* row, const float* up, std::int64_t w, float above,
                      std::uint64_t* bits, RowSweep* acc);
std::int64_t dev_avx512(const float* x, std::int64_t n, double mean, bool deviations, bool higher,
                        float g, float* out, DevSums* acc);
#endif

}  // namespace detail
}  // namespace structcore
