// Fuzz surface: the interleaved rANS plane codec (packer/rans.h, docs/FORMAT-rans.md).
//
// Input: mode byte (bits 0-1: symbol bits 8/4/3/2; bit 2: a shared table; bit 3: round trip;
// bit 4: table).
//   decode:     u32 symbol count (mod 2^20 + 1); with a shared table, a u16 length and that many
//               table bytes (deserialize_rans_table); the rest is the stream. rans_decode, its AVX2
//               loop and the scalar reference decoder must give the same symbols or the same error; a stream
//               that decodes must leave the padding bits of the last byte zero.
//   round trip: the rest is a packed symbol stream (its whole bytes; the symbol count is a u16 from
//               the input, capped by what the bytes hold). rans_encode, with a table built from the
//               symbols' histogram and passed through serialize/deserialize when bit 2 is set, then
//               rans_decode must give the symbols back, in at most rans_max_stream_bytes; the
//               reference encoder and the fast one with the scalar and the AVX2 main loop
//               (packer/detail/rans_encode.h) must write the same bytes.
//   table (bit 4): 2^bits u32 symbol counts from the input; build_rans_table must give a table whose
//               frequencies sum to 2^precision, with freq 0 exactly for the absent symbols, that
//               survives serialize/deserialize.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "formats/error.h"
#include "fuzz/harness.h"
#include "packer/detail/rans_decode.h"
#include "packer/detail/rans_encode.h"
#include "packer/rans.h"

namespace wpack::fuzz {
namespace {

constexpr uint32_t kSymbolBits[4] = {8, 4, 3, 2};

// Clears the bits past `count` symbols in the last byte (the encoder ignores them).
void clear_padding(std::vector<uint8_t>& packed, uint64_t count, uint32_t bits) {
  const uint32_t used = static_cast<uint32_t>((count * bits) % 8);
  if (used != 0 && !packed.empty()) packed.back() &= static_cast<uint8_t>((1u << used) - 1);
}

void decode(Input& in, uint32_t bits, bool with_table) {
  const uint64_t count = in.u32() % ((uint64_t{1} << 20) + 1);
  std::optional<RansTable> table;
  if (with_table) {
    const Bytes table_bytes = in.bytes(in.u16());
    try {
      table = deserialize_rans_table(table_bytes, bits);
    } catch (const Error&) {
    }
  }
  const Bytes stream = in.rest();
  // rans_decode, the scalar reference decoder and the AVX2 loop (run even on an AVX-512 CPU) must
  // agree: the same symbols, or the same error (code and message)
  const RansTable* shared = table ? &*table : nullptr;
  std::vector<uint8_t> out, ref, avx2;
  const std::string ref_error = detail::rans_decode_outcome(detail::rans_decode_reference, stream, count, bits, shared, ref);
  if (detail::rans_decode_outcome(rans_decode, stream, count, bits, shared, out) != ref_error)
    fail("rans", "rans_decode and the reference decoder disagree on the stream");
  if (detail::rans_decode_outcome(detail::rans_decode_avx2, stream, count, bits, shared, avx2) != ref_error)
    fail("rans", "the AVX2 decoder and the reference decoder disagree on the stream");
  if (!ref_error.empty()) return;
  if (out != ref || avx2 != ref) fail("rans", "rans_decode, its AVX2 loop and the reference decoder decode different symbols");
  std::vector<uint8_t> cleared = out;
  clear_padding(cleared, count, bits);
  if (cleared != out) fail("rans", "decoded stream has non-zero padding bits");
}

void round_trip(Input& in, uint32_t bits, bool with_table) {
  const uint16_t wanted = in.u16();
  const Bytes rest = in.rest();
  const uint64_t count = std::min<uint64_t>(wanted, rest.size() * 8 / bits);
  std::vector<uint8_t> packed(rest.begin(), rest.begin() + rans_packed_bytes(count, bits));
  clear_padding(packed, count, bits);

  std::optional<RansTable> table;
  if (with_table && count > 0) {
    std::vector<uint64_t> histogram(size_t{1} << bits, 0);
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t bit = i * bits;
      uint32_t v = packed[bit / 8];
      if (bit / 8 + 1 < packed.size()) v |= uint32_t{packed[bit / 8 + 1]} << 8;
      ++histogram[(v >> (bit % 8)) & ((1u << bits) - 1)];
    }
    const RansTable built = build_rans_table(histogram, bits);
    table = deserialize_rans_table(serialize_rans_table(built), bits);
    if (table->freq != built.freq || table->precision != built.precision)
      fail("rans", "shared table changed through serialize/deserialize");
  }
  const RansTable* shared = table ? &*table : nullptr;
  const std::vector<uint8_t> stream = rans_encode(packed, count, bits, shared);
  if (stream.size() > rans_max_stream_bytes(count, bits)) fail("rans", "stream larger than rans_max_stream_bytes");
  // every encoder path writes the reference encoder's bytes (packer/detail/rans_encode.h)
  if (detail::rans_encode_reference(packed, count, bits, shared) != stream)
    fail("rans", "rans_encode differs from the reference encoder");
  if (detail::rans_encode_fast_scalar(packed, count, bits, shared) != stream)
    fail("rans", "the fast estimate with the scalar main loop differs from rans_encode");
  if (detail::rans_encode_avx2(packed, count, bits, shared) != stream)
    fail("rans", "the AVX2 main loop differs from rans_encode");
  std::vector<uint8_t> back(packed.size(), 0xA5);
  rans_decode(stream, count, bits, back, shared);
  if (back != packed) fail("rans", "round trip changed the symbols");
}

void table(Input& in, uint32_t bits) {
  std::vector<uint64_t> histogram(size_t{1} << bits);
  uint64_t total = 0;
  for (auto& count : histogram) {
    const uint32_t value = in.u32();
    count = value >> (in.u8() % 32);  // counts of every magnitude, many of them small
    total += count;
  }
  if (total == 0) return;  // refused with kInvalidArgument by contract
  const RansTable built = build_rans_table(histogram, bits);
  if (built.precision < kRansMinPrecision || built.precision > kRansMaxPrecision) fail("rans", "table precision out of range");
  if (built.freq.size() != histogram.size()) fail("rans", "table of the wrong size");
  uint64_t sum = 0;
  for (size_t s = 0; s < histogram.size(); ++s) {
    if ((built.freq[s] == 0) != (histogram[s] == 0)) fail("rans", "frequency 0 for a present symbol or not 0 for an absent one");
    sum += built.freq[s];
  }
  if (sum != (uint64_t{1} << built.precision)) fail("rans", "frequencies do not sum to 2^precision");
  const RansTable back = deserialize_rans_table(serialize_rans_table(built), bits);
  if (back.freq != built.freq || back.precision != built.precision) fail("rans", "table changed through serialize/deserialize");
}

}  // namespace

void rans(Bytes data) {
  Input in(data);
  const uint8_t mode = in.u8();
  const uint32_t bits = kSymbolBits[mode & 3];
  const bool with_table = (mode & 4) != 0;
  if (mode & 16) table(in, bits);
  else if (mode & 8) round_trip(in, bits, with_table);
  else decode(in, bits, with_table);
}

}  // namespace wpack::fuzz
