#include "packer/unpack.h"

#include <omp.h>

#include <map>
#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "packer/codec.h"
#include "packer/filters.h"
#include "packer/tile_codec.h"
#include "packer/tiling.h"

namespace wpack {

std::string tile_context(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor) {
  return reader.path() + ": tensor '" + reader.tensors()[tensor].name + "': tile " + std::to_string(tile_in_tensor);
}

void decode_tile_of(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor, std::vector<uint8_t>& out) {
  const WpkTensor& t = reader.tensors()[tensor];
  const uint64_t index = t.first_tile + tile_in_tensor;
  const WpkTile& tile = reader.tiles()[index];
  if (t.scheme != 0)
    throw Error(ErrorCode::kUnsupported, reader.path() + ": tensor '" + t.name + "': scheme " +
                                             std::to_string(t.scheme) + " is not supported by this wpack");
  if (!reader.tile_checksum_ok(index))
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": checksum mismatch");
  auto filter = filter_from_code(tile.filter);
  auto codec = codec_from_code(tile.codec);
  if (!filter) throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": unknown filter " + std::to_string(tile.filter));
  if (!codec) throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": unknown codec " + std::to_string(tile.codec));
  const uint32_t esize = dtype_size(t.dtype);
  const TileGeometry g = tile_geometry(t.shape, t.tile_rows, t.tile_cols);
  const uint64_t expected = g.rect(tile_in_tensor).elements() * esize;
  if (tile.raw_size != expected)
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": raw size " +
                                         std::to_string(tile.raw_size) + " differs from the tile's " + std::to_string(expected));
  if (*filter == Filter::kFloatPlanes && esize != 2 && esize != 4 && esize != 8)
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": float-plane filter on " +
                                         std::string(dtype_name(t.dtype)));
  out.resize(expected);
  try {
    decode_tile(reader.tile_bytes(index), esize, *filter, *codec, out);
  } catch (const Error& e) {
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": " + e.what());
  }
}

void decode_tensor(const WpkReader& reader, size_t tensor, std::span<uint8_t> out, int threads) {
  const WpkTensor& t = reader.tensors()[tensor];
  const uint32_t esize = dtype_size(t.dtype);
  if (out.size() != t.num_elements() * esize)
    throw Error(ErrorCode::kInvalidArgument, reader.path() + ": tensor '" + t.name + "': output buffer has the wrong size");
  const TileGeometry g = tile_geometry(t.shape, t.tile_rows, t.tile_cols);
  const uint64_t tiles = g.tile_count();
  if (threads <= 0) threads = omp_get_max_threads();
  std::string failure;
  ErrorCode failure_code = ErrorCode::kCorrupt;
  uint64_t failure_tile = UINT64_MAX;
#pragma omp parallel num_threads(threads)
  {
    std::vector<uint8_t> raw;
#pragma omp for schedule(dynamic, 4)
    for (uint64_t i = 0; i < tiles; ++i) {
      try {
        decode_tile_of(reader, tensor, i, raw);
        scatter_tile(raw.data(), g.cols, esize, g.rect(i), out.data());
      } catch (const Error& e) {
#pragma omp critical
        if (i < failure_tile) {  // report the first bad tile, whatever the thread count
          failure_tile = i;
          failure = e.what();
          failure_code = e.code();
        }
      }
    }
  }
  if (failure_tile != UINT64_MAX) throw Error(failure_code, failure);
}

void unpack_to_safetensors(const WpkReader& reader, const std::string& out_path, bool overwrite, int threads,
                           const std::function<void(uint64_t, uint64_t, const std::string&)>& progress) {
  std::vector<TensorInfo> infos;
  uint64_t total = 0;
  for (const auto& t : reader.tensors()) {
    infos.push_back(TensorInfo{t.name, t.dtype, t.shape});
    total += infos.back().num_bytes();
  }
  std::map<std::string, std::string> metadata;
  auto meta = nlohmann::json::parse(reader.metadata_json(), nullptr, false);
  if (meta.is_object() && meta.contains("source_metadata") && meta["source_metadata"].is_object())
    for (const auto& [k, v] : meta["source_metadata"].items())
      if (v.is_string()) metadata[k] = v.get<std::string>();
  SafetensorsWriter writer(out_path, infos, metadata, overwrite);
  uint64_t done = 0;
  std::vector<uint8_t> buffer;
  for (size_t t = 0; t < infos.size(); ++t) {
    buffer.resize(infos[t].num_bytes());
    decode_tensor(reader, t, buffer, threads);
    writer.append(buffer);
    done += buffer.size();
    if (progress) progress(done, total, infos[t].name);
  }
  writer.commit();
}

}  // namespace wpack
