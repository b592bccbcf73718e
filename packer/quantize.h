// Weight quantizers: int8/4/3/2, fp8/6/5/4, nf4 and learned lookup tables (lut4/lut3).
//
// Input is a 2-D float32 matrix W of shape (rows = N output channels, cols = K input features),
// row-major, in host memory; "along K" means along a row. A quantizer turns W into one code per
// element (one byte each, value < 2^scheme_bits) plus the scales / zero points / tables needed to
// decode it. Decoding element (r, c), with g = c / group:
//
//   int8          (code - 128) * scale[r]                      per-row symmetric, code = q + 128
//   int4/3/2      (code - zero[r][g]) * scale[r][g]            asymmetric (default), zero in [0, 2^b-1]
//                 (code - 2^(b-1)) * scale[r][g]               symmetric (spec.symmetric)
//   fp8/fp6/fp5   fp_value(code) * scale[r]                    per-row scale
//   fp4           fp_value(code) * scale[r][g]                 group scale along K
//   nf4           kNf4Table[code] * scale[r][g]                block absmax along K
//   lut4/lut3     table[r / lut_rows][code]                    (one table when lut_rows == 0)
//
// Scales and tables are stored as fp16 bits, and every quantizer encodes with the fp16-rounded scale,
// so dequantize() reproduces exactly what a decoder reading the stored values computes.
//
// Every quantizer has a scalar reference (quantize_ref) that the fast path (quantize: AVX2 where the
// CPU has it, OpenMP over rows) matches bit for bit: same codes, scales, zeros and tables, for any
// thread count. Errors: throws wpack::Error (formats/error.h), kInvalidArgument for a bad spec or
// non-finite weights, kUnsupported for a dtype the converters do not read.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "formats/dtype.h"  // DType for convert_to_f32

namespace wpack {

// Stored in .wpk files: never renumber.
enum class Scheme : uint8_t {
  kLossless = 0, kInt8 = 1, kInt4 = 2, kInt3 = 3, kInt2 = 4, kFp8 = 5, kFp6 = 6, kFp5 = 7, kFp4 = 8,
  kNf4 = 9, kLut4 = 10, kLut3 = 11,
};

// "lossless", "int8", "int4", "int3", "int2", "fp8", "fp6", "fp5", "fp4", "nf4", "lut4", "lut3".
std::string_view scheme_name(Scheme scheme);
std::optional<Scheme> parse_scheme(std::string_view name);
std::optional<Scheme> scheme_from_code(uint8_t code);
// Bits per code (8, 4, 3, 2, 8, 6, 5, 4, 4, 4, 3); 0 for kLossless.
uint32_t scheme_bits(Scheme scheme);

// How the scale of a row / group is chosen.
//   kMse:    search clipping ratios 1.0, 0.975, ..., 0.5 (21 candidates) of the absmax (symmetric,
//            fp, nf4) or of both ends of [min(x,0), max(x,0)] (asymmetric int) and keep the one with
//            the smallest squared error of quantize -> dequantize (ties: the larger ratio). Since the
//            candidates include 1.0, never worse than kMinMax on the same data.
//   kMinMax: ratio 1.0 only (plain round-to-nearest with absmax / min-max scales).
// LUT schemes ignore the clip: their tables come from k-means (Lloyd, then a local search; near the
// least squared error: quantize.cpp), which already trades range for resolution.
enum class Clip : uint8_t { kMse = 0, kMinMax = 1 };

struct QuantSpec {
  Scheme scheme = Scheme::kInt4;
  // Elements per group along K for int4/3/2, fp4, nf4: 32, 64, 128 or 256; 0 = the scheme's default
  // (128; nf4 64). The last group of a row may be shorter. Ignored by per-row and LUT schemes.
  uint32_t group = 0;
  bool symmetric = false;  // int4/3/2 only: no zero point, code = q + 2^(b-1). int8 is always symmetric.
  Clip clip = Clip::kMse;
  uint32_t lut_rows = 0;   // lut4/lut3: rows per table; 0 = one table for the whole tensor
};

// Everything needed to dequantize. All vectors are host memory, owned.
struct QuantizedMatrix {
  QuantSpec spec;            // as used: `group` holds the effective group (0 for per-row/LUT schemes)
  uint64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;    // [rows][cols], one code per byte, value < 2^scheme_bits
  std::vector<uint16_t> scales;  // fp16 bits: [rows] (int8, fp8/6/5) or [rows][groups()] (int4/3/2,
                                 // fp4, nf4); empty for LUT schemes
  std::vector<uint8_t> zeros;    // [rows][groups()], asymmetric int4/3/2 only, else empty
  std::vector<uint16_t> tables;  // LUT only: fp16 bits, [num_tables()][2^bits], each ascending

  uint64_t groups() const;       // groups per row (ceil(cols / group)); 1 for per-row schemes; 0 for LUT
  uint64_t num_tables() const;   // LUT: ceil(rows / lut_rows) or 1; else 0
};

// Throws Error(kUnsupported) "<who>: weight at row R, col C is not finite" at the first NaN or
// infinity of w (n weights of a rows x cols matrix, w[0] at row first_row, col 0): the check the
// quantizers make, for a caller that must make it earlier (before pruning, which drops weights).
void check_finite_weights(const float* w, uint64_t n, uint64_t cols, uint64_t first_row, const char* who);

// Quantizes w (rows x cols float32, row-major, host). Throws Error(kInvalidArgument) for kLossless
// or a bad group, kFormat for rows*cols overflowing, kUnsupported for a NaN/inf weight (bad input
// data: the CLI exits 1 for it, 2 for a bad option).
// quantize: fast path (AVX2 when available, OpenMP over rows). quantize_ref: scalar reference, one
// thread. Both produce identical results.
QuantizedMatrix quantize(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec);
QuantizedMatrix quantize_ref(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec);
class ErrorAccumulator;
// quantize() into *out, reusing the capacity of its vectors (a caller quantizing many tensors, or a
// tensor in pieces, avoids fresh allocations); *out is overwritten entirely, with the same result as
// quantize(). When w is rows [first_row, first_row + rows) of a larger matrix, first_row makes error
// messages name the row in that matrix. errors (may be null): also errors->add_dequantized(w, *out,
// nullptr), with the same (bit-identical) result; on one thread it is computed while quantizing,
// where it costs less.
void quantize(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec, QuantizedMatrix* out,
              uint64_t first_row = 0, ErrorAccumulator* errors = nullptr);

// quantize() of a LUT scheme with one table (spec.lut_rows 0) whose table is given (2^bits fp16
// bits, ascending: LutPiecewiseFit::table) instead of fitted: the codes and errors quantize() gives
// when it fits that table. Throws as quantize() does; kInvalidArgument for another scheme.
void quantize_with_table(const float* w, uint64_t rows, uint64_t cols, const QuantSpec& spec, const uint16_t* table,
                         QuantizedMatrix* out, uint64_t first_row = 0, ErrorAccumulator* errors = nullptr);

// The one table quantize() fits for a LUT tensor (lut_rows 0) of n elements that arrive in pieces:
// add_first() every piece in order (rows of the tensor, from first_row: throws quantize()'s error
// for a NaN/inf), then add_second() every piece again in the same order, then table() (once) equals
// quantize()'s table bit for bit. Memory: when histogram_applies() (known after the last add_first:
// BF16/F16-exact values, at least as many as the histogram's 2^16 or 2^19 buckets) add_second counts
// the values, else it keeps a copy of them, 4 bytes a value. table() throws kInvalidArgument when
// the pieces of add_second do not add up to n.
class LutPiecewiseFit {
 public:
  LutPiecewiseFit(Scheme scheme, uint64_t n);
  void add_first(const float* w, uint64_t rows, uint64_t cols, uint64_t first_row);
  bool histogram_applies() const;
  void add_second(const float* w, uint64_t count);
  std::vector<uint16_t> table();

 private:
  uint64_t n_;
  uint32_t k_ = 0, any_ = 0;  // any_: the OR of every value's bits (the histogram's shift)
  std::vector<uint64_t> count_;
  std::vector<float> values_;  // without the histogram: the values (-0 as +0), sorted by table()
};

// How many of a quantized matrix's stored fp16 values sit at fp16's limits, which bound the weights a
// scheme can represent (see QuantizedMatrix): `saturated` scales or LUT table values at +-65504, the
// largest fp16 (the weights needed more: they decode clipped); `underflowed` scales at 2^-24, the
// smallest (the group's weights needed a smaller one; LUT values that rounded to 0 are not told apart
// from zeros of pruned weights, so not counted); `total` scales or table values counted.
struct Fp16Limits {
  uint64_t saturated = 0, underflowed = 0, total = 0;
  void add(const Fp16Limits& o) { saturated += o.saturated, underflowed += o.underflowed, total += o.total; }
  bool any() const { return saturated + underflowed != 0; }
};
Fp16Limits fp16_limits(const QuantizedMatrix& q);

// Writes rows*cols floats to out (host). Throws Error(kInvalidArgument) when the vectors' sizes do not
// match rows/cols/spec (untrusted input is checked). dequantize_ref is the scalar reference.
void dequantize(const QuantizedMatrix& q, float* out);
void dequantize_ref(const QuantizedMatrix& q, float* out);
// One element, (row, col) in range (checked, kInvalidArgument), for testing decoders.
float dequantize_code(const QuantizedMatrix& q, uint64_t row, uint64_t col);

// The value of every code for the fixed-table schemes, index = code (2^bits entries, before scaling):
// fp8/fp6/fp5/fp4 (code 0x7F/0xFF of fp8 is NaN, the quantizer never emits it) and nf4; empty otherwise.
std::vector<float> scheme_code_values(Scheme scheme);

// The QLoRA NormalFloat-4 values, ascending (index = code, kNf4Table[7] == 0).
extern const float kNf4Table[16];

// Reads `count` elements of a float dtype (F32, F16, BF16, F64, F8_E4M3, F8_E5M2; little-endian
// bytes) into float. F64 rounds to nearest; the others are exact. Throws Error(kUnsupported) for
// any other dtype.
void convert_to_f32(DType dtype, const uint8_t* bytes, uint64_t count, float* out);

// Error of approx against ref (n floats each):
//   rel_error     ||approx - ref|| / ||ref||  (0 when both are zero; inf when only ref is zero)
//   max_abs_error max |approx - ref|
//   snr_db        10 log10(||ref||^2 / ||approx - ref||^2), capped at kSnrCapDb (exact match)
//   sparsity      fraction of exact zeros (+-0) in approx
// Sums in double.
struct ErrorStats {
  double rel_error = 0, max_abs_error = 0, snr_db = 0, sparsity = 0;
};
inline constexpr double kSnrCapDb = 999.0;
ErrorStats error_stats(const float* ref, const float* approx, uint64_t n);
// error_stats in pieces: add() consecutive runs of a tensor in index order; stats() is then
// bit-identical to error_stats over the whole (the same sums, in the same order).
class ErrorAccumulator {
 public:
  void add(const float* ref, const float* approx, uint64_t n);
  // add(ref, D, q.rows * q.cols) for D = dequantize(q) with the elements whose keep[i] == 0 set to
  // +0.0f (keep: [rows][cols], 1 = kept; null = all kept), without materialising D. ref: q.rows *
  // q.cols floats (host). Throws like dequantize() for an inconsistent q.
  void add_dequantized(const float* ref, const QuantizedMatrix& q, const uint8_t* keep);
  ErrorStats stats() const;

 private:
  friend struct FusedErrorSums;  // quantize()'s fused form (packer/quantize.cpp)
  double ref_sq_ = 0, err_sq_ = 0, max_abs_ = 0;
  uint64_t zeros_ = 0, count_ = 0;
};
// The stats of a whole quantized tensor: ErrorAccumulator::add_dequantized, then stats().
ErrorStats dequantized_error_stats(const float* ref, const QuantizedMatrix& q, const uint8_t* keep);

}  // namespace wpack
