// pybind11 binding of structcore::knn / knn_f16 as structcore._core.knn (private: use
// structcore.kernels.knn, which validates and converts first).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
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
  throw std::invalid_argument(
      "level must be '', 'scalar', 'avx2', 'avx512', 'avx512bf16' or 'amx'; got '" + level + "'");
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

// Runs the path a level string names: "" = knn_choice(k) (what structcore.kernels.knn uses),
// "scalar" / "avx2" / "avx512" = the float32 pass (clamped to the CPU), "avx512bf16" / "amx" =
// the bf16 candidate passes (ValueError where the CPU cannot run them).
template <class Bank, class F32Fn, class Bf16Fn, class AmxFn>
std::pair<py::array_t<float>, py::array_t<std::int64_t>> dispatch(const F32& queries,
                                                                  const Bank& bank, std::int64_t k,
                                                                  int threads,
                                                                  const std::string& level,
                                                                  F32Fn f32, Bf16Fn bf16,
                                                                  AmxFn amx) {
  std::string lv = level;
  if (lv.empty()) {
    check_shapes(queries, bank, k);
    const structcore::KnnChoice c = structcore::knn_choice(k);
    lv = structcore::knn_path_name(c.path);
  }
  auto drop_level = [](auto fn) {
    return [fn](auto q, auto nq, auto b, auto nb, auto d, auto kk, auto di, auto ii, auto th,
                auto) { fn(q, nq, b, nb, d, kk, di, ii, th); };
  };
  if (lv == "avx512bf16") return run(queries, bank, k, threads, "", drop_level(bf16));
  if (lv == "amx") return run(queries, bank, k, threads, "", drop_level(amx));
  return run(queries, bank, k, threads, lv, f32);
}

py::dict choice_dict(const structcore::KnnChoice& c) {
  py::dict d;
  d["candidates"] = structcore::knn_path_name(c.path);
  d["f32"] = structcore::knn_path_name(c.f32);
  d["tile"] = c.tile;
  d["kc"] = c.kc;
  d["reason"] = c.reason;
  return d;
}

py::dict features_dict(const structcore::CpuFeatures& f) {
  py::dict d;
  d["vendor"] = std::string(f.vendor);
  d["family"] = f.family;
  d["model"] = f.model;
  d["l1d_kib"] = f.l1d_kib;
  d["amx_perm_errno"] = f.amx_perm_errno;
#define STRUCTCORE_FLAG(name) d[#name] = f.name
  STRUCTCORE_FLAG(avx2); STRUCTCORE_FLAG(fma); STRUCTCORE_FLAG(f16c);
  STRUCTCORE_FLAG(avx512f); STRUCTCORE_FLAG(avx512bw); STRUCTCORE_FLAG(avx512dq);
  STRUCTCORE_FLAG(avx512vl); STRUCTCORE_FLAG(avx512_bf16); STRUCTCORE_FLAG(amx_bf16);
  STRUCTCORE_FLAG(amx_tile); STRUCTCORE_FLAG(amx_int8); STRUCTCORE_FLAG(os_avx);
  STRUCTCORE_FLAG(os_avx512); STRUCTCORE_FLAG(os_amx); STRUCTCORE_FLAG(amx_permitted);
#undef STRUCTCORE_FLAG
  return d;
}

structcore::CpuFeatures features_from(const py::dict& d) {
  structcore::CpuFeatures f;
  for (const auto& item : d) {
    const std::string key = py::cast<std::string>(item.first);
    const py::handle v = item.second;
    if (key == "vendor") {
      const std::string s = py::cast<std::string>(v);
      if (s.size() > 12) throw std::invalid_argument("vendor must be at most 12 characters");
      std::memcpy(f.vendor, s.c_str(), s.size() + 1);
    } else if (key == "family") f.family = py::cast<int>(v);
    else if (key == "model") f.model = py::cast<int>(v);
    else if (key == "l1d_kib") f.l1d_kib = py::cast<int>(v);
    else if (key == "amx_perm_errno") f.amx_perm_errno = py::cast<int>(v);
#define STRUCTCORE_FLAG(name) else if (key == #name) f.name = py::cast<bool>(v)
    STRUCTCORE_FLAG(avx2); STRUCTCORE_FLAG(fma); STRUCTCORE_FLAG(f16c);
    STRUCTCORE_FLAG(avx512f); STRUCTCORE_FLAG(avx512bw); STRUCTCORE_FLAG(avx512dq);
    STRUCTCORE_FLAG(avx512vl); STRUCTCORE_FLAG(avx512_bf16); STRUCTCORE_FLAG(amx_bf16);
    STRUCTCORE_FLAG(amx_tile); STRUCTCORE_FLAG(amx_int8); STRUCTCORE_FLAG(os_avx);
    STRUCTCORE_FLAG(os_avx512); STRUCTCORE_FLAG(os_amx); STRUCTCORE_FLAG(amx_permitted);
#undef STRUCTCORE_FLAG
    else throw std::invalid_argument("unknown CPU feature '" + key + "'");
  }
  return f;
}

}  // namespace

void bind_knn(py::module_& m) {
  m.def(
      "knn",
      [](const F32& queries, const F32& bank, std::int64_t k, int threads, const std::string& level) {
        return dispatch(queries, bank, k, threads, level,
                        [](auto... a) { structcore::knn(a...); },
                        [](auto... a) { structcore::knn_bf16(a...); },
                        [](auto... a) { structcore::knn_amx(a...); });
      },
      py::arg("queries").noconvert(), py::arg("bank").noconvert(), py::arg("k"),
      py::arg("threads") = 0, py::arg("level") = "",
      "Exact kNN, float32 bank (no validation of finiteness: use structcore.kernels.knn). "
      "queries (Q, D) float32 C-contiguous, bank (M, D) float32 C-contiguous, 1 <= k <= M; "
      "returns (distances (Q, k) float32 ascending, indices (Q, k) int64). threads <= 0: all. "
      "level: '' (auto: knn_info(k)['candidates'], chosen per CPU and STRUCTCORE_SIMD), "
      "'scalar', 'avx2' or 'avx512' (float32 path, clamped to the CPU), 'avx512bf16' or "
      "'amx' (bf16 candidate pass + exact re-ranking; ValueError on CPUs without it).");
  m.def(
      "knn_f16",
      [](const F32& queries, const F16& bank, std::int64_t k, int threads, const std::string& level) {
        return dispatch(queries, bank, k, threads, level,
                        [](auto... a) { structcore::knn_f16(a...); },
                        [](auto... a) { structcore::knn_f16_bf16(a...); },
                        [](auto... a) { structcore::knn_f16_amx(a...); });
      },
      py::arg("queries").noconvert(), py::arg("bank").noconvert(), py::arg("k"),
      py::arg("threads") = 0, py::arg("level") = "",
      "As knn with the bank given as the raw bits of a float16 array (bank.view(np.uint16)).");
  m.def(
      "knn_amx_emulated",
      [](const F32& queries, const F32& bank, std::int64_t k, int threads) {
        return run(queries, bank, k, threads, "",
                   [](auto q, auto nq, auto b, auto nb, auto d, auto kk, auto di, auto ii,
                      auto th, auto) { structcore::knn_amx_emulated(q, nq, b, nb, d, kk, di, ii, th); });
      },
      py::arg("queries").noconvert(), py::arg("bank").noconvert(), py::arg("k"),
      py::arg("threads") = 0,
      "Test hook: the AMX candidate pass with its tile instructions emulated in scalar code "
      "(checks the AMX pass's layouts and offsets on any AVX-512 BF16 CPU; slow).");
  m.def(
      "knn_info", [](std::int64_t k) {
        py::dict d = choice_dict(structcore::knn_choice(k));
        d["cpu"] = features_dict(structcore::cpu_features());
        d["amx_built"] = structcore::knn_amx_built();
        const char* env = std::getenv("STRUCTCORE_SIMD");
        d["request"] = std::string(env ? env : "");
        return d;
      },
      py::arg("k") = 1,
      "The kNN path structcore.kernels.knn takes here for this k: {'candidates', 'f32', 'tile', "
      "'kc', 'reason', 'cpu' (cpuid/XCR0 features), 'amx_built', 'request' (STRUCTCORE_SIMD)}.");
  m.def(
      "knn_dispatch",
      [](const py::dict& features, const std::string& request, std::int64_t k, py::object amx_built) {
        const bool built = amx_built.is_none() ? structcore::knn_amx_built() : py::cast<bool>(amx_built);
        return choice_dict(structcore::knn_choose(features_from(features), request, k, built));
      },
      py::arg("features"), py::arg("request") = "", py::arg("k") = 1,
      py::arg("amx_built") = py::none(),
      "The pure dispatch decision (knn_choose) for a made-up CPU: features is a dict of "
      "knn_info()['cpu'] keys (missing: False / 0), request a STRUCTCORE_SIMD value. For tests.");
}
