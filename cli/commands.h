// The subcommands of the wpack executable. Each returns the process exit code; library errors
// propagate as wpack::Error to main(), which prints them as one line.
#pragma once

#include <string>

#include "packer/pack.h"

namespace wpack::cli {

struct GlobalOptions {
  bool quiet = false;
  bool verbose = false;
};

struct CompressArgs {
  std::string input, output;
  PackOptions options;
};
struct InspectArgs {
  std::string input;
  bool json = false;
};
struct UnpackArgs {
  std::string input, output;
  bool overwrite = false;
  int threads = 0;
};
struct VerifyArgs {
  std::string input, against, device = "cpu";
  bool json = false;
  int threads = 0;
};

int run_compress(const CompressArgs& args, const GlobalOptions& global);
int run_inspect(const InspectArgs& args, const GlobalOptions& global);
int run_unpack(const UnpackArgs& args, const GlobalOptions& global);
int run_verify(const VerifyArgs& args, const GlobalOptions& global);

}  // namespace wpack::cli
