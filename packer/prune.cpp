// Pruning masks (see prune.h).
#include "packer/prune.h"

#include <algorithm>
#include <charconv>  // std::from_chars for parse_prune
#include <cmath>
#include <cstring>   // std::memcpy
#include <numeric>   // std::iota
#include <string>

#include "formats/error.h"
#include "packer/detail/parallel.h"  // add_parallel_histogram

namespace wpack {
namespace {

uint64_t prune_count(uint64_t n, double fraction, const char* who) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw Error(ErrorCode::kInvalidArgument, std::string(who) + ": fraction " + std::to_string(fraction) +
                                                 " is not in [0, 1]");
  return std::min<uint64_t>(n, static_cast<uint64_t>(std::llround(fraction * static_cast<double>(n))));
}

// Strict order: smaller |w| first, then lower index.
struct SmallerFirst {
  const float* w;
  bool operator()(uint64_t a, uint64_t b) const {
    float ma = std::fabs(w[a]), mb = std::fabs(w[b]);
    return ma < mb || (ma == mb && a < b);
  }
};

}  // namespace

// The bits of |w| without the sign order as the magnitudes (no NaN). The count-th smallest, T, by a
// radix select: a histogram of the high 16 bits finds T's, one of the low 15 bits among the weights
// with those finds the rest. Every |w| < T is pruned, then the weights with |w| == T in index order
// until count are (the reference's order): a byte a weight (the mask), where selecting among
// indices took 8 more.
namespace {
inline uint32_t magnitude_bits(const float* w, uint64_t i) {
  uint32_t bits;
  std::memcpy(&bits, w + i, 4);
  return bits & 0x7FFFFFFFu;
}
// The bucket holding the rank-th smallest (1-based); rank becomes the rank within it.
uint64_t select_bucket(const std::vector<uint64_t>& counts, uint64_t& rank) {
  uint64_t b = 0;
  while (rank > counts[b]) rank -= counts[b++];
  return b;
}
}  // namespace

void check_no_nan(const float* w, uint64_t n, const char* who, uint64_t first) {
  for (uint64_t i = 0; i < n; ++i)
    if (std::isnan(w[i]))
      throw Error(ErrorCode::kUnsupported, std::string(who) + ": weight " + std::to_string(first + i) + " is NaN");
}

MagnitudePruner::MagnitudePruner(uint64_t n, double fraction)
    : prune_(prune_count(n, fraction, "prune_mask_magnitude")), rank_(prune_), high_(uint64_t{1} << 16, 0),
      low_(uint64_t{1} << 15, 0) {}

void MagnitudePruner::add_high(const float* w, uint64_t count, uint64_t first) {
  check_no_nan(w, count, "prune_mask_magnitude", first);
  if (prune_ == 0) return;
  detail::add_parallel_histogram(high_, count, [w](uint64_t i) { return uint64_t{magnitude_bits(w, i) >> 15}; });
}

void MagnitudePruner::add_low(const float* w, uint64_t count) {
  if (prune_ == 0) return;
  if (stage_ == 0) high_bucket_ = select_bucket(high_, rank_), stage_ = 1;
  detail::add_parallel_histogram(low_, count, [w, high = high_bucket_](uint64_t i) {
    const uint32_t m = magnitude_bits(w, i);
    return (m >> 15) == high ? uint64_t{m & 0x7FFFu} : UINT64_MAX;
  });
}

void MagnitudePruner::mask(const float* w, uint64_t count, uint8_t* out) {
  if (prune_ == 0) {
    std::fill(out, out + count, uint8_t{1});
    return;
  }
  if (stage_ == 1) threshold_ = static_cast<uint32_t>(high_bucket_ << 15 | select_bucket(low_, rank_)), stage_ = 2;
  const int64_t count_signed = static_cast<int64_t>(count);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count_signed; ++i) out[i] = magnitude_bits(w, static_cast<uint64_t>(i)) >= threshold_;
  // rank_: how many of those equal to the threshold are still to prune, the lowest indices first
  for (uint64_t i = 0; i < count && rank_ > 0; ++i)
    if (magnitude_bits(w, i) == threshold_) out[i] = 0, --rank_;
}

std::vector<uint8_t> prune_mask_magnitude(const float* w, uint64_t n, double fraction) {
  MagnitudePruner pruner(n, fraction);
  pruner.add_high(w, n, 0);
  pruner.add_low(w, n);
  std::vector<uint8_t> mask(n);
  pruner.mask(w, n, mask.data());
  return mask;
}

std::vector<uint8_t> prune_mask_magnitude_ref(const float* w, uint64_t n, double fraction) {
  const uint64_t count = prune_count(n, fraction, "prune_mask_magnitude_ref");
  check_no_nan(w, n, "prune_mask_magnitude_ref", 0);
  std::vector<uint64_t> order(n);
  std::iota(order.begin(), order.end(), uint64_t{0});
  std::sort(order.begin(), order.end(), SmallerFirst{w});
  std::vector<uint8_t> mask(n, 1);
  for (uint64_t i = 0; i < count; ++i) mask[order[i]] = 0;
  return mask;
}

std::vector<uint8_t> prune_mask_nm(const float* w, uint64_t rows, uint64_t cols, uint32_t n, uint32_t m,
                                   uint64_t first_row) {
  if (n < 1 || n > m || m > 256)
    throw Error(ErrorCode::kInvalidArgument, "prune_mask_nm: " + std::to_string(n) + ":" + std::to_string(m) +
                                                 " is not a valid N:M (1 <= N <= M <= 256)");
  const uint64_t total = checked_mul(rows, cols, "prune_mask_nm: rows * cols");
  check_no_nan(w, total, "prune_mask_nm", first_row * cols);
  std::vector<uint8_t> mask(total, 0);
  uint32_t order[256];
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t begin = 0; begin < cols; begin += m) {
      const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(m, cols - begin));
      const float* g = w + r * cols + begin;
      std::iota(order, order + len, 0u);
      // Larger |w| first; equal magnitudes: lower index first (kept).
      std::sort(order, order + len, [g](uint32_t a, uint32_t b) {
        float ma = std::fabs(g[a]), mb = std::fabs(g[b]);
        return ma > mb || (ma == mb && a < b);
      });
      for (uint32_t i = 0; i < std::min(n, len); ++i) mask[r * cols + begin + order[i]] = 1;
    }
  }
  return mask;
}

void apply_prune_mask(float* w, const uint8_t* mask, uint64_t count) {
  // Branch-free (a mask is about as often 0 as 1, in no pattern a predictor learns), so it
  // vectorises: a pruned weight's bits become those of +0.
  for (uint64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, w + i, 4);
    bits &= 0u - static_cast<uint32_t>(mask[i] != 0);
    std::memcpy(w + i, &bits, 4);
  }
}

std::vector<uint8_t> prune_mask(const PruneSpec& spec, const float* w, uint64_t rows, uint64_t cols) {
  switch (spec.kind) {
    case PruneSpec::Kind::kFraction: return prune_mask_magnitude(w, rows * cols, spec.fraction);
    case PruneSpec::Kind::kNM: return prune_mask_nm(w, rows, cols, spec.n, spec.m);
    case PruneSpec::Kind::kNone: break;
  }
  return {};
}

PruneSpec parse_prune(std::string_view text) {
  auto fail = [&]() -> PruneSpec {
    throw Error(ErrorCode::kInvalidArgument,
                "--prune: '" + std::string(text) + "' is neither a fraction in [0, 1] (0.5) nor N:M (2:4)");
  };
  PruneSpec spec;
  const size_t colon = text.find(':');
  if (colon != std::string_view::npos) {
    uint32_t n = 0, m = 0;
    auto [p1, e1] = std::from_chars(text.data(), text.data() + colon, n);
    auto [p2, e2] = std::from_chars(text.data() + colon + 1, text.data() + text.size(), m);
    if (e1 != std::errc() || p1 != text.data() + colon || colon == 0 || e2 != std::errc() ||
        p2 != text.data() + text.size() || n < 1 || n > m || m > 256)
      return fail();
    spec.kind = PruneSpec::Kind::kNM;
    spec.n = n;
    spec.m = m;
    return spec;
  }
  double fraction = 0;
  auto [p, e] = std::from_chars(text.data(), text.data() + text.size(), fraction);
  if (text.empty() || e != std::errc() || p != text.data() + text.size() || !(fraction >= 0.0 && fraction <= 1.0))
    return fail();
  spec.kind = PruneSpec::Kind::kFraction;
  spec.fraction = fraction;
  return spec;
}

}  // namespace wpack
