#include "packer/tile_codec.h"

#include <cstring>

#include "formats/detail/le.h"
#include "formats/error.h"
#if __has_include("packer/rans.h")
#include "packer/rans.h"
#define WPACK_HAVE_RANS 1
#endif
#include "packer/estimate.h"
#include "packer/zstd_codec.h"

namespace wpack {
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
#ifdef WPACK_HAVE_RANS
    case Codec::kRans: return rans_encode(plane, plane.size(), 8);
#else
    case Codec::kRans: throw Error(ErrorCode::kUnsupported, "rans codec not built");
#endif
    case Codec::kNone: break;
  }
  return {plane.begin(), plane.end()};
}

void decode_plane(std::span<const uint8_t> coded, Codec codec, std::span<uint8_t> out) {
  switch (codec) {
    case Codec::kZstd: zstd_decompress(coded, out); return;
#ifdef WPACK_HAVE_RANS
    case Codec::kRans: rans_decode(coded, out.size(), 8, out); return;
#else
    case Codec::kRans: throw Error(ErrorCode::kUnsupported, "rans codec not built");
#endif
    case Codec::kNone: break;
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
  }
  return "?";
}

std::optional<Codec> parse_codec(std::string_view name) {
  for (Codec c : {Codec::kNone, Codec::kZstd, Codec::kRans})
    if (codec_name(c) == name) return c;
  return std::nullopt;
}

std::optional<Codec> codec_from_code(uint8_t code) {
  if (code <= static_cast<uint8_t>(Codec::kRans)) return static_cast<Codec>(code);
  return std::nullopt;
}

EncodedTile encode_tile(std::span<const uint8_t> raw, uint32_t elem_size, const TileCoding& coding) {
  std::vector<uint8_t> filtered(raw.size());
  apply_filter(coding.filter, elem_size, raw, filtered);
  if (coding.codec == Codec::kNone) return {std::move(filtered), coding.filter, Codec::kNone};

  const uint32_t planes = filter_plane_count(coding.filter, elem_size);
  const uint64_t plane_bytes = raw.size() / planes;
  if (plane_bytes > kMaxPlaneBytes) throw Error(ErrorCode::kInvalidArgument, "tile plane larger than 2 GiB");
  std::vector<uint8_t> out(4ull * planes);
  for (uint32_t p = 0; p < planes; ++p) {
    std::span<const uint8_t> plane{filtered.data() + p * plane_bytes, static_cast<size_t>(plane_bytes)};
    std::vector<uint8_t> coded = encode_plane(plane, p, coding);
    uint32_t word;
    if (coded.size() < plane.size()) {
      word = static_cast<uint32_t>(coded.size());
      out.insert(out.end(), coded.begin(), coded.end());
    } else {
      word = static_cast<uint32_t>(plane.size()) | kRawPlaneBit;
      out.insert(out.end(), plane.begin(), plane.end());
    }
    detail::store_u32(out.data() + 4 * p, word);
  }
  if (out.size() >= raw.size()) return {std::vector<uint8_t>(raw.begin(), raw.end()), Filter::kNone, Codec::kNone};
  return {std::move(out), coding.filter, coding.codec};
}

void decode_tile(std::span<const uint8_t> stored, uint32_t elem_size, Filter filter, Codec codec,
                 std::span<uint8_t> raw_out) {
  if (elem_size == 0 || raw_out.size() % elem_size != 0)
    throw Error(ErrorCode::kCorrupt, "raw size is not a whole number of elements");
  std::vector<uint8_t> filtered(raw_out.size());
  if (codec == Codec::kNone) {
    if (stored.size() != raw_out.size()) throw Error(ErrorCode::kCorrupt, "stored size differs from raw size (codec none)");
    if (!stored.empty()) std::memcpy(filtered.data(), stored.data(), stored.size());
  } else {
    const uint32_t planes = filter_plane_count(filter, elem_size);
    const uint64_t plane_bytes = raw_out.size() / planes;
    detail::Cursor c(stored, "tile");
    std::vector<uint32_t> words(planes);
    for (auto& w : words) w = c.u32("plane directory");
    for (uint32_t p = 0; p < planes; ++p) {
      const uint32_t size = words[p] & ~kRawPlaneBit;
      std::span<const uint8_t> coded;
      try {
        coded = c.bytes(size, "plane");
      } catch (const Error&) {
        throw Error(ErrorCode::kCorrupt, "plane " + std::to_string(p) + " runs past the stored bytes");
      }
      std::span<uint8_t> out{filtered.data() + p * plane_bytes, static_cast<size_t>(plane_bytes)};
      try {
        decode_plane(coded, (words[p] & kRawPlaneBit) ? Codec::kNone : codec, out);
      } catch (const Error& e) {
        throw Error(ErrorCode::kCorrupt, "plane " + std::to_string(p) + ": " + e.what());
      }
    }
    if (c.remaining() != 0) throw Error(ErrorCode::kCorrupt, "trailing bytes after the last plane");
  }
  undo_filter(filter, elem_size, filtered, raw_out);
}

}  // namespace wpack
