// structcore/common.hpp — shared building blocks of the C++ core.
//
// * Error policy: a violated precondition that the caller could have checked throws
//   std::invalid_argument (pybind11 maps it to ValueError); allocation failure throws
//   std::bad_alloc (MemoryError). Nothing aborts.
// * Threading: every kernel takes `int threads`; <= 0 means "all OpenMP threads".
//   Exceptions thrown inside an OpenMP region are captured and rethrown after it
//   (an exception escaping a parallel region would terminate the process).
// * SIMD: kernels compiled for wider instruction sets live in *_avx2.cpp / *_avx512.cpp
//   files; simd_level() tells, once per process, which one this CPU may run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

namespace structcore {

/// Number of threads a kernel should use: `requested` if > 0, else the OpenMP default
/// (omp_get_max_threads()); always 1 when built without OpenMP.
int resolve_threads(int requested) noexcept;

/// Index of the calling thread in the innermost OpenMP team (omp_get_thread_num()); 0 outside
/// a parallel region or when built without OpenMP. For per-thread scratch buffers.
int thread_index() noexcept;

/// True when the library was built with OpenMP.
bool has_openmp() noexcept;

/// Instruction-set levels that kernels may be dispatched to, narrowest first.
enum class SimdLevel : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };

/// Widest level this CPU supports, lowered by the environment variable
/// STRUCTCORE_SIMD=scalar|avx2|avx512 (never raised above what the CPU has).
/// Detected once per process; thread-safe.
SimdLevel simd_level() noexcept;

/// "scalar", "avx2" or "avx512".
const char* simd_level_name(SimdLevel level) noexcept;

/// True when this CPU has AVX-512 BF16 (vdpbf16ps) and simd_level() is AVX-512.
bool cpu_has_avx512_bf16() noexcept;

/// What cpuid and XCR0 say about this CPU (x86-64 with GCC/Clang; everything false / 0 /
/// empty elsewhere). Plain data, so that dispatch decisions can be written as pure functions
/// of it and tested with made-up feature sets.
struct CpuFeatures {
  char vendor[13] = {};  // cpuid leaf 0: "GenuineIntel", "AuthenticAMD", ... ("" unknown)
  int family = 0;        // display family (base + extended), e.g. 6 (Intel), 25 (AMD Zen 4)
  int model = 0;         // display model (base + extended << 4), e.g. 143 (Sapphire Rapids)
  int l1d_kib = 0;       // L1 data cache per core in KiB (cpuid leaf 4 / 0x80000005), 0 unknown
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_bf16 = false;  // leaf 7.1 EAX bit 5
  bool amx_bf16 = false;     // leaf 7.0 EDX bit 22
  bool amx_tile = false;     // leaf 7.0 EDX bit 24
  bool amx_int8 = false;     // leaf 7.0 EDX bit 25
  bool os_avx = false;       // XCR0 bits 1, 2 (XMM, YMM state enabled by the OS)
  bool os_avx512 = false;    // XCR0 bits 5, 6, 7 (opmask, ZMM_Hi256, Hi16_ZMM)
  bool os_amx = false;       // XCR0 bits 17, 18 (XTILECFG, XTILEDATA)
  bool amx_permitted = false;  // Linux: arch_prctl(ARCH_REQ_XCOMP_PERM, 18) granted
  int amx_perm_errno = 0;      // errno of a refused request (ENOSPC: a too small sigaltstack)
};

/// This CPU's features, detected once per process (thread-safe). On Linux, when cpuid and
/// XCR0 report AMX, the first call also requests the AMX tile-data permission for the
/// process (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); amx_permitted records the
/// answer. Using AMX instructions without it raises SIGILL, so nothing may use AMX unless
/// amx_permitted is true.
const CpuFeatures& cpu_features() noexcept;

/// "GenuineIntel family 6 model 143, L1d 48 KiB, avx2 fma avx512f ... amx_tile (os, permitted)".
std::string cpu_features_string(const CpuFeatures& f);

/// One-line description of the build: version, compiler, build type, OpenMP, SIMD level.
std::string build_info();

/// Collects the first exception thrown by any OpenMP thread so that it can be rethrown on
/// the calling thread after the parallel region (as faiss does). Usage:
///   OmpExceptionCapture cap;
///   #pragma omp parallel for
///   for (...) cap.run([&] { ... });
///   cap.rethrow();
class OmpExceptionCapture {
public:
  template <class F>
  void run(F&& f) noexcept {
    if (failed_) return;  // skip remaining work once something failed
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_ = true;
    }
  }
  void rethrow() {
    if (error_) std::rethrow_exception(error_);
  }

private:
  std::mutex mutex_;
  std::exception_ptr error_;
  volatile bool failed_ = false;
};

/// Throws std::invalid_argument(message) when `condition` is false.
inline void require(bool condition, const char* message) {
  if (!condition) throw std::invalid_argument(message);
}

}  // namespace structcore
