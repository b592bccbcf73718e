#include "test_util.h"

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

RunResult run_wpack(const std::vector<std::string>& args) {
  TempDir tmp;
  std::string cmd = shell_quote(WPACK_BINARY);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(tmp.file("out")) + " 2>" + shell_quote(tmp.file("err")) + " </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(tmp.file("out"));
  r.err = slurp(tmp.file("err"));
  return r;
}

}  // namespace wpack::test
