// The main of every tests/gpu_*.cpp program: Catch2's runner, except that where the build has no
// CUDA or there is no device it prints "SKIP: <why>" and exits 4 (ctest's SKIP_RETURN_CODE for the
// `gpu` label). Listing (--list*, -l, -h, --help) always runs, so ctest discovers the tests at
// build time on a machine without a GPU.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/tile_decode.h"

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--list", 6) == 0 || std::strcmp(argv[i], "-l") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "--help") == 0)
      listing = true;
  if (!listing) {
    if (!wpack::gpu::gpu_build_has_cuda()) {
      std::printf("SKIP: this wpack build has no CUDA\n");
      return 4;
    }
    std::string why;
    if (wpack::gpu::gpu_device_count(&why) <= 0) {
      std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
      return 4;
    }
  }
  return Catch::Session().run(argc, argv);
}
