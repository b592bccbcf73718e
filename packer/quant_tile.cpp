#include "packer/quant_tile.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "formats/detail/le.h"  // put_* and Cursor for the params blob
#include "formats/error.h"
#include "formats/wpk.h"        // kWpkFilterAddedInV3: the reader's copy of layout 6
#include "packer/detail/fp.h"   // fp16 bits -> float, the same conversion dequantize() uses
#include "packer/detail/quant_kernels.h"  // pack_codes_ref / pack_codes_fast
#include "packer/rans.h"
#include "packer/zstd_codec.h"

namespace wpack {
namespace {

// The container reader refuses layout 6 in a v2 file by its own constant (formats/ knows no layouts).
static_assert(kFilterQuantDenseZeroRel == kWpkFilterAddedInV3, "formats/wpk.h kWpkFilterAddedInV3 is layout 6");

constexpr uint8_t kFlagSymmetric = 1u << 0;
constexpr uint8_t kFlagSparseTiles = 1u << 1;
constexpr uint32_t kMaxPruneM = 256;

[[noreturn]] void corrupt(const std::string& what) { throw Error(ErrorCode::kCorrupt, what); }

// QuantTensorParams' derived members: the value of each code, and whether one is NaN.
void set_code_values(QuantTensorParams& p) {
  p.code_values = scheme_code_values(p.scheme);
  p.nan_codes = std::any_of(p.code_values.begin(), p.code_values.end(), [](float v) { return std::isnan(v); });
}

bool f16_bits_finite(uint16_t bits) { return std::isfinite(detail::f16_bits_to_float(bits)); }

std::string hex16(uint16_t bits) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%04X", bits);
  return text;
}

bool scheme_is_int(Scheme s) { return s == Scheme::kInt8 || s == Scheme::kInt4 || s == Scheme::kInt3 || s == Scheme::kInt2; }
bool scheme_has_row_scales(Scheme s) {
  return s == Scheme::kInt8 || s == Scheme::kFp8 || s == Scheme::kFp6 || s == Scheme::kFp5;
}
bool has_zero_points(const QuantTensorParams& p) { return scheme_is_int(p.scheme) && scheme_is_grouped(p.scheme) && !p.symmetric; }


uint64_t num_tables(const QuantTensorParams& p, uint64_t rows) {
  if (p.lut_rows == 0 || rows == 0) return 1;
  return ceil_div(rows, p.lut_rows);
}

// Bytes of plane A's scale/zero part for a tile of `rect`.
struct SideLayout {
  uint64_t groups = 0;       // groups per tile row
  uint64_t scale_bytes = 0;  // fp16 scales
  uint64_t zero_bytes = 0;   // u8 zero points
  uint64_t bytes() const { return scale_bytes + zero_bytes; }
};
SideLayout side_layout(const QuantTensorParams& p, const TileRect& rect) {
  SideLayout s;
  if (!scheme_is_grouped(p.scheme)) return s;
  s.groups = ceil_div(rect.cols, p.group);
  s.scale_bytes = 2 * rect.rows * s.groups;
  if (has_zero_points(p)) s.zero_bytes = rect.rows * s.groups;
  return s;
}

// Dequantizes one code: the formulas of packer/quantize.h, written with the same float operations
// as dequantize() so the result is bit-identical.
struct ElementDecoder {
  const QuantTensorParams* p;
  const TileRect* rect;
  const uint8_t* side;  // plane A (scales, then zeros)
  SideLayout layout;
  float zero_sym = 0;

  ElementDecoder(const QuantTensorParams& params, const TileRect& r, const uint8_t* side_bytes)
      : p(&params), rect(&r), side(side_bytes), layout(side_layout(params, r)) {
    if (params.bits > 0) zero_sym = static_cast<float>(1u << (params.bits - 1));
  }
  uint16_t scale_bits(uint64_t r, uint64_t c) const {
    if (scheme_has_row_scales(p->scheme)) return p->row_scales[rect->row0 + r];
    uint16_t v;
    std::memcpy(&v, side + 2 * (r * layout.groups + c / p->group), 2);
    return v;
  }
  float decode(uint64_t r, uint64_t c, uint8_t code) const {
    if (scheme_is_lut(p->scheme)) {
      const uint64_t k = uint64_t{1} << p->bits;
      const uint64_t table = p->lut_rows == 0 ? 0 : (rect->row0 + r) / p->lut_rows;
      return detail::f16_bits_to_float(p->tables[table * k + code]);
    }
    const float scale = detail::f16_bits_to_float(scale_bits(r, c));
    if (scheme_is_int(p->scheme)) {
      float zero = zero_sym;
      if (has_zero_points(*p)) zero = static_cast<float>(side[layout.scale_bytes + r * layout.groups + c / p->group]);
      return (static_cast<float>(code) - zero) * scale;
    }
    return p->code_values[code] * scale;
  }
};

// Packs codes LSB first at `bits` bits each into ceil(n*bits/8) bytes (the reference packer).
std::vector<uint8_t> pack_codes(const std::vector<uint8_t>& codes, uint32_t bits) {
  std::vector<uint8_t> out(ceil_div(codes.size() * bits, 8), 0);
  detail::pack_codes_ref(codes.data(), codes.size(), bits, out.data());
  return out;
}

uint8_t unpack_code(const uint8_t* packed, uint64_t packed_bytes, uint64_t index, uint32_t bits) {
  const uint64_t bit = index * bits;
  const uint64_t byte = bit >> 3;
  const uint32_t shift = bit & 7;
  uint32_t v = packed[byte] >> shift;
  if (shift + bits > 8 && byte + 1 < packed_bytes) v |= static_cast<uint32_t>(packed[byte + 1]) << (8 - shift);
  return static_cast<uint8_t>(v & ((1u << bits) - 1));
}

uint32_t codes_symbol_bits(uint32_t bits) { return (bits == 2 || bits == 3 || bits == 4 || bits == 8) ? bits : 8; }

// Dense tiles of rANS-coded tensors with zero points code s = (code - zero) mod 2^bits instead of the
// code (layout kFilterQuantDenseZeroRel; docs/FORMAT.md "Quantized tiles"): a group's codes cluster
// around its zero point, so s has a lower order-0 entropy than the codes, which mix groups centred at
// different zero points (measured by bench_rans: -1.3% bits on MiniLM int4).
bool zero_relative_applies(bool zero_points, Codec codec) { return zero_points && codec == Codec::kRans; }
bool zero_relative_applies(const QuantTensorParams& p, Codec codec) { return zero_relative_applies(has_zero_points(p), codec); }

// The codes [rows][cols] of a tile (one per byte) -> s = (code - zero[r][c / group]) mod 2^bits, one
// per byte. zeros: the tile's u8 zero points [rows][groups] (plane A). decode_quant_tile_ref undoes it.
void zero_relative_symbols(const uint8_t* codes, const uint8_t* zeros, const TileRect& rect, uint64_t groups,
                           uint32_t group, uint32_t bits, uint8_t* out) {
  const uint8_t mask = static_cast<uint8_t>((1u << bits) - 1);
  for (uint64_t r = 0; r < rect.rows; ++r)
    for (uint64_t g = 0; g < groups; ++g) {
      const uint8_t zero = zeros[r * groups + g];
      const uint64_t first = r * rect.cols + g * group, end = r * rect.cols + std::min<uint64_t>((g + 1) * group, rect.cols);
      for (uint64_t i = first; i < end; ++i) out[i] = static_cast<uint8_t>((codes[i] - zero) & mask);
    }
}

// exp4 (packer/exp4.h) is a layout of lossless float tiles, not a plane codec: quantized tiles
// never take it (the packer stores them with codec none under --codec exp4).
void require_quant_codec(Codec codec) {
  if (codec == Codec::kExp4) throw Error(ErrorCode::kInvalidArgument, "codec exp4 does not code quantized tiles");
}

// Codes one plane; returns the coded bytes (the caller keeps the plane raw when they are not smaller).
std::vector<uint8_t> code_plane(std::span<const uint8_t> plane, uint64_t symbols, uint32_t symbol_bits, Codec codec,
                                int level) {
  if (plane.empty() || codec == Codec::kNone) return {plane.begin(), plane.end()};
  if (codec == Codec::kZstd) return zstd_compress(plane, level);
  return rans_encode(plane, symbols, symbol_bits);
}

void decode_plane(std::span<const uint8_t> coded, bool raw, uint64_t symbols, uint32_t symbol_bits, Codec codec,
                  std::span<uint8_t> out) {
  if (out.empty() && !raw) corrupt("an empty plane not marked raw");
  if (raw || codec == Codec::kNone) {
    if (!raw) corrupt("plane not marked raw with codec none");
    if (coded.size() != out.size()) corrupt("raw plane has " + std::to_string(coded.size()) + " bytes, expected " + std::to_string(out.size()));
    if (!out.empty()) std::memcpy(out.data(), coded.data(), out.size());
    return;
  }
  if (codec == Codec::kZstd) {
    zstd_decompress(coded, out);
    return;
  }
  rans_decode(coded, symbols, symbol_bits, out);
}

struct PlaneBytes {
  std::vector<uint8_t> a, b;
  uint64_t code_count = 0;
};

// The stored bytes of a tile with planes a (side) and b (`code_count` codes of `bits` bits). Plane
// B's coder codes `b_coded_from` (b itself, or the zero-relative symbols of the same size); when that
// is not smaller than b, b is stored raw. Plane A likewise, unless code_a is false: then it is stored
// raw. *b_coded (may be null): whether plane B is stored coded.
std::vector<uint8_t> assemble(std::span<const uint8_t> a, std::span<const uint8_t> b,
                              std::span<const uint8_t> b_coded_from, uint64_t code_count, uint32_t bits, Codec codec,
                              int level, bool code_a, bool* b_coded = nullptr) {
  const uint32_t code_bits = codes_symbol_bits(bits);
  const uint64_t b_symbols = code_bits == 8 ? b.size() : code_count;
  const std::span<const uint8_t> spans[2] = {a, b};
  const std::vector<uint8_t> coded[2] = {code_plane(a, a.size(), 8, code_a ? codec : Codec::kNone, level),
                                         code_plane(b_coded_from, b_symbols, code_bits, codec, level)};
  if (b_coded) *b_coded = coded[1].size() < b.size();  // assemble_planes' rule
  return assemble_planes(spans, coded);
}

std::vector<uint8_t> assemble(const PlaneBytes& planes, uint32_t bits, Codec codec, int level) {
  return assemble(planes.a, planes.b, planes.b, planes.code_count, bits, codec, level, true);
}

// Whether a dense tile's plane A (its scales and zero points) is coded: not under rans. There it
// saves ~14% of the plane, 0.6-1.1% of an int4/int3/nf4 file (MiniLM), but its 200-odd-symbol table,
// parsed serially per tile, took ~40% of the rANS GEMV's time on the GPU (docs/BENCHMARKS.md
// "rANS-coded quantized tiles with plane A raw"). zstd tiles are decoded on the CPU only.
bool dense_side_coded(Codec codec) { return codec != Codec::kRans; }

// A dense tile: plane B coded from the zero-relative symbols `b_zero_rel` (packed like b) when it is
// not empty, layout kFilterQuantDenseZeroRel if plane B then ends up coded; else the plain codes and
// layout kFilterQuantDense (plane B stored raw always holds the plain codes).
QuantEncodedTile assemble_dense(std::span<const uint8_t> a, std::span<const uint8_t> b,
                                std::span<const uint8_t> b_zero_rel, uint64_t code_count, uint32_t bits, Codec codec,
                                int level) {
  QuantEncodedTile out;
  bool b_coded = false;
  const bool zero_rel = !b_zero_rel.empty();
  out.tile.stored = assemble(a, b, zero_rel ? b_zero_rel : b, code_count, bits, codec, level, dense_side_coded(codec), &b_coded);
  out.tile.codec = codec;
  out.layout = zero_rel && b_coded ? kFilterQuantDenseZeroRel : kFilterQuantDense;
  out.raw_size = a.size() + b.size();
  return out;
}

}  // namespace

bool scheme_is_grouped(Scheme s) {
  return s == Scheme::kInt4 || s == Scheme::kInt3 || s == Scheme::kInt2 || s == Scheme::kFp4 || s == Scheme::kNf4;
}
bool scheme_is_lut(Scheme s) { return s == Scheme::kLut4 || s == Scheme::kLut3; }
bool scheme_takes_symmetry(Scheme s) {
  return s == Scheme::kInt4 || s == Scheme::kInt3 || s == Scheme::kInt2;
}

uint32_t quant_tile_cols(uint32_t requested_cols, uint32_t group) {
  if (group == 0) return requested_cols;
  const uint64_t rounded = ceil_div(requested_cols, group) * group;
  return static_cast<uint32_t>(std::min<uint64_t>(rounded, 0xFFFFFFFFu / group * group));
}

QuantTensorParams quant_params_from(const QuantizedMatrix& q, const PruneSpec& prune) {
  QuantTensorParams p;
  p.scheme = q.spec.scheme;
  p.bits = scheme_bits(q.spec.scheme);
  p.symmetric = scheme_is_int(p.scheme) && (q.spec.symmetric || p.scheme == Scheme::kInt8);
  p.sparse_tiles = prune.kind != PruneSpec::Kind::kNone;
  p.clip = q.spec.clip;
  p.group = scheme_is_grouped(p.scheme) ? q.spec.group : 0;
  p.lut_rows = scheme_is_lut(p.scheme) ? q.spec.lut_rows : 0;
  p.prune = prune;
  if (scheme_has_row_scales(p.scheme)) p.row_scales = q.scales;
  if (scheme_is_lut(p.scheme)) p.tables = q.tables;
  set_code_values(p);
  return p;
}

std::vector<uint8_t> serialize_quant_params(const QuantTensorParams& p) {
  std::vector<uint8_t> out;
  detail::put_u8(out, static_cast<uint8_t>(p.bits));
  detail::put_u8(out, static_cast<uint8_t>((p.symmetric ? kFlagSymmetric : 0) | (p.sparse_tiles ? kFlagSparseTiles : 0)));
  detail::put_u8(out, static_cast<uint8_t>(p.clip));
  detail::put_u8(out, static_cast<uint8_t>(p.prune.kind));
  detail::put_u32(out, p.group);
  detail::put_u32(out, p.lut_rows);
  const bool nm = p.prune.kind == PruneSpec::Kind::kNM;
  detail::put_u16(out, static_cast<uint16_t>(nm ? p.prune.n : 0));
  detail::put_u16(out, static_cast<uint16_t>(nm ? p.prune.m : 0));
  detail::put_f64(out, p.prune.kind == PruneSpec::Kind::kFraction ? p.prune.fraction : 0.0);
  for (uint16_t v : p.row_scales) detail::put_u16(out, v);
  for (uint16_t v : p.tables) detail::put_u16(out, v);
  return out;
}

QuantTensorParams parse_quant_params(uint8_t scheme_code, std::span<const uint8_t> bytes, uint64_t rows, uint64_t cols,
                                     uint32_t tile_rows, uint32_t tile_cols) {
  (void)tile_rows;
  auto scheme = scheme_from_code(scheme_code);
  if (!scheme || *scheme == Scheme::kLossless) corrupt("unknown scheme " + std::to_string(scheme_code));
  QuantTensorParams p;
  p.scheme = *scheme;
  detail::Cursor c(bytes, "params");
  try {
    p.bits = c.u8("bits");
    const uint8_t flags = c.u8("flags");
    const uint8_t clip = c.u8("clip");
    const uint8_t prune_kind = c.u8("prune kind");
    p.group = c.u32("group");
    p.lut_rows = c.u32("lut rows");
    const uint16_t n = c.u16("prune N"), m = c.u16("prune M");
    const double fraction = c.f64("prune fraction");
    if (p.bits != scheme_bits(p.scheme))
      corrupt("bits " + std::to_string(p.bits) + " do not match scheme " + std::string(scheme_name(p.scheme)));
    if (flags & ~(kFlagSymmetric | kFlagSparseTiles)) corrupt("unknown flags " + std::to_string(flags));
    p.symmetric = flags & kFlagSymmetric;
    p.sparse_tiles = flags & kFlagSparseTiles;
    if (p.symmetric && !scheme_is_int(p.scheme)) corrupt("symmetric flag on a non-integer scheme");
    if (p.scheme == Scheme::kInt8 && !p.symmetric) corrupt("int8 must be symmetric");
    if (clip > static_cast<uint8_t>(Clip::kMinMax)) corrupt("unknown clip " + std::to_string(clip));
    p.clip = static_cast<Clip>(clip);
    if (scheme_is_grouped(p.scheme)) {
      if (p.group != 32 && p.group != 64 && p.group != 128 && p.group != 256)
        corrupt("group " + std::to_string(p.group) + " is not one of 32, 64, 128, 256");
      if (tile_cols % p.group != 0 && tile_cols < cols)
        corrupt("tile cols " + std::to_string(tile_cols) + " are not a multiple of the group " + std::to_string(p.group));
    } else if (p.group != 0) {
      corrupt("group set for a scheme without groups");
    }
    if (!scheme_is_lut(p.scheme) && p.lut_rows != 0) corrupt("lut rows set for a scheme without tables");
    switch (prune_kind) {
      case 0:
        if (n != 0 || m != 0 || fraction != 0.0) corrupt("prune fields set without pruning");
        break;
      case 1:
        if (!(fraction >= 0.0 && fraction <= 1.0) || n != 0 || m != 0) corrupt("bad prune fraction");
        p.prune.kind = PruneSpec::Kind::kFraction;
        p.prune.fraction = fraction;
        break;
      case 2:
        if (n < 1 || n > m || m > kMaxPruneM || fraction != 0.0) corrupt("bad prune N:M " + std::to_string(n) + ":" + std::to_string(m));
        p.prune.kind = PruneSpec::Kind::kNM;
        p.prune.n = n;
        p.prune.m = m;
        break;
      default:
        corrupt("unknown prune kind " + std::to_string(prune_kind));
    }
    uint64_t side_values = 0;
    if (scheme_has_row_scales(p.scheme)) side_values = rows;
    if (scheme_is_lut(p.scheme)) side_values = checked_mul(num_tables(p, rows), uint64_t{1} << p.bits, "tensor params: table size");
    if (side_values > c.remaining() / 2)
      corrupt("side data of " + std::to_string(side_values) + " fp16 values runs past the params (" +
              std::to_string(c.remaining()) + " bytes left)");
    std::vector<uint16_t> values(side_values);
    for (auto& v : values) v = c.u16("side data");
    for (uint64_t i = 0; i < values.size(); ++i)  // the quantizer writes finite values only
      if (!f16_bits_finite(values[i]))
        corrupt(std::string(scheme_has_row_scales(p.scheme) ? "row scale " : "table entry ") + std::to_string(i) +
                " is not finite (fp16 bits " + hex16(values[i]) + ")");
    if (scheme_has_row_scales(p.scheme)) p.row_scales = std::move(values);
    else p.tables = std::move(values);
    if (c.remaining() != 0) corrupt(std::to_string(c.remaining()) + " trailing bytes after the side data");
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kCorrupt) throw;
    corrupt(e.what());
  }
  set_code_values(p);
  return p;
}

QuantEncodedTile encode_quant_tile(const QuantizedMatrix& q, const QuantTensorParams& p, const float* decoded,
                                   const TileRect& rect, Codec codec, int level) {
  require_quant_codec(codec);
  const SideLayout side = side_layout(p, rect);
  const uint64_t n = rect.elements();
  // Plane A's scale/zero part, gathered from the tensor's [rows][groups] arrays.
  std::vector<uint8_t> side_bytes(side.bytes());
  if (side.groups > 0) {
    const uint64_t g0 = rect.col0 / p.group, tensor_groups = q.groups();
    for (uint64_t r = 0; r < rect.rows; ++r)
      for (uint64_t g = 0; g < side.groups; ++g) {
        const uint64_t index = (rect.row0 + r) * tensor_groups + g0 + g;
        std::memcpy(side_bytes.data() + 2 * (r * side.groups + g), &q.scales[index], 2);
        if (side.zero_bytes) side_bytes[side.scale_bytes + r * side.groups + g] = q.zeros[index];
      }
  }
  std::vector<uint8_t> codes(n);
  for (uint64_t r = 0; r < rect.rows; ++r)
    std::memcpy(codes.data() + r * rect.cols, q.codes.data() + (rect.row0 + r) * q.cols + rect.col0, rect.cols);

  // Dense reproduces `decoded` unless an element that must be +0 (pruned) has a code that is not.
  bool dense_ok = true;
  std::vector<uint8_t> bitmap;
  std::vector<uint8_t> occupied_codes;
  if (p.sparse_tiles) {
    bitmap.assign(ceil_div(n, 8), 0);
    ElementDecoder decoder(p, rect, side_bytes.data());
    for (uint64_t r = 0; r < rect.rows; ++r)
      for (uint64_t c = 0; c < rect.cols; ++c) {
        const uint64_t i = r * rect.cols + c;
        const float target = decoded[(rect.row0 + r) * q.cols + rect.col0 + c];
        if (std::bit_cast<uint32_t>(target) != 0) {
          bitmap[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
          occupied_codes.push_back(codes[i]);
        } else if (dense_ok && std::bit_cast<uint32_t>(decoder.decode(r, c, codes[i])) != 0) {
          dense_ok = false;
        }
      }
  }

  QuantEncodedTile best;
  if (dense_ok) {
    const std::vector<uint8_t> b = pack_codes(codes, p.bits);
    std::vector<uint8_t> b_zero_rel;
    if (zero_relative_applies(p, codec)) {
      std::vector<uint8_t> symbols(n);
      zero_relative_symbols(codes.data(), side_bytes.data() + side.scale_bytes, rect, side.groups, p.group, p.bits,
                            symbols.data());
      b_zero_rel = pack_codes(symbols, p.bits);
    }
    best = assemble_dense(side_bytes, b, b_zero_rel, n, p.bits, codec, level);
  }
  if (p.sparse_tiles) {
    PlaneBytes planes;
    planes.a = side_bytes;
    planes.a.insert(planes.a.end(), bitmap.begin(), bitmap.end());
    planes.b = pack_codes(occupied_codes, p.bits);
    planes.code_count = occupied_codes.size();
    std::vector<uint8_t> stored = assemble(planes, p.bits, codec, level);
    if (!dense_ok || stored.size() < best.tile.stored.size()) {
      best.tile.stored = std::move(stored);
      best.tile.codec = codec;
      best.layout = kFilterQuantSparse;
      best.raw_size = planes.a.size() + planes.b.size();
    }
  }
  return best;
}

void QuantTileEncoder::prepare(const QuantizedMatrix& q, const QuantTensorParams& p, const uint8_t* keep,
                               const TileRect& rect) {
  const SideLayout side = side_layout(p, rect);
  const uint64_t n = rect.elements();
  bits_ = p.bits;
  count_ = n;
  sparse_ = p.sparse_tiles;
  dense_ok_ = true;
  // Plane A's scale/zero part: one run of `groups` values per tile row.
  side_.resize(side.bytes());
  if (side.groups > 0) {
    const uint64_t g0 = rect.col0 / p.group, tensor_groups = q.groups();
    for (uint64_t r = 0; r < rect.rows; ++r) {
      const uint64_t index = (rect.row0 + r) * tensor_groups + g0;
      std::memcpy(side_.data() + 2 * r * side.groups, q.scales.data() + index, 2 * side.groups);
      if (side.zero_bytes) std::memcpy(side_.data() + side.scale_bytes + r * side.groups, q.zeros.data() + index, side.groups);
    }
  }
  codes_.resize(n);
  for (uint64_t r = 0; r < rect.rows; ++r)
    std::memcpy(codes_.data() + r * rect.cols, q.codes.data() + (rect.row0 + r) * q.cols + rect.col0, rect.cols);

  if (sparse_) {
    // As encode_quant_tile: an element is occupied when it decodes to anything but +0 and is kept;
    // a pruned element whose code does not decode to +0 rules out the dense layout.
    sparse_a_.assign(side_.begin(), side_.end());
    sparse_a_.resize(side.bytes() + ceil_div(n, 8), 0);
    uint8_t* bitmap = sparse_a_.data() + side.bytes();
    occupied_.resize(n);
    ElementDecoder decoder(p, rect, side_.data());
    uint64_t k = 0;
    for (uint64_t r = 0; r < rect.rows; ++r)
      for (uint64_t c = 0; c < rect.cols; ++c) {
        const uint64_t i = r * rect.cols + c;
        const bool kept = keep == nullptr || keep[(rect.row0 + r) * q.cols + rect.col0 + c] != 0;
        const bool nonzero = std::bit_cast<uint32_t>(decoder.decode(r, c, codes_[i])) != 0;
        if (kept && nonzero) {
          bitmap[i >> 3] |= static_cast<uint8_t>(1u << (i & 7));
          occupied_[k++] = codes_[i];
        } else if (nonzero) {
          dense_ok_ = false;
        }
      }
    sparse_count_ = k;
    sparse_b_.resize(ceil_div(k * bits_, 8) + 8);
    detail::pack_codes_fast(occupied_.data(), k, bits_, sparse_b_.data());
  }
  if (dense_ok_) {
    dense_b_.resize(ceil_div(n * bits_, 8) + 8);
    detail::pack_codes_fast(codes_.data(), n, bits_, dense_b_.data());
  }
  zero_points_ = has_zero_points(p);
  zero_rel_ready_ = false;  // built by the first code(kRans): other codecs never use them
  rect_ = rect;
  scale_bytes_ = side.scale_bytes;
  groups_ = side.groups;
  group_ = p.group;
}

QuantEncodedTile QuantTileEncoder::code(Codec codec, int level) {
  require_quant_codec(codec);
  QuantEncodedTile best;
  if (dense_ok_) {
    const std::span<const uint8_t> b(dense_b_.data(), ceil_div(count_ * bits_, 8));
    std::span<const uint8_t> b_zero_rel;
    if (zero_relative_applies(zero_points_, codec)) {
      if (!zero_rel_ready_) {
        zero_rel_codes_.resize(count_);
        zero_relative_symbols(codes_.data(), side_.data() + scale_bytes_, rect_, groups_, group_, bits_,
                              zero_rel_codes_.data());
        dense_zero_rel_b_.resize(ceil_div(count_ * bits_, 8) + 8);
        detail::pack_codes_fast(zero_rel_codes_.data(), count_, bits_, dense_zero_rel_b_.data());
        zero_rel_ready_ = true;
      }
      b_zero_rel = {dense_zero_rel_b_.data(), b.size()};
    }
    best = assemble_dense(side_, b, b_zero_rel, count_, bits_, codec, level);
  }
  if (sparse_) {
    const std::span<const uint8_t> b(sparse_b_.data(), ceil_div(sparse_count_ * bits_, 8));
    std::vector<uint8_t> stored = assemble(sparse_a_, b, b, sparse_count_, bits_, codec, level, true);
    if (!dense_ok_ || stored.size() < best.tile.stored.size()) {
      best.tile.stored = std::move(stored);
      best.tile.codec = codec;
      best.layout = kFilterQuantSparse;
      best.raw_size = sparse_a_.size() + b.size();
    }
  }
  return best;
}

uint64_t quant_side_plane_bytes(const QuantTensorParams& params, const TileRect& rect, bool sparse) {
  return side_layout(params, rect).bytes() + (sparse ? ceil_div(rect.elements(), 8) : 0);
}

void decode_quant_tile_ref(std::span<const uint8_t> stored, uint8_t layout, Codec codec, uint64_t raw_size,
                           const QuantTensorParams& p, const TileRect& rect, float* out) {
  if (codec == Codec::kExp4) corrupt("codec exp4 in a quantized tile (exp4 codes lossless float tiles only)");
  if (layout != kFilterQuantDense && layout != kFilterQuantSparse && layout != kFilterQuantDenseZeroRel)
    corrupt("filter " + std::to_string(layout) + " is not a quantized tile layout");
  const bool sparse = layout == kFilterQuantSparse;
  const bool zero_rel = layout == kFilterQuantDenseZeroRel;
  if (sparse && !p.sparse_tiles) corrupt("sparse tile in a tensor without sparse tiles");
  if (zero_rel && !has_zero_points(p)) corrupt("zero-relative codes (filter 6) in a tensor without zero points");
  if (zero_rel && codec != Codec::kRans) corrupt("zero-relative codes (filter 6) in a tile whose codec is not rans");
  if (scheme_has_row_scales(p.scheme) && rect.row0 + rect.rows > p.row_scales.size()) corrupt("tile rows outside the row scales");
  const uint64_t n = rect.elements();
  const SideLayout side = side_layout(p, rect);
  const uint64_t bitmap_bytes = sparse ? ceil_div(n, 8) : 0;
  const uint64_t a_bytes = side.bytes() + bitmap_bytes;
  if (raw_size < a_bytes) corrupt("raw size " + std::to_string(raw_size) + " smaller than the side plane");
  const uint64_t b_bytes = raw_size - a_bytes;

  const std::vector<StoredPlane> planes = split_planes(stored, 2);

  std::vector<uint8_t> plane_a(a_bytes);
  try {
    decode_plane(planes[0].bytes, planes[0].raw, a_bytes, 8, codec, plane_a);
  } catch (const Error& e) {
    corrupt(std::string("plane 0: ") + e.what());
  }
  for (uint64_t i = 0; i < side.scale_bytes / 2; ++i) {  // the quantizer writes finite scales only
    const uint16_t bits = static_cast<uint16_t>(plane_a[2 * i] | (plane_a[2 * i + 1] << 8));
    if (!f16_bits_finite(bits)) corrupt("scale " + std::to_string(i) + " is not finite (fp16 bits " + hex16(bits) + ")");
  }
  uint64_t count = n;
  if (sparse) {
    const uint8_t* bitmap = plane_a.data() + side.bytes();
    count = 0;
    for (uint64_t i = 0; i < bitmap_bytes; ++i) count += std::popcount(bitmap[i]);
    if (n % 8 != 0 && (bitmap[bitmap_bytes - 1] >> (n % 8)) != 0) corrupt("bitmap padding bits are set");
  }
  if (b_bytes != ceil_div(count * p.bits, 8))
    corrupt("codes plane of " + std::to_string(b_bytes) + " bytes for " + std::to_string(count) + " codes of " +
            std::to_string(p.bits) + " bits");
  if (zero_rel && planes[1].raw) corrupt("zero-relative codes (filter 6) in a plane stored raw");
  std::vector<uint8_t> plane_b(b_bytes);
  const uint32_t code_bits = codes_symbol_bits(p.bits);
  try {
    decode_plane(planes[1].bytes, planes[1].raw, code_bits == 8 ? b_bytes : count, code_bits, codec, plane_b);
  } catch (const Error& e) {
    corrupt(std::string("plane 1: ") + e.what());
  }
  if ((count * p.bits) % 8 != 0 && (plane_b[b_bytes - 1] >> ((count * p.bits) % 8)) != 0)
    corrupt("codes plane padding bits are set");
  // Codes whose value is NaN (fp8's 0x7F and 0xFF; the quantizer never writes them) are corrupt.
  if (p.nan_codes)
    for (uint64_t k = 0; k < count; ++k)
      if (std::isnan(p.code_values[unpack_code(plane_b.data(), b_bytes, k, p.bits)]))
        corrupt("code " + std::to_string(k) + " is an " + std::string(scheme_name(p.scheme)) + " NaN code");

  ElementDecoder decoder(p, rect, plane_a.data());
  if (!sparse) {
    const uint8_t code_mask = static_cast<uint8_t>((1u << p.bits) - 1);
    for (uint64_t r = 0; r < rect.rows; ++r)
      for (uint64_t col = 0; col < rect.cols; ++col) {
        const uint64_t i = r * rect.cols + col;
        uint8_t code = unpack_code(plane_b.data(), b_bytes, i, p.bits);
        if (zero_rel) {  // code = (s + zero) mod 2^bits
          const uint8_t zero = plane_a[side.scale_bytes + r * side.groups + col / p.group];
          code = static_cast<uint8_t>((code + zero) & code_mask);
        }
        out[i] = decoder.decode(r, col, code);
      }
    return;
  }
  const uint8_t* bitmap = plane_a.data() + side.bytes();
  uint64_t k = 0;
  for (uint64_t r = 0; r < rect.rows; ++r)
    for (uint64_t col = 0; col < rect.cols; ++col) {
      const uint64_t i = r * rect.cols + col;
      out[i] = ((bitmap[i >> 3] >> (i & 7)) & 1) ? decoder.decode(r, col, unpack_code(plane_b.data(), b_bytes, k++, p.bits))
                                                  : 0.0f;
    }
}

}  // namespace wpack
