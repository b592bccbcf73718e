// verify on the GPU: every tensor of a .wpk uploaded (tile checksums), decoded by the GPU kernels
// and compared bit for bit with the CPU reference decode, and every matrix multiplied by the fused
// decode + GEMV kernel at each requested batch, checked against a float64 CPU product and timed
// beside cuBLAS BF16 on the dense weights (verify/gpu_timing.h says how runs are timed).
//
// verify_gpu does not replace verify_cpu (verify/verify.h): `wpack verify --device cuda` runs the
// CPU checks (integrity of every tile, decode, comparison with --against) and these beside them,
// one tensor at a time: GpuVerifier below takes each tensor's CPU decode from verify_cpu's hook, so
// that a tensor is decoded on the CPU once. verify_gpu is the same checks on their own.
//
// Per tensor, in order:
//   1. upload (GpuTensor::upload checks every tile's checksum): Error(kCorrupt) is a failure naming
//      the tensor and tile; Error(kUnsupported) (e.g. a lossy tensor before the GPU supports it, a
//      tile too large for shared memory) marks the tensor not GPU-checked, with the reason;
//   2. GPU decode into a poisoned buffer, then the per-tile status: kUnsupportedCodec or
//      kUnsupportedFilter (zstd tiles: the header calls these not an error of the call)
//      mark the tensor not GPU-checked, naming the first such tile; kCorrupt, kTooLarge or an
//      unknown status is a failure naming the tile;
//   3. the decoded values against the CPU reference decode, bit for bit: lossless tensors their
//      source bytes (packer/unpack.h decode_tensor), lossy tensors the dequantized float32 values
//      (decode_tensor_f32 -> decode_quant_tile_ref); a difference is a failure naming the first tile
//      that differs;
//   4. with `against` holding the tensor (same shape, float dtype): rel_error = ||W_gpu - W_src|| /
//      ||W_src|| (lossless: must be 0; lossy: must be <= max_rel_error);
//   5. 2-D and higher tensors (the 2-D view of docs/FORMAT.md, N x K), for each batch B: fresh
//      random non-zero BF16 activations X (K x B), Y = GpuTensor::gemv(X) against the float64
//      product W_deq * X on the CPU (matmul_rel_error = ||Y - Y_ref|| / ||Y_ref||, and each output
//      against its |W| |X|, a failure above max_matmul_rel_error); then the gemv and a cuBLAS BF16
//      GEMM on the dense BF16 weights (the source's, rounded to BF16 when it is not BF16; without a
//      source, the decoded weights rounded to BF16) timed with the same activations, each call on
//      its own activation set (128-byte aligned, as the first: the timed calls run the kernel that
//      was checked). Error(kUnsupported) from gemv (a lossless tensor that is not BF16, a batch the
//      kernels do not do yet) skips that batch, with the reason; so do weights that are not finite.
//
// A device the build has no kernels for (CMAKE_CUDA_ARCHITECTURES) runs no GPU check (ran = false,
// with the reason). After a tensor whose failure broke the device's context (an illegal address:
// every later CUDA call fails), the later tensors are not GPU-checked (skipped, naming it).
//
// All memory named here is host memory; device buffers live only inside verify_gpu and GpuVerifier.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "formats/tensor.h"
#include "formats/wpk.h"
#include "verify/gpu_timing.h"
#include "verify/verify.h"  // DecodedTensor: the CPU reference decode of one tensor

namespace wpack {

// The float32-accumulation tolerance of the fused GEMV against the float64 product of the same
// dequantized weights and activations (issue 5's target).
inline constexpr double kMatmulRelTolerance = 2e-3;
// gemv batch sizes a caller may ask for (GpuTensor::gemv's contract).
inline constexpr uint32_t kMaxGemvBatch = 64;

struct GpuVerifyOptions {
  std::vector<uint32_t> batches = {1};  // each in 1..kMaxGemvBatch, no duplicates
  int threads = 0;                      // CPU threads for reference decodes and float64 products (0: all)
  double max_rel_error = std::numeric_limits<double>::infinity();  // lossy tensors against the source
  double max_matmul_rel_error = kMatmulRelTolerance;
  bool timing = true;                   // false: correctness checks only (no timed runs, no cuBLAS)
  gpu::TimingOptions timing_options;
  double copy_gb_per_s = 0;             // > 0: the copy bandwidth measured by the caller; 0: measured here
  uint64_t seed = 1;                    // activations
  // Called before each tensor with (tensors done, tensor count, tensor name).
  std::function<void(uint64_t, uint64_t, const std::string&)> progress;
};

struct GpuBatchCheck {
  uint32_t batch = 0;
  bool ran = false;               // the gemv ran and was checked
  std::string skipped;            // why it did not run (not a failure)
  std::string kernel_path;        // the kernel that ran (GpuTensor::gemv_kernel(): "bulk-copy", "generic", ...)
  double matmul_rel_error = std::numeric_limits<double>::quiet_NaN();
  // The worst single output: max over outputs of |Y - Y_ref| / (|W| |X|) (the same float64 product
  // with absolute values), a failure above max_matmul_rel_error too: it catches a few wrong or
  // unwritten outputs that the norm-wise error averages away.
  double matmul_output_error = std::numeric_limits<double>::quiet_NaN();
  double cublas_rel_error = std::numeric_limits<double>::quiet_NaN();  // informative: cuBLAS on the
                                  // dense BF16 weights against the same float64 reference (includes
                                  // the quantization error when those are the source weights)
  bool timed = false;
  gpu::TimingResult kernel;       // GpuTensor::gemv, microseconds
  bool baseline_timed = false;    // cuBLAS ran (not when it cannot be loaded: GpuVerifyReport::baseline_not_run)
  gpu::TimingResult cublas;       // cuBLAS BF16 GEMM, microseconds
  double speedup = 0;             // cublas.median_us / kernel.median_us (0 without the baseline)
  double packed_gb_per_s = 0;     // packed_bytes / kernel.median_us (1 GB = 1e9 bytes)
  double copy_bw_percent = 0;     // 100 * packed_gb_per_s / the copy bandwidth (read + write)
};

struct GpuTensorCheck {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  uint8_t scheme_code = 0;        // 0 lossless, else packer/quantize.h Scheme
  std::string scheme;             // "lossless", "int4", ...
  std::string scheme_label;       // with group and pruning: "int4 g128", "fp6 pruned 0.5"
  uint64_t packed_bytes = 0;      // the tiles' stored bytes plus the params blob: what the GPU reads
  double bits_per_weight = 0;     // 8 * packed_bytes / elements
  bool gpu_checked = false;       // uploaded, decoded on the GPU (every tile ok) and compared
  std::string skipped;            // why the GPU did not check it (not a failure); empty otherwise
  bool decode_bit_exact = false;  // GPU decode == CPU reference decode (when gpu_checked)
  uint64_t decode_mismatches = 0; // elements that differ
  bool compared = false;          // the source holds the tensor: rel_error is set
  double rel_error = std::numeric_limits<double>::quiet_NaN();
  std::string cublas_weights;     // "source" or "decoded": what cuBLAS multiplied
  std::vector<GpuBatchCheck> batches;
  std::string error;              // a failed check, one line naming file, tensor (and tile); empty = passed
  std::string product_error;      // the first failure of its products (beside a --max-error failure, which
                                  // still lets them run); also in `error`, after "; " when that has one
};

// Sums over the tensors timed at one batch size.
struct GpuBatchTotals {
  uint32_t batch = 0;
  uint64_t tensors = 0;
  uint64_t packed_bytes = 0;
  bool baseline_timed = false;          // cuBLAS timed on every one of those tensors
  double kernel_us = 0, cublas_us = 0;  // sums of the medians (cublas_us: 0 without the baseline)
  double speedup = 0;                   // cublas_us / kernel_us
  double packed_gb_per_s = 0;           // packed_bytes / kernel_us
  double copy_bw_percent = 0;
  double max_matmul_rel_error = 0;      // over the tensors checked at this batch
};

struct GpuVerifyReport {
  bool ran = false;               // false: no GPU checks at all, see not_run_reason
  std::string not_run_reason;     // "this wpack build has no CUDA", "no CUDA device (...)"
  gpu::GpuDeviceInfo device;
  gpu::CopyBandwidth copy;        // measured at the start (or given in the options)
  gpu::TimingOptions timing;      // as used (l2_flush_bytes resolved)
  std::string baseline_not_run;   // timing on, but cuBLAS could not be loaded: why ("cuBLAS: libcublas.so.13:
                                  // cannot open shared object file ..."); the kernels are still checked and timed
  std::vector<GpuTensorCheck> tensors;  // in file order
  std::vector<GpuBatchTotals> totals;   // one per requested batch, in the order asked
  bool ok() const;                      // no tensor has an error (true when !ran)
};

// Runs the checks above on every tensor of `reader` (`against` may be null). Returns ran = false,
// with the reason, when the build has no CUDA or no device is visible. Throws Error(kInvalidArgument)
// for bad options (a batch outside 1..kMaxGemvBatch, a duplicate batch, bad timing options) and
// Error(kIo) when the device fails before the first tensor (copy bandwidth, cuBLAS set-up); a
// cuBLAS that cannot be loaded is no failure (baseline_not_run). A failure inside one tensor is
// recorded in its check and the next tensor still runs.
GpuVerifyReport verify_gpu(const WpkReader& reader, const TensorSource* against, const GpuVerifyOptions& options);

// The option checks verify_gpu starts with (the same Error), for callers that want to refuse bad
// options before preparing anything.
void validate_gpu_verify_options(const GpuVerifyOptions& options);

// Whether a lossy tensor's GpuBatchCheck::kernel_path names a kernel far slower than the
// bulk-copy GEMV: the warp-per-tile rANS decoder (rANS-coded tiles, 0.1-0.2x cuBLAS on the H200)
// or the one-block-per-tile fallback (sparse tiles outside the bulk-copy GEMV, odd tile shapes, x
// not 16-byte aligned).
bool is_slow_lossy_gemv_kernel(const std::string& kernel_path);
// The same for a lossless tensor: any kernel but the bulk-copy GEMV (which takes BF16 tensors packed
// with codec exp4); the rANS decoder ran 0.17x cuBLAS on a 28672x8192 layer of the H200, exp4 1.23x.
bool is_slow_lossless_gemv_kernel(const std::string& kernel_path);

// verify_gpu one tensor at a time, for a caller that already holds each tensor's CPU reference
// decode (verify_cpu's on_decoded hook): construct, check_tensor for every tensor of the file in
// order, finish. verify_gpu(reader, against, options) is exactly
//     GpuVerifier v(reader, against, options);
//     if (v.ran()) for (size_t t = 0; t < reader.tensors().size(); ++t) v.check_tensor(t);
//     return v.finish();
// and given the DecodedTensor that verify_cpu hands over, check_tensor records what
// check_tensor(t) would: a failed CPU decode is met where check_tensor(t) would decode, with the
// same Error (so a corrupt tile is still reported by the upload's checksum check, first).
class GpuVerifier {
 public:
  // What verify_gpu does before the first tensor: the option checks (Error(kInvalidArgument)), then,
  // when the build has CUDA and a device is visible, the device set-up (stream, copy bandwidth, timer,
  // cuBLAS; Error(kIo) when the device fails). Without CUDA or a device, ran() is false and the
  // reason is in finish()'s report. `reader` and `against` (may be null) must outlive the verifier;
  // `options` is copied.
  GpuVerifier(const WpkReader& reader, const TensorSource* against, const GpuVerifyOptions& options);
  ~GpuVerifier();
  GpuVerifier(const GpuVerifier&) = delete;
  GpuVerifier& operator=(const GpuVerifier&) = delete;

  // Whether the GPU checks run (a CUDA build and a device): false makes check_tensor a no-op.
  bool ran() const;

  // Checks tensor `tensor` (steps 1-5 above), decoding its CPU reference itself, and appends its
  // GpuTensorCheck to the report (options.progress is called first). Tensors must come in file
  // order, each once (Error(kInvalidArgument) otherwise, nothing recorded). A failure of the tensor
  // is recorded in its check; an exception other than Error and std::bad_alloc propagates, after
  // which the verifier must not be used.
  void check_tensor(size_t tensor);
  // The same with `reference` as the CPU reference decode of tensor reference.tensor (its bytes for
  // a lossless tensor, its values for a lossy one, or its decode Error). Host memory, read during
  // the call only. Error(kInvalidArgument) when its spans do not have the tensor's size.
  void check_tensor(const DecodedTensor& reference);

  // The report: every tensor checked (Error(kInvalidArgument) when ran() and a tensor of the file
  // was not), the totals per batch; options.progress is called with (count, count, "") when ran().
  // Call once.
  GpuVerifyReport finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace wpack
