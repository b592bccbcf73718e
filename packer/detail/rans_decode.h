// The rANS decoder's scalar path (packer/rans.h), for tests, fuzzing and benchmarks that check the
// fast decoder against it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "formats/error.h"
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

// The signature of rans_decode and of the two above.
using RansDecodeFn = void (*)(std::span<const uint8_t>, uint64_t, uint32_t, std::span<uint8_t>, const RansTable*);

// Runs `decoder` into `out` (sized to rans_packed_bytes and filled with 0xA5 first): "" when the
// stream decodes, else the error's code and message; so that a caller can require every path to
// end the same way, with the same symbols or the same error.
inline std::string rans_decode_outcome(RansDecodeFn decoder, std::span<const uint8_t> stream, uint64_t symbol_count,
                                       uint32_t symbol_bits, const RansTable* shared, std::vector<uint8_t>& out) {
  out.assign(rans_packed_bytes(symbol_count, symbol_bits), 0xA5);
  try {
    decoder(stream, symbol_count, symbol_bits, out, shared);
  } catch (const Error& e) {
    return std::to_string(static_cast<int>(e.code())) + " " + e.what();
  }
  return "";
}

}  // namespace wpack::detail
