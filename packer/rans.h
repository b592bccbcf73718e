// Interleaved rANS as a plane codec: 32 lanes, 32-bit states, 16-bit renormalisation, a static
// order-0 frequency table of 2^8 .. 2^12 slots. Built so that one CUDA warp can decode a stream
// from shared memory (lane i decodes symbols i, i+32, i+64, ...); the byte layout is specified in
// docs/FORMAT-rans.md, and detail::rans_decode_reference (packer/detail/rans_decode.h), the scalar
// path of rans_decode() below, is its executable definition.
//
// Symbols arrive and leave as a packed bit stream: symbol i of a stream of `symbol_bits`-wide
// symbols (8, 4, 3 or 2) occupies bits [i*symbol_bits, (i+1)*symbol_bits) of the little-endian bit
// stream, i.e. byte (i*b)/8 from bit (i*b)%8 upwards, continuing into the next byte for b = 3. For
// b = 8 that is plain bytes. The packed size is rans_packed_bytes() bytes; the bits past the last
// symbol in the last byte are ignored by the encoder and written as zero by the decoder.
//
// All memory is host memory. Nothing here keeps a pointer past the call.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace wpack {

inline constexpr uint32_t kRansLanes = 32;          // interleaved states = one warp
inline constexpr uint32_t kRansMinPrecision = 8;    // table slots 2^8 .. 2^12 (4 bytes each on the GPU)
inline constexpr uint32_t kRansMaxPrecision = 12;
inline constexpr uint64_t kRansMaxSymbols = uint64_t{1} << 32;  // per stream; a tile is far below

// Bytes of a packed stream of `symbol_count` symbols of `symbol_bits` bits: ceil(count*bits/8).
// Throws Error(kInvalidArgument) if symbol_bits is not 8, 4, 3 or 2 or symbol_count > kRansMaxSymbols.
uint64_t rans_packed_bytes(uint64_t symbol_count, uint32_t symbol_bits);

// Upper bound of rans_encode()'s output size in bytes: 1 + rans_packed_bytes() (the stored mode).
uint64_t rans_max_stream_bytes(uint64_t symbol_count, uint32_t symbol_bits);

// A frequency table shared by many streams (e.g. one per tensor and plane), so that small tiles
// do not each pay for their own table. freq[s] for every s < 2^symbol_bits; the non-zero entries
// sum to exactly 2^precision. Streams coded with it do not contain it: the caller stores
// serialize_rans_table() once and passes the same table to rans_decode().
struct RansTable {
  uint32_t symbol_bits = 8;
  uint32_t precision = kRansMaxPrecision;
  std::vector<uint32_t> freq;  // size 2^symbol_bits
};

// Builds the table that minimises the coded size of data with this histogram (histogram.size()
// == 2^symbol_bits, counts of each symbol). Symbols with count 0 get frequency 0 and cannot be
// coded with the table. Throws Error(kInvalidArgument) on a bad size or an all-zero histogram.
RansTable build_rans_table(std::span<const uint64_t> histogram, uint32_t symbol_bits);

// Byte form of a table (docs/FORMAT-rans.md, "shared table"); deserialize validates it fully and
// throws Error(kCorrupt) on anything malformed, including trailing bytes.
std::vector<uint8_t> serialize_rans_table(const RansTable& table);
RansTable deserialize_rans_table(std::span<const uint8_t> bytes, uint32_t symbol_bits);

// Encodes `symbol_count` symbols of `symbol_bits` bits read from `packed` (exactly
// rans_packed_bytes() bytes) into a self-contained stream of at most rans_max_stream_bytes()
// bytes: rANS with the stream's own table, a constant run, or the packed bytes stored raw,
// whichever is smallest. With `shared` (same symbol_bits), coding with the shared table is also
// tried and used when smaller; the stream then needs the same table to decode.
// Deterministic: the same bytes for the same input (and table), always.
// Throws Error(kInvalidArgument) on a bad symbol_bits, count, or packed size, or a shared table
// whose symbol_bits differs.
std::vector<uint8_t> rans_encode(std::span<const uint8_t> packed, uint64_t symbol_count, uint32_t symbol_bits,
                                 const RansTable* shared = nullptr);

// The decoder (its scalar path, detail::rans_decode_reference in packer/detail/rans_decode.h, is the
// definition of the format; where the CPU has AVX-512F (else AVX2), the steps in which all 32 lanes
// decode run as vectors of 16 (8) lanes, with the same results and errors). Decodes `stream` into packed_out,
// which must be exactly rans_packed_bytes(symbol_count, symbol_bits) bytes (else kInvalidArgument).
// Safe on any input: never reads outside `stream` nor writes outside `packed_out`; a malformed
// stream (bad mode, table, sizes, a read past the end, final states that are not the initial
// state, unconsumed bytes, or a shared-table stream without `shared`) throws Error(kCorrupt)
// with a one-line message without file context (the caller adds file, tensor and tile).
// packed_out's contents are unspecified after a throw.
void rans_decode(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                 std::span<uint8_t> packed_out, const RansTable* shared = nullptr);

// The table precision p that decoding `stream` needs (a decode table of 2^p entries), read from its
// header alone: kRansMinPrecision .. kRansMaxPrecision for a rANS stream (modes 1 and 3), 0 for a
// stored or constant stream and for a header that is not well formed (rans_decode then rejects
// the stream). Never reads outside `stream`. For sizing GPU shared memory before decoding.
uint32_t rans_stream_precision(std::span<const uint8_t> stream);

}  // namespace wpack
