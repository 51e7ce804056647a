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

/// Full passes for steps [t_begin, t_end): step t lowers min_dist with the distances to the
/// centre out[t - 1] (already marked selected, min_dist = -1) and writes out[t].
template <class T>
void full_passes(const T* points, std::int64_t n_points, std::int64_t dim, std::int64_t t_begin,
                 std::int64_t t_end, int threads, float* md, std::int64_t* out) {
  if (t_begin >= t_end) return;
  const std::int64_t dim_padded = (dim + 15) / 16 * 16;
  std::vector<float> center(static_cast<std::size_t>(dim_padded));
  to_float_padded(points + out[t_begin - 1] * dim, dim, center.data(), dim_padded);

  const PassFn<T> pass = select_pass<T>();
  const std::int64_t useful = std::max<std::int64_t>(1, n_points / kMinPointsPerThread);
  const int n_threads = static_cast<int>(std::min<std::int64_t>(resolve_threads(threads), useful));
  // Double-buffered per-thread results: step t writes bests[t % 2]. One barrier per step
  // suffices, because a thread can only overwrite bests[t % 2] at step t + 2, after the
  // barrier of step t + 1, which every thread reaches only once it finished reading step t.
  std::vector<detail::ChunkBest> bests(2 * static_cast<std::size_t>(n_threads));

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
    for (std::int64_t t = t_begin; t < t_end; ++t) {
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

// ---- Pruned steps (exact triangle-inequality skipping) --------------------------------------

/// (value, index) is better than the best so far: larger value, lowest index on ties.
inline bool better(float value, std::int64_t index, const detail::ChunkBest& best) noexcept {
  return value > best.value || (value == best.value && index < best.index);
}

/// Points of one group examined per call of the SIMD pass (gathered into a contiguous buffer).
constexpr std::int64_t kGather = 64;
/// Members of a group handled by one parallel work item.
constexpr std::int64_t kItem = 2048;
/// Auto mode: pruning is abandoned for full passes when, after kProbeSteps pruned steps, the
/// moving average of the work of a step (points evaluated + centre distances, as a fraction
/// of n_points) is above kGiveUp: pruning does not pay on this data (e.g. high-dimensional
/// Gaussian points, where all distances concentrate and no group is ever skipped). On real
/// patch features (MobileNetV2, 78k x 128) the work per step is already ~0.5 by step 30 and
/// ~0.1 by step 100; on Gaussian data it stays ~1, and a pruned step that skips nothing costs
/// about two full-pass steps, so probing longer costs Gaussian data a few percent.
constexpr std::int64_t kProbeSteps = 40;
constexpr double kGiveUp = 0.85;
/// Auto mode uses full passes only below these sizes.
constexpr std::int64_t kMinPointsPruned = 4096;
constexpr std::int64_t kMinSelectPruned = 32;

struct Group {
  std::vector<std::int64_t> members;  // unselected points whose min_dist is to this centre
  detail::ChunkBest best{-INFINITY, -1};  // largest min_dist among members, lowest index
};

struct WorkItem {
  std::int64_t group, begin, end;
};

/// Safety factor of the skip test (see can_skip) for rows of dim_padded coordinates.
double skip_factor(std::int64_t dim_padded) noexcept {
  const double u = std::ldexp(1.0, -24);
  const double m = static_cast<double>(dim_padded / 16 + 7);
  const double gamma = m * u / (1.0 - m * u);  // relative error bound of the canonical distance
  return 2.0 * (1.0 + 1e-3 + 8.0 * gamma);
}

/// Largest min_dist m for which a point x of the group of centre s certainly does not get
/// closer to the new centre c, given d_sc = canonical squared distance between s and c: x is
/// skipped when m_x = min_dist[x] <= skip_bound(d_sc); a whole group when its radius r2 (the
/// largest member min_dist) is. Returns -1 (nothing skipped) when the bound is not positive.
///
/// Why this is exact. The test is sqrt(m_x) <= (sqrt(d_sc) - a) / f with f = 2 (1 + 1e-3 +
/// 8 gamma), a = 2^-60, computed in double. Let e(.,.) be the true Euclidean distance between
/// the float32 points (binary16 inputs convert exactly), and D the canonical float32 squared
/// distance, m_x = D(x, s). With u = 2^-24 and L = dim_padded / 16, each squared difference
/// carries 2 roundings and passes through at most L - 1 + 4 additions of non-negative terms,
/// so D = e^2 (1 + theta) + eta with |theta| <= gamma = gamma_{L+7} (about 1e-6 at 128 dims)
/// and |eta| <= dim_padded * 2^-146 from underflow (subnormal results), sqrt(eta) << a. The
/// test gives e(s, c) >= (2 + 2e-3) e(x, s) (up to these bounds), hence by the triangle
/// inequality e(x, c) >= e(s, c) - e(x, s) >= (1 + 2e-3) e(x, s), and then
/// D(x, c) >= (1 - gamma) e(x, c)^2 - eta > (1 + gamma) e(x, s)^2 + eta >= D(x, s) = m_x:
/// min(m_x, D(x, c)) = m_x, so skipping x changes nothing. The margins (1e-3 relative, 2^-60
/// absolute, 1e-12 on the double product) are orders of magnitude above these rounding
/// bounds, so a skip is only ever a conservative decision: a point near the threshold is
/// evaluated.
inline double skip_bound(float d_sc, double factor) noexcept {
  constexpr double kAbs = 8.673617379884035e-19;  // 2^-60
  const double thr = (std::sqrt(static_cast<double>(d_sc)) - kAbs) / factor;
  if (!(thr > 0.0)) return -1.0;
  return thr * thr * (1.0 - 1e-12);
}

/// Pruned steps t = t_begin, t_begin + 1, ... (t_begin >= 2). Requires: out[0..t_begin-1]
/// selected (min_dist -1) and min_dist of every other point = canonical distance to out[0]
/// minimised over out[0..t_begin-2] -- here t_begin == 2: one full pass with out[0] was run.
/// Returns the first step not done (n_select when finished; earlier in auto mode when pruning
/// does not pay, the caller then continues with full passes).
template <class T>
std::int64_t pruned_passes(const T* points, std::int64_t n_points, std::int64_t dim,
                           std::int64_t n_select, int threads, bool adaptive, float* md,
                           std::int64_t* out, CoresetStats& stats) {
  const std::int64_t dim_padded = (dim + 15) / 16 * 16;
  const PassFn<T> pass = select_pass<T>();
  const double factor = skip_factor(dim_padded);
  const int n_threads = resolve_threads(threads);

  std::vector<Group> groups;
  groups.reserve(static_cast<std::size_t>(n_select));
  std::vector<T> centres(static_cast<std::size_t>(n_select * dim));  // row g = centre of group g
  std::vector<std::int64_t> owner(static_cast<std::size_t>(n_points), 0);
  std::vector<float> cd(static_cast<std::size_t>(n_select));
  std::vector<float> cvec(static_cast<std::size_t>(dim_padded));

  // Group 0: centre out[0], every unselected point.
  groups.emplace_back();
  {
    Group& g0 = groups.back();
    g0.members.reserve(static_cast<std::size_t>(n_points));
    for (std::int64_t i = 0; i < n_points; ++i) {
      if (md[i] < 0.f) continue;
      g0.members.push_back(i);
      if (better(md[i], i, g0.best)) g0.best = {md[i], i};
    }
  }
  std::copy(points + out[0] * dim, points + (out[0] + 1) * dim, centres.begin());

  // Per-thread gather buffers.
  std::vector<T> gather_rows(static_cast<std::size_t>(n_threads * kGather * dim));
  std::vector<float> gather_md(static_cast<std::size_t>(n_threads * kGather));
  std::vector<std::int64_t> candidates;
  std::vector<WorkItem> items;
  std::vector<detail::ChunkBest> item_best;
  std::vector<std::int64_t> item_eval;
  std::vector<double> bound(static_cast<std::size_t>(n_select));

  double work_avg = 1.0;
  for (std::int64_t t = 2; t < n_select; ++t) {
    if (adaptive && t - 2 >= kProbeSteps && work_avg > kGiveUp) return t;
    const std::int64_t c = out[t - 1];  // the new centre (min_dist already -1)
    const std::int64_t k = static_cast<std::int64_t>(groups.size());
    to_float_padded(points + c * dim, dim, cvec.data(), dim_padded);

    // Canonical distances from the new centre to every existing centre.
    std::fill(cd.begin(), cd.begin() + k, std::numeric_limits<float>::infinity());
    pass(centres.data(), dim, cvec.data(), 0, k, cd.data());

    candidates.clear();
    items.clear();
    std::int64_t checked = 0;
    for (std::int64_t g = 0; g < k; ++g) {
      const Group& grp = groups[static_cast<std::size_t>(g)];
      const auto size = static_cast<std::int64_t>(grp.members.size());
      if (size == 0) continue;
      bound[g] = skip_bound(cd[g], factor);
      // The group of c holds c itself (its best): always visited, also to drop c.
      if (g != owner[c] && static_cast<double>(grp.best.value) <= bound[g]) {
        ++stats.groups_skipped;
        continue;
      }
      candidates.push_back(g);
      checked += size;
      for (std::int64_t b = 0; b < size; b += kItem) items.push_back({g, b, std::min(size, b + kItem)});
    }
    ++stats.pruned_steps;
    item_best.assign(items.size(), detail::ChunkBest{-INFINITY, -1});
    item_eval.assign(items.size(), 0);

    // Evaluate: the same canonical pass as the full path, on gathered rows, so the updated
    // min_dist values are bit-identical. A member that gets closer to c is marked (stored as
    // ~index) for moving into c's group; selected points (min_dist -1) are dropped later.
    const auto n_items = static_cast<std::int64_t>(items.size());
    const int team = (n_threads > 1 && checked >= 2 * kItem) ? n_threads : 1;
    (void)team;  // used only by the OpenMP pragma
#pragma omp parallel for schedule(dynamic, 1) num_threads(team) if (team > 1)
    for (std::int64_t w = 0; w < n_items; ++w) {
      const int tid = thread_index();
      T* rows = gather_rows.data() + static_cast<std::size_t>(tid) * kGather * dim;
      float* gmd = gather_md.data() + static_cast<std::size_t>(tid) * kGather;
      const WorkItem item = items[static_cast<std::size_t>(w)];
      std::int64_t* mem = groups[static_cast<std::size_t>(item.group)].members.data();
      const double bnd = bound[item.group];
      detail::ChunkBest best{-INFINITY, -1};
      std::int64_t pos[kGather];
      std::int64_t cnt = 0;
      std::int64_t n_eval = 0;
      auto flush = [&] {
        pass(rows, dim, cvec.data(), 0, cnt, gmd);
        for (std::int64_t j = 0; j < cnt; ++j) {
          const std::int64_t i = mem[pos[j]];
          const float m = gmd[j];
          if (m < md[i]) {  // strictly closer to c
            md[i] = m;
            owner[i] = k;
            mem[pos[j]] = ~i;
          } else if (better(m, i, best)) {
            best = {m, i};
          }
        }
        n_eval += cnt;
        cnt = 0;
      };
      for (std::int64_t b = item.begin; b < item.end; ++b) {
        const std::int64_t i = mem[b];
        const float m = md[i];
        if (m < 0.f) continue;  // selected (c): dropped by the bookkeeping below
        if (static_cast<double>(m) <= bnd) {  // certainly not closer to c (skip_bound)
          if (better(m, i, best)) best = {m, i};
          continue;
        }
        std::memcpy(rows + cnt * dim, points + i * dim, static_cast<std::size_t>(dim) * sizeof(T));
        gmd[cnt] = m;
        pos[cnt++] = b;
        if (cnt == kGather) flush();
      }
      if (cnt > 0) flush();
      item_eval[static_cast<std::size_t>(w)] = n_eval;
      item_best[static_cast<std::size_t>(w)] = best;
    }

    // Serial bookkeeping, in group and member order (deterministic for any thread count).
    Group fresh;
    std::size_t w = 0;
    for (const std::int64_t g : candidates) {
      Group& grp = groups[static_cast<std::size_t>(g)];
      grp.best = {-INFINITY, -1};
      for (; w < items.size() && items[w].group == g; ++w) {
        const detail::ChunkBest& ib = item_best[w];
        if (ib.index >= 0 && better(ib.value, ib.index, grp.best)) grp.best = ib;
      }
      std::size_t keep = 0;
      for (const std::int64_t i : grp.members) {
        if (i < 0) {
          const std::int64_t moved = ~i;
          fresh.members.push_back(moved);
          if (better(md[moved], moved, fresh.best)) fresh.best = {md[moved], moved};
        } else if (md[i] >= 0.f) {
          grp.members[keep++] = i;
        }
      }
      grp.members.resize(keep);
    }
    groups.push_back(std::move(fresh));
    std::copy(points + c * dim, points + (c + 1) * dim, centres.begin() + k * dim);

    // Global farthest point: best of the group bests (largest, lowest index).
    detail::ChunkBest best{-INFINITY, -1};
    for (const Group& grp : groups)
      if (grp.best.index >= 0 && better(grp.best.value, grp.best.index, best)) best = grp.best;
    // best.index >= 0: t < n_select <= n_points leaves an unselected point in some group.
    out[t] = best.index;
    md[best.index] = -1.f;
    std::int64_t evaluated = 0;
    for (const std::int64_t e : item_eval) evaluated += e;
    stats.points_evaluated += evaluated;
    stats.points_checked += checked;
    // Work relative to a full pass: a bound check reads 12 bytes, a distance a whole row.
    const double work = static_cast<double>(evaluated + k + checked / 8) /
                        static_cast<double>(n_points);
    work_avg = 0.9 * work_avg + 0.1 * work;
  }
  return n_select;
}

template <class T>
void coreset_impl(const T* points, std::int64_t n_points, std::int64_t dim, std::int64_t n_select,
                  std::int64_t start, int threads, CoresetMode mode, std::int64_t* out,
                  CoresetStats* stats_out) {
  require(points != nullptr && out != nullptr, "coreset: null pointer");
  require(n_points >= 1, "coreset: n_points must be >= 1");
  require(dim >= 1, "coreset: dim must be >= 1");
  require(n_select >= 1 && n_select <= n_points, "coreset: n must be in [1, n_points]");
  require(start >= 0 && start < n_points, "coreset: start must be in [0, n_points)");
  require(mode == CoresetMode::kAuto || mode == CoresetMode::kFullPass ||
              mode == CoresetMode::kPruned,
          "coreset: unknown mode");

  CoresetStats stats{};
  out[0] = start;
  if (n_select > 1) {
    std::vector<float> min_dist(static_cast<std::size_t>(n_points),
                                std::numeric_limits<float>::infinity());
    float* md = min_dist.data();
    md[start] = -1.f;  // selected: never picked again
    const bool pruned = mode == CoresetMode::kPruned ||
                        (mode == CoresetMode::kAuto && n_points >= kMinPointsPruned &&
                         n_select >= kMinSelectPruned);
    std::int64_t t = 1;
    if (pruned) {
      full_passes(points, n_points, dim, 1, 2, threads, md, out);  // step 1: group of start
      stats.full_passes += 1;
      t = pruned_passes(points, n_points, dim, n_select, threads,
                        mode == CoresetMode::kAuto, md, out, stats);
    }
    full_passes(points, n_points, dim, t, n_select, threads, md, out);
    stats.full_passes += n_select - t;
  }
  if (stats_out != nullptr) *stats_out = stats;
}

}  // namespace

void coreset(const float* points, std::int64_t n_points, std::int64_t dim, std::int64_t n_select,
             std::int64_t start, int threads, std::int64_t* out) {
  coreset_impl(points, n_points, dim, n_select, start, threads, CoresetMode::kAuto, out, nullptr);
}

void coreset_ex(const float* points, std::int64_t n_points, std::int64_t dim,
                std::int64_t n_select, std::int64_t start, int threads, CoresetMode mode,
                std::int64_t* out, CoresetStats* stats) {
  coreset_impl(points, n_points, dim, n_select, start, threads, mode, out, stats);
}

void coreset_f16(const std::uint16_t* points, std::int64_t n_points, std::int64_t dim,
                 std::int64_t n_select, std::int64_t start, int threads, std::int64_t* out) {
  coreset_impl(points, n_points, dim, n_select, start, threads, CoresetMode::kAuto, out, nullptr);
}

void coreset_f16_ex(const std::uint16_t* points, std::int64_t n_points, std::int64_t dim,
                    std::int64_t n_select, std::int64_t start, int threads, CoresetMode mode,
                    std::int64_t* out, CoresetStats* stats) {
  coreset_impl(points, n_points, dim, n_select, start, threads, mode, out, stats);
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
