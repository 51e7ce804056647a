// Fuzz harness of the model-file reader (structcore::Scorer::from_memory and
// structcore::parse_npy) and of the C ABI loader. Every input must either load or fail with
// structcore::FormatError (C ABI: STRUCTCORE_ERR_FORMAT); anything else (a crash, a sanitizer
// report, another exception) is a bug.
//
// libFuzzer (clang):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Icpp/include \
//     tests/fuzz/fuzz_model_reader.cpp -L<prefix>/lib -lstructcore_core -fopenmp -o fuzz_model
//   ./fuzz_model corpus/            (seed the corpus with files written by Detector.save)
// Standalone (any compiler; link a library built with -DSTRUCTCORE_SANITIZE=address,undefined):
//   c++ -std=c++17 -g -DSTRUCTCORE_FUZZ_MAIN -fsanitize=address,undefined -Icpp/include \
//     tests/fuzz/fuzz_model_reader.cpp build-asan/libstructcore_core.a -fopenmp -o fuzz_model
//   ./fuzz_model model.npz 20000    (random byte flips, truncations and splices of the seed)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "structcore/npy.hpp"
#include "structcore/scorer.hpp"
#include "structcore/structcore.h"

#ifdef STRUCTCORE_FUZZ_MAIN
#include <cstring>
#include <string>

#include "../../cpp/src/model_detail.hpp"  // private: crc32, read_stored_zip (in the library)
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const structcore::Scorer s = structcore::Scorer::from_memory(data, size, "<fuzz>");
    const structcore::ModelInfo& mi = s.info();
    // A model that loads must also score (one all-zero image, small models only).
    if (mi.grid_h * mi.grid_w * mi.feature_dim <= (1 << 16) && mi.crop <= 256) {
      std::vector<float> f(static_cast<std::size_t>(mi.grid_h * mi.grid_w * mi.feature_dim), 0.f);
      (void)s.score(f.data(), 1, mi.grid_h, mi.grid_w, mi.feature_dim, 1);
    }
  } catch (const structcore::FormatError&) {
  }
  try {
    (void)structcore::parse_npy(data, size, "<fuzz>");
  } catch (const structcore::FormatError&) {
  }
  structcore_scorer* h = nullptr;
  const int rc = structcore_scorer_create_from_memory(data, size, &h);
  if (rc != STRUCTCORE_OK && rc != STRUCTCORE_ERR_FORMAT) {
    std::fprintf(stderr, "unexpected status %d: %s\n", rc, structcore_last_error());
    std::abort();
  }
  structcore_scorer_destroy(h);
  return 0;
}

#ifdef STRUCTCORE_FUZZ_MAIN
int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SEED_FILE [ITERATIONS] [RNG_SEED]\n", argv[0]);
    return 1;
  }
  std::ifstream in(argv[1], std::ios::binary);
  const std::vector<std::uint8_t> seed((std::istreambuf_iterator<char>(in)),
                                       std::istreambuf_iterator<char>());
  const long iterations = argc > 2 ? std::atol(argv[2]) : 10000;
  std::mt19937_64 rng(argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1);
  LLVMFuzzerTestOneInput(seed.data(), seed.size());
  // Entries of the seed, to mutate inside them and fix the CRC-32 (reaches the .npy and JSON
  // parsers and the model checks instead of stopping at the CRC).
  const auto entries = structcore::detail::read_stored_zip(seed.data(), seed.size(), "seed");
  for (long it = 0; it < iterations; ++it) {
    std::vector<std::uint8_t> d = seed;
    const int kind = static_cast<int>(rng() % 8);
    if (kind >= 4 && !entries.empty()) {
      const auto& e = entries[rng() % entries.size()];
      if (e.size == 0) continue;
      // mostly the first 160 bytes (the .npy header, the JSON text of the metadata)
      const std::uint64_t span = kind == 7 ? e.size : std::min<std::uint64_t>(e.size, 160);
      const int m = 1 + static_cast<int>(rng() % 4);
      for (int j = 0; j < m; ++j) {
        std::uint8_t& b = d[e.offset + rng() % span];
        b = kind == 4 ? static_cast<std::uint8_t>(rng()) : b ^ static_cast<std::uint8_t>(1u << (rng() % 8));
      }
      const std::uint32_t crc = structcore::detail::crc32(d.data() + e.offset, e.size);
      for (std::size_t p = 0; p + 46 <= d.size(); ++p) {  // patch the central-directory CRC
        if (std::memcmp(d.data() + p, "PK\x01\x02", 4) != 0) continue;
        const std::size_t nlen = d[p + 28] | (d[p + 29] << 8);
        if (p + 46 + nlen <= d.size() && nlen == e.name.size() &&
            std::memcmp(d.data() + p + 46, e.name.data(), nlen) == 0)
          for (int k = 0; k < 4; ++k) d[p + 16 + k] = static_cast<std::uint8_t>(crc >> (8 * k));
      }
      LLVMFuzzerTestOneInput(d.data(), d.size());
      continue;
    }
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int j = 0; j < n && !d.empty(); ++j) {
      const std::size_t pos = rng() % d.size();
      if (kind == 0) d[pos] ^= static_cast<std::uint8_t>(1 + rng() % 255);       // flip
      else if (kind == 1) d[pos] = static_cast<std::uint8_t>(rng());             // overwrite
      else if (kind == 2) d.resize(pos);                                          // truncate
      else d.insert(d.begin() + pos, static_cast<std::uint8_t>(rng()));           // insert
    }
    LLVMFuzzerTestOneInput(d.data(), d.size());
  }
  std::printf("%ld inputs, no failure\n", iterations);
  return 0;
}
#endif
