// Lossy packing end to end: quantize (+ prune) -> quantized tiles -> .wpk -> reference tile decode,
// bit-exact with dequantize(); size accounting; pruning patterns; policies; metrics; verify;
// determinism across thread counts; the CLI surface (compress --scheme/--override/--keep/--dry-run,
// inspect, unpack --dtype, verify --max-error).
#include <catch2/catch.hpp>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "packer/prune.h"
#include "packer/quant_tile.h"
#include "packer/quantize.h"
#include "packer/rans.h"        // rans_encode: a layout-4 rANS tile as written before layout 6
#include "packer/tile_codec.h"  // assemble_planes, split_planes
#include "packer/tiling.h"
#include "packer/unpack.h"
#include "test_util.h"
#include "verify/verify.h"

using namespace wpack;
using wpack::test::TempDir;

namespace {

std::vector<float> as_floats(const std::vector<uint8_t>& bytes) {
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// Gaussian weights with a few large outliers, F32.
std::vector<uint8_t> weights_f32(size_t n, uint64_t seed) {
  auto bytes = test::gaussian_f32(n, 0.02f, seed);
  auto v = as_floats(bytes);
  for (size_t i = 0; i < n; i += 997) v[i] *= 12.0f;
  std::memcpy(bytes.data(), v.data(), bytes.size());
  return bytes;
}

PackOptions lossy_options(const std::string& spec, int threads = 2) {
  PackOptions o;
  o.threads = threads;
  o.policy = parse_policy_spec(spec, TensorPolicy{});
  return o;
}

// lossy_options for tiles of 64 rows (so bands of 64 rows), overwriting the output.
PackOptions banded_options(const std::string& spec) {
  PackOptions o = lossy_options(spec);
  o.tile_rows = 64;
  o.overwrite = true;
  return o;
}

std::vector<float> decode_all(const WpkReader& r, size_t t) {
  std::vector<float> out(r.tensors()[t].num_elements());
  decode_tensor_f32(r, t, out, 2);
  return out;
}

// What the pipeline must reproduce: dequantize(quantize(pruned weights)), pruned elements +0.
std::vector<float> expected_values(const std::vector<float>& w, uint64_t rows, uint64_t cols, const TensorPolicy& p) {
  std::vector<float> pruned = w;
  const std::vector<uint8_t> mask = prune_mask(p.prune, w.data(), rows, cols);
  if (!mask.empty()) apply_prune_mask(pruned.data(), mask.data(), w.size());
  QuantizedMatrix q = quantize_ref(pruned.data(), rows, cols, p.spec);
  std::vector<float> out(w.size());
  dequantize_ref(q, out.data());
  for (size_t i = 0; i < mask.size(); ++i)
    if (!mask[i]) out[i] = 0.0f;
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return false;
  return true;
}

double tensor_bits_per_weight(const WpkReader& r, size_t t) {
  const WpkTensor& wt = r.tensors()[t];
  uint64_t bytes = r.tensor_index_bytes(t);
  for (uint64_t k = 0; k < wt.tile_count; ++k) bytes += r.tiles()[wt.first_tile + k].stored_size;
  return 8.0 * double(bytes) / double(wt.num_elements());
}

}  // namespace

TEST_CASE("every scheme round-trips through the container bit-exact with dequantize()", "[lossy]") {
  const uint64_t rows = 150, cols = 300;  // edges: short last tile row and column, short last group
  auto bytes = weights_f32(rows * cols, 7);
  const auto w = as_floats(bytes);
  const std::vector<std::string> specs = {"int8", "int4", "int4:g64:sym", "int3:g32", "int2:g256", "fp8", "fp6",
                                          "fp5", "fp4", "nf4", "lut4", "lut3:rows64", "int4:clip=minmax",
                                          "int4:prune=0.5", "fp6:prune=2:4", "lut4:prune=0.3", "nf4:prune=4:8",
                                          "int3:sym", "int2:g64:sym", "int3:prune=2:4", "int2:prune=0.3",
                                          "int4:sym:prune=0.5"};
  for (const char* codec : {"zstd", "rans", "none"}) {
    for (const auto& spec : specs) {
      DYNAMIC_SECTION(spec << " " << codec) {
        TempDir dir;
        MemorySource src;
        src.add("w", DType::F32, {rows, cols}, bytes);
        PackOptions o = lossy_options(spec + ":codec=" + codec);
        o.tile_rows = 64;
        o.tile_cols = 96;
        pack_model(src, dir.file("m.wpk"), o);
        auto r = WpkReader::open(dir.file("m.wpk"));
        REQUIRE(r->tensors()[0].scheme == static_cast<uint8_t>(o.policy.spec.scheme));
        const auto decoded = decode_all(*r, 0);
        REQUIRE(bit_equal(decoded, expected_values(w, rows, cols, o.policy)));
        // Stored metrics are error_stats of exactly what decodes.
        const ErrorStats s = error_stats(w.data(), decoded.data(), w.size());
        CHECK(r->tensors()[0].metrics.rel_error == s.rel_error);
        CHECK(r->tensors()[0].metrics.max_abs_error == s.max_abs_error);
        CHECK(r->tensors()[0].metrics.snr_db == s.snr_db);
        CHECK(r->tensors()[0].metrics.sparsity == s.sparsity);
        REQUIRE(verify_cpu(*r, &src, 2).ok());
      }
    }
  }
}

namespace {

// One quantized (and pruned, per the spec) tensor cut into tiles, for the tile-level tests.
struct QuantCase {
  QuantizedMatrix q;
  QuantTensorParams params;
  std::vector<float> decoded;  // dequantize(q), pruned elements +0.0f
  std::vector<uint8_t> mask;   // prune mask (1 = kept); empty when nothing is pruned
  TileGeometry geometry;
};

QuantCase quant_case(const std::string& spec, uint64_t rows, uint64_t cols, uint64_t seed) {
  const auto w = as_floats(weights_f32(rows * cols, seed));
  const TensorPolicy policy = parse_policy_spec(spec, TensorPolicy{});
  std::vector<float> pruned = w;
  QuantCase c;
  std::vector<uint8_t>& mask = c.mask;
  mask = prune_mask(policy.prune, w.data(), rows, cols);
  if (!mask.empty()) apply_prune_mask(pruned.data(), mask.data(), w.size());
  c.q = quantize(pruned.data(), rows, cols, policy.spec);
  c.decoded.resize(w.size());
  dequantize(c.q, c.decoded.data());
  for (size_t i = 0; i < mask.size(); ++i)
    if (!mask[i]) c.decoded[i] = 0.0f;
  c.params = quant_params_from(c.q, policy.prune);
  c.geometry = tile_geometry(MatrixView{rows, cols}, 64, quant_tile_cols(96, c.q.spec.group));
  return c;
}

}  // namespace

TEST_CASE("QuantTileEncoder writes the same tiles as the reference encode_quant_tile", "[lossy]") {
  const uint64_t rows = 150, cols = 300;  // edges: short last tile row and column, short last group
  const std::vector<std::string> specs = {"int8", "int4", "int4:g64:sym", "int3:g32", "int2:g256", "fp8", "fp6", "fp5",
                                          "fp4", "nf4", "lut4", "lut3:rows64", "int4:prune=0.5", "int2:prune=0.9",
                                          "fp6:prune=2:4", "lut4:prune=0.3", "nf4:prune=4:8", "fp5:prune=0.7",
                                          "int3:sym", "int2:g32:sym", "int3:prune=2:4", "int4:sym:prune=0.5"};
  for (const auto& spec : specs) {
    const QuantCase c = quant_case(spec, rows, cols, 8);
    const TileGeometry& g = c.geometry;
    QuantTileEncoder encoder;  // one encoder for every tile: buffers reused from tile to tile
    for (uint64_t tile = 0; tile < g.tile_count(); ++tile) {
      encoder.prepare(c.q, c.params, c.mask.empty() ? nullptr : c.mask.data(), g.rect(tile));
      for (Codec codec : {Codec::kZstd, Codec::kRans, Codec::kNone}) {
        INFO(spec << " tile " << tile << " codec " << codec_name(codec));
        const QuantEncodedTile ref = encode_quant_tile(c.q, c.params, c.decoded.data(), g.rect(tile), codec, 3);
        const QuantEncodedTile fast = encoder.code(codec, 3);
        REQUIRE(fast.tile.stored == ref.tile.stored);
        REQUIRE(fast.layout == ref.layout);
        REQUIRE(fast.raw_size == ref.raw_size);
        REQUIRE(fast.tile.codec == ref.tile.codec);
      }
    }
  }
}

namespace {

std::vector<float> tile_of(const QuantCase& c, const TileRect& rect) {
  std::vector<float> out;
  for (uint64_t r = 0; r < rect.rows; ++r)
    for (uint64_t col = 0; col < rect.cols; ++col) out.push_back(c.decoded[(rect.row0 + r) * c.q.cols + rect.col0 + col]);
  return out;
}

std::vector<float> decode_tile(const QuantEncodedTile& t, const QuantCase& c, const TileRect& rect) {
  std::vector<float> out(rect.elements());
  decode_quant_tile_ref(t.tile.stored, t.layout, t.tile.codec, t.raw_size, c.params, rect, out.data());
  return out;
}

bool plane_b_raw(const std::vector<uint8_t>& stored) { return split_planes(stored, 2)[1].raw; }

}  // namespace

TEST_CASE("zero-relative codes (layout 6): exactly the dense rANS tiles with zero points, every int scheme decodes bit-exact",
          "[lossy]") {
  const uint64_t rows = 150, cols = 300;
  for (const std::string spec : {"int4", "int3", "int2", "int4:g32", "int2:g256", "int4:clip=minmax", "int4:sym",
                                 "int3:sym", "int2:sym", "int4:prune=0.5", "int3:prune=2:4", "int2:prune=0.2",
                                 "int4:sym:prune=0.5", "fp4", "nf4", "int8"}) {
    const QuantCase c = quant_case(spec, rows, cols, 21);
    const bool zero_points = c.params.bits < 8 && !c.params.symmetric && (c.params.scheme == Scheme::kInt4 ||
                             c.params.scheme == Scheme::kInt3 || c.params.scheme == Scheme::kInt2);
    for (Codec codec : {Codec::kRans, Codec::kZstd, Codec::kNone}) {
      uint64_t zero_rel_tiles = 0, full_tiles = 0, full_zero_rel_tiles = 0;
      for (uint64_t k = 0; k < c.geometry.tile_count(); ++k) {
        INFO(spec << " " << codec_name(codec) << " tile " << k);
        const TileRect rect = c.geometry.rect(k);
        const QuantEncodedTile t = encode_quant_tile(c.q, c.params, c.decoded.data(), rect, codec, 3);
        REQUIRE(bit_equal(decode_tile(t, c, rect), tile_of(c, rect)));
        const bool dense = t.layout != kFilterQuantSparse;
        const bool full = rect.rows == 64 && rect.cols >= 96;
        zero_rel_tiles += t.layout == kFilterQuantDenseZeroRel;
        full_tiles += full;
        full_zero_rel_tiles += full && t.layout == kFilterQuantDenseZeroRel;
        // Layout 6 exactly when dense, zero points, rans and plane B coded; raw planes hold plain codes.
        if (dense) CHECK((t.layout == kFilterQuantDenseZeroRel) == (zero_points && codec == Codec::kRans && !plane_b_raw(t.tile.stored)));
      }
      // Unpruned asymmetric int with rans: the codes of every full tile compress (not always those of
      // the small edge tiles, where a stream's ~40 bytes of table and lane states outweigh the gain).
      if (zero_points && codec == Codec::kRans && c.params.prune.kind == PruneSpec::Kind::kNone)
        CHECK(full_zero_rel_tiles == full_tiles);
      if (!zero_points || codec != Codec::kRans) CHECK(zero_rel_tiles == 0);
    }
  }
}

TEST_CASE("zero-relative codes: smaller than rANS on the plain codes, a layout-4 rANS tile (written before) still decodes",
          "[lossy]") {
  uint64_t plain_coded_tiles = 0;
  for (const std::string spec : {"int4", "int3:g64", "int2:g32"}) {
    INFO(spec);
    const QuantCase c = quant_case(spec, 256, 384, 22);
    uint64_t zero_rel_bytes = 0, plain_bytes = 0;
    for (uint64_t k = 0; k < c.geometry.tile_count(); ++k) {
      const TileRect rect = c.geometry.rect(k);
      const QuantEncodedTile zero_rel = encode_quant_tile(c.q, c.params, c.decoded.data(), rect, Codec::kRans, 3);
      REQUIRE(zero_rel.layout == kFilterQuantDenseZeroRel);
      // The same tile as the encoder wrote it before layout 6: plain codes, both planes rANS-coded.
      const QuantEncodedTile none = encode_quant_tile(c.q, c.params, c.decoded.data(), rect, Codec::kNone, 3);
      const std::vector<StoredPlane> raw = split_planes(none.tile.stored, 2);  // codec none: both planes raw
      REQUIRE((raw[0].raw && raw[1].raw));
      const std::span<const uint8_t> a = raw[0].bytes, b = raw[1].bytes;
      const std::span<const uint8_t> planes[2] = {a, b};
      const std::vector<uint8_t> b_coded = rans_encode(b, rect.elements(), c.params.bits);
      const std::vector<uint8_t> coded[2] = {rans_encode(a, a.size(), 8), b_coded};
      QuantEncodedTile plain = zero_rel;
      plain.tile.stored = assemble_planes(planes, coded);
      plain.layout = kFilterQuantDense;
      plain_coded_tiles += !plane_b_raw(plain.tile.stored);  // int2 g32: the plain codes do not compress
      REQUIRE(bit_equal(decode_tile(plain, c, rect), tile_of(c, rect)));
      // The size comparison: plain codes with plane A raw, as the encoder writes dense rans tiles now.
      const std::vector<uint8_t> coded_b_only[2] = {{a.begin(), a.end()}, b_coded};
      zero_rel_bytes += zero_rel.tile.stored.size();
      plain_bytes += assemble_planes(planes, coded_b_only).size();
    }
    CHECK(zero_rel_bytes < plain_bytes);
  }
  CHECK(plain_coded_tiles >= 8);
}

// Under rans the packer keeps a dense tile's plane A (scales, zero points) raw: its per-tile table
// cost the GPU's rANS GEMV ~40% of its time for ~14% of the plane. A sparse tile's plane A (with
// its bitmap) is still coded where that is smaller; and files whose dense tiles code plane A (as
// the packer wrote them before) decode the same.
TEST_CASE("rans: dense quantized tiles keep plane A raw, sparse tiles code it where it pays, coded plane A still decodes",
          "[lossy]") {
  TempDir dir;
  MemorySource src;
  const uint64_t rows = 256, cols = 384;
  src.add("dense", DType::F32, {rows, cols}, weights_f32(rows * cols, 31));
  src.add("sparse", DType::F32, {rows, cols}, weights_f32(rows * cols, 32));
  PackOptions o = lossy_options("int4");
  o.overrides.push_back({"sparse", parse_policy_spec("int4:prune=2:4", TensorPolicy{})});
  pack_model(src, dir.file("m.wpk"), o);
  auto r = WpkReader::open(dir.file("m.wpk"));
  REQUIRE(r->tensors().size() == 2);
  uint64_t dense_tiles = 0, sparse_coded_a = 0;
  for (size_t t = 0; t < 2; ++t) {
    const WpkTensor& wt = r->tensors()[t];
    for (uint64_t k = wt.first_tile; k < wt.first_tile + wt.tile_count; ++k) {
      INFO(wt.name << " tile " << k);
      const WpkTile& tile = r->tiles()[k];
      REQUIRE(tile.codec == static_cast<uint8_t>(Codec::kRans));
      const std::vector<StoredPlane> planes = split_planes(r->tile_bytes(k), 2);
      REQUIRE(!planes[0].bytes.empty());
      if (tile.filter == kFilterQuantSparse) {
        sparse_coded_a += !planes[0].raw;
      } else {
        CHECK(planes[0].raw);
        CHECK(!planes[1].raw);
        ++dense_tiles;
      }
    }
  }
  CHECK(dense_tiles == r->tensors()[0].tile_count);
  CHECK(sparse_coded_a == r->tensors()[1].tile_count);  // 2:4: the bitmap compresses
  // The same file with every dense tile's plane A coded: smaller, and it decodes to the same values.
  const uint64_t recoded = test::with_side_planes_coded(dir.file("m.wpk"), dir.file("coded-a.wpk"));
  CHECK(recoded == dense_tiles);
  auto coded = WpkReader::open(dir.file("coded-a.wpk"));
  CHECK(coded->file_size() < r->file_size());
  for (size_t t = 0; t < 2; ++t) CHECK(bit_equal(decode_all(*coded, t), decode_all(*r, t)));
  CHECK(verify_cpu(*coded, &src, 2).ok());
}

TEST_CASE("zero-relative codes: layout 6 where it is not allowed, and damaged layout-6 tiles, fail cleanly", "[lossy]") {
  const QuantCase c = quant_case("int4", 64, 128, 23);
  const TileRect rect = c.geometry.rect(0);
  const QuantEncodedTile t = encode_quant_tile(c.q, c.params, c.decoded.data(), rect, Codec::kRans, 3);
  REQUIRE(t.layout == kFilterQuantDenseZeroRel);
  std::vector<float> out(rect.elements());
  auto decode = [&](std::span<const uint8_t> stored, Codec codec, const QuantTensorParams& params) {
    decode_quant_tile_ref(stored, kFilterQuantDenseZeroRel, codec, t.raw_size, params, rect, out.data());
  };
  CHECK_THROWS_WITH(decode(t.tile.stored, Codec::kZstd, c.params), Catch::Contains("codec is not rans"));
  CHECK_THROWS_WITH(decode(t.tile.stored, Codec::kNone, c.params), Catch::Contains("codec is not rans"));
  QuantTensorParams symmetric = c.params;
  symmetric.symmetric = true;
  CHECK_THROWS_WITH(decode(t.tile.stored, Codec::kRans, symmetric), Catch::Contains("without zero points"));
  // Plane B stored raw (the codec-none tile's bytes) under layout 6.
  const QuantEncodedTile none = encode_quant_tile(c.q, c.params, c.decoded.data(), rect, Codec::kNone, 3);
  CHECK_THROWS_WITH(decode(none.tile.stored, Codec::kRans, c.params), Catch::Contains("stored raw"));
  // Every bit of the tile flipped: decodes to something or throws kCorrupt; never out of bounds
  // (the ASan build checks that).
  for (size_t bit = 0; bit < 8 * t.tile.stored.size(); ++bit) {
    std::vector<uint8_t> bad = t.tile.stored;
    bad[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    try {
      decode(bad, Codec::kRans, c.params);
    } catch (const Error& e) {
      REQUIRE(e.code() == ErrorCode::kCorrupt);
    }
  }
}

// Tiles in the one form the format allows (docs/FORMAT.md "Quantized tiles"): the bits after the
// last code are 0 and an empty plane is stored raw; anything else is corrupt, not read past.
TEST_CASE("quantized tiles with set padding bits or an empty plane stored coded are corrupt", "[lossy]") {
  const QuantCase c = quant_case("fp6", 5, 7, 29);  // one 5x7 tile: 35 codes of 6 bits in 27 bytes, 6 padding bits
  const TileRect rect = c.geometry.rect(0);
  REQUIRE(rect.elements() == 35);
  std::vector<float> out(rect.elements());
  const QuantEncodedTile none = encode_quant_tile(c.q, c.params, c.decoded.data(), rect, Codec::kNone, 3);
  auto decode = [&](const std::vector<uint8_t>& stored, Codec codec) {
    decode_quant_tile_ref(stored, none.layout, codec, none.raw_size, c.params, rect, out.data());
  };
  REQUIRE(none.tile.stored.size() == 8 + 27);  // plane directory, plane A empty (row scales in params), plane B raw
  REQUIRE_NOTHROW(decode(none.tile.stored, Codec::kNone));
  for (uint8_t pad : {0x40, 0x80, 0xC0}) {
    std::vector<uint8_t> bad = none.tile.stored;
    bad.back() |= pad;
    CHECK_THROWS_WITH(decode(bad, Codec::kNone), Catch::Contains("codes plane padding bits are set"));
  }
  // Plane A (empty) as a one-byte coded plane, the rest as it was.
  std::vector<uint8_t> coded_a = none.tile.stored;
  coded_a[0] = 1, coded_a[3] = 0;  // stored size 1, bit 31 (raw) clear
  coded_a.insert(coded_a.begin() + 8, uint8_t{0});
  for (Codec codec : {Codec::kRans, Codec::kZstd})
    CHECK_THROWS_WITH(decode(coded_a, codec), Catch::Contains("an empty plane not marked raw"));
}

// F16 weights at F16's largest, +-65504, quantized: a code times its fp16-rounded scale can exceed it
// (int8 65532, fp8 65520), which F16 rounds to infinity; decoded in F16 (decode_tensor, unpack)
// they stay finite, int8's the largest value, and unpack writes no infinity.
TEST_CASE("quantized F16 weights at +-65504 decode to finite F16", "[lossy]") {
  TempDir dir;
  std::vector<uint16_t> h(2 * 16, 0x3C00);  // 1.0
  h[0] = 0x7BFF;                             // 65504
  h[17] = 0xFBFF;                            // -65504
  std::vector<uint8_t> bytes(h.size() * 2);
  std::memcpy(bytes.data(), h.data(), bytes.size());
  for (const char* spec : {"int8", "fp8", "fp4", "int4", "int4:g32:sym"}) {
    INFO(spec);
    MemorySource src;
    src.add("w", DType::F16, {2, 16}, bytes);
    PackOptions o = lossy_options(spec);
    o.overwrite = true;
    pack_model(src, dir.file("m.wpk"), o);
    auto r = WpkReader::open(dir.file("m.wpk"));
    std::vector<uint8_t> got(bytes.size());
    decode_tensor(*r, 0, got, 1);
    unpack_to_safetensors(*r, dir.file("u.safetensors"), true, 1);
    const TensorBytes unpacked = open_safetensors(dir.file("u.safetensors"))->read(0);
    REQUIRE(std::equal(got.begin(), got.end(), unpacked.data(), unpacked.data() + unpacked.size()));
    std::vector<uint16_t> g(h.size());
    std::memcpy(g.data(), got.data(), got.size());
    for (size_t i = 0; i < g.size(); ++i) {
      INFO("element " << i << ": " << std::hex << g[i]);
      CHECK((g[i] & 0x7C00) != 0x7C00);  // finite
    }
    if (std::string(spec) == "int8") {
      CHECK(g[0] == 0x7BFF);
      CHECK(g[17] == 0xFBFF);
    }
  }
}

// --tile 65537x1 passes the CLI's check (65537 elements), but int4 g256 rounds a lossy tensor's tile
// cols up to 256: 65537 x 256 is over 2^24. Refused before anything is written, naming the tensor
// (before, when that tensor's turn came, after the tensors before it were packed).
TEST_CASE("a tile shape over 2^24 elements after the group's rounding is refused before packing", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("first", DType::BF16, {64, 256}, test::gaussian_bf16(64 * 256, 0.02f, 5));
  src.add("big", DType::BF16, {65537, 256}, std::vector<uint8_t>(uint64_t{65537} * 256 * 2, 0));
  PackOptions o = lossy_options("int4:g256");
  o.tile_rows = 65537;
  o.tile_cols = 1;
  std::vector<std::string> packed;  // progress names each tensor once it is packed
  o.progress = [&](uint64_t, uint64_t, const std::string& name) { packed.push_back(name); };
  try {
    pack_model(src, dir.file("m.wpk"), o);
    FAIL("packed");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(e.code() == ErrorCode::kInvalidArgument);
    CHECK(std::string(e.what()).find("tensor 'big': tile shape 65537x256") != std::string::npos);
  }
  CHECK(packed.empty());
  CHECK(!std::filesystem::exists(dir.file("m.wpk")));
}

TEST_CASE("BF16 and F16 sources quantize from their float values and unpack in the source dtype", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("a", DType::BF16, {64, 256}, test::gaussian_bf16(64 * 256, 0.02f, 3));
  src.add("b", DType::F16, {32, 128}, test::gaussian_f16(32 * 128, 0.02f, 4));
  pack_model(src, dir.file("m.wpk"), lossy_options("int4"));
  auto r = WpkReader::open(dir.file("m.wpk"));
  for (size_t t = 0; t < 2; ++t) {
    std::vector<float> w(src.tensors()[t].num_elements());
    convert_to_f32(src.tensors()[t].dtype, src.data(t).data(), w.size(), w.data());
    auto expected = expected_values(w, src.tensors()[t].shape[0], src.tensors()[t].shape[1], lossy_options("int4").policy);
    std::vector<uint8_t> expected_bytes(w.size() * 2), got(w.size() * 2);
    convert_from_f32(src.tensors()[t].dtype, expected.data(), w.size(), expected_bytes.data());
    decode_tensor(*r, t, got, 1);
    REQUIRE(got == expected_bytes);
  }
  REQUIRE(verify_cpu(*r, &src, 2).ok());
}

// One table (packer/pack.cpp fit_lut_by_bands: the fit counts BF16/F16 values, keeps float32 ones)
// and a table per N rows with N dividing the tile rows pack a band of tile rows at a time, pruned or
// not; rows:N otherwise takes the whole-tensor path. Either way the values and the record's metrics
// must be those of quantize() on the whole (pruned) tensor.
TEST_CASE("LUT tensors packed a band at a time decode as quantize() of the whole tensor", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("b", DType::BF16, {350, 257}, test::gaussian_bf16(350 * 257, 0.02f, 61));  // bands of 64, one of 30
  src.add("h", DType::F16, {1030, 520}, test::gaussian_f16(1030 * 520, 0.02f, 62));  // > 2^19 values
  src.add("f", DType::F32, {300, 900}, test::gaussian_f32(300 * 900, 0.02f, 64));    // > 2^18: the bucketed sort
  for (const char* spec : {"lut4", "lut3", "lut4:prune=0.5", "lut3:prune=2:4", "lut4:rows16", "lut3:rows64", "lut4:rows24",
                           "lut4:rows32:prune=0.5"}) {
    const PackOptions o = banded_options(spec);
    pack_model(src, dir.file("m.wpk"), o);
    auto r = WpkReader::open(dir.file("m.wpk"));
    for (size_t t = 0; t < src.tensors().size(); ++t) {
      INFO(spec << " tensor " << t);
      const uint64_t rows = src.tensors()[t].shape[0], cols = src.tensors()[t].shape[1];
      std::vector<float> w(rows * cols);
      convert_to_f32(src.tensors()[t].dtype, src.data(t).data(), w.size(), w.data());
      REQUIRE(decode_all(*r, t) == expected_values(w, rows, cols, o.policy));
      std::vector<float> pruned = w;
      const std::vector<uint8_t> mask = prune_mask(o.policy.prune, w.data(), rows, cols);
      if (!mask.empty()) apply_prune_mask(pruned.data(), mask.data(), w.size());
      const ErrorStats e = dequantized_error_stats(w.data(), quantize(pruned.data(), rows, cols, o.policy.spec),
                                                   mask.empty() ? nullptr : mask.data());
      const ErrorMetrics& m = r->tensors()[t].metrics;
      CHECK(m.rel_error == e.rel_error);
      CHECK(m.max_abs_error == e.max_abs_error);
      CHECK(m.sparsity == e.sparsity);
    }
    // A band holds a table for each thread (1, 2 or 3 tile rows here): the same bytes.
    for (int threads : {1, 3}) {
      INFO(spec << " threads " << threads);
      PackOptions other = o;
      other.threads = threads;
      pack_model(src, dir.file("t.wpk"), other);
      CHECK(test::read_file(dir.file("t.wpk")) == test::read_file(dir.file("m.wpk")));
    }
  }
}

// A pruned tile holds the elements that are kept and decode to anything but +0, which the packer
// decides with the scale or table of each element's row: in every band its own rows', not the first
// band's. Row 3 is zero (its scale or table all zero) and row 67, the same row of the second band,
// is not: with the first band's params its kept weights would read as zero and be dropped.
TEST_CASE("pruned tiles of later bands are coded with their own rows' scales and tables", "[lossy]") {
  TempDir dir;
  const uint64_t rows = 150, cols = 96;
  std::vector<uint8_t> bytes = test::gaussian_bf16(rows * cols, 0.02f, 63);
  std::fill(bytes.begin() + 2 * 3 * cols, bytes.begin() + 2 * 4 * cols, 0);  // row 3: +0
  MemorySource src;
  src.add("w", DType::BF16, {rows, cols}, bytes);
  std::vector<float> w(rows * cols);
  convert_to_f32(DType::BF16, bytes.data(), w.size(), w.data());
  for (const char* spec : {"int8:prune=0.5", "fp8:prune=0.5", "fp6:prune=2:4", "lut4:rows4:prune=0.5", "lut4:rows4"}) {
    INFO(spec);
    const PackOptions o = banded_options(spec);
    pack_model(src, dir.file("m.wpk"), o);
    auto r = WpkReader::open(dir.file("m.wpk"));
    const std::vector<float> decoded = decode_all(*r, 0);
    REQUIRE(bit_equal(decoded, expected_values(w, rows, cols, o.policy)));
    CHECK(std::count(decoded.begin() + 67 * cols, decoded.begin() + 68 * cols, 0.0f) < int64_t(cols) * 3 / 4);
  }
}

// Scales and LUT values are fp16, which bounds the weights a scheme holds: pack_model reports, per
// tensor, how many of them sit at fp16's largest (65504: weights clipped) or smallest (2^-24: weights
// too small; scales only), counted over every band (the big rows lie in a later band) and on the whole-tensor
// path (lut4:rows24 with tiles of 64 rows); ordinary weights report none.
TEST_CASE("fp16 limits: scales and LUT values at fp16's largest or smallest are counted per tensor", "[lossy]") {
  TempDir dir;
  const uint64_t rows = 200, cols = 128, big_row0 = 130, big_rows = 10;
  std::vector<uint8_t> big = test::gaussian_f32(rows * cols, 0.02f, 71);
  const std::vector<uint8_t> huge = test::gaussian_f32(big_rows * cols, 1e8f, 72);  // needs scales > 65504
  std::copy(huge.begin(), huge.end(), big.begin() + 4 * big_row0 * cols);
  std::vector<float> tiny = as_floats(test::gaussian_f32(rows * cols, 1.0f, 73));
  for (float& v : tiny) v *= 1e-12f;  // needs scales below 2^-24
  std::vector<uint8_t> tiny_bytes(4 * tiny.size());
  std::memcpy(tiny_bytes.data(), tiny.data(), tiny_bytes.size());
  MemorySource src;
  src.add("big", DType::F32, {rows, cols}, big);
  src.add("tiny", DType::F32, {rows, cols}, tiny_bytes);
  src.add("ok", DType::F32, {rows, cols}, weights_f32(rows * cols, 74));
  struct Case {
    const char* spec;
    uint64_t groups;  // scales per row; 0: LUT
  };
  for (const Case c : {Case{"int8", 1}, Case{"fp8", 1}, Case{"int4", 1}, Case{"int4:g32:sym", 4}, Case{"fp4", 1},
                       Case{"nf4", 2}, Case{"lut4", 0}, Case{"lut3:rows64", 0}, Case{"lut4:rows24", 0},
                       Case{"lut4:rows24:prune=0.5", 0}, Case{"int4:prune=0.5", 1}}) {
    INFO(c.spec);
    const PackReport report = pack_model(src, dir.file("m.wpk"), banded_options(c.spec));
    REQUIRE(report.tensors.size() == 3);
    const Fp16Limits &b = report.tensors[0].fp16_limits, &t = report.tensors[1].fp16_limits,
                     &ok = report.tensors[2].fp16_limits;
    CHECK(!ok.any());
    CHECK(b.underflowed == 0);
    CHECK(t.saturated == 0);
    if (c.groups != 0) {  // exactly the big rows' scales saturate, every scale of tiny underflows
      CHECK(b.total == rows * c.groups);
      CHECK(b.saturated == big_rows * c.groups);
      CHECK(t.underflowed == rows * c.groups);
    } else {  // some values of the big rows' table saturate; LUT values are not checked for underflow
      const uint64_t k = std::string(c.spec).rfind("lut3", 0) == 0 ? 8 : 16;
      CHECK(b.saturated >= 1);
      CHECK(b.saturated <= k);  // one table of the big rows (rows64: 128..191; rows24: 120..143)
      CHECK(t.underflowed == 0);
    }
  }
}

TEST_CASE("bits per weight counts scales, zeros, bitmaps and index", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::F32, {512, 512}, weights_f32(512 * 512, 11));
  pack_model(src, dir.file("dense.wpk"), lossy_options("int4:codec=none"));
  auto dense = WpkReader::open(dir.file("dense.wpk"));
  const double bpw = tensor_bits_per_weight(*dense, 0);
  // 4 bits of code + 16 bits of fp16 scale and 8 bits of zero point per group of 128 = 4.1875, plus
  // the index (tile records, params) and plane directories.
  CHECK(bpw > 4.1875);
  CHECK(bpw <= 4.4);
  pack_model(src, dir.file("sparse.wpk"), lossy_options("int4:prune=0.5:codec=none"));
  auto sparse = WpkReader::open(dir.file("sparse.wpk"));
  CHECK(tensor_bits_per_weight(*sparse, 0) < bpw);
  bool any_sparse = false;
  for (const auto& t : sparse->tiles()) any_sparse |= t.filter == kFilterQuantSparse;
  CHECK(any_sparse);
  for (const auto& t : dense->tiles()) CHECK(t.filter == kFilterQuantDense);
}

TEST_CASE("quantized tensors of rank 3 and more with a short last dimension are viewed with it folded into the columns",
          "[lossy]") {
  CHECK(choose_row_dims({32, 16, 3, 3}) == 1);      // conv [out, in, kh, kw]: 32 x 144
  CHECK(choose_row_dims({64, 8, 5, 5}) == 1);       // 512 x 25 is still narrow: 64 x 200
  CHECK(choose_row_dims({4, 64, 8, 16}) == 2);      // the most rows that leave 128 columns: 256 x 128
  CHECK(choose_row_dims({3, 3, 64, 16}) == 2);      // Keras conv with 16 outputs: 9 x 1024
  CHECK(choose_row_dims({3, 3, 64, 32}) == 0);      // Keras conv [kh, kw, in, out >= 32]: rows of out
  CHECK(choose_row_dims({8, 4096, 64}) == 0);       // a stack of matrices keeps its own rows
  CHECK(choose_row_dims({768, 12, 64}) == 0);       // so do attention heads
  CHECK(choose_row_dims({512, 1, 4}) == 0);         // 512 x 4 either way
  CHECK(choose_row_dims({512, 2, 4}) == 1);         // nothing reaches 128 columns: as wide as it goes
  CHECK(choose_row_dims({2, 16384, 4}) == 1);       // 2 x 65536, kMaxFoldedCols
  CHECK(choose_row_dims({2, 16385, 4}) == 0);       // wider: the default view, not 2 bands of all of it
  CHECK(choose_row_dims({2, 100000, 3, 3}) == 2);   // as far as it stays within: 200000 x 9
  CHECK(choose_row_dims({0, 16, 3, 3}) == 0);       // no elements, no tiles
  CHECK(choose_row_dims({4096, 3}) == 0);           // rank 2 is its own matrix
  const MatrixView v = matrix_view({32, 16, 3, 3}, 1);
  CHECK((v.rows == 32 && v.cols == 144));
  CHECK((matrix_view({32, 16, 3, 3}, 2).rows == 512 && matrix_view({32, 16, 3, 3}, 0).cols == 3));

  // Packed, unpacked and verified through the view; int4 costs ~4.3 bits a weight, not ~11.
  TempDir dir;
  MemorySource src;
  const std::vector<uint64_t> shape = {32, 16, 3, 3};
  auto bytes = weights_f32(32 * 144, 21);
  const auto w = as_floats(bytes);
  src.add("conv.weight", DType::F32, shape, bytes);
  for (const char* spec : {"int4:codec=none", "int4", "fp6", "int8:prune=0.5"}) {
    DYNAMIC_SECTION(spec) {
      PackOptions o = lossy_options(spec);
      o.overwrite = true;
      pack_model(src, dir.file("conv.wpk"), o);
      auto r = WpkReader::open(dir.file("conv.wpk"));
      const WpkTensor& t = r->tensors()[0];
      CHECK(t.shape == shape);
      CHECK(t.row_dims == 1);
      CHECK((t.rows() == 32 && t.cols() == 144));
      CHECK((t.tile_rows == 32 && t.tile_cols == 144));
      const std::vector<TensorPlan> plans = plan_model(src, o);  // the dry run plans the same view
      CHECK(plans[0].row_dims == 1);
      CHECK((plans[0].tile_rows == 32 && plans[0].tile_cols == 144));
      REQUIRE(bit_equal(decode_all(*r, 0), expected_values(w, 32, 144, o.policy)));
      if (std::string(spec) == "int4:codec=none") CHECK(tensor_bits_per_weight(*r, 0) < 5.0);
      REQUIRE(verify_cpu(*r, &src, 2).ok());
      unpack_to_safetensors(*r, dir.file("conv.safetensors"), true, 1);
      auto back = open_safetensors(dir.file("conv.safetensors"));
      CHECK(back->tensors()[0].shape == shape);
    }
  }
  // Lossless, the same tensor keeps the default view: its coding does not depend on it.
  PackOptions lossless;
  lossless.overwrite = true;
  pack_model(src, dir.file("conv.wpk"), lossless);
  auto r = WpkReader::open(dir.file("conv.wpk"));
  CHECK(r->tensors()[0].row_dims == 0);
  CHECK((r->tensors()[0].rows() == 1536 && r->tensors()[0].cols() == 3));
  CHECK(plan_model(src, lossless)[0].row_dims == 0);
}

TEST_CASE("pruning patterns hold in the decoded tensor", "[lossy]") {
  const uint64_t rows = 64, cols = 200;
  TempDir dir;
  MemorySource src;
  src.add("w", DType::F32, {rows, cols}, weights_f32(rows * cols, 5));
  SECTION("fraction") {
    pack_model(src, dir.file("m.wpk"), lossy_options("int8:prune=0.6"));
    auto r = WpkReader::open(dir.file("m.wpk"));
    auto d = decode_all(*r, 0);
    uint64_t zeros = 0;
    for (float v : d) zeros += v == 0.0f;
    CHECK(zeros >= uint64_t(std::llround(0.6 * rows * cols)));
  }
  for (auto [n, m] : {std::pair{2u, 4u}, std::pair{4u, 8u}}) {
    DYNAMIC_SECTION("N:M " << n << ":" << m) {
      pack_model(src, dir.file("m.wpk"),
                 lossy_options("lut4:prune=" + std::to_string(n) + ":" + std::to_string(m)));
      auto r = WpkReader::open(dir.file("m.wpk"));
      auto d = decode_all(*r, 0);
      for (uint64_t row = 0; row < rows; ++row)
        for (uint64_t c0 = 0; c0 < cols; c0 += m) {
          uint64_t zeros = 0, len = std::min<uint64_t>(m, cols - c0);
          for (uint64_t c = c0; c < c0 + len; ++c) zeros += d[row * cols + c] == 0.0f;
          REQUIRE(zeros >= len - std::min<uint64_t>(n, len));
        }
    }
  }
}

// Pruned tensors of the band-path schemes quantize a row of tiles at a time: magnitude pruning takes
// its threshold over the whole tensor first (MagnitudePruner), so its mask is the whole tensor's;
// N:M is per row. 300 rows in 64-row tiles: 5 bands. And the first NaN or infinity is reported,
// before any band is quantized, also where pruning would drop it.
TEST_CASE("pruning across bands: the whole tensor's mask, a NaN or infinity refused first", "[lossy]") {
  const uint64_t rows = 300, cols = 128;
  TempDir dir;
  auto bytes = weights_f32(rows * cols, 21);
  std::vector<float> w(rows * cols);
  std::memcpy(w.data(), bytes.data(), bytes.size());
  MemorySource src;
  src.add("w", DType::F32, {rows, cols}, bytes);
  for (const char* spec : {"int8:prune=0.6", "int4:prune=0.3", "fp6:prune=0.5"}) {
    INFO(spec);
    const PackOptions o = banded_options(spec);
    pack_model(src, dir.file("m.wpk"), o);
    auto r = WpkReader::open(dir.file("m.wpk"));
    const auto d = decode_all(*r, 0);
    const PruneSpec prune = o.policy.prune;
    const std::vector<uint8_t> mask = prune_mask_magnitude(w.data(), rows * cols, prune.fraction);
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < rows * cols; ++i) {
      if (!mask[i]) REQUIRE(d[i] == 0.0f);
      zeros += d[i] == 0.0f;
    }
    REQUIRE(zeros >= static_cast<uint64_t>(std::llround(prune.fraction * double(rows * cols))));
  }
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bytes.data() + 4 * (10 * cols + 1), &inf, 4);
  std::memcpy(bytes.data() + 4 * (250 * cols + 3), &nan, 4);
  MemorySource bad;
  bad.add("w", DType::F32, {rows, cols}, bytes);
  for (const char* spec : {"int4:prune=0.5", "int4:prune=2:4"}) {
    INFO(spec);
    const PackOptions o = banded_options(spec);
    try {
      pack_model(bad, dir.file("m.wpk"), o);
      FAIL("packing a NaN weight succeeded");
    } catch (const Error& e) {
      const std::string message = e.what();
      CHECK(message.find("tensor 'w'") != std::string::npos);
      CHECK(message.find("weight at row 10, col 1 is not finite") != std::string::npos);  // the first of the two
    }
  }
  // An infinity that pruning would drop is refused all the same (before, pruning every weight let
  // it through, with rel_error inf in the file), in bands and in the whole-tensor path (lut3 in
  // 100-row tables over 64-row tiles).
  for (const char* spec : {"int8:prune=1", "int4:prune=2:4", "lut3:rows100:prune=1"}) {
    INFO(spec);
    std::vector<uint8_t> one_inf(rows * cols * 4, 0);
    std::memcpy(one_inf.data() + 4 * (7 * cols + 5), &inf, 4);
    MemorySource src1;
    src1.add("w", DType::F32, {rows, cols}, one_inf);
    try {
      pack_model(src1, dir.file("m.wpk"), banded_options(spec));
      FAIL("packing an infinite weight succeeded");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("weight at row 7, col 5 is not finite") != std::string::npos);
    }
  }
}

TEST_CASE("policy: defaults, overrides (last match wins), keep", "[lossy]") {
  PackOptions o = lossy_options("int4");
  o.overrides.push_back({".*attn.*", parse_policy_spec("int8", o.policy)});
  o.overrides.push_back({".*attn.k.*", parse_policy_spec("int4:g64:sym", o.policy)});
  o.overrides.push_back({"norm", parse_policy_spec("fp6", o.policy)});
  o.keep.push_back("lm_head");
  auto scheme_of = [&](const std::string& name, std::vector<uint64_t> shape, DType d = DType::F32) {
    return resolve_policy(TensorInfo{name, d, shape}, o);
  };
  CHECK(scheme_of("mlp.w", {8, 8}).spec.scheme == Scheme::kInt4);
  CHECK(scheme_of("attn.q", {8, 8}).spec.scheme == Scheme::kInt8);
  auto k = scheme_of("attn.k", {8, 8});
  CHECK(k.spec.scheme == Scheme::kInt4);
  CHECK(k.spec.group == 64);
  CHECK(k.spec.symmetric);
  CHECK(scheme_of("lm_head", {8, 8}).spec.scheme == Scheme::kLossless);
  CHECK(scheme_of("bias", {8}).spec.scheme == Scheme::kLossless);       // 1-D default
  CHECK(scheme_of("scalar", {}).spec.scheme == Scheme::kLossless);      // 0-d
  CHECK(scheme_of("ids", {8, 8}, DType::I32).spec.scheme == Scheme::kLossless);
  CHECK(scheme_of("layer.norm", {8}).spec.scheme == Scheme::kFp6);      // an explicit override reaches 1-D
  CHECK(policy_to_string(scheme_of("attn.k", {8, 8})) == "int4:g64:sym:clip=mse");
  CHECK_THROWS_AS(parse_policy_spec("int5", o.policy), Error);
  CHECK_THROWS_AS(parse_policy_spec("int4:g48", o.policy), Error);
  CHECK_THROWS_AS(parse_policy_spec("fp6:sym", o.policy), Error);
  o.keep.push_back("([");
  CHECK_THROWS_AS(scheme_of("x", {8, 8}), Error);
}

// A name may have 65535 bytes; libstdc++'s default regex executor recursed once per character a
// loop took and overflowed the stack near 30000 (the README's own ".*(norm|embed|lm_head).*"), and
// a search that fails took time quadratic in the name (minutes here). What a search finds is found
// across newlines, and anchors hold at the name's ends only.
TEST_CASE("policy: patterns with loops match the longest tensor names", "[lossy]") {
  PackOptions o = lossy_options("int4");
  o.overrides.push_back({".*(norm|embed|lm_head).*", parse_policy_spec("int8", o.policy)});
  o.keep.push_back("^a+b$");
  const std::string longest(65535 - 4, 'a');
  CHECK(resolve_policy(TensorInfo{longest + "norm", DType::F32, {8, 8}}, o).spec.scheme == Scheme::kInt8);
  CHECK(resolve_policy(TensorInfo{longest + "mlp.", DType::F32, {8, 8}}, o).spec.scheme == Scheme::kInt4);
  CHECK(resolve_policy(TensorInfo{longest + "aaab", DType::F32, {8, 8}}, o).spec.scheme == Scheme::kLossless);
  CHECK(resolve_policy(TensorInfo{"a\nnorm\nb", DType::F32, {8, 8}}, o).spec.scheme == Scheme::kInt8);
  CHECK(resolve_policy(TensorInfo{"ab\n", DType::F32, {8, 8}}, o).spec.scheme == Scheme::kInt4);  // $ is the end
  CHECK(resolve_policy(TensorInfo{"ab", DType::F32, {8, 8}}, o).spec.scheme == Scheme::kLossless);
  o.keep.push_back(")(");  // invalid alone, whatever it is wrapped in
  CHECK_THROWS_AS(resolve_policy(TensorInfo{"x", DType::F32, {8, 8}}, o), Error);
}

TEST_CASE("1-D tensors stay lossless by default in a lossy file", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::F32, {64, 128}, weights_f32(64 * 128, 1));
  src.add("bias", DType::F32, {128}, weights_f32(128, 2));
  pack_model(src, dir.file("m.wpk"), lossy_options("int4"));
  auto r = WpkReader::open(dir.file("m.wpk"));
  CHECK(r->tensors()[0].scheme == static_cast<uint8_t>(Scheme::kInt4));
  CHECK(r->tensors()[1].scheme == 0);
  std::vector<uint8_t> bias(128 * 4);
  decode_tensor(*r, 1, bias, 1);
  CHECK(bias == src.data(1));
}

TEST_CASE("same bytes for any thread count", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::F32, {300, 520}, weights_f32(300 * 520, 9));
  src.add("v", DType::F32, {256, 256}, weights_f32(256 * 256, 10));
  src.add("u", DType::BF16, {200, 300}, test::gaussian_bf16(200 * 300, 0.02f, 11));
  src.add("x", DType::F16, {130, 520}, test::gaussian_f16(130 * 520, 0.02f, 12));
  // Whole-tensor paths (pruning, LUT) and band paths (grouped schemes streaming their tiles, per-row
  // schemes holding theirs until every row scale is known; error sums fused on one thread, after
  // quantizing on two).
  for (const char* spec : {"int4:prune=2:4", "int4", "fp6", "int8:codec=auto"}) {
    for (int threads : {1, 2}) {
      PackOptions o = lossy_options(spec, threads);
      o.overwrite = true;
      o.overrides.push_back({"^v$", parse_policy_spec("lut3:rows64", o.policy)});
      o.overrides.push_back({"^x$", parse_policy_spec("nf4", o.policy)});
      pack_model(src, dir.file("t" + std::to_string(threads) + ".wpk"), o);
    }
    INFO(spec);
    REQUIRE(test::read_file(dir.file("t1.wpk")) == test::read_file(dir.file("t2.wpk")));
  }
}

TEST_CASE("a non-finite weight is reported with its row in the tensor", "[lossy]") {
  TempDir dir;
  auto bytes = weights_f32(300 * 128, 3);
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(bytes.data() + 4 * (200 * 128 + 7), &inf, 4);
  MemorySource src;
  src.add("w", DType::F32, {300, 128}, bytes);
  for (const char* spec : {"int4", "fp6", "int4:prune=0.5", "lut4"}) {  // band and whole-tensor paths
    INFO(spec);
    try {
      pack_model(src, dir.file("m.wpk"), lossy_options(spec));
      FAIL("packing an infinite weight succeeded");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::kUnsupported);  // bad data, not a bad option: the CLI exits 1
      const std::string message = e.what();
      CHECK(message.find("tensor 'w'") != std::string::npos);
      CHECK(message.find("row 200, col 7") != std::string::npos);
    }
  }
}

TEST_CASE("corrupt lossy tile and params are reported with tensor and tile", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::F32, {256, 256}, weights_f32(256 * 256, 12));
  PackOptions o = lossy_options("int4");
  pack_model(src, dir.file("m.wpk"), o);
  uint64_t offset;
  {
    auto r = WpkReader::open(dir.file("m.wpk"));
    REQUIRE(r->tensors()[0].tile_count == 4);
    offset = r->tiles()[2].offset + 10;
  }
  auto file = test::read_file(dir.file("m.wpk"));
  file[offset] ^= 0x40;
  test::write_file(dir.file("m.wpk"), file);
  auto r = WpkReader::open(dir.file("m.wpk"));
  VerifyReport report = verify_cpu(*r, nullptr, 2);
  REQUIRE_FALSE(report.ok());
  CHECK_THAT(report.tensors[0].error, Catch::Contains("tensor 'w': tile 2"));

  // Params that do not match the tensor are refused with the tensor named.
  for (auto bad : {std::vector<uint8_t>{}, std::vector<uint8_t>(24, 0), std::vector<uint8_t>(30, 4)}) {
    CHECK_THROWS_AS(parse_quant_params(2, bad, 256, 256, 128, 128), Error);
  }
  QuantTensorParams p;
  p.scheme = Scheme::kInt8;
  p.bits = 8;
  p.symmetric = true;
  p.row_scales.assign(10, 0x3C00);
  auto bytes = serialize_quant_params(p);
  CHECK_NOTHROW(parse_quant_params(1, bytes, 10, 5, 10, 5));
  CHECK_THROWS_WITH(parse_quant_params(1, bytes, 11, 5, 10, 5), Catch::Contains("side data"));
  bytes.push_back(0);
  CHECK_THROWS_WITH(parse_quant_params(1, bytes, 10, 5, 10, 5), Catch::Contains("trailing"));
}

TEST_CASE("unpack writes dequantized tensors in the source dtype or as F32", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::BF16, {64, 256}, test::gaussian_bf16(64 * 256, 0.02f, 21));
  src.add("ids", DType::I32, {4}, test::random_bytes(16, 3));
  pack_model(src, dir.file("m.wpk"), lossy_options("fp6"));
  auto r = WpkReader::open(dir.file("m.wpk"));
  unpack_to_safetensors(*r, dir.file("bf16.safetensors"), false, 2);
  unpack_to_safetensors(*r, dir.file("f32.safetensors"), false, 2, {}, DType::F32);
  auto bf16 = open_safetensors(dir.file("bf16.safetensors"));
  auto f32 = open_safetensors(dir.file("f32.safetensors"));
  CHECK(bf16->tensors()[0].dtype == DType::BF16);
  CHECK(f32->tensors()[0].dtype == DType::F32);
  CHECK(f32->tensors()[1].dtype == DType::I32);
  auto decoded = decode_all(*r, 0);
  TensorBytes got = f32->read(0);
  REQUIRE(std::memcmp(got.data(), decoded.data(), decoded.size() * 4) == 0);
  std::vector<uint8_t> as_bf16(decoded.size() * 2);
  convert_from_f32(DType::BF16, decoded.data(), decoded.size(), as_bf16.data());
  TensorBytes got16 = bf16->read(0);
  REQUIRE(std::memcmp(got16.data(), as_bf16.data(), as_bf16.size()) == 0);
}

TEST_CASE("verify: rel_error against the source, and a max-error bound", "[lossy]") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::F32, {128, 256}, weights_f32(128 * 256, 31));
  pack_model(src, dir.file("m.wpk"), lossy_options("int2"));
  auto r = WpkReader::open(dir.file("m.wpk"));
  VerifyReport ok = verify_cpu(*r, &src, 2);
  REQUIRE(ok.ok());
  CHECK(ok.tensors[0].lossy);
  CHECK(ok.tensors[0].rel_error == r->tensors()[0].metrics.rel_error);
  VerifyReport strict = verify_cpu(*r, &src, 2, 1e-3);
  REQUIRE_FALSE(strict.ok());
  CHECK_THAT(strict.tensors[0].error, Catch::Contains("max-error"));
  // A different source (other weights) has a larger error than recorded.
  MemorySource other;
  other.add("w", DType::F32, {128, 256}, weights_f32(128 * 256, 32));
  REQUIRE_FALSE(verify_cpu(*r, &other, 2).ok());
}

TEST_CASE("verify: a source changed toward the decoded weights fails too, and a mismatched one reports no error figures",
          "[lossy]") {
  TempDir dir;
  MemorySource src;
  const std::vector<uint8_t> w = weights_f32(128 * 256, 41);
  src.add("w", DType::F32, {128, 256}, w);
  PackOptions opt = lossy_options("int4");
  opt.policy.prune = parse_prune("0.5");
  pack_model(src, dir.file("m.wpk"), opt);
  auto r = WpkReader::open(dir.file("m.wpk"));
  REQUIRE(verify_cpu(*r, &src, 2).ok());
  // The source zeroed where pruning put zeros: a smaller error than recorded (it passed before)
  std::vector<float> decoded(128 * 256);
  decode_tensor_f32(*r, 0, decoded, 1);
  std::vector<uint8_t> zeroed = w;
  for (size_t i = 0; i < decoded.size(); ++i)
    if (decoded[i] == 0.0f) std::memset(zeroed.data() + 4 * i, 0, 4);
  MemorySource changed("changed.safetensors");
  changed.add("w", DType::F32, {128, 256}, zeroed);
  const VerifyReport lower = verify_cpu(*r, &changed, 2);
  REQUIRE_FALSE(lower.ok());
  CHECK(lower.tensors[0].rel_error < r->tensors()[0].metrics.rel_error);
  CHECK_THAT(lower.tensors[0].error, Catch::Contains("is below the") && Catch::Contains("not the source it was packed from"));
  // Another shape: nothing compared, no error figure
  MemorySource reshaped;
  reshaped.add("w", DType::F32, {256, 128}, w);
  const VerifyReport mismatch = verify_cpu(*r, &reshaped, 2);
  REQUIRE_FALSE(mismatch.ok());
  CHECK_FALSE(mismatch.tensors[0].compared);
  CHECK_THAT(mismatch.tensors[0].error, Catch::Contains("but the source has F32[256, 128]"));
  // A source holding inf or NaN (compress refuses those): named where, not "rel_error -nan"
  for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    std::vector<uint8_t> with_bad = w;
    std::memcpy(with_bad.data() + 4 * (3 * 256 + 5), &bad, 4);
    MemorySource holding("bad.safetensors");
    holding.add("w", DType::F32, {128, 256}, with_bad);
    const VerifyReport nonfinite = verify_cpu(*r, &holding, 2);
    REQUIRE_FALSE(nonfinite.ok());
    CHECK_FALSE(nonfinite.tensors[0].compared);
    CHECK(nonfinite.tensors[0].error == dir.file("m.wpk") + ": tensor 'w': bad.safetensors holds a value that is not "
                                                              "finite at row 3, col 5: not the source it was packed from");
  }
}

TEST_CASE("CLI: compress --scheme with overrides, keep, dry-run, inspect, unpack --dtype, verify", "[lossy][cli]") {
  TempDir dir;
  const std::string model = dir.file("model.safetensors");
  std::vector<TensorInfo> infos = {{"layer.attn.q.weight", DType::BF16, {128, 256}},
                                   {"layer.attn.k.weight", DType::BF16, {128, 256}},
                                   {"layer.mlp.weight", DType::BF16, {256, 128}},
                                   {"layer.norm.weight", DType::BF16, {256}},
                                   {"embed.weight", DType::BF16, {64, 128}}};
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < infos.size(); ++i) data.push_back(test::gaussian_bf16(infos[i].num_elements(), 0.02f, 40 + i));
  write_safetensors(model, infos, data, {{"format", "pt"}}, false);

  auto dry = test::run_wpack({"compress", model, "-o", dir.file("dry.wpk"), "--scheme", "int4", "--override",
                              ".*attn.*=int8", "--override", "attn\\.k=int4:g64:sym", "--keep", "embed",
                              "--dry-run", "--json"});
  REQUIRE(dry.exit_code == 0);
  CHECK_FALSE(test::read_file(dir.file("dry.wpk")).size() > 0);
  auto plan = nlohmann::json::parse(dry.out);
  std::map<std::string, std::string> policy;
  for (const auto& t : plan["tensors"]) policy[t["name"]] = t["policy"];
  CHECK(policy["layer.attn.q.weight"].rfind("int8", 0) == 0);
  CHECK(policy["layer.attn.k.weight"].rfind("int4:g64:sym", 0) == 0);
  CHECK(policy["layer.mlp.weight"].rfind("int4:g128:asym", 0) == 0);
  CHECK(policy["layer.norm.weight"] == "lossless");
  CHECK(policy["embed.weight"] == "lossless");

  for (const char* t : {"1", "2"}) {
    auto r = test::run_wpack({"compress", model, "-o", dir.file(std::string("m") + t + ".wpk"), "-q", "-T", t,
                              "--scheme", "int4", "--prune", "2:4", "--override", ".*attn.*=int8"});
    REQUIRE(r.exit_code == 0);
  }
  {
    // The files differ only in the recorded command line (-T 1 / -T 2): compare tiles and records.
    auto a = WpkReader::open(dir.file("m1.wpk")), b = WpkReader::open(dir.file("m2.wpk"));
    REQUIRE(a->tiles().size() == b->tiles().size());
    for (size_t i = 0; i < a->tiles().size(); ++i) {
      REQUIRE(a->tiles()[i].checksum == b->tiles()[i].checksum);
      REQUIRE(a->tiles()[i].offset == b->tiles()[i].offset);
    }
    for (size_t t = 0; t < a->tensors().size(); ++t) {
      REQUIRE(a->tensors()[t].params == b->tensors()[t].params);
      REQUIRE(a->tensors()[t].metrics.rel_error == b->tensors()[t].metrics.rel_error);
    }
  }

  auto inspect = test::run_wpack({"inspect", dir.file("m1.wpk"), "--json"});
  REQUIRE(inspect.exit_code == 0);
  auto j = nlohmann::json::parse(inspect.out);
  for (const auto& t : j["tensors"]) {
    if (t["name"] == "layer.mlp.weight") {
      CHECK(t["scheme"] == "int4");
      CHECK(t["group"] == 128);
      CHECK(t["sparsity"].get<double>() >= 0.5);
      CHECK(t["rel_error"].get<double>() > 0);
    }
    if (t["name"] == "layer.attn.q.weight") CHECK(t["scheme"] == "int8");
    if (t["name"] == "layer.norm.weight") CHECK(t["scheme"] == "lossless");
  }
  auto table = test::run_wpack({"inspect", dir.file("m1.wpk")});
  CHECK_THAT(table.out, Catch::Contains("snr_db") && Catch::Contains("int4 g128 2:4"));

  REQUIRE(test::run_wpack({"verify", dir.file("m1.wpk"), "--against", model}).exit_code == 0);
  auto strict = test::run_wpack({"verify", dir.file("m1.wpk"), "--against", model, "--max-error", "0.001"});
  CHECK(strict.exit_code == 1);
  CHECK_THAT(strict.err, Catch::Contains("layer.mlp.weight"));
  // without the source, the rel_error recorded at compress time is held against --max-error
  auto recorded = test::run_wpack({"verify", dir.file("m1.wpk"), "--max-error", "0.001"});
  CHECK(recorded.exit_code == 1);
  CHECK_THAT(recorded.err, Catch::Contains("layer.mlp.weight") && Catch::Contains("(recorded at compress time) exceeds --max-error"));
  CHECK(test::run_wpack({"verify", dir.file("m1.wpk"), "--max-error", "1"}).exit_code == 0);
  // the summary says what failed, not that the lossy tensors were within their bounds
  CHECK_THAT(strict.out, Catch::Contains(": FAILED: ") && Catch::Contains(" tensors failed)"));
  CHECK_THAT(strict.out, !Catch::Contains("within their recorded rel_error"));

  REQUIRE(test::run_wpack({"unpack", dir.file("m1.wpk"), "-o", dir.file("deq.safetensors"), "--dtype", "F32"}).exit_code == 0);
  auto deq = open_safetensors(dir.file("deq.safetensors"));
  auto reader = WpkReader::open(dir.file("m1.wpk"));
  for (size_t t = 0; t < deq->tensors().size(); ++t) {
    CHECK(deq->tensors()[t].dtype == DType::F32);
    std::vector<float> expected(reader->tensors()[t].num_elements());
    decode_tensor_f32(*reader, t, expected, 1);
    TensorBytes got = deq->read(t);
    CHECK(std::memcmp(got.data(), expected.data(), got.size()) == 0);
  }
  CHECK(test::run_wpack({"compress", model, "-o", dir.file("x.wpk"), "--scheme", "int4", "--override", "nospec"}).exit_code == 2);
  CHECK(test::run_wpack({"compress", model, "-o", dir.file("x.wpk"), "--scheme", "int4", "--prune", "5:4"}).exit_code == 2);
}
