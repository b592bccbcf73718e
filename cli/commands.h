// The subcommands of the wpack executable. Each returns the process exit code; library errors
// propagate as wpack::Error to main(), which prints them as one line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "packer/pack.h"

namespace wpack::cli {

struct GlobalOptions {
  bool quiet = false;
  bool verbose = false;
};

struct CompressArgs {
  std::string input, output;
  PackOptions options;
  bool dry_run = false;  // print the per-tensor plan, write nothing
  bool json = false;     // with dry_run: the plan as JSON
};
struct InspectArgs {
  std::string input;
  bool json = false;
};
struct UnpackArgs {
  std::string input, output;
  bool overwrite = false;
  int threads = 0;
  std::string dtype;  // "" (source dtype), F32, F16 or BF16
};
struct VerifyArgs {
  std::string input, against, device = "cpu";
  bool json = false;
  int threads = 0;
  double max_error = -1;  // --max-error: relative error bound for lossy tensors; < 0: none
  std::vector<uint32_t> batches = {1};  // --batch (--device cuda): gemv batch sizes, 1..64
};

int run_compress(const CompressArgs& args, const GlobalOptions& global);
int run_inspect(const InspectArgs& args, const GlobalOptions& global);
int run_unpack(const UnpackArgs& args, const GlobalOptions& global);
int run_verify(const VerifyArgs& args, const GlobalOptions& global);

}  // namespace wpack::cli
