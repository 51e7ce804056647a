// structcore::anomaly_map — see structcore/postprocess.hpp for the contract.
//
// Per call: build, for each axis, the fused resample+blur matrix A (N x n) in float64 from the
// float32 bilinear taps (PyTorch's arithmetic) and scipy's Gaussian weights (reflect border),
// store it twice in float32 — as sparse rows (for the vertical pass) and as column bands (for
// the horizontal pass) — then run two passes per map. This file is compiled for the baseline
// x86-64 instruction set; the float32 source coordinates are bit-identical to PyTorch's.
#include "structcore/postprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "postprocess_kernels.hpp"
#include "structcore/common.hpp"

#ifdef STRUCTCORE_WITH_OPENMP
#include <omp.h>
#endif

namespace structcore {
namespace postprocess_detail {

void vrow_scalar(float* out, const float* src, std::int64_t stride, std::int64_t cols,
                 const std::int32_t* idx, const float* wts, std::int64_t nnz) {
  if (nnz == 0) {
    std::fill(out, out + cols, 0.0f);
    return;
  }
  {
    const float* s = src + static_cast<std::int64_t>(idx[0]) * stride;
    const float w = wts[0];
    for (std::int64_t c = 0; c < cols; ++c) out[c] = w * s[c];
  }
  for (std::int64_t k = 1; k < nnz; ++k) {
    const float* s = src + static_cast<std::int64_t>(idx[k]) * stride;
    const float w = wts[k];
    for (std::int64_t c = 0; c < cols; ++c) out[c] += w * s[c];
  }
}

void hrow_scalar(float* out, std::int64_t cols, const float* src, const std::int32_t* j0,
                 const std::int32_t* nj, const std::int64_t* off, const float* blk) {
  constexpr std::int64_t L = 8;
  const std::int64_t n_chunks = (cols + L - 1) / L;
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    const float* s = src + j0[c];
    const float* b = blk + off[c];
    float acc[L] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (std::int32_t t = 0; t < nj[c]; ++t)
      for (std::int64_t l = 0; l < L; ++l) acc[l] += s[t] * b[L * t + l];
    const std::int64_t x = c * L, m = std::min(L, cols - x);
    for (std::int64_t l = 0; l < m; ++l) out[x + l] = acc[l];
  }
}

}  // namespace postprocess_detail

namespace {

using postprocess_detail::HRowFn;
using postprocess_detail::VRowFn;

// The fused operator A (N x n) of one axis, stored twice.
struct AxisOperator {
  // Sparse rows (vertical pass): output o reads inputs idx[row_off[o] .. row_off[o+1]) with
  // weights wts, inputs ascending, exact zeros dropped.
  std::vector<std::int64_t> row_off;
  std::vector<std::int32_t> idx;
  std::vector<float> wts;
  // Column chunks (horizontal pass): outputs [c*lanes, c*lanes + lanes) read inputs
  // [j0[c], j0[c] + nj[c]); blk[off[c] + t*lanes + l] = A[c*lanes + l][j0[c] + t] (0 when
  // that output does not read that input or lies past N).
  int lanes = 8;
  std::vector<std::int32_t> j0, nj;
  std::vector<std::int64_t> off;
  std::vector<float> blk;
  // Flops of one horizontal row: sum(nj) * lanes.
  double hrow_flops() const { return static_cast<double>(blk.size()); }
};

// PyTorch's bilinear taps (align_corners=False), float32 arithmetic as in ATen's
// compute_source_index_and_lambda / area_pixel_compute_source_index / guard_index_and_lambda.
void bilinear_taps(std::int64_t n, std::int64_t N, std::vector<std::int32_t>& i0,
                   std::vector<std::int32_t>& i1, std::vector<float>& l0,
                   std::vector<float>& l1) {
  i0.resize(N);
  i1.resize(N);
  l0.resize(N);
  l1.resize(N);
  const float ratio = static_cast<float>(n) / static_cast<float>(N);
  for (std::int64_t o = 0; o < N; ++o) {
    if (n == N) {
      i0[o] = i1[o] = static_cast<std::int32_t>(o);
      l0[o] = 1.0f;
      l1[o] = 0.0f;
      continue;
    }
    // ATen computes ratio * (o + 0.5) - 0.5 in float32 and its AVX2/AVX-512 builds (those
    // every x86-64 machine with AVX2 runs) fuse it into one FMA, i.e. one rounding of the
    // exact value. In float64 that value is exact (a 24-bit by 16-bit product, minus 0.5, fits
    // in 53 bits), so rounding it once to float32 reproduces PyTorch's coordinate bit for bit.
    float s = static_cast<float>(static_cast<double>(ratio) * (static_cast<double>(o) + 0.5) -
                                 0.5);
    if (s < 0.0f) s = 0.0f;
    const std::int64_t a = std::min(static_cast<std::int64_t>(std::floor(s)), n - 1);
    float lam = s - static_cast<float>(a);
    lam = std::min(std::max(lam, 0.0f), 1.0f);
    i0[o] = static_cast<std::int32_t>(a);
    i1[o] = static_cast<std::int32_t>(a < n - 1 ? a + 1 : a);
    l1[o] = lam;
    l0[o] = 1.0f - lam;
  }
}

// scipy.ndimage's 'reflect' (half-sample symmetric, period 2N) index of position p.
inline std::int64_t reflect_index(std::int64_t p, std::int64_t N) {
  const std::int64_t period = 2 * N;
  std::int64_t m = p % period;
  if (m < 0) m += period;
  return m < N ? m : period - 1 - m;
}

// Gaussian taps as (offset, weight) pairs: output o reads grid position reflect(o + offset).
// scipy: radius r = int(4 * sigma + 0.5), phi = exp(-0.5 / sigma^2 * k^2), phi /= sum(phi).
// Kernels wider than the period 2N are folded modulo 2N (same result, bounded cost).
void gaussian_taps(double sigma, std::int64_t N, std::vector<std::int64_t>& offs,
                   std::vector<double>& g) {
  offs.clear();
  g.clear();
  const std::int64_t r = static_cast<std::int64_t>(4.0 * sigma + 0.5);
  if (sigma <= 0.0 || r == 0) {
    offs.push_back(0);
    g.push_back(1.0);
    return;
  }
  const double c = -0.5 / (sigma * sigma);
  const std::int64_t period = 2 * N;
  double total = 0.0;
  if (2 * r + 1 <= period) {
    offs.resize(2 * r + 1);
    g.resize(2 * r + 1);
    for (std::int64_t k = -r; k <= r; ++k) {
      const double v = std::exp(c * static_cast<double>(k * k));
      offs[k + r] = k;
      g[k + r] = v;
      total += v;
    }
  } else {
    offs.resize(period);
    g.assign(period, 0.0);
    for (std::int64_t e = 0; e < period; ++e) offs[e] = e;
    for (std::int64_t k = -r; k <= r; ++k) {
      const double v = std::exp(c * static_cast<double>(k * k));
      std::int64_t e = k % period;
      if (e < 0) e += period;
      g[e] += v;
      total += v;
    }
  }
  for (double& v : g) v /= total;
}

AxisOperator build_axis(std::int64_t n, std::int64_t N, double sigma, int lanes) {
  std::vector<std::int32_t> i0, i1;
  std::vector<float> l0, l1;
  bilinear_taps(n, N, i0, i1, l0, l1);
  std::vector<std::int64_t> offs;
  std::vector<double> g;
  gaussian_taps(sigma, N, offs, g);

  // Reflected grid index of every position an output can read: o + offs[t] with o in
  // [0, N) (one modulo per position instead of one per tap).
  const std::int64_t pmin = std::min<std::int64_t>(0, offs.front());
  const std::int64_t pmax = N - 1 + std::max<std::int64_t>(0, offs.back());
  std::vector<std::int32_t> refl(static_cast<std::size_t>(pmax - pmin + 1));
  for (std::int64_t p = pmin; p <= pmax; ++p)
    refl[p - pmin] = static_cast<std::int32_t>(reflect_index(p, N));

  AxisOperator op;
  op.row_off.assign(N + 1, 0);
  op.idx.reserve(static_cast<std::size_t>(N) * 8);
  op.wts.reserve(static_cast<std::size_t>(N) * 8);
  std::vector<double> acc(n, 0.0);
  const std::size_t n_taps = offs.size();
  for (std::int64_t o = 0; o < N; ++o) {
    const std::int32_t* rp = refl.data() + (o - pmin);
    std::int32_t lo = static_cast<std::int32_t>(n), hi = -1;
    for (std::size_t t = 0; t < n_taps; ++t) {
      const std::int32_t p = rp[offs[t]];
      const double gw = g[t];
      const std::int32_t a = i0[p], b = i1[p];  // a <= b
      acc[a] += gw * static_cast<double>(l0[p]);
      acc[b] += gw * static_cast<double>(l1[p]);
      lo = std::min(lo, a);
      hi = std::max(hi, b);
    }
    for (std::int32_t a = lo; a <= hi; ++a) {
      const float wv = static_cast<float>(acc[a]);
      if (wv != 0.0f) {
        op.idx.push_back(a);
        op.wts.push_back(wv);
      }
      acc[a] = 0.0;
    }
    op.row_off[o + 1] = static_cast<std::int64_t>(op.idx.size());
  }

  // Column chunks of `lanes` outputs.
  op.lanes = lanes;
  const std::int64_t n_chunks = (N + lanes - 1) / lanes;
  op.j0.assign(n_chunks, 0);
  op.nj.assign(n_chunks, 0);
  op.off.assign(n_chunks, 0);
  std::int64_t total = 0;
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    const std::int64_t x0 = c * lanes, x1 = std::min<std::int64_t>(N, x0 + lanes);
    std::int32_t lo = static_cast<std::int32_t>(n), hi = -1;
    for (std::int64_t x = x0; x < x1; ++x)
      if (op.row_off[x + 1] > op.row_off[x]) {
        lo = std::min(lo, op.idx[op.row_off[x]]);
        hi = std::max(hi, op.idx[op.row_off[x + 1] - 1]);
      }
    if (hi < lo) lo = hi = 0;  // no input (cannot happen: every row sums to 1)
    op.j0[c] = lo;
    op.nj[c] = hi - lo + 1;
    op.off[c] = total;
    total += static_cast<std::int64_t>(op.nj[c]) * lanes;
  }
  op.blk.assign(static_cast<std::size_t>(total), 0.0f);
  for (std::int64_t x = 0; x < N; ++x) {
    const std::int64_t c = x / lanes, l = x % lanes;
    for (std::int64_t e = op.row_off[x]; e < op.row_off[x + 1]; ++e)
      op.blk[op.off[c] + (op.idx[e] - op.j0[c]) * lanes + l] = op.wts[e];
  }
  return op;
}

struct Kernels {
  VRowFn vrow;
  HRowFn hrow;
  int lanes;
};

Kernels pick_kernels() {
#if defined(STRUCTCORE_X86)
  switch (simd_level()) {
    case SimdLevel::AVX512:
      return {postprocess_detail::vrow_avx512, postprocess_detail::hrow_avx512, 16};
    case SimdLevel::AVX2:
      return {postprocess_detail::vrow_avx2, postprocess_detail::hrow_avx2, 8};
    default:
      break;
  }
#endif
  return {postprocess_detail::vrow_scalar, postprocess_detail::hrow_scalar, 8};
}

// A few recently built operators, shared by all threads: the same shapes and sigma come back
// on every call of a detector, and building costs about as much as filtering one map.
// Entries are immutable once published (shared_ptr<const>), so readers need no lock after
// the lookup.
class OperatorCache {
public:
  std::shared_ptr<const AxisOperator> get(std::int64_t n, std::int64_t N, double sigma,
                                          int lanes) {
    std::uint64_t sigma_bits;
    std::memcpy(&sigma_bits, &sigma, sizeof sigma_bits);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (std::size_t i = 0; i < entries_.size(); ++i) {
        const Entry& e = entries_[i];
        if (e.n == n && e.N == N && e.sigma_bits == sigma_bits && e.lanes == lanes) {
          std::shared_ptr<const AxisOperator> op = e.op;
          std::rotate(entries_.begin(), entries_.begin() + i, entries_.begin() + i + 1);
          return op;
        }
      }
    }
    auto op = std::make_shared<const AxisOperator>(build_axis(n, N, sigma, lanes));
    // Large operators (huge, heavily blurred or downsampled axes) are not kept.
    if (op->blk.size() + op->wts.size() <= kMaxCachedFloats) {
      std::lock_guard<std::mutex> lock(mutex_);
      entries_.insert(entries_.begin(), Entry{n, N, sigma_bits, lanes, op});
      if (entries_.size() > kCapacity) entries_.pop_back();
    }
    return op;
  }

private:
  struct Entry {
    std::int64_t n, N;
    std::uint64_t sigma_bits;
    int lanes;
    std::shared_ptr<const AxisOperator> op;
  };
  static constexpr std::size_t kCapacity = 8;
  static constexpr std::size_t kMaxCachedFloats = std::size_t(1) << 20;
  std::mutex mutex_;
  std::vector<Entry> entries_;  // most recently used first
};

OperatorCache& operator_cache() {
  static OperatorCache cache;  // thread-safe initialisation (C++11)
  return cache;
}

// The two passes over one map, split into row ranges so that threads can share a map.
struct MapPlan {
  const AxisOperator* ay;  // vertical operator (h -> H)
  const AxisOperator* ax;  // horizontal operator (w -> W)
  std::int64_t h, w, H, W;
  bool horizontal_first;  // T = P * Ax^T (h x W), then Ay * T; else T = Ay * P (H x w)
  Kernels k;

  std::int64_t tmp_rows() const { return horizontal_first ? h : H; }
  std::int64_t tmp_cols() const { return horizontal_first ? W : w; }

  void hrow(float* out, const float* src) const {
    k.hrow(out, W, src, ax->j0.data(), ax->nj.data(), ax->off.data(), ax->blk.data());
  }
  void vrow(float* out, const float* src, std::int64_t cols, std::int64_t r) const {
    const std::int64_t e0 = ay->row_off[r], e1 = ay->row_off[r + 1];
    k.vrow(out, src, cols, cols, ay->idx.data() + e0, ay->wts.data() + e0, e1 - e0);
  }
  // Pass 1, rows [r0, r1) of T.
  void pass1(const float* P, float* T, std::int64_t r0, std::int64_t r1) const {
    for (std::int64_t r = r0; r < r1; ++r) {
      if (horizontal_first) hrow(T + r * W, P + r * w);
      else vrow(T + r * w, P, w, r);
    }
  }
  // Pass 2, output rows [r0, r1).
  void pass2(const float* T, float* Y, std::int64_t r0, std::int64_t r1) const {
    for (std::int64_t r = r0; r < r1; ++r) {
      if (horizontal_first) vrow(Y + r * W, T, W, r);
      else hrow(Y + r * W, T + r * w);
    }
  }
};

}  // namespace

void anomaly_map(const float* patch_scores, std::int64_t n_maps, std::int64_t h, std::int64_t w,
                 float* maps, std::int64_t H, std::int64_t W, double sigma, int threads) {
  require(n_maps >= 1 && h >= 1 && w >= 1, "anomaly_map: n_maps, h and w must be >= 1");
  require(h <= INT32_MAX && w <= INT32_MAX, "anomaly_map: h and w must fit in int32");
  require(H >= 1 && W >= 1 && H <= kAnomalyMapMaxSide && W <= kAnomalyMapMaxSide,
          "anomaly_map: output size must be in [1, 16384] per side");
  require(n_maps <= kAnomalyMapMaxElements / (H * W),
          "anomaly_map: n_maps * H * W must be <= 2**30");
  require(std::isfinite(sigma) && sigma >= 0.0 && sigma <= kAnomalyMapMaxSigma,
          "anomaly_map: sigma must be finite and in [0, 1000]");
  require(patch_scores != nullptr && maps != nullptr, "anomaly_map: null pointer");

  const Kernels kern = pick_kernels();
  const std::shared_ptr<const AxisOperator> ay = operator_cache().get(h, H, sigma, kern.lanes);
  const std::shared_ptr<const AxisOperator> ax = operator_cache().get(w, W, sigma, kern.lanes);

  MapPlan plan{ay.get(), ax.get(), h, w, H, W, true, kern};
  // Flops of the two orders (shapes only: the choice never depends on threads).
  const double nnz_y = static_cast<double>(ay->idx.size());
  const double cost_h_first = static_cast<double>(h) * ax->hrow_flops() +
                              nnz_y * static_cast<double>(W);
  const double cost_v_first = nnz_y * static_cast<double>(w) +
                              static_cast<double>(H) * ax->hrow_flops();
  plan.horizontal_first = cost_h_first <= cost_v_first;

  const std::int64_t tmp_size = plan.tmp_rows() * plan.tmp_cols();
  const std::int64_t in_size = h * w, out_size = H * W;
  const int nthreads = resolve_threads(threads);
  // Below this many flops per call (about 3 maps of 224 x 224 at sigma 4, ~40 us), forking
  // threads costs more than it saves, above all on a busy machine: stay serial.
  constexpr double kMinParallelFlops = 1.0e6;
  const double work = std::min(cost_h_first, cost_v_first) * static_cast<double>(n_maps);
  const bool parallel = nthreads > 1 && work > kMinParallelFlops;

  OmpExceptionCapture cap;
  if (!parallel || n_maps >= nthreads) {
    // Maps over threads; each thread owns one temporary.
#pragma omp parallel num_threads(nthreads) if (parallel)
    {
      std::vector<float> T;
      cap.run([&] { T.resize(static_cast<std::size_t>(tmp_size)); });
    // Dynamic: on a shared machine one thread may be descheduled; the others take its maps.
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t b = 0; b < n_maps; ++b) {
        cap.run([&] {
          plan.pass1(patch_scores + b * in_size, T.data(), 0, plan.tmp_rows());
          plan.pass2(T.data(), maps + b * out_size, 0, H);
        });
      }
    }
    cap.rethrow();
  } else {
    // Fewer maps than threads: share each map's rows.
    std::vector<float> T(static_cast<std::size_t>(tmp_size));
    for (std::int64_t b = 0; b < n_maps; ++b) {
      const float* P = patch_scores + b * in_size;
      float* Y = maps + b * out_size;
#pragma omp parallel num_threads(nthreads)
      {
#pragma omp for schedule(dynamic, 4)
        for (std::int64_t r = 0; r < plan.tmp_rows(); ++r)
          cap.run([&] { plan.pass1(P, T.data(), r, r + 1); });
#pragma omp for schedule(dynamic, 4)
        for (std::int64_t r = 0; r < H; ++r) cap.run([&] { plan.pass2(T.data(), Y, r, r + 1); });
      }
      cap.rethrow();
    }
  }
}

}  // namespace structcore
