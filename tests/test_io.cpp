// formats/io.h: AtomicOutputFile's holes. A 4 KiB block of the file that ends up all zero is not
// written, however the writes that make it are cut (a .wpk's small tiles and their padding fall
// across block boundaries), and the file reads back exactly the bytes written.
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "formats/io.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;

TEST_CASE("io: zero blocks become holes however the writes are cut, and the bytes read back as written") {
  TempDir dir;
  const std::string path = dir.file("holes.bin");
  std::vector<uint8_t> expect;
  {
    AtomicOutputFile f(path, false);
    // 4 MiB: zeros in writes of 1000 or 4097 bytes (none of them holds a whole aligned block), a
    // few data bytes between them (one at a block's first byte, one at its last), padding to 64.
    std::mt19937_64 rng(5);
    const uint64_t marks[] = {100, 4096 * 7, 4096 * 300 - 1, 4096 * 700 + 17, (uint64_t{4} << 20) - 1};
    size_t next_mark = 0;
    while (expect.size() < (uint64_t{4} << 20)) {
      const uint64_t len = rng() % 2 ? 1000 : 4097;
      std::vector<uint8_t> piece(std::min<uint64_t>(len, (uint64_t{4} << 20) - expect.size()), 0);
      for (; next_mark < std::size(marks) && marks[next_mark] < expect.size() + piece.size(); ++next_mark)
        piece[marks[next_mark] - expect.size()] = static_cast<uint8_t>(0xA0 + next_mark);
      f.write(piece.data(), piece.size());
      expect.insert(expect.end(), piece.begin(), piece.end());
      if (rng() % 4 == 0) {
        f.pad_to(64);
        expect.resize((expect.size() + 63) / 64 * 64, 0);
      }
    }
    REQUIRE(next_mark == std::size(marks));
    REQUIRE(f.position() == expect.size());
    f.commit();
  }
  REQUIRE(test::read_file(path) == expect);
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  // Five blocks hold data; the file system may allocate a little more, never the 4 MiB.
  INFO("allocated " << st.st_blocks * 512 << " bytes");
  CHECK(uint64_t(st.st_blocks) * 512 < (uint64_t{1} << 20));
}

// A target whose name has NAME_MAX (255) bytes or nearly: its temporary name (for -f, and where the
// file system has no O_TMPFILE) must fit too. A 230-byte name failed with "File name too long" at
// commit, after the work, when -f was given.
TEST_CASE("io: targets with names of up to 255 bytes, new or replaced") {
  TempDir dir;
  // Different contents (and lengths, longer and shorter) on each pass, so that a replace that kept
  // the old file, or wrote into it in place without truncating, reads back wrong.
  const std::vector<std::vector<uint8_t>> contents = {{1, 2, 3, 4, 5}, {9, 8, 7, 6, 5, 4, 3, 2}, {0x42, 0x43}};
  std::vector<std::string> names;
  for (const size_t length : {200u, 230u, 255u}) {
    const std::string name(length, 'n');
    const std::string path = dir.file(name);
    names.push_back(name);
    INFO("name of " << length << " bytes");
    const bool overwrite_of_pass[] = {false, true, true};  // new, then replacing the file twice
    for (size_t pass = 0; pass < contents.size(); ++pass) {
      INFO("pass " << pass);
      AtomicOutputFile f(path, overwrite_of_pass[pass]);
      f.write(contents[pass].data(), contents[pass].size());
      REQUIRE_NOTHROW(f.commit());
      CHECK(test::read_file(path) == contents[pass]);
    }
  }
  // Nothing else is left in the directory (no temporary files).
  std::vector<std::string> listed;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) listed.push_back(e.path().filename().string());
  std::sort(listed.begin(), listed.end());
  std::sort(names.begin(), names.end());
  CHECK(listed == names);
}

// The output's mode: a new file's is 0666 less the umask (it was always 0644: a user's umask 077
// gave files others could read); a replaced file keeps its own.
TEST_CASE("io: a new output follows the umask, a replaced one keeps its mode") {
  TempDir dir;
  const std::vector<uint8_t> bytes = {1, 2, 3};
  auto write = [&](const std::string& path, bool overwrite) {
    AtomicOutputFile f(path, overwrite);
    f.write(bytes.data(), bytes.size());
    f.commit();
  };
  auto mode_of = [](const std::string& path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
  };
  const mode_t saved = ::umask(077);
  write(dir.file("private"), false);
  ::umask(022);
  write(dir.file("shared"), false);
  ::umask(saved);
  CHECK(mode_of(dir.file("private")) == 0600);
  CHECK(mode_of(dir.file("shared")) == 0644);
  REQUIRE(::chmod(dir.file("shared").c_str(), 0640) == 0);
  write(dir.file("shared"), true);
  CHECK(mode_of(dir.file("shared")) == 0640);
  CHECK(test::read_file(dir.file("shared")) == bytes);
}
