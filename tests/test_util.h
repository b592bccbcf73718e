// Shared test helpers: temporary directories, deterministic random data, running the wpack binary.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace wpack::test {

// Sets an environment variable (for the wpack processes a test starts, or for the library read in
// this process); restores the old value, or unsets it, on destruction.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Deterministic pseudo-random bytes (splitmix64 stream seeded by `seed`).
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed);
// n BF16/F32/F16 values drawn from N(0, stddev^2) (Box-Muller over splitmix64), as raw LE bytes.
std::vector<uint8_t> gaussian_bf16(size_t n, float stddev, uint64_t seed);
std::vector<uint8_t> gaussian_f32(size_t n, float stddev, uint64_t seed);
std::vector<uint8_t> gaussian_f16(size_t n, float stddev, uint64_t seed);

std::vector<uint8_t> read_file(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

// Crafting .wpk files (docs/FORMAT.md) from a file image `bytes`:
// fix_wpk_checksums recomputes the index checksum in the footer and the footer's own checksum;
// edit_wpk_tile lets `edit` change tile record `tile`'s stored bytes in place (pointer, size), then
// recomputes that record's checksum and fix_wpk_checksums, so that a reader opens the file and only
// the tile's contents are wrong. Throws std::runtime_error when the image is not well formed.
void fix_wpk_checksums(std::vector<uint8_t>& bytes);
// set_wpk_header_version sets the header's version field, with the header checksum made to agree;
// with_wpk_version returns the bytes as a writer of `version` would have written them, for a file
// whose contents that version can hold: the header and footer version fields and their checksums.
void set_wpk_header_version(std::vector<uint8_t>& bytes, uint32_t version);
std::vector<uint8_t> with_wpk_version(std::vector<uint8_t> bytes, uint32_t version);
void edit_wpk_tile(std::vector<uint8_t>& bytes, uint64_t tile, const std::function<void(uint8_t*, uint64_t)>& edit);
// set_wpk_tile_coding sets tile record `tile`'s filter and codec bytes, with the index checksums
// made to agree (fix_wpk_checksums): the tile's stored bytes are unchanged.
void set_wpk_tile_coding(std::vector<uint8_t>& bytes, uint64_t tile, uint8_t filter, uint8_t codec);

// Two ways to damage a tile's rANS stream (a mode-1 stream in a two-plane tile: a lossless BF16
// tile's exponents, plane 0, or a quantized tile's plane A or B) behind valid checksums: its
// precision field out of range (p = 15, the header is malformed), or one bit of its last byte, a
// renormalisation word (found by the final states).
enum class StreamDamage { kPrecisionField, kLastWord };
inline constexpr StreamDamage kStreamDamages[] = {StreamDamage::kPrecisionField, StreamDamage::kLastWord};
const char* stream_damage_name(StreamDamage damage);
// The file image `bytes` with plane `plane` (0 or 1) of tile `tile` damaged (edit_wpk_tile). Throws
// std::runtime_error when that plane is not a coded mode-1 stream.
std::vector<uint8_t> with_damaged_stream(std::vector<uint8_t> bytes, uint64_t tile, StreamDamage damage,
                                         uint32_t plane = 0);

// Copies the .wpk file `from` to `to` through WpkWriter (the current format version), coding each
// two-plane rANS tile's plane A with rANS (8-bit symbols) where that makes it smaller, as the packer
// wrote dense quantized tiles before it kept their plane A raw; everything else kept. Returns the
// number of tiles so recoded. (Meant for files of quantized rans tensors: a tile of another codec
// would come out corrupt, its coded planes being that codec's.)
uint64_t with_side_planes_coded(const std::string& from, const std::string& to);

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built wpack binary with `args` (shell-quoted here), capturing stdout and stderr; with
// `stdout_path`, stdout goes to that file instead (e.g. /dev/full) and `out` is empty.
RunResult run_wpack(const std::vector<std::string>& args, const std::string& stdout_path = {});

}  // namespace wpack::test
