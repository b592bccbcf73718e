// Host-side GPU pieces that need no GPU: cuBLAS, the verify baseline, is loaded on first use, not
// when wpack starts (verify/gpu_timing.h).
#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "kernels/tile_decode.h"  // gpu_build_has_cuda
#include "verify/gpu_timing.h"

namespace {

// Whether a library whose path contains `name` is mapped into this process.
bool mapped(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(name) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("gpu timing: cuBLAS is loaded on first use, and loads where the build's toolkit is") {
  REQUIRE_FALSE(mapped("libcublas"));  // not at start-up: wpack does not link it
  const std::string error = wpack::gpu::cublas_load_error();
  if (wpack::gpu::gpu_build_has_cuda()) {
    INFO(error);
    REQUIRE(error.empty());       // the toolkit this build used has cuBLAS; no GPU is needed to load it
    REQUIRE(mapped("libcublas"));
  } else {
    REQUIRE(error == "this wpack build has no CUDA");
    REQUIRE_FALSE(mapped("libcublas"));
  }
  REQUIRE(wpack::gpu::cublas_load_error() == error);  // loaded once: the same answer
}
