// pybind11 binding of structcore::knn / knn_f16 as structcore._core.knn (private: use
// structcore.kernels.knn, which validates and converts first).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "structcore/common.hpp"
#include "structcore/knn.hpp"

namespace py = pybind11;

namespace {

using F32 = py::array_t<float, py::array::c_style>;
using F16 = py::array_t<std::uint16_t, py::array::c_style>;

structcore::SimdLevel parse_level(const std::string& level) {
  if (level.empty()) return structcore::simd_level();
  if (level == "scalar") return structcore::SimdLevel::Scalar;
  if (level == "avx2") return structcore::SimdLevel::AVX2;
  if (level == "avx512") return structcore::SimdLevel::AVX512;
  throw std::invalid_argument("level must be '', 'scalar', 'avx2' or 'avx512'; got '" + level + "'");
}

void check_shapes(const F32& queries, const py::array& bank, std::int64_t k) {
  if (queries.ndim() != 2) throw std::invalid_argument("queries must be 2-dimensional");
  if (bank.ndim() != 2) throw std::invalid_argument("bank must be 2-dimensional");
  if (bank.shape(0) < 1 || bank.shape(1) < 1) throw std::invalid_argument("bank must not be empty");
  if (queries.shape(1) != bank.shape(1))
    throw std::invalid_argument("queries and bank must have the same number of columns");
  if (k < 1 || k > bank.shape(0)) throw std::invalid_argument("k must be in [1, n_bank]");
  if (queries.shape(0) > (std::int64_t(1) << 30) / k)
    throw std::invalid_argument("knn: n_queries * k must be <= 2**30");
}

template <class Bank, class Fn>
std::pair<py::array_t<float>, py::array_t<std::int64_t>> run(const F32& queries, const Bank& bank,
                                                             std::int64_t k, int threads,
                                                             const std::string& level, Fn fn) {
  check_shapes(queries, bank, k);
  const structcore::SimdLevel lv = parse_level(level);
  const std::int64_t nq = queries.shape(0), nb = bank.shape(0), dim = bank.shape(1);
  py::array_t<float> distances({nq, k});
  py::array_t<std::int64_t> indices({nq, k});
  const float* q = queries.data();
  const auto* b = bank.data();
  float* d = distances.mutable_data();
  std::int64_t* i = indices.mutable_data();
  {
    py::gil_scoped_release release;
    fn(q, nq, b, nb, dim, k, d, i, threads, lv);
  }
  return {std::move(distances), std::move(indices)};
}

}  // namespace

void bind_knn(py::module_& m) {
  m.def(
      "knn",
      [](const F32& queries, const F32& bank, std::int64_t k, int threads, const std::string& level) {
        if (level == "avx512bf16" || (level.empty() && structcore::knn_prefers_bf16(k)))
          return run(queries, bank, k, threads, "", [](auto q, auto nq, auto b, auto nb, auto d,
                                                      auto kk, auto di, auto ii, auto th, auto) {
            structcore::knn_bf16(q, nq, b, nb, d, kk, di, ii, th);
          });
        return run(queries, bank, k, threads, level,
                   [](auto... a) { structcore::knn(a...); });
      },
      py::arg("queries").noconvert(), py::arg("bank").noconvert(), py::arg("k"),
      py::arg("threads") = 0, py::arg("level") = "",
      "Exact kNN, float32 bank (no validation of finiteness: use structcore.kernels.knn). "
      "queries (Q, D) float32 C-contiguous, bank (M, D) float32 C-contiguous, 1 <= k <= M; "
      "returns (distances (Q, k) float32 ascending, indices (Q, k) int64). threads <= 0: all. "
      "level: '' (auto: the bf16 candidate path where knn_prefers_bf16(k), else the widest "
      "float32 path), 'scalar', 'avx2' or 'avx512' (float32 path, clamped to the CPU), or "
      "'avx512bf16' (bf16 candidate pass + exact re-ranking; ValueError on CPUs without "
      "AVX-512 BF16).");
  m.def(
      "knn_f16",
      [](const F32& queries, const F16& bank, std::int64_t k, int threads, const std::string& level) {
        if (level == "avx512bf16" || (level.empty() && structcore::knn_prefers_bf16(k)))
          return run(queries, bank, k, threads, "", [](auto q, auto nq, auto b, auto nb, auto d,
                                                      auto kk, auto di, auto ii, auto th, auto) {
            structcore::knn_f16_bf16(q, nq, b, nb, d, kk, di, ii, th);
          });
        return run(queries, bank, k, threads, level,
                   [](auto... a) { structcore::knn_f16(a...); });
      },
      py::arg("queries").noconvert(), py::arg("bank").noconvert(), py::arg("k"),
      py::arg("threads") = 0, py::arg("level") = "",
      "As knn with the bank given as the raw bits of a float16 array (bank.view(np.uint16)).");
}
