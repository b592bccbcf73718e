// Lossy tensors in a .wpk: the tensor `params` blob and the layout of one quantized tile
// (docs/FORMAT.md "Lossy tensors"; the byte tables there are the contract, this is its code).
//
// A lossy tensor is quantized as a whole (packer/quantize.h) and cut into tiles like a lossless one
// (packer/tiling.h), with tile_cols a multiple of the group so that no group straddles two tiles.
// Each tile's raw payload is two planes:
//   plane A "side":  grouped schemes: fp16 scales [tile rows][tile groups], then (asymmetric int)
//                    u8 zero points [tile rows][tile groups]; sparse tiles: then the occupancy bitmap
//                    (one bit per tile element, row-major, LSB first, padded with 0 bits to a byte)
//   plane B "codes": the codes (dense: every element; sparse: the occupied elements), row-major,
//                    packed LSB first at `bits` bits each (code i = bits [i*bits, (i+1)*bits) of the
//                    little-endian bit stream), padded with 0 bits to a whole byte; in layout
//                    kFilterQuantDenseZeroRel (dense, rANS-coded, zero points) each code minus its
//                    group's zero point, mod 2^bits, instead
// Per-row scales (int8, fp8/6/5) and LUT tables live in the tensor params, not in the tiles.
// The stored bytes are always a 2-word plane directory (u32 each: stored size, bit 31 = stored raw)
// followed by the two planes, whatever the codec (codec none: both planes raw).
//
// All memory is host memory; nothing keeps a pointer past the call.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "packer/codec.h"
#include "packer/prune.h"
#include "packer/quantize.h"
#include "packer/tile_codec.h"
#include "packer/tiling.h"

namespace wpack {

// Bytes of the fixed part of the params blob (before the per-tensor side data).
inline constexpr uint32_t kQuantParamsHeaderBytes = 24;

// The decoded `params` of a lossy tensor.
struct QuantTensorParams {
  Scheme scheme = Scheme::kInt4;
  uint32_t bits = 0;
  bool symmetric = false;     // int schemes: no zero points (int8 always)
  bool sparse_tiles = false;  // tiles may use the quant_sparse layout
  Clip clip = Clip::kMse;     // as used at compress time (informative)
  uint32_t group = 0;         // grouped schemes (int4/3/2, fp4, nf4): 32..256; else 0
  uint32_t lut_rows = 0;      // LUT schemes: rows per table, 0 = one table
  PruneSpec prune;            // as used at compress time (informative)
  std::vector<uint16_t> row_scales;  // fp16 bits [rows]: int8, fp8/6/5; else empty
  std::vector<uint16_t> tables;      // fp16 bits [num_tables][2^bits]: LUT schemes; else empty
  std::vector<float> code_values;    // not stored: value per code of fp/nf4 schemes (scheme_code_values)
  bool nan_codes = false;            // not stored: some code's value is NaN (fp8's 0x7F, 0xFF): such a
                                     // code is corrupt (the quantizer never writes one)
};

// True for schemes with a group scale along K (int4/3/2, fp4, nf4).
bool scheme_is_grouped(Scheme scheme);
bool scheme_is_lut(Scheme scheme);
// int4/3/2: the schemes a symmetric choice changes (int8 is always symmetric; "int8:sym" is
// accepted and changes nothing).
bool scheme_takes_symmetry(Scheme scheme);

// The params of a quantized tensor (side data taken from q), and their bytes.
QuantTensorParams quant_params_from(const QuantizedMatrix& q, const PruneSpec& prune);
std::vector<uint8_t> serialize_quant_params(const QuantTensorParams& params);

// Parses and validates untrusted params of a tensor with `scheme` byte, 2-D view rows x cols and
// tile shape tile_rows x tile_cols: every field against its allowed values, side data sizes against
// rows and the table count (checked arithmetic, bounds before allocating), no trailing bytes, and a
// tile shape that keeps groups inside tiles. Throws Error(kCorrupt) with a message without file
// context (the caller names file and tensor).
QuantTensorParams parse_quant_params(uint8_t scheme, std::span<const uint8_t> bytes, uint64_t rows, uint64_t cols,
                                     uint32_t tile_rows, uint32_t tile_cols);

// The tile columns a lossy tensor uses when `requested_cols` are asked for: rounded up to a multiple
// of the group for grouped schemes (unchanged otherwise).
uint32_t quant_tile_cols(uint32_t requested_cols, uint32_t group);

// Bytes of a tile's plane A ("side"): fp16 scales and u8 zero points of its groups, plus the
// occupancy bitmap when `sparse` (docs/FORMAT.md "Quantized tiles").
uint64_t quant_side_plane_bytes(const QuantTensorParams& params, const TileRect& rect, bool sparse);

// Filter byte of a dense tile whose plane B, rANS-coded, holds s = (code - zero) mod 2^bits instead of
// each code (zero: the element's group zero point from plane A). Only for schemes with zero points
// (asymmetric int4/3/2), codec rans and plane B not stored raw; the encoder writes it for every such
// dense tile, so raw, zstd and uncoded planes always hold the plain codes (docs/FORMAT.md "Quantized
// tiles"). Layouts 4 and 5: packer/filters.h.
inline constexpr uint8_t kFilterQuantDenseZeroRel = 6;

struct QuantEncodedTile {
  EncodedTile tile;       // tile.filter is unused (kNone); see `layout`
  // The tile record's filter byte: kFilterQuantDense, kFilterQuantSparse or kFilterQuantDenseZeroRel.
  uint8_t layout = kFilterQuantDense;
  uint64_t raw_size = 0;  // bytes of plane A + plane B before coding (the tile record's raw size)
};

// Encodes tile `rect` of the quantized tensor q (whole tensor, rows x cols). `decoded` is the whole
// tensor as it must decode (dequantize(q), with pruned elements set to +0.0f), row-major floats.
// Dense layout when it reproduces `decoded` exactly and is not larger; sparse (only when
// params.sparse_tiles) stores elements whose decoded value is not +0.0f. Planes are coded with
// `codec` (zstd at `level`; rans with symbols of `bits` bits for codes when bits is 2, 3, 4 or 8,
// else 8), each kept raw when coding does not shrink it. With codec rans and zero points, a dense
// tile's plane B codes the zero-relative symbols (layout kFilterQuantDenseZeroRel) unless the plane
// stays raw (then plain codes, kFilterQuantDense). Deterministic. Throws Error(kInvalidArgument) for
// codec kExp4 (lossless float tiles only), as does QuantTileEncoder::code.
QuantEncodedTile encode_quant_tile(const QuantizedMatrix& q, const QuantTensorParams& params, const float* decoded,
                                   const TileRect& rect, Codec codec, int level);

// The same tiles as encode_quant_tile, for the packing pipeline: one encoder per thread, its buffers
// reused from tile to tile, codes packed a word at a time, and the planes built once for several
// codecs. Instead of the whole decoded tensor it takes `keep`, the prune mask of q's elements
// ([rows][cols] row-major, 1 = kept, 0 = pruned to +0.0f; null when nothing is pruned): the tile is
// then byte for byte encode_quant_tile(q, params, D, rect, codec, level) with D = dequantize(q) and
// the pruned elements of D set to +0.0f (tested). Usage: prepare(...) once per tile, then code(...)
// for each codec tried.
class QuantTileEncoder {
 public:
  void prepare(const QuantizedMatrix& q, const QuantTensorParams& params, const uint8_t* keep, const TileRect& rect);
  QuantEncodedTile code(Codec codec, int level);  // not const: builds the zero-relative symbols once

 private:
  uint32_t bits_ = 0;
  bool dense_ok_ = true, sparse_ = false;
  uint64_t count_ = 0, sparse_count_ = 0;  // codes in the dense and the sparse layout
  std::vector<uint8_t> side_;           // plane A of the dense layout: scales, zeros
  std::vector<uint8_t> codes_;          // the tile's codes, one per byte
  std::vector<uint8_t> dense_b_;        // plane B of the dense layout (+ 8 bytes of slack)
  bool zero_points_ = false;            // the tensor has zero points (rANS then codes dense_zero_rel_b_)
  // The zero-relative symbols, built by the first code(kRans) after prepare().
  bool zero_rel_ready_ = false;
  std::vector<uint8_t> zero_rel_codes_;    // (code - zero) mod 2^bits, one per byte
  std::vector<uint8_t> dense_zero_rel_b_;  // zero_rel_codes_ packed (+ 8 bytes of slack)
  TileRect rect_{};                     // the prepared tile, and its plane A geometry
  uint64_t scale_bytes_ = 0, groups_ = 0;
  uint32_t group_ = 0;
  std::vector<uint8_t> occupied_;       // the codes of the occupied elements, one per byte
  std::vector<uint8_t> sparse_a_;       // plane A of the sparse layout: side, then the bitmap
  std::vector<uint8_t> sparse_b_;       // plane B of the sparse layout (+ 8 bytes of slack)
};

// The scalar reference decoder: the tile's dequantized values (rect.elements() floats, row-major)
// from its stored bytes, its record's filter byte (layout), codec and raw size, and the tensor's
// parsed params. Bit-exact with dequantize() of the quantized tensor; unoccupied elements of sparse
// tiles are +0.0f. Throws Error(kCorrupt) (no file context) on any inconsistency, codec kExp4
// included; never reads or writes out of bounds.
void decode_quant_tile_ref(std::span<const uint8_t> stored, uint8_t layout, Codec codec, uint64_t raw_size,
                           const QuantTensorParams& params, const TileRect& rect, float* out);

}  // namespace wpack
