// Fuzz surface: lossy tensors (packer/quant_tile.h): the params blob parser and the reference tile
// decoder (plane directory, code un-packing, the sparse occupancy bitmap, scales, zero points, LUTs).
//
// Input: mode byte; bits 0-1 pick what runs:
//   0: raw params.  u8 scheme code, u16 rows, u16 cols, u16 tile rows, u16 tile cols, u16 params
//      length + params bytes, then a tile (below). parse_quant_params either refuses the blob or
//      returns params that the tile decoder is then run with.
//   1: made params. u8 scheme (1..11) and fields drawn from the input are made into valid params
//      (serialize_quant_params; row scales and table entries finite); parsing them back must
//      succeed and give the same bytes; then a tile.
//   2, 3: round trip. Weights from the input quantized (packer/quantize.h, some pruned), every tile
//      encoded with encode_quant_tile (and QuantTileEncoder, which must give the same bytes) and
//      decoded again: the values must be dequantize()'s, bit for bit, with pruned weights +0.0.
// A tile: u16 tile index (mod the tile count), u8 layout, u8 codec (mod 4: 3 is exp4, which a
// quantized tile never takes), u32 raw size, then the
// stored bytes. The layout byte: bit 7 set: the byte itself (filter values >= 128, none a layout);
// else bit 1 set: 6 quant_dense_zrel; else bit 0: 5 quant_sparse when set, 4 quant_dense when clear.
#include <bit>
#include <cmath>
#include <vector>

#include "formats/error.h"
#include "fuzz/harness.h"
#include "packer/detail/fp.h"
#include "packer/quant_tile.h"

namespace wpack::fuzz {
namespace {

constexpr uint64_t kMaxElements = 1u << 16;  // rows x cols of the tensors a harness makes

void decode_one_tile(Input& in, const QuantTensorParams& params, uint64_t rows, uint64_t cols, uint32_t tile_rows,
                     uint32_t tile_cols) {
  const TileGeometry g = tile_geometry(wpack::MatrixView{rows, cols}, tile_rows, tile_cols);
  if (g.tile_count() == 0) return;
  const TileRect rect = g.rect(in.u16() % g.tile_count());
  const uint8_t layout_byte = in.u8();
  const uint8_t layout = (layout_byte & 0x80) ? layout_byte
                         : (layout_byte & 2)  ? kFilterQuantDenseZeroRel
                         : (layout_byte & 1)  ? kFilterQuantSparse
                                              : kFilterQuantDense;
  const auto codec = static_cast<Codec>(in.u8() % 4);
  const uint64_t raw_size = in.u32();
  const Bytes stored = in.rest();
  std::vector<float> out(rect.elements());
  try {
    decode_quant_tile_ref(stored, layout, codec, raw_size, params, rect, out.data());
  } catch (const Error&) {
  }
}

void raw_params(Input& in) {
  const uint8_t scheme = in.u8();
  const uint64_t rows = in.u16(), cols = in.u16();
  if (rows == 0 || cols == 0 || rows * cols > kMaxElements) return;
  const uint32_t tile_rows = 1 + in.u16() % rows, tile_cols = 1 + in.u16() % cols;
  const Bytes blob = in.bytes(in.u16());
  QuantTensorParams params;
  try {
    params = parse_quant_params(scheme, blob, rows, cols, tile_rows, tile_cols);
  } catch (const Error&) {
    return;
  }
  decode_one_tile(in, params, rows, cols, tile_rows, tile_cols);
}

void made_params(Input& in) {
  QuantTensorParams p;
  p.scheme = static_cast<Scheme>(1 + in.u8() % 11);
  p.bits = scheme_bits(p.scheme);
  const uint64_t rows = 1 + in.u8() % 64, cols = 1 + in.u16() % 600;
  const uint8_t flags = in.u8();
  const bool is_int = p.scheme == Scheme::kInt8 || p.scheme == Scheme::kInt4 || p.scheme == Scheme::kInt3 ||
                      p.scheme == Scheme::kInt2;
  p.symmetric = p.scheme == Scheme::kInt8 || (is_int && (flags & 1));
  p.sparse_tiles = (flags & 2) != 0;
  if (p.sparse_tiles) {
    p.prune.kind = PruneSpec::Kind::kFraction;
    p.prune.fraction = 0.5;
  }
  p.clip = static_cast<Clip>((flags >> 2) & 1);
  if (scheme_is_grouped(p.scheme)) p.group = 32u << (in.u8() % 4);
  if (scheme_is_lut(p.scheme)) p.lut_rows = (flags & 8) ? 1 + in.u8() % rows : 0;
  if (p.scheme == Scheme::kInt8 || p.scheme == Scheme::kFp8 || p.scheme == Scheme::kFp6 || p.scheme == Scheme::kFp5)
    for (uint64_t r = 0; r < rows; ++r) p.row_scales.push_back(in.u16() & 0xFBFF);  // finite: valid
  if (scheme_is_lut(p.scheme)) {
    const uint64_t tables = p.lut_rows == 0 ? 1 : ceil_div(rows, p.lut_rows);
    for (uint64_t i = 0; i < (tables << p.bits); ++i) p.tables.push_back(in.u16() & 0xFBFF);
  }
  const uint32_t tile_rows = 1 + in.u8() % rows;
  const uint32_t tile_cols = quant_tile_cols(1 + in.u16() % cols, p.group);

  const std::vector<uint8_t> blob = serialize_quant_params(p);
  QuantTensorParams parsed;
  try {
    parsed = parse_quant_params(static_cast<uint8_t>(p.scheme), blob, rows, cols, tile_rows, tile_cols);
  } catch (const Error& e) {
    fail("quant_tile", std::string("valid params refused: ") + e.what());
  }
  if (serialize_quant_params(parsed) != blob) fail("quant_tile", "params changed through parse/serialize");
  decode_one_tile(in, parsed, rows, cols, tile_rows, tile_cols);
}

void round_trip(Input& in) {
  QuantSpec spec;
  spec.scheme = static_cast<Scheme>(1 + in.u8() % 11);
  const uint8_t flags = in.u8();
  spec.symmetric = flags & 1;
  spec.clip = static_cast<Clip>((flags >> 1) & 1);
  spec.group = (flags & 4) ? 32u << ((flags >> 3) & 3) : 0;
  const uint64_t rows = 1 + in.u8() % 24, cols = 1 + in.u16() % 300;
  if (scheme_is_lut(spec.scheme)) spec.lut_rows = (flags & 32) ? 1 + in.u8() % rows : 0;
  const auto codec = static_cast<Codec>(in.u8() % 3);
  const uint32_t tile_rows = 1 + in.u8() % rows;
  const uint32_t requested_cols = 1 + in.u16() % cols;

  // Weights: fp16 values from the input (non-finite ones become 0); a pruned weight is 0.
  const bool prune = flags & 64;
  std::vector<float> w(rows * cols);
  std::vector<uint8_t> keep(w.size(), 1);
  uint64_t pruned = 0;
  for (uint64_t i = 0; i < w.size(); ++i) {
    const uint16_t h = in.u16();
    const float v = detail::f16_bits_to_float(h & 0xFBFF);  // exponent never all ones: finite
    w[i] = v;
    if (prune && (h & 0x0400)) {
      keep[i] = 0;
      w[i] = 0.0f;
      ++pruned;
    }
  }
  const QuantizedMatrix q = quantize(w.data(), rows, cols, spec);
  PruneSpec prune_spec;
  if (prune) {
    prune_spec.kind = PruneSpec::Kind::kFraction;
    prune_spec.fraction = static_cast<double>(pruned) / w.size();
  }
  const QuantTensorParams params = quant_params_from(q, prune_spec);
  std::vector<float> decoded(w.size());
  dequantize(q, decoded.data());
  for (uint64_t i = 0; i < w.size(); ++i)
    if (!keep[i]) decoded[i] = 0.0f;

  const uint32_t tile_cols = quant_tile_cols(requested_cols, params.group);
  const QuantTensorParams parsed =
      parse_quant_params(static_cast<uint8_t>(params.scheme), serialize_quant_params(params), rows, cols, tile_rows, tile_cols);
  const TileGeometry g = tile_geometry(wpack::MatrixView{rows, cols}, tile_rows, tile_cols);
  std::vector<float> out;
  QuantTileEncoder fast;
  for (uint64_t t = 0; t < g.tile_count(); ++t) {
    const TileRect rect = g.rect(t);
    const QuantEncodedTile enc = encode_quant_tile(q, params, decoded.data(), rect, codec, 1);
    // The pipeline's encoder (one, reused from tile to tile and codec to codec) gives the same bytes.
    fast.prepare(q, params, prune ? keep.data() : nullptr, rect);
    const auto other_codec = static_cast<Codec>((static_cast<int>(codec) + 1) % 3);
    for (const Codec c : {codec, other_codec}) {
      const QuantEncodedTile want = c == codec ? enc : encode_quant_tile(q, params, decoded.data(), rect, c, 1);
      const QuantEncodedTile got = fast.code(c, 1);
      if (got.tile.stored != want.tile.stored || got.layout != want.layout || got.raw_size != want.raw_size ||
          got.tile.codec != want.tile.codec)
        fail("quant_tile", "QuantTileEncoder differs from encode_quant_tile on tile " + std::to_string(t) + ", codec " +
                               std::string(codec_name(c)));
    }
    out.assign(rect.elements(), -1.0f);
    decode_quant_tile_ref(enc.tile.stored, enc.layout, enc.tile.codec, enc.raw_size, parsed, rect, out.data());
    for (uint64_t r = 0; r < rect.rows; ++r)
      for (uint64_t c = 0; c < rect.cols; ++c) {
        const float want = decoded[(rect.row0 + r) * cols + rect.col0 + c];
        const float got = out[r * rect.cols + c];
        if (std::bit_cast<uint32_t>(want) != std::bit_cast<uint32_t>(got) && !(std::isnan(want) && std::isnan(got)))
          fail("quant_tile", "round trip of tile " + std::to_string(t) + " changed element (" + std::to_string(r) +
                                 ", " + std::to_string(c) + ")");
      }
  }
}

}  // namespace

void quant_tile(Bytes data) {
  Input in(data);
  switch (in.u8() & 3) {
    case 0: raw_params(in); return;
    case 1: made_params(in); return;
    default: round_trip(in); return;
  }
}

}  // namespace wpack::fuzz
