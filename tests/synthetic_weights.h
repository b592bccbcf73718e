// Deterministic synthetic weights for tests and benchmarks (header-only: tests/ and bench/ both
// include it). splitmix64 as the generator, Box-Muller for N(0, stddev^2); the same seed gives the
// same values on every machine with the same libm.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "verify/detail/splitmix64.h"

namespace wpack::test {

using wpack::detail::splitmix64;

// n values from N(0, stddev^2).
inline std::vector<float> gaussian(size_t n, float stddev, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed;
  for (size_t i = 0; i < n; i += 2) {
    const double u1 = ((splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    const double u2 = (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
    const double r = std::sqrt(-2.0 * std::log(u1));
    v[i] = static_cast<float>(r * std::cos(2 * M_PI * u2) * stddev);
    if (i + 1 < n) v[i + 1] = static_cast<float>(r * std::sin(2 * M_PI * u2) * stddev);
  }
  return v;
}

}  // namespace wpack::test
