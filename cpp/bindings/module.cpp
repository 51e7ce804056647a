// The Python module structcore._core. Each kernel family registers its functions from its own
// file in cpp/bindings/ (the only files that include pybind11). Conventions for every binding:
// arrays are py::array_t<T, py::array::c_style> with .noconvert() (no silent casts or copies:
// structcore.kernels converts and validates first), outputs are allocated before the GIL is
// released, and the kernel runs under py::gil_scoped_release.
#include <pybind11/pybind11.h>

#include "structcore/common.hpp"

namespace py = pybind11;

void bind_knn(py::module_& m);
void bind_coreset(py::module_& m);
void bind_anomaly_map(py::module_& m);
void bind_describe(py::module_& m);
void bind_scorer(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "structcore C++ kernels (private: use structcore.kernels for validated access)";
  m.def("build_info", &structcore::build_info,
        "One-line description of the build: version, compiler, OpenMP, SIMD level.");
  m.def("simd_level", [] { return std::string(structcore::simd_level_name(structcore::simd_level())); },
        "The SIMD level kernels dispatch to: 'scalar', 'avx2' or 'avx512'.");
  m.def("has_openmp", &structcore::has_openmp, "True when built with OpenMP.");
  bind_knn(m);
  bind_coreset(m);
  bind_anomaly_map(m);
  bind_describe(m);
  bind_scorer(m);
}
