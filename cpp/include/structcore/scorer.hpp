// structcore/scorer.hpp — score patch features with a model saved by Python's Detector.save.
//
// A structcore::Scorer is the inference half of structcore.Detector in C++: it reads the
// model file (format "structcore.detector" versions 1 to 3; docs/CPP.md and structcore/io.py give
// the byte layout) and turns patch features, the backbone's output grid, into the same
// numbers as Detector.predict (METHOD.md §2 and §3):
//
//   features (B, h, w, dim) --knn(bank, k)--> patch scores (B, h, w)
//     --anomaly_map(crop, sigma)--> maps S (B, crop, crop)
//     --> score_max = max(S)                       (x PatchCore's reweighting factor when the
//                                                   model has reweight = true)
//     --> descriptor phi(S) (the model's components, top_ratio 0.01, pixel threshold t,
//         8-connectivity)
//     --> z = (phi - mu) / sigma, D = ||z||_2 or ||z||_inf (the model's norm)
//     --> score = score_max + lambda * D         (calibration "crossfit" / "train")
//         score = score_max + sum_j a_j * z_j   (calibration "synthetic": learned weights a)
//     --> is_anomalous = score > decision_threshold.
//
// The feature extractor (the backbone) is not part of the model file: run it elsewhere (the
// ONNX / TorchScript export of structcore.export, or your own inference engine) on images
// preprocessed exactly as the detector does (resize, centre crop, ImageNet normalisation),
// and pass its output grid here. ModelInfo names the backbone, its layers and the hash of
// its weights so the caller can check it runs the right extractor.
//
// Parity: for the same features, every output equals Python's Detector.predict within 1e-5
// relative (in practice bit-identical: the same kernels, and the float64 sums are done in
// NumPy's pairwise order).
//
// Loading checks everything Python's loader checks (format, version, array entries against
// the metadata, SHA-256 checksum, shapes, finiteness, sigma > 0, k <= bank rows) and throws
// structcore::FormatError with a message saying what is wrong; it never reads outside the
// file. Compressed (numpy.savez_compressed) archives are refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "structcore/npy.hpp"

namespace structcore {

/// The library version ("0.1.0"); static storage.
const char* version() noexcept;

/// What a model file says about itself (read-only after loading).
struct ModelInfo {
  std::string format;               ///< "structcore.detector"
  int format_version = 0;           ///< 1, 2 or 3
  std::string structcore_version;   ///< version of the Python package that saved it
  std::string backbone;             ///< e.g. "wide_resnet50_2", "mobilenet_v2"
  std::vector<std::string> layers;  ///< backbone layers, shallowest first
  std::string weights_sha256;       ///< hash of the backbone weights (structcore.features)
  std::int64_t resize = 0;          ///< preprocessing: shorter side resized to this (px)
  std::int64_t crop = 0;            ///< preprocessing: centre crop (px); maps are crop x crop
  std::int64_t feature_dim = 0;     ///< dim of a patch feature vector
  std::int64_t grid_h = 0;          ///< patch grid rows of one image
  std::int64_t grid_w = 0;          ///< patch grid columns
  std::int64_t n_bank = 0;          ///< memory-bank rows
  std::int64_t k = 1;               ///< neighbours averaged into a patch score
  double sigma = 4.0;               ///< Gaussian blur of the maps (pixels of the crop)
  bool reweight = false;            ///< PatchCore's density reweighting of score_max
  std::vector<std::string> components;  ///< descriptor components, in column order
  std::string norm;                 ///< "l2" or "linf"
  std::string calibration;          ///< calibration mode ("crossfit", "train" or "synthetic")
  std::vector<double> mu;           ///< calibration mean, one per component
  std::vector<double> sigma_phi;    ///< calibration std (floored, > 0), one per component
  double lambda = 0.0;              ///< weight of D in the score (0 for "synthetic")
  std::vector<double> weights;      ///< "synthetic": learned weight a_j of each z_j; else empty
  double decision_threshold = 0.0;  ///< is_anomalous = score > decision_threshold
  double pixel_threshold = 0.0;     ///< t of the thresholded descriptor components
  double top_ratio = 0.01;          ///< top_mean's fraction of pixels
  int connectivity = 8;             ///< connected components of S > t
  std::int64_t n_train = 0;         ///< train images the model was fitted on
  std::string metadata_json;        ///< the file's JSON metadata, verbatim
};

/// Caller-owned output buffers of Scorer::score_into; every pointer may be null (that output
/// is then not written). B = n_images, F = info().components.size().
struct ScoreBuffers {
  float* maps = nullptr;             ///< B * crop * crop floats, C order (image, row, column)
  double* score_max = nullptr;       ///< B: max(S) (times the reweighting factor)
  double* score_struct = nullptr;    ///< B: structural distance D
  double* score = nullptr;           ///< B: score_max + lambda * D (or + sum_j a_j z_j)
  double* descriptor = nullptr;      ///< B * F: phi(S), C order (image, component)
  double* z = nullptr;               ///< B * F: (phi - mu) / sigma
  std::uint8_t* is_anomalous = nullptr;  ///< B: 1 when score > decision_threshold, else 0
};

/// Owned outputs of Scorer::score (same layout as ScoreBuffers).
struct ScoreResult {
  std::int64_t n_images = 0, height = 0, width = 0, n_components = 0;
  std::vector<float> maps;
  std::vector<double> score_max, score_struct, score, descriptor, z;
  std::vector<std::uint8_t> is_anomalous;
};

/// A loaded model. Immutable after loading: score() and score_into() are const and may be
/// called concurrently from several threads on one Scorer. Copy and move are cheap (the bank
/// is shared).
class Scorer {
public:
  /// Loads the model file at `path`. Throws IoError (cannot open/read) or FormatError.
  static Scorer load(const std::string& path);

  /// Loads a model from `size` bytes at `data` (the content of a model file; the bytes are
  /// copied as needed, the caller keeps ownership). `name` is used in messages.
  /// Throws FormatError.
  static Scorer from_memory(const void* data, std::size_t size,
                            const std::string& name = "<memory>");

  const ModelInfo& info() const noexcept;
  /// The memory bank, n_bank * feature_dim floats, row-major.
  const std::vector<float>& bank() const noexcept;

  /// Scores a batch of patch-feature grids.
  ///   features: n_images * height * width * dim floats, C order (image, row, column,
  ///             channel), finite; height/width/dim must equal info().grid_h / grid_w /
  ///             feature_dim (std::invalid_argument otherwise, naming both shapes).
  ///   n_images >= 0 (0 returns empty outputs).
  ///   threads:  OpenMP threads of the kernels (<= 0: all). Results do not depend on it.
  /// Throws std::invalid_argument (shape mismatch, non-finite features), std::bad_alloc.
  ScoreResult score(const float* features, std::int64_t n_images, std::int64_t height,
                    std::int64_t width, std::int64_t dim, int threads = 0) const;

  /// As score(), writing into caller-owned buffers (see ScoreBuffers for their sizes); the
  /// maps are computed into an internal buffer when out.maps is null.
  void score_into(const float* features, std::int64_t n_images, std::int64_t height,
                  std::int64_t width, std::int64_t dim, const ScoreBuffers& out,
                  int threads = 0) const;

private:
  struct State;
  explicit Scorer(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

}  // namespace structcore
