// Bindings of the greedy coreset kernel (structcore/coreset.hpp). structcore.kernels.coreset
// validates, projects and converts first; these functions only re-check sizes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "structcore/common.hpp"
#include "structcore/coreset.hpp"

namespace py = pybind11;

namespace {

template <class T>
py::array_t<std::int64_t> coreset_binding(const py::array_t<T, py::array::c_style>& points,
                                          std::int64_t n, std::int64_t start, int threads) {
  structcore::require(points.ndim() == 2, "points must be 2-dimensional");
  const std::int64_t n_points = points.shape(0);
  const std::int64_t dim = points.shape(1);
  structcore::require(n_points >= 1 && dim >= 1, "points must not be empty");
  structcore::require(n >= 1 && n <= n_points, "n must be in [1, n_points]");
  structcore::require(start >= 0 && start < n_points, "start must be in [0, n_points)");
  py::array_t<std::int64_t> out(n);
  const T* p = points.data();
  std::int64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same_v<T, float>)
      structcore::coreset(p, n_points, dim, n, start, threads, o);
    else
      structcore::coreset_f16(p, n_points, dim, n, start, threads, o);
  }
  return out;
}

template <class T>
py::tuple coreset_ex_binding(const py::array_t<T, py::array::c_style>& points, std::int64_t n,
                             std::int64_t start, int threads, int mode) {
  structcore::require(points.ndim() == 2, "points must be 2-dimensional");
  const std::int64_t n_points = points.shape(0);
  const std::int64_t dim = points.shape(1);
  structcore::require(n_points >= 1 && dim >= 1, "points must not be empty");
  structcore::require(n >= 1 && n <= n_points, "n must be in [1, n_points]");
  structcore::require(start >= 0 && start < n_points, "start must be in [0, n_points)");
  structcore::require(mode >= 0 && mode <= 2, "mode must be 0 (auto), 1 (full) or 2 (pruned)");
  py::array_t<std::int64_t> out(n);
  const T* p = points.data();
  std::int64_t* o = out.mutable_data();
  structcore::CoresetStats stats;
  const auto m = static_cast<structcore::CoresetMode>(mode);
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same_v<T, float>)
      structcore::coreset_ex(p, n_points, dim, n, start, threads, m, o, &stats);
    else
      structcore::coreset_f16_ex(p, n_points, dim, n, start, threads, m, o, &stats);
  }
  py::dict d;
  d["full_passes"] = stats.full_passes;
  d["pruned_steps"] = stats.pruned_steps;
  d["points_evaluated"] = stats.points_evaluated;
  d["points_checked"] = stats.points_checked;
  d["groups_skipped"] = stats.groups_skipped;
  return py::make_tuple(out, d);
}

}  // namespace

void bind_coreset(py::module_& m) {
  m.def("coreset", &coreset_binding<float>, py::arg("points").noconvert(), py::arg("n"),
        py::arg("start"), py::arg("threads"),
        "Greedy k-center selection on float32 points (n_points, dim), C-contiguous, finite, "
        "max |x| < 2**15. Returns n int64 indices in selection order, the first being start.");
  m.def("coreset_f16", &coreset_binding<std::uint16_t>, py::arg("points").noconvert(),
        py::arg("n"), py::arg("start"), py::arg("threads"),
        "As coreset, on float16 points passed as their uint16 bit patterns "
        "(numpy: points16.view(numpy.uint16)).");
  m.def("coreset_ex", &coreset_ex_binding<float>, py::arg("points").noconvert(), py::arg("n"),
        py::arg("start"), py::arg("threads"), py::arg("mode"),
        "As coreset with mode 0 (auto), 1 (full passes) or 2 (pruned); returns (indices, "
        "work counters dict). For tests and benchmarks.");
  m.def("coreset_f16_ex", &coreset_ex_binding<std::uint16_t>, py::arg("points").noconvert(),
        py::arg("n"), py::arg("start"), py::arg("threads"), py::arg("mode"),
        "As coreset_ex on float16 points passed as their uint16 bit patterns.");
  m.def(
      "coreset_distances",
      [](const py::array_t<float, py::array::c_style>& points,
         const py::array_t<float, py::array::c_style>& center) {
        structcore::require(points.ndim() == 2, "points must be 2-dimensional");
        structcore::require(center.ndim() == 1 && center.shape(0) == points.shape(1),
                            "center must have shape (dim,)");
        structcore::require(points.shape(1) >= 1, "dim must be >= 1");
        py::array_t<float> out(points.shape(0));
        const float* p = points.data();
        const float* c = center.data();
        float* o = out.mutable_data();
        const std::int64_t n_points = points.shape(0), dim = points.shape(1);
        {
          py::gil_scoped_release release;
          structcore::coreset_distances(p, n_points, dim, c, o);
        }
        return out;
      },
      py::arg("points").noconvert(), py::arg("center").noconvert(),
      "Canonical squared distances (coreset.hpp) from center to every row; for tests.");
}
