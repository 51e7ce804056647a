// Exact kNN driver: blocking, OpenMP, fused top-k selection, exact re-ranking (see knn.hpp),
// plus the portable scalar micro-kernels. Compiled for the x86-64 baseline; the AVX2 and
// AVX-512 micro-kernels live in knn_avx2.cpp / knn_avx512.cpp and are reached through
// knn_detail::Kernels according to the requested SIMD level.
#include "structcore/knn.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "knn_impl.hpp"

#ifdef STRUCTCORE_WITH_OPENMP
#include <omp.h>
#endif

namespace structcore {

float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    // zero or subnormal: mant * 2^-24, exact in float32
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &v, sizeof bits);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

namespace knn_detail {

void pack_f32_generic(const float* src, std::int64_t ld, int rows, std::int64_t dim,
                      double scale, int width, float* P) {
  if (scale == 1.0) {
    for (std::int64_t p = 0; p < dim; ++p) {
      float* out = P + p * width;
      for (int r = 0; r < rows; ++r) out[r] = src[r * ld + p];
      for (int r = rows; r < width; ++r) out[r] = 0.0f;
    }
  } else {
    for (std::int64_t p = 0; p < dim; ++p) {
      float* out = P + p * width;
      for (int r = 0; r < rows; ++r)
        out[r] = static_cast<float>(static_cast<double>(src[r * ld + p]) * scale);
      for (int r = rows; r < width; ++r) out[r] = 0.0f;
    }
  }
}

void pack_f16_generic(const std::uint16_t* src, std::int64_t ld, int rows, std::int64_t dim,
                      double scale, int width, float* P) {
  for (std::int64_t p = 0; p < dim; ++p) {
    float* out = P + p * width;
    for (int r = 0; r < rows; ++r)
      out[r] = static_cast<float>(static_cast<double>(half_to_float(src[r * ld + p])) * scale);
    for (int r = rows; r < width; ++r) out[r] = 0.0f;
  }
}

std::uint32_t max_abs_generic(const float* x, std::int64_t n) {
  std::uint32_t m = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t b;
    std::memcpy(&b, x + i, sizeof b);
    b &= 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}

namespace {

constexpr int kScalarMR = 4;
constexpr int kScalarNR = 8;

void gemm_scalar(std::int64_t kc, const float* A, const float* B, float* tile, bool accumulate) {
  float c[kScalarMR][kScalarNR];
  for (int i = 0; i < kScalarMR; ++i)
    for (int j = 0; j < kScalarNR; ++j) c[i][j] = accumulate ? tile[i * kScalarNR + j] : 0.0f;
  for (std::int64_t p = 0; p < kc; ++p) {
    const float* a = A + p * kScalarMR;
    const float* b = B + p * kScalarNR;
    for (int i = 0; i < kScalarMR; ++i)
      for (int j = 0; j < kScalarNR; ++j) c[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < kScalarMR; ++i)
    for (int j = 0; j < kScalarNR; ++j) tile[i * kScalarNR + j] = c[i][j];
}

std::uint32_t finish_scalar(float* tile, const float* qn, const float* bn, const float* tau,
                            int rows) {
  std::uint32_t mask = 0;
  for (int i = 0; i < rows; ++i) {
    bool any = false;
    for (int j = 0; j < kScalarNR; ++j) {
      float d = (qn[i] + bn[j]) - 2.0f * tile[i * kScalarNR + j];
      d = d > 0.0f ? d : 0.0f;
      tile[i * kScalarNR + j] = d;
      any |= d < tau[i];
    }
    if (any) mask |= 1u << i;
  }
  return mask;
}

void panel_norms_scalar(const float* P, std::int64_t dim, int width, float* out) {
  for (int j = 0; j < width; ++j) out[j] = 0.0f;
  for (std::int64_t p = 0; p < dim; ++p)
    for (int j = 0; j < width; ++j) out[j] += P[p * width + j] * P[p * width + j];
}

}  // namespace

Kernels kernels_scalar() noexcept {
  return Kernels{kScalarMR,     kScalarNR,        gemm_scalar,     finish_scalar,
                 panel_norms_scalar, pack_f32_generic, pack_f16_generic, max_abs_generic};
}

}  // namespace knn_detail

namespace {

using knn_detail::Kernels;

// Blocking parameters (in units of rows / depth): tuned on Zen 4 (L1d 32 KiB, L2 1 MiB).
constexpr std::int64_t kKC = 256;      // depth chunk: one KC x NR bank micro-panel ~ L1
constexpr std::int64_t kMCPanels = 8;  // query rows per block = 8 MR (packed block ~ L2)
constexpr std::int64_t kNC = 256;      // bank rows per packed block (D x NC floats ~ L2/L3)
constexpr std::int64_t kQBatch = 2048; // queries packed at a time (bounds the packed copy)

template <class T>
struct AlignedArray {  // 64-byte aligned, uninitialised
  T* p = nullptr;
  explicit AlignedArray(std::size_t n)
      : p(static_cast<T*>(::operator new[](std::max<std::size_t>(n, 1) * sizeof(T),
                                            std::align_val_t(64)))) {}
  ~AlignedArray() { ::operator delete[](p, std::align_val_t(64)); }
  AlignedArray(const AlignedArray&) = delete;
  AlignedArray& operator=(const AlignedArray&) = delete;
};
using AlignedFloats = AlignedArray<float>;

Kernels select_kernels(SimdLevel level) {
  const SimdLevel cpu = simd_level();
  if (static_cast<int>(level) > static_cast<int>(cpu)) level = cpu;
#if defined(STRUCTCORE_X86)
  if (level == SimdLevel::AVX512) return knn_detail::kernels_avx512();
  if (level == SimdLevel::AVX2) return knn_detail::kernels_avx2();
#endif
  return knn_detail::kernels_scalar();
}

// All 65536 binary16 values as float (256 KiB, built once, thread-safe): the exact
// re-ranking reads float16 banks through it instead of converting bit by bit.
const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (std::uint32_t h = 0; h < 65536; ++h) t[h] = half_to_float(static_cast<std::uint16_t>(h));
    return t;
  }();
  return table.data();
}

inline double to_double(float x) { return static_cast<double>(x); }

template <class BankT>
struct ToDouble {
  double operator()(BankT x) const { return static_cast<double>(x); }
};
template <>
struct ToDouble<std::uint16_t> {
  const float* table = half_table();
  double operator()(std::uint16_t h) const { return static_cast<double>(table[h]); }
};

template <class BankT>
double exact_d2(const float* q, const BankT* b, std::int64_t dim) {
  // Four interleaved accumulators (fixed order: deterministic, and independent chains).
  const ToDouble<BankT> bd;
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::int64_t p = 0;
  for (; p + 4 <= dim; p += 4) {
    const double d0 = to_double(q[p]) - bd(b[p]);
    const double d1 = to_double(q[p + 1]) - bd(b[p + 1]);
    const double d2 = to_double(q[p + 2]) - bd(b[p + 2]);
    const double d3 = to_double(q[p + 3]) - bd(b[p + 3]);
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; p < dim; ++p) {
    const double d = to_double(q[p]) - bd(b[p]);
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

std::uint32_t max_abs_bank(const Kernels& K, const float* bank, std::int64_t n, int threads) {
  std::uint32_t m = 0;
  const std::int64_t chunk = 1 << 16;
  const std::int64_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(threads) reduction(max : m) schedule(static) if (nchunks > 1)
  for (std::int64_t c = 0; c < nchunks; ++c) {
    const std::int64_t lo = c * chunk;
    const std::uint32_t v = K.max_abs_f32(bank + lo, std::min(chunk, n - lo));
    m = v > m ? v : m;
  }
  return m;
}

std::uint32_t max_abs_bank(const Kernels&, const std::uint16_t* bank, std::int64_t n,
                           int threads) {
  std::uint16_t m = 0;
#pragma omp parallel for num_threads(threads) reduction(max : m) schedule(static) if (n > (1 << 16))
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t v = static_cast<std::uint16_t>(bank[i] & 0x7fffu);
    m = v > m ? v : m;
  }
  const float f = half_to_float(m);
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline void pack_bank(const Kernels& K, const float* src, std::int64_t ld, int rows,
                      std::int64_t dim, double scale, float* P) {
  K.pack_f32(src, ld, rows, dim, scale, K.nr, P);
}
inline void pack_bank(const Kernels& K, const std::uint16_t* src, std::int64_t ld, int rows,
                      std::int64_t dim, double scale, float* P) {
  K.pack_f16(src, ld, rows, dim, scale, K.nr, P);
}

// Insert (d, j) into the sorted buffer D[0..k), I[0..k) (precondition: d < D[k-1]); equal
// distances keep the earlier (lower-index) entry first.
inline void topk_insert(float* D, std::int64_t* I, std::int64_t k, float d, std::int64_t j) {
  std::int64_t pos = k - 1;
  while (pos > 0 && D[pos - 1] > d) {
    D[pos] = D[pos - 1];
    I[pos] = I[pos - 1];
    --pos;
  }
  D[pos] = d;
  I[pos] = j;
}

template <class BankT>
void knn_driver(const float* queries, std::int64_t nq, const BankT* bank, std::int64_t nb,
                std::int64_t dim, std::int64_t k, float* distances, std::int64_t* indices,
                int threads, SimdLevel level) {
  require(nq >= 0, "knn: n_queries must be >= 0");
  require(nb >= 1, "knn: bank must have at least one row");
  require(dim >= 1, "knn: dim must be >= 1");
  require(k >= 1 && k <= nb, "knn: k must be in [1, n_bank]");
  require(bank != nullptr, "knn: bank is null");
  require(nq == 0 || (queries != nullptr && distances != nullptr && indices != nullptr),
          "knn: null queries or output pointer");

  const Kernels K = select_kernels(level);
  const int T_requested = resolve_threads(threads);
  const std::int64_t MR = K.mr, NR = K.nr;
  const std::int64_t MC = kMCPanels * MR;
  const std::int64_t NC = std::max<std::int64_t>(NR, (kNC / NR) * NR);
  const std::int64_t QB = std::max<std::int64_t>(MC, (kQBatch / MC) * MC);
  const std::int64_t KC = kKC;

  // One power-of-two scale for both arrays: max |value| -> [0.5, 1).
  // The max-|value| pass doubles as the finiteness check (NaN/Inf bit patterns compare above
  // every finite magnitude), so the Python layer does not scan the bank a second time.
  const int T_scan = static_cast<int>(std::min<std::int64_t>(T_requested, 1 + ((nb * dim) >> 16)));
  const std::uint32_t bank_bits = max_abs_bank(K, bank, nb * dim, T_scan);
  const std::uint32_t query_bits = max_abs_bank(K, queries, nq * dim, T_scan);
  require(query_bits < 0x7f800000u, "queries must be finite; found NaN or Inf value(s)");
  require(bank_bits < 0x7f800000u, "bank must be finite; found NaN or Inf value(s)");
  if (nq == 0) return;
  std::uint32_t mbits = std::max(bank_bits, query_bits);
  float maxv;
  std::memcpy(&maxv, &mbits, sizeof maxv);
  double scale = 1.0;
  if (maxv > 0.0f && std::isfinite(maxv)) {
    int e = 0;
    (void)std::frexp(static_cast<double>(maxv), &e);
    scale = std::ldexp(1.0, -e);
  }

  const std::int64_t nbb = (nb + NC - 1) / NC;                  // bank blocks
  // Never more threads (and per-thread buffers) than work items: threads=4096 on a small
  // problem must not allocate 4096 packed bank blocks.
  const std::int64_t max_items = nbb * ((std::min(QB, nq) + MC - 1) / MC);
  const int T =
      static_cast<int>(std::min<std::int64_t>(T_requested, std::max<std::int64_t>(1, max_items)));
  const std::int64_t nc_panels = NC / NR;
  const std::int64_t batch_rows = std::min(QB, nq);
  const std::int64_t qpanels_max = (batch_rows + MR - 1) / MR;

  AlignedFloats Ap(static_cast<std::size_t>(qpanels_max * MR * dim));
  std::vector<float> qn(static_cast<std::size_t>(qpanels_max * MR));
  // Per-thread sorted top-k buffers (approximate d2, index) and thresholds.
  std::vector<float> topd(static_cast<std::size_t>(T * batch_rows * k));
  std::vector<std::int64_t> topi(static_cast<std::size_t>(T * batch_rows * k));
  std::vector<float> tau(static_cast<std::size_t>(T * batch_rows));
  AlignedFloats Bp_all(static_cast<std::size_t>(T * NC * dim));
  AlignedFloats Ct_all(static_cast<std::size_t>(T * MC * NC));
  AlignedFloats bn_all(static_cast<std::size_t>(T * NC));

  for (std::int64_t q0 = 0; q0 < nq; q0 += QB) {
    const std::int64_t qcount = std::min(QB, nq - q0);
    const std::int64_t qpanels = (qcount + MR - 1) / MR;
    const std::int64_t mcb = (qcount + MC - 1) / MC;  // query blocks in this batch
    std::int64_t nqs = 1;
    if (nbb < 4 * T) nqs = std::min<std::int64_t>(mcb, (4 * T + nbb - 1) / nbb);
    const std::int64_t n_items = nbb * nqs;

    std::fill(topd.begin(), topd.end(), std::numeric_limits<float>::infinity());
    std::fill(topi.begin(), topi.end(), std::int64_t{-1});
    std::fill(tau.begin(), tau.end(), std::numeric_limits<float>::infinity());

    OmpExceptionCapture cap;
#pragma omp parallel num_threads(T)
    {
      // 1. pack this batch of queries and their norms
#pragma omp for schedule(static)
      for (std::int64_t ip = 0; ip < qpanels; ++ip) {
        cap.run([&] {
          const int rows = static_cast<int>(std::min(MR, qcount - ip * MR));
          float* P = Ap.p + ip * MR * dim;
          K.pack_f32(queries + (q0 + ip * MR) * dim, dim, rows, dim, scale, K.mr, P);
          K.panel_norms(P, dim, K.mr, qn.data() + ip * MR);
        });
      }
      // (implicit barrier)
      // 2. bank blocks x query blocks
      {
#ifdef STRUCTCORE_WITH_OPENMP
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        float* const Bp = Bp_all.p + t * NC * dim;
        float* const Ct = Ct_all.p + t * MC * NC;
        float* const bn = bn_all.p + t * NC;
        float* myd = topd.data() + t * batch_rows * k;
        std::int64_t* myi = topi.data() + t * batch_rows * k;
        float* mytau = tau.data() + t * batch_rows;
        std::int64_t packed_bb = -1;
#pragma omp for schedule(dynamic, 1) nowait
        for (std::int64_t it = 0; it < n_items; ++it) {
          cap.run([&] {
            const std::int64_t bb = it / nqs, qs = it % nqs;
            const std::int64_t b0 = bb * NC;
            const std::int64_t nc = std::min(NC, nb - b0);
            const std::int64_t npan = (nc + NR - 1) / NR;
            if (packed_bb != bb) {
              for (std::int64_t jp = 0; jp < npan; ++jp) {
                const int rows = static_cast<int>(std::min(NR, nc - jp * NR));
                float* P = Bp + jp * NR * dim;
                pack_bank(K, bank + (b0 + jp * NR) * dim, dim, rows, dim, scale, P);
                K.panel_norms(P, dim, K.nr, bn + jp * NR);
                for (int r = rows; r < K.nr; ++r)
                  bn[jp * NR + r] = std::numeric_limits<float>::infinity();
              }
              packed_bb = bb;
            }
            const std::int64_t blk_lo = qs * mcb / nqs, blk_hi = (qs + 1) * mcb / nqs;
            for (std::int64_t blk = blk_lo; blk < blk_hi; ++blk) {
              const std::int64_t ic = blk * MC;
              const std::int64_t mc = std::min(MC, qcount - ic);
              const std::int64_t mpan = (mc + MR - 1) / MR;
              for (std::int64_t pc = 0; pc < dim; pc += KC) {
                const std::int64_t kc = std::min(KC, dim - pc);
                for (std::int64_t jp = 0; jp < npan; ++jp) {
                  const float* Bpp = Bp + jp * NR * dim + pc * NR;
                  for (std::int64_t ip = 0; ip < mpan; ++ip) {
                    const float* App = Ap.p + (ic / MR + ip) * MR * dim + pc * MR;
                    K.gemm(kc, App, Bpp, Ct + (ip * nc_panels + jp) * MR * NR, pc > 0);
                  }
                }
              }
              for (std::int64_t ip = 0; ip < mpan; ++ip) {
                const int rows = static_cast<int>(std::min(MR, mc - ip * MR));
                const std::int64_t qi0 = ic + ip * MR;  // batch-local query row
                for (std::int64_t jp = 0; jp < npan; ++jp) {
                  float* tile = Ct + (ip * nc_panels + jp) * MR * NR;
                  std::uint32_t mask =
                      K.finish(tile, qn.data() + qi0, bn + jp * NR, mytau + qi0, rows);
                  while (mask) {
                    const int i = __builtin_ctz(mask);
                    mask &= mask - 1;
                    const std::int64_t q = qi0 + i;
                    float* D = myd + q * k;
                    std::int64_t* I = myi + q * k;
                    const float* row = tile + i * NR;
                    for (std::int64_t j = 0; j < NR; ++j) {
                      if (row[j] < mytau[q]) {
                        topk_insert(D, I, k, row[j], b0 + jp * NR + j);
                        mytau[q] = D[k - 1];
                      }
                    }
                  }
                }
              }
            }
          });
        }
      }
#pragma omp barrier
      // 3. merge the per-thread lists, re-rank exactly, write the outputs
#pragma omp for schedule(static)
      for (std::int64_t q = 0; q < qcount; ++q) {
        cap.run([&] {
          std::vector<std::pair<float, std::int64_t>> cand;
          cand.reserve(static_cast<std::size_t>(T * k));
          for (int t = 0; t < T; ++t) {
            const float* D = topd.data() + (t * batch_rows + q) * k;
            const std::int64_t* I = topi.data() + (t * batch_rows + q) * k;
            for (std::int64_t e = 0; e < k && I[e] >= 0; ++e) cand.emplace_back(D[e], I[e]);
          }
          std::partial_sort(cand.begin(), cand.begin() + k, cand.end());
          std::vector<std::pair<double, std::int64_t>> exact(static_cast<std::size_t>(k));
          const float* qrow = queries + (q0 + q) * dim;
          for (std::int64_t e = 0; e < k; ++e) {
            const std::int64_t j = cand[static_cast<std::size_t>(e)].second;
            exact[static_cast<std::size_t>(e)] = {exact_d2(qrow, bank + j * dim, dim), j};
          }
          std::sort(exact.begin(), exact.end());
          for (std::int64_t e = 0; e < k; ++e) {
            const double d = std::sqrt(exact[static_cast<std::size_t>(e)].first);
            if (!(d <= static_cast<double>(FLT_MAX)))
              throw std::invalid_argument(
                  "knn: a distance exceeds the float32 range (inputs with magnitudes near "
                  "FLT_MAX); rescale queries and bank");
            distances[(q0 + q) * k + e] = static_cast<float>(d);
            indices[(q0 + q) * k + e] = exact[static_cast<std::size_t>(e)].second;
          }
        });
      }
    }
    cap.rethrow();
  }
}


#if defined(STRUCTCORE_X86)
// Experimental BF16 candidate pass + exact re-ranking of every candidate (see knn.hpp).
template <class BankT>
void knn_driver_bf16(const float* queries, std::int64_t nq, const BankT* bank, std::int64_t nb,
                     std::int64_t dim, std::int64_t k, float* distances, std::int64_t* indices,
                     int threads) {
  require(nq >= 0, "knn: n_queries must be >= 0");
  require(nb >= 1, "knn: bank must have at least one row");
  require(dim >= 1, "knn: dim must be >= 1");
  require(k >= 1 && k <= nb, "knn: k must be in [1, n_bank]");
  require(bank != nullptr, "knn: bank is null");
  require(nq == 0 || (queries != nullptr && distances != nullptr && indices != nullptr),
          "knn: null queries or output pointer");
  require(cpu_has_avx512_bf16(), "knn: this CPU has no AVX-512 BF16");

  const Kernels K = knn_detail::kernels_avx512();
  const knn_detail::Bf16Kernels B16 = knn_detail::kernels_avx512bf16();
  const int T_requested = resolve_threads(threads);
  const std::int64_t MR = K.mr, NR = K.nr;
  const std::int64_t MC = kMCPanels * MR;
  const std::int64_t NC = (kNC / NR) * NR;
  const std::int64_t QB = std::max<std::int64_t>(MC, (kQBatch / MC) * MC);
  const std::int64_t KC2 = 128;  // depth pairs per chunk
  const std::int64_t D2 = (dim + 1) / 2;

  const int T_scan = static_cast<int>(std::min<std::int64_t>(T_requested, 1 + ((nb * dim) >> 16)));
  const std::uint32_t bank_bits = max_abs_bank(K, bank, nb * dim, T_scan);
  const std::uint32_t query_bits = max_abs_bank(K, queries, nq * dim, T_scan);
  require(query_bits < 0x7f800000u, "queries must be finite; found NaN or Inf value(s)");
  require(bank_bits < 0x7f800000u, "bank must be finite; found NaN or Inf value(s)");
  if (nq == 0) return;
  const std::uint32_t mbits = std::max(bank_bits, query_bits);
  float maxv;
  std::memcpy(&maxv, &mbits, sizeof maxv);
  double scale = 1.0;
  if (maxv > 0.0f) {
    int e = 0;
    (void)std::frexp(static_cast<double>(maxv), &e);
    scale = std::ldexp(1.0, -e);
  }
  // Error bound constants (scaled units, all |values| < 1): see knn.hpp.
  const double u = 0x1p-24, ub = 0x1p-8;
  auto gamma = [u](double n) { return n * u / (1 - n * u); };
  const double gd = gamma(static_cast<double>(dim));
  const float c1 = static_cast<float>(2 * ((2 * ub + ub * ub) * (1 + gd) + gd) * 1.01);
  const float c2 = static_cast<float>(gamma(static_cast<double>(dim) + 10) * 1.01 + 8 * u);
  const float c3 = static_cast<float>(static_cast<double>(dim) * 0x1p-120);

  const std::int64_t nbb = (nb + NC - 1) / NC;
  const std::int64_t nc_panels = NC / NR;
  const std::int64_t batch_rows = std::min(QB, nq);
  const std::int64_t qpanels_max = (batch_rows + MR - 1) / MR;
  const std::int64_t max_items = nbb * ((batch_rows + MC - 1) / MC);
  const int T =
      static_cast<int>(std::min<std::int64_t>(T_requested, std::max<std::int64_t>(1, max_items)));

  AlignedFloats Af(static_cast<std::size_t>(qpanels_max * MR * dim));
  std::vector<std::uint32_t> Aq(static_cast<std::size_t>(qpanels_max * MR * D2));
  std::vector<float> qn(static_cast<std::size_t>(qpanels_max * MR)), qr(qn.size());
  std::vector<float> ubuf(static_cast<std::size_t>(T * batch_rows * k));
  std::vector<std::int64_t> dummy(static_cast<std::size_t>(T * batch_rows * k));
  std::vector<float> tau(static_cast<std::size_t>(T * batch_rows));
  std::vector<std::vector<std::pair<float, std::int64_t>>> cands(
      static_cast<std::size_t>(T * batch_rows));
  AlignedFloats Bf_all(static_cast<std::size_t>(T * NC * dim));
  AlignedArray<std::uint32_t> Bq_all(static_cast<std::size_t>(T * NC * D2));
  AlignedFloats Ct_all(static_cast<std::size_t>(T * MC * NC));
  AlignedFloats Ut_all(static_cast<std::size_t>(T * MR * NR));
  AlignedFloats bn_all(static_cast<std::size_t>(T * NC)), br_all(static_cast<std::size_t>(T * NC));
  const std::size_t prune_at = static_cast<std::size_t>(16 * k + 64);
  // A query whose candidate list still exceeds this after pruning (masses of near-equal
  // distances, e.g. duplicated rows) leaves the bf16 path and is redone by the float32 path:
  // memory stays bounded by threads * batch * cand_cap entries.
  const std::size_t cand_cap = static_cast<std::size_t>(512 + 16 * k);
  std::vector<char> over(static_cast<std::size_t>(T * batch_rows));
  std::vector<char> redo(static_cast<std::size_t>(batch_rows));

  for (std::int64_t q0 = 0; q0 < nq; q0 += QB) {
    const std::int64_t qcount = std::min(QB, nq - q0);
    const std::int64_t qpanels = (qcount + MR - 1) / MR;
    const std::int64_t mcb = (qcount + MC - 1) / MC;
    std::int64_t nqs = 1;
    if (nbb < 4 * T) nqs = std::min<std::int64_t>(mcb, (4 * T + nbb - 1) / nbb);
    const std::int64_t n_items = nbb * nqs;
    std::fill(ubuf.begin(), ubuf.end(), std::numeric_limits<float>::infinity());
    std::fill(tau.begin(), tau.end(), std::numeric_limits<float>::infinity());
    for (auto& c : cands) c.clear();
    std::fill(over.begin(), over.end(), 0);
    std::fill(redo.begin(), redo.end(), 0);

    OmpExceptionCapture cap;
#pragma omp parallel num_threads(T)
    {
#pragma omp for schedule(static)
      for (std::int64_t ip = 0; ip < qpanels; ++ip) {
        cap.run([&] {
          const int rows = static_cast<int>(std::min(MR, qcount - ip * MR));
          float* P = Af.p + ip * MR * dim;
          K.pack_f32(queries + (q0 + ip * MR) * dim, dim, rows, dim, scale, K.mr, P);
          K.panel_norms(P, dim, K.mr, qn.data() + ip * MR);
          for (std::int64_t r = 0; r < MR; ++r) qr[ip * MR + r] = std::sqrt(qn[ip * MR + r]);
          B16.to_pairs(P, dim, K.mr, Aq.data() + ip * MR * D2);
        });
      }
      {
#ifdef STRUCTCORE_WITH_OPENMP
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        float* const Bf = Bf_all.p + t * NC * dim;
        std::uint32_t* const Bq = Bq_all.p + t * NC * D2;
        float* const Ct = Ct_all.p + t * MC * NC;
        float* const Ut = Ut_all.p + t * MR * NR;
        float* const bn = bn_all.p + t * NC;
        float* const br = br_all.p + t * NC;
        float* myu = ubuf.data() + t * batch_rows * k;
        std::int64_t* myi = dummy.data() + t * batch_rows * k;
        float* mytau = tau.data() + t * batch_rows;
        auto* mycand = cands.data() + t * batch_rows;
        char* myover = over.data() + t * batch_rows;
        std::int64_t packed_bb = -1;
#pragma omp for schedule(dynamic, 1) nowait
        for (std::int64_t it = 0; it < n_items; ++it) {
          cap.run([&] {
            const std::int64_t bb = it / nqs, qs = it % nqs;
            const std::int64_t b0 = bb * NC;
            const std::int64_t nc = std::min(NC, nb - b0);
            const std::int64_t npan = (nc + NR - 1) / NR;
            if (packed_bb != bb) {
              for (std::int64_t jp = 0; jp < npan; ++jp) {
                const int rows = static_cast<int>(std::min(NR, nc - jp * NR));
                float* P = Bf + jp * NR * dim;
                pack_bank(K, bank + (b0 + jp * NR) * dim, dim, rows, dim, scale, P);
                K.panel_norms(P, dim, K.nr, bn + jp * NR);
                for (std::int64_t r = 0; r < NR; ++r) br[jp * NR + r] = std::sqrt(bn[jp * NR + r]);
                for (int r = rows; r < K.nr; ++r) {
                  bn[jp * NR + r] = std::numeric_limits<float>::infinity();
                  br[jp * NR + r] = 0.0f;
                }
                B16.to_pairs(P, dim, K.nr, Bq + jp * NR * D2);
              }
              packed_bb = bb;
            }
            const std::int64_t blk_lo = qs * mcb / nqs, blk_hi = (qs + 1) * mcb / nqs;
            for (std::int64_t blk = blk_lo; blk < blk_hi; ++blk) {
              const std::int64_t ic = blk * MC;
              const std::int64_t mc = std::min(MC, qcount - ic);
              const std::int64_t mpan = (mc + MR - 1) / MR;
              for (std::int64_t pc = 0; pc < D2; pc += KC2) {
                const std::int64_t kc = std::min(KC2, D2 - pc);
                for (std::int64_t jp = 0; jp < npan; ++jp) {
                  const std::uint32_t* Bpp = Bq + jp * NR * D2 + pc * NR;
                  for (std::int64_t ip = 0; ip < mpan; ++ip) {
                    const std::uint32_t* App = Aq.data() + (ic / MR + ip) * MR * D2 + pc * MR;
                    B16.gemm(kc, App, Bpp, Ct + (ip * nc_panels + jp) * MR * NR, pc > 0);
                  }
                }
              }
              for (std::int64_t ip = 0; ip < mpan; ++ip) {
                const int rows = static_cast<int>(std::min(MR, mc - ip * MR));
                const std::int64_t qi0 = ic + ip * MR;
                for (std::int64_t jp = 0; jp < npan; ++jp) {
                  float* tile = Ct + (ip * nc_panels + jp) * MR * NR;
                  const int cols = static_cast<int>(std::min(NR, nc - jp * NR));
                  std::uint32_t mask = B16.finish(tile, Ut, qn.data() + qi0, qr.data() + qi0,
                                                  bn + jp * NR, br + jp * NR, cols, c1, c2, c3,
                                                  mytau + qi0, rows);
                  while (mask) {
                    const int i = __builtin_ctz(mask);
                    mask &= mask - 1;
                    const std::int64_t q = qi0 + i;
                    if (myover[q]) continue;
                    const float* lrow = tile + i * NR;
                    const float* urow = Ut + i * NR;
                    auto& cl = mycand[q];
                    for (int j = 0; j < cols; ++j) {
                      if (lrow[j] <= mytau[q]) {
                        cl.emplace_back(lrow[j], b0 + jp * NR + j);
                        if (urow[j] < mytau[q]) {
                          topk_insert(myu + q * k, myi + q * k, k, urow[j], 0);
                          mytau[q] = myu[q * k + k - 1];
                        }
                      }
                    }
                    if (cl.size() > prune_at) {
                      const float tq = mytau[q];
                      cl.erase(std::remove_if(cl.begin(), cl.end(),
                                              [tq](const auto& c) { return c.first > tq; }),
                               cl.end());
                      if (cl.size() > cand_cap) {
                        myover[q] = 1;
                        std::vector<std::pair<float, std::int64_t>>().swap(cl);
                      }
                    }
                  }
                }
              }
            }
          });
        }
      }
#pragma omp barrier
#pragma omp for schedule(dynamic, 16)
      for (std::int64_t q = 0; q < qcount; ++q) {
        cap.run([&] {
          for (int t = 0; t < T; ++t)
            if (over[static_cast<std::size_t>(t * batch_rows + q)]) {
              redo[static_cast<std::size_t>(q)] = 1;
              return;
            }
          std::vector<float> us;
          us.reserve(static_cast<std::size_t>(T * k));
          for (int t = 0; t < T; ++t)
            for (std::int64_t e = 0; e < k; ++e) us.push_back(ubuf[(t * batch_rows + q) * k + e]);
          std::nth_element(us.begin(), us.begin() + (k - 1), us.end());
          const float tg = us[static_cast<std::size_t>(k - 1)];
          std::vector<std::pair<double, std::int64_t>> exact;
          const float* qrow = queries + (q0 + q) * dim;
          for (int t = 0; t < T; ++t)
            for (const auto& c : cands[static_cast<std::size_t>(t * batch_rows + q)])
              if (c.first <= tg) exact.emplace_back(exact_d2(qrow, bank + c.second * dim, dim), c.second);
          if (static_cast<std::int64_t>(exact.size()) < k)
            throw std::logic_error("knn bf16: fewer candidates than k (internal error)");
          std::partial_sort(exact.begin(), exact.begin() + k, exact.end());
          for (std::int64_t e = 0; e < k; ++e) {
            const double d = std::sqrt(exact[static_cast<std::size_t>(e)].first);
            if (!(d <= static_cast<double>(FLT_MAX)))
              throw std::invalid_argument(
                  "knn: a distance exceeds the float32 range (inputs with magnitudes near "
                  "FLT_MAX); rescale queries and bank");
            distances[(q0 + q) * k + e] = static_cast<float>(d);
            indices[(q0 + q) * k + e] = exact[static_cast<std::size_t>(e)].second;
          }
        });
      }
    }
    cap.rethrow();
    // queries that overflowed their candidate budget: the float32 path
    std::vector<std::int64_t> rows;
    for (std::int64_t q = 0; q < qcount; ++q)
      if (redo[static_cast<std::size_t>(q)]) rows.push_back(q0 + q);
    if (!rows.empty()) {
      const std::int64_t n = static_cast<std::int64_t>(rows.size());
      std::vector<float> sub(static_cast<std::size_t>(n * dim)), sd(static_cast<std::size_t>(n * k));
      std::vector<std::int64_t> si(static_cast<std::size_t>(n * k));
      for (std::int64_t r = 0; r < n; ++r)
        std::copy(queries + rows[r] * dim, queries + (rows[r] + 1) * dim, sub.data() + r * dim);
      knn_driver(sub.data(), n, bank, nb, dim, k, sd.data(), si.data(), threads,
                 SimdLevel::AVX512);
      for (std::int64_t r = 0; r < n; ++r) {
        std::copy(sd.data() + r * k, sd.data() + (r + 1) * k, distances + rows[r] * k);
        std::copy(si.data() + r * k, si.data() + (r + 1) * k, indices + rows[r] * k);
      }
    }
  }
}
#endif
}  // namespace

void knn(const float* queries, std::int64_t n_queries, const float* bank, std::int64_t n_bank,
         std::int64_t dim, std::int64_t k, float* distances, std::int64_t* indices, int threads,
         SimdLevel level) {
  knn_driver(queries, n_queries, bank, n_bank, dim, k, distances, indices, threads, level);
}

void knn_f16(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
             std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
             std::int64_t* indices, int threads, SimdLevel level) {
  knn_driver(queries, n_queries, bank_f16, n_bank, dim, k, distances, indices, threads, level);
}

void knn_bf16(const float* queries, std::int64_t n_queries, const float* bank,
              std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
              std::int64_t* indices, int threads) {
#if defined(STRUCTCORE_X86)
  knn_driver_bf16(queries, n_queries, bank, n_bank, dim, k, distances, indices, threads);
#else
  (void)queries, (void)n_queries, (void)bank, (void)n_bank, (void)dim, (void)k, (void)distances,
      (void)indices, (void)threads;
  throw std::invalid_argument("knn: AVX-512 BF16 path not built for this architecture");
#endif
}

void knn_f16_bf16(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
                  std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
                  std::int64_t* indices, int threads) {
#if defined(STRUCTCORE_X86)
  knn_driver_bf16(queries, n_queries, bank_f16, n_bank, dim, k, distances, indices, threads);
#else
  (void)queries, (void)n_queries, (void)bank_f16, (void)n_bank, (void)dim, (void)k,
      (void)distances, (void)indices, (void)threads;
  throw std::invalid_argument("knn: AVX-512 BF16 path not built for this architecture");
#endif
}

bool knn_prefers_bf16(std::int64_t k) noexcept { return k <= 64 && cpu_has_avx512_bf16(); }

}  // namespace structcore
