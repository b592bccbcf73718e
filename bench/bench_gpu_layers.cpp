// Llama-3 8B/70B layer shapes on the GPU: the fused decode + GEMV of every scheme beside cuBLAS BF16
// on the dense weights, batch 1 and 16, in one run (issue 5).
//
//   bench_gpu_layers [--shapes NxK,...] [--schemes a,b,...] [--batch 1,16] [--rans] [--runs N]
//                    [--warmup N] [--clip mse|minmax] [--threads N] [--seed S] [--tile RxC]
//
// --tile: the packer's tile shape (default 128x128), for tile-shape experiments; the environment
// variable WPACK_STREAM_STAGES (2..8) sets the streaming kernels' cp.async ring depth.
//
// Shapes (N x K = out x in features, default all): 4096x4096 (8B q/o), 14336x4096 (8B gate/up),
// 4096x14336 (8B down), 8192x8192 (70B q/o), 28672x8192 (70B gate/up), 8192x28672 (70B down).
// Schemes (default all): lossless (BF16, codec rans), int8, int4 (g128), int3 (g128), int2 (g128),
// fp8, fp6, fp5, fp4, nf4, lut4, int4-sp50 (int4 g128 + 50% unstructured magnitude pruning),
// lossless-exp4 (BF16, codec exp4: 4-bit exponent codes, docs/FORMAT.md), int8-sp50, fp8-sp50,
// fp6-sp50, nf4-sp50, fp4-sp50, lut4-sp50, int3-sp50, fp5-sp50 and int2-sp50 (50% pruned).
// Quantized tiles use codec none (the streaming kernels' layout) unless --rans.
//
// Weights: synthetic BF16 N(0, 0.02) with 0.1% outliers x15 (as trained LLM weights have), one
// deterministic seed per shape. Each scheme is packed by the real packer (pack_model) into a
// temporary .wpk under $TMPDIR (or /tmp), and measured by the GPU verify driver (verify/verify_gpu.h,
// the code behind `wpack verify --device cuda`): GPU decode bit-exact with the CPU reference,
// matmul_rel_error against a float64 CPU product, and the timing of verify/gpu_timing.h (CUDA
// events, median of >= 20 runs after warm-up, L2 flushed by a 4x-L2 read before every run, fresh
// random activations per run; cuBLAS cublasGemmEx BF16 -> FP32 on the source weights with the same
// activations). Copy bandwidth: measured once at the start, (read + write) / time. Read floor
// (floor_us): how long a kernel that only reads the row's packed bytes takes, timed the same way
// (gpu::measure_read_floor); %floor = floor_us / kernel_us, the kernel's speed as a share of that.
//
// Prints a row per scheme x shape x batch as it goes, then the targets beside the
// measurements. Exit: 0, 1 when a correctness check failed, 2 for bad options, 4 (SKIP) without
// CUDA in the build or without a device.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "kernels/tile_decode.h"  // gpu_build_has_cuda, gpu_device_count
#include "packer/detail/fp.h"     // float_to_bf16_bits
#include "packer/pack.h"
#include "synthetic_weights.h"  // splitmix64 (tests/)
#include "verify/gpu_timing.h"
#include "verify/verify_gpu.h"

using namespace wpack;

namespace {

struct Shape {
  uint64_t n, k;
  std::string name() const { return std::to_string(n) + "x" + std::to_string(k); }
};
const std::vector<Shape> kAllShapes = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {8192, 8192}, {28672, 8192}, {8192, 28672}};

struct SchemeDef {
  std::string name;   // on the command line and in the tables
  std::string spec;   // parse_policy_spec
  double speedup_target;  // at batch 1 on 28672x8192; 0: none
};
const std::vector<SchemeDef> kAllSchemes = {
    {"lossless", "lossless", 1.25}, {"int8", "int8", 1.8},  {"int4", "int4:g128", 3.5}, {"int3", "int3:g128", 0},
    {"int2", "int2:g128", 0},       {"fp8", "fp8", 1.8},    {"fp6", "fp6", 2.4},        {"fp5", "fp5", 0},
    {"fp4", "fp4", 0},              {"nf4", "nf4", 0},      {"lut4", "lut4", 0},        {"int4-sp50", "int4:g128:prune=0.5", 4.5},
    // lossless with codec exp4 (4-bit exponent codes): the lossless target is rANS's
    {"lossless-exp4", "lossless", 0},
    // 8-bit codes with 50% unstructured pruning (sparse tiles, a byte per occupied code)
    {"int8-sp50", "int8:prune=0.5", 0}, {"fp8-sp50", "fp8:prune=0.5", 0},
    // 50% pruned: sparse tiles on the bulk-copy GEMV, expanded into each scheme's dense codes
    {"fp6-sp50", "fp6:prune=0.5", 0}, {"nf4-sp50", "nf4:prune=0.5", 0}, {"fp4-sp50", "fp4:prune=0.5", 0},
    {"lut4-sp50", "lut4:prune=0.5", 0}, {"int3-sp50", "int3:g128:prune=0.5", 0}, {"fp5-sp50", "fp5:prune=0.5", 0},
    {"int2-sp50", "int2:g128:prune=0.5", 0},
};
// The other targets of issue 5.
constexpr double kBatchRatioTarget = 1.15;      // batch 16 kernel time within 15% of batch 1
constexpr double kCopyTarget8192 = 80.0;        // % of copy bandwidth, 8192x8192
constexpr double kCopyTarget28672 = 90.0;       // % of copy bandwidth, 28672x8192

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "bench_gpu_layers: %s\nusage: bench_gpu_layers [--shapes NxK,...] [--schemes a,b,...] [--batch 1,16] "
                       "[--rans] [--runs N] [--warmup N] [--clip mse|minmax] [--threads N] [--seed S] [--tile RxC]\nschemes:",
               why.c_str());
  for (const auto& s : kAllSchemes) std::fprintf(stderr, " %s", s.name.c_str());
  std::fprintf(stderr, "\n");
  std::exit(2);
}

// n BF16 weights N(0, 0.02), 0.1% of them x15. Chunks of 64K elements with their own seed, so the
// bytes do not depend on the thread count.
std::vector<uint8_t> synthetic_weights(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> out(2 * n);
  constexpr uint64_t kChunk = 1 << 16;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    uint64_t state = seed * 0x100000001B3ull + static_cast<uint64_t>(c);
    const uint64_t begin = static_cast<uint64_t>(c) * kChunk, end = std::min(n, begin + kChunk);
    for (uint64_t i = begin; i < end; ++i) {
      const double u1 = (static_cast<double>(test::splitmix64(state) >> 11) + 0.5) * 0x1.0p-53;
      const double u2 = (static_cast<double>(test::splitmix64(state) >> 11) + 0.5) * 0x1.0p-53;
      float v = static_cast<float>(0.02 * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
      if ((test::splitmix64(state) % 1000) == 0) v *= 15.0f;
      const uint16_t b = detail::float_to_bf16_bits(v);
      std::memcpy(out.data() + 2 * i, &b, 2);
    }
  }
  return out;
}

struct Row {
  std::string scheme, shape;
  uint32_t batch = 0;
  double bits_per_weight = 0, packed_mb = 0;
  GpuBatchCheck b;
  double floor_us = 0;  // the read floor of the row's packed bytes
  bool exact = false;
  std::string note;
};

std::string cell(double v, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

const Row* find_row(const std::vector<Row>& rows, const std::string& scheme, const std::string& shape, uint32_t batch) {
  for (const auto& r : rows)
    if (r.scheme == scheme && r.shape == shape && r.batch == batch && r.b.timed) return &r;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<Shape> shapes = kAllShapes;
  std::vector<SchemeDef> schemes = kAllSchemes;
  std::vector<uint32_t> batches = {1, 16};
  bool rans = false;
  std::string clip = "mse";
  int threads = 0;
  uint64_t seed = 1;
  uint32_t tile_rows = 128, tile_cols = 128;
  gpu::TimingOptions timing;
  std::string command = argv[0];
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    command += " " + a;
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      command += std::string(" ") + argv[i + 1];
      return argv[++i];
    };
    auto number = [&](const std::string& text) -> long {
      char* end = nullptr;
      const long v = std::strtol(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0') usage(a + ": not a number: '" + text + "'");
      return v;
    };
    if (a == "--shapes") {
      shapes.clear();
      for (const auto& s : split(value())) {
        unsigned long long n = 0, k = 0;
        char x = 0, extra = 0;
        if (std::sscanf(s.c_str(), "%llu%c%llu%c", &n, &x, &k, &extra) != 3 || (x != 'x' && x != 'X') || n == 0 || k == 0)
          usage("bad shape '" + s + "' (NxK)");
        shapes.push_back({n, k});
      }
    } else if (a == "--schemes") {
      schemes.clear();
      for (const auto& s : split(value())) {
        auto it = std::find_if(kAllSchemes.begin(), kAllSchemes.end(), [&](const SchemeDef& d) { return d.name == s; });
        if (it == kAllSchemes.end()) usage("unknown scheme '" + s + "'");
        schemes.push_back(*it);
      }
    } else if (a == "--batch") {
      batches.clear();
      for (const auto& s : split(value())) {
        const long b = number(s);
        if (b < 1 || b > static_cast<long>(kMaxGemvBatch)) usage("batch outside 1..64: " + s);
        batches.push_back(static_cast<uint32_t>(b));
      }
    } else if (a == "--rans") {
      rans = true;
    } else if (a == "--runs") {
      timing.timed_runs = static_cast<int>(number(value()));
    } else if (a == "--warmup") {
      timing.warmup_runs = static_cast<int>(number(value()));
    } else if (a == "--clip") {
      clip = value();
      if (clip != "mse" && clip != "minmax") usage("--clip mse|minmax");
    } else if (a == "--threads") {
      threads = static_cast<int>(number(value()));
    } else if (a == "--tile") {
      const std::string t = value();
      unsigned rows = 0, cols = 0;
      char x = 0, extra = 0;
      if (std::sscanf(t.c_str(), "%u%c%u%c", &rows, &x, &cols, &extra) != 3 || (x != 'x' && x != 'X') || rows == 0 ||
          cols == 0 || uint64_t{rows} * cols > kWpkMaxTileElements)
        usage("bad tile '" + t + "' (RxC, at most 2^24 elements)");
      tile_rows = rows, tile_cols = cols;
    } else if (a == "--seed") {
      seed = static_cast<uint64_t>(number(value()));
    } else {
      usage("unknown option '" + a + "'");
    }
  }
  // What verify_gpu would refuse (a batch given twice, too few runs) is refused now, before packing.
  GpuVerifyOptions verify_options;
  verify_options.batches = batches;
  verify_options.threads = threads;
  verify_options.timing_options = timing;
  verify_options.seed = seed;
  try {
    validate_gpu_verify_options(verify_options);
  } catch (const Error& e) {
    usage(e.what());
  }
  if (threads > 0) omp_set_num_threads(threads);

  if (!gpu::gpu_build_has_cuda()) {
    std::printf("SKIP: this wpack build has no CUDA\n");
    return 4;
  }
  std::string why;
  if (gpu::gpu_device_count(&why) <= 0) {
    std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
    return 4;
  }
  const gpu::GpuDeviceInfo device = gpu::current_gpu_device();
  gpu::GpuStream floor_stream;  // the copy and read-floor measurements
  const gpu::CopyBandwidth copy = gpu::measure_copy_bandwidth(floor_stream.get());
  std::map<uint64_t, double> floors;  // packed bytes -> read floor µs
  auto read_floor_us = [&](uint64_t bytes) {
    auto it = floors.find(bytes);
    if (it == floors.end())
      it = floors.emplace(bytes, gpu::measure_read_floor(floor_stream.get(), bytes).median_us).first;
    return it->second;
  };
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::printf("command: %s\ndate: %s\ndevice: %s, %d SMs, L2 %.0f MB, %.1f GB, CUDA runtime %d, driver %d\n", command.c_str(),
              date, device.name.c_str(), device.sm_count, device.l2_bytes / 1e6, device.memory_bytes / 1e9,
              device.runtime_version, device.driver_version);
  std::printf("device-to-device copy: %.0f GB/s ((read + write) / time, %.0f MiB, median of %d)\n", copy.gb_per_s,
              copy.bytes / 1048576.0, gpu::kMinTimedRuns);
  if (const std::string why = gpu::cublas_load_error(); !why.empty())
    std::printf("cuBLAS baseline not timed (cuBLAS: %s): no cuBLAS_us or speedup\n", why.c_str());
  std::printf("timing: CUDA events, median of %d runs after %d warm-up, L2 flushed (read of 4x L2) before each run, fresh "
              "activations per run; quantized tiles: codec %s, clip %s\n\n",
              timing.timed_runs, timing.warmup_runs, rans ? "rans" : "none", clip.c_str());

  // The source: one BF16 tensor per shape.
  MemorySource source("synthetic");
  for (size_t s = 0; s < shapes.size(); ++s)
    source.add(std::string("w").append(shapes[s].name()), DType::BF16, {shapes[s].n, shapes[s].k},
               synthetic_weights(shapes[s].n * shapes[s].k, seed * 1000 + s));

  const char* tmpdir = std::getenv("TMPDIR");
  const std::string dir = tmpdir && *tmpdir ? tmpdir : "/tmp";
  std::vector<Row> rows;
  bool failed = false;
  std::printf("%-13s %-12s %5s %6s %9s %10s %10s %8s %7s %6s %8s %6s %10s %5s  %s\n", "scheme", "shape", "batch",
              "bits/w", "packed_MB", "kernel_us", "cuBLAS_us", "speedup", "GB/s", "%copy", "floor_us", "%floor",
              "matmul_err", "exact", "note");
  for (const SchemeDef& scheme : schemes) {
    PackOptions options;
    TensorPolicy base;
    base.spec.clip = clip == "mse" ? Clip::kMse : Clip::kMinMax;
    options.policy = parse_policy_spec(scheme.spec, base);
    options.codec = scheme.name == "lossless-exp4"          ? Codec::kExp4
                    : (scheme.name == "lossless" || rans) ? Codec::kRans
                                                          : Codec::kNone;
    options.overwrite = true;
    options.tile_rows = tile_rows;
    options.tile_cols = tile_cols;
    options.threads = threads;
    const std::string path = dir + "/bench_gpu_layers." + std::to_string(::getpid()) + "." + scheme.name + ".wpk";
    const auto t0 = std::chrono::steady_clock::now();
    pack_model(source, path, options);
    const double pack_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    GpuVerifyReport report;
    try {
      auto reader = WpkReader::open(path);
      GpuVerifyOptions verify = verify_options;
      verify.copy_gb_per_s = copy.gb_per_s;
      report = verify_gpu(*reader, &source, verify);
    } catch (...) {
      std::remove(path.c_str());
      throw;
    }
    std::remove(path.c_str());
    for (const GpuTensorCheck& t : report.tensors) {
      const std::string shape = t.name.substr(1);
      std::string note = !t.error.empty() ? "FAILED: " + t.error : t.skipped;
      failed |= !t.error.empty();
      if (t.batches.empty()) {
        Row r;
        r.scheme = scheme.name;
        r.shape = shape;
        r.bits_per_weight = t.bits_per_weight;
        r.packed_mb = t.packed_bytes / 1e6;
        r.note = note;
        rows.push_back(r);
        std::printf("%-13s %-12s %5s %6.2f %9.1f %10s %10s %8s %7s %6s %8s %6s %10s %5s  %s\n", scheme.name.c_str(),
                    shape.c_str(), "-", t.bits_per_weight, t.packed_bytes / 1e6, "-", "-", "-", "-", "-", "-", "-", "-",
                    t.gpu_checked ? "yes" : "-", note.c_str());
        continue;
      }
      for (const GpuBatchCheck& b : t.batches) {
        Row r;
        r.scheme = scheme.name;
        r.shape = shape;
        r.batch = b.batch;
        r.bits_per_weight = t.bits_per_weight;
        r.packed_mb = t.packed_bytes / 1e6;
        r.b = b;
        r.exact = t.decode_bit_exact;
        r.note = !note.empty() ? note : !b.skipped.empty() ? b.skipped : b.kernel_path;  // which kernel ran
        if (b.timed && t.packed_bytes > 0) r.floor_us = read_floor_us(t.packed_bytes);
        rows.push_back(r);
        const bool floor = r.floor_us > 0 && b.kernel.median_us > 0;
        std::printf("%-13s %-12s %5u %6.2f %9.1f %10s %10s %8s %7s %6s %8s %6s %10s %5s  %s\n", scheme.name.c_str(),
                    shape.c_str(), b.batch, t.bits_per_weight, t.packed_bytes / 1e6,
                    b.timed ? cell(b.kernel.median_us, "%.1f").c_str() : "-",
                    b.baseline_timed ? cell(b.cublas.median_us, "%.1f").c_str() : "-",
                    b.baseline_timed ? cell(b.speedup, "%.2fx").c_str() : "-",
                    b.timed ? cell(b.packed_gb_per_s, "%.0f").c_str() : "-",
                    b.timed ? cell(b.copy_bw_percent, "%.1f").c_str() : "-",
                    floor ? cell(r.floor_us, "%.1f").c_str() : "-",
                    floor ? cell(100.0 * r.floor_us / b.kernel.median_us, "%.1f").c_str() : "-",
                    b.ran ? cell(b.matmul_rel_error, "%.1e").c_str() : "-", t.decode_bit_exact ? "yes" : "no",
                    r.note.c_str());
      }
    }
    std::printf("%-13s packed in %.1f s\n", scheme.name.c_str(), pack_s);
    std::fflush(stdout);
  }

  // The targets beside the measurements.
  std::printf("\ntargets (issue 5, H200): speedup vs cuBLAS BF16 at batch 1 on 28672x8192; batch 16 kernel time <= %.2fx "
              "batch 1 (worst shape); packed bytes >= %.0f%% / %.0f%% of copy bandwidth on 8192x8192 / 28672x8192 (batch 1); "
              "matmul_rel_error <= %.0e\n",
              kBatchRatioTarget, kCopyTarget8192, kCopyTarget28672, kMatmulRelTolerance);
  std::printf("%-13s %16s %8s %10s %12s %14s %16s %6s\n", "scheme", "speedup 28672x8K", "target", "b16/b1 max", "%copy 8192^2",
              "%copy 28672x8K", "max matmul_err", "met");
  for (const SchemeDef& scheme : schemes) {
    std::vector<std::string> misses;
    const Row* big = find_row(rows, scheme.name, "28672x8192", 1);
    const Row* square = find_row(rows, scheme.name, "8192x8192", 1);
    const bool timed_baseline = big && big->b.baseline_timed;  // no cuBLAS: no speedup
    std::string speed = timed_baseline ? cell(big->b.speedup, "%.2fx") : "-";
    std::string target = scheme.speedup_target > 0 ? cell(scheme.speedup_target, ">=%.2fx") : "-";
    if (timed_baseline && scheme.speedup_target > 0 && big->b.speedup < scheme.speedup_target) misses.push_back("speedup");
    double ratio = 0;
    bool have_ratio = false;
    for (const Shape& s : shapes) {
      const Row* b1 = find_row(rows, scheme.name, s.name(), 1);
      const Row* b16 = find_row(rows, scheme.name, s.name(), 16);
      if (b1 && b16 && b1->b.kernel.median_us > 0) {
        ratio = std::max(ratio, b16->b.kernel.median_us / b1->b.kernel.median_us);
        have_ratio = true;
      }
    }
    if (have_ratio && ratio > kBatchRatioTarget) misses.push_back("batch16");
    if (square && square->b.copy_bw_percent < kCopyTarget8192) misses.push_back("bw 8192^2");
    if (big && big->b.copy_bw_percent < kCopyTarget28672) misses.push_back("bw 28672x8192");
    double worst = 0;
    bool any = false;
    for (const Row& r : rows)
      if (r.scheme == scheme.name && r.b.ran) {
        worst = std::max(worst, std::isnan(r.b.matmul_rel_error) ? INFINITY : r.b.matmul_rel_error);
        any = true;
      }
    if (any && !(worst <= kMatmulRelTolerance)) misses.push_back("matmul_err");
    const bool measured = big || square || have_ratio || any;
    std::string met = !measured ? "-" : misses.empty() ? "yes" : "NO:";
    for (const auto& m : misses) met += " " + m;
    std::printf("%-13s %16s %8s %10s %12s %14s %16s %s\n", scheme.name.c_str(), speed.c_str(), target.c_str(),
                have_ratio ? cell(ratio, "%.2f").c_str() : "-", square ? cell(square->b.copy_bw_percent, "%.1f%%").c_str() : "-",
                big ? cell(big->b.copy_bw_percent, "%.1f%%").c_str() : "-", any ? cell(worst, "%.1e").c_str() : "-",
                met.c_str());
  }
  return failed ? 1 : 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_gpu_layers: %s\n", e.what());
  return 1;
}
