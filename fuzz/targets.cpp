// The list of harnesses, for tests/test_fuzz_regressions.cpp (a fuzz executable has one only).
#include "fuzz/harness.h"

namespace wpack::fuzz {

std::span<const Target> all_targets() {
  static const Target kTargets[] = {
      {"safetensors", safetensors}, {"hdf5", hdf5},       {"wpk", wpk},   {"zstd", zstd},
      {"rans", rans},               {"filters", filters}, {"tile", tile}, {"quant_tile", quant_tile},
      {"pack", pack},
  };
  return kTargets;
}

}  // namespace wpack::fuzz
