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

// True when rans_encode() runs its main loop with AVX2 on this CPU (x86-64, checked once).
bool rans_encode_uses_simd();

}  // namespace wpack::detail
