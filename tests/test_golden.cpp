// Golden .wpk files pin the container bytes (docs/FORMAT.md): a format change must bump the
// version and regenerate them (WPACK_UPDATE_GOLDEN=1 ./test_golden writes the current version's
// files, lossless-{rans,zstd,exp4}-v5.wpk and lossy-v5.wpk, and then fails on purpose: the rewritten
// files must be reviewed and committed, and a run with the variable never passes). The v2, v3 and
// v4 files are fixtures kept from the v2, v3 and v4 writers.
//
// The rANS and exp4 files are compared byte for byte (wpack's own codecs). zstd's output may change
// between libzstd releases, so the zstd golden file is only decoded, never re-encoded and compared.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "formats/detail/le.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "packer/quantize.h"
#include "packer/unpack.h"
#include "test_util.h"

using namespace wpack;

namespace {

const std::string kGoldenDir = std::string(WPACK_SOURCE_DIR) + "/tests/data/golden/";

// WPACK_UPDATE_GOLDEN set: the tests that own a golden file rewrite it, check the rewritten file as
// usual, and then fail (fail_after_update), so that a run with the variable never counts as a pass.
bool updating_golden() { return std::getenv("WPACK_UPDATE_GOLDEN") != nullptr; }

void fail_after_update(const std::vector<std::string>& files) {
  std::string list;
  for (const std::string& f : files) list += "\n  " + kGoldenDir + f;
  FAIL("WPACK_UPDATE_GOLDEN is set: the golden files were rewritten and this run checked nothing against the "
       "committed ones. Review the changes (git diff tests/data/golden), commit them, and run again without "
       "WPACK_UPDATE_GOLDEN:"
       << list);
}

MemorySource golden_source() {
  MemorySource src;
  src.set_metadata({{"format", "pt"}, {"note", "golden"}});
  src.add("dense.weight", DType::BF16, {40, 70}, test::gaussian_bf16(40 * 70, 0.05f, 11));
  src.add("conv.weight", DType::F32, {3, 4, 5}, test::gaussian_f32(60, 0.1f, 12));
  src.add("norm.weight", DType::F16, {33}, test::gaussian_f16(33, 1.0f, 13));
  src.add("ids", DType::I32, {17}, test::random_bytes(17 * 4, 14));
  src.add("scalar", DType::F64, {}, test::random_bytes(8, 15));
  src.add("empty", DType::U8, {0, 3}, {});
  return src;
}

PackOptions golden_options(Codec codec) {
  PackOptions opt;
  opt.codec = codec;
  opt.tile_rows = 16;
  opt.tile_cols = 32;
  opt.threads = 1;
  opt.overwrite = true;
  opt.command_line = "golden";
  return opt;
}

void check_decodes_to_source(const std::string& path) {
  auto src = golden_source();
  auto r = WpkReader::open(path);
  REQUIRE(r->tensors().size() == src.tensors().size());
  for (size_t t = 0; t < src.tensors().size(); ++t) {
    std::vector<uint8_t> out(src.data(t).size());
    decode_tensor(*r, t, out, 1);
    CHECK(out == src.data(t));
  }
}

// One tensor per kind of lossy tile payload (docs/FORMAT.md "Lossy tensors"): int4 asymmetric with
// rans (layout 6, zero-relative symbols), int4 symmetric raw (layout 4), int8 with rans and row
// scales in the params, fp6 raw, int4 pruned to sparse tiles (layout 5), lut4 with its tables in the
// params, and a lossless 1-D tensor beside them.
MemorySource lossy_golden_source() {
  MemorySource src;
  src.add("q4.weight", DType::BF16, {40, 256}, test::gaussian_bf16(40 * 256, 0.05f, 21));
  src.add("q4sym.weight", DType::BF16, {16, 128}, test::gaussian_bf16(16 * 128, 0.05f, 22));
  src.add("q8.weight", DType::F32, {24, 64}, test::gaussian_f32(24 * 64, 0.1f, 23));
  src.add("fp6.weight", DType::BF16, {16, 128}, test::gaussian_bf16(16 * 128, 0.05f, 24));
  src.add("sparse.weight", DType::BF16, {32, 128}, test::gaussian_bf16(32 * 128, 0.05f, 25));
  src.add("lut.weight", DType::F16, {24, 64}, test::gaussian_f16(24 * 64, 0.05f, 26));
  src.add("norm.weight", DType::BF16, {64}, test::gaussian_bf16(64, 1.0f, 27));
  src.add("conv.weight", DType::BF16, {8, 4, 3, 3}, test::gaussian_bf16(8 * 36, 0.05f, 28));  // 8 x 36 (v5)
  return src;
}

PackOptions lossy_golden_options() {
  PackOptions opt = golden_options(Codec::kRans);
  opt.tile_cols = 128;
  for (const auto& [pattern, spec] : std::vector<std::pair<std::string, std::string>>{
           {"^q4\\.", "int4"},
           {"^q4sym\\.", "int4:sym:codec=none"},
           {"^q8\\.", "int8"},
           {"^fp6\\.", "fp6:codec=none"},
           {"^sparse\\.", "int4:g64:prune=0.5:codec=none"},
           {"^lut\\.", "lut4:rows8"},
           {"^conv\\.", "int8"}})
    opt.overrides.push_back({pattern, parse_policy_spec(spec, TensorPolicy{})});
  return opt;
}

}  // namespace

TEST_CASE("golden: the rANS file is reproduced byte for byte") {
  if (updating_golden()) {
    pack_model(golden_source(), kGoldenDir + "lossless-rans-v5.wpk", golden_options(Codec::kRans));
    pack_model(golden_source(), kGoldenDir + "lossless-zstd-v5.wpk", golden_options(Codec::kZstd));
  }
  test::TempDir dir;
  pack_model(golden_source(), dir.file("m.wpk"), golden_options(Codec::kRans));
  const auto golden = test::read_file(kGoldenDir + "lossless-rans-v5.wpk");
  REQUIRE(!golden.empty());
  CHECK(test::read_file(dir.file("m.wpk")) == golden);
  if (updating_golden()) fail_after_update({"lossless-rans-v5.wpk", "lossless-zstd-v5.wpk"});
}

// Codec exp4 (format v4 on): the BF16 and F32 tensors' tiles are exp4 (filter floatplanes), the F16,
// I32 and F64 tensors' rans (or raw).
TEST_CASE("golden: the exp4 file is reproduced byte for byte and holds exp4 tiles") {
  if (updating_golden())
    pack_model(golden_source(), kGoldenDir + "lossless-exp4-v5.wpk", golden_options(Codec::kExp4));
  test::TempDir dir;
  pack_model(golden_source(), dir.file("m.wpk"), golden_options(Codec::kExp4));
  const auto golden = test::read_file(kGoldenDir + "lossless-exp4-v5.wpk");
  REQUIRE(!golden.empty());
  CHECK(test::read_file(dir.file("m.wpk")) == golden);

  auto r = WpkReader::open(kGoldenDir + "lossless-exp4-v5.wpk");
  CHECK(r->format_version() == 5);
  uint64_t exp4_tiles = 0;
  for (const WpkTensor& t : r->tensors())
    for (uint64_t k = 0; k < t.tile_count; ++k) {
      const WpkTile& tile = r->tiles()[t.first_tile + k];
      INFO(t.name << " tile " << k);
      const bool exp4_dtype = t.dtype == DType::BF16 || t.dtype == DType::F32;
      if (exp4_dtype) {
        CHECK(tile.codec == static_cast<uint8_t>(Codec::kExp4));
        CHECK(tile.filter == static_cast<uint8_t>(Filter::kFloatPlanes));
        ++exp4_tiles;
      } else {  // rans, or raw where rANS does not shrink these small tiles
        CHECK((tile.codec == static_cast<uint8_t>(Codec::kRans) || tile.codec == static_cast<uint8_t>(Codec::kNone)));
      }
    }
  CHECK(exp4_tiles == 9 + 1);  // dense.weight's 3 x 3 tiles, conv.weight's one
  if (updating_golden()) fail_after_update({"lossless-exp4-v5.wpk"});
}

TEST_CASE("golden: committed files decode to their source") {
  for (const char* name : {"lossless-rans-v5.wpk", "lossless-zstd-v5.wpk", "lossless-exp4-v5.wpk", "lossless-rans-v4.wpk",
                           "lossless-zstd-v4.wpk", "lossless-exp4-v4.wpk", "lossless-rans-v3.wpk", "lossless-zstd-v3.wpk",
                           "lossless-rans-v2.wpk", "lossless-zstd-v2.wpk"}) {
    INFO(name);
    check_decodes_to_source(kGoldenDir + name);
  }
}

// The v2 and v3 files are kept as fixtures (written by the v2 and v3 writers, not regenerated): a v3
// file is a v4 file without exp4 tiles and a v2 file a v3 file without layout-6 tiles, so they still
// read exactly, and they differ from their v4 files only in the version fields of header and footer
// and the two checksums that cover them. The lossless v4 files are their v5 files likewise (every
// tensor of theirs has row dims 0: the v5 writer folds quantized tensors only).
TEST_CASE("golden: v2 and v3 files are their v4 file, lossless v4 files their v5 file, with the version fields changed") {
  for (const char* name : {"lossless-rans", "lossless-zstd", "lossless-exp4"}) {
    INFO(name);
    const auto v5 = test::read_file(kGoldenDir + name + "-v5.wpk");
    REQUIRE(!v5.empty());
    CHECK(test::with_wpk_version(v5, 4) == test::read_file(kGoldenDir + name + "-v4.wpk"));
  }
  for (const char* name : {"lossless-rans", "lossless-zstd", "lossy"}) {
    const std::string prefix = kGoldenDir + name;
    const auto v4 = test::read_file(prefix + "-v4.wpk");
    REQUIRE(v4.size() > kWpkHeaderBytes + kWpkFooterBytes);
    CHECK(WpkReader::open(prefix + "-v4.wpk")->format_version() == 4);
    CHECK(detail::load_u32(v4.data() + 8) == 4);
    CHECK(detail::load_u32(v4.data() + v4.size() - kWpkFooterBytes + 24) == 4);
    for (uint32_t version : {2u, 3u}) {
      const std::string path = prefix + "-v" + std::to_string(version) + ".wpk";
      if (version == 2 && std::string(name) == "lossy") continue;  // layout-6 tiles: no v2 file
      INFO(path);
      CHECK(WpkReader::open(path)->format_version() == version);
      CHECK(test::with_wpk_version(v4, version) == test::read_file(path));
    }
  }
}

// The lossy golden file pins quantizer output as well as the tile layouts: a change to either shows
// as a byte difference (and needs a version bump when the layouts change).
TEST_CASE("golden: the lossy file is reproduced byte for byte and holds every lossy tile layout") {
  if (updating_golden())
    pack_model(lossy_golden_source(), kGoldenDir + "lossy-v5.wpk", lossy_golden_options());
  test::TempDir dir;
  pack_model(lossy_golden_source(), dir.file("q.wpk"), lossy_golden_options());
  const auto golden = test::read_file(kGoldenDir + "lossy-v5.wpk");
  REQUIRE(!golden.empty());
  CHECK(test::read_file(dir.file("q.wpk")) == golden);

  auto r = WpkReader::open(kGoldenDir + "lossy-v5.wpk");
  CHECK(r->format_version() == 5);
  for (const WpkTensor& t : r->tensors()) {  // conv.weight [8, 4, 3, 3] is quantized as 8 x 36
    INFO(t.name);
    CHECK(t.row_dims == (t.name == "conv.weight" ? 1 : 0));
  }
  CHECK((r->tensors().back().tile_rows == 8 && r->tensors().back().tile_cols == 36));
  std::set<uint8_t> layouts;
  for (const WpkTile& tile : r->tiles()) layouts.insert(tile.filter);
  for (uint8_t layout : {4, 5, 6}) {
    INFO("tile layout " << int{layout});
    CHECK(layouts.count(layout) == 1);
  }
  // Every tensor decodes to values whose error against the source is the one recorded in the file
  // at compress time (so the file's metrics describe what a reader gets).
  auto src = lossy_golden_source();
  for (size_t t = 0; t < r->tensors().size(); ++t) {
    const WpkTensor& info = r->tensors()[t];
    INFO(info.name);
    CHECK((info.scheme != 0) == (info.name != "norm.weight"));
    std::vector<float> out(info.num_elements()), ref(info.num_elements());
    decode_tensor_f32(*r, t, out, 1);
    convert_to_f32(info.dtype, src.data(t).data(), ref.size(), ref.data());
    const double rel = error_stats(ref.data(), out.data(), ref.size()).rel_error;
    CHECK(rel == Approx(info.metrics.rel_error).epsilon(1e-6).margin(1e-12));
    if (info.scheme != 0) CHECK(rel > 1e-4);  // really quantized
  }
  if (updating_golden()) fail_after_update({"lossy-v5.wpk"});
}
