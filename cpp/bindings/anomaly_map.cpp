// structcore._core.anomaly_map: thin binding of structcore::anomaly_map (postprocess.hpp).
// structcore.kernels.anomaly_map validates and converts first; this layer only re-checks what
// would make the kernel read or write out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "structcore/common.hpp"
#include "structcore/postprocess.hpp"

namespace py = pybind11;

namespace {

py::array_t<float> anomaly_map_binding(
    const py::array_t<float, py::array::c_style>& patch_scores, std::int64_t height,
    std::int64_t width, double sigma, int threads) {
  structcore::require(patch_scores.ndim() == 3,
                      "anomaly_map: patch_scores must be 3-dimensional (n_maps, h, w)");
  const std::int64_t n = patch_scores.shape(0), h = patch_scores.shape(1),
                     w = patch_scores.shape(2);
  structcore::require(n >= 1 && h >= 1 && w >= 1, "anomaly_map: patch_scores must not be empty");
  structcore::require(height >= 1 && width >= 1 && height <= structcore::kAnomalyMapMaxSide &&
                          width <= structcore::kAnomalyMapMaxSide,
                      "anomaly_map: size must be in [1, 16384] per side");
  structcore::require(n <= structcore::kAnomalyMapMaxElements / (height * width),
                      "anomaly_map: n_maps * H * W must be <= 2**30");
  py::array_t<float> maps({n, height, width});
  const float* src = patch_scores.data();
  float* dst = maps.mutable_data();
  {
    py::gil_scoped_release release;
    structcore::anomaly_map(src, n, h, w, dst, height, width, sigma, threads);
  }
  return maps;
}

}  // namespace

void bind_anomaly_map(py::module_& m) {
  m.attr("ANOMALY_MAP_MAX_SIDE") = structcore::kAnomalyMapMaxSide;
  m.attr("ANOMALY_MAP_MAX_ELEMENTS") = structcore::kAnomalyMapMaxElements;
  m.attr("ANOMALY_MAP_MAX_SIGMA") = structcore::kAnomalyMapMaxSigma;
  m.def("anomaly_map", &anomaly_map_binding, py::arg("patch_scores").noconvert(),
        py::arg("height"), py::arg("width"), py::arg("sigma"), py::arg("threads"),
        "Bilinear resize (torch align_corners=False) + Gaussian blur (scipy, reflect) of "
        "(n_maps, h, w) float32 C-contiguous patch scores to (n_maps, height, width) float32. "
        "Private: use structcore.kernels.anomaly_map.");
}
