// Fuzz surface: the .wpk reader (formats/wpk.h: header, footer, index, tensor table, tile index)
// and the CPU decode of every tile (packer/unpack.h), lossless and lossy.
//
// Input: one mode byte, then the file. Mode bit 0 set: the harness first rewrites every checksum
// of the file to match (fix_wpk_checksums), so that mutations get past the checksums into the
// index and tile parsers; clear: the file is opened as it is (checksum checks themselves).
// For an accepted file the harness decodes every tile of every tensor (both decode_tile_of and
// decode_tile_f32_of), skipping tiles whose decoded size exceeds kMaxDecodeBytes, and checks that
// a decoded tile has the size its tensor's tile grid says.
#include <optional>
#include <vector>

#include "formats/error.h"
#include "formats/wpk.h"
#include "fuzz/harness.h"
#include "packer/tiling.h"
#include "packer/unpack.h"

namespace wpack::fuzz {

void wpk(Bytes data) {
  Input in(data);
  const uint8_t mode = in.u8();
  const Bytes body = in.rest();
  std::vector<uint8_t> file(body.begin(), body.end());
  if (mode & 1) fix_wpk_checksums(file);
  TempFile mem(file);

  std::unique_ptr<WpkReader> reader;
  try {
    reader = WpkReader::open(mem.path());
  } catch (const Error&) {
    return;
  }

  constexpr uint64_t kMaxTilesDecoded = 512;
  uint64_t decoded = 0;
  for (size_t t = 0; t < reader->tensors().size(); ++t) {
    const WpkTensor& tensor = reader->tensors()[t];
    std::optional<QuantTensorParams> params;
    if (tensor.scheme != 0) {
      try {
        params = tensor_quant_params(*reader, t);
      } catch (const Error&) {
      }
    }
    const TileGeometry g = tile_geometry(tensor.view(), tensor.tile_rows, tensor.tile_cols);
    if (g.tile_count() != tensor.tile_count) fail("wpk", "tile count differs from the tile grid");
    for (uint64_t k = 0; k < tensor.tile_count && decoded < kMaxTilesDecoded; ++k) {
      const TileRect rect = g.rect(k);
      if (rect.elements() > kMaxDecodeBytes / 8) continue;
      ++decoded;
      std::vector<uint8_t> raw;
      try {
        decode_tile_of(*reader, t, k, raw);
        if (raw.size() != rect.elements() * dtype_size(tensor.dtype)) fail("wpk", "decoded tile has the wrong size");
      } catch (const Error&) {
      }
      if (tensor.scheme != 0 && !params) continue;
      std::vector<float> values;
      try {
        decode_tile_f32_of(*reader, t, k, params ? &*params : nullptr, values);
        if (values.size() != rect.elements()) fail("wpk", "decoded float tile has the wrong size");
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace wpack::fuzz
