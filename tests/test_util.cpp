#include "test_util.h"

#include "formats/detail/le.h"  // load/store of the index and footer fields
#include "formats/wpk.h"         // wpk_checksum, kWpkFooterBytes
#include "packer/rans.h"        // rans_encode
#include "packer/tile_codec.h"  // split_planes, join_planes
#include "synthetic_weights.h"  // gaussian

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace wpack::test {
namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  const char* old = std::getenv(name);
  had_ = old != nullptr;
  if (had_) old_ = old;
  ::setenv(name, value, 1);
}
ScopedEnv::~ScopedEnv() {
  if (had_) ::setenv(name_.c_str(), old_.c_str(), 1);
  else ::unsetenv(name_.c_str());
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/wpack-test-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t s = seed;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t r = splitmix64(s);
    std::memcpy(out.data() + i, &r, std::min<size_t>(8, n - i));
  }
  return out;
}

std::vector<uint8_t> gaussian_f32(size_t n, float stddev, uint64_t seed) {
  auto v = gaussian(n, stddev, seed);
  std::vector<uint8_t> out(n * 4);
  if (n != 0) std::memcpy(out.data(), v.data(), out.size());  // both null when n == 0
  return out;
}

std::vector<uint8_t> gaussian_bf16(size_t n, float stddev, uint64_t seed) {
  auto v = gaussian(n, stddev, seed);
  std::vector<uint8_t> out(n * 2);
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    bits += 0x7FFF + ((bits >> 16) & 1);  // round to nearest even
    uint16_t h = static_cast<uint16_t>(bits >> 16);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

std::vector<uint8_t> gaussian_f16(size_t n, float stddev, uint64_t seed) {
  auto v = gaussian(n, stddev, seed);
  std::vector<uint8_t> out(n * 2);
  for (size_t i = 0; i < n; ++i) {
    _Float16 h = static_cast<_Float16>(v[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::string s = slurp(path);
  return std::vector<uint8_t>(s.begin(), s.end());
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

void fix_wpk_checksums(std::vector<uint8_t>& bytes) {
  if (bytes.size() < kWpkFooterBytes) throw std::runtime_error("fix_wpk_checksums: not a .wpk image");
  uint8_t* foot = bytes.data() + bytes.size() - kWpkFooterBytes;
  const uint64_t off = detail::load_u64(foot), size = detail::load_u64(foot + 8);
  if (off <= bytes.size() && size <= bytes.size() - off) detail::store_u64(foot + 16, wpk_checksum({bytes.data() + off, size}));
  detail::store_u64(foot + 40, wpk_checksum({foot, 40}));
}

void set_wpk_header_version(std::vector<uint8_t>& bytes, uint32_t version) {
  if (bytes.size() < kWpkHeaderBytes) throw std::runtime_error("set_wpk_header_version: not a .wpk image");
  detail::store_u32(bytes.data() + 8, version);
  detail::store_u64(bytes.data() + 56, wpk_checksum({bytes.data(), 56}));
}

std::vector<uint8_t> with_wpk_version(std::vector<uint8_t> bytes, uint32_t version) {
  if (bytes.size() < kWpkHeaderBytes + kWpkFooterBytes) throw std::runtime_error("with_wpk_version: not a .wpk image");
  set_wpk_header_version(bytes, version);
  detail::store_u32(bytes.data() + bytes.size() - kWpkFooterBytes + 24, version);
  fix_wpk_checksums(bytes);
  return bytes;
}

namespace {

// Tile record `tile` of a .wpk image; `what` names the caller in the error.
uint8_t* wpk_tile_record(std::vector<uint8_t>& bytes, uint64_t tile, const char* what) {
  auto bad = [&] { throw std::runtime_error(std::string(what) + ": not a well-formed .wpk image"); };
  if (bytes.size() < kWpkFooterBytes) bad();
  const uint8_t* foot = bytes.data() + bytes.size() - kWpkFooterBytes;
  const uint64_t index = detail::load_u64(foot), index_size = detail::load_u64(foot + 8);
  if (index > bytes.size() || index_size > bytes.size() - index || index_size < 16) bad();
  // The index ends with the tile records (offset, stored size, raw size, ..., checksum).
  const uint64_t tile_count = detail::load_u64(bytes.data() + index + 8);
  if (tile >= tile_count || tile_count > index_size / kWpkTileRecordBytes) bad();
  return bytes.data() + index + index_size - kWpkTileRecordBytes * (tile_count - tile);
}

}  // namespace

void set_wpk_tile_coding(std::vector<uint8_t>& bytes, uint64_t tile, uint8_t filter, uint8_t codec) {
  uint8_t* record = wpk_tile_record(bytes, tile, "set_wpk_tile_coding");
  record[24] = filter;
  record[25] = codec;
  fix_wpk_checksums(bytes);
}

void edit_wpk_tile(std::vector<uint8_t>& bytes, uint64_t tile, const std::function<void(uint8_t*, uint64_t)>& edit) {
  uint8_t* record = wpk_tile_record(bytes, tile, "edit_wpk_tile");
  const uint64_t index = detail::load_u64(bytes.data() + bytes.size() - kWpkFooterBytes);  // footer: checked above
  const uint64_t offset = detail::load_u64(record), stored = detail::load_u64(record + 8);
  if (offset > index || stored > index - offset) throw std::runtime_error("edit_wpk_tile: not a well-formed .wpk image");
  edit(bytes.data() + offset, stored);
  detail::store_u64(record + 32, wpk_checksum({bytes.data() + offset, stored}));
  fix_wpk_checksums(bytes);
}

const char* stream_damage_name(StreamDamage damage) {
  return damage == StreamDamage::kPrecisionField ? "precision field" : "last word";
}

std::vector<uint8_t> with_damaged_stream(std::vector<uint8_t> bytes, uint64_t tile, StreamDamage damage,
                                         uint32_t plane_index) {
  edit_wpk_tile(bytes, tile, [&](uint8_t* stored, uint64_t size) {
    const StoredPlane plane = split_planes({stored, size}, 2).at(plane_index);
    if (plane.raw || plane.bytes.size() < 2 || plane.bytes[0] != 1)  // mode 1: rANS with its table
      throw std::runtime_error("with_damaged_stream: plane " + std::to_string(plane_index) +
                               " is not a coded mode-1 stream");
    uint8_t* stream = stored + (plane.bytes.data() - stored);
    if (damage == StreamDamage::kPrecisionField)
      stream[1] |= 7;  // the 3-bit field p - 8 = 7
    else
      stream[plane.bytes.size() - 1] ^= 1;
  });
  return bytes;
}

uint64_t with_side_planes_coded(const std::string& from, const std::string& to) {
  auto reader = WpkReader::open(from);
  WpkWriter writer(to, true, reader->alignment());
  uint64_t recoded = 0;
  for (const WpkTensor& tensor : reader->tensors()) {
    writer.begin_tensor(tensor);
    writer.set_metrics(tensor.metrics);
    for (uint64_t k = tensor.first_tile; k < tensor.first_tile + tensor.tile_count; ++k) {
      const WpkTile& tile = reader->tiles()[k];
      const std::span<const uint8_t> stored = reader->tile_bytes(k);
      std::vector<StoredPlane> planes = split_planes(stored, 2);
      std::vector<uint8_t> a;
      if (planes[0].raw && !planes[0].bytes.empty()) a = rans_encode(planes[0].bytes, planes[0].bytes.size(), 8);
      if (!a.empty() && a.size() < planes[0].bytes.size()) {
        planes[0] = {a, false};
        writer.add_tile(join_planes(planes), tile.raw_size, tile.filter, tile.codec);
        ++recoded;
      } else {
        writer.add_tile(stored, tile.raw_size, tile.filter, tile.codec);
      }
    }
    writer.end_tensor();
  }
  writer.commit(reader->metadata_json());
  return recoded;
}

RunResult run_wpack(const std::vector<std::string>& args, const std::string& stdout_path) {
  TempDir tmp;
  std::string cmd = shell_quote(WPACK_BINARY);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(stdout_path.empty() ? tmp.file("out") : stdout_path) + " 2>" + shell_quote(tmp.file("err")) +
         " </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (stdout_path.empty()) r.out = slurp(tmp.file("out"));
  r.err = slurp(tmp.file("err"));
  return r;
}

}  // namespace wpack::test
