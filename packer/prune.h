// Weight pruning masks: unstructured magnitude pruning and N:M structured sparsity.
//
// A mask holds one byte per weight: 1 = keep, 0 = pruned (set the weight to zero). Weights are host
// float32; for N:M the matrix is (rows x cols) row-major and groups run along K (a row). Every
// function is deterministic: equal magnitudes are ordered by index (the lower index counts as smaller
// for magnitude pruning, and as larger -- kept first -- for N:M). Errors: throws wpack::Error
// (formats/error.h), kInvalidArgument for a bad fraction / N:M / spec string or a NaN weight.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace wpack {

// Zeroes exactly round(fraction * n) weights (round half away from zero), the smallest |w| first.
// fraction in [0, 1].
std::vector<uint8_t> prune_mask_magnitude(const float* w, uint64_t n, double fraction);
// Scalar reference (full sort); same result.
std::vector<uint8_t> prune_mask_magnitude_ref(const float* w, uint64_t n, double fraction);

// In every group of m consecutive weights along a row (the last group of a row may be shorter) keeps
// the n largest |w| (min(n, group length) in a short group). 1 <= n <= m <= 256.
std::vector<uint8_t> prune_mask_nm(const float* w, uint64_t rows, uint64_t cols, uint32_t n, uint32_t m);

// Zeroes w[i] where mask[i] == 0 (count elements).
void apply_prune_mask(float* w, const uint8_t* mask, uint64_t count);

// A parsed --prune value: "0.5" (a fraction in [0, 1]) or "2:4" (N:M).
struct PruneSpec {
  enum class Kind : uint8_t { kNone, kFraction, kNM };
  Kind kind = Kind::kNone;
  double fraction = 0;
  uint32_t n = 0, m = 0;
};
// Throws Error(kInvalidArgument) for anything else (empty, negative, > 1, "0:4", "5:4", junk).
PruneSpec parse_prune(std::string_view text);

// The mask `spec` asks for on the (rows x cols) row-major weights w: prune_mask_magnitude or
// prune_mask_nm; empty for Kind::kNone (nothing pruned).
std::vector<uint8_t> prune_mask(const PruneSpec& spec, const float* w, uint64_t rows, uint64_t cols);

}  // namespace wpack
