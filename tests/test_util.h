// Shared test helpers: temporary directories, deterministic random data, running the wpack binary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace wpack::test {

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

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built wpack binary with `args` (shell-quoted here), capturing stdout and stderr.
RunResult run_wpack(const std::vector<std::string>& args);

}  // namespace wpack::test
