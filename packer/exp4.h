// Codec 3, exp4: fixed-width exponent codes for lossless BF16 and F32 tiles (byte-exact
// specification: docs/FORMAT.md "Codec 3, exp4"; format v4 and later).
//
// exp4 works on a tile already split by the floatplanes filter (packer/filters.h): for BF16 and F32
// plane 0 is the exponent byte of every element. Those cluster in trained weights, so exp4 stores
// each as its 4-bit offset from a per-tile base (window [base, base + 15]) and the few outside the
// window as escapes; the other planes (sign and mantissa) are stored as they are. Stored bytes of a
// tile of n elements of e bytes (e = 2 or 4):
//
//   [16-byte header: u8 base <= 240, 3 zero bytes, u32 E (escapes), 8 zero bytes]
//   [planes 1 .. e-1, n bytes each]
//   [ceil(n/2) bytes of codes: element i in the low nibble of byte i/2 when i is even, the high
//    nibble when odd; the last high nibble 0 when n is odd]
//   [E u32 escape indices, strictly increasing, < n] [E u8 escape values, outside the window]
//
// Plane-0 byte i = base + code_i, except at escape j: value[j] (and code_i = 0 there). The size is
// exactly exp4_stored_bytes(n, e, E). There are no per-plane sizes (no plane directory): a GPU finds
// every part of a tile from n and E alone.
//
// All memory is host memory. Nothing here keeps a pointer past the call.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace wpack {

inline constexpr uint32_t kExp4HeaderBytes = 16;
inline constexpr uint32_t kExp4Window = 16;     // plane-0 values [base, base + 15] have a code
inline constexpr uint32_t kExp4MaxBase = 240;   // so that base + 15 <= 255
// Escape indices are u32: a tile holds at most this many elements (a .wpk tile at most 2^24).
inline constexpr uint64_t kExp4MaxElements = 0xFFFFFFFFu;

// Whether exp4 takes elements of `elem_size` bytes: 2 (BF16) and 4 (F32).
bool exp4_elem_size_ok(uint32_t elem_size);

// The exp4 stored size, in bytes, of a tile of `elements` elements of `elem_size` bytes with
// `escapes` escapes: 16 + (elem_size - 1) * elements + ceil(elements / 2) + 5 * escapes.
// Throws Error(kInvalidArgument) when elem_size is not 2 or 4, escapes > elements, or elements >
// kExp4MaxElements.
uint64_t exp4_stored_bytes(uint64_t elements, uint32_t elem_size, uint64_t escapes);

// The base the encoder writes for a tile whose floatplanes plane 0 is `plane0` (one byte per
// element): the b in [0, kExp4MaxBase] with the most bytes of plane0 in [b, b + 15], the smallest
// such b on a tie (0 for an empty plane).
uint8_t exp4_choose_base(std::span<const uint8_t> plane0);

// What exp4_encode returns for a tile with this plane 0, in bytes, without encoding it (for
// estimates): exp4_stored_bytes(n, elem_size, elements outside the chosen window). Throws as
// exp4_stored_bytes.
uint64_t exp4_encoded_bytes(std::span<const uint8_t> plane0, uint32_t elem_size);

// Encodes a tile of `filtered` bytes: the floatplanes filter's output (packer/filters.h) for
// filtered.size() / elem_size elements, planes back to back. Returns the stored bytes, exactly
// exp4_stored_bytes(n, elem_size, E) of them, with the base of exp4_choose_base. The caller decides
// whether they are worth storing (encode_tile stores a tile raw when they are not smaller).
// Deterministic. Throws Error(kInvalidArgument) when elem_size is not 2 or 4, filtered.size() is
// not a multiple of it, or the tile has more than kExp4MaxElements elements.
std::vector<uint8_t> exp4_encode(std::span<const uint8_t> filtered, uint32_t elem_size);

// Decodes `stored` (untrusted) into `filtered_out`, the floatplanes planes of filtered_out.size() /
// elem_size elements (undo_filter then gives the raw elements). This scalar loop is the reference
// decoder: any faster decoder (CPU or GPU) must give the same bytes and refuse the same inputs.
// Validates every rule of the format, in this order: element size 2 or 4 and a whole number of
// elements in filtered_out, the header present, base <= 240, the reserved bytes zero, E <= n, the
// stored size exactly exp4_stored_bytes(n, elem_size, E), the unused last nibble 0 when n is odd,
// then per escape: index < n, indices strictly increasing, value outside [base, base + 15], the
// escaped element's code 0. Throws Error(kCorrupt) with a one-line message without file context
// (the caller adds file, tensor and tile). Never reads outside `stored` nor writes outside
// `filtered_out`; filtered_out's contents are unspecified after a throw.
void exp4_decode(std::span<const uint8_t> stored, uint32_t elem_size, std::span<uint8_t> filtered_out);

// exp4_decode's checks alone, for a tile of `elements` elements of `elem_size` bytes, without
// decoding it (the GPU host checks the tiles its fast kernel trusts with it): throws what
// exp4_decode throws for the same bytes, in the same order.
void exp4_check(std::span<const uint8_t> stored, uint32_t elem_size, uint64_t elements);

}  // namespace wpack
