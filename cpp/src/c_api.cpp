// The C ABI (structcore/structcore.h) over structcore::Scorer: every entry point catches every
// exception and turns it into a status code plus a thread-local message.
#include "structcore/structcore.h"

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "structcore/npy.hpp"
#include "structcore/scorer.hpp"

struct structcore_scorer {
  structcore::Scorer scorer;
};

namespace {

thread_local std::string g_last_error;

int fail(int code, const char* msg) noexcept {
  try {
    g_last_error = msg;
  } catch (...) {
    g_last_error.clear();  // cannot allocate the message: leave it empty
  }
  return code;
}

/// Runs f(), mapping exceptions to status codes (the order matters: FormatError derives from
/// std::invalid_argument, IoError from std::runtime_error).
template <class F>
int guarded(F&& f) noexcept {
  try {
    g_last_error.clear();
    f();
    return STRUCTCORE_OK;
  } catch (const structcore::FormatError& e) {
    return fail(STRUCTCORE_ERR_FORMAT, e.what());
  } catch (const structcore::IoError& e) {
    return fail(STRUCTCORE_ERR_IO, e.what());
  } catch (const std::invalid_argument& e) {
    return fail(STRUCTCORE_ERR_INVALID_ARGUMENT, e.what());
  } catch (const std::bad_alloc&) {
    return fail(STRUCTCORE_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(STRUCTCORE_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(STRUCTCORE_ERR_INTERNAL, "unknown error");
  }
}

void need(const void* p, const char* name) {
  if (p == nullptr) throw std::invalid_argument(std::string(name) + " must not be NULL");
}

}  // namespace

extern "C" {

const char* structcore_version(void) { return structcore::version(); }

int structcore_abi_version(void) { return STRUCTCORE_ABI_VERSION; }

const char* structcore_last_error(void) { return g_last_error.c_str(); }

int structcore_scorer_create(const char* path, structcore_scorer** out) {
  if (out != nullptr) *out = nullptr;
  return guarded([&] {
    need(out, "out");
    need(path, "path");
    *out = new structcore_scorer{structcore::Scorer::load(path)};
  });
}

int structcore_scorer_create_from_memory(const void* data, size_t size,
                                         structcore_scorer** out) {
  if (out != nullptr) *out = nullptr;
  return guarded([&] {
    need(out, "out");
    if (data == nullptr && size > 0) throw std::invalid_argument("data is NULL but size > 0");
    *out = new structcore_scorer{structcore::Scorer::from_memory(data, size)};
  });
}

void structcore_scorer_destroy(structcore_scorer* scorer) { delete scorer; }

int structcore_scorer_input_shape(const structcore_scorer* scorer, int64_t* grid_h,
                                  int64_t* grid_w, int64_t* feature_dim) {
  return guarded([&] {
    need(scorer, "scorer");
    const structcore::ModelInfo& mi = scorer->scorer.info();
    if (grid_h) *grid_h = mi.grid_h;
    if (grid_w) *grid_w = mi.grid_w;
    if (feature_dim) *feature_dim = mi.feature_dim;
  });
}

int structcore_scorer_output_shape(const structcore_scorer* scorer, int64_t* height,
                                   int64_t* width, int64_t* n_components, int64_t* resize) {
  return guarded([&] {
    need(scorer, "scorer");
    const structcore::ModelInfo& mi = scorer->scorer.info();
    if (height) *height = mi.crop;
    if (width) *width = mi.crop;
    if (n_components) *n_components = static_cast<int64_t>(mi.components.size());
    if (resize) *resize = mi.resize;
  });
}

int structcore_scorer_thresholds(const structcore_scorer* scorer, double* decision_threshold,
                                 double* pixel_threshold, double* lambda) {
  return guarded([&] {
    need(scorer, "scorer");
    const structcore::ModelInfo& mi = scorer->scorer.info();
    if (decision_threshold) *decision_threshold = mi.decision_threshold;
    if (pixel_threshold) *pixel_threshold = mi.pixel_threshold;
    if (lambda) *lambda = mi.lambda;
  });
}

int structcore_scorer_weights(const structcore_scorer* scorer, double* weights,
                              int64_t capacity, int64_t* n_weights) {
  int status = STRUCTCORE_OK;
  const int rc = guarded([&] {
    need(scorer, "scorer");
    need(n_weights, "n_weights");
    if (capacity < 0) throw std::invalid_argument("capacity must be >= 0");
    if (weights == nullptr && capacity > 0)
      throw std::invalid_argument("weights is NULL but capacity > 0");
    const std::vector<double>& w = scorer->scorer.info().weights;
    *n_weights = static_cast<int64_t>(w.size());
    if (capacity < *n_weights) {
      status = STRUCTCORE_ERR_BUFFER_TOO_SMALL;
      return;
    }
    if (!w.empty()) std::memcpy(weights, w.data(), sizeof(double) * w.size());
  });
  if (rc != STRUCTCORE_OK) return rc;
  if (status != STRUCTCORE_OK)
    return fail(status, "buffer too small for the weights: pass *n_weights doubles");
  return STRUCTCORE_OK;
}

int structcore_scorer_metadata(const structcore_scorer* scorer, char* buffer,
                               size_t buffer_size, size_t* length) {
  int status = STRUCTCORE_OK;
  const int rc = guarded([&] {
    need(scorer, "scorer");
    need(length, "length");
    if (buffer == nullptr && buffer_size > 0)
      throw std::invalid_argument("buffer is NULL but buffer_size > 0");
    const std::string& text = scorer->scorer.info().metadata_json;
    *length = text.size();
    if (buffer_size <= text.size()) {
      status = STRUCTCORE_ERR_BUFFER_TOO_SMALL;
      return;
    }
    std::memcpy(buffer, text.data(), text.size());
    buffer[text.size()] = '\0';
  });
  if (rc != STRUCTCORE_OK) return rc;
  if (status != STRUCTCORE_OK)
    return fail(status, "buffer too small for the metadata: pass *length + 1 bytes");
  return STRUCTCORE_OK;
}

int structcore_scorer_score(const structcore_scorer* scorer, const float* features,
                            int64_t n_images, int64_t grid_h, int64_t grid_w,
                            int64_t feature_dim, int threads, float* maps, double* score_max,
                            double* score_struct, double* score, double* descriptor, double* z,
                            uint8_t* is_anomalous) {
  return guarded([&] {
    need(scorer, "scorer");
    if (n_images < 0) throw std::invalid_argument("n_images must be >= 0");
    if (n_images > 0) need(features, "features");
    structcore::ScoreBuffers b;
    b.maps = maps;
    b.score_max = score_max;
    b.score_struct = score_struct;
    b.score = score;
    b.descriptor = descriptor;
    b.z = z;
    b.is_anomalous = is_anomalous;
    scorer->scorer.score_into(features, n_images, grid_h, grid_w, feature_dim, b, threads);
  });
}

}  // extern "C"
