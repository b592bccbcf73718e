// Fuzz harnesses: one function per surface that reads untrusted bytes.
//
// Each harness takes arbitrary bytes, feeds them to one wpack surface and returns normally when
// the surface either accepted them or refused them with a wpack::Error. Anything else is a bug:
// a sanitizer report, another exception escaping (std::bad_alloc, std::out_of_range, ...), or a
// harness check failing (fail() prints the check and aborts).
//
// The same functions run in two places:
//   - fuzz_<surface>, fuzz/entry.cpp calling it, is a libFuzzer target (WPACK_FUZZ=ON, clang,
//     ASan+UBSan; fuzz/run.sh);
//   - tests/test_fuzz_regressions.cpp replays fuzz/corpus/<surface>/ and the crash inputs through
//     them in the ordinary test suite (g++, and the WPACK_SANITIZE=ON build in CI).
//
// Harnesses bound what an input may make them allocate (sizes they choose themselves are capped;
// tiles whose declared size exceeds kMaxDecodeBytes are skipped), so a run measures robustness,
// not how much memory the machine has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace wpack::fuzz {

using Bytes = std::span<const uint8_t>;

void safetensors(Bytes data);  // fuzz/safetensors.cpp: open_safetensors on the bytes as a file
void hdf5(Bytes data);         // fuzz/hdf5.cpp: open_hdf5 on an HDF5 file the bytes describe
void wpk(Bytes data);          // fuzz/wpk.cpp: WpkReader::open and every tile decoded
void zstd(Bytes data);         // fuzz/zstd.cpp: zstd_decompress; compress/decompress round trip
void rans(Bytes data);         // fuzz/rans.cpp: rans_decode, deserialize_rans_table; round trip
void filters(Bytes data);      // fuzz/filters.cpp: undo/apply_filter against the scalar references
void tile(Bytes data);         // fuzz/tile.cpp: decode_tile (plane directory, codec, un-shuffle)
void quant_tile(Bytes data);   // fuzz/quant_tile.cpp: parse_quant_params, decode_quant_tile_ref
void pack(Bytes data);         // fuzz/pack.cpp: pack_model on drawn tensors and options, read back

struct Target {
  const char* name;  // also the corpus folder: fuzz/corpus/<name>/
  void (*run)(Bytes data);
};
// Every harness above, in a fixed order.
std::span<const Target> all_targets();

// Largest decoded buffer a harness lets an input ask for (bytes).
inline constexpr uint64_t kMaxDecodeBytes = uint64_t{1} << 22;

// Prints "<target>: harness check failed: <what>" to stderr and aborts.
[[noreturn]] void fail(const char* target, const std::string& what);

// Reads fields off the front of the input; past the end every read returns zeros / empty.
class Input {
 public:
  explicit Input(Bytes data) : data_(data) {}
  uint8_t u8();
  uint16_t u16();
  uint32_t u32();
  bool flag() { return (u8() & 1) != 0; }
  // Up to `n` bytes (fewer at the end of the input).
  Bytes bytes(size_t n);
  // A string of at most `max_len` bytes: length byte, then the bytes.
  std::string string(size_t max_len);
  // Everything not read yet.
  Bytes rest();
  size_t remaining() const { return data_.size() - pos_; }

 private:
  Bytes data_;
  size_t pos_ = 0;
};

// A regular file holding `bytes` in the temporary folder (TMPDIR), at path(); removed on
// destruction. Not a memfd: libhdf5 refuses /proc/self/fd/N of one ("can't retrieve real path").
class TempFile {
 public:
  explicit TempFile(Bytes bytes);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// The HDF5 file image that fuzz/hdf5.cpp builds from `program` (empty when HDF5 could not make one).
std::vector<uint8_t> hdf5_image(Bytes program);

// Rewrites every checksum of a .wpk image (header, tile records, index, footer) to match its bytes
// as far as its structure can be followed, so that mutations reach the index and tile parsers
// instead of stopping at the first checksum. Leaves bytes it cannot place unchanged.
void fix_wpk_checksums(std::vector<uint8_t>& file);

}  // namespace wpack::fuzz
