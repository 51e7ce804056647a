// Run-based connected components with on-the-fly statistics; see components.hpp.
#include "structcore/components.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

#include "structcore/common.hpp"

namespace structcore {

float float_floor_of(double t) noexcept {
  if (t >= static_cast<double>(FLT_MAX)) return FLT_MAX;
  if (t < -static_cast<double>(FLT_MAX)) return -std::numeric_limits<float>::infinity();
  float f = static_cast<float>(t);  // nearest; may round up
  if (static_cast<double>(f) > t) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  return f;
}

void ComponentScanner::reset(std::int64_t width, double threshold, int connectivity, bool label) {
  require(width >= 1 && width <= std::numeric_limits<std::int32_t>::max() - 2,
          "ComponentScanner: width out of range");
  require(connectivity == 4 || connectivity == 8, "connectivity must be 4 or 8");
  require(std::isfinite(threshold), "threshold must be finite");
  width_ = width;
  threshold_ = threshold;
  above_ = float_floor_of(threshold);
  reach_ = connectivity == 8 ? 1 : 0;
  label_ = label;
  has_origin_ = false;
  acc_ = ThresholdSummary{};
  prev_.clear();
  cur_.clear();
  parent_.clear();
  area_.clear();
  pairs_.clear();
  mass_.clear();
  ymin_.clear();
  ymax_.clear();
  xmin_.clear();
  xmax_.clear();
}

std::int32_t ComponentScanner::find(std::int32_t a) noexcept {
  std::int32_t root = a;
  while (parent_[root] != root) root = parent_[root];
  while (parent_[a] != root) {  // path compression
    const std::int32_t next = parent_[a];
    parent_[a] = root;
    a = next;
  }
  return root;
}

std::int32_t ComponentScanner::unite(std::int32_t a, std::int32_t b) noexcept {
  // a and b are roots; the smaller label survives and absorbs the other's statistics.
  if (a == b) return a;
  if (b < a) std::swap(a, b);
  parent_[b] = a;
  area_[a] += area_[b];
  pairs_[a] += pairs_[b];
  mass_[a] += mass_[b];
  ymin_[a] = std::min(ymin_[a], ymin_[b]);
  ymax_[a] = std::max(ymax_[a], ymax_[b]);
  xmin_[a] = std::min(xmin_[a], xmin_[b]);
  xmax_[a] = std::max(xmax_[a], xmax_[b]);
  return a;
}

void ComponentScanner::add_run(std::int32_t x0, std::int32_t x1, std::int64_t y, double mass) {
  const std::int32_t lo = x0 - reach_, hi = x1 + reach_;
  std::int32_t label = -1;
  std::int64_t vpairs = 0;
  // prev_ is sorted by x0 and disjoint; skip the runs entirely left of this one. A run skipped
  // here is also left of every later run of this row, so the cursor prev_pos_ keeps the scan
  // linear in the number of runs.
  std::size_t k = prev_pos_;
  while (k < prev_.size() && prev_[k].x1 < lo) ++k;
  prev_pos_ = k;
  for (; k < prev_.size() && prev_[k].x0 <= hi; ++k) {
    const Run& p = prev_[k];
    const std::int32_t overlap = std::min(x1, p.x1) - std::max(x0, p.x0) + 1;
    if (overlap > 0) vpairs += overlap;
    const std::int32_t r = find(p.label);
    label = label < 0 ? r : unite(label, r);
  }
  if (label < 0) {
    label = static_cast<std::int32_t>(parent_.size());
    parent_.push_back(label);
    area_.push_back(0);
    pairs_.push_back(0);
    mass_.push_back(0.0);
    ymin_.push_back(static_cast<std::int32_t>(y));
    ymax_.push_back(static_cast<std::int32_t>(y));
    xmin_.push_back(x0);
    xmax_.push_back(x1);
  }
  const std::int64_t len = static_cast<std::int64_t>(x1) - x0 + 1;
  area_[label] += len;
  pairs_[label] += (len - 1) + vpairs;
  mass_[label] += mass;
  ymax_[label] = static_cast<std::int32_t>(y);  // rows arrive in order
  xmin_[label] = std::min(xmin_[label], x0);
  xmax_[label] = std::max(xmax_[label], x1);
  cur_.push_back(Run{x0, x1, label});
}

namespace {

// Position of the first set bit at or after x (x <= width), or width if none.
inline std::int64_t next_set(const std::uint64_t* bits, std::int64_t x, std::int64_t width) {
  if (x >= width) return width;
  std::int64_t wi = x >> 6;
  const std::int64_t nw = (width + 63) >> 6;
  std::uint64_t word = bits[wi] & (~std::uint64_t(0) << (x & 63));
  while (word == 0) {
    if (++wi >= nw) return width;
    word = bits[wi];
  }
  return std::min(width, (wi << 6) + __builtin_ctzll(word));
}

// Position of the first clear bit at or after x (x <= width), or width if none.
inline std::int64_t next_clear(const std::uint64_t* bits, std::int64_t x, std::int64_t width) {
  if (x >= width) return width;
  std::int64_t wi = x >> 6;
  const std::int64_t nw = (width + 63) >> 6;
  std::uint64_t word = ~bits[wi] & (~std::uint64_t(0) << (x & 63));
  while (word == 0) {
    if (++wi >= nw) return width;
    word = ~bits[wi];
  }
  return std::min(width, (wi << 6) + __builtin_ctzll(word));
}

}  // namespace

void ComponentScanner::push_row(const float* row, const std::uint64_t* bits, std::int64_t y) {
  const std::int64_t w = width_;
  const double t = threshold_;
  cur_.clear();
  prev_pos_ = 0;
  double row_mass = 0, row_wx = 0, row_wxx = 0;
  bool row_above = false;
  for (std::int64_t x = next_set(bits, 0, w); x < w;) {
    const std::int64_t end = next_clear(bits, x, w);  // run [x, end)
    if (!has_origin_) {
      has_origin_ = true;
      acc_.origin_y = y;
      acc_.origin_x = x;
    }
    // mass moments of the run, relative to the origin column (two interleaved accumulators)
    const double ox = static_cast<double>(acc_.origin_x);
    double m0 = 0, m1 = 0, x0s = 0, x1s = 0, q0 = 0, q1 = 0;
    std::int64_t i = x;
    for (; i + 1 < end; i += 2) {
      const double wa = static_cast<double>(row[i]) - t, wb = static_cast<double>(row[i + 1]) - t;
      const double da = static_cast<double>(i) - ox, db = da + 1.0;
      m0 += wa;
      m1 += wb;
      x0s += wa * da;
      x1s += wb * db;
      q0 += wa * da * da;
      q1 += wb * db * db;
    }
    if (i < end) {
      const double wa = static_cast<double>(row[i]) - t, da = static_cast<double>(i) - ox;
      m0 += wa;
      x0s += wa * da;
      q0 += wa * da * da;
    }
    const double run_mass = m0 + m1;
    row_above = true;
    row_mass += run_mass;
    row_wx += x0s + x1s;
    row_wxx += q0 + q1;
    acc_.total_area += end - x;
    if (label_) add_run(static_cast<std::int32_t>(x), static_cast<std::int32_t>(end - 1), y, run_mass);
    x = next_set(bits, end, w);
  }
  if (row_above) {
    const double dy = static_cast<double>(y - acc_.origin_y);
    acc_.mass += row_mass;
    acc_.sum_wx += row_wx;
    acc_.sum_wxx += row_wxx;
    acc_.sum_wy += dy * row_mass;
    acc_.sum_wyy += dy * dy * row_mass;
    acc_.sum_wxy += dy * row_wx;
  }
  if (label_) std::swap(prev_, cur_);
}

void ComponentScanner::finish(ThresholdSummary* out) {
  ThresholdSummary s = acc_;
  if (label_) {
    std::int32_t best = -1;
    const std::int32_t n = static_cast<std::int32_t>(parent_.size());
    for (std::int32_t l = 0; l < n; ++l) {
      if (parent_[l] != l) continue;
      ++s.count;
      if (best < 0 || area_[l] > area_[best]) best = l;  // ties: first in raster order
    }
    if (best >= 0) {
      s.largest_area = area_[best];
      s.largest_mass = mass_[best];
      s.largest_perimeter = 4 * area_[best] - 2 * pairs_[best];
      s.largest_bbox_h = static_cast<std::int64_t>(ymax_[best]) - ymin_[best] + 1;
      s.largest_bbox_w = static_cast<std::int64_t>(xmax_[best]) - xmin_[best] + 1;
    }
  }
  *out = s;
}

}  // namespace structcore
