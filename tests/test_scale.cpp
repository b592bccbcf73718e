// Scale (issue 6, item 5): tensors of more than 2^31 elements and .wpk files over 4 GiB, through the
// wpack binary, generated cheaply: the inputs are sparse files (ftruncate; a few marker values
// written at far offsets), and wpack writes zero blocks as holes, so the multi-GiB files take
// almost no disk. Tests tagged [scale] take ~10-40 s each on a 2-core machine
// (`ctest -R test_scale` runs them, `ctest -E test_scale` leaves them out).
//
// Also: 64-bit size arithmetic (shape products that overflow are refused, not wrapped), and the peak
// memory of compress and unpack (the child's ru_maxrss, mapped pages included) stays far below the
// tensor: both stream it a batch of tiles at a time.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "packer/tiling.h"
#include "packer/unpack.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;

namespace {

// Under AddressSanitizer (the wpack binary is built the same way) resident memory also holds
// shadow memory and the allocator's quarantine: the peak-RSS bounds are then only reported.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Peak RSS of a child that streams a multi-GiB tensor: far below the tensor.
void check_peak_rss(long max_rss_kib) {
  if (kSanitized) return;
  CHECK(max_rss_kib < 1024 * 1024);
}

struct SparseTensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> values;  // (element index, bytes): the rest is zero
};

// A safetensors file whose data section is a hole but for the given values. Returns the absolute
// file offset of each tensor's data.
std::vector<uint64_t> write_sparse_safetensors(const std::string& path, const std::vector<SparseTensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  std::vector<uint64_t> begins;
  for (const auto& t : tensors) {
    const uint64_t bytes = TensorInfo{t.name, t.dtype, t.shape}.num_bytes();
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    begins.push_back(offset);
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));
  REQUIRE(::pwrite(fd, length, 8, 0) == 8);
  REQUIRE(::pwrite(fd, text.data(), text.size(), 8) == static_cast<ssize_t>(text.size()));
  const uint64_t data_start = 8 + text.size();
  REQUIRE(::ftruncate(fd, static_cast<off_t>(data_start + offset)) == 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    begins[i] += data_start;
    const uint32_t esize = dtype_size(tensors[i].dtype);
    for (const auto& [element, bytes] : tensors[i].values) {
      REQUIRE(bytes.size() == esize);
      REQUIRE(::pwrite(fd, bytes.data(), esize, static_cast<off_t>(begins[i] + element * esize)) == esize);
    }
  }
  REQUIRE(::close(fd) == 0);
  return begins;
}

std::vector<uint8_t> bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return {static_cast<uint8_t>(bits >> 16), static_cast<uint8_t>(bits >> 24)};
}

// Equal contents, reading only where either file has data (SEEK_DATA/SEEK_HOLE; on a filesystem
// without holes that is everything) and checking that the other is zero or equal there.
bool same_sparse_contents(const std::string& a, const std::string& b) {
  const int fa = ::open(a.c_str(), O_RDONLY), fb = ::open(b.c_str(), O_RDONLY);
  REQUIRE(fa >= 0);
  REQUIRE(fb >= 0);
  struct stat sa, sb;
  REQUIRE(::fstat(fa, &sa) == 0);
  REQUIRE(::fstat(fb, &sb) == 0);
  bool same = sa.st_size == sb.st_size;
  std::vector<uint8_t> ba(1 << 20), bb(1 << 20);
  for (int pass = 0; pass < 2 && same; ++pass) {
    const int fd = pass == 0 ? fa : fb;
    off_t pos = 0;
    while (same) {
      const off_t data = ::lseek(fd, pos, SEEK_DATA);
      if (data < 0) break;  // no more data
      const off_t hole = ::lseek(fd, data, SEEK_HOLE);
      for (off_t at = data; at < hole && same;) {
        const size_t n = static_cast<size_t>(std::min<off_t>(hole - at, static_cast<off_t>(ba.size())));
        REQUIRE(::pread(fa, ba.data(), n, at) == static_cast<ssize_t>(n));
        REQUIRE(::pread(fb, bb.data(), n, at) == static_cast<ssize_t>(n));
        same = std::memcmp(ba.data(), bb.data(), n) == 0;
        at += static_cast<off_t>(n);
      }
      pos = hole;
    }
  }
  ::close(fa);
  ::close(fb);
  return same;
}

struct Child {
  int exit_code = -1;
  double seconds = 0;
  long max_rss_kib = 0;  // ru_maxrss of the child
  std::string err;
};

// Runs the wpack binary and reports its exit code, time and peak resident memory.
Child run_measured(const std::vector<std::string>& args) {
  TempDir tmp;
  const std::string err_path = tmp.file("err");
  std::vector<std::string> text = {WPACK_BINARY};
  text.insert(text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : text) argv.push_back(a.data());
  argv.push_back(nullptr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err < 0) ::_exit(126);
    ::dup2(err, 1);
    ::dup2(err, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  REQUIRE(::wait4(pid, &status, 0, &usage) == pid);
  Child c;
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  c.max_rss_kib = usage.ru_maxrss;
  const auto bytes = test::read_file(err_path);
  c.err.assign(bytes.begin(), bytes.end());
  return c;
}

// Fails the test (it does not skip: a test that did not run must not count as passed) where the temp
// directory cannot hold the real bytes a run may need if the filesystem does not keep holes. Where
// statvfs fails the test runs and fails on its own if the disk runs out.
void require_disk(const std::string& dir, uint64_t bytes) {
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) != 0) return;
  const uint64_t free = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  if (free < bytes)
    FAIL("not run: " << dir << " has " << free / (1 << 20) << " MiB free, the test needs " << bytes / (1 << 20)
                     << " MiB (point TMPDIR at a file system with more free space)");
}

uint64_t allocated_bytes(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return uint64_t(st.st_blocks) * 512;
}

}  // namespace

TEST_CASE("scale: shape products that overflow 64 bits are refused, not wrapped") {
  const TensorInfo big{"t", DType::F32, {uint64_t(1) << 32, uint64_t(1) << 32}};
  CHECK_THROWS_AS(big.num_elements(), Error);
  const TensorInfo bytes{"t", DType::F64, {uint64_t(1) << 31, uint64_t(1) << 31}};  // 2^62 elements, 2^65 bytes
  CHECK(bytes.num_elements() == uint64_t(1) << 62);
  CHECK_THROWS_AS(bytes.num_bytes(), Error);
  const TensorInfo fine{"t", DType::BF16, {uint64_t(1) << 31, 3}};
  CHECK(fine.num_bytes() == (uint64_t(3) << 32));

  TempDir dir;
  WpkWriter w(dir.file("x.wpk"), false);
  WpkTensor t;
  t.name = "t";
  t.dtype = DType::F64;
  t.shape = {uint64_t(1) << 31, uint64_t(1) << 31};
  t.tile_rows = t.tile_cols = 128;
  CHECK_THROWS_AS(w.begin_tensor(t), Error);

  // The tiling of a > 2^31-element matrix: 64-bit offsets everywhere.
  const TileGeometry g = tile_geometry(MatrixView{65538, 32768}, 128, 128);
  CHECK(g.tile_count() == 513u * 256u);
  const TileRect last = g.rect(g.tile_count() - 1);
  CHECK(last.row0 == 65536);
  CHECK(last.rows == 2);
  CHECK(last.col0 == 32640);
}

TEST_CASE("scale: a BF16 vector of 2^31 + 5 elements packs into a .wpk over 4 GiB and unpacks bit-exactly",
          "[scale]") {
  TempDir dir;
  require_disk(dir.path(), uint64_t(1) << 30);
  const uint64_t n = (uint64_t(1) << 31) + 5;
  const std::string model = dir.file("huge.safetensors");
  // Markers around the 2^31-element and 4 GiB boundaries, and a tensor after the huge one.
  const std::vector<uint64_t> marks = {0, (uint64_t(1) << 30) + 1, (uint64_t(1) << 31) - 1, uint64_t(1) << 31, n - 1};
  SparseTensor huge{"huge", DType::BF16, {n}, {}};
  for (size_t i = 0; i < marks.size(); ++i) huge.values.push_back({marks[i], bf16(1.5f + float(i))});
  SparseTensor tail{"tail", DType::I64, {3}, {{0, {1, 2, 3, 4, 5, 6, 7, 8}}, {2, {9, 9, 9, 9, 9, 9, 9, 9}}}};
  SparseTensor head{"head", DType::F32, {4}, {{1, {0, 0, 0x80, 0x3f}}}};
  write_sparse_safetensors(model, {head, huge, tail});

  // --codec none: tiles stored as they are, so the .wpk holds > 4 GiB of tile data.
  const std::string packed = dir.file("huge.wpk");
  Child c = run_measured({"compress", model, "-o", packed, "--codec", "none", "-q"});
  INFO(c.err);
  REQUIRE(c.exit_code == 0);
  WARN("compress (codec none) of " << (n * 2) / (1 << 20) << " MiB: " << c.seconds << " s, peak RSS " << c.max_rss_kib / 1024
                                   << " MiB");
  check_peak_rss(c.max_rss_kib);  // streams the tensor: its mapped pages go as its tiles are done
  {
    auto r = WpkReader::open(packed);
    CHECK(r->file_size() > (uint64_t(4) << 30));
    REQUIRE(r->tensors().size() == 3);
    const WpkTensor& t = r->tensors()[1];
    CHECK(t.name == "huge");
    CHECK(t.num_elements() == n);
    CHECK(t.tile_count == (n + max_vector_tile_elements(2) - 1) / max_vector_tile_elements(2));
    CHECK(r->tiles()[r->tensors()[2].first_tile].offset > (uint64_t(4) << 30));  // "tail" past 4 GiB
    // The markers decode from their tiles (offsets past 2^32 in the file, past 2^31 in the tensor).
    std::vector<uint8_t> raw;
    for (size_t i = 0; i < marks.size(); ++i) {
      const uint64_t tile = marks[i] / t.tile_cols, at = marks[i] % t.tile_cols;
      decode_tile_of(*r, 1, tile, raw);
      INFO("marker " << i << " in tile " << tile);
      CHECK(std::vector<uint8_t>(raw.begin() + 2 * at, raw.begin() + 2 * at + 2) == bf16(1.5f + float(i)));
    }
    decode_tile_of(*r, 2, 0, raw);
    CHECK(raw == std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9});
  }
  CHECK(allocated_bytes(packed) < (uint64_t(64) << 20));  // zero blocks are holes

  const std::string unpacked = dir.file("unpacked.safetensors");
  Child u = run_measured({"unpack", packed, "-o", unpacked, "-q"});
  INFO(u.err);
  REQUIRE(u.exit_code == 0);
  WARN("unpack of the 4 GiB tensor: " << u.seconds << " s, peak RSS " << u.max_rss_kib / 1024 << " MiB");
  check_peak_rss(u.max_rss_kib);  // streams blocks of tiles: far below the 4 GiB tensor
  CHECK(same_sparse_contents(model, unpacked));
}

TEST_CASE("scale: a U8 matrix of 2^31 + 2^16 elements round-trips with zstd and with rans", "[scale]") {
  TempDir dir;
  require_disk(dir.path(), uint64_t(1) << 30);
  const uint64_t rows = 65538, cols = 32768;  // 2^31 + 2^16 elements, rows past 2^16, offsets past 2^31
  const std::string model = dir.file("matrix.safetensors");
  SparseTensor m{"matrix", DType::U8, {rows, cols}, {}};
  const std::vector<std::pair<uint64_t, uint64_t>> marks = {{0, 0}, {40000, 12345}, {65535, 32767}, {65536, 0}, {65537, 32767}};
  for (size_t i = 0; i < marks.size(); ++i) m.values.push_back({marks[i].first * cols + marks[i].second, {uint8_t(0x11 * (i + 1))}});
  write_sparse_safetensors(model, {m});
  for (const char* codec : {"zstd", "rans"}) {
    INFO(codec);
    const std::string packed = dir.file(std::string("matrix-") + codec + ".wpk");
    Child c = run_measured({"compress", model, "-o", packed, "--codec", codec, "-q"});
    INFO(c.err);
    REQUIRE(c.exit_code == 0);
    WARN(codec << ": compress of 2 GiB: " << c.seconds << " s, peak RSS " << c.max_rss_kib / 1024 << " MiB");
    check_peak_rss(c.max_rss_kib);
    {
      auto r = WpkReader::open(packed);
      const WpkTensor& t = r->tensors()[0];
      CHECK(t.num_elements() == rows * cols);
      CHECK(t.tile_count == 513u * 256u);
      const TileGeometry g = tile_geometry(t.view(), t.tile_rows, t.tile_cols);
      std::vector<uint8_t> raw;
      for (size_t i = 0; i < marks.size(); ++i) {
        const auto [row, col] = marks[i];
        const uint64_t tile = (row / t.tile_rows) * g.grid_cols + col / t.tile_cols;
        decode_tile_of(*r, 0, tile, raw);
        const TileRect rect = g.rect(tile);
        CHECK(raw[(row - rect.row0) * rect.cols + (col - rect.col0)] == uint8_t(0x11 * (i + 1)));
      }
    }
    const std::string unpacked = dir.file("unpacked.safetensors");
    Child u = run_measured({"unpack", packed, "-o", unpacked, "-q", "-f"});
    INFO(u.err);
    REQUIRE(u.exit_code == 0);
    WARN(codec << ": unpack of 2 GiB: " << u.seconds << " s, peak RSS " << u.max_rss_kib / 1024 << " MiB");
    check_peak_rss(u.max_rss_kib);
    CHECK(same_sparse_contents(model, unpacked));
    std::filesystem::remove(unpacked);
    if (std::string(codec) == "rans") {
      // verify decodes (and compares) a block of tile rows at a time: it held the 2 GiB tensor whole,
      // and its source too with --against
      for (const bool against : {false, true}) {
        std::vector<std::string> args = {"verify", packed};
        if (against) args.insert(args.end(), {"--against", model});
        Child v = run_measured(args);
        INFO(v.err);
        CHECK(v.exit_code == 0);
        WARN("verify" << (against ? " --against" : "") << " of 2 GiB: " << v.seconds << " s, peak RSS "
                      << v.max_rss_kib / 1024 << " MiB");
        check_peak_rss(v.max_rss_kib);
      }
      // A source differing at two elements of later blocks: both counted, the first named
      const std::string changed = dir.file("changed.safetensors");
      SparseTensor c2 = m;
      c2.values[3].second = {0x01};  // row 65536, col 0
      c2.values.push_back({uint64_t(65537) * cols + 5, {0x02}});
      write_sparse_safetensors(changed, {c2});
      Child bad = run_measured({"verify", packed, "--against", changed});
      CHECK(bad.exit_code == 1);
      CHECK(bad.err.find("tensor 'matrix': tile " + std::to_string(512u * 256u) + ": 2 elements differ from " + changed +
                         " (first at row 65536, col 0)") != std::string::npos);
    }
    std::filesystem::remove(packed);
  }
}

// A header's JSON is built a member at a time, at most 4096 values of each (formats/detail/
// json_rules.h): a 30 MB header of one entry of 10^7 empty objects took 1.1 GB as one JSON value.
TEST_CASE("scale: a 30 MB safetensors header of one huge entry is refused without building it") {
  TempDir dir;
  std::string header = R"({"w":[)";
  header.reserve(30'000'100);
  for (int i = 0; i < 10'000'000; ++i) header += i ? ",{}" : "{}";
  header += "]}";
  std::string prefix(8, '\0');  // the header's length, little-endian
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  header.insert(0, prefix);
  const std::vector<uint8_t> bytes(header.begin(), header.end());
  const std::string path = dir.file("junk.safetensors");
  test::write_file(path, bytes);
  Child c = run_measured({"inspect", path});
  INFO(c.err);
  CHECK(c.exit_code == 1);
  CHECK(c.err.find(path + ": tensor 'w': entry is not an object but [{},{},") != std::string::npos);
  WARN("inspect of a 30 MB junk header: peak RSS " << c.max_rss_kib / 1024 << " MiB");
  if (!kSanitized) CHECK(c.max_rss_kib < 256 * 1024);
}
