// One tile's bytes: filter, then code each plane (docs/FORMAT.md "Tile payload").
//
// With codec kNone the stored bytes are the filtered bytes. With codec kExp4 (filter kFloatPlanes,
// elements of 2 or 4 bytes only) they are exp4's fixed layout (packer/exp4.h). Otherwise they are a
// plane directory of P little-endian u32 words (P = filter_plane_count), word p = stored size of
// plane p with bit 31 set when the plane is stored raw (coding did not make it smaller), followed by
// the planes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "packer/codec.h"
#include "packer/filters.h"

namespace wpack {

struct TileCoding {
  Filter filter = Filter::kNone;
  Codec codec = Codec::kZstd;
  int level = 3;  // zstd level
};

struct EncodedTile {
  std::vector<uint8_t> stored;
  Filter filter = Filter::kNone;  // as applied: a tile that coding cannot shrink is stored as it is,
  Codec codec = Codec::kNone;     // with filter kNone and codec kNone
};

// Encodes `raw` (whole elements of `elem_size` bytes). Never larger than `raw`. Throws
// Error(kInvalidArgument) for codec kExp4 with a filter other than kFloatPlanes or an element size
// other than 2 or 4.
EncodedTile encode_tile(std::span<const uint8_t> raw, uint32_t elem_size, const TileCoding& coding);

// Decodes `stored` into exactly `raw_out.size()` bytes. Throws Error(kCorrupt) (message without
// file context: callers add file, tensor and tile) on any inconsistency, codec kExp4 with a filter
// other than kFloatPlanes or an element size other than 2 or 4 included; never reads or writes out
// of bounds.
void decode_tile(std::span<const uint8_t> stored, uint32_t elem_size, Filter filter, Codec codec,
                 std::span<uint8_t> raw_out);

// The plane directory shared by every coded tile layout (lossless and quantized tiles).
// assemble_planes writes one u32 word per plane, then the planes in order (join_planes): plane p's
// coded form `coded[p]` when it is smaller than `planes[p]` (word = its size), else the plane itself
// (word = its size | bit 31). Throws Error(kInvalidArgument) for a plane of 2 GiB or more.
std::vector<uint8_t> assemble_planes(std::span<const std::span<const uint8_t>> planes,
                                     std::span<const std::vector<uint8_t>> coded);

struct StoredPlane {
  std::span<const uint8_t> bytes;  // inside the stored tile
  bool raw = false;                // stored as it is, not coded
};
// Splits a coded tile into its `plane_count` planes. Throws Error(kCorrupt) when the directory or
// a plane runs past the stored bytes, or bytes follow the last plane.
std::vector<StoredPlane> split_planes(std::span<const uint8_t> stored, uint32_t plane_count);
// The inverse: the directory of `planes` (each stored as given, raw or coded), then their bytes.
// Throws Error(kInvalidArgument) for a plane of 2 GiB or more.
std::vector<uint8_t> join_planes(std::span<const StoredPlane> planes);

}  // namespace wpack
