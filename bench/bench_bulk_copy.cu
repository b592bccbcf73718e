// The ceiling of the bulk-copy GEMV's memory pipeline: the same ring as kernels/quant_gemv_tma.cu
// (a persistent grid, block b streams chunks [b C / grid, (b + 1) C / grid) of one buffer, one
// producer lane waits on empty[s] and issues one cp.async.bulk per chunk into stage s, consumer
// units take chunks u, u + units, ... and release the stage at once, or after holding it for a
// while), with no arithmetic: what DRAM delivers to shared memory for a chunk size, its alignment
// in the buffer and in the ring, ring depth, block count and the time a consumer holds a stage (a
// GEMV's consumer holds its stage while it multiplies, so that stage is not in flight). Then the
// int4 batch-1 GEMV's ring with what its consumers add, one at a time (reading the whole stage, a
// second copy per stage for x, the SM's issue slots busy). One row per configuration: GB/s of the
// streamed chunks (timed by the GpuTimer that times the GEMVs, verify/gpu_timing.h: CUDA events,
// an L2-flushing read before each run, median of 20) and, measured in the kernel with the global
// timer over the timed runs, how long a consumer held a stage and waited for one to fill, and how
// long the producer waited for an empty one (ns per stage). --mib sets the buffer: 1024 (17x the
// L2) for the steady state; the size of one layer's packed weights (34 or 123 MiB) to include a
// launch's start and end.
//
//   build/bench/bench_bulk_copy [--mib 1024] [--hold-ns 0,1000,2000,3000]
//
// The sizes: 8592 B is an int4 128 x 128 g128 tile (16-aligned), 16400 an int8/fp8 one, 12304 fp6;
// 8192, 8704 (8592 rounded up to 256) and 16384 tell a size effect from an alignment one, and the
// tile sizes at 32..512-byte aligned addresses (src_al; stg_al: in the ring) tell which alignment.
// "busy" spins on FMAs between reads of the timer, so it holds a stage longer than asked (the
// held column says by how much).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "formats/error.h"
#include "kernels/detail/align.h"
#include "kernels/detail/bulk_copy.cuh"
#include "kernels/detail/ring_plan.h"  // the GEMV's ring depth rule and budget
#include "verify/gpu_timing.h"         // GpuTimer, DeviceMemory, GpuStream

namespace bulk_bench {

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw wpack::Error(wpack::ErrorCode::kIo, std::string(what) + ": " + cudaGetErrorString(e));
}

#if WPACK_HAVE_BULK_COPY
using wpack::gpu::detail::bulk_load;
using wpack::gpu::detail::evict_first_policy;
using wpack::gpu::detail::mbar_arrive;
using wpack::gpu::detail::mbar_arrive_expect_tx;
using wpack::gpu::detail::mbar_init;
using wpack::gpu::detail::mbar_init_fence;
using wpack::gpu::detail::mbar_wait;

constexpr uint32_t kMaxStages = wpack::gpu::detail::kMaxRingStages;

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// What a consumer does with a stage before it releases it, and what else a stage holds.
struct Work {
  uint32_t hold_ns = 0;   // spin that long (the global timer)
  bool busy = false;      // spin on dependent FMAs (the SM's issue slots busy, as a GEMV's are), not idly
  bool read_all = false;  // read the whole stage from shared memory (16 bytes a lane a load), not a word a lane
  uint32_t x_bytes = 0;   // a second copy per stage of that many bytes from a 1 MiB buffer that stays in
                          // L2 (a GEMV's x slice), completing on the same barrier
};

constexpr uint32_t kXBufferBytes = 1u << 20;

// units consumer warps (one per unit), then 1 producer warp. src_stride: bytes from one chunk's
// start in the buffer to the next (chunk_bytes, or more: chunks at aligned addresses);
// stage_stride: the same in the ring. stats, summed over warps and over the launches since the
// host cleared them: [0] ns consumers held stages (measured), [1] ns consumers waited for a full
// stage, [2] stages consumed, [3] ns producers waited for an empty stage; [4] keeps the reads.
__global__ void ring_kernel(const uint8_t* __restrict__ src, const uint8_t* __restrict__ xsrc, uint64_t chunks,
                            uint32_t chunk_bytes, uint32_t src_stride, uint32_t stage_stride, uint32_t stages,
                            uint32_t units, Work work, unsigned long long* stats) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem);
  uint64_t* empty = full + kMaxStages;
  uint8_t* ring = smem + 2 * 8 * kMaxStages;
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const uint64_t c_begin = blockIdx.x * chunks / gridDim.x, c_end = (blockIdx.x + 1ull) * chunks / gridDim.x;
  if (threadIdx.x == 0) {
    for (uint32_t s = 0; s < stages; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], 1);
    mbar_init_fence();
  }
  __syncthreads();
  const uint32_t stage_bytes = chunk_bytes + work.x_bytes;
  if (warp == units) {
    if (lane != 0) return;
    const uint64_t policy = evict_first_policy();
    const uint32_t x_slots = work.x_bytes ? kXBufferBytes / work.x_bytes : 1;
    uint32_t s = 0, phase = 0;
    uint64_t waited = 0;
    for (uint64_t c = c_begin; c < c_end; ++c) {
      const uint64_t w0 = global_ns();
      mbar_wait(&empty[s], phase ^ 1);
      waited += global_ns() - w0;
      mbar_arrive_expect_tx(&full[s], stage_bytes);
      bulk_load(ring + s * stage_stride, src + c * src_stride, chunk_bytes, &full[s], policy);
      if (work.x_bytes)
        bulk_load(ring + s * stage_stride + chunk_bytes, xsrc + (c % x_slots) * work.x_bytes, work.x_bytes, &full[s],
                  policy);
      if (++s == stages) s = 0, phase ^= 1;
    }
    atomicAdd(&stats[3], static_cast<unsigned long long>(waited));
    return;
  }
  uint32_t acc = 0, s = warp, phase = 0;
  uint64_t held = 0, waited = 0, consumed = 0;
  while (s >= stages) s -= stages, phase ^= 1;
  for (uint64_t c = c_begin + warp; c < c_end; c += units) {
    const uint64_t w0 = global_ns();
    mbar_wait(&full[s], phase);
    const uint64_t h0 = global_ns();
    waited += h0 - w0;
    const uint32_t* stage = reinterpret_cast<const uint32_t*>(ring + s * stage_stride);
    if (work.read_all) {
      for (uint32_t i = 4 * lane; i + 4 <= stage_bytes / 4; i += 128) {
        const uint4 v = *reinterpret_cast<const uint4*>(stage + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
      }
    } else {
      acc ^= stage[lane];
    }
    if (work.hold_ns) {
      const uint64_t t0 = global_ns();
      float f = __uint_as_float(acc | 0x3F800000u);  // in [1, 2): the chain neither overflows nor vanishes
      while (global_ns() - t0 < work.hold_ns)
        if (work.busy)
#pragma unroll 1
          for (int k = 0; k < 64; ++k) f = fmaf(f, 0.999f, 0.001f);
      acc ^= __float_as_uint(f) & 1u;
    }
    __syncwarp();
    held += global_ns() - h0;
    ++consumed;
    if (lane == 0) mbar_arrive(&empty[s]);
    s += units;
    while (s >= stages) s -= stages, phase ^= 1;
  }
  if (lane == 0) {
    atomicAdd(&stats[0], static_cast<unsigned long long>(held));
    atomicAdd(&stats[1], static_cast<unsigned long long>(waited));
    atomicAdd(&stats[2], static_cast<unsigned long long>(consumed));
  }
  if (acc == 0x9E3779B9u) stats[4] = acc;  // keeps the reads
}
#endif

}  // namespace bulk_bench

int main(int argc, char** argv) try {
  using namespace bulk_bench;
  uint64_t mib = 1024;
  std::vector<uint32_t> holds = {0, 1000, 2000, 3000};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--mib") && i + 1 < argc) {
      mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (!std::strcmp(argv[i], "--hold-ns") && i + 1 < argc) {
      holds.clear();
      for (const char* p = argv[++i];;) {
        char* end = nullptr;
        const unsigned long v = std::strtoul(p, &end, 10);
        if (end == p || v > 1000000 || (*end && *end != ',')) {
          std::fprintf(stderr, "bench_bulk_copy: --hold-ns wants a comma-separated list of ns (<= 1000000)\n");
          return 1;
        }
        holds.push_back(static_cast<uint32_t>(v));
        if (!*end) break;
        p = end + 1;
      }
    } else {
      std::fprintf(stderr, "usage: bench_bulk_copy [--mib N] [--hold-ns a,b,...]\n");
      return 1;
    }
  }
  if (mib == 0) {
    std::fprintf(stderr, "bench_bulk_copy: --mib must be positive\n");
    return 1;
  }
#if !WPACK_HAVE_BULK_COPY
  std::printf("SKIP: built without bulk copies (CUDA < 12)\n");
  return 0;
#else
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  if (prop.major < 9) {
    std::printf("SKIP: %s has no bulk-copy engine (compute capability %d.%d)\n", prop.name, prop.major, prop.minor);
    return 0;
  }
  const uint64_t bytes = mib << 20;
  wpack::gpu::DeviceMemory src(bytes), xsrc(kXBufferBytes), stats(5 * sizeof(unsigned long long));
  xsrc.fill(0x3C);
  src.fill(0x5A);  // contents do not matter to a copy; not zeros all the same
  cuda_ok(cudaFuncSetAttribute(ring_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(prop.sharedMemPerBlockOptin)),
          "cudaFuncSetAttribute");
  wpack::gpu::GpuStream stream;
  const cudaStream_t s = static_cast<cudaStream_t>(stream.get());
  wpack::gpu::GpuTimer timer(stream.get(), wpack::gpu::TimingOptions{});
  const int last_warmup = timer.options().warmup_runs - 1;
  std::printf("%s, %d SMs, %llu MiB read per run\n", prop.name, prop.multiProcessorCount,
              static_cast<unsigned long long>(mib));
  std::printf("columns: src_al/stg_al: alignment of the chunks in the buffer / of the stages in the ring (16: packed);\n"
              "held/waited: ns a consumer held a stage / waited for it to fill, per stage; p_wait: ns the producer\n"
              "waited for an empty stage, per stage\n");
  std::printf("%8s %6s %6s %6s %5s %6s %8s %5s %5s %5s %7s %7s %7s %8s\n", "chunk_B", "src_al", "stg_al", "blocks",
              "units", "stages", "hold_ns", "spin", "read", "x_B", "held", "waited", "p_wait", "GB/s");
  struct Config {
    uint32_t chunk, blocks_per_sm, units;
    Work work;
    uint32_t src_align = 16, stage_align = 16;
  };
  std::vector<Config> configs;
  // the ring alone, consumers releasing at once
  for (const auto& [chunk, blocks, units] : std::vector<std::array<uint32_t, 3>>{
           {4096, 2, 4}, {8192, 2, 4}, {8592, 2, 4}, {8704, 2, 4}, {8592, 2, 2}, {8592, 1, 4}, {8592, 1, 8},
           {8592, 3, 4}, {12304, 2, 4}, {16384, 2, 2}, {16400, 2, 2}, {16400, 2, 4}, {16400, 1, 4}, {32784, 2, 2},
           {32784, 1, 4}, {65552, 1, 2}})
    configs.push_back({chunk, blocks, units, Work{}});
  // the tile sizes at aligned addresses: in the buffer (the GPU upload's tile offsets), in the ring
  for (const auto& [chunk, units] : std::vector<std::array<uint32_t, 2>>{{8592, 4}, {12304, 4}, {16400, 2}}) {
    for (uint32_t src_align : {32u, 64u, 128u, 256u, 512u}) configs.push_back({chunk, 2, units, Work{}, src_align, 16});
    configs.push_back({chunk, 2, units, Work{}, 16, 128});
    configs.push_back({chunk, 2, units, Work{}, 256, 128});
  }
  // the GEMV's rings: int4 128 x 128 tiles (8592 B) with 4 or 2 units per block, int8/fp8 (16400 B)
  // with 2, fp6 (12304 B) with 4; each consumer unit holding its stage hold_ns, reading one word
  // a lane of it or all of it
  for (uint32_t h : holds)
    for (bool read_all : {false, true})
      if (h || read_all)
        for (const auto& [chunk, units] : std::vector<std::array<uint32_t, 2>>{{8592, 4}, {8592, 2}, {16400, 2}, {12304, 4}})
          configs.push_back({chunk, 2, units, Work{h, false, read_all, 0}});
  // the int4 batch-1 GEMV's ring (8592 B + a 256 B x slice, 2 blocks of 4 units) with what its
  // consumers add one at a time: whole-stage reads, the x copy, a busy SM; then all three at the
  // hold times around its measured 3.2 us per tile and unit; then at aligned tile addresses
  for (uint32_t src_align : {16u, 256u})
    for (const Work& w : {Work{2000, false, false, 0}, Work{2000, false, true, 0}, Work{2000, false, false, 256},
                          Work{2000, true, false, 0}, Work{2000, true, true, 256}, Work{2500, true, true, 256},
                          Work{3000, true, true, 256}})
      configs.push_back({8592, 2, 4, w, src_align, 128});
  for (const Config& c : configs) {
    // the GEMV's plan (kernels/quant_gemv_tma.cu): its ring budget over the blocks, a multiple of the units
    const uint32_t stage_bytes = c.chunk + c.work.x_bytes;
    const uint32_t src_stride = wpack::gpu::detail::align_up(c.chunk, c.src_align);
    const uint32_t stage_stride = wpack::gpu::detail::align_up(stage_bytes, c.stage_align);
    const uint32_t stages = wpack::gpu::detail::ring_stages(wpack::gpu::detail::kRingBytesPerSm / c.blocks_per_sm,
                                                            stage_stride, c.units, kMaxStages);
    const size_t smem = 2 * 8 * kMaxStages + size_t{stages} * stage_stride;
    if (smem > prop.sharedMemPerBlockOptin) continue;
    const uint64_t chunks = bytes / src_stride;
    const uint32_t grid = prop.multiProcessorCount * c.blocks_per_sm;
    auto launch = [&](int call) {
      ring_kernel<<<grid, 32 * (c.units + 1), smem, s>>>(src.as<uint8_t>(), xsrc.as<uint8_t>(), chunks, c.chunk,
                                                          src_stride, stage_stride, stages, c.units, c.work,
                                                          stats.as<unsigned long long>());
      cuda_ok(cudaGetLastError(), "ring_kernel");
      // after the last warm-up run (untimed): the stats are the timed runs'
      if (call == last_warmup) cuda_ok(cudaMemsetAsync(stats.get(), 0, stats.bytes(), s), "cudaMemsetAsync");
    };
    const double median_ms = 1e-3 * timer.time(launch).median_us;
    unsigned long long st[5];
    stats.download(st, sizeof st);
    const double n = st[2] ? static_cast<double>(st[2]) : 1.0;
    // GB/s of the streamed chunks (the x copies, from L2, and the gaps between aligned chunks are not counted)
    const double gbs = static_cast<double>(chunks) * c.chunk / (median_ms * 1e-3) / 1e9;
    std::printf("%8u %6u %6u %6u %5u %6u %8u %5s %5s %5u %7.0f %7.0f %7.0f %8.0f\n", c.chunk, c.src_align,
                c.stage_align, c.blocks_per_sm, c.units, stages, c.work.hold_ns,
                c.work.hold_ns ? (c.work.busy ? "busy" : "idle") : "-", c.work.read_all ? "all" : "word",
                c.work.x_bytes, st[0] / n, st[1] / n, st[3] / n, gbs);
  }
  return 0;
#endif
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_bulk_copy: %s\n", e.what());
  return 1;
}
