// The .wpk container: round trip of the tensor table and tile index, and every validation rule
// of the reader (docs/FORMAT.md).
#include <catch2/catch.hpp>
#include <cstring>
#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "formats/detail/le.h"
#include "formats/error.h"
#include "formats/wpk.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;

namespace {

// A file with two tensors: "a" (F32 [3, 5], tile 2x4 -> 2x2 grid) and "b" (BF16 [], one tile).
void write_sample(const std::string& path) {
  WpkWriter w(path, false);
  WpkTensor a;
  a.name = "a";
  a.dtype = DType::F32;
  a.shape = {3, 5};
  a.tile_rows = 2;
  a.tile_cols = 4;
  a.scheme = 7;  // lossy (params only with a scheme)
  a.params = {1, 2, 3};
  w.begin_tensor(a);
  for (int i = 0; i < 4; ++i) {
    std::vector<uint8_t> stored(10 + i, uint8_t(0x40 + i));
    w.add_tile(stored, 32, 1, 1);
  }
  w.set_metrics({0.5, 0.25, 12.0, 0.125});
  w.end_tensor();
  WpkTensor b;
  b.name = "b";
  b.dtype = DType::BF16;
  b.tile_rows = 1;
  b.tile_cols = 1;
  w.begin_tensor(b);
  std::vector<uint8_t> one = {0x80, 0x3f};
  w.add_tile(one, 2, 0, 0);
  w.end_tensor();
  w.commit(R"({"wpack_version":"test"})");
}

std::string expect_error(const std::string& path, ErrorCode code) {
  try {
    WpkReader::open(path);
  } catch (const Error& e) {
    CHECK(e.code() == code);
    CHECK(std::string(e.what()).find(path) != std::string::npos);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
    return e.what();
  }
  FAIL("no error for " << path);
  return "";
}

uint64_t index_offset(const std::vector<uint8_t>& bytes) {
  return detail::load_u64(bytes.data() + bytes.size() - kWpkFooterBytes);
}

}  // namespace

TEST_CASE("wpk: tensors, tiles and metadata round trip") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  auto r = WpkReader::open(path);
  REQUIRE(r->tensors().size() == 2);
  REQUIRE(r->tiles().size() == 5);
  const WpkTensor& a = r->tensors()[0];
  CHECK(a.name == "a");
  CHECK(a.dtype == DType::F32);
  CHECK(a.shape == std::vector<uint64_t>{3, 5});
  CHECK(a.tile_rows == 2);
  CHECK(a.tile_cols == 4);
  CHECK(a.first_tile == 0);
  CHECK(a.tile_count == 4);
  CHECK(a.scheme == 7);
  CHECK(a.params == std::vector<uint8_t>{1, 2, 3});
  CHECK(a.metrics.rel_error == 0.5);
  CHECK(a.metrics.max_abs_error == 0.25);
  CHECK(a.metrics.snr_db == 12.0);
  CHECK(a.metrics.sparsity == 0.125);
  CHECK(r->tensors()[1].shape.empty());
  CHECK(r->tensors()[1].first_tile == 4);
  CHECK(r->metadata_json() == R"({"wpack_version":"test"})");
  for (uint64_t i = 0; i < 4; ++i) {
    auto bytes = r->tile_bytes(i);
    CHECK(bytes.size() == 10 + i);
    CHECK(bytes[0] == 0x40 + i);
    CHECK(r->tiles()[i].offset % r->alignment() == 0);
    CHECK(r->tile_checksum_ok(i));
    CHECK(r->tiles()[i].raw_size == 32);
    CHECK(r->tiles()[i].filter == 1);
    CHECK(r->tiles()[i].codec == 1);
  }
}

TEST_CASE("wpk: header bytes are as specified") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  auto bytes = test::read_file(path);
  const uint8_t magic[8] = {0x89, 'W', 'P', 'K', '\r', '\n', 0x1a, '\n'};
  CHECK(std::memcmp(bytes.data(), magic, 8) == 0);
  CHECK(detail::load_u32(bytes.data() + 8) == 5);   // version
  CHECK(detail::load_u32(bytes.data() + bytes.size() - 24) == 5);  // footer version
  CHECK(detail::load_u32(bytes.data() + 12) == 64);  // header size
  CHECK(detail::load_u32(bytes.data() + 16) == 64);  // alignment
  CHECK(std::memcmp(bytes.data() + bytes.size() - 16, "WPKINDEX", 8) == 0);
}

TEST_CASE("wpk: the writer refuses an existing target and leaves nothing behind on failure") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  auto before = test::read_file(path);
  try {
    WpkWriter w(path, false);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::kExists);
  }
  {
    WpkWriter w(path, true);
    WpkTensor t;
    t.name = "x";
    t.shape = {4};
    t.tile_rows = 1;
    t.tile_cols = 4;
    w.begin_tensor(t);
    // Abandoned without commit: the target keeps its old bytes.
  }
  CHECK(test::read_file(path) == before);
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  CHECK(files == 1);
}

TEST_CASE("wpk: the writer checks tile counts against the tile grid") {
  TempDir dir;
  WpkWriter w(dir.file("m.wpk"), false);
  WpkTensor t;
  t.name = "x";
  t.shape = {4, 4};
  t.tile_rows = 2;
  t.tile_cols = 2;
  w.begin_tensor(t);
  std::vector<uint8_t> s(4);
  w.add_tile(s, 16, 0, 0);
  CHECK_THROWS_AS(w.end_tensor(), Error);
}

TEST_CASE("wpk: the writer refuses what readers refuse, and readers refuse params on a lossless tensor") {
  TempDir dir;
  WpkTensor t;
  t.name = "x";
  t.shape = {2, 2};
  t.tile_rows = 2;
  t.tile_cols = 2;
  {
    WpkWriter w(dir.file("w.wpk"), false);
    REQUIRE_THROWS_WITH(w.end_tensor(), Catch::Contains("end_tensor outside a tensor"));
    WpkTensor bad_name = t;
    bad_name.name = std::string("caf\xC3", 4);  // a UTF-8 sequence cut short
    REQUIRE_THROWS_WITH(w.begin_tensor(bad_name), Catch::Contains("is not UTF-8"));
    WpkTensor lossless_params = t;
    lossless_params.params = {1};
    REQUIRE_THROWS_WITH(w.begin_tensor(lossless_params), Catch::Contains("lossless tensor with 1 bytes of params"));
    for (const char* metadata : {"", "[1]", "{\"a\":1} x", "{\"a\":\"\xFF\"}"})
      REQUIRE_THROWS_WITH(w.commit(metadata), Catch::Contains("metadata is not a UTF-8 JSON object"));
  }
  CHECK(!std::filesystem::exists(dir.file("w.wpk")));
  // A reader refuses a lossless tensor with params: tensor "a" of the sample made lossless.
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  std::vector<uint8_t> bytes = test::read_file(path);
  const uint64_t idx = index_offset(bytes);
  const uint64_t scheme_at = idx + 20 + detail::load_u32(bytes.data() + idx + 16) + 2 + 1 + 2;  // name size, "a", dtype, rank
  REQUIRE(bytes[scheme_at] == 7);
  bytes[scheme_at] = 0;
  test::fix_wpk_checksums(bytes);
  test::write_file(path, bytes);
  CHECK_THAT(expect_error(path, ErrorCode::kFormat), Catch::Contains("tensor 'a': lossless tensor with 3 bytes of params"));
}

TEST_CASE("wpk: a flipped byte anywhere outside tile data is reported") {
  TempDir dir;
  const std::string good = dir.file("m.wpk");
  write_sample(good);
  const auto bytes = test::read_file(good);
  const uint64_t idx = index_offset(bytes);
  // Header, index and footer bytes: every one must be covered by a checksum.
  std::vector<uint64_t> positions;
  for (uint64_t i = 0; i < kWpkHeaderBytes; ++i) positions.push_back(i);
  for (uint64_t i = idx; i < bytes.size(); ++i) positions.push_back(i);
  for (uint64_t pos : positions) {
    auto bad = bytes;
    bad[pos] ^= 0x10;
    const std::string path = dir.file("bad.wpk");
    test::write_file(path, bad);
    bool threw = false;
    try {
      WpkReader::open(path);
    } catch (const Error& e) {
      threw = true;
      CHECK(std::string(e.what()).find(path) != std::string::npos);
    }
    INFO("flipped byte at " << pos);
    CHECK(threw);
  }
}

TEST_CASE("wpk: a flipped byte in tile data fails that tile's checksum only") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  auto bytes = test::read_file(path);
  auto r0 = WpkReader::open(path);
  const uint64_t off = r0->tiles()[2].offset;
  r0.reset();
  bytes[off + 3] ^= 1;
  test::write_file(path, bytes);
  auto r = WpkReader::open(path);
  CHECK(r->tile_checksum_ok(0));
  CHECK(r->tile_checksum_ok(1));
  CHECK_FALSE(r->tile_checksum_ok(2));
  CHECK(r->tile_checksum_ok(3));
  // Each verdict is kept: asked again, from many threads at once, the same answers.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&] {
      for (uint64_t i = 0; i < r->tiles().size(); ++i)
        if (r->tile_checksum_ok(i) != (i != 2)) ++wrong;
    });
  for (std::thread& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK_THROWS_AS(r->tile_checksum_ok(r->tiles().size()), std::out_of_range);
}

TEST_CASE("wpk: truncation at any length is reported") {
  TempDir dir;
  const std::string good = dir.file("m.wpk");
  write_sample(good);
  const auto bytes = test::read_file(good);
  for (size_t len = 0; len < bytes.size(); ++len) {
    const std::string path = dir.file("t.wpk");
    test::write_file(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + len));
    INFO("truncated to " << len);
    CHECK_THROWS_AS(WpkReader::open(path), Error);
  }
}

TEST_CASE("wpk: wrong magic") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  test::write_file(path, std::vector<uint8_t>(200, 'x'));
  CHECK(expect_error(path, ErrorCode::kFormat).find("not a .wpk") != std::string::npos);
}

TEST_CASE("wpk: the writer refuses tiles of more than 2^24 elements") {
  wpack::test::TempDir dir;
  WpkWriter w(dir.file("big-tile.wpk"), false);
  WpkTensor t;
  t.name = "w";
  t.dtype = DType::F32;
  t.shape = {8192, 8192};
  t.tile_rows = 4096;
  t.tile_cols = 4097;
  REQUIRE_THROWS_AS(w.begin_tensor(t), Error);
}

TEST_CASE("wpk: a newer format version is named") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  auto bytes = test::read_file(path);
  test::set_wpk_header_version(bytes, 7);
  test::write_file(path, bytes);
  CHECK(expect_error(path, ErrorCode::kUnsupported).find("written by a newer wpack: format v7") != std::string::npos);
}

TEST_CASE("wpk: tile ranges outside the data or overlapping are refused") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  const auto bytes = test::read_file(path);
  auto r = WpkReader::open(path);
  const uint64_t tiles_start = bytes.size() - kWpkFooterBytes - r->tiles().size() * kWpkTileRecordBytes;
  const uint64_t second = tiles_start + kWpkTileRecordBytes;  // record of tile 1
  r.reset();

  SECTION("size past the index") {
    auto bad = bytes;
    detail::store_u64(bad.data() + second + 8, uint64_t(1) << 40);
    test::fix_wpk_checksums(bad);
    test::write_file(path, bad);
    CHECK(expect_error(path, ErrorCode::kFormat).find("tile 1") != std::string::npos);
  }
  SECTION("offset overlapping the previous tile") {
    auto bad = bytes;
    detail::store_u64(bad.data() + second, detail::load_u64(bad.data() + tiles_start));
    test::fix_wpk_checksums(bad);
    test::write_file(path, bad);
    CHECK(expect_error(path, ErrorCode::kFormat).find("overlaps") != std::string::npos);
  }
  SECTION("unaligned offset") {
    auto bad = bytes;
    detail::store_u64(bad.data() + second, detail::load_u64(bad.data() + second) + 1);
    test::fix_wpk_checksums(bad);
    test::write_file(path, bad);
    CHECK(expect_error(path, ErrorCode::kFormat).find("aligned") != std::string::npos);
  }
}

TEST_CASE("wpk: counts larger than the index holds are refused before allocating") {
  TempDir dir;
  const std::string path = dir.file("m.wpk");
  write_sample(path);
  auto bytes = test::read_file(path);
  const uint64_t idx = index_offset(bytes);
  SECTION("tensor count") {
    detail::store_u32(bytes.data() + idx, 0xFFFFFFFFu);
    test::fix_wpk_checksums(bytes);
    test::write_file(path, bytes);
    CHECK(expect_error(path, ErrorCode::kFormat).find("tensor count") != std::string::npos);
  }
  SECTION("tile count") {
    detail::store_u64(bytes.data() + idx + 8, uint64_t(1) << 60);
    test::fix_wpk_checksums(bytes);
    test::write_file(path, bytes);
    CHECK(expect_error(path, ErrorCode::kFormat).find("tile count") != std::string::npos);
  }
}
