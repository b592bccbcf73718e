// Bad .wpk files, clear errors (issue 6, item 3), on small real files: lossless and lossy tensors,
// zstd, rans, exp4 and raw tiles. Every way of damaging a file is tried:
//   - truncation at every byte, and bytes appended;
//   - every bit of the header, the index (metadata, tensor table, tile index) and the footer flipped;
//   - bits of every tile flipped (every byte; all 8 bits at both ends of each tile);
//   - every byte of the index replaced by other values with the checksums recomputed (a crafted
//     file: counts, sizes, offsets, shapes that lie), and named crafted cases (counts and sizes
//     larger than the file, overlapping and out-of-file tiles, a newer format version, bad magic).
// Each must give an Error with the right code and a one-line message naming the file and what is
// wrong (the tensor and tile for a tile), never a crash or another exception, and no allocation
// larger than the file justifies (operator new is counted here). A sample of each goes through the
// wpack binary: exit code 1 and one line on stderr.
// Padding between tiles is never read: flipping it changes nothing decoded (also tested).
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "formats/detail/le.h"
#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "packer/quant_tile.h"
#include "packer/unpack.h"
#include "test_util.h"
#include "verify/verify.h"

// ---------------------------------------------------------------------------------------------
// Counting allocations: the largest single operator new while tracking is on.
namespace {
std::atomic<bool> g_track_allocations{false};
std::atomic<size_t> g_largest_allocation{0};
void note_allocation(size_t n) {
  if (!g_track_allocations.load(std::memory_order_relaxed)) return;
  size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n)) {
  }
}
void* allocate(size_t n) {
  note_allocation(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(size_t n) { return allocate(n); }
void* operator new[](size_t n) { return allocate(n); }
// The nothrow forms as well (Catch uses them): left to the runtime, their memory would reach the
// free() below from another allocator (AddressSanitizer: alloc-dealloc-mismatch).
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  note_allocation(n);
  return std::malloc(n ? n : 1);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  note_allocation(n);
  return std::malloc(n ? n : 1);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

using namespace wpack;
using wpack::test::RunResult;
using wpack::test::run_wpack;
using wpack::test::TempDir;

namespace {

// Tracks the largest allocation in a scope.
class AllocationWatch {
 public:
  AllocationWatch() {
    g_largest_allocation = 0;
    g_track_allocations = true;
  }
  ~AllocationWatch() { g_track_allocations = false; }
  size_t largest() const { return g_largest_allocation.load(); }
};

// What reading a damaged file may allocate at most: the file's own size, a few times, or 1 MiB.
size_t allocation_limit(uint64_t file_size) { return std::max<size_t>(size_t{1} << 20, 4 * file_size); }

// The model every variant packs: 2-D floats (quantized in the lossy variants), a vector, integers,
// a scalar and an empty tensor. Small, so that every bit can be tried.
MemorySource corrupt_test_model() {
  MemorySource src("memory", {{"format", "pt"}});
  src.add("attn.w", DType::BF16, {40, 64}, test::gaussian_bf16(40 * 64, 0.02f, 1));
  src.add("mlp.w", DType::F32, {24, 20}, test::gaussian_f32(24 * 20, 0.05f, 2));
  src.add("norm", DType::F32, {20}, test::gaussian_f32(20, 1.0f, 3));
  src.add("ids", DType::I32, {9}, test::random_bytes(9 * 4, 4));
  src.add("scalar", DType::F16, {}, test::gaussian_f16(1, 1.0f, 5));
  src.add("empty", DType::BF16, {0, 4}, {});
  return src;
}

struct Variant {
  std::string name;
  PackOptions options;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  auto base = [] {
    PackOptions o;
    o.tile_rows = 16;
    o.tile_cols = 16;
    o.threads = 1;
    o.command_line = "test_corrupt_files";
    return o;
  };
  {
    Variant x{"lossless-zstd", base()};
    x.options.codec = Codec::kZstd;
    v.push_back(x);
  }
  {
    Variant x{"lossless-rans", base()};
    x.options.codec = Codec::kRans;
    v.push_back(x);
  }
  {
    Variant x{"lossless-none", base()};
    x.options.codec = Codec::kNone;
    v.push_back(x);
  }
  {
    Variant x{"lossless-exp4", base()};  // exp4 tiles (BF16, F32), rans or raw tiles (the others)
    x.options.codec = Codec::kExp4;
    v.push_back(x);
  }
  {
    Variant x{"lossy-int4-zstd", base()};
    x.options.codec = Codec::kZstd;
    x.options.policy = parse_policy_spec("int4:g32", TensorPolicy{});
    v.push_back(x);
  }
  {
    Variant x{"lossy-rans", base()};  // LUT tables and row scales in params, rANS-coded tiles
    x.options.codec = Codec::kRans;
    x.options.policy = parse_policy_spec("lut4:rows16", TensorPolicy{});
    x.options.overrides.push_back({"^mlp", parse_policy_spec("int8:prune=0.5", x.options.policy)});
    v.push_back(x);
  }
  return v;
}

// A packed variant: its bytes and where each part of the file is.
struct PackedFile {
  std::string name;
  std::vector<uint8_t> bytes;
  uint64_t index_offset = 0, index_size = 0;
  struct TileSpan {
    uint64_t begin, end;  // stored bytes [begin, end)
    size_t tensor;
    uint64_t tile_in_tensor;
  };
  std::vector<TileSpan> tiles;
  std::vector<std::string> tensor_names;
  std::vector<std::vector<uint8_t>> decoded;  // every tensor, decoded from the intact file
};

std::vector<std::vector<uint8_t>> decode_all(const WpkReader& r) {
  std::vector<std::vector<uint8_t>> out;
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    out.emplace_back(r.tensors()[t].num_elements() * dtype_size(r.tensors()[t].dtype));
    decode_tensor(r, t, out.back(), 1);
  }
  return out;
}

PackedFile pack_variant(const TempDir& dir, const Variant& v) {
  const std::string path = dir.file(v.name + ".wpk");
  pack_model(corrupt_test_model(), path, v.options);
  PackedFile f;
  f.name = v.name;
  f.bytes = test::read_file(path);
  auto r = WpkReader::open(path);
  f.index_size = r->index_bytes();
  f.index_offset = f.bytes.size() - kWpkFooterBytes - f.index_size;
  for (size_t t = 0; t < r->tensors().size(); ++t) {
    const WpkTensor& wt = r->tensors()[t];
    f.tensor_names.push_back(wt.name);
    for (uint64_t k = 0; k < wt.tile_count; ++k) {
      const WpkTile& tile = r->tiles()[wt.first_tile + k];
      f.tiles.push_back({tile.offset, tile.offset + tile.stored_size, t, k});
    }
  }
  f.decoded = decode_all(*r);
  std::filesystem::remove(path);
  return f;
}

std::vector<PackedFile> pack_all(const TempDir& dir) {
  std::vector<PackedFile> files;
  for (const auto& v : variants()) files.push_back(pack_variant(dir, v));
  // Sanity of the fixture: every variant has several tiles per 2-D tensor; the lossy ones hold
  // quantized tensors; zstd, rans, exp4 and raw tiles all occur.
  REQUIRE(files.size() == 6);
  for (const auto& f : files) REQUIRE(f.tiles.size() >= 8);
  return files;
}

// A working copy of a file that bytes can be changed in, in place.
class WorkFile {
 public:
  WorkFile(const std::string& path, const std::vector<uint8_t>& bytes) : path_(path), bytes_(bytes) {
    test::write_file(path, bytes);
    fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd_ >= 0);
  }
  ~WorkFile() { ::close(fd_); }
  const std::string& path() const { return path_; }
  void set_byte(uint64_t pos, uint8_t value) { REQUIRE(::pwrite(fd_, &value, 1, static_cast<off_t>(pos)) == 1); }
  void restore(uint64_t pos) { set_byte(pos, bytes_[pos]); }
  void truncate(uint64_t size) { REQUIRE(::ftruncate(fd_, static_cast<off_t>(size)) == 0); }
  // Makes the file hold exactly `bytes`, in place. (Rewriting a file through O_TRUNC makes ext4
  // flush it to disk each time, which is slow over thousands of cases.)
  void assign(const std::vector<uint8_t>& bytes) {
    if (!bytes.empty()) REQUIRE(::pwrite(fd_, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
    truncate(bytes.size());
  }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  int fd_ = -1;
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// One line, naming the file.
void check_message(const std::string& message, const std::string& path) {
  INFO("message: " << message);
  CHECK(contains(message, path));
  CHECK(message.find('\n') == std::string::npos);
  CHECK(message.find('\r') == std::string::npos);
}

struct OpenResult {
  bool opened = false;
  ErrorCode code = ErrorCode::kIo;
  std::string message;
};

// Opens the file and, with `decode`, decodes everything; returns the first Error (or none). Any
// other exception escapes and fails the test.
OpenResult try_open(const std::string& path, bool decode = false) {
  OpenResult r;
  try {
    auto reader = WpkReader::open(path);
    r.opened = true;
    if (decode) decode_all(*reader);
  } catch (const Error& e) {
    r.code = e.code();
    r.message = e.what();
  }
  return r;
}

uint64_t footer_offset(const PackedFile& f) { return f.bytes.size() - kWpkFooterBytes; }

// Where the first tensor record of a .wpk image starts (after the index's counts and metadata), and
// the size of its name.
uint64_t first_tensor_record(const std::vector<uint8_t>& bytes) {
  const uint64_t index = detail::load_u64(bytes.data() + bytes.size() - kWpkFooterBytes);
  return index + 20 + detail::load_u32(bytes.data() + index + 16);
}
uint32_t record_name_size(const std::vector<uint8_t>& bytes, uint64_t record) {
  return bytes[record] | (uint32_t{bytes[record + 1]} << 8);
}

// Reads one stderr of the binary: exactly one line "wpack: ...".
void check_cli_error(const RunResult& r, const std::string& mention) {
  INFO("stderr: " << r.err << " stdout: " << r.out);
  CHECK(r.exit_code == 1);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.rfind("wpack: ", 0) == 0);
  CHECK(contains(r.err, mention));
}

// The file at `path` is refused as corrupt with exactly "path: mention" by the reader, and by
// inspect, verify and unpack (one line on stderr, exit 1, no output file left in `dir`).
void check_refused_as_corrupt(const TempDir& dir, const std::string& path, const std::string& mention) {
  const OpenResult r = try_open(path);
  CHECK_FALSE(r.opened);
  CHECK(r.code == ErrorCode::kCorrupt);
  CHECK(r.message == path + ": " + mention);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"inspect", path}, {"verify", path}, {"unpack", path, "-o", dir.file("x.safetensors")}}) {
    INFO(args[0]);
    check_cli_error(run_wpack(args), mention);
  }
  CHECK(!std::filesystem::exists(dir.file("x.safetensors")));
}

}  // namespace

TEST_CASE("corrupt: truncation at every byte is a format error naming the file (truncated)") {
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    WorkFile work(dir.file(f.name + "-cut.wpk"), f.bytes);
    AllocationWatch watch;
    for (uint64_t len = f.bytes.size(); len-- > 0;) {
      work.truncate(len);
      const OpenResult r = try_open(work.path());
      INFO("truncated to " << len << " of " << f.bytes.size() << " bytes: " << r.message);
      REQUIRE_FALSE(r.opened);
      CHECK(r.code == ErrorCode::kFormat);
      CHECK(contains(r.message, "truncated"));
      check_message(r.message, work.path());
    }
    CHECK(watch.largest() <= allocation_limit(f.bytes.size()));
  }
}

TEST_CASE("corrupt: bytes appended after the footer are refused") {
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    for (size_t extra : {size_t(1), size_t(8), size_t(48), size_t(4096)}) {
      auto bytes = f.bytes;
      bytes.resize(bytes.size() + extra, 0);
      const std::string path = dir.file("long.wpk");
      test::write_file(path, bytes);
      const OpenResult r = try_open(path);
      INFO(extra << " bytes appended: " << r.message);
      REQUIRE_FALSE(r.opened);
      CHECK(r.code == ErrorCode::kFormat);
      CHECK(contains(r.message, "footer not found"));
      check_message(r.message, path);
    }
  }
}

TEST_CASE("corrupt: every bit of header, index and footer is covered (checksum or magic)") {
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    WorkFile work(dir.file(f.name + "-flip.wpk"), f.bytes);
    std::vector<uint64_t> positions;
    for (uint64_t i = 0; i < kWpkHeaderBytes; ++i) positions.push_back(i);
    for (uint64_t i = f.index_offset; i < f.bytes.size(); ++i) positions.push_back(i);
    REQUIRE(f.index_offset + f.index_size == footer_offset(f));
    AllocationWatch watch;
    for (uint64_t pos : positions) {
      for (int bit = 0; bit < 8; ++bit) {
        work.set_byte(pos, static_cast<uint8_t>(f.bytes[pos] ^ (1u << bit)));
        const OpenResult r = try_open(work.path());
        work.restore(pos);
        INFO("byte " << pos << " bit " << bit << ": " << error_code_name(r.code) << ": " << r.message);
        REQUIRE_FALSE(r.opened);
        check_message(r.message, work.path());
        // What is wrong and where.
        if (pos < 8) {
          CHECK(r.code == ErrorCode::kFormat);
          CHECK(contains(r.message, "bad magic"));
        } else if (pos < kWpkHeaderBytes) {
          CHECK(r.code == ErrorCode::kCorrupt);
          CHECK(contains(r.message, "header checksum mismatch"));
        } else if (pos < footer_offset(f)) {
          CHECK(r.code == ErrorCode::kCorrupt);
          CHECK(contains(r.message, "index checksum mismatch"));
        } else if (pos - footer_offset(f) >= 32 && pos - footer_offset(f) < 40) {
          CHECK(r.code == ErrorCode::kFormat);
          CHECK(contains(r.message, "footer not found"));
        } else {
          CHECK(r.code == ErrorCode::kCorrupt);
          CHECK(contains(r.message, "footer checksum mismatch"));
        }
      }
    }
    CHECK(watch.largest() <= allocation_limit(f.bytes.size()));
  }
}

TEST_CASE("corrupt: a flipped bit in tile data fails that tile, named with its tensor, in decode and verify") {
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    WorkFile work(dir.file(f.name + "-tile.wpk"), f.bytes);
    AllocationWatch watch;
    uint64_t flips = 0;
    for (const auto& tile : f.tiles) {
      const std::string where = "tensor '" + f.tensor_names[tile.tensor] + "': tile " + std::to_string(tile.tile_in_tensor) + ":";
      for (uint64_t pos = tile.begin; pos < tile.end; ++pos) {
        // Every byte; all 8 bits of the first and last 4 bytes of each tile.
        const bool edge = pos < tile.begin + 4 || pos + 4 >= tile.end;
        for (int bit = 0; bit < 8; ++bit) {
          if (!edge && bit != static_cast<int>(pos % 8)) continue;
          work.set_byte(pos, static_cast<uint8_t>(f.bytes[pos] ^ (1u << bit)));
          ++flips;
          // The index is intact: the file opens, and the tile's tensor fails to decode.
          auto reader = WpkReader::open(work.path());
          std::vector<uint8_t> out(f.decoded[tile.tensor].size());
          std::string message;
          ErrorCode code = ErrorCode::kIo;
          try {
            decode_tensor(*reader, tile.tensor, out, 1);
          } catch (const Error& e) {
            message = e.what();
            code = e.code();
          }
          INFO("byte " << pos << " bit " << bit << ": " << message);
          REQUIRE(!message.empty());
          CHECK(code == ErrorCode::kCorrupt);
          CHECK(contains(message, where));
          check_message(message, work.path());
          // verify: the same tensor fails, the others pass.
          const VerifyReport report = verify_cpu(*reader, nullptr, 1);
          CHECK_FALSE(report.ok());
          for (size_t t = 0; t < report.tensors.size(); ++t) {
            if (t == tile.tensor) {
              CHECK(contains(report.tensors[t].error, where));
              check_message(report.tensors[t].error, work.path());
            } else {
              CHECK(report.tensors[t].error.empty());
            }
          }
          reader.reset();
          work.restore(pos);
        }
      }
    }
    CHECK(flips > 1000);
    CHECK(watch.largest() <= allocation_limit(f.bytes.size()));
  }
}

TEST_CASE("corrupt: padding between tiles is never read (flipping it changes nothing decoded)") {
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    std::vector<bool> used(f.bytes.size(), false);
    for (uint64_t i = 0; i < kWpkHeaderBytes; ++i) used[i] = true;
    for (uint64_t i = f.index_offset; i < f.bytes.size(); ++i) used[i] = true;
    for (const auto& tile : f.tiles)
      for (uint64_t i = tile.begin; i < tile.end; ++i) used[i] = true;
    WorkFile work(dir.file(f.name + "-pad.wpk"), f.bytes);
    uint64_t padding = 0;
    for (uint64_t pos = 0; pos < f.bytes.size(); ++pos) {
      if (used[pos]) continue;
      ++padding;
      CHECK(f.bytes[pos] == 0);  // the writer pads with zeros
      work.set_byte(pos, 0xFF);
      auto reader = WpkReader::open(work.path());
      CHECK(decode_all(*reader) == f.decoded);
      reader.reset();
      work.restore(pos);
    }
    CHECK(padding > 0);
  }
}

TEST_CASE("corrupt: crafted index bytes (checksums recomputed) fail cleanly, with bounded allocations") {
  // A file whose checksums agree with wrong contents: every index byte replaced by several values.
  // The reader's structural checks (bounds, counts, tile grid, tile ranges) and the decoders must
  // refuse or survive each one: no crash, only wpack::Error, one line naming the file.
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    WorkFile work(dir.file(f.name + "-crafted.wpk"), f.bytes);
    const std::string& path = work.path();
    uint64_t refused = 0, accepted = 0;
    AllocationWatch watch;
    for (uint64_t pos = f.index_offset; pos < footer_offset(f); ++pos) {
      for (uint8_t value : {uint8_t(0x00), uint8_t(0xFF), uint8_t(f.bytes[pos] ^ 0x01), uint8_t(f.bytes[pos] ^ 0x80),
                            uint8_t(f.bytes[pos] + 0x10)}) {
        if (value == f.bytes[pos]) continue;
        auto bytes = f.bytes;
        bytes[pos] = value;
        test::fix_wpk_checksums(bytes);
        work.assign(bytes);
        const OpenResult r = try_open(path, /*decode=*/true);
        INFO("index byte " << pos - f.index_offset << " = " << int(value) << ": " << r.message);
        if (r.message.empty()) {
          ++accepted;  // e.g. a metric or metadata byte: the file is still consistent
        } else {
          ++refused;
          CHECK((r.code == ErrorCode::kFormat || r.code == ErrorCode::kCorrupt || r.code == ErrorCode::kUnsupported));
          check_message(r.message, path);
        }
      }
    }
    INFO("refused " << refused << ", accepted " << accepted);
    CHECK(refused > accepted);
    CHECK(watch.largest() <= allocation_limit(f.bytes.size()));
  }
}

namespace {
// The header checksum of an image whose header bytes were changed on purpose.
void reseal_header(std::vector<uint8_t>& b) { detail::store_u64(b.data() + 56, wpk_checksum({b.data(), 56})); }
}  // namespace

TEST_CASE("corrupt: crafted counts, sizes and tile ranges larger than the file are named") {
  TempDir dir;
  const PackedFile f = pack_variant(dir, variants()[0]);
  const std::string path = dir.file("crafted.wpk");
  const uint64_t idx = f.index_offset;
  const uint64_t tile_records = footer_offset(f) - f.tiles.size() * kWpkTileRecordBytes;
  const uint32_t metadata_size = detail::load_u32(f.bytes.data() + idx + 16);
  const uint64_t first_record = first_tensor_record(f.bytes);
  struct Case {
    const char* what;
    std::function<void(std::vector<uint8_t>&)> edit;
    ErrorCode code;
    std::string mention;
  };
  const uint64_t huge = uint64_t(1) << 62;
  const std::vector<Case> cases = {
      {"tensor count", [&](auto& b) { detail::store_u32(b.data() + idx, 0xFFFFFFFFu); }, ErrorCode::kFormat,
       "tensor count 4294967295 larger than the index holds"},
      {"tile count", [&](auto& b) { detail::store_u64(b.data() + idx + 8, huge); }, ErrorCode::kFormat,
       "larger than the index holds"},
      {"metadata size", [&](auto& b) { detail::store_u32(b.data() + idx + 16, 0xFFFFFFF0u); }, ErrorCode::kFormat,
       "truncated metadata"},
      {"tensor name size", [&](auto& b) { b[first_record] = 0xFF; b[first_record + 1] = 0xFF; }, ErrorCode::kFormat,
       "index: truncated"},
      {"tile offset past the file", [&](auto& b) { detail::store_u64(b.data() + tile_records + kWpkTileRecordBytes, huge); },
       ErrorCode::kFormat, "tile 1 (record 1 of the tile index): byte range outside the tile data"},
      {"tile size past the index", [&](auto& b) { detail::store_u64(b.data() + tile_records + 8, huge); },
       ErrorCode::kFormat, "tile 0 (record 0 of the tile index): byte range outside the tile data"},
      {"tile size wrapping around", [&](auto& b) { detail::store_u64(b.data() + tile_records + 8, ~uint64_t(0) - 8); },
       ErrorCode::kFormat, "byte range outside the tile data"},
      {"tile shape over 2^24 elements",
       [&](auto& b) {
         const uint32_t name_size = record_name_size(b, first_record);
         const uint32_t rank = b[first_record + 2 + name_size + 1];
         const uint64_t tile_rows_at = first_record + 2 + name_size + 4 + 8ull * rank;
         detail::store_u32(b.data() + tile_rows_at, 4096);
         detail::store_u32(b.data() + tile_rows_at + 4, 8192);
       },
       ErrorCode::kFormat, "tile shape 4096x8192 has more than 2^24 elements"},
      {"tile overlapping the previous one",
       [&](auto& b) { detail::store_u64(b.data() + tile_records + kWpkTileRecordBytes, detail::load_u64(b.data() + tile_records)); },
       ErrorCode::kFormat, "tile 1 (record 1 of the tile index): overlaps the previous tile"},
      {"tile over the header", [&](auto& b) { detail::store_u64(b.data() + tile_records, 0); }, ErrorCode::kFormat,
       "overlaps the previous tile or the header"},
      {"index offset past the file", [&](auto& b) { detail::store_u64(b.data() + b.size() - 48, huge); }, ErrorCode::kFormat,
       "index range outside the file"},
      {"index size past the file", [&](auto& b) { detail::store_u64(b.data() + b.size() - 40, huge); }, ErrorCode::kFormat,
       "index range outside the file"},
      {"footer version", [&](auto& b) { detail::store_u32(b.data() + b.size() - 24, kWpkFormatVersion + 1); }, ErrorCode::kFormat,
       "footer version differs from header"},
      // Fields the format reserves (0) and its other rules, with every checksum recomputed.
      {"header flags", [&](auto& b) { b[20] = 1, reseal_header(b); }, ErrorCode::kFormat,
       "header flags or reserved bytes [20, 56) not zero"},
      {"header reserved", [&](auto& b) { b[47] = 0x80, reseal_header(b); }, ErrorCode::kFormat,
       "header flags or reserved bytes [20, 56) not zero"},
      {"footer reserved", [&](auto& b) { b[b.size() - 48 + 29] = 1; }, ErrorCode::kFormat, "footer reserved bytes [28, 32) not zero"},
      {"index offset off 8", [&](auto& b) {
         b.insert(b.begin() + static_cast<ptrdiff_t>(idx), 4, uint8_t{0});
         detail::store_u64(b.data() + b.size() - 48, idx + 4);
       },
       ErrorCode::kFormat, "index offset " + std::to_string(idx + 4) + " not a multiple of 8"},
      {"bytes between index and footer", [&](auto& b) {
         b.insert(b.end() - 48, 8, uint8_t{0});
       },
       ErrorCode::kFormat, "8 bytes between the index and the footer"},
      {"index reserved", [&](auto& b) { b[idx + 5] = 1; }, ErrorCode::kFormat, "index reserved field not zero"},
      {"metadata not JSON", [&](auto& b) { b[idx + 20] = '['; }, ErrorCode::kFormat, "metadata is not a UTF-8 JSON object"},
      {"metadata an array", [&](auto& b) {
         b[idx + 20] = '[';
         b[idx + 20 + metadata_size - 1] = ']';
         std::fill(b.begin() + static_cast<ptrdiff_t>(idx + 21), b.begin() + static_cast<ptrdiff_t>(idx + 19 + metadata_size), ' ');
       },
       ErrorCode::kFormat, "metadata is not a UTF-8 JSON object"},
      {"metadata with a NUL", [&](auto& b) { b[idx + 20 + metadata_size - 2] = 0; }, ErrorCode::kFormat,
       "metadata is not a UTF-8 JSON object"},
      {"tensor name not UTF-8", [&](auto& b) { b[first_record + 2] = 0xFF; }, ErrorCode::kFormat, "name is not UTF-8"},
      {"row dims of a rank-2 tensor",
       [&](auto& b) { b[first_record + 2 + record_name_size(b, first_record) + 3] = 1; }, ErrorCode::kFormat,
       "tensor 'attn.w': row dims 1 for a tensor of rank 2 (0, or 1..none)"},
      {"tile flags", [&](auto& b) { b[tile_records + 26] = 1; }, ErrorCode::kFormat,
       "tile 0 (record 0 of the tile index): flags or reserved field not zero"},
      {"tile reserved", [&](auto& b) { b[tile_records + 31] = 1; }, ErrorCode::kFormat,
       "tile 0 (record 0 of the tile index): flags or reserved field not zero"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto bytes = f.bytes;
    c.edit(bytes);
    test::fix_wpk_checksums(bytes);
    test::write_file(path, bytes);
    AllocationWatch watch;
    const OpenResult r = try_open(path);
    INFO(r.message);
    REQUIRE_FALSE(r.opened);
    CHECK(r.code == c.code);
    CHECK(contains(r.message, c.mention));
    check_message(r.message, path);
    CHECK(watch.largest() <= allocation_limit(bytes.size()));
    // The binary: exit 1, one line.
    check_cli_error(run_wpack({"inspect", path}), c.mention);
  }
}

TEST_CASE("corrupt: a newer format version is named exactly, a flipped version bit is a corrupt header") {
  TempDir dir;
  const PackedFile f = pack_variant(dir, variants()[0]);
  const std::string path = dir.file("newer.wpk");
  REQUIRE(kWpkFormatVersion == 5);
  for (uint32_t version : {6u, 7u, 1000u, 0xFFFFFFFFu}) {
    auto bytes = f.bytes;
    test::set_wpk_header_version(bytes, version);
    test::write_file(path, bytes);
    const std::string expected = path + ": written by a newer wpack: format v" + std::to_string(version);
    const OpenResult r = try_open(path);
    CHECK(r.code == ErrorCode::kUnsupported);
    CHECK(r.message == expected);
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"inspect", path}, {"verify", path}, {"unpack", path, "-o", dir.file("x.safetensors")}}) {
      RunResult cli = run_wpack(args);
      INFO(args[0]);
      CHECK(cli.exit_code == 1);
      CHECK(cli.err == "wpack: " + expected + "\n");
    }
    CHECK(!std::filesystem::exists(dir.file("x.safetensors")));
  }
  // Version 1 (before the rANS stream revision) with a good checksum: named as older.
  {
    auto old = f.bytes;
    test::set_wpk_header_version(old, 1);
    test::write_file(path, old);
    const std::string expected = path + ": written by an older wpack: format v1 (this wpack reads v2 to v5; pack the model again)";
    const OpenResult r = try_open(path);
    CHECK(r.code == ErrorCode::kUnsupported);
    CHECK(r.message == expected);
    RunResult cli = run_wpack({"inspect", path});
    CHECK(cli.exit_code == 1);
    CHECK(cli.err == "wpack: " + expected + "\n");
  }
  // Version 0 with a good checksum: not a version this wpack knows, and not newer.
  auto bytes = f.bytes;
  test::set_wpk_header_version(bytes, 0);
  test::write_file(path, bytes);
  const OpenResult zero = try_open(path);
  CHECK(zero.code == ErrorCode::kFormat);
  CHECK(contains(zero.message, "bad format version 0"));
  // Version 6 by a flipped bit, checksum not recomputed: the header is corrupt, not newer.
  bytes = f.bytes;
  bytes[8] ^= 0x02;
  test::write_file(path, bytes);
  const OpenResult flipped = try_open(path);
  CHECK(flipped.code == ErrorCode::kCorrupt);
  CHECK(contains(flipped.message, "header checksum mismatch"));
}

TEST_CASE("versions: v4, v3 and v2 files (v5 files of default views, v3 without exp4 tiles, v2 without layout-6 tiles) read exactly") {
  TempDir dir;
  const std::string path = dir.file("v2.wpk");
  uint64_t older_files = 0;
  for (const auto& v : variants()) {
    INFO(v.name);
    const PackedFile f = pack_variant(dir, v);
    bool exp4_tiles = false;
    {
      test::write_file(path, f.bytes);
      auto r = WpkReader::open(path);
      CHECK(r->format_version() == 5);
      for (const WpkTensor& t : r->tensors()) REQUIRE(t.row_dims == 0);  // else it is no v4 file
      for (const auto& tile : r->tiles()) {
        REQUIRE(tile.filter != kWpkFilterAddedInV3);  // else it is no v2 file
        exp4_tiles |= tile.codec == kWpkCodecAddedInV4;
      }
    }
    for (uint32_t version : {4u, 3u, 2u}) {  // v2 last: the binary's checks below read it
      if (exp4_tiles && version < 4) continue;  // no v3 or v2 file (a test below)
      test::write_file(path, test::with_wpk_version(f.bytes, version));
      auto r = WpkReader::open(path);
      CHECK(r->format_version() == version);
      CHECK(decode_all(*r) == f.decoded);
      ++older_files;
    }
  }
  CHECK(older_files == 3 * variants().size() - 2);
  // The binary: inspect names the file's version; verify passes.
  RunResult inspect = run_wpack({"inspect", path});
  CHECK(inspect.exit_code == 0);
  CHECK(contains(inspect.out, "tiles, format v2\n"));
  RunResult inspect_json = run_wpack({"inspect", path, "--json"});
  CHECK(contains(inspect_json.out, "\"format_version\": 2"));
  CHECK(run_wpack({"verify", path}).exit_code == 0);
}

TEST_CASE("versions: a quantized tile of layout 6 in a v2 file is corrupt (v2 writers never wrote it)") {
  TempDir dir;
  // The test model and a larger matrix whose int4 tiles are large enough that coding the
  // zero-relative codes pays (layout 6: asymmetric int4, group 128, rans).
  MemorySource src = corrupt_test_model();
  src.add("big.w", DType::BF16, {128, 256}, test::gaussian_bf16(128 * 256, 0.02f, 6));
  PackOptions options = variants()[0].options;
  options.codec = Codec::kRans;
  options.policy = parse_policy_spec("int4", TensorPolicy{});
  options.tile_rows = 64;
  options.tile_cols = 128;
  const std::string v4_path = dir.file("v4-zrel.wpk");
  pack_model(src, v4_path, options);
  // As a v3 writer would have written it (v3 holds layout 6; the file has no exp4 tiles).
  const auto v3_bytes = test::with_wpk_version(test::read_file(v4_path), 3);
  const std::string v3_path = dir.file("v3-zrel.wpk");
  test::write_file(v3_path, v3_bytes);
  std::string first_zero_rel;  // "tensor '...': tile k (record i of the tile index)"
  {
    auto r = WpkReader::open(v3_path);
    CHECK(r->format_version() == 3);
    for (const WpkTensor& t : r->tensors())
      for (uint64_t k = 0; k < t.tile_count && first_zero_rel.empty(); ++k)
        if (r->tiles()[t.first_tile + k].filter == kWpkFilterAddedInV3)
          first_zero_rel = "tensor '" + t.name + "': tile " + std::to_string(k) + " (record " +
                           std::to_string(t.first_tile + k) + " of the tile index)";
    CHECK_NOTHROW(decode_all(*r));
  }
  REQUIRE(!first_zero_rel.empty());
  const std::string mention = first_zero_rel + ": filter 6 (quant_dense_zrel, added in format v3) in a format v2 file";

  const std::string path = dir.file("v2-zrel.wpk");
  test::write_file(path, test::with_wpk_version(v3_bytes, 2));
  check_refused_as_corrupt(dir, path, mention);
}

TEST_CASE("versions: an exp4 tile (codec 3) in a v3 or v2 file is corrupt (their writers never wrote it)") {
  TempDir dir;
  const PackedFile f = pack_variant(dir, variants()[3]);
  REQUIRE(f.name == "lossless-exp4");
  std::string first_exp4;  // "tensor '...': tile k (record i of the tile index)"
  {
    const std::string v4_path = dir.file("v4-exp4.wpk");
    test::write_file(v4_path, f.bytes);
    auto r = WpkReader::open(v4_path);
    CHECK(r->format_version() == 5);
    for (const WpkTensor& t : r->tensors())
      for (uint64_t k = 0; k < t.tile_count && first_exp4.empty(); ++k)
        if (r->tiles()[t.first_tile + k].codec == kWpkCodecAddedInV4)
          first_exp4 = "tensor '" + t.name + "': tile " + std::to_string(k) + " (record " +
                       std::to_string(t.first_tile + k) + " of the tile index)";
  }
  REQUIRE(first_exp4 == "tensor 'attn.w': tile 0 (record 0 of the tile index)");
  for (uint32_t version : {3u, 2u}) {
    INFO("v" << version);
    const std::string mention = first_exp4 + ": codec 3 (exp4, added in format v4) in a format v" + std::to_string(version) + " file";
    const std::string path = dir.file("v" + std::to_string(version) + "-exp4.wpk");
    test::write_file(path, test::with_wpk_version(f.bytes, version));
    check_refused_as_corrupt(dir, path, mention);
  }
}

namespace {
// The offset of the row dims byte of the first tensor record in a .wpk image.
size_t first_row_dims_offset(const std::vector<uint8_t>& bytes) {
  const uint64_t record = first_tensor_record(bytes);
  return record + 2 + record_name_size(bytes, record) + 3;  // name size, name, dtype, rank, scheme
}
}  // namespace

TEST_CASE("versions: row dims (v5) in a v4 file is corrupt, and out of range or not matching the tiles is named") {
  TempDir dir;
  MemorySource src;
  src.add("conv", DType::F32, {4, 8, 3}, test::gaussian_f32(96, 0.1f, 7));  // viewed 4 x 24
  PackOptions options = variants()[0].options;
  options.policy = parse_policy_spec("int8", TensorPolicy{});
  const std::string v5_path = dir.file("v5.wpk");
  pack_model(src, v5_path, options);
  const auto v5 = test::read_file(v5_path);
  const size_t at = first_row_dims_offset(v5);
  {
    auto r = WpkReader::open(v5_path);
    REQUIRE(r->tensors()[0].row_dims == 1);
    REQUIRE(v5[at] == 1);
    CHECK((r->tensors()[0].rows() == 4 && r->tensors()[0].cols() == 24));
    CHECK(verify_cpu(*r, &src, 1).ok());
  }
  const std::string path = dir.file("v4.wpk");
  test::write_file(path, test::with_wpk_version(v5, 4));
  check_refused_as_corrupt(dir, path, "tensor 'conv': row dims 1 (added in format v5) in a format v4 file");

  // Rank 3 takes row dims 0 or 1: 2 would be the default view written another way.
  for (uint8_t value : {uint8_t(2), uint8_t(3), uint8_t(255)}) {
    auto bytes = v5;
    bytes[at] = value;
    test::fix_wpk_checksums(bytes);
    test::write_file(path, bytes);
    const OpenResult r = try_open(path);
    CHECK(r.code == ErrorCode::kFormat);
    CHECK(r.message == path + ": tensor 'conv': row dims " + std::to_string(value) + " for a tensor of rank 3 (0, or 1..1)");
  }
  // Without elements, a split shape's product does not bound the view: [0, 2^40, 2^40] at row
  // dims 1 would have 2^80 columns.
  {
    MemorySource empty;
    empty.add("e", DType::F32, {0, 4, 4}, {});
    PackOptions plain = variants()[0].options;
    const std::string e_path = dir.file("empty.wpk");
    pack_model(empty, e_path, plain);
    auto e_bytes = test::read_file(e_path);
    const size_t e_at = first_row_dims_offset(e_bytes);
    REQUIRE(e_bytes[e_at] == 0);
    e_bytes[e_at] = 1;
    detail::store_u64(e_bytes.data() + e_at + 1 + 8, uint64_t{1} << 40);  // shape[1], shape[2]
    detail::store_u64(e_bytes.data() + e_at + 1 + 16, uint64_t{1} << 40);
    test::fix_wpk_checksums(e_bytes);
    test::write_file(e_path, e_bytes);
    const OpenResult e = try_open(e_path);
    CHECK(e.code == ErrorCode::kFormat);
    CHECK(e.message == e_path + ": tensor 'e': the view of row dims 1 of shape [0, 1099511627776, 1099511627776] overflows 64 bits");
  }
  // Row dims 0: the 32 x 3 view's grid of 4 x 24 tiles is 8 tiles, the file holds 1.
  auto bytes = v5;
  bytes[at] = 0;
  test::fix_wpk_checksums(bytes);
  test::write_file(path, bytes);
  const OpenResult r = try_open(path);
  CHECK(r.code == ErrorCode::kFormat);
  CHECK(contains(r.message, "tensor 'conv': tile range [0, +1) does not match its tile grid (8 tiles from 0)"));
}

TEST_CASE("corrupt: codec 3 (exp4) with another filter, on 1- or 8-byte elements, or in a quantized tensor is named") {
  TempDir dir;
  // Tile records rewritten (index checksums recomputed): the stored bytes are the packer's.
  struct Case {
    std::string name;
    MemorySource source;
    PackOptions options;
    std::string tensor;
    uint8_t filter, codec;
    std::string mention;
  };
  PackOptions exp4 = variants()[3].options;
  MemorySource model = corrupt_test_model();
  MemorySource other_sizes;
  other_sizes.add("f64", DType::F64, {8, 8}, test::random_bytes(8 * 64, 7));
  other_sizes.add("u8", DType::U8, {64}, test::random_bytes(64, 8));
  PackOptions lossy = variants()[5].options;
  REQUIRE(variants()[5].name == "lossy-rans");
  std::vector<Case> cases = {
      {"BF16 exp4 tile, filter byteshuffle", model, exp4, "attn.w", 1, 3, "codec exp4 with filter byteshuffle (exp4 takes floatplanes only)"},
      {"BF16 exp4 tile, filter none", model, exp4, "attn.w", 0, 3, "codec exp4 with filter none"},
      {"F32 exp4 tile, filter bitshuffle", model, exp4, "mlp.w", 2, 3, "codec exp4 with filter bitshuffle"},
      {"F64 tile as exp4", other_sizes, exp4, "f64", 3, 3, "codec exp4 on elements of 8 bytes (exp4 takes 2 or 4)"},
      {"U8 tile as floatplanes exp4", other_sizes, exp4, "u8", 3, 3, "float-plane filter on U8"},
      {"U8 tile as exp4, filter none", other_sizes, exp4, "u8", 0, 3, "codec exp4 with filter none"},
      {"quantized tile as exp4", model, lossy, "attn.w", kFilterQuantDense, 3, "codec exp4 in a quantized tile"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const std::string path = dir.file("exp4-misplaced.wpk");
    PackOptions options = c.options;
    options.overwrite = true;
    pack_model(c.source, path, options);
    auto bytes = test::read_file(path);
    uint64_t tile = 0;
    {
      auto r = WpkReader::open(path);
      size_t t = 0;
      while (r->tensors()[t].name != c.tensor) ++t;
      tile = r->tensors()[t].first_tile;
      if (c.filter == kFilterQuantDense) REQUIRE(r->tensors()[t].scheme != 0);
    }
    test::set_wpk_tile_coding(bytes, tile, c.filter, c.codec);
    test::write_file(path, bytes);
    const OpenResult r = try_open(path, true);
    CHECK(r.opened);
    CHECK(r.code == ErrorCode::kCorrupt);
    CHECK(r.message.rfind(path + ": tensor '" + c.tensor + "': tile 0: ", 0) == 0);
    CHECK(contains(r.message, c.mention));
    check_cli_error(run_wpack({"verify", path}), c.mention);
  }
}

TEST_CASE("corrupt: wrong magic (another format, zeros, text) is named") {
  TempDir dir;
  const std::string st = dir.file("model.safetensors");
  write_safetensors(st, {{"w", DType::F32, {4}}}, {std::vector<uint8_t>(16, 1)}, {}, false);
  const std::string zeros = dir.file("zeros.wpk");
  test::write_file(zeros, std::vector<uint8_t>(4096, 0));
  const std::string text = dir.file("text.wpk");
  const std::string hello = "hello, this is not a wpk file at all\n";
  test::write_file(text, std::vector<uint8_t>(hello.begin(), hello.end()));
  for (const std::string& path : {st, zeros, text}) {
    INFO(path);
    const OpenResult r = try_open(path);
    CHECK(r.code == ErrorCode::kFormat);
    CHECK(contains(r.message, "not a .wpk file (bad magic)"));
    check_message(r.message, path);
    for (const auto& args : std::vector<std::vector<std::string>>{{"verify", path},
                                                                  {"unpack", path, "-o", dir.file("x.safetensors")}})
      check_cli_error(run_wpack(args), path);
  }
}

TEST_CASE("corrupt: the binary exits 1 with one line for a sample of damaged files") {
  TempDir dir;
  for (const PackedFile& f : pack_all(dir)) {
    INFO(f.name);
    WorkFile work(dir.file(f.name + ".wpk"), f.bytes);
    const std::string& path = work.path();
    const std::string out = dir.file("out.safetensors");
    const uint64_t size = f.bytes.size();
    struct Damage {
      std::string what;
      std::vector<uint8_t> bytes;
      std::string mention;  // in the one-line message
      bool index_intact;    // inspect still works
      bool magic_intact = true;  // else inspect takes the file for a model to estimate (still exit 1)
    };
    std::vector<Damage> damages;
    for (uint64_t len : {uint64_t(0), uint64_t(7), uint64_t(8), uint64_t(64), uint64_t(111), uint64_t(112), size / 2,
                         size - 48, size - 1})
      damages.push_back({"truncated to " + std::to_string(len), {f.bytes.begin(), f.bytes.begin() + static_cast<ptrdiff_t>(len)},
                         "truncated", false, len >= 4});
    auto flip = [&](uint64_t pos, const std::string& mention, bool index_intact) {
      auto b = f.bytes;
      b[pos] ^= 0x04;
      damages.push_back({"byte " + std::to_string(pos) + " flipped", b, mention, index_intact, pos >= 4});
    };
    flip(0, "bad magic", false);
    flip(8, "header checksum mismatch", false);
    flip(60, "header checksum mismatch", false);
    flip(f.index_offset, "index checksum mismatch", false);
    flip(f.index_offset + 25, "index checksum mismatch", false);  // metadata
    flip(footer_offset(f) - 1, "index checksum mismatch", false);  // last tile record
    flip(footer_offset(f), "footer checksum mismatch", false);
    flip(size - 16, "footer not found", false);
    flip(size - 1, "footer checksum mismatch", false);
    for (size_t i : {size_t(0), f.tiles.size() / 2, f.tiles.size() - 1}) {
      const auto& tile = f.tiles[i];
      flip((tile.begin + tile.end) / 2,
           "tensor '" + f.tensor_names[tile.tensor] + "': tile " + std::to_string(tile.tile_in_tensor) + ":", true);
    }
    for (const Damage& d : damages) {
      INFO(d.what);
      work.assign(d.bytes);
      RunResult v = run_wpack({"verify", path});
      check_cli_error(v, d.mention);
      CHECK(contains(v.err, path));
      RunResult u = run_wpack({"unpack", path, "-o", out});
      check_cli_error(u, d.mention);
      CHECK(!std::filesystem::exists(out));
      RunResult i = run_wpack({"inspect", path});
      if (d.index_intact) {
        CHECK(i.exit_code == 0);
      } else {
        check_cli_error(i, d.magic_intact ? d.mention : path);
      }
    }
  }
}

TEST_CASE("corrupt: safetensors sizes larger than the file are refused before allocating") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  auto write_with_header = [&](const std::string& header, uint64_t data_bytes, uint64_t declared_length) {
    std::vector<uint8_t> bytes(8);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(declared_length >> (8 * i));
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.resize(bytes.size() + data_bytes, 0);
    test::write_file(path, bytes);
  };
  struct Case {
    std::string header;
    uint64_t data_bytes;
    int64_t length_delta;  // declared header length = real length + delta
    const char* mention;
  };
  const std::vector<Case> cases = {
      {R"({"w":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}})", 16, 0, "runs past the end"},
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", 16, 0, "overflows"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551615]}})", 16, 0, "hold"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16, 1 << 20, "runs past the end"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16, 99'000'000, "runs past the end"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16, int64_t(1) << 62, "exceeds the limit"},
  };
  for (const Case& c : cases) {
    INFO(c.header << " length + " << c.length_delta);
    write_with_header(c.header, c.data_bytes, c.header.size() + static_cast<uint64_t>(c.length_delta));
    AllocationWatch watch;
    std::string message;
    try {
      open_safetensors(path);
    } catch (const Error& e) {
      message = e.what();
      CHECK(e.code() == ErrorCode::kFormat);
    }
    INFO(message);
    CHECK(contains(message, c.mention));
    check_message(message, path);
    CHECK(watch.largest() <= allocation_limit(std::filesystem::file_size(path)));
    check_cli_error(run_wpack({"compress", path, "-o", dir.file("x.wpk")}), c.mention);
    CHECK(!std::filesystem::exists(dir.file("x.wpk")));
  }
}

// A lossy tensor's scheme and params are checked when they are used (decode, verify, unpack) and
// by inspect, which shows them: an unknown scheme or params that do not parse exit 1 naming the
// file and tensor everywhere, never a table or JSON of them.
TEST_CASE("corrupt: an unknown scheme or unparsable params are refused by inspect too") {
  TempDir dir;
  const PackedFile f = pack_variant(dir, variants()[4]);  // int4 g32: "attn.w" first, lossy
  const uint64_t first_record = first_tensor_record(f.bytes);
  const uint32_t name_size = record_name_size(f.bytes, first_record);
  REQUIRE(name_size == 6);
  const uint64_t scheme_at = first_record + 2 + name_size + 2;
  REQUIRE(f.bytes[scheme_at] != 0);
  const uint8_t rank = f.bytes[first_record + 2 + name_size + 1];
  const uint64_t params_at = first_record + 2 + name_size + 4 + 8ull * rank + 4 + 4 + 8 + 8 + 32 + 4;
  const std::string path = dir.file("scheme.wpk");
  for (int edit = 0; edit < 2; ++edit) {
    INFO((edit == 0 ? "scheme 200" : "params' first byte flipped"));
    auto bytes = f.bytes;
    if (edit == 0) bytes[scheme_at] = 200;
    else bytes[params_at] ^= 0xFF;
    test::fix_wpk_checksums(bytes);
    test::write_file(path, bytes);
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"inspect", path}, {"inspect", path, "--json"}, {"verify", path}, {"unpack", path, "-o", dir.file("x.safetensors")}}) {
      INFO(args[0] << " " << args.size());
      const RunResult r = run_wpack(args);
      check_cli_error(r, path + ": tensor 'attn.w'");
      if (args[0] == "inspect") CHECK(r.out.empty());  // no table or JSON of a file it refuses
    }
    CHECK(!std::filesystem::exists(dir.file("x.safetensors")));
  }
}

TEST_CASE("corrupt: a tensor name with a newline still gives one-line messages") {
  TempDir dir;
  MemorySource src;
  src.add("bad\nname\r", DType::F32, {64, 64}, test::gaussian_f32(64 * 64, 1.0f, 9));
  PackOptions o;
  o.tile_rows = o.tile_cols = 32;
  const std::string path = dir.file("nl.wpk");
  pack_model(src, path, o);
  auto bytes = test::read_file(path);
  auto r = WpkReader::open(path);
  const uint64_t offset = r->tiles()[1].offset + 3;
  r.reset();
  bytes[offset] ^= 1;
  test::write_file(path, bytes);
  RunResult v = run_wpack({"unpack", path, "-o", dir.file("x.safetensors")});
  check_cli_error(v, "tensor 'bad\\x0aname\\x0d': tile 1: checksum mismatch");
}

// A rANS exponent stream that is wrong while every checksum agrees with it (a writer bug, or a
// crafted file) fails decode at that tile, named: a header field out of range (precision field 7,
// p = 15), and one bit of the stream's last byte, a renormalisation word (caught by the final
// states). tests/gpu_tile_decode.cpp crafts the same files for the GPU kernels.
TEST_CASE("corrupt: a rANS stream changed with every checksum recomputed fails that tile") {
  TempDir dir;
  MemorySource src;
  // Seed 41000: the weights of gpu_tile_decode's pack(..., seed 41), so that this test shows the
  // CPU reference finds the very tiles the GPU test expects its kernels to report.
  src.add("w", DType::BF16, {256, 256}, test::gaussian_bf16(256 * 256, 0.02f, 41000));
  PackOptions options;
  options.codec = Codec::kRans;
  options.tile_rows = 128;
  options.tile_cols = 128;
  options.threads = 1;
  pack_model(src, dir.file("m.wpk"), options);
  const auto good = test::read_file(dir.file("m.wpk"));
  for (const test::StreamDamage damage : test::kStreamDamages) {
    INFO(test::stream_damage_name(damage));
    test::write_file(dir.file("c.wpk"), test::with_damaged_stream(good, 1, damage));
    auto reader = WpkReader::open(dir.file("c.wpk"));  // the checksums agree
    REQUIRE(reader->tiles()[1].filter == static_cast<uint8_t>(Filter::kFloatPlanes));
    std::vector<uint8_t> out(256 * 256 * 2);
    std::string message;
    ErrorCode code = ErrorCode::kIo;
    try {
      decode_tensor(*reader, 0, out, 1);
    } catch (const Error& e) {
      message = e.what();
      code = e.code();
    }
    INFO(message);
    CHECK(code == ErrorCode::kCorrupt);
    CHECK(contains(message, "tensor 'w': tile 1:"));
  }
}

// The quantizer writes finite scales and table entries only (it refuses weights that are not
// finite, and clamps scales to 65504), and never fp8's NaN codes. One that is infinity or NaN,
// checksums recomputed, makes the tile (scales in plane A, codes) or the tensor (row scales and
// tables in the params) corrupt, named, in the CPU decoders as in the GPU decode
// (tests/gpu_tile_decode.cpp, "gpu fuzz").
TEST_CASE("corrupt: a scale, table entry or fp8 code that is infinity or NaN (checksums recomputed) is named") {
  TempDir dir;
  const std::string path = dir.file("q.wpk");
  auto pack_one = [&](Scheme scheme, Codec codec) {
    MemorySource src;
    src.add("w", DType::BF16, {64, 256}, test::gaussian_bf16(64 * 256, 0.02f, 77));
    PackOptions o;
    o.tile_rows = 32;
    o.tile_cols = 128;
    o.codec = codec;
    o.policy.spec.scheme = scheme;
    std::filesystem::remove(path);
    pack_model(src, path, o);
    return test::read_file(path);
  };
  auto decode_error = [&](const std::vector<uint8_t>& bytes) {
    test::write_file(path, bytes);
    auto reader = WpkReader::open(path);  // the checksums agree
    std::vector<float> out(64 * 256);
    try {
      decode_tensor_f32(*reader, 0, out, 1);
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::kCorrupt);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  for (const uint8_t high : {uint8_t{0x7C}, uint8_t{0xFE}}) {  // +infinity's high byte; a negative NaN's
    INFO("high byte " << int{high});
    // int4 (scales in plane A of each tile, codec none: raw): tile 1's scale 3.
    auto bytes = pack_one(Scheme::kInt4, Codec::kNone);
    test::edit_wpk_tile(bytes, 1, [&](uint8_t* b, uint64_t) { b[8 + 2 * 3 + 1] = high; });
    const std::string message = decode_error(bytes);
    INFO(message);
    CHECK(contains(message, "tensor 'w': tile 1: scale 3 is not finite (fp16 bits 0x"));
    check_cli_error(run_wpack({"verify", path}), "tensor 'w': tile 1: scale 3 is not finite");
    // fp8 (codes e4m3fn): code 5 of tile 1 made 0x7F or 0xFF, one of the two NaN codes.
    bytes = pack_one(Scheme::kFp8, Codec::kNone);
    test::edit_wpk_tile(bytes, 1, [&](uint8_t* b, uint64_t) { b[8 + 5] = high | 0x7F; });
    const std::string nan_code = decode_error(bytes);
    INFO(nan_code);
    CHECK(contains(nan_code, "tensor 'w': tile 1: code 5 is an fp8 NaN code"));
    // int8 and lut4 (row scales, tables in the params): entry 2's high byte.
    for (const Scheme scheme : {Scheme::kInt8, Scheme::kLut4}) {
      pack_one(scheme, Codec::kNone);
      auto reader = WpkReader::open(path);
      const WpkTensor t = reader->tensors()[0];
      std::vector<uint8_t> params = t.params;
      REQUIRE(params.size() >= 24 + 6);
      REQUIRE(parse_quant_params(t.scheme, params, 64, 256, t.tile_rows, t.tile_cols).bits > 0);
      params[24 + 2 * 2 + 1] = high;
      std::string what;
      try {
        parse_quant_params(t.scheme, params, 64, 256, t.tile_rows, t.tile_cols);
      } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::kCorrupt);
        what = e.what();
      }
      CHECK(what.rfind(scheme == Scheme::kInt8 ? "row scale 2 is not finite" : "table entry 2 is not finite", 0) == 0);
    }
  }
}
