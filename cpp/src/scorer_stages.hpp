// scorer_stages.hpp — the stages of structcore::Scorer, named as the Python detector's stages
// (docs/ARCHITECTURE.md). Internal to the library (included by scorer.cpp only).
//
//   Python (python/structcore/)            C++ (here)
//   features.FeatureExtractor              (not in the model file: run the backbone elsewhere)
//   memory_bank.MemoryBank.search          stages::MemoryBank::search     kNN patch scores
//   memory_bank.MemoryBank.reweight        stages::MemoryBank::reweight   PatchCore eq. 7
//   maps.AnomalyMapper (+ max_scores)      stages::AnomalyMapper::map / max_scores
//   descriptor.Descriptor                  stages::Descriptor::describe   phi(S)
//   calibration.StructCalibrator.transform stages::StructCalibrator::transform   z, D, score
//     (+ learned_calibration.linear_score: the weights of calibration="synthetic")
//
// Each stage computes exactly what its Python twin computes, in the same floating-point order
// (NumPy's pairwise summation for float sums), so Scorer's outputs equal Detector.predict's
// bit for bit on the same features. Preconditions are checked by Scorer (sizes, finiteness);
// the stages trust their arguments.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "structcore/descriptors.hpp"
#include "structcore/knn.hpp"
#include "structcore/postprocess.hpp"

namespace structcore {
namespace stages {

/// numpy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src, PW_BLOCKSIZE 128): the
/// order in which np.sum / np.mean add a contiguous row, so that float results match bit for
/// bit. `a` holds n values with stride `stride` elements.
template <class T>
T pairwise_sum(const T* a, std::int64_t n, std::int64_t stride) noexcept {
  if (n < 8) {
    T res = T(0);
    for (std::int64_t i = 0; i < n; ++i) res += a[i * stride];
    return res;
  }
  if (n <= 128) {
    T r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j * stride];
    std::int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[(i + j) * stride];
    T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i * stride];
    return res;
  }
  std::int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2, stride) + pairwise_sum(a + n2 * stride, n - n2, stride);
}

/// Stage 2 (structcore.memory_bank.MemoryBank): the bank rows and exact kNN patch scores.
struct MemoryBank {
  std::vector<float> vectors;  ///< n_bank * dim floats, row-major
  std::int64_t n_bank = 0;
  std::int64_t dim = 0;
  /// PatchCore reweighting: bank neighbours of m* (anomalib's default; memory_bank.py).
  static constexpr std::int64_t kReweightNeighbors = 9;

  /// Patch scores of n_queries feature vectors (n_queries * dim floats): scores[q] = distance
  /// to the nearest bank row (k = 1) or the float32 mean of the k smallest, as
  /// MemoryBank.search (dist.mean(axis=1, dtype=float32)). `dist` and `idx` are scratch of
  /// n_queries * k entries; idx[q * k] is the nearest row of query q afterwards.
  void search(const float* queries, std::int64_t n_queries, std::int64_t k, float* dist,
              std::int64_t* idx, float* scores, int threads) const {
    knn(queries, n_queries, vectors.data(), n_bank, dim, k, dist, idx, threads);
    for (std::int64_t q = 0; q < n_queries; ++q)
      scores[q] = k == 1 ? dist[q] : pairwise_sum(dist + q * k, k, 1) / float(k);
  }

  /// PatchCore's eq. 7 factor at the patch with the highest patch score (first on ties),
  /// multiplied into score_max[i] for each of n_images images (MemoryBank.reweight).
  ///   features: n_images * P * dim; scores: n_images * P; idx: n_images * P * k (search()).
  void reweight(const float* features, std::int64_t n_images, std::int64_t P,
                const float* scores, const std::int64_t* idx, std::int64_t k, double* score_max,
                int threads) const {
    const std::int64_t D = dim;
    const std::int64_t nb = std::min(kReweightNeighbors, n_bank);
    std::vector<float> m_star(static_cast<std::size_t>(n_images * D));
    std::vector<std::int64_t> arg(static_cast<std::size_t>(n_images));
    for (std::int64_t i = 0; i < n_images; ++i) {
      const float* s = scores + i * P;
      arg[i] = std::max_element(s, s + P) - s;
      const std::int64_t star = idx[(i * P + arg[i]) * k];
      std::memcpy(m_star.data() + i * D, vectors.data() + star * D, sizeof(float) * D);
    }
    std::vector<float> sd(static_cast<std::size_t>(n_images * nb));
    std::vector<std::int64_t> support(static_cast<std::size_t>(n_images * nb));
    knn(m_star.data(), n_images, vectors.data(), n_bank, D, nb, sd.data(), support.data(),
        threads);
    std::vector<double> sq(static_cast<std::size_t>(D)), dd(static_cast<std::size_t>(nb));
    for (std::int64_t i = 0; i < n_images; ++i) {
      const float* t = features + (i * P + arg[i]) * D;
      auto distance = [&](const float* b) {
        for (std::int64_t j = 0; j < D; ++j) {
          const double d = double(t[j]) - double(b[j]);
          sq[j] = d * d;
        }
        return std::sqrt(pairwise_sum(sq.data(), D, 1));
      };
      for (std::int64_t j = 0; j < nb; ++j) dd[j] = distance(vectors.data() + support[i * nb + j] * D);
      const double d_star = distance(m_star.data() + i * D);
      const double shift = *std::max_element(dd.begin(), dd.end());
      for (std::int64_t j = 0; j < nb; ++j) dd[j] = std::exp(dd[j] - shift);
      const double denom = pairwise_sum(dd.data(), nb, 1);
      score_max[i] *= 1.0 - std::exp(d_star - shift) / denom;
    }
  }
};

/// Stage 3 (structcore.maps.AnomalyMapper): patch scores -> maps S -> max(S).
struct AnomalyMapper {
  std::int64_t crop = 0;  ///< maps are crop x crop
  double sigma = 4.0;     ///< Gaussian blur, pixels of the crop

  /// maps: n_images * crop * crop floats from n_images * h * w patch scores.
  void map(const float* scores, std::int64_t n_images, std::int64_t h, std::int64_t w,
           float* maps, int threads) const {
    anomaly_map(scores, n_images, h, w, maps, crop, crop, sigma, threads);
  }
  /// score_max[i] = max of map i (float32 max, widened to double as NumPy's astype).
  void max_scores(const float* maps, std::int64_t n_images, double* score_max) const {
    const std::int64_t N = crop * crop;
    for (std::int64_t i = 0; i < n_images; ++i) {
      const float* m = maps + i * N;
      score_max[i] = static_cast<double>(*std::max_element(m, m + N));
    }
  }
};

/// Stage 4 (structcore.descriptor.Descriptor): phi(S) of maps.
struct Descriptor {
  std::vector<std::int32_t> codes;  ///< component codes (descriptors.hpp), one per component
  std::vector<double> quantiles;    ///< the quantile of each "q" component (else unused)
  std::int64_t top_k = 1;           ///< top_mean's k = max(1, round(top_ratio * crop^2))
  double threshold = 0.0;           ///< t of the thresholded components
  int connectivity = 8;

  std::int64_t size() const { return static_cast<std::int64_t>(codes.size()); }
  /// phi: n_images * size() doubles, C order (image, component).
  void describe(const float* maps, std::int64_t n_images, std::int64_t crop, double* phi,
                int threads) const {
    structcore::describe(maps, n_images, crop, crop, codes.data(), quantiles.data(), size(),
                         top_k, /*has_threshold=*/true, threshold, connectivity, phi, threads);
  }
};

/// Stage 5 (structcore.calibration.StructCalibrator): z = (phi - mu) / sigma, D = ||z||,
/// score = score_max + lambda * D, decision = score > decision_threshold. A model calibrated
/// with calibration="synthetic" has learned weights a instead of lambda:
/// score = score_max + sum_j a_j * z_j (structcore.learned_calibration.linear_score: the sum
/// starts at 0 and adds a_j * z_j in index order, then score_max is added).
struct StructCalibrator {
  std::vector<double> mu, sigma;  ///< per component (sigma floored, > 0)
  std::string norm = "l2";        ///< "l2" or "linf"
  double lambda = 0.0;
  std::vector<double> weights;    ///< learned weights, one per component; empty: lambda * D
  double decision_threshold = 0.0;

  /// One image: phi and z hold size() values; returns D and writes score/decision.
  double transform(const double* phi, double score_max, double* z, double* score,
                   bool* decision) const {
    const std::int64_t F = static_cast<std::int64_t>(mu.size());
    for (std::int64_t j = 0; j < F; ++j) z[j] = (phi[j] - mu[j]) / sigma[j];
    double d = 0.0;
    if (norm == "l2") {
      std::vector<double> sq(static_cast<std::size_t>(F));
      for (std::int64_t j = 0; j < F; ++j) sq[j] = z[j] * z[j];
      d = std::sqrt(pairwise_sum(sq.data(), F, 1));
    } else {
      for (std::int64_t j = 0; j < F; ++j) d = std::max(d, std::fabs(z[j]));
    }
    if (weights.empty()) {
      *score = score_max + lambda * d;
    } else {
      double lin = 0.0;
      for (std::int64_t j = 0; j < F; ++j) lin += weights[j] * z[j];
      *score = score_max + lin;
    }
    *decision = *score > decision_threshold;
    return d;
  }
};

}  // namespace stages
}  // namespace structcore
