// Exact kNN drivers (see knn.hpp) plus the portable scalar micro-kernels. Compiled for the
// x86-64 baseline; the AVX2 / AVX-512 / AVX-512 BF16 micro-kernels live in knn_avx2.cpp,
// knn_avx512.cpp and knn_avx512bf16.cpp and are reached through knn_detail::Kernels /
// Bf16Kernels according to the requested SIMD level.
//
// Structure: both candidate passes share one tile walk, walk_tiles() (query batches, bank
// block packing, the OpenMP split over bank block x query blocks, per-thread state, merge per
// query), so blocking and thread-count independence are defined once. What differs is a
// small pass class plugged into it:
//   TopKPass  float32 d2~ tiles -> per-thread sorted top-k; the k winners re-ranked exactly.
//   Bf16Pass  bf16 tiles with a proven bound -> every candidate within it re-ranked exactly;
//             queries past the candidate budget are redone by the float32 pass.
#include "structcore/knn.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "knn_impl.hpp"

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

// fl32(x * scale) - cs with cs = the centre times scale: scaling first (a power of two, the
// product rounded once: exact unless it underflows) keeps the difference below 1 in
// magnitude, where x - c itself could overflow float32 (x = 3e38, c = -3e38).
inline float centred_scaled(float x, float cs, double scale) {
  const float xs = scale == 1.0 ? x : static_cast<float>(static_cast<double>(x) * scale);
  return xs - cs;  // the one float32 rounding of the centring
}

void pack_f32_generic(const float* src, std::int64_t ld, int rows, std::int64_t dim,
                      const float* centre, double scale, int width, float* P) {
  for (std::int64_t p = 0; p < dim; ++p) {
    float* out = P + p * width;
    for (int r = 0; r < rows; ++r) out[r] = centred_scaled(src[r * ld + p], centre[p], scale);
    for (int r = rows; r < width; ++r) out[r] = 0.0f;
  }
}

void pack_f16_generic(const std::uint16_t* src, std::int64_t ld, int rows, std::int64_t dim,
                      const float* centre, double scale, int width, float* P) {
  for (std::int64_t p = 0; p < dim; ++p) {
    float* out = P + p * width;
    for (int r = 0; r < rows; ++r)
      out[r] = centred_scaled(half_to_float(src[r * ld + p]), centre[p], scale);
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
constexpr std::int64_t kKC = 256;      // default depth chunk (knn_choose() picks per CPU)
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
  (void)threads;  // read by the OpenMP pragma only
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
  (void)threads;  // read by the OpenMP pragma only
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
                      std::int64_t dim, const float* centre, double scale, float* P) {
  K.pack_f32(src, ld, rows, dim, centre, scale, K.nr, P);
}
inline void pack_bank(const Kernels& K, const std::uint16_t* src, std::int64_t ld, int rows,
                      std::int64_t dim, const float* centre, double scale, float* P) {
  K.pack_f16(src, ld, rows, dim, centre, scale, K.nr, P);
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

// ---- shared by both candidate passes ------------------------------------------------------

// One call's arguments; BankT is float or std::uint16_t (binary16 bit patterns).
template <class BankT>
struct Problem {
  const float* queries;  // nq * dim
  std::int64_t nq;
  const BankT* bank;     // nb * dim
  std::int64_t nb, dim, k;
  float* distances;        // out, nq * k
  std::int64_t* indices;   // out, nq * k
};

template <class BankT>
void check_problem(const Problem<BankT>& p) {
  require(p.nq >= 0, "knn: n_queries must be >= 0");
  require(p.nb >= 1, "knn: bank must have at least one row");
  require(p.dim >= 1, "knn: dim must be >= 1");
  require(p.k >= 1 && p.k <= p.nb, "knn: k must be in [1, n_bank]");
  require(p.bank != nullptr, "knn: bank is null");
  require(p.nq == 0 || (p.queries != nullptr && p.distances != nullptr && p.indices != nullptr),
          "knn: null queries or output pointer");
}

// One power-of-two scale for both arrays: max |value| -> [0.5, 1) (1 when all are zero).
// The max-|value| pass doubles as the finiteness check (NaN/Inf bit patterns compare above
// every finite magnitude), so the Python layer does not scan the bank a second time.
template <class BankT>
double input_scale(const Kernels& K, const Problem<BankT>& p, int threads) {
  const int T_scan = static_cast<int>(std::min<std::int64_t>(threads, 1 + ((p.nb * p.dim) >> 16)));
  const std::uint32_t bank_bits = max_abs_bank(K, p.bank, p.nb * p.dim, T_scan);
  const std::uint32_t query_bits = max_abs_bank(K, p.queries, p.nq * p.dim, T_scan);
  require(query_bits < 0x7f800000u, "queries must be finite; found NaN or Inf value(s)");
  require(bank_bits < 0x7f800000u, "bank must be finite; found NaN or Inf value(s)");
  const std::uint32_t mbits = std::max(bank_bits, query_bits);
  float maxv;
  std::memcpy(&maxv, &mbits, sizeof maxv);
  double scale = 1.0;
  if (maxv > 0.0f) {
    int e = 0;
    (void)std::frexp(static_cast<double>(maxv), &e);
    scale = std::ldexp(1.0, -e);
  }
  return scale;
}

// The centre both arrays are packed relative to: the mean of up to kCentreRows bank rows
// spread evenly over the bank (all rows of a small bank), summed in double in row order and
// rounded to float32 (deterministic, thread-independent). Distances do not change under a
// common translation, but the selection error does: it scales with (|q| + |b|)^2 (knn.hpp),
// and PatchCore features (post-ReLU, a large common mean) have norms ~40x their
// nearest-neighbour distances. Centring shrinks the norms ~4x on WideResNet-50-2 features, so
// the float32 pass errs ~16x less and the bf16 pass keeps far fewer candidates (measured:
// 2.2x faster there). Any centre is correct; a sample mean is as good as the full mean for
// this and costs O(kCentreRows * D), not O(M * D), per call.
constexpr std::int64_t kCentreRows = 256;

template <class BankT>
std::vector<float> bank_centre(const Problem<BankT>& p) {
  const ToDouble<BankT> bd;
  const std::int64_t dim = p.dim, m = std::min(p.nb, kCentreRows);
  std::vector<double> acc(static_cast<std::size_t>(dim), 0.0);
  for (std::int64_t i = 0; i < m; ++i) {
    const BankT* row = p.bank + (i * p.nb / m) * dim;  // rows 0, nb/m, 2nb/m, ...
    for (std::int64_t j = 0; j < dim; ++j) acc[static_cast<std::size_t>(j)] += bd(row[j]);
  }
  std::vector<float> centre(static_cast<std::size_t>(dim));
  for (std::int64_t j = 0; j < dim; ++j)
    centre[static_cast<std::size_t>(j)] =
        static_cast<float>(acc[static_cast<std::size_t>(j)] / static_cast<double>(m));
  return centre;
}

// Depth chunk of the AVX-512 float32 pass (14 x 32 tile), per CPU (knn.hpp, knn_choose).
std::int64_t f32_kc(const CpuFeatures& cpu) {
  return std::strcmp(cpu.vendor, "AuthenticAMD") == 0 ? kKC : 128;
}

// STRUCTCORE_KNN_KC (read once): a multiple of 32 in [32, 4096] overrides f32_kc() for tuning
// on a new CPU; 0 when unset or invalid.
std::int64_t kc_override() {
  static const std::int64_t kc = [] {
    const char* env = std::getenv("STRUCTCORE_KNN_KC");
    if (!env) return std::int64_t{0};
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    return (end != env && *end == '\0' && v >= 32 && v <= 4096 && v % 32 == 0)
               ? static_cast<std::int64_t>(v)
               : std::int64_t{0};
  }();
  return kc;
}

// The depth chunk the AVX-512 float32 pass uses here.
std::int64_t f32_kc_here() { return kc_override() ? kc_override() : f32_kc(cpu_features()); }

// Blocking of one call (units: rows).
struct Blocking {
  std::int64_t MR, NR;       // micro tile
  std::int64_t KC;           // depth chunk (floats; the bf16 passes use KC / 2 pairs)
  std::int64_t MC;           // query rows per block (kMCPanels MR panels)
  std::int64_t NC;           // bank rows per packed block (a multiple of NR)
  std::int64_t QB;           // queries per batch (a multiple of MC)
  std::int64_t nbb;          // bank blocks
  std::int64_t nc_panels;    // NR panels per full bank block
  std::int64_t batch_rows;   // min(QB, nq): rows of the per-batch buffers
  std::int64_t qpanels_max;  // MR panels of a full batch
  int T;                     // threads
};

Blocking make_blocking(const Kernels& K, std::int64_t nq, std::int64_t nb, int T_requested,
                       std::int64_t kc) {
  Blocking B{};
  B.MR = K.mr;
  B.NR = K.nr;
  B.MC = kMCPanels * B.MR;
  B.KC = kc;
  B.NC = std::max<std::int64_t>(B.NR, (kNC / B.NR) * B.NR);
  B.QB = std::max<std::int64_t>(B.MC, (kQBatch / B.MC) * B.MC);
  B.nbb = (nb + B.NC - 1) / B.NC;
  B.nc_panels = B.NC / B.NR;
  B.batch_rows = std::min(B.QB, nq);
  B.qpanels_max = (B.batch_rows + B.MR - 1) / B.MR;
  // Never more threads (and per-thread buffers) than work items: threads=4096 on a small
  // problem must not allocate 4096 packed bank blocks.
  const std::int64_t max_items = B.nbb * ((B.batch_rows + B.MC - 1) / B.MC);
  B.T = static_cast<int>(std::min<std::int64_t>(T_requested, std::max<std::int64_t>(1, max_items)));
  return B;
}

// Dot-product tiles (ip, jp) of the MC x NC block at batch row ic: A holds the batch's MR
// query panels, Bpan the block's NR bank panels, both `depth` words deep (W = float, or
// uint32 bf16 pairs), multiplied in depth chunks of KC so a bank micro-panel stays in L1.
template <class W, class Gemm>
void block_gemm(const Blocking& B, Gemm gemm, const W* A, const W* Bpan, std::int64_t depth,
                std::int64_t KC, std::int64_t ic, std::int64_t mpan, std::int64_t npan,
                float* Ct) {
  const std::int64_t MR = B.MR, NR = B.NR;
  for (std::int64_t pc = 0; pc < depth; pc += KC) {
    const std::int64_t kc = std::min(KC, depth - pc);
    for (std::int64_t jp = 0; jp < npan; ++jp) {
      const W* Bpp = Bpan + jp * NR * depth + pc * NR;
      for (std::int64_t ip = 0; ip < mpan; ++ip) {
        const W* App = A + (ic / MR + ip) * MR * depth + pc * MR;
        gemm(kc, App, Bpp, Ct + (ip * B.nc_panels + jp) * MR * NR, pc > 0);
      }
    }
  }
}

// A finished MR x NR tile as handed to a pass (the pass turns dot products into distances).
struct Tile {
  float* c;          // MR x NR dot products of the scaled rows, row stride NR
  const float* qn;   // squared norms of its query rows
  const float* bn;   // squared norms of its NR bank columns (+inf past `cols`)
  std::int64_t qi0;  // batch-local query row of tile row 0
  int rows, cols;    // valid rows (<= MR) and columns (<= NR)
  std::int64_t jb;   // offset of column 0 in the bank block
  std::int64_t j0;   // bank row index of column 0
};

// Exact outputs of one query from its k smallest (exact squared distance, index) pairs,
// ascending: sqrt rounded once to float32, an error past FLT_MAX.
void write_exact(const std::pair<double, std::int64_t>* exact, std::int64_t k, float* dist,
                 std::int64_t* idx) {
  for (std::int64_t e = 0; e < k; ++e) {
    const double d = std::sqrt(exact[e].first);
    if (!(d <= static_cast<double>(FLT_MAX)))
      throw std::invalid_argument(
          "knn: a distance exceeds the float32 range (inputs with magnitudes near "
          "FLT_MAX); rescale queries and bank");
    dist[e] = static_cast<float>(d);
    idx[e] = exact[e].second;
  }
}

// The tile walk of both candidate passes (one copy, so blocking, work split and thread
// independence are the same for both). Per batch of <= QB queries:
//   1. pack the scaled queries into MR panels + squared norms (OpenMP static);
//   2. OpenMP dynamic over work items (bank block bb of NC rows) x (slice qs of the batch's
//      MC query blocks): a thread packs its bank block (NR panels, norms, padded columns
//      +inf) once per run of items on that block, multiplies each MC x NC block
//      (Worker::gemm) and hands every finished MR x NR tile to Worker::tile, which keeps
//      candidates in per-thread state;
//   3. after a barrier, Pass::finish_query merges the threads' candidates of each query,
//      re-ranks them exactly and writes the outputs.
// Each tile value is computed by the same operation sequence whatever the partition, and the
// per-thread states are merged by (value, index), so results do not depend on threads.
//
// Pass interface:
//   begin_batch(q0, qcount)            before the parallel region: reset per-batch state
//   query_panel(ip, P, qn)             after packing query panel ip (P: dim x MR, qn: MR)
//   Worker worker(t)                   thread t's view of the per-thread state, with
//     bank_panel(jp, P, bn, rows)        after packing bank panel jp of the block
//     gemm(B, Ap, Bp, ic, mpan, npan, Ct)  fill the tiles of the block at batch row ic
//                                        (Ap/Bp: the packed float32 panels)
//     tile(const Tile&)                  a tile of dot products, in place
//   finish_query(q0, q)                once per batch query, any thread
//   end_batch(q0, qcount)              after the parallel region
template <class BankT, class Pass>
void walk_tiles(const Kernels& K, const Blocking& B, const Problem<BankT>& p,
                const float* centre, double scale, Pass& pass) {
  const std::int64_t MR = B.MR, NR = B.NR, MC = B.MC, NC = B.NC, dim = p.dim;
  AlignedFloats Ap(static_cast<std::size_t>(B.qpanels_max * MR * dim));
  std::vector<float> qn(static_cast<std::size_t>(B.qpanels_max * MR));
  AlignedFloats Bp_all(static_cast<std::size_t>(B.T * NC * dim));
  AlignedFloats Ct_all(static_cast<std::size_t>(B.T * MC * NC));
  AlignedFloats bn_all(static_cast<std::size_t>(B.T * NC));

  for (std::int64_t q0 = 0; q0 < p.nq; q0 += B.QB) {
    const std::int64_t qcount = std::min(B.QB, p.nq - q0);
    const std::int64_t qpanels = (qcount + MR - 1) / MR;
    const std::int64_t mcb = (qcount + MC - 1) / MC;  // query blocks in this batch
    // Few bank blocks: split the query blocks into nqs slices, for >= 4 T work items.
    std::int64_t nqs = 1;
    if (B.nbb < 4 * B.T) nqs = std::min<std::int64_t>(mcb, (4 * B.T + B.nbb - 1) / B.nbb);
    const std::int64_t n_items = B.nbb * nqs;
    pass.begin_batch(q0, qcount);

    OmpExceptionCapture cap;
#pragma omp parallel num_threads(B.T)
    {
      // 1. pack this batch of queries and their norms
#pragma omp for schedule(static)
      for (std::int64_t ip = 0; ip < qpanels; ++ip) {
        cap.run([&] {
          const int rows = static_cast<int>(std::min(MR, qcount - ip * MR));
          float* P = Ap.p + ip * MR * dim;
          K.pack_f32(p.queries + (q0 + ip * MR) * dim, dim, rows, dim, centre, scale, K.mr, P);
          K.panel_norms(P, dim, K.mr, qn.data() + ip * MR);
          pass.query_panel(ip, P, qn.data() + ip * MR);
        });
      }
      // (implicit barrier)
      // 2. bank blocks x query blocks
      {
        const int t = thread_index();
        float* const Bp = Bp_all.p + t * NC * dim;
        float* const Ct = Ct_all.p + t * MC * NC;
        float* const bn = bn_all.p + t * NC;
        typename Pass::Worker w = pass.worker(t);
        std::int64_t packed_bb = -1;
#pragma omp for schedule(dynamic, 1) nowait
        for (std::int64_t it = 0; it < n_items; ++it) {
          cap.run([&] {
            const std::int64_t bb = it / nqs, qs = it % nqs;
            const std::int64_t b0 = bb * NC;
            const std::int64_t nc = std::min(NC, p.nb - b0);
            const std::int64_t npan = (nc + NR - 1) / NR;
            if (packed_bb != bb) {
              for (std::int64_t jp = 0; jp < npan; ++jp) {
                const int rows = static_cast<int>(std::min(NR, nc - jp * NR));
                float* P = Bp + jp * NR * dim;
                pack_bank(K, p.bank + (b0 + jp * NR) * dim, dim, rows, dim, centre, scale, P);
                K.panel_norms(P, dim, K.nr, bn + jp * NR);
                for (int r = rows; r < K.nr; ++r)
                  bn[jp * NR + r] = std::numeric_limits<float>::infinity();
                w.bank_panel(jp, P, bn + jp * NR, rows);
              }
              packed_bb = bb;
            }
            const std::int64_t blk_lo = qs * mcb / nqs, blk_hi = (qs + 1) * mcb / nqs;
            for (std::int64_t blk = blk_lo; blk < blk_hi; ++blk) {
              const std::int64_t ic = blk * MC;
              const std::int64_t mc = std::min(MC, qcount - ic);
              const std::int64_t mpan = (mc + MR - 1) / MR;
              w.gemm(B, Ap.p, Bp, ic, mpan, npan, Ct);
              for (std::int64_t ip = 0; ip < mpan; ++ip) {
                const int rows = static_cast<int>(std::min(MR, mc - ip * MR));
                const std::int64_t qi0 = ic + ip * MR;  // batch-local query row
                for (std::int64_t jp = 0; jp < npan; ++jp) {
                  const int cols = static_cast<int>(std::min(NR, nc - jp * NR));
                  w.tile(Tile{Ct + (ip * B.nc_panels + jp) * MR * NR, qn.data() + qi0,
                              bn + jp * NR, qi0, rows, cols, jp * NR, b0 + jp * NR});
                }
              }
            }
          });
        }
      }
#pragma omp barrier
      // 3. merge the per-thread candidates, re-rank exactly, write the outputs (dynamic:
      // candidate counts per query vary in the bf16 pass)
#pragma omp for schedule(dynamic, 16)
      for (std::int64_t q = 0; q < qcount; ++q) cap.run([&] { pass.finish_query(q0, q); });
    }
    cap.rethrow();
    pass.end_batch(q0, qcount);
  }
}

// ---- float32 candidate pass ---------------------------------------------------------------

// Per thread and query a sorted top-k of d2~ (tau = its k-th value, compared in SIMD by
// K.finish so only rows with a winner reach the scalar insertion); the threads' lists are
// merged by (d2~, index) and the k winners re-evaluated exactly and re-sorted.
template <class BankT>
class TopKPass {
 public:
  TopKPass(const Kernels& K, const Blocking& B, const Problem<BankT>& p)
      : K_(K), B_(B), p_(p),
        topd_(static_cast<std::size_t>(B.T * B.batch_rows * p.k)),
        topi_(topd_.size()),
        tau_(static_cast<std::size_t>(B.T * B.batch_rows)) {}

  void begin_batch(std::int64_t, std::int64_t) {
    std::fill(topd_.begin(), topd_.end(), std::numeric_limits<float>::infinity());
    std::fill(topi_.begin(), topi_.end(), std::int64_t{-1});
    std::fill(tau_.begin(), tau_.end(), std::numeric_limits<float>::infinity());
  }
  void query_panel(std::int64_t, const float*, const float*) {}

  struct Worker {
    const Kernels& K;
    std::int64_t k, dim;
    float* d;           // batch_rows * k sorted approximate d2
    std::int64_t* i;    // their bank indices (-1: empty)
    float* tau;         // batch_rows thresholds: d[q * k + k - 1]

    void bank_panel(std::int64_t, const float*, const float*, int) {}
    void gemm(const Blocking& B, const float* Ap, const float* Bp, std::int64_t ic,
              std::int64_t mpan, std::int64_t npan, float* Ct) const {
      block_gemm(B, K.gemm, Ap, Bp, dim, B.KC, ic, mpan, npan, Ct);
    }
    void tile(const Tile& tl) {
      std::uint32_t mask = K.finish(tl.c, tl.qn, tl.bn, tau + tl.qi0, tl.rows);
      while (mask) {
        const int r = __builtin_ctz(mask);
        mask &= mask - 1;
        const std::int64_t q = tl.qi0 + r;
        float* D = d + q * k;
        std::int64_t* I = i + q * k;
        const float* row = tl.c + r * K.nr;
        for (std::int64_t j = 0; j < K.nr; ++j) {  // padded columns are +inf: never taken
          if (row[j] < tau[q]) {
            topk_insert(D, I, k, row[j], tl.j0 + j);
            tau[q] = D[k - 1];
          }
        }
      }
    }
  };
  Worker worker(int t) {
    const std::int64_t off = t * B_.batch_rows;
    return Worker{K_, p_.k, p_.dim, topd_.data() + off * p_.k, topi_.data() + off * p_.k,
                  tau_.data() + off};
  }

  void finish_query(std::int64_t q0, std::int64_t q) const {
    const std::int64_t k = p_.k, dim = p_.dim;
    std::vector<std::pair<float, std::int64_t>> cand;
    cand.reserve(static_cast<std::size_t>(B_.T * k));
    for (int t = 0; t < B_.T; ++t) {
      const float* D = topd_.data() + (t * B_.batch_rows + q) * k;
      const std::int64_t* I = topi_.data() + (t * B_.batch_rows + q) * k;
      for (std::int64_t e = 0; e < k && I[e] >= 0; ++e) cand.emplace_back(D[e], I[e]);
    }
    std::partial_sort(cand.begin(), cand.begin() + k, cand.end());
    std::vector<std::pair<double, std::int64_t>> exact(static_cast<std::size_t>(k));
    const float* qrow = p_.queries + (q0 + q) * dim;
    for (std::int64_t e = 0; e < k; ++e) {
      const std::int64_t j = cand[static_cast<std::size_t>(e)].second;
      exact[static_cast<std::size_t>(e)] = {exact_d2(qrow, p_.bank + j * dim, dim), j};
    }
    std::sort(exact.begin(), exact.end());
    write_exact(exact.data(), k, p_.distances + (q0 + q) * k, p_.indices + (q0 + q) * k);
  }
  void end_batch(std::int64_t, std::int64_t) {}

 private:
  const Kernels& K_;
  const Blocking& B_;
  const Problem<BankT>& p_;
  std::vector<float> topd_;        // T * batch_rows * k
  std::vector<std::int64_t> topi_; // T * batch_rows * k
  std::vector<float> tau_;         // T * batch_rows
};

// The drivers' common tail after their argument checks: scale (finiteness check included),
// centre, blocking, then the walk with the pass make_pass(blocking) returns. Centred values
// |x - c| <= 2 max|x| (c is a mean of bank values), so the scale is halved once more to keep
// every packed value fl32(x s - c s) below 1 in magnitude, as the bounds of knn.hpp assume.
template <class BankT, class MakePass>
void scale_and_walk(const Kernels& K, const Problem<BankT>& p, int threads, std::int64_t kc,
                    MakePass make_pass) {
  const int T_requested = resolve_threads(threads);
  const double scale = 0.5 * input_scale(K, p, T_requested);
  if (p.nq == 0) return;
  std::vector<float> centre = bank_centre(p);
  for (float& c : centre) c = static_cast<float>(static_cast<double>(c) * scale);  // |c s| < 0.5
  const Blocking B = make_blocking(K, p.nq, p.nb, T_requested, kc);
  auto pass = make_pass(B);  // guaranteed elision: passes need not be movable
  walk_tiles(K, B, p, centre.data(), scale, pass);
}

template <class BankT>
void knn_driver(const Problem<BankT>& p, int threads, SimdLevel level) {
  check_problem(p);
  const Kernels K = select_kernels(level);
  const std::int64_t kc = K.nr == 32 ? f32_kc_here() : kKC;  // AVX-512 14x32: per CPU
  scale_and_walk(K, p, threads, kc, [&](const Blocking& B) { return TopKPass<BankT>(K, B, p); });
}

#if defined(STRUCTCORE_X86)
// ---- bf16 candidate pass (AVX-512 BF16, see knn.hpp) --------------------------------------


// Tiles of bf16 dot products with the bound E give L <= |q - b|^2 <= U per entry. Per thread
// and query, tau is the k-th smallest U seen and every column with L <= tau is a candidate
// (lists pruned against tau as they grow). The merge takes the global k-th smallest U and
// re-ranks exactly every candidate with L below it. A query whose list outgrows cand_cap
// (masses of near-equal distances, e.g. duplicated rows) leaves this pass and is redone by
// the float32 pass in end_batch, so memory stays bounded by threads * batch * cand_cap.
template <class BankT>
class Bf16Pass {
  using Cands = std::vector<std::pair<float, std::int64_t>>;  // (L, bank index)

 public:
  Bf16Pass(const knn_detail::Bf16Kernels& B16, const Blocking& B, const Problem<BankT>& p,
           int threads)
      : B16_(B16), B_(B), p_(p), threads_(threads),
        D2raw_((p.dim + 1) / 2),
        D2_((D2raw_ + B16.depth_align - 1) / B16.depth_align * B16.depth_align),
        prune_at_(static_cast<std::size_t>(16 * p.k + 64)),
        cand_cap_(static_cast<std::size_t>(512 + 16 * p.k)),
        Aq_(static_cast<std::size_t>(B.qpanels_max * B.MR * D2_)),
        qr_(static_cast<std::size_t>(B.qpanels_max * B.MR)),
        ubuf_(static_cast<std::size_t>(B.T * B.batch_rows * p.k)),
        dummy_(ubuf_.size()),
        tau_(static_cast<std::size_t>(B.T * B.batch_rows)),
        cands_(tau_.size()),
        over_(tau_.size()),
        redo_(static_cast<std::size_t>(B.batch_rows)),
        Bq_all_(static_cast<std::size_t>(B.T * B.NC * D2_)),
        Ut_all_(static_cast<std::size_t>(B.T * B.MR * B.NR)),
        br_all_(static_cast<std::size_t>(B.T * B.NC)) {
    // Error bound constants (scaled units, all |values| < 1): see knn.hpp.
    const double u = 0x1p-24, ub = 0x1p-8;
    auto gamma = [u](double n) { return n * u / (1 - n * u); };
    // The 4.1 u / 2.1 u / 2^-147 terms cover the centring (one float32 rounding of x - c
    // per packed value, and underflow of its scaled value): see knn.hpp.
    const double gd = gamma(static_cast<double>(p.dim));
    c1_ = static_cast<float>(2 * ((2 * ub + ub * ub) * (1 + gd) + gd) * 1.01 + 4.1 * u * (1 + gd));
    c2_ = static_cast<float>(gamma(static_cast<double>(p.dim) + 10) * 1.01 + 8 * u + 2.1 * u * (1 + gd));
    c3_ = static_cast<float>(static_cast<double>(p.dim) * (0x1p-120 + 0x1p-147));
  }

  void begin_batch(std::int64_t, std::int64_t) {
    std::fill(ubuf_.begin(), ubuf_.end(), std::numeric_limits<float>::infinity());
    std::fill(tau_.begin(), tau_.end(), std::numeric_limits<float>::infinity());
    for (auto& c : cands_) c.clear();
    std::fill(over_.begin(), over_.end(), 0);
    std::fill(redo_.begin(), redo_.end(), 0);
  }
  void query_panel(std::int64_t ip, const float* P, const float* qn) {
    for (std::int64_t r = 0; r < B_.MR; ++r) qr_[ip * B_.MR + r] = std::sqrt(qn[r]);
    B16_.to_pairs_a(P, p_.dim, static_cast<int>(B_.MR), D2_, Aq_.data() + ip * B_.MR * D2_);
  }

  struct Worker {
    Bf16Pass& s;
    std::uint32_t* Bq;  // the block's pair panels, NC * D2
    float* Ut;          // MR x NR upper bounds of the current tile
    float* br;          // NC bank norms (0 past the valid rows)
    float* u;           // batch_rows * k smallest U (sorted)
    std::int64_t* ui;   // unused indices for topk_insert
    float* tau;         // batch_rows: u[q * k + k - 1]
    Cands* cand;        // batch_rows candidate lists
    char* over;         // batch_rows: list dropped (redo by the float32 pass)

    void bank_panel(std::int64_t jp, const float* P, const float* bn, int rows) {
      const std::int64_t NR = s.B_.NR;
      for (std::int64_t r = 0; r < NR; ++r) br[jp * NR + r] = r < rows ? std::sqrt(bn[r]) : 0.0f;
      std::uint32_t* panel = Bq + jp * NR * s.D2_;
      s.B16_.to_pairs(P, s.p_.dim, static_cast<int>(NR), panel);
      std::fill(panel + s.D2raw_ * NR, panel + s.D2_ * NR, 0u);  // depth padding (AMX)
    }
    void gemm(const Blocking& B, const float*, const float*, std::int64_t ic, std::int64_t mpan,
              std::int64_t npan, float* Ct) const {
      if (s.B16_.begin) s.B16_.begin();
      block_gemm(B, s.B16_.gemm, s.Aq_.data(), Bq, s.D2_, B.KC / 2, ic, mpan, npan, Ct);
      if (s.B16_.end) s.B16_.end();
    }
    void tile(const Tile& tl) {
      const std::int64_t k = s.p_.k, NR = s.B_.NR;
      std::uint32_t mask = s.B16_.finish(tl.c, Ut, tl.qn, s.qr_.data() + tl.qi0, tl.bn,
                                         br + tl.jb, tl.cols, s.c1_, s.c2_, s.c3_,
                                         tau + tl.qi0, tl.rows);
      while (mask) {
        const int r = __builtin_ctz(mask);
        mask &= mask - 1;
        const std::int64_t q = tl.qi0 + r;
        if (over[q]) continue;
        const float* lrow = tl.c + r * NR;
        const float* urow = Ut + r * NR;
        Cands& cl = cand[q];
        for (int j = 0; j < tl.cols; ++j) {
          if (lrow[j] <= tau[q]) {
            cl.emplace_back(lrow[j], tl.j0 + j);
            if (urow[j] < tau[q]) {
              topk_insert(u + q * k, ui + q * k, k, urow[j], 0);
              tau[q] = u[q * k + k - 1];
            }
          }
        }
        if (cl.size() > s.prune_at_) {
          const float tq = tau[q];
          cl.erase(std::remove_if(cl.begin(), cl.end(),
                                  [tq](const auto& c) { return c.first > tq; }),
                   cl.end());
          if (cl.size() > s.cand_cap_) {
            over[q] = 1;
            Cands().swap(cl);
          }
        }
      }
    }
  };
  Worker worker(int t) {
    const std::int64_t off = t * B_.batch_rows;
    return Worker{*this,
                  Bq_all_.p + t * B_.NC * D2_,
                  Ut_all_.p + t * B_.MR * B_.NR,
                  br_all_.p + t * B_.NC,
                  ubuf_.data() + off * p_.k,
                  dummy_.data() + off * p_.k,
                  tau_.data() + off,
                  cands_.data() + off,
                  over_.data() + off};
  }

  void finish_query(std::int64_t q0, std::int64_t q) {
    const std::int64_t k = p_.k, dim = p_.dim, T = B_.T, rows = B_.batch_rows;
    for (std::int64_t t = 0; t < T; ++t)
      if (over_[static_cast<std::size_t>(t * rows + q)]) {
        redo_[static_cast<std::size_t>(q)] = 1;
        return;
      }
    std::vector<float> us;
    us.reserve(static_cast<std::size_t>(T * k));
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t e = 0; e < k; ++e) us.push_back(ubuf_[(t * rows + q) * k + e]);
    std::nth_element(us.begin(), us.begin() + (k - 1), us.end());
    const float tg = us[static_cast<std::size_t>(k - 1)];
    std::vector<std::pair<double, std::int64_t>> exact;
    const float* qrow = p_.queries + (q0 + q) * dim;
    for (std::int64_t t = 0; t < T; ++t)
      for (const auto& c : cands_[static_cast<std::size_t>(t * rows + q)])
        if (c.first <= tg)
          exact.emplace_back(exact_d2(qrow, p_.bank + c.second * dim, dim), c.second);
    if (static_cast<std::int64_t>(exact.size()) < k)
      throw std::logic_error("knn bf16: fewer candidates than k (internal error)");
    std::partial_sort(exact.begin(), exact.begin() + k, exact.end());
    write_exact(exact.data(), k, p_.distances + (q0 + q) * k, p_.indices + (q0 + q) * k);
  }

  // Queries that overflowed their candidate budget: the float32 pass.
  void end_batch(std::int64_t q0, std::int64_t qcount) {
    const std::int64_t k = p_.k, dim = p_.dim;
    std::vector<std::int64_t> rows;
    for (std::int64_t q = 0; q < qcount; ++q)
      if (redo_[static_cast<std::size_t>(q)]) rows.push_back(q0 + q);
    if (rows.empty()) return;
    const std::int64_t n = static_cast<std::int64_t>(rows.size());
    std::vector<float> sub(static_cast<std::size_t>(n * dim)), sd(static_cast<std::size_t>(n * k));
    std::vector<std::int64_t> si(static_cast<std::size_t>(n * k));
    for (std::int64_t r = 0; r < n; ++r)
      std::copy(p_.queries + rows[r] * dim, p_.queries + (rows[r] + 1) * dim, sub.data() + r * dim);
    knn_driver(Problem<BankT>{sub.data(), n, p_.bank, p_.nb, dim, k, sd.data(), si.data()},
               threads_, SimdLevel::AVX512);
    for (std::int64_t r = 0; r < n; ++r) {
      std::copy(sd.data() + r * k, sd.data() + (r + 1) * k, p_.distances + rows[r] * k);
      std::copy(si.data() + r * k, si.data() + (r + 1) * k, p_.indices + rows[r] * k);
    }
  }

 private:
  const knn_detail::Bf16Kernels B16_;
  const Blocking& B_;
  const Problem<BankT>& p_;
  const int threads_;  // as the caller gave it, for the float32 redo
  const std::int64_t D2raw_;  // pair words per row: ceil(dim / 2)
  const std::int64_t D2_;     // the same rounded up to B16_.depth_align (zero padding)
  float c1_ = 0, c2_ = 0, c3_ = 0;
  const std::size_t prune_at_, cand_cap_;
  std::vector<std::uint32_t> Aq_;   // the batch's query pair panels, qpanels_max * MR * D2
  std::vector<float> qr_;           // their norms
  std::vector<float> ubuf_;         // T * batch_rows * k
  std::vector<std::int64_t> dummy_; // T * batch_rows * k
  std::vector<float> tau_;          // T * batch_rows
  std::vector<Cands> cands_;        // T * batch_rows
  std::vector<char> over_;          // T * batch_rows
  std::vector<char> redo_;          // batch_rows
  AlignedArray<std::uint32_t> Bq_all_;
  AlignedFloats Ut_all_, br_all_;
};

// KC of the bf16 passes (floats; KC / 2 pairs): a 128-pair x 32 bank micro-panel is 16 KiB.
constexpr std::int64_t kBf16KC = 256;

template <class BankT>
void knn_driver_bf16(const Problem<BankT>& p, int threads, KnnPath path,
                     bool emulate_amx = false) {
  check_problem(p);
  knn_detail::Bf16Kernels B16{};
  if (emulate_amx) {
    require(cpu_has_avx512_bf16() && knn_amx_built(),
            "knn: the AMX emulation needs AVX-512 BF16 and an AMX-capable build");
    B16 = knn_detail::kernels_amx_emulated();
  } else if (path == KnnPath::AMX) {
    require(knn_amx_usable(), "knn: AMX-BF16 is not usable on this CPU (see build_info())");
    B16 = knn_detail::kernels_amx();
  } else {
    require(cpu_has_avx512_bf16(), "knn: this CPU has no AVX-512 BF16");
    B16 = knn_detail::kernels_avx512bf16();
  }
  // The float32 AVX-512 kernels pack and scale (panels of the bf16 tile's width: 14 or 32
  // queries, both whole vectors for the packers); the pass converts the panels to bf16 pairs.
  Kernels K = knn_detail::kernels_avx512();
  K.mr = B16.mr;
  K.nr = B16.nr;
  scale_and_walk(K, p, threads, kBf16KC,
                 [&](const Blocking& B) { return Bf16Pass<BankT>(B16, B, p, threads); });
}
#endif
}  // namespace

void knn(const float* queries, std::int64_t n_queries, const float* bank, std::int64_t n_bank,
         std::int64_t dim, std::int64_t k, float* distances, std::int64_t* indices, int threads,
         SimdLevel level) {
  knn_driver(Problem<float>{queries, n_queries, bank, n_bank, dim, k, distances, indices},
             threads, level);
}

void knn_f16(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
             std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
             std::int64_t* indices, int threads, SimdLevel level) {
  knn_driver(
      Problem<std::uint16_t>{queries, n_queries, bank_f16, n_bank, dim, k, distances, indices},
      threads, level);
}

void knn_bf16(const float* queries, std::int64_t n_queries, const float* bank,
              std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
              std::int64_t* indices, int threads) {
#if defined(STRUCTCORE_X86)
  knn_driver_bf16(Problem<float>{queries, n_queries, bank, n_bank, dim, k, distances, indices},
                  threads, KnnPath::AVX512BF16);
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
  knn_driver_bf16(
      Problem<std::uint16_t>{queries, n_queries, bank_f16, n_bank, dim, k, distances, indices},
      threads, KnnPath::AVX512BF16);
#else
  (void)queries, (void)n_queries, (void)bank_f16, (void)n_bank, (void)dim, (void)k,
      (void)distances, (void)indices, (void)threads;
  throw std::invalid_argument("knn: AVX-512 BF16 path not built for this architecture");
#endif
}

void knn_amx(const float* queries, std::int64_t n_queries, const float* bank,
             std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
             std::int64_t* indices, int threads) {
#if defined(STRUCTCORE_X86)
  knn_driver_bf16(Problem<float>{queries, n_queries, bank, n_bank, dim, k, distances, indices},
                  threads, KnnPath::AMX);
#else
  (void)queries, (void)n_queries, (void)bank, (void)n_bank, (void)dim, (void)k, (void)distances,
      (void)indices, (void)threads;
  throw std::invalid_argument("knn: AMX path not built for this architecture");
#endif
}

void knn_f16_amx(const float* queries, std::int64_t n_queries, const std::uint16_t* bank_f16,
                 std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
                 std::int64_t* indices, int threads) {
#if defined(STRUCTCORE_X86)
  knn_driver_bf16(
      Problem<std::uint16_t>{queries, n_queries, bank_f16, n_bank, dim, k, distances, indices},
      threads, KnnPath::AMX);
#else
  (void)queries, (void)n_queries, (void)bank_f16, (void)n_bank, (void)dim, (void)k,
      (void)distances, (void)indices, (void)threads;
  throw std::invalid_argument("knn: AMX path not built for this architecture");
#endif
}

void knn_amx_emulated(const float* queries, std::int64_t n_queries, const float* bank,
                      std::int64_t n_bank, std::int64_t dim, std::int64_t k, float* distances,
                      std::int64_t* indices, int threads) {
#if defined(STRUCTCORE_X86)
  knn_driver_bf16(Problem<float>{queries, n_queries, bank, n_bank, dim, k, distances, indices},
                  threads, KnnPath::AMX, true);
#else
  (void)queries, (void)n_queries, (void)bank, (void)n_bank, (void)dim, (void)k, (void)distances,
      (void)indices, (void)threads;
  throw std::invalid_argument("knn: AMX path not built for this architecture");
#endif
}

// ---- run-time choice -----------------------------------------------------------------------

const char* knn_path_name(KnnPath path) noexcept {
  switch (path) {
    case KnnPath::AMX: return "amx";
    case KnnPath::AVX512BF16: return "avx512bf16";
    case KnnPath::AVX512: return "avx512";
    case KnnPath::AVX2: return "avx2";
    default: return "scalar";
  }
}

namespace {

// Largest k for which the bf16 candidate passes are used: their candidate lists grow with k.
constexpr std::int64_t kBf16MaxK = 64;

const char* tile_of(KnnPath path) {
  switch (path) {
    case KnnPath::AMX: return "32x32 (2x2 AMX tiles of 16x16)";
    case KnnPath::AVX512BF16:
    case KnnPath::AVX512: return "14x32";
    case KnnPath::AVX2: return "6x16";
    default: return "4x8";
  }
}

}  // namespace

KnnChoice knn_choose(const CpuFeatures& cpu, const std::string& request, std::int64_t k,
                     bool amx_built) {
  // What this CPU can run, widest first.
  const bool f32_avx512 = cpu.avx512f && cpu.avx512bw && cpu.avx512dq && cpu.avx512vl &&
                          cpu.fma && cpu.os_avx512;
  const bool f32_avx2 = cpu.avx2 && cpu.fma && cpu.os_avx;
  const bool bf16 = f32_avx512 && cpu.avx512_bf16;
  std::string amx_missing;
  if (!cpu.amx_tile || !cpu.amx_bf16) amx_missing = "no AMX-TILE/AMX-BF16 (cpuid 7.0 EDX 24/22)";
  else if (!cpu.os_amx) amx_missing = "the OS did not enable AMX state (XCR0 bits 17/18)";
  else if (!cpu.amx_permitted)
    amx_missing = "arch_prctl(ARCH_REQ_XCOMP_PERM) was refused, errno " +
                  std::to_string(cpu.amx_perm_errno);
  else if (!bf16) amx_missing = "no AVX-512 BF16 (needed for the bf16 conversions)";
  else if (!amx_built) amx_missing = "this build has no AMX kernel (compiler without -mamx-bf16)";
  const bool amx = amx_missing.empty();

  KnnChoice c;
  std::string notes;
  KnnPath want = KnnPath::AMX;  // no request: the widest path
  if (!request.empty()) {
    if (request == "scalar") want = KnnPath::Scalar;
    else if (request == "avx2") want = KnnPath::AVX2;
    else if (request == "avx512") want = KnnPath::AVX512;
    else if (request == "avx512bf16") want = KnnPath::AVX512BF16;
    else if (request == "amx") want = KnnPath::AMX;
    else notes += "STRUCTCORE_SIMD='" + request + "' is not a level; ignored. ";
  }
  const bool requested = !request.empty() && notes.empty();
  auto lowered = [&](const char* level, const std::string& why) {
    if (requested) notes += std::string("STRUCTCORE_SIMD=") + request + ": " + level + " unavailable (" + why + "), lowered. ";
  };
  // float32 level: the request clamped to the CPU
  KnnPath f32 = f32_avx512 ? KnnPath::AVX512 : f32_avx2 ? KnnPath::AVX2 : KnnPath::Scalar;
  if (static_cast<int>(want) < static_cast<int>(f32)) f32 = want;
  if (want == KnnPath::AVX512 && !f32_avx512) lowered("avx512", "needs AVX-512 F/BW/DQ/VL + FMA and OS state");
  if (want == KnnPath::AVX2 && !f32_avx2) lowered("avx2", "needs AVX2 + FMA and OS state");
  c.f32 = f32;

  // candidate pass
  KnnPath path = f32;
  std::string why;
  if (want == KnnPath::AMX) {
    if (amx && k <= kBf16MaxK) {
      path = KnnPath::AMX;
      why = "AMX-BF16 usable (cpuid, XCR0, arch_prctl): bf16 candidates on tiles + exact re-ranking";
    } else if (!amx) {
      if (request == "amx") lowered("amx", amx_missing);
      want = KnnPath::AVX512BF16;
    }
  }
  if (want == KnnPath::AVX512BF16 && path == f32) {
    if (bf16 && k <= kBf16MaxK) {
      path = KnnPath::AVX512BF16;
      why = std::string("AVX-512 BF16 present") + (amx ? "" : ", no usable AMX (" + amx_missing + ")") +
            ": bf16 candidates (vdpbf16ps, 2x the f32 FMA rate) + exact re-ranking";
    } else if (!bf16 && request == "avx512bf16") {
      lowered("avx512bf16", "needs AVX-512 BF16 and the AVX-512 float32 level");
    }
  }
  if (path == f32) {
    if (k > kBf16MaxK && (amx || bf16) && static_cast<int>(want) >= static_cast<int>(KnnPath::AVX512BF16))
      why = "k > 64: bf16 candidate lists would be long; float32 norms-trick pass";
    else if (requested && static_cast<int>(want) <= static_cast<int>(KnnPath::AVX512))
      why = std::string("float32 norms-trick pass at the requested level");
    else
      why = std::string("float32 norms-trick pass (widest level here; no AVX-512 BF16)");
  }
  c.path = path;
  c.tile = tile_of(path);
  // Depth chunk of the float32 pass (bf16 passes: fixed 128 pairs = 16 KiB bank micro-panel).
  if (f32 == KnnPath::AVX512 && f32_kc(cpu) != kKC) {
    c.kc = f32_kc(cpu);
    why += "; f32 14x32 kc 128: 16 KiB L1-resident bank micro-panel (non-AMD rule, not measured on Intel)";
  } else {
    c.kc = kKC;
    if (f32 == KnnPath::AVX512) why += "; f32 14x32 kc 256 (measured best on AMD Zen 4)";
    else why += std::string("; f32 ") + tile_of(f32) + " kc 256";
  }
  c.reason = notes + why;
  return c;
}

bool knn_amx_built() noexcept {
#if defined(STRUCTCORE_X86)
  return knn_detail::amx_built();
#else
  return false;
#endif
}

namespace {
const std::string& simd_request() {
  static const std::string request = [] {
    const char* env = std::getenv("STRUCTCORE_SIMD");
    return std::string(env ? env : "");
  }();
  return request;
}
}  // namespace

KnnChoice knn_choice(std::int64_t k) {
  KnnChoice c = knn_choose(cpu_features(), simd_request(), k, knn_amx_built());
  if (c.f32 == KnnPath::AVX512 && kc_override()) {
    c.kc = kc_override();
    c.reason += "; kc " + std::to_string(c.kc) + " from STRUCTCORE_KNN_KC";
  }
  return c;
}

bool knn_amx_usable() noexcept {
  try {
    return knn_choose(cpu_features(), "", 1, knn_amx_built()).path == KnnPath::AMX;
  } catch (...) {  // std::bad_alloc building the reason string
    return false;
  }
}

std::string knn_build_note() {
  const KnnChoice c = knn_choice(1);
  return std::string("candidates ") + knn_path_name(c.path) + ", tile " + c.tile + ", f32 " +
         knn_path_name(c.f32) + " kc " + std::to_string(c.kc) + " (" + c.reason + ")";
}

bool knn_prefers_bf16(std::int64_t k) noexcept {
  try {
    const KnnPath p = knn_choice(k).path;
    return p == KnnPath::AVX512BF16 || p == KnnPath::AMX;
  } catch (...) {  // std::bad_alloc building the reason string
    return false;
  }
}

}  // namespace structcore
