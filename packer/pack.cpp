#include "packer/pack.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "packer/tile_codec.h"
#include "packer/tiling.h"
#include "wpack_version.h"

namespace wpack {
namespace {

// Tiles encoded in parallel before they are written in order: bounds memory to one batch.
constexpr uint64_t kTileBatch = 256;
// Tiles, evenly spaced, that the filter choice codes with each candidate filter.
constexpr uint64_t kFilterSampleTiles = 2;

std::vector<Filter> candidate_filters(DType dtype) {
  const uint32_t size = dtype_size(dtype);
  // Floats: the exponent plane is what compresses; bit shuffle and no filter lose on real weights
  // and are not worth the trial.
  if (dtype_is_float(dtype)) return {Filter::kFloatPlanes, Filter::kByteShuffle};
  if (size == 1) return {Filter::kBitShuffle, Filter::kNone};
  return {Filter::kByteShuffle, Filter::kBitShuffle, Filter::kNone};
}

// Fraction of elements that are exactly zero (floats: +0 and -0).
double zero_fraction(DType dtype, const uint8_t* bytes, uint64_t elements) {
  if (elements == 0) return 0;
  const uint32_t size = dtype_size(dtype);
  const bool is_float = dtype_is_float(dtype) || dtype == DType::F8_E4M3 || dtype == DType::F8_E5M2;
  // Little-endian: the sign bit is the top bit of the last byte.
  const uint64_t mask = (size == 8 ? ~0ull : ((1ull << (8 * size)) - 1)) >> (is_float ? 1 : 0);
  uint64_t zeros = 0;
  for (uint64_t i = 0; i < elements; ++i) {
    uint64_t v = 0;
    std::memcpy(&v, bytes + i * size, size);
    zeros += (v & mask) == 0;
  }
  return double(zeros) / double(elements);
}

std::string metadata_json(const TensorSource& source, const PackOptions& options) {
  nlohmann::ordered_json meta;
  meta["wpack_version"] = WPACK_VERSION_STRING;
  meta["command_line"] = options.command_line;
  meta["source_format"] = source.format_name();
  nlohmann::ordered_json src = nlohmann::ordered_json::object();
  for (const auto& [k, v] : source.metadata()) src[k] = v;
  meta["source_metadata"] = src;
  return meta.dump();
}

}  // namespace

Filter choose_filter(const TensorInfo& info, const uint8_t* bytes, uint32_t tile_rows, uint32_t tile_cols,
                     Codec codec, int level) {
  const auto candidates = candidate_filters(info.dtype);
  if (codec == Codec::kNone) return Filter::kNone;
  const uint32_t esize = dtype_size(info.dtype);
  TileGeometry g = tile_geometry(info.shape, tile_rows, tile_cols);
  const uint64_t tiles = g.tile_count();
  if (tiles == 0) return candidates.front();
  const uint64_t samples = std::min<uint64_t>(tiles, kFilterSampleTiles);
  std::vector<uint64_t> cost(candidates.size(), 0);
  std::vector<uint8_t> raw;
  for (uint64_t s = 0; s < samples; ++s) {
    const uint64_t tile = (s * tiles) / samples;
    TileRect rect = g.rect(tile);
    raw.resize(rect.elements() * esize);
    gather_tile(bytes, g.cols, esize, rect, raw.data());
    for (size_t c = 0; c < candidates.size(); ++c)
      cost[c] += encode_tile(raw, esize, TileCoding{candidates[c], codec, level}).stored.size();
  }
  return candidates[std::min_element(cost.begin(), cost.end()) - cost.begin()];
}

PackReport pack_model(const TensorSource& source, const std::string& out_path, const PackOptions& options) {
  if (options.tile_rows == 0 || options.tile_cols == 0)
    throw Error(ErrorCode::kInvalidArgument, "tile shape must have no zero side");
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  WpkWriter writer(out_path, options.overwrite, options.alignment);
  PackReport report;
  uint64_t total = 0, done = 0;
  for (const auto& info : source.tensors()) total += info.num_bytes();

  for (size_t t = 0; t < source.tensors().size(); ++t) {
    const TensorInfo& info = source.tensors()[t];
    TensorBytes bytes = source.read(t);
    if (bytes.size() != info.num_bytes())
      throw Error(ErrorCode::kFormat, source.path() + ": tensor '" + info.name + "': read " +
                                          std::to_string(bytes.size()) + " bytes, expected " +
                                          std::to_string(info.num_bytes()));
    const uint32_t esize = dtype_size(info.dtype);
    WpkTensor record;
    record.name = info.name;
    record.dtype = info.dtype;
    record.shape = info.shape;
    record.scheme = 0;
    choose_tile_shape(info.shape, options.tile_rows, options.tile_cols, &record.tile_rows, &record.tile_cols);
    const TileGeometry g = tile_geometry(info.shape, record.tile_rows, record.tile_cols);
    TileCoding coding;
    coding.codec = options.codec;
    coding.level = options.level;
    coding.filter = options.filter ? *options.filter
                                   : choose_filter(info, bytes.data(), record.tile_rows, record.tile_cols,
                                                   options.codec, options.level);
    if (coding.filter == Filter::kFloatPlanes && !dtype_is_float(info.dtype)) coding.filter = Filter::kByteShuffle;
    record.metrics.snr_db = std::numeric_limits<double>::infinity();
    record.metrics.sparsity = zero_fraction(info.dtype, bytes.data(), info.num_elements());
    writer.begin_tensor(record);

    PackedTensor packed{info.name, coding.filter, info.num_bytes(), 0};
    const uint64_t tiles = g.tile_count();
    for (uint64_t first = 0; first < tiles; first += kTileBatch) {
      const uint64_t count = std::min(kTileBatch, tiles - first);
      std::vector<EncodedTile> stored(count);
      std::vector<uint64_t> raw_sizes(count);
      // Errors cannot leave an OpenMP region: collect the first one and rethrow after.
      std::string failure;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
      for (uint64_t i = 0; i < count; ++i) {
        try {
          TileRect rect = g.rect(first + i);
          std::vector<uint8_t> raw(rect.elements() * esize);
          gather_tile(bytes.data(), g.cols, esize, rect, raw.data());
          stored[i] = encode_tile(raw, esize, coding);
          raw_sizes[i] = raw.size();
        } catch (const std::exception& e) {
#pragma omp critical
          if (failure.empty()) failure = e.what();
        }
      }
      if (!failure.empty())
        throw Error(ErrorCode::kInvalidArgument, out_path + ": tensor '" + info.name + "': " + failure);
      for (uint64_t i = 0; i < count; ++i) {
        writer.add_tile(stored[i].stored, raw_sizes[i], static_cast<uint8_t>(stored[i].filter),
                        static_cast<uint8_t>(stored[i].codec));
        packed.stored_bytes += stored[i].stored.size();
      }
    }
    writer.end_tensor();
    report.tensors.push_back(packed);
    report.original_bytes += info.num_bytes();
    done += info.num_bytes();
    if (options.progress) options.progress(done, total, info.name);
  }
  writer.commit(metadata_json(source, options));
  report.file_bytes = writer.bytes_written();
  return report;
}

}  // namespace wpack
