// Times a launch the way verify/gpu_timing.h's GpuTimer times a GEMV, for the CUDA benchmarks that
// do not link the verify library (bench_read_floor, bench_bulk_copy), and checks their CUDA calls: before every run a kernel
// reads a 256 MB scratch buffer (4x the H200's L2) and, while it runs, the host enqueues event A,
// the run and event B, so that the events bracket GPU work and not the host's launch latency; all
// runs are enqueued before the host waits; the result is the median of the timed runs.
// (Synchronising after every run instead adds the launch latency, ~4 us on the H200, to each.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cuda_runtime.h>

namespace bench_timer {

// Every CUDA call of these programs: on failure, prints the call and CUDA's message, exits 1.
#define BENCH_CUDA_CHECK(call)                                                           \
  do {                                                                                   \
    const cudaError_t e_ = (call);                                                       \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));                   \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

// Reads n16 16-byte words; stores only when the XOR of everything read is a value a buffer filled
// with one byte cannot give, so the reads stay and nothing is written.
__global__ void flush_read_kernel(const uint4* __restrict__ buf, uint64_t n16, uint32_t* sink) {
  uint32_t acc = 0;
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n16; i += uint64_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldcg(buf + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;
}

// Device 0's properties; false, after printing why (a SKIP line), when there is no CUDA device.
inline bool first_device(cudaDeviceProp* prop) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return false;
  }
  BENCH_CUDA_CHECK(cudaGetDeviceProperties(prop, 0));
  return true;
}

class EventTimer {
 public:
  static constexpr int kRuns = 23, kWarmups = 3;
  static constexpr uint64_t kFlushBytes = 256ull << 20;

  explicit EventTimer(int sms) : sms_(sms) {
    for (cudaEvent_t& e : events_) BENCH_CUDA_CHECK(cudaEventCreate(&e));
    BENCH_CUDA_CHECK(cudaMalloc(&flush_, kFlushBytes));
    BENCH_CUDA_CHECK(cudaMemset(flush_, 0x5A, kFlushBytes));
    BENCH_CUDA_CHECK(cudaMalloc(&sink_, sizeof(uint32_t)));
  }
  ~EventTimer() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    cudaFree(flush_);
    cudaFree(sink_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  // Median µs of the kRuns - kWarmups timed runs of launch(r), r = 0 .. kRuns - 1. before(r), if
  // given, enqueues untimed work after the flush and before event A of run r.
  template <class Launch>
  double median_us(Launch launch) {
    return median_us(launch, [](int) {});
  }
  template <class Launch, class Before>
  double median_us(Launch launch, Before before) {
    for (int run = 0; run < kRuns; ++run) {
      flush_read_kernel<<<4 * sms_, 512>>>(reinterpret_cast<const uint4*>(flush_), kFlushBytes / 16, sink_);
      before(run);
      BENCH_CUDA_CHECK(cudaEventRecord(events_[2 * run]));
      launch(run);
      BENCH_CUDA_CHECK(cudaGetLastError());
      BENCH_CUDA_CHECK(cudaEventRecord(events_[2 * run + 1]));
    }
    BENCH_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> ms;
    for (int run = kWarmups; run < kRuns; ++run) {
      float t = 0;
      BENCH_CUDA_CHECK(cudaEventElapsedTime(&t, events_[2 * run], events_[2 * run + 1]));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return 1e3 * ms[ms.size() / 2];
  }

 private:
  int sms_;
  cudaEvent_t events_[2 * kRuns];
  uint8_t* flush_ = nullptr;
  uint32_t* sink_ = nullptr;
};

}  // namespace bench_timer
