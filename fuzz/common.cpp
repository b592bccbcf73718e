// Shared pieces of the fuzz harnesses (fuzz/harness.h): input reader, temporary files, checksum fix-up.
#include "fuzz/harness.h"

#include <fcntl.h>  // O_CLOEXEC
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>  // mkostemp
#include <cstring>
#include <filesystem>

#include "formats/detail/le.h"  // load/store of the little-endian .wpk fields
#include "formats/wpk.h"        // wpk_checksum and the fixed sizes

namespace wpack::fuzz {

void fail(const char* target, const std::string& what) {
  std::fprintf(stderr, "%s: harness check failed: %s\n", target, what.c_str());
  std::fflush(stderr);
  std::abort();
}

uint8_t Input::u8() { return pos_ < data_.size() ? data_[pos_++] : 0; }
uint16_t Input::u16() { return static_cast<uint16_t>(u8() | (u8() << 8)); }
uint32_t Input::u32() { return u16() | (static_cast<uint32_t>(u16()) << 16); }

Bytes Input::bytes(size_t n) {
  n = std::min(n, remaining());
  Bytes out = data_.subspan(pos_, n);
  pos_ += n;
  return out;
}

std::string Input::string(size_t max_len) {
  const size_t len = max_len == 0 ? 0 : u8() % (max_len + 1);
  Bytes b = bytes(len);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Bytes Input::rest() { return bytes(remaining()); }

TempFile::TempFile(Bytes bytes) {
  path_ = (std::filesystem::temp_directory_path() / "wpack-fuzz-XXXXXX").string();
  fd_ = ::mkostemp(path_.data(), O_CLOEXEC);
  if (fd_ < 0) fail("TempFile", std::string("mkostemp: ") + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n <= 0) fail("TempFile", std::string("write: ") + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

TempFile::~TempFile() {
  ::close(fd_);
  ::unlink(path_.c_str());
}

void fix_wpk_checksums(std::vector<uint8_t>& file) {
  const uint64_t size = file.size();
  uint8_t* base = file.data();
  if (size >= kWpkHeaderBytes) detail::store_u64(base + 56, wpk_checksum({base, 56}));
  if (size < kWpkHeaderBytes + kWpkFooterBytes) return;
  uint8_t* foot = base + size - kWpkFooterBytes;
  const uint64_t index_offset = detail::load_u64(foot);
  const uint64_t index_size = detail::load_u64(foot + 8);
  const uint64_t data_end = size - kWpkFooterBytes;
  if (index_offset <= data_end && index_size <= data_end - index_offset && index_size >= 16) {
    // The tile records are the last 40 * N bytes of the index (N at index offset 8).
    uint8_t* index = base + index_offset;
    const uint64_t tiles = detail::load_u64(index + 8);
    if (tiles <= index_size / kWpkTileRecordBytes) {
      uint8_t* record = index + index_size - tiles * kWpkTileRecordBytes;
      for (uint64_t i = 0; i < tiles; ++i, record += kWpkTileRecordBytes) {
        const uint64_t offset = detail::load_u64(record), stored = detail::load_u64(record + 8);
        if (offset <= size && stored <= size - offset)
          detail::store_u64(record + 32, wpk_checksum({base + offset, static_cast<size_t>(stored)}));
      }
    }
    detail::store_u64(foot + 16, wpk_checksum({index, static_cast<size_t>(index_size)}));
  }
  detail::store_u64(foot + 40, wpk_checksum({foot, 40}));
}

}  // namespace wpack::fuzz
