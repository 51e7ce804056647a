// structcore._core.anomaly_map: thin binding of structcore::anomaly_map (postprocess.hpp).
// structcore.kernels.anomaly_map validates and converts first; this layer only re-checks what
// would make the kernel read or write out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "structcore/common.hpp"
#include "structcore/postprocess.hpp"

namespace py = pybind11;

namespace {

// Large outputs (a batch of maps: 256 x 224 x 224 is 49 MiB) are allocated on 2 MiB
// boundaries and advised as transparent huge pages on Linux, and the most recently released
// block is kept for the next call. First-touch page faults cost more than the filtering itself
// (measured: ~3.5 us per 4 KiB page on a VM, 45 ms for 49 MiB against ~10 ms of filtering);
// huge pages cut that ~4x, and reuse removes it for the common loop over equally sized
// batches. At most one block (<= kMaxKeptBytes) stays allocated after its array is freed.
// Smaller outputs, other systems, or a failed aligned allocation use NumPy's allocator.
#if defined(__linux__) && defined(MADV_HUGEPAGE)
constexpr std::size_t kHugePage = std::size_t(2) << 20;
constexpr std::size_t kMinBytes = std::size_t(4) << 20;
constexpr std::size_t kMaxKeptBytes = std::size_t(64) << 20;  // bounded: a library must not hoard memory

struct Block {
  void* data;
  std::size_t bytes;  // a multiple of kHugePage
};

class BlockPool {
public:
  // A kept block of at least `bytes` (and at most twice that), or a new one; nullptr when
  // the allocation fails.
  Block* take(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (kept_ != nullptr && kept_->bytes >= bytes && kept_->bytes <= 2 * bytes) {
        Block* b = kept_;
        kept_ = nullptr;
        return b;
      }
    }
    void* data = std::aligned_alloc(kHugePage, bytes);
    if (data == nullptr) return nullptr;
    madvise(data, bytes, MADV_HUGEPAGE);  // advisory: failure only costs speed
    return new Block{data, bytes};
  }
  // Called when the owning array dies: keep the block, free the one kept before.
  void give(Block* b) noexcept {
    Block* drop = b;
    if (b->bytes <= kMaxKeptBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      drop = kept_;
      kept_ = b;
    }
    if (drop != nullptr) {
      std::free(drop->data);
      delete drop;
    }
  }

private:
  std::mutex mutex_;
  Block* kept_ = nullptr;
};

BlockPool& block_pool() {
  static BlockPool* pool = new BlockPool;  // never destroyed: arrays may outlive statics
  return *pool;
}
#endif

py::array_t<float> allocate_maps(std::int64_t n, std::int64_t height, std::int64_t width) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const std::size_t bytes = static_cast<std::size_t>(n * height * width) * sizeof(float);
  if (bytes >= kMinBytes) {
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    if (Block* block = block_pool().take(rounded)) {
      py::capsule owner(block, [](void* p) { block_pool().give(static_cast<Block*>(p)); });
      const auto f = static_cast<py::ssize_t>(sizeof(float));
      return py::array_t<float>({n, height, width}, {height * width * f, width * f, f},
                                static_cast<float*>(block->data), owner);
    }
  }
#endif
  return py::array_t<float>({n, height, width});
}

using Scores = py::array_t<float, py::array::c_style>;

struct Grids {
  std::int64_t n, h, w;
};

// What keeps the kernel inside its buffers for an (n, h, w) input and (n, height, width)
// output; structcore.kernels.anomaly_map validates everything first, with better messages.
Grids check_shapes(const Scores& patch_scores, std::int64_t height, std::int64_t width) {
  structcore::require(patch_scores.ndim() == 3,
                      "anomaly_map: patch_scores must be 3-dimensional (n_maps, h, w)");
  const Grids g{patch_scores.shape(0), patch_scores.shape(1), patch_scores.shape(2)};
  structcore::require(g.n >= 1 && g.h >= 1 && g.w >= 1,
                      "anomaly_map: patch_scores must not be empty");
  structcore::require(height >= 1 && width >= 1 && height <= structcore::kAnomalyMapMaxSide &&
                          width <= structcore::kAnomalyMapMaxSide,
                      "anomaly_map: size must be in [1, 16384] per side");
  structcore::require(g.n <= structcore::kAnomalyMapMaxElements / (height * width),
                      "anomaly_map: n_maps * H * W must be <= 2**30");
  return g;
}

void run_kernel(const Scores& patch_scores, const Grids& g, float* dst, std::int64_t height,
                std::int64_t width, double sigma, int threads) {
  const float* src = patch_scores.data();
  py::gil_scoped_release release;
  structcore::anomaly_map(src, g.n, g.h, g.w, dst, height, width, sigma, threads);
}

py::array_t<float> anomaly_map_binding(const Scores& patch_scores, std::int64_t height,
                                       std::int64_t width, double sigma, int threads) {
  const Grids g = check_shapes(patch_scores, height, width);  // before allocating
  py::array_t<float> maps = allocate_maps(g.n, height, width);
  run_kernel(patch_scores, g, maps.mutable_data(), height, width, sigma, threads);
  return maps;
}

// The same kernel writing into a caller's array (structcore.kernels.anomaly_map(out=...)).
// The Python layer checks shape, dtype, layout, writeability and overlap.
void anomaly_map_into_binding(const Scores& patch_scores, Scores& maps, double sigma,
                              int threads) {
  structcore::require(maps.ndim() == 3, "anomaly_map: out must be 3-dimensional");
  const Grids g = check_shapes(patch_scores, maps.shape(1), maps.shape(2));
  structcore::require(maps.shape(0) == g.n, "anomaly_map: out must hold one map per grid");
  float* dst = maps.mutable_data();  // throws (-> ValueError) when read-only
  run_kernel(patch_scores, g, dst, maps.shape(1), maps.shape(2), sigma, threads);
}

}  // namespace

void bind_anomaly_map(py::module_& m) {
  m.attr("ANOMALY_MAP_MAX_SIDE") = structcore::kAnomalyMapMaxSide;
  m.attr("ANOMALY_MAP_MAX_ELEMENTS") = structcore::kAnomalyMapMaxElements;
  m.attr("ANOMALY_MAP_MAX_SIGMA") = structcore::kAnomalyMapMaxSigma;
  m.def("anomaly_map", &anomaly_map_binding, py::arg("patch_scores").noconvert(),
        py::arg("height"), py::arg("width"), py::arg("sigma"), py::arg("threads"),
        "Bilinear resize (torch align_corners=False) + Gaussian blur (scipy, reflect) of "
        "(n_maps, h, w) float32 C-contiguous patch scores to (n_maps, height, width) float32. "
        "Private: use structcore.kernels.anomaly_map.");
  m.def("anomaly_map_into", &anomaly_map_into_binding, py::arg("patch_scores").noconvert(),
        py::arg("out").noconvert(), py::arg("sigma"), py::arg("threads"),
        "anomaly_map writing into out, an (n_maps, height, width) float32 C-contiguous "
        "writeable array. Private: use structcore.kernels.anomaly_map(out=...).");
}
