// GPU measurement shared by `wpack verify --device cuda` (verify/verify_gpu.h) and
// bench/bench_gpu_layers.cpp: device memory and streams (RAII), the device's copy bandwidth, a
// timer for one GPU call, and the cuBLAS BF16 baseline. One place, so that verify and the bench
// time wpack and cuBLAS the same way.
//
// Host-only header: it includes no CUDA header. Device pointers are named *_dev; a stream is a
// cudaStream_t passed as void*. Errors: every CUDA and cuBLAS call is checked; a failure throws
// Error(kIo, "<call>: <CUDA error text>"). In a build without CUDA every function and constructor
// here throws Error(kUnsupported, "this wpack build has no CUDA"), except
// random_activations_bf16, which is host code.
//
// How GpuTimer times a call:
//
//   for each run (warm-up runs first, then the timed runs):
//     L2 flush: a kernel reads a scratch buffer of l2_flush_bytes (default 4x the device's L2), so
//               the call finds none of its weights in L2 and streams them from HBM, as it would in
//               a model whose other layers ran since;
//     event A, the call, event B;
//   all runs are enqueued before the host waits, then each run's time is B - A (cudaEventElapsedTime)
//   and the result is the median of the timed runs (min and max beside it).
//
//   Why a read flush: a memset flush (nvbench, triton) leaves dirty lines that the timed call
//   evicts, charging it HBM write-back traffic; reading leaves clean lines. Why not rotating weight
//   copies instead: the flush kernel also keeps the host ahead of the GPU -- while it runs (tens of
//   microseconds) the host enqueues the next event and call -- so events A and B bracket GPU work,
//   not the host's launch latency, which is as long as a small GEMV (a few microseconds).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace wpack::gpu {

// Device memory owned by the object (cudaMalloc / cudaFree). Move-only. bytes == 0 holds nothing.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(uint64_t bytes);
  DeviceMemory(DeviceMemory&& other) noexcept;
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory();

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  uint64_t bytes() const { return bytes_; }

  // Synchronous copies of `bytes` bytes at byte `offset` of this buffer (offset + bytes <= bytes(),
  // else Error(kInvalidArgument)). download waits for all preceding work on the device.
  void upload(const void* host, uint64_t bytes, uint64_t offset = 0);
  void download(void* host, uint64_t bytes, uint64_t offset = 0) const;
  // Sets every byte to `value` (synchronous).
  void fill(uint8_t value);

 private:
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

// A CUDA stream (cudaStreamCreate / cudaStreamDestroy). Move-only.
class GpuStream {
 public:
  GpuStream();
  GpuStream(GpuStream&& other) noexcept;
  GpuStream& operator=(GpuStream&& other) noexcept;
  GpuStream(const GpuStream&) = delete;
  GpuStream& operator=(const GpuStream&) = delete;
  ~GpuStream();
  void* get() const { return stream_; }
  void synchronize() const;  // cudaStreamSynchronize

 private:
  void* stream_ = nullptr;
};

// The current CUDA device.
struct GpuDeviceInfo {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int compute_major = 0, compute_minor = 0;
  uint64_t l2_bytes = 0;      // L2 cache size
  uint64_t memory_bytes = 0;  // global memory
  int driver_version = 0, runtime_version = 0;  // e.g. 13000 for 13.0
};
GpuDeviceInfo current_gpu_device();

// Device-to-device copy bandwidth: cudaMemcpyAsync of `bytes` bytes between two device buffers, 2
// warm-up copies, median of kMinTimedRuns. gb_per_s counts the bytes read plus the bytes written,
// 2 * bytes / time, 1 GB = 1e9 bytes (the project's convention: "device copy 4.29 TB/s" on the
// H200). A kernel that only reads N bytes in time t reaches N / t; compare that with gb_per_s.
struct CopyBandwidth {
  uint64_t bytes = 0;       // bytes copied per run
  double median_us = 0;
  double gb_per_s = 0;      // (read + written) / median time
};
inline constexpr uint64_t kCopyBandwidthBytes = uint64_t{1} << 30;
CopyBandwidth measure_copy_bandwidth(void* stream, uint64_t bytes = kCopyBandwidthBytes);

// The read floor: the time of a kernel that does nothing but read `bytes` bytes of device memory
// (launch_read_once in verify/detail/l2_flush.cu), timed as GpuTimer times a call (L2 flushed
// before each run), the fastest of three grid shapes: about what a GEMV whose weights are that
// many bytes cannot beat (bench/bench_read_floor.cu's wider sweep, plain loads and per-warp
// pipelines through shared memory, reads 2-3% faster at most on the H200).
// bench/bench_gpu_layers.cpp prints it beside each row. bytes is rounded up to 16.
struct ReadFloor {
  uint64_t bytes = 0;
  double median_us = 0;  // the fastest grid shape's median
  double gb_per_s = 0;   // bytes / median time
};
ReadFloor measure_read_floor(void* stream, uint64_t bytes);

// Timing of one call: see the comment at the top of this file.
inline constexpr int kMinTimedRuns = 20;
struct TimingOptions {
  int warmup_runs = 3;             // not timed; >= 1
  int timed_runs = kMinTimedRuns;  // >= kMinTimedRuns (Error(kInvalidArgument) otherwise)
  uint64_t l2_flush_bytes = 0;     // scratch read before every run; 0: 4x the L2 size, at least 64 MiB
  bool flush_l2 = true;            // false: no flush (for calls that stream far more than L2 anyway)
};
struct TimingResult {
  int runs = 0;
  double median_us = 0, min_us = 0, max_us = 0;
};

class GpuTimer {
 public:
  // Allocates the L2 flush buffer on the current device (filled once) and two events per run.
  // `stream` (not owned) is where calls are timed.
  GpuTimer(void* stream, const TimingOptions& options);
  GpuTimer(GpuTimer&&) noexcept;
  GpuTimer& operator=(GpuTimer&&) noexcept;
  ~GpuTimer();

  // Calls per time(): warmup_runs + timed_runs; call i (0-based) is timed when i >= warmup_runs.
  int calls() const;
  const TimingOptions& options() const;  // l2_flush_bytes resolved

  // Times `enqueue`: enqueue(i) must put call i (0 <= i < calls()) on the timer's stream and return
  // without waiting for the device (no synchronising call). Waits for everything, then returns the
  // timed runs' statistics in microseconds. Exceptions from enqueue propagate (after the stream has
  // drained, so nothing enqueued outlives its buffers).
  TimingResult time(const std::function<void(int call)>& enqueue);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// cuBLAS BF16 GEMM, the dense baseline: y = x * w^T with
//   w_dev: (n, k) BF16 bit patterns, row-major (a PyTorch nn.Linear weight)
//   x_dev: (batch, k) BF16, row-major
//   y_dev: (batch, n) float32, row-major; overwritten
// cublasGemmEx(CUBLAS_OP_T, CUBLAS_OP_N, m = n, n = batch, k), CUDA_R_16BF inputs, CUDA_R_32F output,
// CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT: the call and layout F.linear makes, which cuBLAS's
// heuristics are tuned for. n, k, batch must fit in int (Error(kInvalidArgument)).
// Note the layouts differ from GpuTensor::gemv (x: (k, batch), y: (n, batch)); for batch 1 they agree.
// cuBLAS is loaded (dlopen of libcublas.so.<the headers' major version>, then the CUDA Toolkit's
// library folder of the build) when the first CublasBf16Gemm is made, not when wpack starts: its
// libraries (half a gigabyte) cost every command ~80 ms of start-up, and a CUDA build then runs
// where cuBLAS is not installed. The environment variable WPACK_CUBLAS_LIBRARY, when set, names the
// library to load instead (a path, or a name for the loader's search; nothing else is tried), e.g.
// another toolkit's cuBLAS of the same major version. A failed load throws
// Error(kUnsupported, "cuBLAS: <why>").
class CublasBf16Gemm {
 public:
  explicit CublasBf16Gemm(void* stream);  // cublasCreate + cublasSetStream (stream not owned)
  CublasBf16Gemm(CublasBf16Gemm&&) noexcept;
  CublasBf16Gemm& operator=(CublasBf16Gemm&&) noexcept;
  ~CublasBf16Gemm();
  // Enqueues one GEMM on the stream (asynchronous).
  void run(const uint16_t* w_dev, const uint16_t* x_dev, float* y_dev, uint64_t n, uint64_t k, uint32_t batch) const;

 private:
  void* handle_ = nullptr;
};

// Why cuBLAS cannot be loaded ("" when it can; loads it on the first call): the file it looked for
// and the loader's message, a missing symbol, or "this wpack build has no CUDA". Host code: needs no GPU.
std::string cublas_load_error();

// `count` BF16 bit patterns drawn from N(0, 1), never +-0 (a draw that rounds to zero is drawn
// again): activations that exercise every weight. Deterministic for a seed; host code (no CUDA).
std::vector<uint16_t> random_activations_bf16(uint64_t count, uint64_t seed);

}  // namespace wpack::gpu
