// verify/gpu_timing.h: CUDA runtime and cuBLAS calls, each checked.
#include "verify/gpu_timing.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <type_traits>
#include <utility>

#include "formats/error.h"
#include "packer/detail/fp.h"  // float_to_bf16_bits
#include "verify/detail/splitmix64.h"

#if defined(WPACK_HAVE_CUDA)
#include <cublas_v2.h>  // types and constants only: the library is loaded by cublas_api()
#include <cuda_runtime.h>
#include <cstdlib>
#include <dlfcn.h>

#include "verify/detail/l2_flush.h"
#endif

namespace wpack::gpu {

// ---- host code (every build) ----

std::vector<uint16_t> random_activations_bf16(uint64_t count, uint64_t seed) {
  // splitmix64 + Box-Muller: fast, deterministic and the same on every platform (std::normal_distribution
  // is not specified bit for bit).
  uint64_t state = seed;
  auto uniform = [&state]() {  // (0, 1)
    return (static_cast<double>(wpack::detail::splitmix64(state) >> 11) + 0.5) * 0x1.0p-53;
  };
  std::vector<uint16_t> out(count);
  for (uint64_t i = 0; i < count; ++i) {
    uint16_t bits = 0;
    while ((bits & 0x7FFFu) == 0) {  // never +-0
      const double r = std::sqrt(-2.0 * std::log(uniform())), theta = 2.0 * std::numbers::pi * uniform();
      bits = wpack::detail::float_to_bf16_bits(static_cast<float>(r * std::cos(theta)));
    }
    out[i] = bits;
  }
  return out;
}

// Moves: the same in every build (a moved-from object holds nothing; its destructor frees what the
// target held before).
DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  std::swap(ptr_, other.ptr_);
  std::swap(bytes_, other.bytes_);
  return *this;
}
GpuStream::GpuStream(GpuStream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
GpuStream& GpuStream::operator=(GpuStream&& other) noexcept {
  std::swap(stream_, other.stream_);
  return *this;
}
CublasBf16Gemm::CublasBf16Gemm(CublasBf16Gemm&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
CublasBf16Gemm& CublasBf16Gemm::operator=(CublasBf16Gemm&& other) noexcept {
  std::swap(handle_, other.handle_);
  return *this;
}

#if !defined(WPACK_HAVE_CUDA)

namespace {
[[noreturn]] void no_cuda() { throw Error(ErrorCode::kUnsupported, "this wpack build has no CUDA"); }
}  // namespace

DeviceMemory::DeviceMemory(uint64_t) { no_cuda(); }
DeviceMemory::~DeviceMemory() = default;
void DeviceMemory::upload(const void*, uint64_t, uint64_t) { no_cuda(); }
void DeviceMemory::download(void*, uint64_t, uint64_t) const { no_cuda(); }
void DeviceMemory::fill(uint8_t) { no_cuda(); }

GpuStream::GpuStream() { no_cuda(); }
GpuStream::~GpuStream() = default;
void GpuStream::synchronize() const { no_cuda(); }

GpuDeviceInfo current_gpu_device() { no_cuda(); }
CopyBandwidth measure_copy_bandwidth(void*, uint64_t) { no_cuda(); }
ReadFloor measure_read_floor(void*, uint64_t) { no_cuda(); }

struct GpuTimer::Impl {};
GpuTimer::GpuTimer(void*, const TimingOptions&) { no_cuda(); }
GpuTimer::GpuTimer(GpuTimer&&) noexcept = default;
GpuTimer& GpuTimer::operator=(GpuTimer&&) noexcept = default;
GpuTimer::~GpuTimer() = default;
int GpuTimer::calls() const { no_cuda(); }
const TimingOptions& GpuTimer::options() const { no_cuda(); }
TimingResult GpuTimer::time(const std::function<void(int)>&) { no_cuda(); }

std::string cublas_load_error() { return "this wpack build has no CUDA"; }
CublasBf16Gemm::CublasBf16Gemm(void*) { no_cuda(); }
CublasBf16Gemm::~CublasBf16Gemm() = default;
void CublasBf16Gemm::run(const uint16_t*, const uint16_t*, float*, uint64_t, uint64_t, uint32_t) const { no_cuda(); }

#else  // WPACK_HAVE_CUDA

namespace {

#define WPACK_TIMING_CUDA(call)                                                                           \
  do {                                                                                                     \
    const cudaError_t wpack_err_ = (call);                                                                 \
    if (wpack_err_ != cudaSuccess)                                                                         \
      throw ::wpack::Error(::wpack::ErrorCode::kIo, std::string(#call) + ": " + cudaGetErrorString(wpack_err_)); \
  } while (0)

// The cuBLAS functions wpack calls, resolved from the library loaded on first use (gpu_timing.h).
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  // the C function (the headers add a C++ overload taking cudaDataType for the compute type)
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
  std::string error;  // empty: every function resolved
};

// WPACK_CUBLAS_DIR: the CUDA Toolkit's library folder at build time (verify/CMakeLists.txt), tried
// after the loader's own search, as the run path of a linked cuBLAS would be.
const CublasApi& cublas_api() {
  static const CublasApi api = [] {
    CublasApi a;
    const char* chosen = std::getenv("WPACK_CUBLAS_LIBRARY");
    const bool by_env = chosen && *chosen;
    const std::string soname = by_env ? chosen : "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    std::string why = lib ? "" : dlerror();
#if defined(WPACK_CUBLAS_DIR)
    if (!lib && !by_env) lib = dlopen((std::string(WPACK_CUBLAS_DIR) + "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
    if (!lib) {
      a.error = why;  // names the file: "libcublas.so.13: cannot open shared object file: ..."
      return a;
    }
    auto resolve = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn && a.error.empty()) a.error = soname + ": no symbol " + name;
    };
    resolve(a.create, "cublasCreate_v2");
    resolve(a.set_stream, "cublasSetStream_v2");
    resolve(a.destroy, "cublasDestroy_v2");
    resolve(a.gemm_ex, "cublasGemmEx");
    resolve(a.status_string, "cublasGetStatusString");
    return a;  // the library stays loaded for the process
  }();
  return api;
}

#define WPACK_TIMING_CUBLAS(name, call)                                                                     \
  do {                                                                                                       \
    const cublasStatus_t wpack_st_ = (call);                                                                 \
    if (wpack_st_ != CUBLAS_STATUS_SUCCESS)                                                                  \
      throw ::wpack::Error(::wpack::ErrorCode::kIo, std::string(name) + ": " + cublas_api().status_string(wpack_st_)); \
  } while (0)

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Two events per run, destroyed on every path.
class EventPairs {
 public:
  explicit EventPairs(int runs) {
    events_.reserve(2 * static_cast<size_t>(runs));
    try {
      for (int i = 0; i < 2 * runs; ++i) {
        cudaEvent_t e = nullptr;
        WPACK_TIMING_CUDA(cudaEventCreate(&e));
        events_.push_back(e);
      }
    } catch (...) {  // the destructor does not run for a constructor that throws
      for (cudaEvent_t e : events_) cudaEventDestroy(e);
      throw;
    }
  }
  ~EventPairs() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);  // destructors do not throw
  }
  EventPairs(const EventPairs&) = delete;
  EventPairs& operator=(const EventPairs&) = delete;
  cudaEvent_t start(int run) const { return events_[2 * static_cast<size_t>(run)]; }
  cudaEvent_t stop(int run) const { return events_[2 * static_cast<size_t>(run) + 1]; }

 private:
  std::vector<cudaEvent_t> events_;
};

TimingResult summarize(std::vector<double> us) {
  TimingResult r;
  r.runs = static_cast<int>(us.size());
  if (us.empty()) return r;
  std::sort(us.begin(), us.end());
  const size_t n = us.size();
  r.median_us = n % 2 ? us[n / 2] : 0.5 * (us[n / 2 - 1] + us[n / 2]);
  r.min_us = us.front();
  r.max_us = us.back();
  return r;
}

}  // namespace

DeviceMemory::DeviceMemory(uint64_t bytes) : bytes_(bytes) {
  if (bytes) WPACK_TIMING_CUDA(cudaMalloc(&ptr_, bytes));
}
DeviceMemory::~DeviceMemory() {
  if (ptr_) cudaFree(ptr_);  // destructors do not throw; a failure here leaves nothing to recover
}
void DeviceMemory::upload(const void* host, uint64_t bytes, uint64_t offset) {
  if (offset > bytes_ || bytes > bytes_ - offset) throw Error(ErrorCode::kInvalidArgument, "DeviceMemory::upload: out of range");
  if (bytes) WPACK_TIMING_CUDA(cudaMemcpy(static_cast<uint8_t*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice));
}
void DeviceMemory::download(void* host, uint64_t bytes, uint64_t offset) const {
  if (offset > bytes_ || bytes > bytes_ - offset) throw Error(ErrorCode::kInvalidArgument, "DeviceMemory::download: out of range");
  if (bytes) WPACK_TIMING_CUDA(cudaMemcpy(host, static_cast<const uint8_t*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost));
}
void DeviceMemory::fill(uint8_t value) {
  if (bytes_) {
    WPACK_TIMING_CUDA(cudaMemset(ptr_, value, bytes_));
    WPACK_TIMING_CUDA(cudaDeviceSynchronize());  // cudaMemset may return before the device is done
  }
}

GpuStream::GpuStream() {
  cudaStream_t s = nullptr;
  WPACK_TIMING_CUDA(cudaStreamCreate(&s));
  stream_ = s;
}
GpuStream::~GpuStream() {
  if (stream_) cudaStreamDestroy(as_stream(stream_));
}
void GpuStream::synchronize() const { WPACK_TIMING_CUDA(cudaStreamSynchronize(as_stream(stream_))); }

GpuDeviceInfo current_gpu_device() {
  GpuDeviceInfo info;
  WPACK_TIMING_CUDA(cudaGetDevice(&info.index));
  cudaDeviceProp prop{};
  WPACK_TIMING_CUDA(cudaGetDeviceProperties(&prop, info.index));
  info.name = prop.name;
  info.sm_count = prop.multiProcessorCount;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.l2_bytes = static_cast<uint64_t>(prop.l2CacheSize);
  info.memory_bytes = prop.totalGlobalMem;
  WPACK_TIMING_CUDA(cudaDriverGetVersion(&info.driver_version));
  WPACK_TIMING_CUDA(cudaRuntimeGetVersion(&info.runtime_version));
  return info;
}

// ---- GpuTimer ----

struct GpuTimer::Impl {
  cudaStream_t stream = nullptr;
  TimingOptions options;
  int flush_blocks = 0;
  DeviceMemory flush_buffer;
  DeviceMemory sink;  // one unsigned the flush kernel could write
};

GpuTimer::GpuTimer(void* stream, const TimingOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.warmup_runs < 1 || options.timed_runs < kMinTimedRuns)
    throw Error(ErrorCode::kInvalidArgument, "GpuTimer: at least 1 warm-up run and " + std::to_string(kMinTimedRuns) +
                                                 " timed runs (median) are required");
  impl_->stream = as_stream(stream);
  impl_->options = options;
  if (options.flush_l2) {
    const GpuDeviceInfo device = current_gpu_device();
    uint64_t bytes = options.l2_flush_bytes;
    if (bytes == 0) bytes = std::max<uint64_t>(4 * device.l2_bytes, uint64_t{64} << 20);
    bytes = (bytes + 15) / 16 * 16;
    impl_->options.l2_flush_bytes = bytes;
    impl_->flush_buffer = DeviceMemory(bytes);
    impl_->flush_buffer.fill(0x5A);  // one byte value: see l2_flush.cu
    impl_->sink = DeviceMemory(sizeof(unsigned));
    impl_->sink.fill(0);
    impl_->flush_blocks = std::max(1, 4 * device.sm_count);
  } else {
    impl_->options.l2_flush_bytes = 0;
  }
}
GpuTimer::GpuTimer(GpuTimer&&) noexcept = default;
GpuTimer& GpuTimer::operator=(GpuTimer&&) noexcept = default;
GpuTimer::~GpuTimer() = default;

int GpuTimer::calls() const { return impl_->options.warmup_runs + impl_->options.timed_runs; }
const TimingOptions& GpuTimer::options() const { return impl_->options; }

TimingResult GpuTimer::time(const std::function<void(int)>& enqueue) {
  const int warmup = impl_->options.warmup_runs, timed = impl_->options.timed_runs;
  const cudaStream_t s = impl_->stream;
  EventPairs events(timed);
  try {
    for (int i = 0; i < warmup + timed; ++i) {
      if (impl_->options.flush_l2)
        WPACK_TIMING_CUDA(detail::launch_l2_flush(impl_->flush_buffer.get(), impl_->flush_buffer.bytes(),
                                                  impl_->sink.as<unsigned>(), impl_->flush_blocks, s));
      const int run = i - warmup;
      if (run >= 0) WPACK_TIMING_CUDA(cudaEventRecord(events.start(run), s));
      enqueue(i);
      if (run >= 0) WPACK_TIMING_CUDA(cudaEventRecord(events.stop(run), s));
    }
    WPACK_TIMING_CUDA(cudaStreamSynchronize(s));
  } catch (...) {
    cudaStreamSynchronize(s);  // drain before the caller frees what the calls use; its error is the one thrown
    throw;
  }
  std::vector<double> us(static_cast<size_t>(timed));
  for (int run = 0; run < timed; ++run) {
    float ms = 0;
    WPACK_TIMING_CUDA(cudaEventElapsedTime(&ms, events.start(run), events.stop(run)));
    us[static_cast<size_t>(run)] = 1000.0 * ms;
  }
  return summarize(std::move(us));
}

CopyBandwidth measure_copy_bandwidth(void* stream, uint64_t bytes) {
  if (bytes == 0) throw Error(ErrorCode::kInvalidArgument, "measure_copy_bandwidth: zero bytes");
  DeviceMemory src(bytes), dst(bytes);
  src.fill(1);
  TimingOptions options;
  options.warmup_runs = 2;
  options.timed_runs = kMinTimedRuns;
  options.flush_l2 = false;  // 1 GiB through a 60 MB L2: nothing of it stays
  GpuTimer timer(stream, options);
  const TimingResult t = timer.time([&](int) {
    WPACK_TIMING_CUDA(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, as_stream(stream)));
  });
  CopyBandwidth r;
  r.bytes = bytes;
  r.median_us = t.median_us;
  r.gb_per_s = t.median_us > 0 ? 2.0 * static_cast<double>(bytes) / (t.median_us * 1e3) : 0.0;
  return r;
}

ReadFloor measure_read_floor(void* stream, uint64_t bytes) {
  if (bytes == 0) throw Error(ErrorCode::kInvalidArgument, "measure_read_floor: zero bytes");
  bytes = (bytes + 15) / 16 * 16;
  DeviceMemory buf(bytes), sink(sizeof(unsigned));
  buf.fill(0x5A);  // one byte value: the kernel's sink store never happens
  sink.fill(0);
  const GpuDeviceInfo device = current_gpu_device();
  GpuTimer timer(stream, TimingOptions{});
  ReadFloor r;
  r.bytes = bytes;
  // the grid shapes that read fastest on the H200 (bench/bench_read_floor.cu sweeps more)
  for (const auto& [blocks_per_sm, threads] : {std::pair{8, 256}, std::pair{4, 512}, std::pair{2, 1024}}) {
    const TimingResult t = timer.time([&](int) {
      WPACK_TIMING_CUDA(detail::launch_read_once(buf.get(), bytes, sink.as<unsigned>(), blocks_per_sm * device.sm_count,
                                                 threads, as_stream(stream)));
    });
    if (r.median_us == 0 || t.median_us < r.median_us) r.median_us = t.median_us;
  }
  r.gb_per_s = r.median_us > 0 ? static_cast<double>(bytes) / (r.median_us * 1e3) : 0.0;
  return r;
}

// ---- cuBLAS ----

std::string cublas_load_error() { return cublas_api().error; }

CublasBf16Gemm::CublasBf16Gemm(void* stream) {
  const CublasApi& api = cublas_api();
  if (!api.error.empty()) throw Error(ErrorCode::kUnsupported, "cuBLAS: " + api.error);
  cublasHandle_t h = nullptr;
  WPACK_TIMING_CUBLAS("cublasCreate", api.create(&h));
  const cublasStatus_t st = api.set_stream(h, as_stream(stream));
  if (st != CUBLAS_STATUS_SUCCESS) {
    api.destroy(h);
    throw Error(ErrorCode::kIo, std::string("cublasSetStream: ") + api.status_string(st));
  }
  handle_ = h;
}
CublasBf16Gemm::~CublasBf16Gemm() {
  if (handle_) cublas_api().destroy(static_cast<cublasHandle_t>(handle_));  // handle_: the API loaded
}

void CublasBf16Gemm::run(const uint16_t* w_dev, const uint16_t* x_dev, float* y_dev, uint64_t n, uint64_t k,
                         uint32_t batch) const {
  constexpr uint64_t kIntMax = 0x7FFFFFFF;
  if (n == 0 || k == 0 || batch == 0 || n > kIntMax || k > kIntMax || batch > kIntMax)
    throw Error(ErrorCode::kInvalidArgument, "cuBLAS GEMM: n, k and batch must be in 1..2^31-1");
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: w (n, k) row-major is a k x n matrix with ld k, used transposed (op T);
  // x (batch, k) row-major is k x batch with ld k; y (batch, n) row-major is n x batch with ld n.
  WPACK_TIMING_CUBLAS("cublasGemmEx", cublas_api().gemm_ex(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                   static_cast<int>(batch), static_cast<int>(k), &alpha, w_dev, CUDA_R_16BF,
                                   static_cast<int>(k), x_dev, CUDA_R_16BF, static_cast<int>(k), &beta, y_dev, CUDA_R_32F,
                                   static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

#endif  // WPACK_HAVE_CUDA

}  // namespace wpack::gpu
