// Quantizers (see quantize.h): scheme table, the per-group scale search, LUT k-means, dequantization,
// dtype conversion and error metrics. The hot loops are in detail/quant_kernels.*.
#include "packer/quantize.h"

#include <omp.h>  // omp_get_num_threads: the fused error sums need the rows in order

#include <algorithm>
#include <bit>       // std::endian, std::countr_zero
#include <cmath>
#include <cstring>   // std::memcpy
#include <limits>
#include <string>

#include "formats/error.h"
#include "packer/detail/fp.h"
#include "packer/detail/parallel.h"  // parallel_histogram, add_parallel_histogram
#include "packer/detail/quant_kernels.h"

namespace wpack {

static_assert(std::endian::native == std::endian::little, "convert_to_f32 reads little-endian bytes directly");

using detail::FpParams;
using detail::IntParams;
using detail::SmallFloatFormat;
using detail::SortedTable;

// The QLoRA NormalFloat-4 data type: Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs"
// (2023), Appendix E, as published there (and in bitsandbytes). Definition: with
// offset = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2, the 8 positive values are Phi^-1 of 9 evenly spaced
// probabilities from offset to 0.5 (dropping 0.5), the 7 negative ones -Phi^-1 of 8 probabilities from
// offset to 0.5 (dropping 0.5), plus 0, all divided by the largest. tests/test_quantize.cpp re-derives
// them from that definition.
const float kNf4Table[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

namespace {

enum class Kind { kInt, kFp, kNf4, kLut };

struct SchemeInfo {
  Scheme scheme;
  std::string_view name;
  uint32_t bits;
  Kind kind;
  bool grouped;                   // scales per group along K (else per row)
  const SmallFloatFormat* format;  // fp schemes
};

constexpr SchemeInfo kSchemes[] = {
    {Scheme::kLossless, "lossless", 0, Kind::kInt, false, nullptr},
    {Scheme::kInt8, "int8", 8, Kind::kInt, false, nullptr},
    {Scheme::kInt4, "int4", 4, Kind::kInt, true, nullptr},
    {Scheme::kInt3, "int3", 3, Kind::kInt, true, nullptr},
    {Scheme::kInt2, "int2", 2, Kind::kInt, true, nullptr},
    {Scheme::kFp8, "fp8", 8, Kind::kFp, false, &detail::kFp8E4M3},
    {Scheme::kFp6, "fp6", 6, Kind::kFp, false, &detail::kFp6E3M2},
    {Scheme::kFp5, "fp5", 5, Kind::kFp, false, &detail::kFp5E2M2},
    {Scheme::kFp4, "fp4", 4, Kind::kFp, true, &detail::kFp4E2M1},
    {Scheme::kNf4, "nf4", 4, Kind::kNf4, true, nullptr},
    {Scheme::kLut4, "lut4", 4, Kind::kLut, false, nullptr},
    {Scheme::kLut3, "lut3", 3, Kind::kLut, false, nullptr},
};

const SchemeInfo* find_scheme(Scheme scheme) {
  for (const auto& info : kSchemes)
    if (info.scheme == scheme) return &info;
  return nullptr;
}

const SchemeInfo& scheme_info(Scheme scheme, const char* who) {
  const SchemeInfo* info = find_scheme(scheme);
  if (info == nullptr)
    throw Error(ErrorCode::kInvalidArgument,
                std::string(who) + ": unknown scheme code " + std::to_string(static_cast<unsigned>(scheme)));
  if (info->scheme == Scheme::kLossless)
    throw Error(ErrorCode::kInvalidArgument, std::string(who) + ": scheme lossless is not a quantizer");
  return *info;
}

constexpr uint32_t kDefaultGroup = 128;
constexpr uint32_t kDefaultNf4Block = 64;
constexpr uint32_t kLutMaxIterations = 100;

bool valid_group(uint64_t group) { return group == 32 || group == 64 || group == 128 || group == 256; }

// The spec as used: effective group, int8 symmetric, options that do not apply cleared.
QuantSpec resolve_spec(const SchemeInfo& info, const QuantSpec& in, const char* who) {
  QuantSpec spec;
  spec.scheme = in.scheme;
  spec.clip = in.clip;
  if (in.clip != Clip::kMse && in.clip != Clip::kMinMax)
    throw Error(ErrorCode::kInvalidArgument, std::string(who) + ": unknown clip mode");
  if (info.grouped) {
    spec.group = in.group != 0 ? in.group : (info.kind == Kind::kNf4 ? kDefaultNf4Block : kDefaultGroup);
    if (!valid_group(spec.group))
      throw Error(ErrorCode::kInvalidArgument, std::string(who) + ": group " + std::to_string(spec.group) +
                                                   " is not one of 32, 64, 128, 256");
  }
  if (info.kind == Kind::kInt) spec.symmetric = info.grouped ? in.symmetric : true;
  if (info.kind == Kind::kLut) spec.lut_rows = in.lut_rows;
  return spec;
}

struct GroupStats {
  float min = 0, max = 0, absmax = 0;  // min(x, 0), max(x, 0), max(-min, max)
};

GroupStats group_stats(const float* x, uint64_t n) {
  GroupStats s;
  for (uint64_t j = 0; j < n; ++j) {
    s.min = std::min(s.min, x[j]);
    s.max = std::max(s.max, x[j]);
  }
  s.absmax = std::max(-s.min, s.max);
  return s;
}

IntParams int_params(const GroupStats& s, float ratio, uint32_t bits, bool symmetric, uint16_t* scale_bits,
                     uint8_t* zero_code) {
  return detail::int_candidate(s.min, s.max, s.absmax, ratio, bits, symmetric, scale_bits, zero_code);
}

// Small-float and nf4 grids: scale = absmax * ratio / max_value.
FpParams table_params(float absmax, float ratio, float max_value, uint16_t* scale_bits) {
  FpParams p;
  *scale_bits = detail::encode_scale(absmax * ratio / max_value);
  p.scale = detail::f16_bits_to_float(*scale_bits);
  p.inv_scale = detail::inverse_scale(p.scale);
  return p;
}

// Everything one quantize call shares across rows.
struct Context {
  const SchemeInfo* info;
  QuantSpec spec;
  uint64_t cols;
  uint64_t group_len;  // elements per group (cols for per-row schemes)
  uint64_t groups;     // per row
  SortedTable table;   // fp: magnitudes; nf4: values
  float code_values[256] = {};  // fp, nf4: the value of each code before scaling (dequantize's table)
};

uint64_t round_up8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

}  // namespace

// error_stats of the quantizer's own output, computed while it quantizes (one thread, rows in
// order): each group's terms are found after it is encoded, and their two dependent sums advance
// inside the next group's pair kernels (detail::ErrorChain) instead of in a loop of their own. The
// sums, their order and so the results are ErrorAccumulator::add_dequantized's.
struct FusedErrorSums {
  bool active = false;
  std::vector<float> approx;   // the group, dequantized
  std::vector<double> terms;   // its terms, pairs (ref^2, (approx - ref)^2), pending in `chain`
  detail::ErrorChain chain;
  double max_abs = 0;
  uint64_t zeros = 0, count = 0;

  void start(const ErrorAccumulator& sums, uint64_t group_len) {
    active = true;
    approx.resize(group_len);
    terms.resize(2 * group_len);
    chain = detail::ErrorChain{};
    chain.ref_sq = sums.ref_sq_, chain.err_sq = sums.err_sq_;
    max_abs = sums.max_abs_, zeros = sums.zeros_, count = sums.count_;
  }
  // The terms of one group: ref[len] against approx[0..len), after the previous group's.
  void add_group(const float* ref, uint64_t len) {
    chain.drain();
    detail::error_terms_fast(ref, approx.data(), len, terms.data(), &max_abs, &zeros);
    count += len;
    chain.terms = terms.data();
    chain.next = 0, chain.count = len;
  }
  void finish(ErrorAccumulator& sums) {
    chain.drain();
    sums.ref_sq_ = chain.ref_sq, sums.err_sq_ = chain.err_sq;
    sums.max_abs_ = max_abs, sums.zeros_ = zeros, sums.count_ = count;
    active = false;
  }
};

namespace {

// Per-thread scratch of the fast path.
struct Scratch {
  std::vector<float> pad;      // the group, zero-padded to a multiple of 8
  std::vector<uint8_t> codes;  // codes of the padded group
  uint32_t guess = 0;          // candidate tried first: the previous group's winner (speed only)
  detail::ClipCandidates candidates;
  FusedErrorSums errors;       // active when the quantizer also measures its error
};

// The fast clip search of one group: the reference's winner -- the smallest error, ties to the lower
// index -- from fewer exact errors. The guess (the previous group's winner) and a neighbour are
// evaluated first; after that a candidate whose lower bound exceeds the best error found so far is
// skipped, since it cannot win (ClipCandidates::lower_bound); the rest are evaluated exactly, two at a
// time (pair_error(a, b, &error_a, &error_b)). What is skipped depends only on the data, so the
// result is the reference's for any thread count.
template <typename PairError>
uint32_t search_fast(const detail::ClipCandidates& cand, uint32_t guess, PairError pair_error) {
  const uint32_t count = cand.count;
  float err[detail::kCandidateSlots];
  uint32_t best_c = guess;
  auto consider = [&](uint32_t c) {
    if (err[c] < err[best_c] || (err[c] == err[best_c] && c < best_c)) best_c = c;
  };
  const uint32_t partner = guess + 1 < count ? guess + 1 : guess - 1;
  pair_error(guess, partner, &err[guess], &err[partner]);
  consider(partner);
  // The rest, lowest index first, two at a time; each is checked against the best error so far
  // just before it is evaluated.
  uint32_t todo = detail::candidates_alive(cand, err[best_c]) & ~((1u << guess) | (1u << partner));
  auto next = [&]() {
    while (todo != 0) {
      const uint32_t c = static_cast<uint32_t>(std::countr_zero(todo));
      todo &= todo - 1;
      if (!(cand.lower_bound[c] > err[best_c])) return c;
    }
    return count;
  };
  for (uint32_t a = next(); a != count; a = next()) {
    const uint32_t b = next();
    float err_b;
    pair_error(a, b == count ? a : b, &err[a], &err_b);
    consider(a);
    if (b == count) break;
    err[b] = err_b;
    consider(b);
  }
  return best_c;
}

// The clip search of one group. Returns the winning candidate: the smallest error, ties to the lower
// index (ratio closer to 1.0) -- the reference tries candidates in order and keeps a strictly smaller
// error, which is the same rule. The fast path tries the previous winner first so that its error
// bounds the others early (detail/quant_kernels.h, rule 3); the order does not change the winner.
// params(c, &key) builds candidate c and a key that is equal for equal grids; error(c_params, bound).
template <bool kFast, typename Params, typename MakeParams, typename Error>
uint32_t search_clip(uint32_t candidates, uint32_t guess, MakeParams make_params, Error error) {
  // All candidates' grids first: independent iterations, so their divisions overlap.
  Params params[detail::kClipCandidates];
  uint32_t keys[detail::kClipCandidates];
  for (uint32_t c = 0; c < candidates; ++c) params[c] = make_params(c, &keys[c]);
  uint32_t best_c = 0;
  float best = std::numeric_limits<float>::infinity();
  bool have_best = false;
  for (uint32_t i = 0; i < candidates; ++i) {
    // Fast: guess first, then 0, 1, ... skipping the guess. Reference: 0, 1, ...
    const uint32_t c = !kFast ? i : (i == 0 ? guess : (i - 1 < guess ? i - 1 : i));
    if (kFast && have_best && keys[c] == keys[best_c] && c > best_c) continue;  // same grid: same error, loses the tie
    float err = error(params[c], kFast ? best : std::numeric_limits<float>::infinity());
    if (!have_best || err < best || (err == best && c < best_c)) {
      // The first candidate always starts the best, even with an inf error (huge weights).
      best = err, best_c = c, have_best = true;
    }
  }
  return best_c;
}

// Quantizes one row: codes[cols], scales[groups], zeros[groups] (asymmetric int only), with the scalar
// reference kernels.
void quantize_row_ref(const Context& ctx, const float* x, uint8_t* codes, uint16_t* scales, uint8_t* zeros) {
  const SchemeInfo& info = *ctx.info;
  const uint32_t candidates = ctx.spec.clip == Clip::kMse ? detail::kClipCandidates : 1;
  for (uint64_t g = 0; g < ctx.groups; ++g) {
    const uint64_t start = g * ctx.group_len;
    const uint64_t len = std::min(ctx.group_len, ctx.cols - start);
    const float* xs = x + start;
    const GroupStats stats = group_stats(xs, len);
    uint8_t* group_codes = codes + start;
    if (info.kind == Kind::kInt) {
      auto make = [&](uint32_t c, uint32_t* key) {
        uint16_t scale_bits;
        uint8_t zero;
        IntParams p = int_params(stats, detail::clip_ratio(c), info.bits, ctx.spec.symmetric, &scale_bits, &zero);
        *key = (uint32_t{scale_bits} << 8) | zero;
        return p;
      };
      auto error = [&](const IntParams& p, float) { return detail::int_error_ref(xs, len, p); };
      const uint32_t best = search_clip<false, IntParams>(candidates, 0, make, error);
      uint16_t scale_bits;
      uint8_t zero;
      IntParams p = int_params(stats, detail::clip_ratio(best), info.bits, ctx.spec.symmetric, &scale_bits, &zero);
      for (uint64_t j = 0; j < len; ++j) group_codes[j] = static_cast<uint8_t>(detail::int_encode_one(xs[j], p));
      scales[g] = scale_bits;
      if (!ctx.spec.symmetric) zeros[g] = zero;
      continue;
    }
    // fp and nf4: a scale only.
    const float max_value = info.kind == Kind::kFp ? info.format->max_value : 1.0f;
    auto make = [&](uint32_t c, uint32_t* key) {
      uint16_t scale_bits;
      FpParams p = table_params(stats.absmax, detail::clip_ratio(c), max_value, &scale_bits);
      *key = scale_bits;
      return p;
    };
    auto error = [&](const FpParams& p, float) {
      return info.kind == Kind::kFp ? detail::fp_error_ref(xs, len, ctx.table, p) : detail::table_error_ref(xs, len, ctx.table, p);
    };
    const uint32_t best = search_clip<false, FpParams>(candidates, 0, make, error);
    uint16_t scale_bits;
    const float inv = table_params(stats.absmax, detail::clip_ratio(best), max_value, &scale_bits).inv_scale;
    scales[g] = scale_bits;
    if (info.kind == Kind::kFp) {
      const uint32_t sign_bit = 1u << (info.bits - 1);
      for (uint64_t j = 0; j < len; ++j) {
        uint32_t m = detail::table_index_ref(ctx.table, std::fabs(xs[j]) * inv);
        group_codes[j] = static_cast<uint8_t>(m | ((xs[j] < 0.0f && m != 0) ? sign_bit : 0u));
      }
    } else {
      for (uint64_t j = 0; j < len; ++j)
        group_codes[j] = static_cast<uint8_t>(detail::table_index_ref(ctx.table, xs[j] * inv));
    }
  }
}

// The same with the fast kernels: the pruned pair search for int and fp grids (search_fast), the
// early-exit search for nf4; and, when scratch.errors is active, the error sums of the result
// (FusedErrorSums).
void quantize_row_fast(const Context& ctx, const float* x, uint8_t* codes, uint16_t* scales, uint8_t* zeros,
                       Scratch& scratch) {
  const SchemeInfo& info = *ctx.info;
  const uint32_t candidates = ctx.spec.clip == Clip::kMse ? detail::kClipCandidates : 1;
  FusedErrorSums& errors = scratch.errors;
  detail::ErrorChain* chain = errors.active ? &errors.chain : nullptr;
  float* pad = scratch.pad.data();
  for (uint64_t g = 0; g < ctx.groups; ++g) {
    const uint64_t start = g * ctx.group_len;
    const uint64_t len = std::min(ctx.group_len, ctx.cols - start);
    const float* xs = x + start;
    const uint64_t n8 = round_up8(len);
    // The kernels read whole vectors of 8: a group of a multiple of 8 in place, a shorter one from a
    // zero-padded copy; codes likewise, straight into the row or through scratch.codes.
    const float* xg = xs;
    uint8_t* group_codes = codes + start;
    uint8_t* codes_out = group_codes;
    if (len != n8) {
      std::copy(xs, xs + len, pad);
      std::fill(pad + len, pad + n8, 0.0f);
      xg = pad;
      codes_out = scratch.codes.data();
    }
    GroupStats stats;
    detail::minmax_with_zero_fast(xg, n8, &stats.min, &stats.max);
    stats.absmax = std::max(-stats.min, stats.max);
    const uint32_t guess = std::min(scratch.guess, candidates - 1);
    detail::ClipCandidates& cand = scratch.candidates;
    uint32_t best = 0;
    uint16_t scale_bits = 0;
    float scale = 0, zero = 0;  // of the winner, as dequantize reads them back
    if (info.kind == Kind::kInt) {
      detail::int_candidates_fast(stats.min, stats.max, stats.absmax, info.bits, ctx.spec.symmetric, candidates, &cand);
      if (candidates > 1)
        best = search_fast(cand, guess, [&](uint32_t a, uint32_t b, float* error_a, float* error_b) {
          detail::int_error_pair_fast(xg, n8, cand.int_params(a), cand.int_params(b), error_a, error_b, chain);
        });
      const IntParams p = cand.int_params(best);
      detail::int_encode_fast(xg, n8, p, codes_out);
      if (!ctx.spec.symmetric) zeros[g] = static_cast<uint8_t>(p.zero);
      scale_bits = cand.scale_bits[best], scale = p.scale, zero = p.zero;
    } else if (info.kind == Kind::kFp) {
      detail::fp_candidates_fast(stats.absmax, *info.format, candidates, &cand);
      if (candidates > 1)
        best = search_fast(cand, guess, [&](uint32_t a, uint32_t b, float* error_a, float* error_b) {
          detail::fp_error_pair_fast(xg, n8, *info.format, cand.fp_params(a), cand.fp_params(b), error_a, error_b,
                                     chain);
        });
      detail::fp_encode_fast(xg, n8, *info.format, cand.inv_scale[best], codes_out);
      scale_bits = cand.scale_bits[best], scale = cand.scale[best];
    } else {  // nf4
      auto make = [&](uint32_t c, uint32_t* key) {
        uint16_t scale_bits;
        FpParams p = table_params(stats.absmax, detail::clip_ratio(c), 1.0f, &scale_bits);
        *key = scale_bits;
        return p;
      };
      auto error = [&](const FpParams& p, float bound) { return detail::table_error_fast(xg, n8, ctx.table, p, bound); };
      best = search_clip<true, FpParams>(candidates, guess, make, error);
      const FpParams p = table_params(stats.absmax, detail::clip_ratio(best), 1.0f, &scale_bits);
      detail::table_encode_fast(xg, n8, ctx.table, p.inv_scale, codes_out);
      scale = p.scale;
    }
    if (codes_out != group_codes) std::copy(codes_out, codes_out + len, group_codes);
    scales[g] = scale_bits;
    scratch.guess = best;
    if (errors.active) {  // dequantize's formulas for this group, then its error terms
      float* approx = errors.approx.data();
      if (info.kind == Kind::kInt) {
        for (uint64_t j = 0; j < len; ++j) approx[j] = (static_cast<float>(group_codes[j]) - zero) * scale;
      } else {
        for (uint64_t j = 0; j < len; ++j) approx[j] = ctx.code_values[group_codes[j]] * scale;
      }
      errors.add_group(xs, len);
    }
  }
}

// ---- LUT: 1-D k-means ----
//
// Plain (uniformly weighted) k-means, i.e. Lloyd's algorithm minimising the squared error of the
// values themselves -- the quantity rel_error measures. Works on the values in ascending order as
// runs of equal values, with double prefix sums over the elements, so every cluster is a contiguous
// range of runs and its mean is (P[end] - P[begin]) / count. An element exactly at the midpoint of
// two centroids joins the lower one. Three deterministic starts (quantiles; evenly spaced over
// [min, max]; their average) each run to convergence (assignment unchanged) or kLutMaxIterations;
// the start with the smallest total squared error wins (ties: the earlier). Then a local search
// leaves Lloyd's local optimum: the centroid cheapest to drop (an empty cluster's first) moves to
// split the cluster of the largest squared error, and Lloyd runs again, for as long as that lowers
// the total (at most 2k moves). Not the exact optimum: within 6% of it on the test's cases.
// The reference sorts a copy of the values and takes each element as a run of its own, with a
// prefix per element, finding the assignment element by element. The fast path counts the values
// into a histogram of their bit patterns (no copy), when they have few enough distinct patterns
// (BF16 or F16 sources: their float32 bits end in 16 or 13 zeros) and there are at least as many
// values as buckets; else it sorts a copy (sort_ascending) and takes each element as a run as the
// reference does, keeping a prefix only every SortedRuns::kStep elements (4 bytes a value in all,
// against 36 with a prefix per element). It finds the assignment by binary search. The prefix sums
// add the elements one by one in the same order in every case, so the tables are identical.

// Values in ascending order as runs of equal values, each with its prefix sums.
struct Runs {
  std::vector<double> values;         // [r], ascending
  std::vector<uint64_t> ends;         // [r + 1]: elements before run r (ends[0] = 0)
  std::vector<double> sums, sums_sq;  // [r + 1]: prefix sums over the elements before run r
  void add(double v, uint64_t count) {
    if (ends.empty()) ends.assign(1, 0), sums.assign(1, 0.0), sums_sq.assign(1, 0.0);
    double s = sums.back(), s2 = sums_sq.back();
    for (uint64_t i = 0; i < count; ++i) s += v, s2 += v * v;  // element by element: the reference's sums
    values.push_back(v);
    ends.push_back(ends.back() + count);
    sums.push_back(s);
    sums_sq.push_back(s2);
  }
  void reserve(uint64_t runs) {
    values.reserve(runs);
    ends.reserve(runs + 1), sums.reserve(runs + 1), sums_sq.reserve(runs + 1);
  }
  uint64_t size() const { return values.size(); }
  double value(uint64_t r) const { return values[r]; }
  uint64_t end(uint64_t r) const { return ends[r]; }
  double sum(uint64_t r) const { return sums[r]; }
  double sum_sq(uint64_t r) const { return sums_sq[r]; }
  // The first run whose value exceeds x.
  uint64_t upper_bound(double x) const {
    return static_cast<uint64_t>(std::upper_bound(values.begin(), values.end(), x) - values.begin());
  }
  // The element at index i (ascending order).
  double at(uint64_t i) const {
    return values[static_cast<size_t>(std::upper_bound(ends.begin() + 1, ends.end(), i) - (ends.begin() + 1))];
  }
};

// Sorted values, each element a run of its own, with the prefix sums kept every kStep elements:
// sum(r) adds the elements from the last kept prefix below r one by one, the additions Runs::add
// makes, so it returns the same doubles as a prefix per element would hold.
class SortedRuns {
 public:
  static constexpr uint64_t kStep = 64;
  explicit SortedRuns(std::vector<float> sorted) : v_(std::move(sorted)) {
    const uint64_t n = v_.size();
    sums_.reserve(n / kStep + 1), sums_sq_.reserve(n / kStep + 1);
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < n; ++i) {
      if (i % kStep == 0) sums_.push_back(s), sums_sq_.push_back(s2);
      const double v = v_[i];
      s += v, s2 += v * v;
    }
    if (n % kStep == 0) sums_.push_back(s), sums_sq_.push_back(s2);  // the prefix of all n
  }
  uint64_t size() const { return v_.size(); }
  double value(uint64_t r) const { return v_[r]; }
  uint64_t end(uint64_t r) const { return r; }
  double sum(uint64_t r) const {
    double s = sums_[r / kStep];
    for (uint64_t i = r - r % kStep; i < r; ++i) s += double{v_[i]};
    return s;
  }
  double sum_sq(uint64_t r) const {
    double s2 = sums_sq_[r / kStep];
    for (uint64_t i = r - r % kStep; i < r; ++i) {
      const double v = v_[i];
      s2 += v * v;
    }
    return s2;
  }
  uint64_t upper_bound(double x) const {
    return static_cast<uint64_t>(
        std::upper_bound(v_.begin(), v_.end(), x, [](double a, float b) { return a < double{b}; }) - v_.begin());
  }
  double at(uint64_t i) const { return v_[i]; }

 private:
  std::vector<float> v_;
  std::vector<double> sums_, sums_sq_;  // [c]: the prefix sums over the elements before c * kStep
};

// -0 -> +0: one sorted order, one histogram bucket.
inline float plus_zero(float v) { return v == 0.0f ? 0.0f : v; }

// The values as k-means takes them: -0 as +0 (unsorted).
std::vector<float> plus_zero_copy(const float* w, uint64_t n) {
  std::vector<float> values(w, w + n);
  for (float& v : values) v = plus_zero(v);
  return values;
}

std::vector<float> sorted_copy(const float* w, uint64_t n) {
  std::vector<float> values = plus_zero_copy(w, n);
  std::sort(values.begin(), values.end());
  return values;
}

Runs sorted_runs_ref(const float* w, uint64_t n) {
  const std::vector<float> values = sorted_copy(w, n);
  Runs runs;
  runs.reserve(n);
  for (float v : values) runs.add(v, 1);
  return runs;
}

// Ordered key of a float's bits: ascending keys are ascending values (no NaN here).
inline uint32_t order_key(uint32_t bits) { return bits & 0x80000000u ? ~bits : bits | 0x80000000u; }
inline uint32_t order_key(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return order_key(bits);
}
inline float from_order_key(uint32_t key) {
  const uint32_t bits = key & 0x80000000u ? key & 0x7FFFFFFFu : ~key;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// Moves the elements of v[begin, end) in place into ascending buckets of bucket_of(x) < buckets,
// each element once (an American flag sort), given each bucket's count; returns the buckets' starts
// (buckets + 1 of them, the last = end).
template <typename BucketOf>
std::vector<uint64_t> flag_sort(std::vector<float>& v, uint64_t begin, const std::vector<uint64_t>& count,
                                BucketOf&& bucket_of) {
  const uint64_t buckets = count.size();
  std::vector<uint64_t> start(buckets + 1, begin);
  for (uint64_t b = 0; b < buckets; ++b) start[b + 1] = start[b] + count[b];
  std::vector<uint64_t> next(start.begin(), start.end() - 1);
  // Buckets below b are complete, so an element not yet placed belongs to b or above.
  for (uint64_t b = 0; b < buckets; ++b)
    while (next[b] < start[b + 1]) {
      float x = v[next[b]];
      for (uint64_t d = bucket_of(x); d != b; d = bucket_of(x)) std::swap(x, v[next[d]++]);
      v[next[b]++] = x;
    }
  return start;
}

// Sorts v (finite values, no -0) ascending, as std::sort does, faster: the elements bucketed by the
// top 16 bits of their order keys, then each bucket by the next 8 bits (the buckets on OpenMP
// threads), then each of those sorted.
void sort_ascending(std::vector<float>& v) {
  constexpr uint64_t kBuckets = uint64_t{1} << 16;
  const uint64_t n = v.size();
  if (n < 4 * kBuckets) {
    std::sort(v.begin(), v.end());
    return;
  }
  auto top = [](float x) { return uint64_t{order_key(x) >> 16}; };
  auto middle = [](float x) { return uint64_t{(order_key(x) >> 8) & 0xFF}; };
  const std::vector<uint64_t> start =
      flag_sort(v, 0, detail::parallel_histogram(n, kBuckets, [&](uint64_t i) { return top(v[i]); }), top);
  const int64_t buckets_signed = static_cast<int64_t>(kBuckets);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t b = 0; b < buckets_signed; ++b) {
    const uint64_t begin = start[b], end = start[b + 1];
    if (end - begin <= 1024) {
      std::sort(v.begin() + begin, v.begin() + end);
      continue;
    }
    std::vector<uint64_t> count(256, 0);
    for (uint64_t i = begin; i < end; ++i) ++count[middle(v[i])];
    const std::vector<uint64_t> sub = flag_sort(v, begin, count, middle);
    for (uint64_t c = 0; c < 256; ++c) std::sort(v.begin() + sub[c], v.begin() + sub[c + 1]);
  }
}

// OR of every value's bit pattern (-0 as +0): the low bits that are zero in all of them.
uint32_t or_of_bits(const float* w, uint64_t n) {
  const int64_t n_signed = static_cast<int64_t>(n);
  uint32_t any = 0;
#pragma omp parallel for schedule(static) reduction(| : any)
  for (int64_t i = 0; i < n_signed; ++i) {
    uint32_t bits;
    const float v = plus_zero(w[i]);
    std::memcpy(&bits, &v, 4);
    any |= bits;
  }
  return any;
}
// The histogram's key shift for values whose bit patterns OR to `any`: keys of 32 - shift bits.
int histogram_shift(uint32_t any) { return any == 0 ? 16 : std::min(16, std::countr_zero(any)); }
// Whether the histogram path takes n values with that shift (else a sorted copy).
bool histogram_fits(int shift, uint64_t n) { return shift >= 13 && n >= (uint64_t{1} << (32 - shift)); }
// The histogram's bucket of value i of w: its key (order_key >> shift), of 2^(32 - shift).
auto histogram_key(const float* w, int shift) {
  return [w, shift](uint64_t i) { return uint64_t{order_key(plus_zero(w[i])) >> shift}; };
}
// The runs of a histogram, ascending.
Runs runs_of_histogram(const std::vector<uint64_t>& count, int shift) {
  Runs runs;
  const uint32_t low = shift == 0 ? 0 : (1u << shift) - 1;
  for (uint64_t b = 0; b < count.size(); ++b)
    if (count[b] != 0) {
      const uint32_t key = static_cast<uint32_t>(b << shift);
      runs.add(from_order_key(key & 0x80000000u ? key : key | low), count[b]);
    }
  return runs;
}

template <bool kFast, class R>
std::vector<uint64_t> assign(const R& runs, const std::vector<double>& centroids) {
  const uint64_t r = runs.size();
  const size_t k = centroids.size();
  std::vector<uint64_t> bounds(k + 1, 0);  // in runs
  bounds[k] = r;
  std::vector<double> mids(k - 1);
  for (size_t j = 0; j + 1 < k; ++j) mids[j] = (centroids[j] + centroids[j + 1]) * 0.5;
  if constexpr (kFast) {
    for (size_t j = 0; j + 1 < k; ++j) bounds[j + 1] = runs.upper_bound(mids[j]);
  } else {
    std::vector<uint64_t> counts(k, 0);
    for (uint64_t i = 0; i < r; ++i) {
      size_t cluster = 0;
      for (size_t j = 0; j + 1 < k; ++j) cluster += runs.value(i) > mids[j] ? 1 : 0;
      ++counts[cluster];
    }
    for (size_t j = 0; j + 1 < k; ++j) bounds[j + 1] = bounds[j] + counts[j];
  }
  return bounds;
}

// Where Lloyd's algorithm stopped: the centroids (ascending), their clusters (bounds in runs, as
// assign() gives them) and each cluster's squared error, sum (x - c)^2; sse is their sum, in order.
struct LloydFit {
  std::vector<double> centroids;
  std::vector<uint64_t> bounds;
  std::vector<double> cluster_sse;
  double sse = 0;
};

template <bool kFast, class R>
LloydFit lloyd(const R& runs, std::vector<double> centroids) {
  const size_t k = centroids.size();
  std::vector<uint64_t> bounds, previous;
  for (uint32_t iter = 0; iter < kLutMaxIterations; ++iter) {
    bounds = assign<kFast>(runs, centroids);
    if (bounds == previous) break;
    for (size_t j = 0; j < k; ++j) {
      uint64_t count = runs.end(bounds[j + 1]) - runs.end(bounds[j]);
      if (count > 0) centroids[j] = (runs.sum(bounds[j + 1]) - runs.sum(bounds[j])) / static_cast<double>(count);
    }
    std::sort(centroids.begin(), centroids.end());
    previous = bounds;
  }
  LloydFit fit;
  fit.bounds = assign<kFast>(runs, centroids);
  fit.cluster_sse.resize(k);
  for (size_t j = 0; j < k; ++j) {
    const uint64_t b = fit.bounds[j], e = fit.bounds[j + 1];
    const double count = static_cast<double>(runs.end(e) - runs.end(b));
    const double s = runs.sum(e) - runs.sum(b), s2 = runs.sum_sq(e) - runs.sum_sq(b);
    fit.cluster_sse[j] = s2 - 2.0 * centroids[j] * s + count * centroids[j] * centroids[j];
    fit.sse += fit.cluster_sse[j];
  }
  fit.centroids = std::move(centroids);
  return fit;
}

// k-means of n >= 1 values given as runs (see above).
template <bool kFast, class R>
std::vector<double> fit_from_runs(const R& runs, uint64_t n, uint32_t k) {
  const double lo = runs.value(0), hi = runs.value(runs.size() - 1);
  std::vector<double> quantile(k), even(k), mixed(k);
  for (uint32_t j = 0; j < k; ++j) {
    quantile[j] = runs.at(std::min<uint64_t>(n - 1, ((2 * uint64_t{j} + 1) * n) / (2 * uint64_t{k})));
    even[j] = lo + (hi - lo) * (2.0 * j + 1.0) / (2.0 * k);
    mixed[j] = (quantile[j] + even[j]) * 0.5;
  }
  LloydFit best;
  for (const auto* start : {&quantile, &even, &mixed}) {
    LloydFit fit = lloyd<kFast>(runs, *start);
    if (best.centroids.empty() || fit.sse < best.sse) best = std::move(fit);
  }
  // Lloyd stops in a local optimum: clusters left empty (two equal centroids, a code wasted) or
  // spent on a few outliers while the bulk is coarse. Move the centroid that costs least to drop
  // (an empty cluster's: nothing) to where it gains most: split the cluster of the largest squared
  // error at its mean, run Lloyd again, keep the result while it is smaller.
  for (uint32_t round = 0; round < 2 * k; ++round) {
    const std::vector<double>& c = best.centroids;
    const std::vector<uint64_t>& bounds = best.bounds;
    std::vector<double> sse(k), drop_cost(k);
    for (uint32_t j = 0; j < k; ++j) {
      const double count = static_cast<double>(runs.end(bounds[j + 1]) - runs.end(bounds[j]));
      sse[j] = std::max(0.0, best.cluster_sse[j]);
      // at most what its elements add when they join the nearer neighbour
      double gap = std::numeric_limits<double>::infinity();
      if (j > 0) gap = std::min(gap, c[j] - c[j - 1]);
      if (j + 1 < k) gap = std::min(gap, c[j + 1] - c[j]);
      drop_cost[j] = count == 0 ? 0.0 : sse[j] + count * gap * gap;
    }
    const uint32_t drop = static_cast<uint32_t>(std::min_element(drop_cost.begin(), drop_cost.end()) - drop_cost.begin());
    // the cluster to split: the largest squared error among those with elements on both sides of
    // their mean (ties: the lower index)
    int64_t split = -1;
    double left = 0, right = 0;
    for (uint32_t j = 0; j < k; ++j) {
      if (j == drop || sse[j] <= 0 || (split >= 0 && sse[j] <= sse[static_cast<size_t>(split)])) continue;
      const uint64_t b = bounds[j], e = bounds[j + 1];
      const uint64_t count = runs.end(e) - runs.end(b);
      const double mean = (runs.sum(e) - runs.sum(b)) / static_cast<double>(count);
      const uint64_t m = std::clamp(runs.upper_bound(mean), b, e);
      const uint64_t below = runs.end(m) - runs.end(b);
      if (below == 0 || below == count) continue;
      split = j;
      left = (runs.sum(m) - runs.sum(b)) / static_cast<double>(below);
      right = (runs.sum(e) - runs.sum(m)) / static_cast<double>(count - below);
    }
    if (split < 0 || drop_cost[drop] >= sse[static_cast<size_t>(split)]) break;  // no move can gain
    std::vector<double> start;
    for (uint32_t j = 0; j < k; ++j)
      if (j != drop && j != static_cast<uint32_t>(split)) start.push_back(c[j]);
    start.push_back(left);
    start.push_back(right);
    std::sort(start.begin(), start.end());
    LloydFit moved = lloyd<kFast>(runs, std::move(start));
    if (!(moved.sse < best.sse)) break;
    best = std::move(moved);
  }
  return std::move(best.centroids);
}

// The fast path's k-means of n >= 1 values it cannot count in a histogram (-0 as +0, any order):
// sorted in place, then taken as runs of one element (SortedRuns).
std::vector<double> fit_sorted(std::vector<float> values, uint32_t k) {
  sort_ascending(values);
  const uint64_t n = values.size();
  return fit_from_runs<true>(SortedRuns(std::move(values)), n, k);
}

template <bool kFast>
std::vector<double> fit_lut(const float* w, uint64_t n, uint32_t k) {
  if (n == 0) return std::vector<double>(k, 0.0);
  if constexpr (!kFast) {
    return fit_from_runs<false>(sorted_runs_ref(w, n), n, k);
  } else {
    const int shift = histogram_shift(or_of_bits(w, n));
    if (histogram_fits(shift, n))
      return fit_from_runs<true>(
          runs_of_histogram(detail::parallel_histogram(n, uint64_t{1} << (32 - shift), histogram_key(w, shift)), shift),
          n, k);
    return fit_sorted(plus_zero_copy(w, n), k);  // float32 values, or few of them
  }
}

// Tables as fp16 bits, ascending (rounding is monotone, so the order survives).
void lut_table_bits(const std::vector<double>& centroids, uint16_t* out) {
  for (size_t j = 0; j < centroids.size(); ++j) {
    float c = static_cast<float>(std::clamp(centroids[j], -double{detail::kF16Max}, double{detail::kF16Max}));
    out[j] = detail::float_to_f16_bits(c);
  }
}

SortedTable lut_sorted_table(const uint16_t* bits, uint32_t k) {
  float values[256];
  for (uint32_t j = 0; j < k; ++j) values[j] = detail::f16_bits_to_float(bits[j]);
  return detail::value_table(values, k);
}


// LUT codes: each element's nearest entry of its rows' table (q.tables filled, q.codes sized).
template <bool kFast>
void lut_assign(const float* w, uint64_t rows, uint64_t cols, uint64_t rows_per_table, uint32_t k, QuantizedMatrix& q) {
  const int64_t rows_signed = static_cast<int64_t>(rows);
#pragma omp parallel for schedule(static) if (kFast)
  for (int64_t r = 0; r < rows_signed; ++r) {
    uint64_t row = static_cast<uint64_t>(r);
    SortedTable table = lut_sorted_table(q.tables.data() + (row / rows_per_table) * k, k);
    const float* x = w + row * cols;
    uint8_t* codes = q.codes.data() + row * cols;
    if constexpr (kFast) {
      // Full blocks of 8 straight from w, the tail through a padded copy.
      const uint64_t body = cols & ~uint64_t{7};
      detail::table_encode_fast(x, body, table, 1.0f, codes);
      float tail[8] = {};
      uint8_t tail_codes[8];
      std::copy(x + body, x + cols, tail);
      detail::table_encode_fast(tail, 8, table, 1.0f, tail_codes);
      std::copy(tail_codes, tail_codes + (cols - body), codes + body);
    } else {
      for (uint64_t j = 0; j < cols; ++j) codes[j] = static_cast<uint8_t>(detail::table_index_ref(table, x[j]));
    }
  }
}

// What every quantize starts with: q's spec and shape, the weights checked (throws for a NaN/inf),
// q.codes sized and the other vectors emptied. Returns the scheme's info.
const SchemeInfo& start_quantize(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& in, const char* who,
                                 QuantizedMatrix& q, uint64_t first_row) {
  const SchemeInfo& info = scheme_info(in.scheme, who);
  q.spec = resolve_spec(info, in, who);
  q.rows = rows;
  q.cols = cols;
  const uint64_t n = checked_mul(rows, cols, std::string(who) + ": rows * cols");
  if (n > 0 && w == nullptr) throw Error(ErrorCode::kInvalidArgument, std::string(who) + ": null weights");
  check_finite_weights(w, n, cols, first_row, who);
  q.codes.resize(n);
  q.scales.clear();
  q.zeros.clear();
  q.tables.clear();
  return info;
}

// Quantizes into q, reusing its vectors' capacity; every element of every vector is written.
template <bool kFast>
void quantize_impl(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& in, const char* who,
                   QuantizedMatrix& q, uint64_t first_row = 0, ErrorAccumulator* errors = nullptr) {
  const SchemeInfo& info = start_quantize(w, rows, cols, in, who, q, first_row);

  if (info.kind == Kind::kLut) {
    const uint32_t k = 1u << info.bits;
    const uint64_t rows_per_table = q.spec.lut_rows == 0 ? std::max<uint64_t>(rows, 1) : q.spec.lut_rows;
    const uint64_t tables = q.num_tables();
    q.tables.resize(tables * k);
    const int64_t tables_signed = static_cast<int64_t>(tables);
#pragma omp parallel for schedule(dynamic, 1) if (kFast && tables > 1)
    for (int64_t t = 0; t < tables_signed; ++t) {
      uint64_t r0 = static_cast<uint64_t>(t) * rows_per_table, r1 = std::min(rows, r0 + rows_per_table);
      lut_table_bits(fit_lut<kFast>(w + r0 * cols, (r1 - r0) * cols, k), q.tables.data() + static_cast<uint64_t>(t) * k);
    }
    lut_assign<kFast>(w, rows, cols, rows_per_table, k, q);
    if (errors != nullptr) errors->add_dequantized(w, q, nullptr);
    return;
  }

  Context ctx;
  ctx.info = &info;
  ctx.spec = q.spec;
  ctx.cols = cols;
  ctx.group_len = info.grouped ? q.spec.group : cols;
  ctx.groups = q.groups();
  if (info.kind == Kind::kFp) ctx.table = detail::small_float_table(*info.format);
  if (info.kind == Kind::kNf4) ctx.table = detail::value_table(kNf4Table, 16);
  if (info.kind == Kind::kFp || info.kind == Kind::kNf4) {
    const std::vector<float> values = scheme_code_values(info.scheme);
    std::copy(values.begin(), values.end(), ctx.code_values);
  }
  q.scales.resize(checked_mul(rows, ctx.groups, std::string(who) + ": scales"));
  const bool has_zeros = info.kind == Kind::kInt && !q.spec.symmetric;
  if (has_zeros) q.zeros.resize(rows * ctx.groups);

  const int64_t rows_signed = static_cast<int64_t>(rows);
  bool fused = false;  // error sums computed while quantizing
#pragma omp parallel if (kFast)
  {
    Scratch scratch;
    scratch.pad.resize(kFast ? round_up8(ctx.group_len) : 0);
    scratch.codes.resize(kFast ? round_up8(ctx.group_len) : 0);
    // Fused only on one thread, which takes the rows in order, as the sums must.
    const bool fuse = kFast && errors != nullptr && omp_get_num_threads() == 1;
    if (fuse) scratch.errors.start(*errors, ctx.group_len);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows_signed; ++r) {
      uint64_t row = static_cast<uint64_t>(r);
      if constexpr (kFast) {
        quantize_row_fast(ctx, w + row * cols, q.codes.data() + row * cols, q.scales.data() + row * ctx.groups,
                          has_zeros ? q.zeros.data() + row * ctx.groups : nullptr, scratch);
      } else {
        quantize_row_ref(ctx, w + row * cols, q.codes.data() + row * cols, q.scales.data() + row * ctx.groups,
                         has_zeros ? q.zeros.data() + row * ctx.groups : nullptr);
      }
    }
    if (fuse) {
      scratch.errors.finish(*errors);
      fused = true;  // the team is this one thread
    }
  }
  if (errors != nullptr && !fused) errors->add_dequantized(w, q, nullptr);
}

// ---- dequantization ----

// The largest byte (0 when empty): a branch-free scan that vectorises, run before the loops that
// name the first offending value.
uint32_t largest(const std::vector<uint8_t>& bytes) {
  uint8_t m = 0;
  for (uint8_t b : bytes) m = b > m ? b : m;
  return m;
}

// Checks an (untrusted) QuantizedMatrix for consistency; returns its scheme info.
const SchemeInfo& check_quantized(const QuantizedMatrix& q, const char* who) {
  const SchemeInfo& info = scheme_info(q.spec.scheme, who);
  auto fail = [&](const std::string& what) { throw Error(ErrorCode::kInvalidArgument, std::string(who) + ": " + what); };
  const uint64_t n = checked_mul(q.rows, q.cols, std::string(who) + ": rows * cols");
  if (info.grouped && !valid_group(q.spec.group)) fail("group " + std::to_string(q.spec.group) + " is not valid");
  if (q.codes.size() != n) fail("codes hold " + std::to_string(q.codes.size()) + " values, expected " + std::to_string(n));
  const uint32_t code_limit = 1u << info.bits;
  if (largest(q.codes) >= code_limit)
    for (uint8_t c : q.codes)
      if (c >= code_limit) fail("code " + std::to_string(c) + " does not fit " + std::to_string(info.bits) + " bits");
  if (info.kind == Kind::kLut) {
    if (q.tables.size() != checked_mul(q.num_tables(), code_limit, who)) fail("table size does not match");
    if (!q.scales.empty() || !q.zeros.empty()) fail("LUT scheme with scales or zeros");
    return info;
  }
  const uint64_t scale_count = checked_mul(q.rows, q.groups(), who);
  if (q.scales.size() != scale_count) fail("scales hold " + std::to_string(q.scales.size()) + " values, expected " + std::to_string(scale_count));
  const bool has_zeros = info.kind == Kind::kInt && !q.spec.symmetric;
  if (info.kind == Kind::kInt && !info.grouped && !q.spec.symmetric) fail("int8 must be symmetric");
  if (q.zeros.size() != (has_zeros ? scale_count : 0)) fail("zero points do not match the scheme");
  if (largest(q.zeros) >= code_limit)
    for (uint8_t z : q.zeros)
      if (z >= code_limit) fail("zero point " + std::to_string(z) + " does not fit");
  if (!q.tables.empty()) fail("tables given for a scheme without tables");
  return info;
}

// Decodes code c of (row, group) -- the one formula both dequantize paths and dequantize_code use.
struct RowDecoder {
  const SchemeInfo* info;
  const QuantizedMatrix* q;
  float values[256];  // fp/nf4/lut: value per code before scaling

  RowDecoder(const SchemeInfo& i, const QuantizedMatrix& m) : info(&i), q(&m) {
    if (i.kind == Kind::kFp || i.kind == Kind::kNf4) {
      std::vector<float> v = scheme_code_values(i.scheme);
      std::copy(v.begin(), v.end(), values);
    }
  }
  void select_table(uint64_t row) {
    if (info->kind != Kind::kLut) return;
    const uint64_t k = 1u << info->bits;
    const uint64_t rows_per_table = q->spec.lut_rows == 0 ? std::max<uint64_t>(q->rows, 1) : q->spec.lut_rows;
    for (uint64_t j = 0; j < k; ++j) values[j] = detail::f16_bits_to_float(q->tables[(row / rows_per_table) * k + j]);
  }
  float decode(uint64_t row, uint64_t col, uint8_t code) const {
    if (info->kind == Kind::kLut) return values[code];
    const uint64_t g = info->grouped ? col / q->spec.group : 0;
    const uint64_t index = row * q->groups() + g;
    const float scale = detail::f16_bits_to_float(q->scales[index]);
    if (info->kind == Kind::kInt) {
      float zero = q->spec.symmetric ? static_cast<float>(1u << (info->bits - 1)) : static_cast<float>(q->zeros[index]);
      return (static_cast<float>(code) - zero) * scale;
    }
    return values[code] * scale;
  }
};

// Row `row` of dequantize(q) into dst[q.cols]: the formulas of RowDecoder::decode, a group at a time.
void dequantize_row(RowDecoder& decoder, uint64_t row, float* dst) {
  const SchemeInfo& info = *decoder.info;
  const QuantizedMatrix& q = *decoder.q;
  const uint64_t cols = q.cols;
  const uint8_t* codes = q.codes.data() + row * cols;
  if (info.kind == Kind::kLut) {
    decoder.select_table(row);
    for (uint64_t c = 0; c < cols; ++c) dst[c] = decoder.values[codes[c]];
    return;
  }
  const uint64_t group_len = info.grouped ? q.spec.group : cols;
  const uint64_t groups = q.groups();
  for (uint64_t begin = 0, g = 0; begin < cols; begin += group_len, ++g) {
    const uint64_t end = std::min(cols, begin + group_len);
    const uint64_t index = row * groups + g;
    const float scale = detail::f16_bits_to_float(q.scales[index]);
    if (info.kind == Kind::kInt) {
      const float zero = q.spec.symmetric ? static_cast<float>(1u << (info.bits - 1)) : static_cast<float>(q.zeros[index]);
      for (uint64_t c = begin; c < end; ++c) dst[c] = (static_cast<float>(codes[c]) - zero) * scale;
    } else {
      for (uint64_t c = begin; c < end; ++c) dst[c] = decoder.values[codes[c]] * scale;
    }
  }
}

}  // namespace

// Throws kUnsupported (bad data, not a bad option) at the first NaN/inf. Scans chunks with a
// branch-free test first.
void check_finite_weights(const float* w, uint64_t n, uint64_t cols, uint64_t first_row, const char* who) {
  constexpr uint64_t kChunk = 4096;
  for (uint64_t begin = 0; begin < n; begin += kChunk) {
    uint64_t end = std::min(n, begin + kChunk);
    uint32_t bad = 0;
    for (uint64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, w + i, 4);
      bad |= static_cast<uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
    }
    if (bad == 0) continue;
    for (uint64_t i = begin; i < end; ++i)
      if (!std::isfinite(w[i]))
        throw Error(ErrorCode::kUnsupported, std::string(who) + ": weight at row " + std::to_string(first_row + i / cols) +
                                                     ", col " + std::to_string(i % cols) + " is not finite");
  }
}

// ---- public API ----

std::string_view scheme_name(Scheme scheme) {
  const SchemeInfo* info = find_scheme(scheme);
  return info ? info->name : std::string_view("unknown");
}

std::optional<Scheme> parse_scheme(std::string_view name) {
  for (const auto& info : kSchemes)
    if (info.name == name) return info.scheme;
  return std::nullopt;
}

std::optional<Scheme> scheme_from_code(uint8_t code) {
  const SchemeInfo* info = find_scheme(static_cast<Scheme>(code));
  return info ? std::optional<Scheme>(info->scheme) : std::nullopt;
}

uint32_t scheme_bits(Scheme scheme) {
  const SchemeInfo* info = find_scheme(scheme);
  return info ? info->bits : 0;
}

uint64_t QuantizedMatrix::groups() const {
  const SchemeInfo* info = find_scheme(spec.scheme);
  if (info == nullptr || info->kind == Kind::kLut || info->scheme == Scheme::kLossless) return 0;
  if (!info->grouped) return 1;
  if (spec.group == 0) return 0;
  return cols / spec.group + (cols % spec.group != 0 ? 1 : 0);
}

uint64_t QuantizedMatrix::num_tables() const {
  const SchemeInfo* info = find_scheme(spec.scheme);
  if (info == nullptr || info->kind != Kind::kLut) return 0;
  if (spec.lut_rows == 0 || rows == 0) return 1;
  return rows / spec.lut_rows + (rows % spec.lut_rows != 0 ? 1 : 0);
}

QuantizedMatrix quantize(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec) {
  QuantizedMatrix q;
  quantize_impl<true>(w, rows, cols, spec, "quantize", q);
  return q;
}

void quantize(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec, QuantizedMatrix* out,
              uint64_t first_row, ErrorAccumulator* errors) {
  quantize_impl<true>(w, rows, cols, spec, "quantize", *out, first_row, errors);
}

void quantize_with_table(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec, const uint16_t* table,
                         QuantizedMatrix* out, uint64_t first_row, ErrorAccumulator* errors) {
  const char* usage = "quantize_with_table: a LUT scheme with one table and that table";
  if (spec.lut_rows != 0 || table == nullptr) throw Error(ErrorCode::kInvalidArgument, usage);
  QuantizedMatrix& q = *out;
  const SchemeInfo& info = start_quantize(w, rows, cols, spec, "quantize", q, first_row);
  if (info.kind != Kind::kLut) throw Error(ErrorCode::kInvalidArgument, usage);
  const uint32_t k = 1u << info.bits;
  q.tables.assign(table, table + k);
  lut_assign<true>(w, rows, cols, std::max<uint64_t>(rows, 1), k, q);
  if (errors != nullptr) errors->add_dequantized(w, q, nullptr);
}

LutPiecewiseFit::LutPiecewiseFit(Scheme scheme, uint64_t n) : n_(n) {
  const SchemeInfo& info = scheme_info(scheme, "LutPiecewiseFit");
  if (info.kind != Kind::kLut) throw Error(ErrorCode::kInvalidArgument, "LutPiecewiseFit: not a LUT scheme");
  k_ = 1u << info.bits;
}

void LutPiecewiseFit::add_first(const float* w, uint64_t rows, uint64_t cols, uint64_t first_row) {
  check_finite_weights(w, rows * cols, cols, first_row, "quantize");
  any_ |= or_of_bits(w, rows * cols);
}

bool LutPiecewiseFit::histogram_applies() const { return histogram_fits(histogram_shift(any_), n_); }

void LutPiecewiseFit::add_second(const float* w, uint64_t count) {
  if (!histogram_applies()) {  // the values themselves, sorted in table()
    if (values_.capacity() < n_) values_.reserve(n_);
    if (count > n_ - std::min<uint64_t>(n_, values_.size()))
      throw Error(ErrorCode::kInvalidArgument, "LutPiecewiseFit: more values than the tensor's");
    for (uint64_t i = 0; i < count; ++i) values_.push_back(plus_zero(w[i]));
    return;
  }
  const int shift = histogram_shift(any_);
  if (count_.empty()) count_.assign(uint64_t{1} << (32 - shift), 0);
  detail::add_parallel_histogram(count_, count, histogram_key(w, shift));
}

std::vector<uint16_t> LutPiecewiseFit::table() {
  std::vector<uint16_t> bits(k_);
  std::vector<double> centroids(k_, 0.0);
  if (histogram_applies()) {
    uint64_t counted = 0;
    for (uint64_t c : count_) counted += c;
    if (counted != n_) throw Error(ErrorCode::kInvalidArgument, "LutPiecewiseFit: values missing");
    centroids = fit_from_runs<true>(runs_of_histogram(count_, histogram_shift(any_)), n_, k_);
  } else if (n_ != 0) {
    if (values_.size() != n_) throw Error(ErrorCode::kInvalidArgument, "LutPiecewiseFit: values missing");
    centroids = fit_sorted(std::move(values_), k_);
    values_ = {};
  }
  lut_table_bits(centroids, bits.data());
  return bits;
}

QuantizedMatrix quantize_ref(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec) {
  QuantizedMatrix q;
  quantize_impl<false>(w, rows, cols, spec, "quantize_ref", q);
  return q;
}

void dequantize_ref(const QuantizedMatrix& q, float* out) {
  const SchemeInfo& info = check_quantized(q, "dequantize_ref");
  RowDecoder decoder(info, q);
  for (uint64_t r = 0; r < q.rows; ++r) {
    decoder.select_table(r);
    for (uint64_t c = 0; c < q.cols; ++c) out[r * q.cols + c] = decoder.decode(r, c, q.codes[r * q.cols + c]);
  }
}

Fp16Limits fp16_limits(const QuantizedMatrix& q) {
  Fp16Limits l;
  for (const uint16_t h : q.scales) {  // positive, or 0 for an all-zero group
    const float v = detail::f16_bits_to_float(h);
    l.saturated += v == detail::kF16Max;
    l.underflowed += v == detail::kF16MinSubnormal;
  }
  // LUT tables: values at +-65504. (Values at 2^-24 or 0 are not counted: a table legitimately
  // holds zeros, for pruned weights, even several of them, k-means splitting their cluster.)
  for (const uint16_t h : q.tables) l.saturated += std::fabs(detail::f16_bits_to_float(h)) == detail::kF16Max;
  l.total = q.scales.size() + q.tables.size();
  return l;
}

void dequantize(const QuantizedMatrix& q, float* out) {
  const SchemeInfo& info = check_quantized(q, "dequantize");
  const int64_t rows_signed = static_cast<int64_t>(q.rows);
#pragma omp parallel
  {
    RowDecoder decoder(info, q);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows_signed; ++r) dequantize_row(decoder, static_cast<uint64_t>(r), out + r * q.cols);
  }
}

float dequantize_code(const QuantizedMatrix& q, uint64_t row, uint64_t col) {
  const SchemeInfo& info = check_quantized(q, "dequantize_code");
  if (row >= q.rows || col >= q.cols)
    throw Error(ErrorCode::kInvalidArgument, "dequantize_code: element (" + std::to_string(row) + ", " +
                                                 std::to_string(col) + ") is outside the matrix");
  RowDecoder decoder(info, q);
  decoder.select_table(row);
  return decoder.decode(row, col, q.codes[row * q.cols + col]);
}

std::vector<float> scheme_code_values(Scheme scheme) {
  const SchemeInfo* info = find_scheme(scheme);
  if (info == nullptr) return {};
  if (info->kind == Kind::kNf4) return std::vector<float>(kNf4Table, kNf4Table + 16);
  if (info->kind != Kind::kFp) return {};
  const SmallFloatFormat& fmt = *info->format;
  const uint32_t count = 1u << info->bits, sign_bit = count / 2;
  std::vector<float> values(count);
  for (uint32_t code = 0; code < count; ++code) {
    uint32_t magnitude = code & (sign_bit - 1);
    float v = magnitude > fmt.max_magnitude_code ? std::numeric_limits<float>::quiet_NaN()
                                                 : detail::small_float_magnitude(fmt, magnitude);
    values[code] = (code & sign_bit) ? -v : v;
  }
  return values;
}

void convert_to_f32(DType dtype, const uint8_t* bytes, uint64_t count, float* out) {
  switch (dtype) {
    case DType::F32:
      if (count > 0) std::memcpy(out, bytes, count * 4);
      return;
    case DType::F16:
      for (uint64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = detail::f16_bits_to_float(h);
      }
      return;
    case DType::BF16:  // its own loop: a shift per element, which vectorises
      for (uint64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = detail::bf16_to_float(h);
      }
      return;
    case DType::F64:
      for (uint64_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, bytes + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      return;
    case DType::F8_E4M3:
      for (uint64_t i = 0; i < count; ++i) out[i] = detail::f8e4m3_bits_to_float(bytes[i]);
      return;
    case DType::F8_E5M2:
      for (uint64_t i = 0; i < count; ++i) out[i] = detail::f8e5m2_bits_to_float(bytes[i]);
      return;
    default:
      throw Error(ErrorCode::kUnsupported,
                  "convert_to_f32: dtype " + std::string(dtype_name(dtype)) + " is not a float type it reads");
  }
}

// Not inlined, and on locals: inlined into a caller's loop around other calls, gcc kept the sums in
// stack slots, and each element's dependent add then waited for a store and a reload.
[[gnu::noinline]] void ErrorAccumulator::add(const float* ref, const float* approx, uint64_t n) {
  double ref_sq = ref_sq_, err_sq = err_sq_, max_abs = max_abs_;
  uint64_t zeros = zeros_;
  for (uint64_t i = 0; i < n; ++i) {
    double d = static_cast<double>(approx[i]) - static_cast<double>(ref[i]);
    ref_sq += static_cast<double>(ref[i]) * ref[i];
    err_sq += d * d;
    const double abs_d = std::fabs(d);
    max_abs = max_abs < abs_d ? abs_d : max_abs;  // std::max(max_abs, abs_d), kept in a register
    zeros += approx[i] == 0.0f ? 1 : 0;
  }
  ref_sq_ = ref_sq, err_sq_ = err_sq, max_abs_ = max_abs, zeros_ = zeros;
  count_ += n;
}

void ErrorAccumulator::add_dequantized(const float* ref, const QuantizedMatrix& q, const uint8_t* keep) {
  const SchemeInfo& info = check_quantized(q, "dequantized_error_stats");
  RowDecoder decoder(info, q);
  std::vector<float> row(q.cols);
  for (uint64_t r = 0; r < q.rows; ++r) {
    dequantize_row(decoder, r, row.data());
    if (keep != nullptr)
      for (uint64_t c = 0; c < q.cols; ++c) row[c] = keep[r * q.cols + c] ? row[c] : 0.0f;
    add(ref + r * q.cols, row.data(), q.cols);
  }
}

ErrorStats ErrorAccumulator::stats() const {
  ErrorStats s;
  s.max_abs_error = max_abs_;
  s.sparsity = count_ > 0 ? static_cast<double>(zeros_) / static_cast<double>(count_) : 0.0;
  if (err_sq_ == 0) {
    s.rel_error = 0;
    s.snr_db = kSnrCapDb;
  } else {
    s.rel_error = ref_sq_ > 0 ? std::sqrt(err_sq_ / ref_sq_) : std::numeric_limits<double>::infinity();
    s.snr_db = ref_sq_ > 0 ? std::min(kSnrCapDb, 10.0 * std::log10(ref_sq_ / err_sq_)) : -kSnrCapDb;
  }
  return s;
}

ErrorStats error_stats(const float* ref, const float* approx, uint64_t n) {
  ErrorAccumulator sums;
  sums.add(ref, approx, n);
  return sums.stats();
}

ErrorStats dequantized_error_stats(const float* ref, const QuantizedMatrix& q, const uint8_t* keep) {
  ErrorAccumulator sums;
  sums.add_dequantized(ref, q, keep);
  return sums.stats();
}

}  // namespace wpack
