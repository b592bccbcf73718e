// splitmix64 (Steele, Lea and Flood 2014): a small, fast 64-bit generator whose stream is the same
// on every platform, for reproducible pseudo-random inputs (the GPU verify's activations; the
// tests' and benchmarks' synthetic weights, tests/synthetic_weights.h).
#pragma once

#include <cstdint>

namespace wpack::detail {

// The next value of the stream whose state is `state` (advanced).
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace wpack::detail
