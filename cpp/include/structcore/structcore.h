/* structcore/structcore.h — the C ABI of structcore: load a model saved by Python's
 * Detector.save and score patch features, from C, C#, LabVIEW, Halcon extensions, ...
 *
 * Conventions (every function):
 *  - Functions return an int status: STRUCTCORE_OK (0) on success, a negative
 *    STRUCTCORE_ERR_* code otherwise. On failure structcore_last_error() returns a message
 *    saying what went wrong; the message is thread-local (each thread sees its own last
 *    error) and stays valid until the next structcore_* call on that thread.
 *  - No C++ exception ever crosses this boundary; nothing aborts on bad input.
 *  - Handles are opaque. A structcore_scorer is immutable after creation: several threads may
 *    call structcore_scorer_score on the same handle at the same time. Destroy it exactly once.
 *  - Arrays are C order (row-major), native little-endian float32 / float64 / uint8; every
 *    pointer's size is given in elements with the function.
 *  - Sizes are int64_t; B = n_images, H = W = the model's crop, F = number of descriptor
 *    components, (h, w, dim) = the model's patch grid and feature dimension.
 *
 * The C++ API (structcore/scorer.hpp) is the same functionality with exceptions; this file is
 * plain C (C99: stdint.h) and includes nothing from C++.
 */
#ifndef STRUCTCORE_STRUCTCORE_H
#define STRUCTCORE_STRUCTCORE_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(STRUCTCORE_SHARED_BUILD)
#define STRUCTCORE_API __declspec(dllexport)
#elif defined(_WIN32) && defined(STRUCTCORE_SHARED_USE)
#define STRUCTCORE_API __declspec(dllimport)
#elif defined(__GNUC__)
#define STRUCTCORE_API __attribute__((visibility("default")))
#else
#define STRUCTCORE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this C ABI. Compare structcore_abi_version() with it at run time.
 *  2: adds structcore_scorer_weights (models calibrated with calibration="synthetic"). */
#define STRUCTCORE_ABI_VERSION 2

/* ---- status codes ------------------------------------------------------------------------ */
#define STRUCTCORE_OK 0
/** A null pointer, a negative size, a shape that does not match the model, non-finite
 *  features, an unknown key. */
#define STRUCTCORE_ERR_INVALID_ARGUMENT (-1)
/** The model file is malformed, truncated, tampered with (checksum), of another format or
 *  version, compressed, or inconsistent. */
#define STRUCTCORE_ERR_FORMAT (-2)
/** The file cannot be opened or read. */
#define STRUCTCORE_ERR_IO (-3)
/** Memory allocation failed. */
#define STRUCTCORE_ERR_OUT_OF_MEMORY (-4)
/** The caller's buffer is too small (the needed size is returned through the size argument). */
#define STRUCTCORE_ERR_BUFFER_TOO_SMALL (-5)
/** Anything else (a bug: please report it with the message). */
#define STRUCTCORE_ERR_INTERNAL (-99)

/** Opaque handle of a loaded model. */
typedef struct structcore_scorer structcore_scorer;

/** Library version string, e.g. "0.1.0" (static storage; never NULL). */
STRUCTCORE_API const char* structcore_version(void);

/** STRUCTCORE_ABI_VERSION of the library that is linked (may differ from the header's when a
 *  shared library is swapped). */
STRUCTCORE_API int structcore_abi_version(void);

/** Message of the last failed call on this thread ("" when none). Thread-local storage, valid
 *  until the next structcore_* call on this thread; never NULL. */
STRUCTCORE_API const char* structcore_last_error(void);

/** Loads the model file at `path` (NUL-terminated, UTF-8 / the OS's narrow encoding).
 *  out: receives the new handle (set to NULL on failure). Must not be NULL.
 *  Returns STRUCTCORE_OK, _ERR_INVALID_ARGUMENT (null argument), _ERR_IO, _ERR_FORMAT or
 *  _ERR_OUT_OF_MEMORY. */
STRUCTCORE_API int structcore_scorer_create(const char* path, structcore_scorer** out);

/** Loads a model from memory: `size` bytes at `data` (the bytes of a model file; copied as
 *  needed, the caller keeps ownership and may free them after the call).
 *  out: receives the new handle (NULL on failure). data may be NULL only when size is 0
 *  (which fails with _ERR_FORMAT). */
STRUCTCORE_API int structcore_scorer_create_from_memory(const void* data, size_t size,
                                                        structcore_scorer** out);

/** Frees a handle. NULL is a no-op. The handle must not be in use by another thread. */
STRUCTCORE_API void structcore_scorer_destroy(structcore_scorer* scorer);

/** The patch-feature shape the model expects for one image: *grid_h x *grid_w patches of
 *  *feature_dim floats. Any output pointer may be NULL (not written). */
STRUCTCORE_API int structcore_scorer_input_shape(const structcore_scorer* scorer,
                                                 int64_t* grid_h, int64_t* grid_w,
                                                 int64_t* feature_dim);

/** The map size (H = W = the crop in pixels), the number F of descriptor components and the
 *  preprocessing resize (shorter side, pixels). Any output pointer may be NULL. */
STRUCTCORE_API int structcore_scorer_output_shape(const structcore_scorer* scorer,
                                                  int64_t* height, int64_t* width,
                                                  int64_t* n_components, int64_t* resize);

/** Calibration values: the decision threshold (an image is anomalous when score > it), the
 *  pixel threshold t of the thresholded descriptor components, and lambda (score = score_max
 *  + lambda * D; 0 for a model with learned weights, see structcore_scorer_weights). Any
 *  output pointer may be NULL. */
STRUCTCORE_API int structcore_scorer_thresholds(const structcore_scorer* scorer,
                                                double* decision_threshold,
                                                double* pixel_threshold, double* lambda);

/** The learned weights of a model calibrated with calibration="synthetic": its score is
 *  score_max + sum_j weights[j] * z[j] (F weights, one per descriptor component) instead of
 *  score_max + lambda * D. Other models have none.
 *  n_weights: receives F for such a model, 0 otherwise; must not be NULL.
 *  weights:   capacity doubles, may be NULL when capacity is 0.
 *  When capacity < *n_weights the call writes no weight and returns
 *  STRUCTCORE_ERR_BUFFER_TOO_SMALL. (ABI version 2.) */
STRUCTCORE_API int structcore_scorer_weights(const structcore_scorer* scorer, double* weights,
                                             int64_t capacity, int64_t* n_weights);

/** The model's JSON metadata, verbatim (backbone, layers, weights_sha256, config, components,
 *  ...; see docs/CPP.md), as a NUL-terminated UTF-8 string.
 *  buffer: buffer_size chars, may be NULL when buffer_size is 0.
 *  length: receives strlen of the metadata (without the NUL); must not be NULL.
 *  When buffer_size <= *length the call writes nothing and returns
 *  STRUCTCORE_ERR_BUFFER_TOO_SMALL: call again with *length + 1 bytes. */
STRUCTCORE_API int structcore_scorer_metadata(const structcore_scorer* scorer, char* buffer,
                                              size_t buffer_size, size_t* length);

/** Scores B = n_images patch-feature grids.
 *
 *  features:     B * h * w * dim floats, C order (image, row, column, channel), finite.
 *                May be NULL only when n_images is 0.
 *  n_images:     B >= 0.
 *  grid_h, grid_w, feature_dim: the shape of one image's grid; must equal the model's
 *                (structcore_scorer_input_shape), else STRUCTCORE_ERR_INVALID_ARGUMENT.
 *  threads:      OpenMP threads (<= 0: all). Results do not depend on it.
 *  Outputs (each may be NULL: not written):
 *    maps          B * H * W floats: the anomaly maps S (pixel-level localisation)
 *    score_max     B doubles: max(S) (times PatchCore's reweighting when the model has it)
 *    score_struct  B doubles: the structural distance D
 *    score         B doubles: score_max + lambda * D (the StructCore score), or
 *                  score_max + sum_j weights[j] * z[j] (structcore_scorer_weights)
 *    descriptor    B * F doubles: phi(S), C order (image, component)
 *    z             B * F doubles: (phi - mu) / sigma
 *    is_anomalous  B bytes: 1 when score > decision_threshold, else 0
 *  On failure the outputs may be partly written. Thread-safe on a shared handle. */
STRUCTCORE_API int structcore_scorer_score(const structcore_scorer* scorer,
                                           const float* features, int64_t n_images,
                                           int64_t grid_h, int64_t grid_w, int64_t feature_dim,
                                           int threads, float* maps, double* score_max,
                                           double* score_struct, double* score,
                                           double* descriptor, double* z,
                                           uint8_t* is_anomalous);

#ifdef __cplusplus
}
#endif

#endif /* STRUCTCORE_STRUCTCORE_H */
