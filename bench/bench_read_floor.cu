// The floor under a GEMV's time: how long a kernel that does nothing but read N bytes from HBM
// takes, timed by the GpuTimer that times the GEMVs (verify/gpu_timing.h: CUDA events around one
// launch, an L2-flushing read before each, median of 20 after 3 warm-ups). A packed layer cannot
// be multiplied faster than its bytes can be read, so this bounds every "speedup over cuBLAS" and
// "% of the copy bandwidth" target for a given byte count. Four ways to read, each the fastest
// over a sweep of configurations:
//   plain 16-byte loads (ld.global.nc, no L1 allocation), U in flight per thread, 1 to 8 blocks
//   per SM, in two access orders: the grid strides over the buffer (each load instruction of the
//   grid reads one contiguous span), or each block reads its own contiguous part (as the GEMVs'
//   blocks read their tiles);
//   through shared memory, every warp streaming its own contiguous run of chunks (a quarter, half
//   or whole int4 tile) through its own stages: by cp.async, or by bulk copies that complete on
//   the warp's own barriers (no producer warp).
// Beside them: an empty kernel between the events (their own floor) and cudaMemcpyAsync of the
// same bytes (read + write). kernels/quant_gemv_tma.cu reads through a producer warp's bulk copies
// into a ring shared by its consumer warps: bench_bulk_copy times that ring the same way.
// gpu::measure_read_floor (bench_gpu_layers' floor_us) is the grid-stride kernel with 4 loads in
// flight at three grid shapes.
//
//   build/bench/bench_read_floor [--mb 34,50,67,101,121,134,177,235,352,470,1024]
//
// The default sizes are the packed bytes of the issue-5 shapes: 8192x8192 as int4 g128 (34 MB),
// fp6 (50), int8/fp8 (67), exp4 (101), BF16 (134); 28672x8192 the same (121, 177, 235, 352, 470);
// and 1024 MB for the steady state (1 MB = 10^6 bytes).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "formats/error.h"
#include "kernels/detail/bulk_copy.cuh"
#include "verify/detail/stream_load.cuh"  // xor_words: the read floor kernel's loop
#include "verify/gpu_timing.h"            // GpuTimer, DeviceMemory, GpuStream

namespace read_floor {

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw wpack::Error(wpack::ErrorCode::kIo, std::string(what) + ": " + cudaGetErrorString(e));
}

// n16: 16-byte words. kContiguous: block b reads words [b n16 / grid, (b + 1) n16 / grid), its
// threads striding by the block; otherwise thread t of the grid reads t, t + G, ... (G threads), as
// the read floor's kernel does. U loads are issued before any is used (xor_words).
template <int U, bool kContiguous>
__global__ void read_kernel(const uint4* __restrict__ src, uint64_t n16, uint32_t* out) {
  uint64_t end = n16, step = uint64_t{gridDim.x} * blockDim.x;
  uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (kContiguous) {
    end = (blockIdx.x + 1ull) * n16 / gridDim.x;
    step = blockDim.x;
    i = blockIdx.x * n16 / gridDim.x + threadIdx.x;
  }
  const uint32_t acc = wpack::gpu::detail::xor_words<U>(src, i, end, step);
  if (acc == 0x9E3779B9u) out[0] = acc;
}

// Through shared memory as a multi-stage cp.async pipeline (16-byte cp.async.cg, the way a GEMV
// would stage tiles): every warp owns kStages stages of `chunk` bytes and streams its own
// contiguous run of chunks (warp w of W in the grid: chunks [w C / W, (w + 1) C / W)), keeping
// kStages - 1 chunks in flight while it reads a word a lane of the oldest one. (The bytes after
// the last whole chunk, fewer than one chunk, are not read: under 0.03% of the smallest size.)
template <int kStages>
__global__ void cp_async_kernel(const uint8_t* __restrict__ src, uint64_t bytes, uint32_t chunk, uint32_t* out) {
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  uint8_t* ring = smem + size_t{warp} * kStages * chunk;
  const uint64_t chunks = bytes / chunk, gw = uint64_t{blockIdx.x} * warps + warp, all = uint64_t{gridDim.x} * warps;
  const uint64_t c0 = gw * chunks / all, c1 = (gw + 1) * chunks / all;
  auto issue = [&](uint64_t c, int stage) {
    if (c < c1) {
      const uint8_t* g = src + c * chunk;
      uint8_t* d = ring + stage * chunk;
      for (uint32_t o = 16 * lane; o < chunk; o += 512)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
                         static_cast<uint32_t>(__cvta_generic_to_shared(d + o))),
                     "l"(g + o)
                     : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  for (int s = 0; s < kStages - 1; ++s) issue(c0 + s, s);
  uint32_t acc = 0;
  int stage = 0;
  for (uint64_t c = c0; c < c1; ++c) {
    asm volatile("cp.async.wait_group %0;" ::"n"(kStages - 2) : "memory");
    __syncwarp();
    acc ^= reinterpret_cast<const uint32_t*>(ring + stage * chunk)[lane];
    __syncwarp();
    issue(c + kStages - 1, (stage + kStages - 1) % kStages);
    stage = (stage + 1) % kStages;
  }
  asm volatile("cp.async.wait_all;" ::: "memory");
  if (acc == 0x9E3779B9u) out[0] = acc;
}

#if WPACK_HAVE_BULK_COPY
// The same per-warp pipeline with bulk copies instead: lane 0 of every warp issues one
// cp.async.bulk per chunk into its own stages, each completing on its own barrier (no producer
// warp, no stage shared between warps).
template <int kStages>
__global__ void bulk_warp_kernel(const uint8_t* __restrict__ src, uint64_t bytes, uint32_t chunk, uint32_t* out) {
  using namespace wpack::gpu::detail;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem) + warp * kStages;
  uint8_t* ring = smem + 128 * ((warps * kStages * 8 + 127) / 128) + size_t{warp} * kStages * chunk;
  const uint64_t chunks = bytes / chunk, gw = uint64_t{blockIdx.x} * warps + warp, all = uint64_t{gridDim.x} * warps;
  const uint64_t c0 = gw * chunks / all, c1 = (gw + 1) * chunks / all;
  if (lane == 0) {
    for (int s = 0; s < kStages; ++s) mbar_init(&full[s], 1);
    mbar_init_fence();
  }
  __syncwarp();
  const uint64_t policy = evict_first_policy();
  auto issue = [&](uint64_t c, int stage) {
    if (lane == 0 && c < c1) {
      mbar_arrive_expect_tx(&full[stage], chunk);
      bulk_load(ring + stage * chunk, src + c * chunk, chunk, &full[stage], policy);
    }
  };
  for (int s = 0; s < kStages - 1; ++s) issue(c0 + s, s);
  uint32_t acc = 0, phase = 0;
  int stage = 0;
  for (uint64_t c = c0; c < c1; ++c) {
    mbar_wait(&full[stage], phase);
    acc ^= reinterpret_cast<const uint32_t*>(ring + stage * chunk)[lane];
    __syncwarp();
    issue(c + kStages - 1, (stage + kStages - 1) % kStages);
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
  if (acc == 0x9E3779B9u) out[0] = acc;
}
#endif

__global__ void empty_kernel(uint32_t* out) {
  if (threadIdx.x == 1023) out[0] = 0;  // never: launched with 32 threads
}

using Kernel = void (*)(const uint4*, uint64_t, uint32_t*);

struct Variant {
  Kernel kernel;
  int unroll;
  bool contiguous;
};

const Variant kVariants[] = {
    {read_kernel<2, false>, 2, false}, {read_kernel<4, false>, 4, false}, {read_kernel<8, false>, 8, false},
    {read_kernel<2, true>, 2, true},   {read_kernel<4, true>, 4, true},   {read_kernel<8, true>, 8, true},
};

}  // namespace read_floor

int main(int argc, char** argv) try {
  using namespace read_floor;
  std::vector<uint64_t> mbs = {34, 50, 67, 101, 121, 134, 177, 235, 352, 470, 1024};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--mb") && i + 1 < argc) {
      mbs.clear();
      for (const char* p = argv[++i];;) {
        char* e = nullptr;
        const unsigned long long v = std::strtoull(p, &e, 10);
        if (e == p || v == 0 || v > 4096) {
          std::fprintf(stderr, "bench_read_floor: --mb takes sizes in MB, 1..4096, separated by commas\n");
          return 1;
        }
        mbs.push_back(v);
        if (*e == '\0') break;
        if (*e != ',') {
          std::fprintf(stderr, "bench_read_floor: --mb takes sizes in MB, 1..4096, separated by commas\n");
          return 1;
        }
        p = e + 1;
      }
    } else {
      std::fprintf(stderr, "usage: bench_read_floor [--mb a,b,...]\n");
      return 1;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  const wpack::gpu::GpuDeviceInfo device = wpack::gpu::current_gpu_device();
  const int sms = device.sm_count;
  const uint64_t max_bytes = *std::max_element(mbs.begin(), mbs.end()) * 1000000ull;
  wpack::gpu::DeviceMemory src(max_bytes), out(max_bytes);  // out: cudaMemcpyAsync's destination
  src.fill(0x5A);  // one byte value: the kernels' conditional stores never happen
  const uint8_t* arena = src.as<uint8_t>();
  wpack::gpu::GpuStream stream;
  const cudaStream_t s = static_cast<cudaStream_t>(stream.get());
  wpack::gpu::GpuTimer timer(stream.get(), wpack::gpu::TimingOptions{});
  // Median µs of launch() on the timer's stream.
  auto median_us = [&](auto launch) {
    return timer
        .time([&](int) {
          launch();
          cuda_ok(cudaGetLastError(), "launch");
        })
        .median_us;
  };
  const double empty_us = median_us([&] { empty_kernel<<<sms, 32, 0, s>>>(out.as<uint32_t>()); });
  std::printf("%s, %d SMs\n", device.name.c_str(), sms);
  std::printf("empty kernel, events around it: %.1f us\n", empty_us);
  std::printf("columns: the fastest configuration of each way to read and its us; plain loads: blocks per SM x\n"
              "threads, loads in flight per thread, and GB/s (bytes read / time); per warp: chunk bytes, blocks per\n"
              "SM x warps, stages; memcpy: cudaMemcpyAsync of the same bytes (reads and writes them); GB/s of the\n"
              "best plain read\n");
  std::printf("%6s | %-14s %6s %5s | %-14s %6s %5s | %-18s %6s | %-18s %6s | %9s | %8s\n", "MB", "grid-stride", "us",
              "GB/s", "contiguous", "us", "GB/s", "cp.async per warp", "us", "bulk per warp", "us", "memcpy us",
              "best GB/s");
  for (const uint64_t mb : mbs) {
    const uint64_t bytes = mb * 1000000ull / 16 * 16;
    const uint64_t n16 = bytes / 16;
    double best[2] = {1e30, 1e30};
    std::string best_cfg[2];
    for (const Variant& v : kVariants)
      for (int blocks_per_sm : {1, 2, 4, 8})
        for (int threads : {256, 512, 1024}) {
          if (blocks_per_sm * threads > 2048) continue;
          const double us = median_us([&] {
            v.kernel<<<sms * blocks_per_sm, threads, 0, s>>>(src.as<uint4>(), n16, out.as<uint32_t>());
          });
          if (us < best[v.contiguous]) {
            best[v.contiguous] = us;
            best_cfg[v.contiguous] =
                std::to_string(blocks_per_sm) + "x" + std::to_string(threads) + " U" + std::to_string(v.unroll);
          }
        }
    // through shared memory, per warp: chunks of a quarter, a half and a whole int4 128 x 128 tile
    // (8704 B, 128-aligned), the rings of an SM within 200 KiB
    double staged_best[2] = {1e30, 1e30};
    std::string staged_cfg[2];
    for (int bulk = 0; bulk < (WPACK_HAVE_BULK_COPY ? 2 : 1); ++bulk)
      for (const uint32_t chunk : {2048u, 4352u, 8704u})
        for (int warps_per_sm : {8, 16, 32})
          for (int blocks_per_sm : {1, 2, 4}) {
            const int warps = warps_per_sm / blocks_per_sm;
            for (int stages : {3, 4, 6}) {
              const size_t smem = size_t{chunk} * stages * warps + 128 * ((warps * stages * 8 + 127) / 128);
              if (warps < 1 || smem * blocks_per_sm > 200 * 1024) continue;
              auto kernel = stages == 3 ? cp_async_kernel<3> : stages == 4 ? cp_async_kernel<4> : cp_async_kernel<6>;
#if WPACK_HAVE_BULK_COPY
              if (bulk)
                kernel = stages == 3 ? bulk_warp_kernel<3> : stages == 4 ? bulk_warp_kernel<4> : bulk_warp_kernel<6>;
#endif
              cuda_ok(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                      "cudaFuncSetAttribute");
              const double us = median_us([&] {
                kernel<<<sms * blocks_per_sm, 32 * warps, smem, s>>>(arena, bytes, chunk, out.as<uint32_t>());
              });
              if (us < staged_best[bulk]) {
                staged_best[bulk] = us;
                staged_cfg[bulk] = std::to_string(chunk) + " " + std::to_string(blocks_per_sm) + "x" +
                                   std::to_string(warps) + "w S" + std::to_string(stages);
              }
            }
          }
    const double copy_us = median_us([&] {
      cuda_ok(cudaMemcpyAsync(out.get(), arena, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    });
    const double floor_us = std::min(best[0], best[1]);
    std::printf("%6llu | %-14s %6.1f %5.0f | %-14s %6.1f %5.0f | %-18s %6.1f | %-18s %6.1f | %9.1f | %8.0f\n",
                static_cast<unsigned long long>(mb), best_cfg[0].c_str(), best[0], bytes / best[0] / 1e3,
                best_cfg[1].c_str(), best[1], bytes / best[1] / 1e3, staged_cfg[0].c_str(), staged_best[0],
                staged_cfg[1].c_str(), staged_best[1], copy_us, bytes / floor_us / 1e3);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_read_floor: %s\n", e.what());
  return 1;
}
