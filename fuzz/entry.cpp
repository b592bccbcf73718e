// libFuzzer's entry point of fuzz_<surface>: fuzz/CMakeLists.txt compiles this file once per
// surface with WPACK_FUZZ_HARNESS=<surface> and links it with wpack_fuzz_harness, so each harness
// (fuzz/<surface>.cpp) is compiled once and shared with tests/test_fuzz_regressions.
#include "fuzz/harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  wpack::fuzz::WPACK_FUZZ_HARNESS({data, size});
  return 0;
}
