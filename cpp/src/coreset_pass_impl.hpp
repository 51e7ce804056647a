// Private to cpp/src/coreset*.cpp: the generic (scalar) fused pass, included by coreset.cpp.
// Kept header-only so that its canonical summation order sits next to the SIMD versions'
// documentation in structcore/coreset.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "structcore/coreset.hpp"

namespace structcore::detail {

inline float load_as_float(float x) noexcept { return x; }
inline float load_as_float(std::uint16_t h) noexcept { return half_to_float(h); }

template <class T>
ChunkBest coreset_pass_scalar(const T* points, std::int64_t dim, const float* center,
                              std::int64_t begin, std::int64_t end, float* min_dist) noexcept {
  ChunkBest best{-INFINITY, -1};
  for (std::int64_t i = begin; i < end; ++i) {
    const T* row = points + i * dim;
    float acc[16] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f,
                     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (std::int64_t j = 0; j < dim; ++j) {
      const float diff = load_as_float(row[j]) - center[j];
      const float sq = diff * diff;  // separate statements: no contraction into an FMA
      acc[j & 15] = acc[j & 15] + sq;
    }
    for (int width = 8; width >= 1; width /= 2)
      for (int l = 0; l < width; ++l) acc[l] = acc[l] + acc[l + width];
    const float d = acc[0];
    float m = min_dist[i];
    if (d < m) {
      m = d;
      min_dist[i] = d;
    }
    if (m > best.value) {
      best.value = m;
      best.index = i;
    }
  }
  return best;
}

}  // namespace structcore::detail
