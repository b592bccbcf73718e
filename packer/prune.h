// Weight pruning masks: unstructured magnitude pruning and N:M structured sparsity.
//
// A mask holds one byte per weight: 1 = keep, 0 = pruned (set the weight to zero). Weights are host
// float32; for N:M the matrix is (rows x cols) row-major and groups run along K (a row). Every
// function is deterministic: equal magnitudes are ordered by index (the lower index counts as smaller
// for magnitude pruning, and as larger -- kept first -- for N:M). Errors: throws wpack::Error
// (formats/error.h), kInvalidArgument for a bad fraction / N:M / spec string, kUnsupported for a NaN
// weight (bad input data, not a bad option).
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

// prune_mask_magnitude over a tensor of n weights seen in pieces, for bounded memory: add_high()
// every piece in index order, then add_low() every piece, then mask() every piece (the pieces the
// same each pass); the masks, back to back, are prune_mask_magnitude's. first: the index of w[0] in
// the tensor (add_high names a NaN weight by it). Throws like prune_mask_magnitude.
class MagnitudePruner {
 public:
  MagnitudePruner(uint64_t n, double fraction);
  void add_high(const float* w, uint64_t count, uint64_t first);
  void add_low(const float* w, uint64_t count);
  void mask(const float* w, uint64_t count, uint8_t* out);

 private:
  uint64_t prune_;              // weights to prune
  uint64_t rank_;               // while selecting: the rank left; then the ties at the threshold left to prune
  std::vector<uint64_t> high_, low_;  // histograms of |w|'s bits 15..30 and 0..14
  uint64_t high_bucket_ = 0;
  uint32_t threshold_ = 0;
  int stage_ = 0;               // 0: adding high, 1: adding low, 2: masking
};

// In every group of m consecutive weights along a row (the last group of a row may be shorter) keeps
// the n largest |w| (min(n, group length) in a short group). 1 <= n <= m <= 256. first_row: the
// row of w's first in a larger matrix (an error names a NaN weight's index there).
std::vector<uint8_t> prune_mask_nm(const float* w, uint64_t rows, uint64_t cols, uint32_t n, uint32_t m,
                                   uint64_t first_row = 0);

// Throws what prune_mask_nm (who "prune_mask_nm") or MagnitudePruner::add_high ("prune_mask_magnitude")
// throws for a NaN among n weights, w[0] being weight `first` of the tensor.
void check_no_nan(const float* w, uint64_t n, const char* who, uint64_t first);
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
