// Greedy k-center coreset: the driver (threads, iterations) and the run-time SIMD dispatch.
// See structcore/coreset.hpp for the algorithm and the canonical distance.
#include "structcore/coreset.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "coreset_pass_impl.hpp"
#include "structcore/common.hpp"

#ifdef STRUCTCORE_WITH_OPENMP
#include <omp.h>
#endif

// No contraction of a*b+c into an FMA anywhere in this file (the distance's rounding is part
// of its specification).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace structcore {
namespace detail {

float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  float value;
  if (exp == 0) {
    value = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal: exact
  } else if (exp == 31) {
    value = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    value = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits |= sign;
  std::memcpy(&value, &bits, sizeof bits);
  return value;
}

template ChunkBest coreset_pass_scalar<float>(const float*, std::int64_t, const float*,
                                              std::int64_t, std::int64_t, float*) noexcept;
template ChunkBest coreset_pass_scalar<std::uint16_t>(const std::uint16_t*, std::int64_t,
                                                      const float*, std::int64_t, std::int64_t,
                                                      float*) noexcept;

}  // namespace detail

namespace {

/// Points per thread below which adding a thread costs more (barriers) than it saves.
constexpr std::int64_t kMinPointsPerThread = 8192;

template <class T>
using PassFn = detail::ChunkBest (*)(const T*, std::int64_t, const float*, std::int64_t,
                                     std::int64_t, float*) noexcept;

template <class T>
PassFn<T> select_pass() noexcept {
#ifdef STRUCTCORE_X86
  switch (simd_level()) {
    case SimdLevel::AVX512: return &detail::coreset_pass_avx512<T>;
    case SimdLevel::AVX2: return &detail::coreset_pass_avx2<T>;
    default: break;
  }
#endif
  return &detail::coreset_pass_scalar<T>;
}

template <class T>
void to_float_padded(const T* row, std::int64_t dim, float* out, std::int64_t dim_padded) {
  for (std::int64_t j = 0; j < dim; ++j) out[j] = detail::load_as_float(row[j]);
  for (std::int64_t j = dim; j < dim_padded; ++j) out[j] = 0.f;
}

template <class T>
void coreset_impl(const T* points, std::int64_t n_points, std::int64_t dim, std::int64_t n_select,
                  std::int64_t start, int threads, std::int64_t* out) {
  require(points != nullptr && out != nullptr, "coreset: null pointer");
  require(n_points >= 1, "coreset: n_points must be >= 1");
  require(dim >= 1, "coreset: dim must be >= 1");
  require(n_select >= 1 && n_select <= n_points, "coreset: n must be in [1, n_points]");
  require(start >= 0 && start < n_points, "coreset: start must be in [0, n_points)");

  out[0] = start;
  if (n_select == 1) return;

  const std::int64_t dim_padded = (dim + 15) / 16 * 16;
  std::vector<float> min_dist(static_cast<std::size_t>(n_points),
                              std::numeric_limits<float>::infinity());
  std::vector<float> center(static_cast<std::size_t>(dim_padded));
  min_dist[static_cast<std::size_t>(start)] = -1.f;  // selected: never picked again
  to_float_padded(points + start * dim, dim, center.data(), dim_padded);

  const PassFn<T> pass = select_pass<T>();
  const std::int64_t useful = std::max<std::int64_t>(1, n_points / kMinPointsPerThread);
  const int n_threads = static_cast<int>(std::min<std::int64_t>(resolve_threads(threads), useful));
  // Double-buffered per-thread results: step t writes bests[t % 2]. One barrier per step
  // suffices, because a thread can only overwrite bests[t % 2] at step t + 2, after the
  // barrier of step t + 1, which every thread reaches only once it finished reading step t.
  std::vector<detail::ChunkBest> bests(2 * static_cast<std::size_t>(n_threads));
  float* md = min_dist.data();

  // Nothing in this region can throw (the passes are noexcept, all memory is allocated above),
  // so no exception capture is needed, and the barriers cannot be left half-way.
#pragma omp parallel num_threads(n_threads)
  {
#ifdef STRUCTCORE_WITH_OPENMP
    const int tid = omp_get_thread_num();
    const int team = omp_get_num_threads();
#else
    const int tid = 0;
    const int team = 1;
#endif
    const std::int64_t begin = n_points * tid / team;
    const std::int64_t end = n_points * (tid + 1) / team;
    // Each thread keeps its own copy of the current centre (a few hundred bytes): every
    // thread derives the same pick from the same bests, so no second barrier is needed.
    std::vector<float> my_center(center);
    for (std::int64_t t = 1; t < n_select; ++t) {
      detail::ChunkBest* step = bests.data() + static_cast<std::size_t>(t % 2) * n_threads;
      step[tid] = pass(points, dim, my_center.data(), begin, end, md);
#pragma omp barrier
      // Chunks are in index order: strict '>' keeps the lowest index on ties.
      detail::ChunkBest best{-INFINITY, -1};
      for (int k = 0; k < team; ++k)
        if (step[k].value > best.value) best = step[k];
      // best.index >= 0: t < n_select <= n_points leaves an unselected point (min_dist >= 0).
      const std::int64_t picked = best.index;
      if (tid == 0) out[t] = picked;
      if (picked >= begin && picked < end) md[picked] = -1.f;  // only the owner writes its chunk
      to_float_padded(points + picked * dim, dim, my_center.data(), dim_padded);
    }
  }
}

}  // namespace

void coreset(const float* points, std::int64_t n_points, std::int64_t dim, std::int64_t n_select,
             std::int64_t start, int threads, std::int64_t* out) {
  coreset_impl(points, n_points, dim, n_select, start, threads, out);
}

void coreset_f16(const std::uint16_t* points, std::int64_t n_points, std::int64_t dim,
                 std::int64_t n_select, std::int64_t start, int threads, std::int64_t* out) {
  coreset_impl(points, n_points, dim, n_select, start, threads, out);
}

void coreset_distances(const float* points, std::int64_t n_points, std::int64_t dim,
                       const float* center, float* out) {
  require(n_points >= 0 && dim >= 1, "coreset_distances: bad sizes");
  const std::int64_t dim_padded = (dim + 15) / 16 * 16;
  std::vector<float> cen(static_cast<std::size_t>(dim_padded), 0.f);
  std::copy(center, center + dim, cen.begin());
  std::fill(out, out + n_points, std::numeric_limits<float>::infinity());
  select_pass<float>()(points, dim, cen.data(), 0, n_points, out);
}

}  // namespace structcore
