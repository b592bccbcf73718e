// verify/verify_gpu.h: the GPU verify driver.
#include "verify/verify_gpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <unordered_map>

#include "formats/error.h"
#include "kernels/tile_decode.h"  // GpuTensor: upload, decode, gemv
#include "packer/codec.h"         // codec names (reasons)
#include "packer/filters.h"       // filter names (reasons)
#include "packer/detail/fp.h"     // bf16 <-> float
#include "packer/quant_tile.h"    // QuantTensorParams (scheme labels)
#include "packer/quantize.h"      // scheme names, convert_to_f32, error_stats
#include "packer/tiling.h"        // element -> tile
#include "packer/unpack.h"        // the CPU reference decode

namespace wpack {

bool GpuVerifyReport::ok() const {
  for (const auto& t : tensors)
    if (!t.error.empty()) return false;
  return true;
}

namespace {

using gpu::DeviceMemory;
using gpu::GpuTensor;
using gpu::TileStatus;

std::string format_g(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

void validate_gpu_verify_options(const GpuVerifyOptions& options) {
  if (options.batches.empty()) throw Error(ErrorCode::kInvalidArgument, "verify_gpu: no batch size");
  for (size_t i = 0; i < options.batches.size(); ++i) {
    const uint32_t b = options.batches[i];
    if (b < 1 || b > kMaxGemvBatch)
      throw Error(ErrorCode::kInvalidArgument, "verify_gpu: batch " + std::to_string(b) + " is outside 1.." +
                                                   std::to_string(kMaxGemvBatch));
    for (size_t j = 0; j < i; ++j)
      if (options.batches[j] == b)
        throw Error(ErrorCode::kInvalidArgument, "verify_gpu: batch " + std::to_string(b) + " is given twice");
  }
  if (options.timing && (options.timing_options.warmup_runs < 1 || options.timing_options.timed_runs < gpu::kMinTimedRuns))
    throw Error(ErrorCode::kInvalidArgument, "verify_gpu: at least 1 warm-up run and " +
                                                 std::to_string(gpu::kMinTimedRuns) + " timed runs are required");
  if (!(options.max_matmul_rel_error >= 0)) throw Error(ErrorCode::kInvalidArgument, "verify_gpu: bad max_matmul_rel_error");
}

namespace {

// "<file>: tensor '<name>': rest" -> "rest" (for the short reasons shown in a table).
std::string without_context(const std::string& message, const WpkReader& reader, const std::string& name) {
  const std::string prefix = reader.path() + ": tensor '" + name + "': ";
  return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
}

std::string where(const WpkReader& reader, const std::string& name) { return reader.path() + ": tensor '" + name + "'"; }

GpuTensorCheck describe(const WpkReader& reader, size_t t) {
  const WpkTensor& wt = reader.tensors()[t];
  GpuTensorCheck c;
  c.name = wt.name;
  c.dtype = wt.dtype;
  c.shape = wt.shape;
  c.scheme_code = wt.scheme;
  uint64_t bytes = wt.params.size();
  for (uint64_t k = 0; k < wt.tile_count; ++k) bytes += reader.tiles()[wt.first_tile + k].stored_size;
  c.packed_bytes = bytes;
  const uint64_t elements = wt.num_elements();
  c.bits_per_weight = elements ? 8.0 * static_cast<double>(bytes) / static_cast<double>(elements) : 0.0;
  if (wt.scheme == 0) {
    c.scheme = c.scheme_label = "lossless";
    return c;
  }
  const auto scheme = scheme_from_code(wt.scheme);
  c.scheme = scheme ? std::string(scheme_name(*scheme)) : "scheme" + std::to_string(wt.scheme);
  c.scheme_label = c.scheme;
  try {
    const QuantTensorParams p = tensor_quant_params(reader, t);
    std::string label = c.scheme;  // appended piece by piece (gcc 12 warns falsely on " g" + to_string)
    if (p.group) label.append(" g").append(std::to_string(p.group));
    if (p.prune.kind == PruneSpec::Kind::kFraction) label.append(" pruned ").append(format_g(p.prune.fraction));
    if (p.prune.kind == PruneSpec::Kind::kNM)
      label.append(" ").append(std::to_string(p.prune.n)).append(":").append(std::to_string(p.prune.m));
    c.scheme_label = label;
  } catch (const Error&) {
    // A corrupt params blob: the label stays the plain scheme name; the decode reports the problem.
  }
  return c;
}

// Y_ref (n, batch) row-major = W (n, k) row-major * X (k, batch) row-major, every product and sum in
// float64, and A = |W| |X| (the same with absolute values: the scale of each output's rounding
// errors). OpenMP over rows.
void reference_product(const float* w, uint64_t n, uint64_t k, const std::vector<double>& x, uint32_t batch,
                       std::vector<double>& y, std::vector<double>& abs_y, int threads) {
  y.assign(n * batch, 0.0);
  abs_y.assign(n * batch, 0.0);
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < static_cast<int64_t>(n); ++r) {
    double acc[kMaxGemvBatch] = {}, abs_acc[kMaxGemvBatch] = {};
    const float* row = w + static_cast<uint64_t>(r) * k;
    for (uint64_t c = 0; c < k; ++c) {
      const double wv = row[c];
      const double* xc = x.data() + c * batch;
      for (uint32_t b = 0; b < batch; ++b) {
        acc[b] += wv * xc[b];
        abs_acc[b] += std::fabs(wv * xc[b]);
      }
    }
    const auto at = static_cast<std::ptrdiff_t>(static_cast<uint64_t>(r) * batch);
    std::copy(acc, acc + batch, y.begin() + at);
    std::copy(abs_acc, abs_acc + batch, abs_y.begin() + at);
  }
}

// The worst output: max over i of |y_i - ref_i| / abs_ref_i (abs_ref = |W| |X|, which bounds what
// float32 accumulation and FP16/BF16 operands can move an output), with its index; NaN in y wins.
// The norm-wise matmul_rel_error misses a few wrong outputs of a large matrix (a row not written
// reads 0, as gemv zeroes y first); this does not.
struct WorstOutput {
  double error = 0;
  uint64_t index = 0;
};
WorstOutput worst_output(const std::vector<float>& y, const std::vector<double>& ref, const std::vector<double>& abs_ref) {
  WorstOutput worst;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(static_cast<double>(y[i]) - ref[i]);
    const double e = abs_ref[i] > 0 ? d / abs_ref[i] : d == 0 ? 0.0 : std::numeric_limits<double>::infinity();
    if (!(e <= worst.error)) {
      worst = {e, i};
      if (std::isnan(e)) break;
    }
  }
  return worst;
}

// ||y - ref|| / ||ref||, y[i] read at `index(i)` (to undo a transposed layout). 0 when both are
// zero, infinity when only ref is; NaN in y gives NaN (which fails every "<=" check).
template <typename Index>
double rel_error_of(const std::vector<float>& y, const std::vector<double>& ref, Index index) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(y[index(i)]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

// The first tile whose status is not ok: a failure, a reason to skip, or nothing.
struct StatusVerdict {
  std::string error;    // kCorrupt / kTooLarge / unknown
  std::string skipped;  // only kUnsupportedCodec / kUnsupportedFilter
};
StatusVerdict judge_statuses(const WpkReader& reader, size_t t, const std::vector<uint32_t>& status, const char* what) {
  StatusVerdict v;
  uint64_t unsupported = 0, first_unsupported = 0;
  for (uint64_t k = 0; k < status.size(); ++k) {
    const uint32_t s = status[k];
    if (s == static_cast<uint32_t>(TileStatus::kOk)) continue;
    if (s == static_cast<uint32_t>(TileStatus::kUnsupportedCodec) || s == static_cast<uint32_t>(TileStatus::kUnsupportedFilter)) {
      if (unsupported++ == 0) first_unsupported = k;
      continue;
    }
    const char* name = s <= static_cast<uint32_t>(TileStatus::kTooLarge) ? gpu::tile_status_name(static_cast<TileStatus>(s))
                                                                          : nullptr;
    v.error = tile_context(reader, t, k) + ": GPU " + what + ": tile status " +
              (name ? std::string(name) : "unknown (" + std::to_string(s) + ")");
    return v;
  }
  if (unsupported) {
    const WpkTile& rec = reader.tiles()[reader.tensors()[t].first_tile + first_unsupported];
    const auto codec = codec_from_code(rec.codec);
    const auto filter = filter_from_code(rec.filter);
    v.skipped = std::to_string(unsupported) + " of " + std::to_string(status.size()) + " tiles not GPU-decodable (tile " +
                std::to_string(first_unsupported) + ": " +
                gpu::tile_status_name(static_cast<TileStatus>(status[first_unsupported])) + ", codec " +
                (codec ? std::string(codec_name(*codec)) : std::to_string(rec.codec)) + ", filter " +
                (filter ? std::string(filter_name(*filter)) : std::to_string(rec.filter)) + ")";
  }
  return v;
}

std::vector<uint32_t> download_status(const DeviceMemory& status, uint64_t tiles) {
  std::vector<uint32_t> out(tiles);
  status.download(out.data(), tiles * sizeof(uint32_t));
  return out;
}

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t h = seed ^ 0x9E3779B97F4A7C15ull;
  for (uint64_t v : {a, b, c}) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
  }
  return h;
}

// Everything the per-tensor checks share (made when the GPU checks run: a device is needed).
struct Context {
  Context(const WpkReader& r, const TensorSource* a, const GpuVerifyOptions& o) : reader(r), against(a), options(o) {}
  const WpkReader& reader;
  const TensorSource* against;
  const GpuVerifyOptions& options;
  std::unordered_map<std::string, size_t> source_index;
  gpu::GpuStream stream;
  std::optional<gpu::GpuTimer> timer;
  std::optional<gpu::CublasBf16Gemm> cublas;
  double copy_gb_per_s = 0;
  std::string device_failed;  // the device's context broke in a tensor: "tensor 'x' (error)"; the
                              // later tensors are not GPU-checked
};

// Records the first failure of a tensor's products: its error, or added to the one it has (a tensor
// beyond --max-error, or a lossless one whose bytes differ from the source, still has its products
// checked).
void set_product_error(GpuTensorCheck& check, const std::string& message) {
  if (!check.product_error.empty()) return;
  check.product_error = message;
  check.error = check.error.empty() ? message : check.error + "; " + message;
}

// The matrix products of one tensor at one batch size. Throws Error for a failure (a status, a CUDA
// error); records a product outside the tolerance (set_product_error).
// w_deq: the weights as float, g.rows() x g.cols(), row-major (host).
void check_batch(Context& ctx, size_t t, const GpuTensor& g, const float* w_deq, const DeviceMemory& dense_dev,
                 uint32_t batch, GpuTensorCheck& check, GpuBatchCheck& bc) {
  const WpkReader& reader = ctx.reader;
  const GpuVerifyOptions& options = ctx.options;
  const uint64_t n = g.rows(), k = g.cols();
  const uint64_t per_set = k * batch;
  // Sets start 128-byte aligned, as set 0 (cudaMalloc) does: the kernels take x 16-byte aligned
  // only (gemv()), so that an unaligned set would time another kernel than the one checked.
  const uint64_t stride = (per_set + 63) & ~uint64_t{63};
  const int sets = options.timing ? ctx.timer->calls() : 1;

  // Fresh activations: one set per call (set 0 for the correctness check and the first warm-up),
  // gemv layout (k, batch), batch fastest.
  std::vector<uint16_t> x_gemv(stride * sets);
  for (int s = 0; s < sets; ++s) {
    const std::vector<uint16_t> x = gpu::random_activations_bf16(per_set, mix_seed(options.seed, t, batch, s));
    std::copy(x.begin(), x.end(), x_gemv.begin() + static_cast<std::ptrdiff_t>(s * stride));
  }
  DeviceMemory x_gemv_dev(x_gemv.size() * 2), y_dev(n * batch * 4), status_dev(g.tile_count() * 4);
  x_gemv_dev.upload(x_gemv.data(), x_gemv.size() * 2);
  const uint16_t* x0_dev = x_gemv_dev.as<uint16_t>();

  // Correctness: gemv on set 0 against the float64 product.
  status_dev.fill(0xFF);
  y_dev.fill(0xFF);  // NaN: an output the kernel does not write fails the check
  try {
    g.gemv(x0_dev, y_dev.as<float>(), batch, status_dev.as<uint32_t>(), ctx.stream.get());
    bc.kernel_path = g.gemv_kernel();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kUnsupported) throw;
    bc.skipped = without_context(e.what(), reader, check.name);
    return;
  }
  ctx.stream.synchronize();
  StatusVerdict verdict = judge_statuses(reader, t, download_status(status_dev, g.tile_count()), "gemv");
  if (!verdict.error.empty()) throw Error(ErrorCode::kCorrupt, verdict.error);
  if (!verdict.skipped.empty()) {  // the fused kernel handles less than decode does: a limit, not a failure
    bc.skipped = "gemv: " + verdict.skipped;
    return;
  }
  std::vector<float> y(n * batch);
  y_dev.download(y.data(), y.size() * 4);
  std::vector<double> x0(per_set), y_ref, y_abs;
  for (uint64_t i = 0; i < per_set; ++i) x0[i] = detail::bf16_to_float(x_gemv[i]);
  reference_product(w_deq, n, k, x0, batch, y_ref, y_abs, options.threads);
  bc.matmul_rel_error = rel_error_of(y, y_ref, [](size_t i) { return i; });
  const WorstOutput worst = worst_output(y, y_ref, y_abs);
  bc.matmul_output_error = worst.error;
  bc.ran = true;
  if (!(bc.matmul_rel_error <= options.max_matmul_rel_error))
    set_product_error(check, where(reader, check.name) + ": batch " + std::to_string(batch) + ": matmul_rel_error " +
                                 format_g(bc.matmul_rel_error) + " exceeds " + format_g(options.max_matmul_rel_error));
  if (!(worst.error <= options.max_matmul_rel_error))
    set_product_error(check, where(reader, check.name) + ": batch " + std::to_string(batch) + ": output row " +
                                 std::to_string(worst.index / batch) + ", column " + std::to_string(worst.index % batch) +
                                 " is " + format_g(y[worst.index]) + ", the float64 product " +
                                 format_g(y_ref[worst.index]) + ": off by " + format_g(worst.error) +
                                 " of its |W||x|, more than " + format_g(options.max_matmul_rel_error));
  if (!options.timing) return;

  // cuBLAS on the same activations in its layout (batch, k), the gemv sets transposed; its output
  // (batch, n) against the same reference (informative).
  std::vector<uint16_t> x_cublas(x_gemv.size());
  for (uint64_t s = 0; s < static_cast<uint64_t>(sets); ++s)
    for (uint64_t c = 0; c < k; ++c)
      for (uint32_t b = 0; b < batch; ++b) x_cublas[s * stride + b * k + c] = x_gemv[s * stride + c * batch + b];
  DeviceMemory x_cublas_dev(x_cublas.size() * 2), y_cublas_dev(n * batch * 4);
  x_cublas_dev.upload(x_cublas.data(), x_cublas.size() * 2);
  if (ctx.cublas) {
    y_cublas_dev.fill(0xFF);  // NaN, as y_dev: an output cuBLAS did not write shows in cublas_rel_error
    ctx.cublas->run(dense_dev.as<uint16_t>(), x_cublas_dev.as<uint16_t>(), y_cublas_dev.as<float>(), n, k, batch);
    ctx.stream.synchronize();
    std::vector<float> yc(n * batch);
    y_cublas_dev.download(yc.data(), yc.size() * 4);
    bc.cublas_rel_error = rel_error_of(yc, y_ref, [n, batch](size_t i) { return (i % batch) * n + i / batch; });
  }

  // Timing: call i uses activation set i, for wpack and cuBLAS alike.
  uint16_t* const xg = x_gemv_dev.as<uint16_t>();
  uint16_t* const xc = x_cublas_dev.as<uint16_t>();
  std::string timed_kernel;  // every timed call's kernel is the one checked above
  bc.kernel = ctx.timer->time([&](int i) {
    g.gemv(xg + static_cast<uint64_t>(i) * stride, y_dev.as<float>(), batch, status_dev.as<uint32_t>(), ctx.stream.get());
    if (g.gemv_kernel() != bc.kernel_path && timed_kernel.empty()) timed_kernel = g.gemv_kernel();
  });
  if (!timed_kernel.empty())
    throw Error(ErrorCode::kIo, where(reader, check.name) + ": batch " + std::to_string(batch) + ": the timed runs took the " +
                                    timed_kernel + " kernel, the checked run the " + bc.kernel_path);
  verdict = judge_statuses(reader, t, download_status(status_dev, g.tile_count()), "gemv (timed runs)");
  if (!verdict.error.empty() || !verdict.skipped.empty())
    throw Error(ErrorCode::kCorrupt, verdict.error.empty() ? where(reader, check.name) + ": GPU gemv (timed runs): " + verdict.skipped
                                                           : verdict.error);
  if (ctx.cublas) {
    bc.cublas = ctx.timer->time([&](int i) {
      ctx.cublas->run(dense_dev.as<uint16_t>(), xc + static_cast<uint64_t>(i) * stride, y_cublas_dev.as<float>(), n, k,
                      batch);
    });
    bc.baseline_timed = true;
  }
  bc.timed = true;
  const double kernel_us = bc.kernel.median_us;
  bc.speedup = kernel_us > 0 && bc.baseline_timed ? bc.cublas.median_us / kernel_us : 0.0;
  bc.packed_gb_per_s = kernel_us > 0 ? static_cast<double>(check.packed_bytes) / (kernel_us * 1e3) : 0.0;
  bc.copy_bw_percent = ctx.copy_gb_per_s > 0 ? 100.0 * bc.packed_gb_per_s / ctx.copy_gb_per_s : 0.0;
}

// Steps 1-5 on tensor t. `reference`: its CPU reference decode (verify_cpu's), or null to decode it
// here at step 3.
void check_tensor(Context& ctx, size_t t, const DecodedTensor* reference, GpuTensorCheck& check) {
  const WpkReader& reader = ctx.reader;
  const GpuVerifyOptions& options = ctx.options;
  const WpkTensor& wt = reader.tensors()[t];
  const uint64_t elements = wt.num_elements();
  if (elements == 0) {
    check.skipped = "empty tensor";
    return;
  }

  // 1. Upload (checksums of every tile).
  std::optional<GpuTensor> g;
  try {
    g.emplace(GpuTensor::upload(reader, t));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kUnsupported) {
      check.skipped = without_context(e.what(), reader, wt.name);
      return;
    }
    throw;
  }

  // 2. GPU decode into a poisoned buffer; every tile's status.
  const uint64_t elem_bytes = g->decoded_elem_size();
  const uint64_t decoded_bytes = checked_mul(elements, elem_bytes, where(reader, wt.name));
  std::vector<uint8_t> gpu_bytes(decoded_bytes);
  {
    DeviceMemory out_dev(decoded_bytes), status_dev(g->tile_count() * 4);
    out_dev.fill(0xFF);
    status_dev.fill(0xFF);
    g->decode(out_dev.get(), status_dev.as<uint32_t>(), ctx.stream.get());
    ctx.stream.synchronize();
    const StatusVerdict verdict = judge_statuses(reader, t, download_status(status_dev, g->tile_count()), "decode");
    if (!verdict.error.empty()) {
      check.error = verdict.error;
      return;
    }
    if (!verdict.skipped.empty()) {
      check.skipped = verdict.skipped;
      return;
    }
    out_dev.download(gpu_bytes.data(), decoded_bytes);
  }

  // 3. Bit for bit against the CPU reference decode (the caller's, or decoded here: a failed decode
  // is the same Error either way).
  std::vector<uint8_t> cpu_bytes_own;  // decoded here
  std::vector<float> w_deq_own;        // decoded here, or converted from cpu_bytes
  std::span<const uint8_t> cpu_bytes;  // lossless: the source bytes
  std::span<const float> w_deq;        // the weights as float (lossy: dequantized; lossless float: exact)
  if (reference && reference->error) throw *reference->error;
  if (reference) {
    w_deq = reference->values;
    cpu_bytes = reference->bytes;
  } else if (wt.scheme != 0) {
    w_deq_own.resize(elements);
    decode_tensor_f32(reader, t, w_deq_own, options.threads);
    w_deq = w_deq_own;
  } else {
    cpu_bytes_own.resize(decoded_bytes);
    decode_tensor(reader, t, cpu_bytes_own, options.threads);
    cpu_bytes = cpu_bytes_own;
  }
  if (wt.scheme != 0 && elem_bytes != 4)
    throw Error(ErrorCode::kCorrupt, where(reader, wt.name) + ": GPU decode of a lossy tensor is not float32");
  // The compare below reads decoded_bytes of the reference: elements x 4 (lossy) or x the dtype's
  // size (lossless, GpuTensor::elem_size), what a reference decoded here has and what run_tensor
  // requires of a caller's.
  const uint8_t* ref = wt.scheme != 0 ? reinterpret_cast<const uint8_t*>(w_deq.data()) : cpu_bytes.data();
  uint64_t first_bad = UINT64_MAX;
  if (std::memcmp(gpu_bytes.data(), ref, decoded_bytes) != 0)  // element by element only to describe a difference
    for (uint64_t i = 0; i < elements; ++i)
      if (std::memcmp(gpu_bytes.data() + i * elem_bytes, ref + i * elem_bytes, elem_bytes) != 0) {
        if (first_bad == UINT64_MAX) first_bad = i;
        ++check.decode_mismatches;
      }
  check.gpu_checked = true;
  check.decode_bit_exact = check.decode_mismatches == 0;
  if (!check.decode_bit_exact) {
    const TileGeometry geo = tile_geometry(wt.view(), wt.tile_rows, wt.tile_cols);
    const uint64_t row = first_bad / geo.cols, col = first_bad % geo.cols;
    const uint64_t tile = (row / geo.tile_rows) * geo.grid_cols + col / geo.tile_cols;
    check.error = tile_context(reader, t, tile) + ": GPU decode differs from the CPU reference in " +
                  std::to_string(check.decode_mismatches) + " elements (first at row " + std::to_string(row) + ", col " +
                  std::to_string(col) + ")";
    return;
  }
  gpu_bytes = {};
  const bool is_float = wt.scheme != 0 || dtype_holds_floats(wt.dtype);
  if (wt.scheme == 0 && is_float) {
    w_deq_own.resize(elements);
    convert_to_f32(wt.dtype, cpu_bytes.data(), elements, w_deq_own.data());
    w_deq = w_deq_own;
  }

  // 4. Against the source.
  std::vector<uint16_t> dense_bf16;  // what cuBLAS multiplies
  if (ctx.against) {
    const auto it = ctx.source_index.find(wt.name);
    if (it != ctx.source_index.end()) {
      const TensorInfo& src = ctx.against->tensors()[it->second];
      if (src.dtype == wt.dtype && src.shape == wt.shape) {  // otherwise verify_cpu reports the mismatch
        const TensorBytes src_bytes = ctx.against->read(it->second);
        check.compared = true;
        if (wt.scheme == 0 && std::memcmp(src_bytes.data(), cpu_bytes.data(), decoded_bytes) != 0)
          check.error = where(reader, wt.name) + ": GPU decode differs from " + ctx.against->path();
        if (is_float) {
          // A lossless tensor equal to its source byte for byte holds the source's values in w_deq.
          std::vector<float> src_f32;
          if (wt.scheme != 0 || !check.error.empty()) {
            src_f32.resize(elements);
            convert_to_f32(src.dtype, src_bytes.data(), elements, src_f32.data());
          }
          const float* src_values = src_f32.empty() ? w_deq.data() : src_f32.data();
          check.rel_error = error_stats(src_values, w_deq.data(), elements).rel_error;
          if (wt.scheme != 0 && !(check.rel_error <= options.max_rel_error) && check.error.empty())
            check.error = where(reader, wt.name) + ": rel_error " + format_g(check.rel_error) + " exceeds --max-error " +
                          format_g(options.max_rel_error);
          if (options.timing && wt.shape.size() >= 2) {
            dense_bf16.resize(elements);
            if (src.dtype == DType::BF16)
              std::memcpy(dense_bf16.data(), src_bytes.data(), elements * 2);
            else
              for (uint64_t i = 0; i < elements; ++i) dense_bf16[i] = detail::float_to_bf16_bits(src_values[i]);
            check.cublas_weights = "source";
          }
        } else {
          check.rel_error = check.error.empty() ? 0.0 : std::numeric_limits<double>::quiet_NaN();
        }
      }
    }
  }
  // A tensor beyond --max-error, or a lossless one whose bytes differ from the source, still gets
  // its products and times: the GPU multiplies the file's weights, decoded bit for bit above (their
  // failures: set_product_error).

  // 5. Matrix products.
  std::string no_product;
  if (wt.shape.size() < 2) no_product = "not a matrix (rank " + std::to_string(wt.shape.size()) + ")";
  else if (!is_float) no_product = "not a float tensor";
  else if (!std::all_of(w_deq.begin(), w_deq.end(), [](float v) { return std::isfinite(v); }))
    no_product = "weights not finite (inf or NaN)";
  if (!no_product.empty()) {
    for (uint32_t b : options.batches) {
      check.batches.emplace_back();
      check.batches.back().batch = b;
      check.batches.back().skipped = no_product;
    }
    return;
  }
  cpu_bytes_own = {};  // (a caller's reference stays the caller's)
  cpu_bytes = {};
  DeviceMemory dense_dev;
  if (options.timing) {
    if (dense_bf16.empty()) {
      dense_bf16.resize(elements);
      for (uint64_t i = 0; i < elements; ++i) dense_bf16[i] = detail::float_to_bf16_bits(w_deq[i]);
      check.cublas_weights = "decoded";
    }
    dense_dev = DeviceMemory(elements * 2);
    dense_dev.upload(dense_bf16.data(), elements * 2);
    dense_bf16 = {};
  }
  for (uint32_t batch : options.batches) {
    check.batches.emplace_back();
    check.batches.back().batch = batch;
    check_batch(ctx, t, *g, w_deq.data(), dense_dev, batch, check, check.batches.back());
  }
}

std::vector<GpuBatchTotals> totals_of(const std::vector<GpuTensorCheck>& tensors, const std::vector<uint32_t>& batches,
                                      double copy_gb_per_s) {
  std::vector<GpuBatchTotals> out;
  for (uint32_t batch : batches) {
    GpuBatchTotals tot;
    tot.batch = batch;
    for (const auto& t : tensors)
      for (const auto& b : t.batches) {
        if (b.batch != batch || !b.ran) continue;
        if (!(b.matmul_rel_error <= tot.max_matmul_rel_error) && !std::isnan(tot.max_matmul_rel_error))
          tot.max_matmul_rel_error = b.matmul_rel_error;  // NaN, once met, stays
        if (!b.timed) continue;
        tot.baseline_timed = (tot.tensors == 0 || tot.baseline_timed) && b.baseline_timed;
        tot.tensors++;
        tot.packed_bytes += t.packed_bytes;
        tot.kernel_us += b.kernel.median_us;
        tot.cublas_us += b.cublas.median_us;
      }
    if (!tot.baseline_timed) tot.cublas_us = 0;
    if (tot.kernel_us > 0) {
      tot.speedup = tot.baseline_timed ? tot.cublas_us / tot.kernel_us : 0.0;
      tot.packed_gb_per_s = static_cast<double>(tot.packed_bytes) / (tot.kernel_us * 1e3);
      tot.copy_bw_percent = copy_gb_per_s > 0 ? 100.0 * tot.packed_gb_per_s / copy_gb_per_s : 0.0;
    }
    out.push_back(tot);
  }
  return out;
}

}  // namespace

struct GpuVerifier::State {
  State(const WpkReader& r, const TensorSource* a, const GpuVerifyOptions& o) : reader(r), against(a), options(o) {}
  const WpkReader& reader;
  const TensorSource* against;
  const GpuVerifyOptions options;  // the caller's, copied: ctx refers to it
  GpuVerifyReport report;
  std::optional<Context> ctx;      // only when report.ran
  size_t next_tensor = 0;          // the tensor check_tensor takes next (file order)
};

GpuVerifier::GpuVerifier(const WpkReader& reader, const TensorSource* against, const GpuVerifyOptions& options) {
  validate_gpu_verify_options(options);
  state_ = std::make_unique<State>(reader, against, options);
  GpuVerifyReport& report = state_->report;
  if (!gpu::gpu_build_has_cuda()) {
    report.not_run_reason = "this wpack build has no CUDA";
    return;
  }
  std::string why;
  if (gpu::gpu_device_count(&why) <= 0) {
    report.not_run_reason = "no CUDA device";
    if (!why.empty() && why != "no CUDA device") report.not_run_reason += " (" + why + ")";
    return;
  }
  if (!gpu::gpu_device_runs_kernels(&why)) {
    report.not_run_reason = why;
    return;
  }
  report.ran = true;
  report.device = gpu::current_gpu_device();

  Context& ctx = state_->ctx.emplace(reader, against, state_->options);
  if (against)
    for (size_t i = 0; i < against->tensors().size(); ++i) ctx.source_index[against->tensors()[i].name] = i;
  if (options.timing) {
    if (options.copy_gb_per_s > 0) {
      report.copy.gb_per_s = options.copy_gb_per_s;
    } else {
      report.copy = gpu::measure_copy_bandwidth(ctx.stream.get());
    }
    ctx.copy_gb_per_s = report.copy.gb_per_s;
    ctx.timer.emplace(ctx.stream.get(), options.timing_options);
    report.timing = ctx.timer->options();
    // Without cuBLAS (a CUDA build run where its library is missing) the kernels are still checked
    // and timed; the baseline columns stay empty.
    if (const std::string why = gpu::cublas_load_error(); why.empty())
      ctx.cublas.emplace(ctx.stream.get());
    else
      report.baseline_not_run = "cuBLAS: " + why;
  } else {
    report.timing.warmup_runs = report.timing.timed_runs = 0;  // nothing timed
  }
}

GpuVerifier::~GpuVerifier() = default;

bool GpuVerifier::ran() const { return state_->report.ran; }

namespace {

// One tensor of GpuVerifier: the progress call, the checks, the check appended to the report.
void run_tensor(Context& ctx, size_t& next_tensor, size_t t, const DecodedTensor* reference, GpuVerifyReport& report) {
  const WpkReader& reader = ctx.reader;
  const size_t count = reader.tensors().size();
  if (t != next_tensor || t >= count)
    throw Error(ErrorCode::kInvalidArgument, "GpuVerifier: tensor " + std::to_string(t) + " given where tensor " +
                                                 std::to_string(next_tensor) + " of " + std::to_string(count) +
                                                 " is next");
  if (reference) {
    const WpkTensor& wt = reader.tensors()[t];
    const bool lossy = wt.scheme != 0;
    const uint64_t elements = wt.num_elements();
    const bool sized = reference->error ||
                       (lossy ? reference->values.size() == elements && reference->bytes.empty()
                              : reference->bytes.size() == elements * dtype_size(wt.dtype) && reference->values.empty());
    if (!sized)
      throw Error(ErrorCode::kInvalidArgument, where(reader, wt.name) + ": GpuVerifier: the CPU reference does not have "
                                                                        "the tensor's size");
  }
  ++next_tensor;
  if (ctx.options.progress) ctx.options.progress(t, count, reader.tensors()[t].name);
  GpuTensorCheck check = describe(reader, t);
  if (!ctx.device_failed.empty()) {  // every CUDA call would fail with the same error
    check.skipped = "not GPU-checked: the device failed at " + ctx.device_failed;
    report.tensors.push_back(std::move(check));
    return;
  }
  // A check that throws fails the tensor; after an error only the products run (a --max-error
  // failure), so a throw then is theirs.
  const auto fail = [&](const std::string& line) {
    if (check.error.empty()) check.error = line;
    else set_product_error(check, line);
  };
  try {
    check_tensor(ctx, t, reference, check);
  } catch (const Error& e) {
    // Library messages name file and tensor; a CUDA call's ("cudaMalloc: out of memory") does not.
    const std::string message = e.what();
    fail(message.rfind(reader.path(), 0) == 0 ? message : where(reader, check.name) + ": " + message);
    if (const std::string broken = gpu::gpu_context_error(); !broken.empty())
      ctx.device_failed = "tensor '" + check.name + "' (" + broken + ")";
  } catch (const std::bad_alloc&) {
    fail(where(reader, check.name) + ": out of host memory");
  }
  report.tensors.push_back(std::move(check));
}

}  // namespace

void GpuVerifier::check_tensor(size_t tensor) {
  if (ran()) run_tensor(*state_->ctx, state_->next_tensor, tensor, nullptr, state_->report);
}

void GpuVerifier::check_tensor(const DecodedTensor& reference) {
  if (ran()) run_tensor(*state_->ctx, state_->next_tensor, reference.tensor, &reference, state_->report);
}

GpuVerifyReport GpuVerifier::finish() {
  GpuVerifyReport& report = state_->report;
  if (!report.ran) return std::move(report);
  const size_t count = state_->reader.tensors().size();
  if (state_->next_tensor != count)
    throw Error(ErrorCode::kInvalidArgument, "GpuVerifier: finish after " + std::to_string(state_->next_tensor) + " of " +
                                                 std::to_string(count) + " tensors");
  if (state_->options.progress) state_->options.progress(count, count, "");
  report.totals = totals_of(report.tensors, state_->options.batches, state_->ctx->copy_gb_per_s);
  return std::move(report);
}

bool is_slow_lossy_gemv_kernel(const std::string& kernel_path) {
  return kernel_path == GpuTensor::kGemvGeneric || kernel_path == GpuTensor::kGemvWarpPerTile ||
         kernel_path == GpuTensor::kGemvWarpPerTileAndGeneric;
}

bool is_slow_lossless_gemv_kernel(const std::string& kernel_path) {
  return !kernel_path.empty() && kernel_path != GpuTensor::kGemvBulkCopy && kernel_path != GpuTensor::kGemvCpAsyncRing;
}

GpuVerifyReport verify_gpu(const WpkReader& reader, const TensorSource* against, const GpuVerifyOptions& options) {
  GpuVerifier verifier(reader, against, options);
  if (verifier.ran())
    for (size_t t = 0; t < reader.tensors().size(); ++t) verifier.check_tensor(t);
  return verifier.finish();
}

}  // namespace wpack
