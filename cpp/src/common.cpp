#include "structcore/common.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#ifdef STRUCTCORE_WITH_OPENMP
#include <omp.h>
#endif
#if defined(STRUCTCORE_X86) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define STRUCTCORE_CPUID 1
#endif
#if defined(STRUCTCORE_CPUID) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "structcore/knn.hpp"  // knn_build_note()

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
  return simd_level() == SimdLevel::AVX512 && cpu_features().avx512_bf16;
}

namespace {

#if defined(STRUCTCORE_CPUID)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}
unsigned long long read_xcr0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));  // OSXSAVE checked by the caller
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

CpuFeatures detect_features() noexcept {
  CpuFeatures f;
#if defined(STRUCTCORE_CPUID)
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf == 0) return f;
  const Regs v = cpuid(0, 0);
  std::memcpy(f.vendor, &v.b, 4);
  std::memcpy(f.vendor + 4, &v.d, 4);
  std::memcpy(f.vendor + 8, &v.c, 4);
  f.vendor[12] = '\0';
  const Regs l1 = cpuid(1, 0);
  const int base_family = static_cast<int>((l1.a >> 8) & 0xf);
  const int base_model = static_cast<int>((l1.a >> 4) & 0xf);
  f.family = base_family + (base_family == 0xf ? static_cast<int>((l1.a >> 20) & 0xff) : 0);
  f.model = base_model + ((base_family == 0x6 || base_family == 0xf)
                              ? static_cast<int>((l1.a >> 16) & 0xf) << 4
                              : 0);
  f.fma = (l1.c >> 12) & 1;
  f.f16c = (l1.c >> 29) & 1;
  const bool osxsave = (l1.c >> 27) & 1, avx = (l1.c >> 28) & 1;
  const unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
  f.os_avx = avx && (xcr0 & 0x6) == 0x6;
  f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;
  f.os_amx = (xcr0 & 0x60000ull) == 0x60000ull;
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    f.avx2 = (l7.b >> 5) & 1;
    f.avx512f = (l7.b >> 16) & 1;
    f.avx512dq = (l7.b >> 17) & 1;
    f.avx512bw = (l7.b >> 30) & 1;
    f.avx512vl = (l7.b >> 31) & 1;
    f.amx_bf16 = (l7.d >> 22) & 1;
    f.amx_tile = (l7.d >> 24) & 1;
    f.amx_int8 = (l7.d >> 25) & 1;
    if (l7.a >= 1) f.avx512_bf16 = (cpuid(7, 1).a >> 5) & 1;
  }
  // L1d size: Intel's deterministic cache leaf 4, AMD's 0x80000005 (ECX[31:24] KiB)
  if (std::strcmp(f.vendor, "GenuineIntel") == 0 && max_leaf >= 4) {
    for (unsigned sub = 0; sub < 16; ++sub) {
      const Regs c = cpuid(4, sub);
      const unsigned type = c.a & 0x1f, level = (c.a >> 5) & 0x7;
      if (type == 0) break;
      if (type == 1 && level == 1) {
        const unsigned long bytes = static_cast<unsigned long>((c.b >> 22) + 1) *
                                    (((c.b >> 12) & 0x3ff) + 1) * ((c.b & 0xfff) + 1) *
                                    (c.c + 1);
        f.l1d_kib = static_cast<int>(bytes / 1024);
        break;
      }
    }
  } else if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000005u) {
    f.l1d_kib = static_cast<int>(cpuid(0x80000005u, 0).c >> 24);
  }
#if defined(__linux__) && defined(SYS_arch_prctl)
  // AMX tile data is off for every process until it asks (Linux >= 5.16): without the
  // permission the first tile instruction raises SIGILL. Ask only where AMX exists.
  if (f.amx_tile && f.os_amx) {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    f.amx_permitted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
    if (!f.amx_permitted) f.amx_perm_errno = errno;
  }
#endif
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures f = detect_features();  // C++11 magic statics: thread-safe
  return f;
}

std::string cpu_features_string(const CpuFeatures& f) {
  std::string s = f.vendor[0] ? f.vendor : "unknown vendor";
  s += " family " + std::to_string(f.family) + " model " + std::to_string(f.model);
  if (f.l1d_kib > 0) s += ", L1d " + std::to_string(f.l1d_kib) + " KiB";
  s += ",";
  const std::pair<bool, const char*> flags[] = {
      {f.avx2, "avx2"},         {f.fma, "fma"},           {f.f16c, "f16c"},
      {f.avx512f, "avx512f"},   {f.avx512bw, "avx512bw"}, {f.avx512dq, "avx512dq"},
      {f.avx512vl, "avx512vl"}, {f.avx512_bf16, "avx512_bf16"}, {f.amx_tile, "amx_tile"},
      {f.amx_bf16, "amx_bf16"}, {f.amx_int8, "amx_int8"}};
  for (const auto& fl : flags)
    if (fl.first) (s += ' ') += fl.second;
  s += "; os:";
  s += f.os_avx ? " avx" : "";
  s += f.os_avx512 ? " avx512" : "";
  s += f.os_amx ? " amx" : "";
  if (f.amx_tile && f.os_amx)
    s += f.amx_permitted ? " (amx permitted)"
                         : " (amx NOT permitted, errno " + std::to_string(f.amx_perm_errno) + ")";
  return s;
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
  s += "; cpu " + cpu_features_string(cpu_features());
  s += "; knn " + knn_build_note();
#ifdef STRUCTCORE_SANITIZE
  s += "; sanitize " STRUCTCORE_SANITIZE;
#endif
  return s;
}

}  // namespace structcore
