#include "packer/unpack.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "formats/detail/json_rules.h"  // parse_json_members: the source metadata, member by member
#include "formats/error.h"
#include "formats/safetensors.h"
#include "packer/codec.h"
#include "packer/detail/fp.h"
#include "packer/detail/parallel.h"
#include "packer/filters.h"
#include "packer/quantize.h"
#include "packer/tile_codec.h"
#include "packer/tiling.h"

namespace wpack {

std::string tile_context(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor) {
  return reader.path() + ": tensor '" + reader.tensors()[tensor].name + "': tile " + std::to_string(tile_in_tensor);
}

namespace {

// Checksum, layout and codec of a lossy tile, then the reference decode to floats.
void decode_lossy_tile(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor, const QuantTensorParams& params,
                       std::vector<float>& out) {
  const WpkTensor& t = reader.tensors()[tensor];
  const uint64_t index = t.first_tile + tile_in_tensor;
  const WpkTile& tile = reader.tiles()[index];
  if (!reader.tile_checksum_ok(index))
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": checksum mismatch");
  auto codec = codec_from_code(tile.codec);
  if (!codec) throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": unknown codec " + std::to_string(tile.codec));
  const TileRect rect = tile_geometry(t.view(), t.tile_rows, t.tile_cols).rect(tile_in_tensor);
  out.resize(rect.elements());
  try {
    decode_quant_tile_ref(reader.tile_bytes(index), tile.filter, *codec, tile.raw_size, params, rect, out.data());
  } catch (const Error& e) {
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": " + e.what());
  }
}

}  // namespace

QuantTensorParams tensor_quant_params(const WpkReader& reader, size_t tensor) {
  const WpkTensor& t = reader.tensors()[tensor];
  if (!dtype_is_float(t.dtype))
    throw Error(ErrorCode::kCorrupt, reader.path() + ": tensor '" + t.name + "': lossy scheme on dtype " +
                                         std::string(dtype_name(t.dtype)));
  try {
    return parse_quant_params(t.scheme, t.params, t.rows(), t.cols(), t.tile_rows, t.tile_cols);
  } catch (const Error& e) {
    throw Error(ErrorCode::kCorrupt, reader.path() + ": tensor '" + t.name + "': params: " + e.what());
  }
}

void convert_from_f32(DType dtype, const float* in, uint64_t count, uint8_t* out) {
  switch (dtype) {
    case DType::F32:
      if (count) std::memcpy(out, in, count * 4);
      return;
    case DType::F64:
      for (uint64_t i = 0; i < count; ++i) {
        const double d = in[i];
        std::memcpy(out + 8 * i, &d, 8);
      }
      return;
    case DType::F16:
    case DType::BF16:
      for (uint64_t i = 0; i < count; ++i) {
        const uint16_t h = dtype == DType::F16 ? detail::float_to_f16_bits(in[i]) : detail::float_to_bf16_bits(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    default:
      throw Error(ErrorCode::kUnsupported, "cannot write floats as " + std::string(dtype_name(dtype)));
  }
}

void decode_tile_f32_of(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor, const QuantTensorParams* params,
                        std::vector<float>& out) {
  const WpkTensor& t = reader.tensors()[tensor];
  if (t.scheme != 0) {
    if (params == nullptr) throw Error(ErrorCode::kInvalidArgument, "decode_tile_f32_of: lossy tensor without params");
    decode_lossy_tile(reader, tensor, tile_in_tensor, *params, out);
    return;
  }
  if (!dtype_holds_floats(t.dtype))
    throw Error(ErrorCode::kUnsupported, reader.path() + ": tensor '" + t.name + "': " + std::string(dtype_name(t.dtype)) + " is not a float dtype");
  std::vector<uint8_t> raw;
  decode_tile_of(reader, tensor, tile_in_tensor, raw);
  out.resize(raw.size() / dtype_size(t.dtype));
  convert_to_f32(t.dtype, raw.data(), out.size(), out.data());
}

void decode_tensor_f32(const WpkReader& reader, size_t tensor, std::span<float> out, int threads) {
  const WpkTensor& t = reader.tensors()[tensor];
  if (out.size() != t.num_elements())
    throw Error(ErrorCode::kInvalidArgument, reader.path() + ": tensor '" + t.name + "': output buffer has the wrong size");
  std::optional<QuantTensorParams> params;
  if (t.scheme != 0) params = tensor_quant_params(reader, tensor);
  const TileGeometry g = tile_geometry(t.view(), t.tile_rows, t.tile_cols);
  detail::parallel_for_first_error<std::vector<float>>(g.tile_count(), threads, [&](uint64_t i, std::vector<float>& values) {
    decode_tile_f32_of(reader, tensor, i, params ? &*params : nullptr, values);
    scatter_tile(reinterpret_cast<const uint8_t*>(values.data()), g.cols, 4, g.rect(i),
                 reinterpret_cast<uint8_t*>(out.data()));
  });
}

void decode_tile_of(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor, std::vector<uint8_t>& out) {
  const WpkTensor& t = reader.tensors()[tensor];
  const uint64_t index = t.first_tile + tile_in_tensor;
  const WpkTile& tile = reader.tiles()[index];
  if (t.scheme != 0) {
    const QuantTensorParams params = tensor_quant_params(reader, tensor);
    std::vector<float> values;
    decode_lossy_tile(reader, tensor, tile_in_tensor, params, values);
    out.resize(values.size() * dtype_size(t.dtype));
    convert_from_f32(t.dtype, values.data(), values.size(), out.data());
    return;
  }
  if (!reader.tile_checksum_ok(index))
    throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": checksum mismatch");
  auto filter = filter_from_code(tile.filter);
  auto codec = codec_from_code(tile.codec);
  if (!filter) throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": unknown filter " + std::to_string(tile.filter));
  if (!codec) throw Error(ErrorCode::kCorrupt, tile_context(reader, tensor, tile_in_tensor) + ": unknown codec " + std::to_string(tile.codec));
  const uint32_t esize = dtype_size(t.dtype);
  const TileGeometry g = tile_geometry(t.view(), t.tile_rows, t.tile_cols);
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

// Tensor t's float32 values (decode_tensor_f32's) as out_dtype bytes. A quantized F16 tensor's
// source values lie within F16's range (65504), but a code times its fp16-rounded scale can land
// above it (int8: 127 x fp16(65504 / 127) = 65532), which F16 rounds to infinity: back in its own
// dtype, a value beyond the range is the largest finite one. (values is changed.)
void convert_decoded(const WpkTensor& t, DType out_dtype, std::span<float> values, uint8_t* out) {
  if (t.scheme != 0 && t.dtype == DType::F16 && out_dtype == DType::F16)
    for (float& v : values) v = std::clamp(v, -65504.0f, 65504.0f);  // NaN stays NaN
  convert_from_f32(out_dtype, values.data(), values.size(), out);
}

void decode_tensor(const WpkReader& reader, size_t tensor, std::span<uint8_t> out, int threads) {
  const WpkTensor& t = reader.tensors()[tensor];
  const uint32_t esize = dtype_size(t.dtype);
  if (out.size() != t.num_elements() * esize)
    throw Error(ErrorCode::kInvalidArgument, reader.path() + ": tensor '" + t.name + "': output buffer has the wrong size");
  if (t.scheme != 0) {  // decode to float once (params parsed once), then round to the source dtype
    std::vector<float> values(t.num_elements());
    decode_tensor_f32(reader, tensor, values, threads);
    convert_decoded(t, t.dtype, values, out.data());
    return;
  }
  const TileGeometry g = tile_geometry(t.view(), t.tile_rows, t.tile_cols);
  // The first bad tile is reported, whatever the thread count.
  detail::parallel_for_first_error<std::vector<uint8_t>>(g.tile_count(), threads, [&](uint64_t i, std::vector<uint8_t>& raw) {
    decode_tile_of(reader, tensor, i, raw);
    scatter_tile(raw.data(), g.cols, esize, g.rect(i), out.data());
  });
}

namespace {

// Output bytes decoded per step of unpack_to_safetensors (at least one band of tile rows).
constexpr uint64_t kUnpackBlockBytes = uint64_t{64} << 20;

// Decodes tile `i` of `tensor` into `out` as `out_dtype` bytes: the source bytes of a lossless tile
// in its own dtype; otherwise the float values (lossy: dequantized) rounded to `out_dtype`.
struct TileScratch {
  std::vector<uint8_t> raw;
  std::vector<float> values;
};
void decode_tile_as(const WpkReader& reader, size_t tensor, uint64_t tile, DType out_dtype,
                    const QuantTensorParams* params, TileScratch& scratch) {
  const WpkTensor& t = reader.tensors()[tensor];
  if (t.scheme == 0 && out_dtype == t.dtype) {
    decode_tile_of(reader, tensor, tile, scratch.raw);
    return;
  }
  if (t.scheme == 0 && t.dtype == DType::F64 && out_dtype != DType::F32) {  // to F16/BF16 in one rounding
    decode_tile_of(reader, tensor, tile, scratch.raw);
    scratch.values.resize(scratch.raw.size() / 8);
    for (size_t i = 0; i < scratch.values.size(); ++i) {
      double d;
      std::memcpy(&d, scratch.raw.data() + 8 * i, 8);
      scratch.values[i] = detail::double_to_float_round_to_odd(d);
    }
  } else {
    decode_tile_f32_of(reader, tensor, tile, params, scratch.values);
  }
  scratch.raw.resize(scratch.values.size() * dtype_size(out_dtype));
  convert_decoded(t, out_dtype, scratch.values, scratch.raw.data());
}

// Streams tensor `tensor` as `out_dtype` bytes to `sink` in row-major order, a block of tiles at a
// time (about kUnpackBlockBytes), each block's tiles decoded in parallel. A block is a run of tiles
// whose bytes are contiguous in the output: whole rows of the tile grid, or, in a tensor of one row
// (e.g. a vector), any run of tiles. Memory: one block, not the whole tensor.
template <typename Sink>
void stream_tensor(const WpkReader& reader, size_t tensor, DType out_dtype, int threads, Sink&& sink) {
  if (out_dtype != reader.tensors()[tensor].dtype && out_dtype != DType::F32 && out_dtype != DType::F16 &&
      out_dtype != DType::BF16)
    throw Error(ErrorCode::kInvalidArgument, "decode: output dtype must be the tensor's, F32, F16 or BF16");
  const WpkTensor& t = reader.tensors()[tensor];
  const TileGeometry g = tile_geometry(t.view(), t.tile_rows, t.tile_cols);
  std::optional<QuantTensorParams> params;  // checked even when there is no tile
  if (t.scheme != 0) params = tensor_quant_params(reader, tensor);
  if (g.tile_count() == 0) return;
  const uint32_t esize = dtype_size(out_dtype);
  // Blocks are made of units, the shortest contiguous runs: a tile in a one-row tensor, else a row of
  // tiles. No overflow: the reader checked the tensor's byte size.
  const bool one_row = g.rows == 1;
  const uint64_t unit_tiles = one_row ? 1 : g.grid_cols;
  const uint64_t unit_bytes = (one_row ? g.tile_cols : g.tile_rows * g.cols) * esize;
  const uint64_t block_tiles = unit_tiles * std::max<uint64_t>(1, kUnpackBlockBytes / std::max<uint64_t>(unit_bytes, 1));
  std::vector<uint8_t> block;
  for (uint64_t first = 0; first < g.tile_count(); first += block_tiles) {
    const uint64_t count = std::min(block_tiles, g.tile_count() - first);
    // The block's elements: from the first tile's first element to the last tile's last one.
    const TileRect head = g.rect(first), last = g.rect(first + count - 1);
    const uint64_t begin = head.row0 * g.cols + head.col0;
    const uint64_t end = (last.row0 + last.rows - 1) * g.cols + last.col0 + last.cols;
    block.resize((end - begin) * esize);
    detail::parallel_for_first_error<TileScratch>(count, threads, [&](uint64_t i, TileScratch& scratch) {
      decode_tile_as(reader, tensor, first + i, out_dtype, params ? &*params : nullptr, scratch);
      TileRect rect = g.rect(first + i);
      rect.row0 -= head.row0;  // within the block
      rect.col0 -= head.col0;
      scatter_tile(scratch.raw.data(), g.cols, esize, rect, block.data());
    });
    sink(std::span<const uint8_t>(block));
    reader.release_tiles(t.first_tile + first, count);
  }
}

}  // namespace

void stream_tensor_blocks(const WpkReader& reader, size_t tensor, DType out_dtype, int threads,
                          const std::function<void(uint64_t, std::span<const uint8_t>)>& sink) {
  uint64_t element = 0;
  const uint32_t esize = dtype_size(out_dtype);
  stream_tensor(reader, tensor, out_dtype, threads, [&](std::span<const uint8_t> bytes) {
    sink(element, bytes);
    element += bytes.size() / esize;
  });
}

void unpack_to_safetensors(const WpkReader& reader, const std::string& out_path, bool overwrite, int threads,
                           const std::function<void(uint64_t, uint64_t, const std::string&)>& progress,
                           std::optional<DType> float_dtype) {
  if (float_dtype && *float_dtype != DType::F32 && *float_dtype != DType::F16 && *float_dtype != DType::BF16)
    throw Error(ErrorCode::kInvalidArgument, "unpack: output dtype must be F32, F16 or BF16");
  std::vector<TensorInfo> infos;
  uint64_t total = 0;
  for (const auto& t : reader.tensors()) {
    if (t.name == "__metadata__")  // compress refuses it; a .wpk written otherwise may hold it
      throw Error(ErrorCode::kUnsupported, reader.path() + ": tensor '__metadata__': safetensors reserves this name");
    const bool convert = float_dtype && dtype_holds_floats(t.dtype) && *float_dtype != t.dtype;
    infos.push_back(TensorInfo{t.name, convert ? *float_dtype : t.dtype, t.shape});
    total += infos.back().num_bytes();
  }
  // The source's __metadata__ (pack keeps it as "source_metadata"), read member by member: a large
  // metadata text is not built as one JSON value. WpkReader::open checked the text, keys repeated
  // included (pack writes none): the last "source_metadata" wins, as in one JSON value.
  std::map<std::string, std::string> metadata;
  detail::JsonMembers sink;
  sink.member = [&](const std::string& key, nlohmann::json& value, bool) {
    if (key == "source_metadata" && !value.is_object()) metadata.clear();  // an object's members came one by one
  };
  sink.flat_key = "source_metadata";
  sink.flat_begin = [&] { metadata.clear(); };
  sink.flat_member = [&](const std::string& key, nlohmann::json& value, bool) {
    if (value.is_string()) metadata[key] = std::move(value.get_ref<std::string&>());
  };
  detail::parse_json_members(reader.metadata_json(), /*unique_keys=*/false, sink);
  SafetensorsWriter writer(out_path, infos, metadata, overwrite);
  uint64_t done = 0;
  for (size_t t = 0; t < infos.size(); ++t) {
    // Tensor by tensor, a block of tile rows at a time: memory stays at one block, whatever the
    // tensor's size; the bytes are those decode_tensor (or decode_tensor_f32 + convert) gives.
    stream_tensor(reader, t, infos[t].dtype, threads, [&](std::span<const uint8_t> bytes) {
      writer.append(bytes);
      done += bytes.size();
    });
    if (progress) progress(done, total, infos[t].name);
  }
  writer.commit();
}

}  // namespace wpack
