// structcore/components.hpp — connected components and mass moments of S > t in one streaming pass.
//
// Algorithm: run-based two-row labelling with union-find (in the spirit of the run-length
// labelling of He, Chao & Suzuki 2008 and of the SAUF scan of Wu, Otoo & Suzuki 2009). Each row is
// split into runs of consecutive above-threshold pixels; a run joins every run of the previous row
// it touches (column ranges overlap for 4-connectivity, overlap or touch diagonally for
// 8-connectivity). Only the runs of two rows are kept, never a label image. Statistics are
// accumulated on the fly in the union-find roots: area, mass sum(S - t), bounding box, and the
// number of 4-adjacent pixel pairs inside the component (horizontal pairs within a run, vertical
// pairs from the column overlap with the previous row). A union merges the two roots' statistics
// into the root with the smaller label. Labels are created in raster order of a component's first
// pixel, so the surviving roots, in label order, are the components in scipy.ndimage.label order.
//
// Perimeter (crack / edge-count perimeter): the number of unit pixel edges between the component
// and any pixel not in it (background, holes, or outside the map) = 4 * area - 2 * pairs. A single
// pixel has perimeter 4; an a x b rectangle 2 (a + b); any digital disc of radius r about 8 r, so
// compactness 4 pi area / perimeter^2 is pi / 4 ~ 0.785 for a pixel or an axis-aligned square and
// tends to pi^2 / 16 ~ 0.617 for a disc.
//
// The same scan accumulates the spatial moments of the above-threshold mass w = S - t, relative to
// the first above-threshold pixel (which keeps the raw second moments well conditioned).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace structcore {

/// What ComponentScanner::finish() reports for one map.
struct ThresholdSummary {
  // -- mass moments; coordinates relative to (origin_y, origin_x), the first pixel above t --
  std::int64_t origin_y = 0, origin_x = 0;
  double mass = 0;                    ///< sum of w = S - t over S > t
  double sum_wy = 0, sum_wx = 0;      ///< sum of w dy, w dx
  double sum_wyy = 0, sum_wxx = 0, sum_wxy = 0;  ///< sum of w dy^2, w dx^2, w dy dx
  // -- connected components --
  std::int64_t count = 0;             ///< number of components
  std::int64_t total_area = 0;        ///< pixels above t
  std::int64_t largest_area = 0;      ///< pixels of the largest component (0 if none)
  double largest_mass = 0;            ///< its sum of S - t
  std::int64_t largest_perimeter = 0; ///< its crack perimeter (edges)
  std::int64_t largest_bbox_h = 0, largest_bbox_w = 0;  ///< its bounding box (pixels)
};

/// Streaming labeller: reset(), then push_row() for rows 0..H-1 in order, then finish().
/// One scanner per thread (not thread-safe); its buffers are reused across maps.
class ComponentScanner {
public:
  /// Starts a map of `width` >= 1 columns. `threshold` is the finite float64 threshold t; a pixel
  /// is above when (double)S > t. `connectivity` is 4 or 8 (precondition). With `label` false
  /// only the mass moments and totals are accumulated (no union-find).
  void reset(std::int64_t width, double threshold, int connectivity, bool label);

  /// The float cut equivalent to the threshold: for every finite float s,
  /// (double)s > threshold  <=>  s > above(). Valid after reset().
  float above() const noexcept { return above_; }

  /// Processes row `y` (width floats). Rows must come in order 0, 1, 2, ... `bits` holds
  /// ceil(width / 64) words: bit x (word x / 64, bit x % 64) is set iff row[x] > above(), and the
  /// bits past `width` in the last word are 0 (the caller's SIMD sweep computes them).
  void push_row(const float* row, const std::uint64_t* bits, std::int64_t y);

  /// Fills `out` for the rows pushed so far.
  void finish(ThresholdSummary* out);

private:
  struct Run {
    std::int32_t x0, x1;  // inclusive column range
    std::int32_t label;   // provisional label
  };
  void add_run(std::int32_t x0, std::int32_t x1, std::int64_t y, double mass);
  std::int32_t find(std::int32_t a) noexcept;
  std::int32_t unite(std::int32_t a, std::int32_t b) noexcept;

  std::int64_t width_ = 0;
  double threshold_ = 0;
  float above_ = 0;  // largest float <= threshold: (double)s > threshold  <=>  s > above_
  int reach_ = 1;    // 1 for 8-connectivity, 0 for 4
  bool label_ = true;
  bool has_origin_ = false;
  ThresholdSummary acc_;
  std::vector<Run> prev_, cur_;
  std::size_t prev_pos_ = 0;  // first run of prev_ that may touch the next run of this row
  // per provisional label (struct of arrays)
  std::vector<std::int32_t> parent_;
  std::vector<std::int64_t> area_, pairs_;
  std::vector<double> mass_;
  std::vector<std::int32_t> ymin_, ymax_, xmin_, xmax_;
};

/// Largest float f with (double)f <= t, so that for every finite float s: (double)s > t <=> s > f.
/// t must not be NaN; t >= FLT_MAX gives FLT_MAX, t < -FLT_MAX gives -inf.
float float_floor_of(double t) noexcept;

}  // namespace structcore
