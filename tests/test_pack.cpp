// The lossless packing pipeline end to end: source tensors -> .wpk -> decoded tensors, bit-exact,
// for every dtype, odd shapes, every filter and codec; the same bytes for any thread count.
#include <catch2/catch.hpp>
#include <cstring>
#include <set>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "packer/tiling.h"
#include "packer/unpack.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;

namespace {

uint64_t product(const std::vector<uint64_t>& s) {
  uint64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// Every dtype at odd shapes; floats get realistic values, the rest random bytes.
MemorySource all_dtypes_source() {
  MemorySource src("memory", {{"format", "pt"}});
  const std::vector<std::vector<uint64_t>> shapes = {{1, 1}, {7, 13}, {3, 4, 5}, {}, {0, 5}, {130, 257}, {1000}};
  uint64_t seed = 1;
  for (uint8_t code = 1; code <= 15; ++code) {
    const DType dtype = *dtype_from_code(code);
    for (const auto& shape : shapes) {
      const uint64_t n = product(shape);
      std::vector<uint8_t> bytes;
      if (dtype == DType::BF16) bytes = test::gaussian_bf16(n, 0.02f, seed);
      else if (dtype == DType::F32) bytes = test::gaussian_f32(n, 0.02f, seed);
      else if (dtype == DType::F16) bytes = test::gaussian_f16(n, 0.02f, seed);
      else bytes = test::random_bytes(n * dtype_size(dtype), seed);
      ++seed;
      src.add(std::string(dtype_name(dtype)) + "/" + shape_to_string(shape), dtype, shape, std::move(bytes));
    }
  }
  return src;
}

void require_round_trip(const MemorySource& src, const std::string& path) {
  auto r = WpkReader::open(path);
  REQUIRE(r->tensors().size() == src.tensors().size());
  for (size_t t = 0; t < src.tensors().size(); ++t) {
    INFO("tensor " << src.tensors()[t].name);
    CHECK(r->tensors()[t].name == src.tensors()[t].name);
    CHECK(r->tensors()[t].dtype == src.tensors()[t].dtype);
    CHECK(r->tensors()[t].shape == src.tensors()[t].shape);
    std::vector<uint8_t> out(src.data(t).size(), 0xCD);
    decode_tensor(*r, t, out, 2);
    CHECK(out == src.data(t));
  }
}

}  // namespace

TEST_CASE("pack: every dtype and odd shape round-trips bit-exactly (auto filter, zstd)") {
  TempDir dir;
  MemorySource src = all_dtypes_source();
  PackOptions opt;
  opt.tile_rows = 64;
  opt.tile_cols = 64;
  opt.codec = Codec::kZstd;
  pack_model(src, dir.file("m.wpk"), opt);
  require_round_trip(src, dir.file("m.wpk"));
}

TEST_CASE("pack: the default codec is rans (GPU-decodable)") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::BF16, {256, 256}, test::gaussian_bf16(256 * 256, 0.02f, 31));
  pack_model(src, dir.file("m.wpk"), PackOptions{});
  auto r = WpkReader::open(dir.file("m.wpk"));
  REQUIRE(r->tiles().size() == 4);
  for (const auto& tile : r->tiles()) CHECK(tile.codec == static_cast<uint8_t>(Codec::kRans));
  require_round_trip(src, dir.file("m.wpk"));
}

TEST_CASE("pack: every filter and codec round-trips") {
  TempDir dir;
  MemorySource src = all_dtypes_source();
  for (Codec codec : {Codec::kNone, Codec::kZstd, Codec::kRans}) {
    for (Filter filter : {Filter::kNone, Filter::kByteShuffle, Filter::kBitShuffle, Filter::kFloatPlanes}) {
      INFO("codec " << codec_name(codec) << ", filter " << filter_name(filter));
      PackOptions opt;
      opt.codec = codec;
      opt.filter = filter;
      opt.tile_rows = 32;
      opt.tile_cols = 48;
      opt.overwrite = true;
      pack_model(src, dir.file("m.wpk"), opt);
      require_round_trip(src, dir.file("m.wpk"));
    }
  }
}

TEST_CASE("pack: the same bytes for 1 and 2 threads") {
  TempDir dir;
  MemorySource src = all_dtypes_source();
  for (Codec codec : {Codec::kZstd, Codec::kRans}) {
    PackOptions opt;
    opt.codec = codec;
    opt.tile_rows = 16;
    opt.tile_cols = 16;
    opt.overwrite = true;
    opt.threads = 1;
    pack_model(src, dir.file("one.wpk"), opt);
    opt.threads = 2;
    pack_model(src, dir.file("two.wpk"), opt);
    CHECK(test::read_file(dir.file("one.wpk")) == test::read_file(dir.file("two.wpk")));
  }
}

TEST_CASE("pack: tile shapes follow the documented rules") {
  uint32_t r = 0, c = 0;
  choose_tile_shape({4096, 4096}, 128, 128, &r, &c);
  CHECK((r == 128 && c == 128));
  choose_tile_shape({100, 50}, 128, 128, &r, &c);  // fits one tile: the tile is the matrix
  CHECK((r == 100 && c == 50));
  choose_tile_shape({3000}, 128, 128, &r, &c);     // 1-D: one tile
  CHECK((r == 1 && c == 3000));
  choose_tile_shape({}, 128, 128, &r, &c);         // 0-d
  CHECK((r == 1 && c == 1));
  choose_tile_shape({uint64_t(kMaxVectorTileElements) * 3}, 128, 128, &r, &c);
  CHECK((r == 1 && c == kMaxVectorTileElements));
  TileGeometry g = tile_geometry({2, 3, 300}, 4, 128);  // 3-D: 6 x 300
  CHECK(g.rows == 6);
  CHECK(g.cols == 300);
  CHECK(g.grid_rows == 2);
  CHECK(g.grid_cols == 3);
  TileRect last = g.rect(5);
  CHECK((last.row0 == 4 && last.col0 == 256 && last.rows == 2 && last.cols == 44));
  CHECK(tile_geometry({0, 5}, 4, 4).tile_count() == 0);
}

TEST_CASE("pack: BF16 weights get the float-plane filter and beat plain zstd") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::BF16, {512, 512}, test::gaussian_bf16(512 * 512, 0.02f, 9));
  PackOptions opt;
  PackReport rep = pack_model(src, dir.file("m.wpk"), opt);
  REQUIRE(rep.tensors.size() == 1);
  CHECK(rep.tensors[0].filter == Filter::kFloatPlanes);
  // Gaussian BF16: exponent entropy ~2.6 bits + 8 bits => ~67% of the original.
  CHECK(double(rep.tensors[0].stored_bytes) / double(rep.tensors[0].original_bytes) < 0.70);
}

TEST_CASE("pack: unpack writes a safetensors file equal to the source, metadata included") {
  TempDir dir;
  MemorySource src = all_dtypes_source();
  pack_model(src, dir.file("m.wpk"), PackOptions{});
  auto r = WpkReader::open(dir.file("m.wpk"));
  unpack_to_safetensors(*r, dir.file("out.safetensors"), false, 0);
  auto back = open_safetensors(dir.file("out.safetensors"));
  REQUIRE(back->tensors().size() == src.tensors().size());
  CHECK(back->metadata().at("format") == "pt");
  for (size_t t = 0; t < src.tensors().size(); ++t) {
    INFO(src.tensors()[t].name);
    auto bytes = back->read(t);
    CHECK(std::vector<uint8_t>(bytes.data(), bytes.data() + bytes.size()) == src.data(t));
  }
  CHECK_THROWS_AS(unpack_to_safetensors(*r, dir.file("out.safetensors"), false, 0), Error);
}

TEST_CASE("pack: a corrupted tile is named with its tensor and tile") {
  TempDir dir;
  MemorySource src;
  src.add("layer.weight", DType::BF16, {64, 64}, test::gaussian_bf16(64 * 64, 0.02f, 3));
  PackOptions opt;
  opt.tile_rows = 32;
  opt.tile_cols = 32;
  pack_model(src, dir.file("m.wpk"), opt);
  uint64_t offset;
  {
    auto r = WpkReader::open(dir.file("m.wpk"));
    offset = r->tiles()[2].offset;
  }
  auto bytes = test::read_file(dir.file("m.wpk"));
  bytes[offset + 5] ^= 0x01;
  test::write_file(dir.file("m.wpk"), bytes);
  auto r = WpkReader::open(dir.file("m.wpk"));
  std::vector<uint8_t> out(64 * 64 * 2);
  try {
    decode_tensor(*r, 0, out, 2);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::kCorrupt);
    CHECK(std::string(e.what()).find("tensor 'layer.weight': tile 2: checksum mismatch") != std::string::npos);
  }
}

TEST_CASE("pack: codec auto keeps per tile the smaller of rans and zstd") {
  TempDir dir;
  MemorySource src = all_dtypes_source();
  src.add("weights", DType::BF16, {256, 300}, test::gaussian_bf16(256 * 300, 0.02f, 77));
  PackOptions opt;
  opt.tile_rows = 64;
  opt.tile_cols = 64;
  opt.codec = Codec::kRans;
  pack_model(src, dir.file("rans.wpk"), opt);
  opt.codec = Codec::kZstd;
  pack_model(src, dir.file("zstd.wpk"), opt);
  opt.codec_auto = true;
  pack_model(src, dir.file("auto.wpk"), opt);
  require_round_trip(src, dir.file("auto.wpk"));
  auto ra = WpkReader::open(dir.file("auto.wpk"));
  auto rr = WpkReader::open(dir.file("rans.wpk"));
  auto rz = WpkReader::open(dir.file("zstd.wpk"));
  REQUIRE(ra->tiles().size() == rr->tiles().size());
  std::set<uint8_t> codecs_used;
  for (size_t i = 0; i < ra->tiles().size(); ++i) {
    INFO("tile " << i);
    CHECK(ra->tiles()[i].stored_size == std::min(rr->tiles()[i].stored_size, rz->tiles()[i].stored_size));
    codecs_used.insert(ra->tiles()[i].codec);
  }
  CHECK(codecs_used.count(static_cast<uint8_t>(Codec::kRans)) == 1);  // rANS wins on BF16 weights

  TensorPolicy base;
  TensorPolicy p = parse_policy_spec("int4:codec=auto", base);
  CHECK(p.codec_auto);
  CHECK_FALSE(p.codec.has_value());
  CHECK(policy_to_string(p).find("codec=auto") != std::string::npos);
}
