// Binding of structcore::describe (structural descriptor) as structcore._core.describe.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>

#include "structcore/descriptors.hpp"

namespace py = pybind11;

void bind_describe(py::module_& m) {
  m.def(
      "describe",
      [](py::array_t<float, py::array::c_style> maps, py::array_t<std::int32_t, py::array::c_style> codes,
         py::array_t<double, py::array::c_style> quantiles, std::int64_t top_k,
         std::optional<double> threshold, int connectivity, int threads) {
        if (maps.ndim() != 3) throw std::invalid_argument("maps must be 3-dimensional (B, H, W)");
        if (codes.ndim() != 1 || quantiles.ndim() != 1 || codes.shape(0) != quantiles.shape(0))
          throw std::invalid_argument("codes and quantiles must be 1-D of the same length");
        const std::int64_t b = maps.shape(0), h = maps.shape(1), w = maps.shape(2);
        const std::int64_t f = codes.shape(0);
        py::array_t<double> phi({b, f});
        const float* pm = maps.data();
        const std::int32_t* pc = codes.data();
        const double* pq = quantiles.data();
        double* po = phi.mutable_data();
        const bool has_t = threshold.has_value();
        const double t = has_t ? *threshold : 0.0;
        {
          py::gil_scoped_release release;
          structcore::describe(pm, b, h, w, pc, pq, f, top_k, has_t, t, connectivity, po, threads);
        }
        return phi;
      },
      py::arg("maps").noconvert(), py::arg("codes").noconvert(), py::arg("quantiles").noconvert(),
      py::arg("top_k"), py::arg("threshold"), py::arg("connectivity"), py::arg("threads"),
      "Structural descriptor of each map: maps (B, H, W) float32 C-contiguous, codes (F,) int32,\n"
      "quantiles (F,) float64 (read for quantile codes), top_k in [1, H*W], threshold float or\n"
      "None, connectivity 4 or 8, threads (<= 0: all) -> phi (B, F) float64. Unvalidated: use\n"
      "structcore.kernels.describe.");
  m.def(
      "descriptor_codes",
      [] {
        std::size_t n = 0;
        const structcore::DescriptorCodeInfo* t = structcore::descriptor_code_table(&n);
        py::dict d;
        for (std::size_t i = 0; i < n; ++i)
          d[py::str(t[i].name)] = py::make_tuple(t[i].code, t[i].needs_threshold);
        return d;
      },
      "{name: (code, needs_threshold)} for every describe() component code.");
}
