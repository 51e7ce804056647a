// The structural descriptor kernel; see descriptors.hpp for the contract and the algorithm.
#include "structcore/descriptors.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "descriptors_kernels.hpp"
#include "structcore/common.hpp"
#include "structcore/components.hpp"

namespace structcore {

namespace {

constexpr DescriptorCodeInfo kTable[kDescriptorCodeCount] = {
    {"std", 0, false},
    {"top_mean", 1, false},
    {"tv", 2, false},
    {"max", 3, false},
    {"min", 4, false},
    {"mean", 5, false},
    {"quantile", 6, false},
    {"skew", 7, false},
    {"kurtosis", 8, false},
    {"centroid_y", 9, true},
    {"centroid_x", 10, true},
    {"mu20", 11, true},
    {"mu02", 12, true},
    {"mu11", 13, true},
    {"spread", 14, true},
    {"eccentricity", 15, true},
    {"orientation", 16, true},
    {"cc_count", 17, true},
    {"cc_largest_area", 18, true},
    {"cc_largest_mass", 19, true},
    {"cc_total_area", 20, true},
    {"cc_total_mass", 21, true},
    {"cc_largest_compactness", 22, true},
    {"cc_largest_fill", 23, true},
};

constexpr double kPi = 3.14159265358979323846;

// Sample size (the shift of the power sums and the cut of the order statistics): maps of up to
// 256 pixels are taken whole, larger ones give clamp(round(4.5 sqrt(N)), 256, 8192) pixels,
// which roughly balances selecting in the sample against selecting among the candidates that
// pass its cut (about N (r + (4 sqrt(r s) + 8) / s) of them for a tail ratio r).
constexpr std::int64_t kMinSample = 256;
constexpr std::int64_t kMaxSample = 8192;

std::int64_t sample_size(std::int64_t n) {
  if (n <= kMinSample) return n;
  const auto s = static_cast<std::int64_t>(std::llround(4.5 * std::sqrt(static_cast<double>(n))));
  return std::min(kMaxSample, std::max(kMinSample, s));
}
// Thread-local scratch above this many bytes is released after each map.
// The vector compaction kernels store whole blocks: room past the last kept value.
constexpr std::int64_t kStoreSlack = 16;
constexpr std::size_t kScratchKeepBytes = std::size_t(64) << 20;

// What the requested codes need, worked out once per call.
struct Plan {
  bool deviations = false;  // sum d^2
  bool higher = false;      // sum d^3, d^4
  bool threshold = false;   // the scanner
  bool label = false;       // union-find labelling
  bool select = false;      // order statistics
};

struct QuantileSpec {
  std::int64_t lo = 0, hi = 0;  // sorted positions of the two neighbours
  double gamma = 0;            // interpolation weight
};

// NumPy's 'linear' quantile (numpy/lib/_function_base_impl.py: _compute_virtual_index with
// alpha = beta = 1, _get_indexes, _lerp), reproduced operation by operation in float64.
QuantileSpec quantile_spec(double q, std::int64_t n) {
  QuantileSpec s;
  const double v = (static_cast<double>(n) * q + (1.0 + q * -1.0)) - 1.0;
  if (v >= static_cast<double>(n - 1)) {
    s.lo = s.hi = n - 1;
    s.gamma = 0;
  } else if (v < 0) {
    s.lo = s.hi = 0;
    s.gamma = 0;
  } else {
    const double f = std::floor(v);
    s.lo = static_cast<std::int64_t>(f);
    s.hi = s.lo + 1;
    s.gamma = v - f;
  }
  return s;
}

double lerp_numpy(double a, double b, double t) {
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

struct Scratch {
  std::vector<std::uint64_t> bits;  // one row of above-threshold bits
  std::vector<double> rowd;         // two widened rows (the AVX-512 sweep)
  std::vector<float> cand;
  std::vector<float> sample;
  ComponentScanner scanner;
};

detail::SweepFn pick_sweep() {
#ifdef STRUCTCORE_X86
  switch (simd_level()) {
    case SimdLevel::AVX512: return detail::sweep_avx512;
    case SimdLevel::AVX2: return detail::sweep_avx2;
    default: break;
  }
#endif
  return detail::sweep_scalar;
}

void push_row_to_scanner(void* ctx, const float* row, const std::uint64_t* bits, std::int64_t y) {
  static_cast<ComponentScanner*>(ctx)->push_row(row, bits, y);
}

// Exact two-pass central power sums about `mean` (the rare fallback when the sampled shift was
// far from the mean).
void central_sums(const float* x, std::int64_t n, double mean, bool higher, double* s2,
                  double* s3, double* s4) {
  double a2 = 0, a3 = 0, a4 = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean, d2 = d * d;
    a2 += d2;
    if (higher) {
      a3 += d2 * d;
      a4 += d2 * d2;
    }
  }
  *s2 = a2;
  *s3 = a3;
  *s4 = a4;
}

struct Call {
  const float* maps;
  std::int64_t h, w, n;
  const std::int32_t* codes;
  std::int64_t n_components;
  std::int64_t top_k;
  double threshold;
  int connectivity;
  Plan plan;
  std::vector<QuantileSpec> qspec;  // per component (used for Quantile codes)
  std::vector<std::int64_t> ranks;  // sorted unique positions to select
  detail::SweepFn sweep;
};

// The moments of the above-threshold mass and their derived shape statistics.
struct MassShape {
  double cy, cx, mu20, mu02, mu11, spread, ecc, orient;
};

MassShape mass_shape(const ThresholdSummary& s, std::int64_t h, std::int64_t w) {
  MassShape m{};
  if (s.total_area == 0 || !(s.mass > 0)) {
    m.cy = 0.5 * static_cast<double>(h - 1);
    m.cx = 0.5 * static_cast<double>(w - 1);
    return m;
  }
  const double ey = s.sum_wy / s.mass, ex = s.sum_wx / s.mass;
  m.cy = static_cast<double>(s.origin_y) + ey;
  m.cx = static_cast<double>(s.origin_x) + ex;
  m.mu20 = std::max(0.0, s.sum_wyy / s.mass - ey * ey);
  m.mu02 = std::max(0.0, s.sum_wxx / s.mass - ex * ex);
  m.mu11 = s.sum_wxy / s.mass - ey * ex;
  m.spread = std::sqrt(m.mu20 + m.mu02);
  const double half_trace = 0.5 * (m.mu20 + m.mu02);
  const double half_diff = 0.5 * (m.mu02 - m.mu20);
  const double disc = std::sqrt(half_diff * half_diff + m.mu11 * m.mu11);
  const double l1 = half_trace + disc;
  // A mass whose largest variance is at most kPointVariance px^2 is a point (eccentricity and
  // orientation 0): below that the raw-moment variances are cancellation noise (a 1e-40
  // weight beside a weight of 1 has a true variance of 1e-40 that no double can resolve).
  constexpr double kPointVariance = 1e-9;
  if (l1 > kPointVariance) {
    // e^2 = 1 - l2 / l1 = 2 disc / l1 (no cancellation in l2).
    m.ecc = std::min(1.0, std::sqrt(2.0 * disc / l1));
  }
  if (l1 > kPointVariance && disc > 1e-9 * half_trace) {
    m.orient = 0.5 * std::atan2(2.0 * m.mu11, m.mu02 - m.mu20);
    if (m.orient <= -0.5 * kPi) m.orient = 0.5 * kPi;  // range (-pi/2, pi/2]
  }
  return m;
}

void describe_one(const Call& c, std::int64_t b, double* out, Scratch& scr) {
  const std::int64_t h = c.h, w = c.w, n = c.n;
  const float* map = c.maps + b * n;
  const Plan& plan = c.plan;
  const double dn = static_cast<double>(n);

  // ---- a fixed sample: the shift of the power sums and the cut of the order statistics ----
  // Small maps are taken whole; larger ones give one pixel at a hashed offset in each of s equal
  // strides (so that the sample does not align with rows or columns).
  const std::int64_t s = sample_size(n);
  scr.sample.resize(static_cast<std::size_t>(s));
  if (s == n) {
    std::copy(map, map + n, scr.sample.begin());
  } else {
    const std::int64_t stride = n / s;
    for (std::int64_t i = 0; i < s; ++i) {
      // offset = floor(u * stride) for a 32-bit hash u of i (multiply-shift, no division)
      const std::uint64_t hsh = ((static_cast<std::uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ULL) >> 32;
      const auto off = static_cast<std::int64_t>((hsh * static_cast<std::uint64_t>(stride)) >> 32);
      scr.sample[static_cast<std::size_t>(i)] = map[i * stride + off];
    }
  }
  double shift = 0;
  for (const float v : scr.sample) shift += static_cast<double>(v);
  shift /= static_cast<double>(s);

  float cut = -std::numeric_limits<float>::infinity();
  std::int64_t needed = 0;  // every sorted position >= n - needed must be a candidate
  if (plan.select) {
    needed = n - c.ranks.front();
    if (needed * 8 <= n) {
      // A lower bound of the needed order statistics, with a wide margin; checked below, so a
      // bad guess only costs time.
      const double e = static_cast<double>(needed) / dn * static_cast<double>(s);
      const auto j = static_cast<std::int64_t>(std::ceil(e + 4.0 * std::sqrt(e) + 8.0));
      if (j < s) {
        auto nth = scr.sample.begin() + (s - j);
        std::nth_element(scr.sample.begin(), nth, scr.sample.end());
        cut = *nth;
      }
    }
  }

  // ---- the fused pass ----
  detail::SweepParams p;
  p.h = h;
  p.w = w;
  p.shift = shift;
  p.higher = plan.higher;
  if (plan.threshold) {
    scr.scanner.reset(w, c.threshold, c.connectivity, plan.label);
    p.above = scr.scanner.above();
    scr.bits.resize(static_cast<std::size_t>((w + 63) >> 6));
    p.bits = scr.bits.data();
    p.on_row = push_row_to_scanner;
    p.ctx = &scr.scanner;
  }
  float* cand = nullptr;
  if (plan.select) {
    const auto room = static_cast<std::size_t>(n + kStoreSlack);
    if (scr.cand.size() < room) scr.cand.resize(room);
    cand = scr.cand.data();
    p.cut = cut;
    p.out = cand;
  }
  scr.rowd.resize(static_cast<std::size_t>(2 * w));
  p.rowd = scr.rowd.data();
  detail::SweepResult sw;
  c.sweep(map, p, &sw);
  if (!std::isfinite(sw.s1) || !std::isfinite(shift)) {
    throw std::invalid_argument("maps must be finite; map " + std::to_string(b) +
                                " holds NaN or Inf");
  }

  // ---- moments: from the shifted sums, or two-pass when the shift was off by over a std ----
  const double e = sw.s1 / dn;  // mean - shift
  const double mean = shift + e;
  double m2 = 0, m3 = 0, m4 = 0;
  {
    const double r2 = sw.s2 / dn, r3 = sw.s3 / dn, r4 = sw.s4 / dn;
    m2 = r2 - e * e;
    if (e * e > m2) {
      double s2 = 0, s3 = 0, s4 = 0;
      central_sums(map, n, mean, plan.higher, &s2, &s3, &s4);
      m2 = s2 / dn;
      m3 = s3 / dn;
      m4 = s4 / dn;
    } else if (plan.higher) {
      m3 = r3 - 3.0 * e * r2 + 2.0 * e * e * e;
      m4 = r4 - 4.0 * e * r3 + 6.0 * e * e * r2 - 3.0 * e * e * e * e;
    }
    m2 = std::max(m2, 0.0);
    m4 = std::max(m4, 0.0);
  }

  // ---- order statistics ----
  std::int64_t offset = 0;  // sorted position of cand[0]
  if (plan.select) {
    std::int64_t count = sw.kept;
    if (count < needed) {  // the sample over-estimated the cut: take everything
      std::copy(map, map + n, cand);
      count = n;
    }
    offset = n - count;
    std::int64_t from = 0;
    for (const std::int64_t r : c.ranks) {
      const std::int64_t i = r - offset;
      std::nth_element(cand + from, cand + i, cand + count);
      from = i + 1;
    }
  }
  auto order_stat = [&](std::int64_t r) { return static_cast<double>(cand[r - offset]); };

  // ---- the threshold statistics ----
  ThresholdSummary ts;
  MassShape shape{};
  if (plan.threshold) {
    scr.scanner.finish(&ts);
    shape = mass_shape(ts, h, w);
  }

  for (std::int64_t j = 0; j < c.n_components; ++j) {
    double v = 0;
    switch (static_cast<DescriptorCode>(c.codes[j])) {
      case DescriptorCode::Std: v = std::sqrt(m2); break;
      case DescriptorCode::TopMean: {
        double s = 0;
        const std::int64_t first = (n - c.top_k) - offset;
        for (std::int64_t i = first; i < n - offset; ++i) s += static_cast<double>(cand[i]);
        v = s / static_cast<double>(c.top_k);
        break;
      }
      case DescriptorCode::Tv: v = (sw.tvh + sw.tvv) / dn; break;
      case DescriptorCode::Max: v = sw.mx; break;
      case DescriptorCode::Min: v = sw.mn; break;
      case DescriptorCode::Mean: v = mean; break;
      case DescriptorCode::Quantile: {
        const QuantileSpec& q = c.qspec[static_cast<std::size_t>(j)];
        v = lerp_numpy(order_stat(q.lo), order_stat(q.hi), q.gamma);
        break;
      }
      case DescriptorCode::Skew: v = m2 > 0 ? m3 / (m2 * std::sqrt(m2)) : 0.0; break;
      case DescriptorCode::Kurtosis: v = m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0.0; break;
      case DescriptorCode::CentroidY: v = shape.cy; break;
      case DescriptorCode::CentroidX: v = shape.cx; break;
      case DescriptorCode::Mu20: v = shape.mu20; break;
      case DescriptorCode::Mu02: v = shape.mu02; break;
      case DescriptorCode::Mu11: v = shape.mu11; break;
      case DescriptorCode::Spread: v = shape.spread; break;
      case DescriptorCode::Eccentricity: v = shape.ecc; break;
      case DescriptorCode::Orientation: v = shape.orient; break;
      case DescriptorCode::CcCount: v = static_cast<double>(ts.count); break;
      case DescriptorCode::CcLargestArea: v = static_cast<double>(ts.largest_area) / dn; break;
      case DescriptorCode::CcLargestMass: v = ts.largest_mass; break;
      case DescriptorCode::CcTotalArea: v = static_cast<double>(ts.total_area) / dn; break;
      case DescriptorCode::CcTotalMass: v = ts.mass; break;
      case DescriptorCode::CcLargestCompactness:
        if (ts.largest_perimeter > 0) {
          const double p = static_cast<double>(ts.largest_perimeter);
          v = 4.0 * kPi * static_cast<double>(ts.largest_area) / (p * p);
        }
        break;
      case DescriptorCode::CcLargestFill:
        if (ts.largest_area > 0) {
          v = static_cast<double>(ts.largest_area) /
              (static_cast<double>(ts.largest_bbox_h) * static_cast<double>(ts.largest_bbox_w));
        }
        break;
    }
    out[j] = v;
  }
}

}  // namespace

const DescriptorCodeInfo* descriptor_code_table(std::size_t* count) noexcept {
  if (count) *count = static_cast<std::size_t>(kDescriptorCodeCount);
  return kTable;
}

void describe(const float* maps, std::int64_t n_maps, std::int64_t height, std::int64_t width,
              const std::int32_t* codes, const double* quantiles, std::int64_t n_components,
              std::int64_t top_k, bool has_threshold, double threshold, int connectivity,
              double* phi, int threads) {
  require(maps != nullptr && phi != nullptr && codes != nullptr && quantiles != nullptr,
          "describe: null pointer");
  require(n_maps >= 1, "describe: maps must hold at least one map");
  require(height >= 1 && width >= 1, "describe: maps must have height >= 1 and width >= 1");
  require(width < std::numeric_limits<std::int32_t>::max() - 2 &&
              height < std::numeric_limits<std::int32_t>::max() - 2,
          "describe: maps are too large");
  require(n_components >= 1, "describe: components must not be empty");
  require(connectivity == 4 || connectivity == 8, "connectivity must be 4 or 8");
  Call c;
  c.maps = maps;
  c.h = height;
  c.w = width;
  c.n = height * width;
  require(top_k >= 1 && top_k <= c.n, "describe: top_k must be in [1, height * width]");
  c.codes = codes;
  c.n_components = n_components;
  c.top_k = top_k;
  c.threshold = threshold;
  c.connectivity = connectivity;
  c.qspec.resize(static_cast<std::size_t>(n_components));
  for (std::int64_t j = 0; j < n_components; ++j) {
    const std::int32_t code = codes[j];
    require(code >= 0 && code < kDescriptorCodeCount, "describe: unknown component code");
    const auto dc = static_cast<DescriptorCode>(code);
    if (kTable[code].needs_threshold) {
      require(has_threshold, "describe: a requested component needs a threshold (threshold=None)");
      require(std::isfinite(threshold), "threshold must be finite");
      // Masses w = S - t of float32 maps stay far from float64 overflow (sum w dy^2 over
      // 2^62 pixels) only for |t| <= 2^128; beyond, the centroid and moments would be Inf/Inf.
      require(std::fabs(threshold) <= 0x1p128,
              "threshold must lie in [-2**128, 2**128] (the float32 range; a threshold outside "
              "it makes the above-threshold masses overflow)");
      c.plan.threshold = true;
      if (code >= static_cast<std::int32_t>(DescriptorCode::CcCount) &&
          dc != DescriptorCode::CcTotalArea && dc != DescriptorCode::CcTotalMass)
        c.plan.label = true;
    }
    switch (dc) {
      case DescriptorCode::Std: c.plan.deviations = true; break;
      case DescriptorCode::Skew:
      case DescriptorCode::Kurtosis:
        c.plan.deviations = c.plan.higher = true;
        break;
      case DescriptorCode::TopMean:
        c.plan.select = true;
        c.ranks.push_back(c.n - top_k);
        break;
      case DescriptorCode::Quantile: {
        const double q = quantiles[j];
        require(q >= 0.0 && q <= 1.0, "describe: quantiles must be in [0, 1]");
        const QuantileSpec s = quantile_spec(q, c.n);
        c.qspec[static_cast<std::size_t>(j)] = s;
        c.plan.select = true;
        c.ranks.push_back(s.lo);
        c.ranks.push_back(s.hi);
        break;
      }
      default: break;
    }
  }
  std::sort(c.ranks.begin(), c.ranks.end());
  c.ranks.erase(std::unique(c.ranks.begin(), c.ranks.end()), c.ranks.end());
  c.sweep = pick_sweep();

  const int nt = resolve_threads(threads);
  (void)nt;  // used only by the OpenMP pragma
  OmpExceptionCapture capture;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && n_maps > 1)
  for (std::int64_t b = 0; b < n_maps; ++b) {
    capture.run([&] {
      static thread_local Scratch scratch;
      describe_one(c, b, phi + b * n_components, scratch);
      if (scratch.cand.capacity() * sizeof(float) > kScratchKeepBytes) {
        std::vector<float>().swap(scratch.cand);
      }
    });
  }
  capture.rethrow();
}

namespace detail {

void sweep_scalar(const float* map, const SweepParams& p, SweepResult* r) {
  const std::int64_t h = p.h, w = p.w;
  const double k = p.shift;
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0, tvh = 0, tvv = 0;
  float mn = map[0], mx = map[0];
  std::int64_t kept = 0;
  for (std::int64_t y = 0; y < h; ++y) {
    const float* row = map + y * w;
    const float* up = y > 0 ? row - w : nullptr;
    for (std::int64_t x = 0; x < w; ++x) {
      const float f = row[x];
      const double a = f, d = a - k, d2 = d * d;
      s1 += d;
      s2 += d2;
      if (p.higher) {
        s3 += d2 * d;
        s4 += d2 * d2;
      }
      if (x + 1 < w) tvh += std::fabs(static_cast<double>(row[x + 1]) - a);
      if (up) tvv += std::fabs(a - static_cast<double>(up[x]));
      mn = std::min(mn, f);
      mx = std::max(mx, f);
      if (p.out) {
        p.out[kept] = f;
        kept += f >= p.cut ? 1 : 0;
      }
    }
    if (p.bits) {
      for (std::int64_t i = 0; i < (w + 63) >> 6; ++i) {
        std::uint64_t word = 0;
        const std::int64_t end = std::min<std::int64_t>(w, (i + 1) << 6);
        for (std::int64_t j = i << 6; j < end; ++j)
          word |= static_cast<std::uint64_t>(row[j] > p.above) << (j & 63);
        p.bits[i] = word;
      }
      p.on_row(p.ctx, row, p.bits, y);
    }
  }
  r->s1 = s1;
  r->s2 = s2;
  r->s3 = s3;
  r->s4 = s4;
  r->tvh = tvh;
  r->tvv = tvv;
  r->mn = mn;
  r->mx = mx;
  r->kept = kept;
}

}  // namespace detail

}  // namespace structcore
