// Shared test helpers: temporary directories, deterministic random data, running the wpack binary.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "formats/tensor.h"

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

// An in-memory TensorSource for pipeline tests.
class MemorySource : public TensorSource {
 public:
  // Adds a tensor; bytes.size() must equal the shape's byte size (throws std::invalid_argument).
  void add(std::string name, DType dtype, std::vector<uint64_t> shape, std::vector<uint8_t> bytes);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  TensorBytes read(size_t i) const override { return TensorBytes::borrowed(data_[i].data(), data_[i].size(), nullptr); }
  const std::map<std::string, std::string>& metadata() const override { return meta_; }
  const std::string& path() const override { return path_; }
  std::string format_name() const override { return "memory"; }
  const std::vector<uint8_t>& data(size_t i) const { return data_[i]; }
  std::map<std::string, std::string> meta_{{"format", "pt"}};

 private:
  std::vector<TensorInfo> infos_;
  std::vector<std::vector<uint8_t>> data_;
  std::string path_ = "memory";
};

}  // namespace wpack::test
