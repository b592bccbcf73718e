// The rANS decoder's scalar path (packer/rans.h), for tests and benchmarks that check the fast
// decoder against it.
#pragma once

#include <cstdint>
#include <span>

#include "packer/rans.h"

namespace wpack::detail {

// The scalar reference decoder, the definition of the format: rans_decode() without its AVX-512
// or AVX2 loop. Same arguments, same results, same errors (also for the path below).
void rans_decode_reference(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                           std::span<uint8_t> packed_out, const RansTable* shared = nullptr);

// rans_decode() runs the loop detail::rans_simd() names (packer/detail/rans_encode.h).
// rans_decode()'s AVX2 loop even where AVX-512F is there (so that both loops can be tested on one
// machine); the scalar loop where the CPU has no AVX2.
void rans_decode_avx2(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                      std::span<uint8_t> packed_out, const RansTable* shared = nullptr);


}  // namespace wpack::detail
