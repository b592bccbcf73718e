// Fuzz surface: one lossless tile (packer/tile_codec.h): plane directory, zstd/rANS/none per
// plane, or exp4's fixed layout (packer/exp4.h), then the inverse filter (un-shuffle).
//
// Input: mode byte (bits 0-1: filter; bits 2-3: element size 1/2/4/8; bits 4-5: codec none/zstd/
// rans/exp4; bit 6: round trip), then
//   decode:     u32 raw size (mod kMaxDecodeBytes + 1); the rest is the stored tile. decode_tile
//               must fill exactly the raw size or throw an Error.
//   round trip: a zstd level byte; the rest (cut to whole elements) is the raw tile. encode_tile
//               must never grow it, and decode_tile must give it back (exp4: floatplanes on 2- or
//               4-byte elements only, the combinations encode_tile takes).
#include <algorithm>
#include <vector>

#include "formats/error.h"
#include "fuzz/harness.h"
#include "packer/tile_codec.h"

namespace wpack::fuzz {

void tile(Bytes data) {
  Input in(data);
  const uint8_t mode = in.u8();
  const auto filter = static_cast<Filter>(mode & 3);
  constexpr uint32_t kElemSizes[4] = {1, 2, 4, 8};
  const uint32_t elem_size = kElemSizes[(mode >> 2) & 3];
  const auto codec = static_cast<Codec>((mode >> 4) & 3);

  if ((mode & 0x40) == 0) {
    const uint64_t raw_size = in.u32() % (kMaxDecodeBytes + 1);
    const Bytes stored = in.rest();
    std::vector<uint8_t> raw(raw_size);
    try {
      decode_tile(stored, elem_size, filter, codec, raw);
    } catch (const Error&) {
    }
    return;
  }

  const int level = 1 + in.u8() % 9;
  Bytes raw = in.rest();
  raw = raw.first(raw.size() / elem_size * elem_size);
  if (filter == Filter::kFloatPlanes && elem_size == 1) return;  // not a combination the packer makes
  if (codec == Codec::kExp4 && (filter != Filter::kFloatPlanes || (elem_size != 2 && elem_size != 4))) return;  // nor these
  const EncodedTile encoded = encode_tile(raw, elem_size, TileCoding{filter, codec, level});
  if (encoded.stored.size() > raw.size()) fail("tile", "encode_tile grew the tile");
  std::vector<uint8_t> back(raw.size(), 0xA5);
  decode_tile(encoded.stored, elem_size, encoded.filter, encoded.codec, back);
  if (!std::equal(back.begin(), back.end(), raw.begin(), raw.end())) fail("tile", "round trip changed the tile");
}

}  // namespace wpack::fuzz
