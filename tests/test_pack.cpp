// The lossless packing pipeline end to end: source tensors -> .wpk -> decoded tensors, bit-exact,
// for every dtype, odd shapes, every filter and codec; the same bytes for any thread count.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "packer/quantize.h"  // convert_to_f32
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
  for (Codec codec : {Codec::kZstd, Codec::kRans, Codec::kExp4}) {
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
  choose_tile_shape(2, MatrixView{4096, 4096}, 2, 128, 128, &r, &c);
  CHECK((r == 128 && c == 128));
  choose_tile_shape(2, MatrixView{100, 50}, 2, 128, 128, &r, &c);  // fits one tile: the tile is the matrix
  CHECK((r == 100 && c == 50));
  choose_tile_shape(1, MatrixView{1, 3000}, 2, 128, 128, &r, &c);     // 1-D: one tile
  CHECK((r == 1 && c == 3000));
  choose_tile_shape(0, MatrixView{1, 1}, 4, 128, 128, &r, &c);         // 0-d
  CHECK((r == 1 && c == 1));
  // 1-D tiles hold 64 KiB of raw bytes at most, whatever --tile says
  for (uint32_t elem_size : {1u, 2u, 4u, 8u}) {
    choose_tile_shape(1, MatrixView{1, uint64_t{1} << 20}, elem_size, 128, 128, &r, &c);
    CHECK((r == 1 && c == 65536 / elem_size));
    choose_tile_shape(1, MatrixView{1, 65536 / elem_size}, elem_size, 4, 4, &r, &c);
    CHECK((r == 1 && c == 65536 / elem_size));
    choose_tile_shape(1, MatrixView{1, 65536 / elem_size + 1}, elem_size, 128, 128, &r, &c);
    CHECK((r == 1 && c == 65536 / elem_size));
  }
  TileGeometry g = tile_geometry(matrix_view({2, 3, 300}, 0), 4, 128);  // 3-D: 6 x 300
  CHECK(g.rows == 6);
  CHECK(g.cols == 300);
  CHECK(g.grid_rows == 2);
  CHECK(g.grid_cols == 3);
  TileRect last = g.rect(5);
  CHECK((last.row0 == 4 && last.col0 == 256 && last.rows == 2 && last.cols == 44));
  CHECK(tile_geometry(MatrixView{0, 5}, 4, 4).tile_count() == 0);
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

TEST_CASE("pack: a tensor named '__metadata__' (an HDF5 dataset may be) is refused: unpack could not write it") {
  TempDir dir;
  MemorySource src("model.h5");
  src.add("w", DType::F32, {4}, test::gaussian_f32(4, 1.0f, 1));
  src.add("__metadata__", DType::F32, {2}, test::gaussian_f32(2, 1.0f, 2));
  try {
    pack_model(src, dir.file("m.wpk"), PackOptions{});
    FAIL("packed");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::kUnsupported);
    CHECK(std::string(e.what()) == "model.h5: tensor '__metadata__': safetensors reserves this name, so wpack unpack "
                                   "could not write it back");
  }
  CHECK_FALSE(std::filesystem::exists(dir.file("m.wpk")));
}

// unpack --dtype F16/BF16 of a lossless F64 tensor rounds each value once, to nearest even (through
// float it rounded twice: 1 + 2^-11 + 2^-40 gave 1, and 65519.99999 infinity).
TEST_CASE("pack: unpack --dtype F16 and BF16 round F64 values once") {
  TempDir dir;
  const std::vector<double> values = {1 + 0x1p-11 + 0x1p-40, 65519.99999, 1 + 0x1p-8 + 0x1p-40, -65519.99999,
                                      1e300, 1 + 0x1p-11, 3.0, -0x1p-30};
  const std::vector<uint16_t> f16 = {0x3C01, 0x7BFF, 0x3C04, 0xFBFF, 0x7C00, 0x3C00, 0x4200, 0x8000};
  const std::vector<uint16_t> bf16 = {0x3F80, 0x4780, 0x3F81, 0xC780, 0x7F80, 0x3F80, 0x4040, 0xB080};
  std::vector<uint8_t> bytes(values.size() * 8);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  MemorySource src;
  src.add("w", DType::F64, {2, 4}, bytes);
  pack_model(src, dir.file("m.wpk"), PackOptions{});
  auto r = WpkReader::open(dir.file("m.wpk"));
  for (const auto& [dtype, expect] : {std::pair{DType::F16, f16}, std::pair{DType::BF16, bf16}}) {
    INFO(dtype_name(dtype));
    const std::string out = dir.file(std::string(dtype_name(dtype)) + ".safetensors");
    unpack_to_safetensors(*r, out, false, 1, {}, dtype);
    auto back = open_safetensors(out);
    REQUIRE(back->tensors()[0].dtype == dtype);
    TensorBytes got = back->read(0);
    std::vector<uint16_t> bits(values.size());
    REQUIRE(got.size() == bits.size() * 2);
    std::memcpy(bits.data(), got.data(), got.size());
    CHECK(bits == expect);
  }
}

// A lossy F64 tensor is quantized as float32 values: one beyond float32's range, or one whose
// weights all lie below float32's smallest normal value, is refused by name (1e300 read "not
// finite"; 3e-300 everywhere packed as zeros with rel_error 0, which verify --against passed).
TEST_CASE("pack: a lossy F64 tensor outside float32's range is refused, naming the value") {
  TempDir dir;
  auto f64_bytes = [](const std::vector<double>& v) {
    std::vector<uint8_t> b(v.size() * 8);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  std::vector<double> ok(4 * 32), huge(4 * 32), tiny(4 * 32);
  for (size_t i = 0; i < ok.size(); ++i) {
    ok[i] = std::sin(double(i)) * 0.1 + 1e-300;  // a tiny weight among normal ones is fine
    huge[i] = ok[i];
    tiny[i] = ok[i] * 1e-299;
  }
  huge[33] = -1e300;
  PackOptions options;
  options.policy.spec = QuantSpec{Scheme::kInt8};
  for (const auto& [values, message] :
       {std::pair{huge, "m.h5: tensor 'w': weight at row 1, col 1 is -1e+300, beyond float32's range"},
        std::pair{tiny, "m.h5: tensor 'w': every weight is below float32's smallest normal value (the largest is "}}) {
    MemorySource src("m.h5");
    src.add("w", DType::F64, {4, 32}, f64_bytes(values));
    try {
      pack_model(src, dir.file("m.wpk"), options);
      FAIL("packed");
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(e.code() == ErrorCode::kUnsupported);
      CHECK(std::string(e.what()).rfind(message, 0) == 0);
      CHECK(std::string(e.what()).find("--keep packs it lossless") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(dir.file("m.wpk")));
  }
  MemorySource src("m.h5");
  src.add("w", DType::F64, {4, 32}, f64_bytes(ok));
  const PackReport report = pack_model(src, dir.file("m.wpk"), options);
  REQUIRE(report.tensors.size() == 1);
  CHECK(report.tensors[0].metrics.rel_error > 0);
  CHECK(report.tensors[0].metrics.rel_error < 0.01);
}

// unpack writes the source metadata the .wpk recorded ("source_metadata"), read member by member.
// A file written by other tools may repeat the key (the format's JSON does not forbid it): the
// last occurrence wins, as in one JSON value, a non-object one leaving none.
TEST_CASE("pack: unpack writes source_metadata, the last of a repeated key winning") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::map<std::string, std::string>>> cases = {
      {R"({"source_metadata":{"a":"1","n":2}})", {{"a", "1"}}},  // strings only
      {R"({"source_metadata":{"a":"1"},"source_metadata":{"b":"2"}})", {{"b", "2"}}},
      {R"({"source_metadata":{"a":"1"},"source_metadata":5})", {}},
      {R"({"source_metadata":5,"x":{"source_metadata":{"c":"3"}}})", {}},  // only the top level's
  };
  for (const auto& [json, expected] : cases) {
    INFO(json);
    const std::string path = dir.file("m.wpk"), out = dir.file("m.safetensors");
    {
      WpkWriter w(path, true);
      w.commit(json);
    }
    auto r = WpkReader::open(path);
    unpack_to_safetensors(*r, out, true, 1);
    CHECK(open_safetensors(out)->metadata() == expected);
  }
}

// unpack --dtype converts FP8 tensors too (it left them as F8): every E4M3 and E5M2 code, exactly.
TEST_CASE("pack: unpack --dtype F32, F16 and BF16 convert every FP8 code exactly") {
  TempDir dir;
  std::vector<uint8_t> codes(256);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(i);
  // The codes' values from their definitions (OCP FP8: E4M3 bias 7, no infinities, S.1111.111 NaN;
  // E5M2 bias 15, IEEE infinities and NaNs).
  auto e4m3 = [](uint8_t b) -> double {
    const int e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return std::nan("");
    const double v = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    return (b & 0x80) ? -v : v;
  };
  auto e5m2 = [](uint8_t b) -> double {
    const int e = (b >> 2) & 31, m = b & 3;
    double v = e == 0 ? std::ldexp(m, -16) : std::ldexp(4 + m, e - 17);
    if (e == 31) v = m == 0 ? HUGE_VAL : std::nan("");
    return (b & 0x80) ? -v : v;
  };
  MemorySource src;
  src.add("e4m3", DType::F8_E4M3, {16, 16}, codes);
  src.add("e5m2", DType::F8_E5M2, {16, 16}, codes);
  pack_model(src, dir.file("m.wpk"), PackOptions{});
  auto r = WpkReader::open(dir.file("m.wpk"));
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    INFO(dtype_name(dtype));
    const std::string out = dir.file(std::string(dtype_name(dtype)) + ".safetensors");
    unpack_to_safetensors(*r, out, false, 1, {}, dtype);
    auto back = open_safetensors(out);
    for (size_t t = 0; t < 2; ++t) {
      REQUIRE(back->tensors()[t].dtype == dtype);
      TensorBytes got = back->read(t);
      std::vector<float> values(codes.size());
      REQUIRE(got.size() == codes.size() * dtype_size(dtype));
      convert_to_f32(dtype, got.data(), values.size(), values.data());
      for (size_t i = 0; i < codes.size(); ++i) {
        INFO(back->tensors()[t].name << " code " << i);
        const double expect = t == 0 ? e4m3(codes[i]) : e5m2(codes[i]);
        if (std::isnan(expect)) {
          CHECK(std::isnan(values[i]));
        } else {
          CHECK(static_cast<double>(values[i]) == expect);
          CHECK(std::signbit(values[i]) == std::signbit(expect));
        }
      }
    }
  }
  // Without --dtype they stay FP8, byte for byte.
  unpack_to_safetensors(*r, dir.file("same.safetensors"), false, 1);
  auto same = open_safetensors(dir.file("same.safetensors"));
  CHECK(same->tensors()[0].dtype == DType::F8_E4M3);
  CHECK(same->tensors()[1].dtype == DType::F8_E5M2);
  TensorBytes same_bytes = same->read(0);
  CHECK(std::vector<uint8_t>(same_bytes.data(), same_bytes.data() + same_bytes.size()) == codes);
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

namespace {

// The codec bytes of tensor `t`'s tiles.
std::set<uint8_t> tile_codecs(const WpkReader& r, size_t t) {
  std::set<uint8_t> codecs;
  const WpkTensor& info = r.tensors()[t];
  for (uint64_t k = 0; k < info.tile_count; ++k) codecs.insert(r.tiles()[info.first_tile + k].codec);
  return codecs;
}

constexpr uint8_t kNoneCode = static_cast<uint8_t>(Codec::kNone), kRansCode = static_cast<uint8_t>(Codec::kRans),
                  kExp4Code = static_cast<uint8_t>(Codec::kExp4);

template <typename Fn>
std::string invalid_argument_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::kInvalidArgument);
    return e.what();
  }
  FAIL("expected Error(kInvalidArgument)");
  return "";
}

}  // namespace

TEST_CASE("pack: codec exp4 codes lossless BF16 and F32 with exp4 (floatplanes), other lossless tensors rans") {
  TempDir dir;
  MemorySource src = all_dtypes_source();
  src.add("weights", DType::BF16, {256, 300}, test::gaussian_bf16(256 * 300, 0.02f, 78));
  for (const std::optional<Filter> filter : {std::optional<Filter>{}, std::optional<Filter>{Filter::kFloatPlanes}}) {
    INFO("filter " << (filter ? "floatplanes" : "auto"));
    PackOptions opt;
    opt.tile_rows = 64;
    opt.tile_cols = 64;
    opt.codec = Codec::kExp4;
    opt.filter = filter;
    opt.overwrite = true;
    PackReport rep = pack_model(src, dir.file("exp4.wpk"), opt);
    require_round_trip(src, dir.file("exp4.wpk"));
    auto r = WpkReader::open(dir.file("exp4.wpk"));
    uint64_t exp4_tiles = 0;
    for (size_t t = 0; t < r->tensors().size(); ++t) {
      const WpkTensor& info = r->tensors()[t];
      INFO(info.name);
      const std::set<uint8_t> codecs = tile_codecs(*r, t);
      if (info.dtype == DType::BF16 || info.dtype == DType::F32) {
        for (uint8_t c : codecs) CHECK((c == kExp4Code || c == kNoneCode));  // raw where exp4 does not shrink
        for (uint64_t k = 0; k < info.tile_count; ++k) {
          const WpkTile& tile = r->tiles()[info.first_tile + k];
          if (tile.codec == kExp4Code) {
            CHECK(tile.filter == static_cast<uint8_t>(Filter::kFloatPlanes));
            ++exp4_tiles;
          }
        }
        if (info.num_elements() >= 1000) CHECK(codecs.count(kExp4Code) == 1);
      } else {
        CHECK(codecs.count(kExp4Code) == 0);
        for (uint8_t c : codecs) CHECK((c == kRansCode || c == kNoneCode));
      }
    }
    CHECK(exp4_tiles > 20);
    // exp4 on gaussian BF16: 12 bits per weight and a little more.
    const PackedTensor& w = rep.tensors.back();
    REQUIRE(w.name == "weights");
    CHECK(double(w.stored_bytes) / double(w.original_bytes) == Approx(0.75).margin(0.01));
  }
}

TEST_CASE("pack: codec exp4 stores quantized tensors with codec none, and codec=exp4 in an override") {
  TempDir dir;
  MemorySource src;
  src.add("q.weight", DType::BF16, {64, 256}, test::gaussian_bf16(64 * 256, 0.02f, 41));
  src.add("q8.weight", DType::F32, {32, 128}, test::gaussian_f32(32 * 128, 0.02f, 42));
  src.add("norm.weight", DType::BF16, {256}, test::gaussian_bf16(256, 1.0f, 43));
  src.add("h.weight", DType::F16, {64, 64}, test::gaussian_f16(64 * 64, 0.02f, 44));
  PackOptions opt;
  opt.codec = Codec::kExp4;
  opt.policy = parse_policy_spec("int4", TensorPolicy{});
  opt.overrides.push_back({"^q8", parse_policy_spec("int8:codec=exp4", TensorPolicy{})});
  opt.overrides.push_back({"^h\\.", parse_policy_spec("lossless", TensorPolicy{})});
  pack_model(src, dir.file("m.wpk"), opt);
  auto r = WpkReader::open(dir.file("m.wpk"));
  CHECK(tile_codecs(*r, 0) == std::set<uint8_t>{kNoneCode});  // int4
  CHECK(tile_codecs(*r, 1) == std::set<uint8_t>{kNoneCode});  // int8, codec=exp4
  CHECK(tile_codecs(*r, 2) == std::set<uint8_t>{kExp4Code});  // 1-D BF16: lossless
  CHECK(tile_codecs(*r, 3) == std::set<uint8_t>{kRansCode});  // F16: lossless, rans
  CHECK(r->tensors()[0].scheme != 0);
  CHECK(r->tensors()[1].scheme != 0);
  // What the tensors decode to. Quantized: the scalar reference quantizer's dequantized values, bit
  // for bit (codec none changes how the tiles are stored, not the values). Lossless: the source.
  auto decoded = [](const WpkReader& reader, size_t t) {
    std::vector<float> out(reader.tensors()[t].num_elements(), -12345.0f);
    decode_tensor_f32(reader, t, out, 1);
    return out;
  };
  auto source_f32 = [&](size_t t) {
    std::vector<float> f(src.tensors()[t].num_elements());
    convert_to_f32(src.tensors()[t].dtype, src.data(t).data(), f.size(), f.data());
    return f;
  };
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  const std::pair<size_t, const char*> quantized[] = {{0, "int4"}, {1, "int8:codec=exp4"}};
  for (const auto& [t, spec] : quantized) {
    INFO(src.tensors()[t].name << " as " << spec);
    const auto& shape = src.tensors()[t].shape;
    REQUIRE(shape.size() == 2);
    const std::vector<float> w = source_f32(t);
    const QuantizedMatrix q = quantize_ref(w.data(), shape[0], shape[1], parse_policy_spec(spec, TensorPolicy{}).spec);
    std::vector<float> expect(w.size());
    dequantize_ref(q, expect.data());
    const std::vector<float> got = decoded(*r, t);
    CHECK(same_bits(got, expect));
    CHECK(!same_bits(got, w));  // really quantized: the check above is not the lossless one
  }
  for (size_t t : {size_t{2}, size_t{3}}) {
    INFO(src.tensors()[t].name << " lossless");
    CHECK(same_bits(decoded(*r, t), source_f32(t)));
    std::vector<uint8_t> bytes(src.data(t).size(), 0xCD);
    decode_tensor(*r, t, bytes, 1);
    CHECK(bytes == src.data(t));
  }
  // The same tensors packed with the default codec (rans) decode to the same floats.
  {
    PackOptions rans = opt;
    rans.codec = Codec::kRans;
    rans.overrides = {{"^q8", parse_policy_spec("int8", TensorPolicy{})}, opt.overrides[1]};
    pack_model(src, dir.file("rans.wpk"), rans);
    auto rr = WpkReader::open(dir.file("rans.wpk"));
    REQUIRE(rr->tensors().size() == 4);
    CHECK(tile_codecs(*rr, 0).count(kRansCode) == 1);  // really another coding of the same values
    for (size_t t = 0; t < 4; ++t) {
      INFO(src.tensors()[t].name << " under rans and under exp4");
      CHECK(same_bits(decoded(*rr, t), decoded(*r, t)));
    }
  }

  // codec=exp4 on one lossless tensor of a zstd file.
  PackOptions zstd;
  zstd.codec = Codec::kZstd;
  zstd.overrides.push_back({"^norm", parse_policy_spec("lossless:codec=exp4", TensorPolicy{})});
  zstd.overrides.push_back({"^h\\.", parse_policy_spec("lossless:codec=exp4", TensorPolicy{})});
  pack_model(src, dir.file("z.wpk"), zstd);
  require_round_trip(src, dir.file("z.wpk"));
  auto z = WpkReader::open(dir.file("z.wpk"));
  CHECK(tile_codecs(*z, 0).count(static_cast<uint8_t>(Codec::kZstd)) == 1);
  CHECK(tile_codecs(*z, 2) == std::set<uint8_t>{kExp4Code});
  CHECK(tile_codecs(*z, 3) == std::set<uint8_t>{kRansCode});  // F16 under exp4: rans
  CHECK(policy_to_string(parse_policy_spec("lossless:codec=exp4", TensorPolicy{})) == "lossless");
  CHECK(policy_to_string(parse_policy_spec("int8:codec=exp4", TensorPolicy{})).find(":codec=exp4") != std::string::npos);
}

TEST_CASE("pack: codec exp4 with a forced filter other than floatplanes is refused before writing") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::BF16, {64, 64}, test::gaussian_bf16(64 * 64, 0.02f, 51));
  for (Filter filter : {Filter::kNone, Filter::kByteShuffle, Filter::kBitShuffle}) {
    INFO(filter_name(filter));
    PackOptions opt;
    opt.codec = Codec::kExp4;
    opt.filter = filter;
    const std::string message = invalid_argument_of([&] { pack_model(src, dir.file("m.wpk"), opt); });
    CHECK(message == "codec exp4 takes filter floatplanes only, not " + std::string(filter_name(filter)) +
                         " (leave the filter to the packer, or choose floatplanes)");
    CHECK(invalid_argument_of([&] { plan_model(src, opt); }) == message);
    CHECK(!std::filesystem::exists(dir.file("m.wpk")));
    // The same filter with another codec, and exp4 in an override.
    opt.codec = Codec::kRans;
    opt.overwrite = true;
    CHECK_NOTHROW(pack_model(src, dir.file("ok.wpk"), opt));
    opt.overrides.push_back({"^w$", parse_policy_spec("lossless:codec=exp4", TensorPolicy{})});
    CHECK(invalid_argument_of([&] { pack_model(src, dir.file("m.wpk"), opt); }).find("(override '^w$')") !=
          std::string::npos);
    CHECK(!std::filesystem::exists(dir.file("m.wpk")));
  }
}

TEST_CASE("pack: --dry-run's estimate of an exp4 tensor is its exp4 tile bytes") {
  TempDir dir;
  MemorySource src;
  src.add("w", DType::BF16, {200, 300}, test::gaussian_bf16(200 * 300, 0.02f, 61));
  src.add("f", DType::F32, {64, 64}, test::gaussian_f32(64 * 64, 0.02f, 62));
  src.add("tiny", DType::BF16, {3}, test::gaussian_bf16(3, 0.02f, 63));  // stored raw
  PackOptions opt;
  opt.codec = Codec::kExp4;
  const std::vector<TensorPlan> plans = plan_model(src, opt);
  const PackReport rep = pack_model(src, dir.file("m.wpk"), opt);
  REQUIRE(plans.size() == rep.tensors.size());
  PackOptions rans = opt;
  rans.codec = Codec::kRans;
  const std::vector<TensorPlan> rans_plans = plan_model(src, rans);
  for (size_t t = 0; t < plans.size(); ++t) {
    INFO(plans[t].name);
    // The plan adds the index entry (the tensor record and 40 bytes per tile) to the tile bytes.
    const uint64_t tiles = tile_geometry(matrix_view(plans[t].shape, plans[t].row_dims), plans[t].tile_rows, plans[t].tile_cols).tile_count();
    CHECK(plans[t].estimated_bytes > rep.tensors[t].stored_bytes + 40 * tiles);
    CHECK(plans[t].estimated_bytes < rep.tensors[t].stored_bytes + 40 * tiles + 100);
    if (t < 2) CHECK(plans[t].estimated_bytes > rans_plans[t].estimated_bytes);  // the entropy bound is lower
  }
}
