// The rANS decoder's scalar path (packer/rans.h), for tests and benchmarks that check the fast
// decoder against it.
#pragma once

#include <cstdint>
#include <span>

#include "packer/rans.h"

namespace wpack::detail {

// The scalar reference decoder, the definition of the format: rans_decode() without its AVX-512
// loop. Same arguments, same results, same errors.
void rans_decode_reference(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                           std::span<uint8_t> packed_out, const RansTable* shared = nullptr);

// Whether rans_decode() runs its AVX-512F loop on this CPU (x86-64, checked once at run time).
bool rans_decode_simd();

}  // namespace wpack::detail
