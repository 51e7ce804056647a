// score_features: load a structcore model (Detector.save) and score patch features read from a
// .npy file; print the scores as one JSON object.
//
//   score_features MODEL.npz FEATURES.npy [MAPS_OUT.npy]
//
// FEATURES.npy: float32 (or float64) array of shape (B, h, w, dim) or (h, w, dim): the
// backbone's patch-feature grid (structcore.export's ONNX / TorchScript extractor, or
// Detector.extractor_ in Python). MAPS_OUT.npy, when given, receives the anomaly maps
// (B, crop, crop) float32.
// Exit status: 0 success, 1 usage, 2 error (message on stderr).
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "structcore/npy.hpp"
#include "structcore/scorer.hpp"

namespace {

void print_array(const char* name, const double* v, std::int64_t n, bool last = false) {
  std::printf("  \"%s\": [", name);
  for (std::int64_t i = 0; i < n; ++i) std::printf("%s%.17g", i ? ", " : "", v[i]);
  std::printf("]%s\n", last ? "" : ",");
}

/// Minimal .npy writer (version 1.0, float32, C order) for the maps.
void write_maps(const std::string& path, const std::vector<float>& maps, std::int64_t b,
                std::int64_t h, std::int64_t w) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(b) + ", " + std::to_string(h) + ", " + std::to_string(w) +
                       "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(reinterpret_cast<const char*>(magic), 8);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xFF),
                                static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(maps.data()),
            static_cast<std::streamsize>(maps.size() * sizeof(float)));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s MODEL.npz FEATURES.npy [MAPS_OUT.npy]\n", argv[0]);
    return 1;
  }
  try {
    const structcore::Scorer scorer = structcore::Scorer::load(argv[1]);
    const structcore::ModelInfo& info = scorer.info();

    structcore::NpyArray arr = structcore::read_npy(argv[2]);
    if (arr.shape.size() == 3) arr.shape.insert(arr.shape.begin(), 1);  // one image
    if (arr.shape.size() != 4)
      throw std::invalid_argument("features must have shape (B, h, w, dim) or (h, w, dim)");
    const std::vector<float> features = arr.to_float32();

    const structcore::ScoreResult r =
        scorer.score(features.data(), arr.shape[0], arr.shape[1], arr.shape[2], arr.shape[3]);

    std::printf("{\n  \"structcore_version\": \"%s\",\n", structcore::version());
    std::printf("  \"backbone\": \"%s\",\n  \"n_images\": %lld,\n", info.backbone.c_str(),
                static_cast<long long>(r.n_images));
    std::printf("  \"decision_threshold\": %.17g,\n", info.decision_threshold);
    print_array("score_max", r.score_max.data(), r.n_images);
    print_array("score_struct", r.score_struct.data(), r.n_images);
    print_array("score", r.score.data(), r.n_images);
    print_array("descriptor", r.descriptor.data(), r.n_images * r.n_components);
    std::printf("  \"is_anomalous\": [");
    for (std::int64_t i = 0; i < r.n_images; ++i)
      std::printf("%s%s", i ? ", " : "", r.is_anomalous[i] ? "true" : "false");
    std::printf("]\n}\n");
    if (argc == 4) write_maps(argv[3], r.maps, r.n_images, r.height, r.width);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
