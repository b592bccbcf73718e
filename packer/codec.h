// Plane codecs: how each plane of a filtered tile is entropy-coded.
// The numeric values are stored in .wpk files (docs/FORMAT.md): never renumber.
// kExp4 is no per-plane codec but a fixed tile layout (packer/exp4.h): lossless floatplanes tiles of
// BF16/F32 only, format v4 and later.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace wpack {

enum class Codec : uint8_t {
  kNone = 0,  // planes stored as they are
  kZstd = 1,  // one zstd frame per plane (archive: smallest files, CPU decode only)
  kRans = 2,  // interleaved rANS, decodable by a GPU warp in shared memory (docs/FORMAT-rans.md)
  kExp4 = 3,  // floatplanes plane 0 as 4-bit codes in a 16-value window plus escapes, other planes raw
};

std::string_view codec_name(Codec codec);  // "none", "zstd", "rans", "exp4"
std::optional<Codec> parse_codec(std::string_view name);
std::optional<Codec> codec_from_code(uint8_t code);

}  // namespace wpack
