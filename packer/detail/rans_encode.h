// The rANS encoder's other paths (packer/rans.h), for tests and benchmarks that check the fast
// encoder against them. Every path writes the same bytes as rans_encode(); same arguments, same
// errors.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "packer/rans.h"

namespace wpack::detail {

// The reference encoder: the table quantiser with linear scans and libm log2 calls in the precision
// estimate, and the scalar main loop over lanes. What rans_encode()'s output is defined by.
std::vector<uint8_t> rans_encode_reference(std::span<const uint8_t> packed, uint64_t symbol_count,
                                           uint32_t symbol_bits, const RansTable* shared = nullptr);

// rans_encode()'s fast estimate with the scalar main loop: what a CPU without AVX2 runs.
std::vector<uint8_t> rans_encode_fast_scalar(std::span<const uint8_t> packed, uint64_t symbol_count,
                                             uint32_t symbol_bits, const RansTable* shared = nullptr);

// rans_encode()'s fast path with the AVX2 main loop even where AVX-512 is there (so that both
// loops can be tested on one machine); the scalar loop where the CPU has no AVX2.
std::vector<uint8_t> rans_encode_avx2(std::span<const uint8_t> packed, uint64_t symbol_count,
                                      uint32_t symbol_bits, const RansTable* shared = nullptr);

// The main loops rans_encode() and rans_decode() run on this CPU (x86-64: checked once at run
// time; both use the same instruction sets).
enum class RansSimd { kNone, kAvx2, kAvx512 };
RansSimd rans_simd();

}  // namespace wpack::detail
