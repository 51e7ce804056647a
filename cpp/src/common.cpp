#include "structcore/common.hpp"

#include <cstdlib>
#include <cstring>

#ifdef STRUCTCORE_WITH_OPENMP
#include <omp.h>
#endif

namespace structcore {

int resolve_threads(int requested) noexcept {
#ifdef STRUCTCORE_WITH_OPENMP
  if (requested > 0) return requested;
  const int n = omp_get_max_threads();
  return n > 0 ? n : 1;
#else
  (void)requested;
  return 1;
#endif
}

int thread_index() noexcept {
#ifdef STRUCTCORE_WITH_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

bool has_openmp() noexcept {
#ifdef STRUCTCORE_WITH_OPENMP
  return true;
#else
  return false;
#endif
}

namespace {

SimdLevel detect_cpu() noexcept {
#if defined(STRUCTCORE_X86) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma"))
    return SimdLevel::AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::AVX2;
#endif
  return SimdLevel::Scalar;
}

SimdLevel detect() noexcept {
  SimdLevel level = detect_cpu();
  if (const char* env = std::getenv("STRUCTCORE_SIMD")) {
    SimdLevel wanted = level;
    if (std::strcmp(env, "scalar") == 0) wanted = SimdLevel::Scalar;
    else if (std::strcmp(env, "avx2") == 0) wanted = SimdLevel::AVX2;
    else if (std::strcmp(env, "avx512") == 0) wanted = SimdLevel::AVX512;
    if (static_cast<int>(wanted) < static_cast<int>(level)) level = wanted;
  }
  return level;
}

}  // namespace

SimdLevel simd_level() noexcept {
  static const SimdLevel level = detect();  // C++11 magic statics: thread-safe
  return level;
}

const char* simd_level_name(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::AVX512: return "avx512";
    case SimdLevel::AVX2: return "avx2";
    default: return "scalar";
  }
}

bool cpu_has_avx512_bf16() noexcept {
#if defined(STRUCTCORE_X86) && (defined(__GNUC__) || defined(__clang__)) && !defined(__clang__)
  __builtin_cpu_init();
  return simd_level() == SimdLevel::AVX512 && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

std::string build_info() {
  std::string s = "structcore " STRUCTCORE_VERSION "; compiler " STRUCTCORE_COMPILER
                  "; build " STRUCTCORE_BUILD_TYPE "; openmp ";
  s += has_openmp() ? "yes" : "no";
#ifdef STRUCTCORE_WITH_OPENMP
  s += " (max threads " + std::to_string(omp_get_max_threads()) + ")";
#endif
  s += "; simd ";
  s += simd_level_name(simd_level());
  s += cpu_has_avx512_bf16() ? " (+bf16)" : "";
#ifdef STRUCTCORE_SANITIZE
  s += "; sanitize " STRUCTCORE_SANITIZE;
#endif
  return s;
}

}  // namespace structcore
