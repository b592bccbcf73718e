#include "packer/tile_codec.h"

#include <cstring>

#include "formats/detail/le.h"
#include "formats/error.h"
#include "formats/wpk.h"  // kWpkCodecAddedInV4: the reader's copy of codec 3
#include "packer/estimate.h"
#include "packer/exp4.h"
#include "packer/rans.h"
#include "packer/zstd_codec.h"

namespace wpack {

static_assert(static_cast<uint8_t>(Codec::kExp4) == kWpkCodecAddedInV4, "formats/wpk.h kWpkCodecAddedInV4 is codec 3");

namespace {

constexpr uint32_t kRawPlaneBit = 0x80000000u;
constexpr uint64_t kMaxPlaneBytes = 0x7FFFFFFFu;

// Sign/mantissa planes of float weights sit at ~7.95-8 bits of order-0 entropy: no codec gains
// more than ~1% on them, and trying costs more than the rest of the tile. A sample of
// kSampleBytes tells: its entropy estimate runs ~0.09 bits low at this size (bias
// (K-1) / (2 n ln 2) for K = 256 symbols), so above kSkipEntropy the whole plane is >= ~7.92 bits.
constexpr size_t kSampleBytes = 2048;
constexpr double kSkipEntropy = 7.83;

bool looks_incompressible(std::span<const uint8_t> plane) {
  if (plane.size() < 4 * kSampleBytes) return false;
  return order0_entropy_bits(plane.subspan(plane.size() / 2 - kSampleBytes / 2, kSampleBytes)) > kSkipEntropy;
}

// Float planes are coded with zstd's memoryless tuning (packer/zstd_codec.h); `plane_index` 0 of a
// float-plane tile is the exponent plane, always coded.
std::vector<uint8_t> encode_plane(std::span<const uint8_t> plane, uint32_t plane_index, const TileCoding& coding) {
  const bool float_plane = coding.filter == Filter::kFloatPlanes;
  if (float_plane && plane_index > 0 && looks_incompressible(plane)) return {plane.begin(), plane.end()};
  switch (coding.codec) {
    case Codec::kZstd:
      return zstd_compress(plane, coding.level, float_plane ? ZstdTuning::kMemoryless : ZstdTuning::kLevel);
    case Codec::kRans: return rans_encode(plane, plane.size(), 8);
    case Codec::kNone: break;
    case Codec::kExp4: break;  // a tile layout of its own (encode_tile), never a plane codec
  }
  return {plane.begin(), plane.end()};
}

void decode_plane(std::span<const uint8_t> coded, Codec codec, std::span<uint8_t> out) {
  switch (codec) {
    case Codec::kZstd: zstd_decompress(coded, out); return;
    case Codec::kRans: rans_decode(coded, out.size(), 8, out); return;
    case Codec::kNone: break;
    case Codec::kExp4: throw Error(ErrorCode::kCorrupt, "exp4 is not a plane codec");  // decode_tile handles it
  }
  if (coded.size() != out.size()) throw Error(ErrorCode::kCorrupt, "stored plane has the wrong size");
  if (!out.empty()) std::memcpy(out.data(), coded.data(), out.size());
}

}  // namespace

std::string_view codec_name(Codec codec) {
  switch (codec) {
    case Codec::kNone: return "none";
    case Codec::kZstd: return "zstd";
    case Codec::kRans: return "rans";
    case Codec::kExp4: return "exp4";
  }
  return "?";
}

std::optional<Codec> parse_codec(std::string_view name) {
  for (Codec c : {Codec::kNone, Codec::kZstd, Codec::kRans, Codec::kExp4})
    if (codec_name(c) == name) return c;
  return std::nullopt;
}

std::optional<Codec> codec_from_code(uint8_t code) {
  if (code <= static_cast<uint8_t>(Codec::kExp4)) return static_cast<Codec>(code);
  return std::nullopt;
}

EncodedTile encode_tile(std::span<const uint8_t> raw, uint32_t elem_size, const TileCoding& coding) {
  if (coding.codec == Codec::kExp4 && (coding.filter != Filter::kFloatPlanes || !exp4_elem_size_ok(elem_size)))
    throw Error(ErrorCode::kInvalidArgument, "codec exp4 takes filter floatplanes on elements of 2 or 4 bytes, not filter " +
                                                 std::string(filter_name(coding.filter)) + " on " + std::to_string(elem_size));
  std::vector<uint8_t> filtered(raw.size());
  apply_filter(coding.filter, elem_size, raw, filtered);
  if (coding.codec == Codec::kNone) return {std::move(filtered), coding.filter, Codec::kNone};
  if (coding.codec == Codec::kExp4) {
    std::vector<uint8_t> out = exp4_encode(filtered, elem_size);
    if (out.size() >= raw.size()) return {std::vector<uint8_t>(raw.begin(), raw.end()), Filter::kNone, Codec::kNone};
    return {std::move(out), Filter::kFloatPlanes, Codec::kExp4};
  }

  const uint32_t planes = filter_plane_count(coding.filter, elem_size);
  const uint64_t plane_bytes = raw.size() / planes;
  std::vector<std::span<const uint8_t>> plane_spans(planes);
  std::vector<std::vector<uint8_t>> coded(planes);
  for (uint32_t p = 0; p < planes; ++p) {
    plane_spans[p] = {filtered.data() + p * plane_bytes, static_cast<size_t>(plane_bytes)};
    coded[p] = encode_plane(plane_spans[p], p, coding);
  }
  std::vector<uint8_t> out = assemble_planes(plane_spans, coded);
  if (out.size() >= raw.size()) return {std::vector<uint8_t>(raw.begin(), raw.end()), Filter::kNone, Codec::kNone};
  return {std::move(out), coding.filter, coding.codec};
}

std::vector<uint8_t> assemble_planes(std::span<const std::span<const uint8_t>> planes,
                                     std::span<const std::vector<uint8_t>> coded) {
  std::vector<StoredPlane> chosen(planes.size());
  for (size_t p = 0; p < planes.size(); ++p)
    chosen[p] = coded[p].size() < planes[p].size() ? StoredPlane{coded[p], false} : StoredPlane{planes[p], true};
  return join_planes(chosen);
}

std::vector<uint8_t> join_planes(std::span<const StoredPlane> planes) {
  std::vector<uint8_t> out(4 * planes.size());
  for (size_t p = 0; p < planes.size(); ++p) {
    if (planes[p].bytes.size() > kMaxPlaneBytes) throw Error(ErrorCode::kInvalidArgument, "tile plane larger than 2 GiB");
    detail::store_u32(out.data() + 4 * p, static_cast<uint32_t>(planes[p].bytes.size()) | (planes[p].raw ? kRawPlaneBit : 0u));
    out.insert(out.end(), planes[p].bytes.begin(), planes[p].bytes.end());
  }
  return out;
}

std::vector<StoredPlane> split_planes(std::span<const uint8_t> stored, uint32_t plane_count) {
  if (stored.size() / 4 < plane_count) throw Error(ErrorCode::kCorrupt, "plane directory runs past the stored bytes");
  std::vector<StoredPlane> planes(plane_count);
  uint64_t offset = 4ull * plane_count;
  for (uint32_t p = 0; p < plane_count; ++p) {
    const uint32_t word = detail::load_u32(stored.data() + 4 * p);
    const uint64_t size = word & ~kRawPlaneBit;
    if (size > stored.size() - offset)
      throw Error(ErrorCode::kCorrupt, "plane " + std::to_string(p) + " runs past the stored bytes");
    planes[p] = {stored.subspan(offset, size), (word & kRawPlaneBit) != 0};
    offset += size;
  }
  if (offset != stored.size()) throw Error(ErrorCode::kCorrupt, "trailing bytes after the last plane");
  return planes;
}

void decode_tile(std::span<const uint8_t> stored, uint32_t elem_size, Filter filter, Codec codec,
                 std::span<uint8_t> raw_out) {
  if (elem_size == 0 || raw_out.size() % elem_size != 0)
    throw Error(ErrorCode::kCorrupt, "raw size is not a whole number of elements");
  std::vector<uint8_t> filtered(raw_out.size());
  if (codec == Codec::kNone) {
    if (stored.size() != raw_out.size()) throw Error(ErrorCode::kCorrupt, "stored size differs from raw size (codec none)");
    if (!stored.empty()) std::memcpy(filtered.data(), stored.data(), stored.size());
  } else if (codec == Codec::kExp4) {
    if (filter != Filter::kFloatPlanes)
      throw Error(ErrorCode::kCorrupt, "codec exp4 with filter " + std::string(filter_name(filter)) + " (exp4 takes floatplanes only)");
    if (!exp4_elem_size_ok(elem_size))
      throw Error(ErrorCode::kCorrupt, "codec exp4 on elements of " + std::to_string(elem_size) + " bytes (exp4 takes 2 or 4)");
    exp4_decode(stored, elem_size, filtered);
  } else {
    const uint32_t planes = filter_plane_count(filter, elem_size);
    const uint64_t plane_bytes = raw_out.size() / planes;
    const std::vector<StoredPlane> stored_planes = split_planes(stored, planes);
    for (uint32_t p = 0; p < planes; ++p) {
      std::span<uint8_t> out{filtered.data() + p * plane_bytes, static_cast<size_t>(plane_bytes)};
      try {
        decode_plane(stored_planes[p].bytes, stored_planes[p].raw ? Codec::kNone : codec, out);
      } catch (const Error& e) {
        throw Error(ErrorCode::kCorrupt, "plane " + std::to_string(p) + ": " + e.what());
      }
    }
  }
  undo_filter(filter, elem_size, filtered, raw_out);
}

}  // namespace wpack
