// The GPU verify driver (verify/verify_gpu.h), its timing and cuBLAS helpers (verify/gpu_timing.h)
// and `wpack verify --device cuda` on a GPU. main: tests/catch_gpu_main.cpp (SKIP, exit 4, without
// CUDA or a device).
//
// The lossy cases expect success: they need the lossy GPU kernels (GpuTensor upload/decode/gemv of
// quantized tensors) and gemv at batch 16.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "kernels/tile_decode.h"  // gpu_build_has_warp_tiles, gpu_ring_gemv_name
#include "packer/detail/fp.h"  // bf16_to_float, float_to_bf16_bits
#include "packer/pack.h"
#include "test_util.h"
#include "verify/gpu_timing.h"
#include "verify/verify.h"
#include "verify/verify_gpu.h"

#if defined(WPACK_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

#if defined(WPACK_HAVE_CUDA)
namespace {

using namespace wpack;
using json = nlohmann::json;

struct Spec {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::string policy = "lossless";  // parse_policy_spec text, e.g. "int4:g128", "lossless:codec=zstd"
};

struct Packed {
  test::TempDir dir;
  std::string path;
  MemorySource source{"source"};
  std::unique_ptr<WpkReader> reader;
};

std::vector<uint8_t> gaussian(DType dtype, uint64_t n, uint64_t seed) {
  switch (dtype) {
    case DType::BF16: return test::gaussian_bf16(n, 0.02f, seed);
    case DType::F16: return test::gaussian_f16(n, 0.02f, seed);
    default: return test::gaussian_f32(n, 0.02f, seed);
  }
}

// Packs the specs (codec rans unless a spec's policy says otherwise) with one override per tensor.
std::unique_ptr<Packed> pack(const std::vector<Spec>& specs, Codec codec = Codec::kRans, uint32_t tile_rows = 128,
                             uint32_t tile_cols = 128) {
  auto p = std::make_unique<Packed>();
  PackOptions options;
  options.codec = codec;
  options.tile_rows = tile_rows;
  options.tile_cols = tile_cols;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t n = TensorInfo{specs[i].name, specs[i].dtype, specs[i].shape}.num_elements();
    p->source.add(specs[i].name, specs[i].dtype, specs[i].shape, gaussian(specs[i].dtype, n, 100 + i));
    options.overrides.push_back({"^" + specs[i].name + "$", parse_policy_spec(specs[i].policy, TensorPolicy{})});
  }
  p->path = p->dir.file("t.wpk");
  pack_model(p->source, p->path, options);
  p->reader = WpkReader::open(p->path);
  return p;
}

const GpuTensorCheck& find(const GpuVerifyReport& r, const std::string& name) {
  for (const auto& t : r.tensors)
    if (t.name == name) return t;
  FAIL("tensor " << name << " not in the report");
  return r.tensors.front();
}

GpuVerifyOptions options_with(std::vector<uint32_t> batches, bool timing = true) {
  GpuVerifyOptions o;
  o.batches = std::move(batches);
  o.timing = timing;
  return o;
}

// A matrix tensor the GPU checked: bit-exact decode, every batch run within tolerance and timed.
void require_checked_matrix(const GpuTensorCheck& t, const std::vector<uint32_t>& batches, bool timed) {
  INFO("tensor " << t.name << " (" << t.scheme_label << "): error '" << t.error << "', skipped '" << t.skipped << "'");
  REQUIRE(t.error.empty());
  REQUIRE(t.skipped.empty());
  REQUIRE(t.gpu_checked);
  REQUIRE(t.decode_bit_exact);
  REQUIRE(t.decode_mismatches == 0);
  REQUIRE(t.batches.size() == batches.size());
  for (size_t i = 0; i < batches.size(); ++i) {
    const GpuBatchCheck& b = t.batches[i];
    INFO("batch " << b.batch << ": skipped '" << b.skipped << "', matmul_rel_error " << b.matmul_rel_error);
    CHECK(b.batch == batches[i]);
    REQUIRE(b.ran);
    CHECK(!b.kernel_path.empty());
    CHECK(b.matmul_rel_error <= kMatmulRelTolerance);
    CHECK(b.matmul_output_error <= kMatmulRelTolerance);  // every output within tolerance of its |W||x|
    CHECK(b.timed == timed);
    if (!timed) continue;
    CHECK(b.kernel.runs == gpu::kMinTimedRuns);
    CHECK(b.kernel.median_us > 0);
    CHECK(b.kernel.min_us <= b.kernel.median_us);
    CHECK(b.kernel.median_us <= b.kernel.max_us);
    CHECK(b.cublas.median_us > 0);
    CHECK(b.speedup == Approx(b.cublas.median_us / b.kernel.median_us));
    CHECK(b.packed_gb_per_s == Approx(double(t.packed_bytes) / (b.kernel.median_us * 1e3)));
    CHECK(b.copy_bw_percent > 0);
    CHECK(std::isfinite(b.cublas_rel_error));
  }
}

}  // namespace

TEST_CASE("gpu timing: random activations are non-zero and deterministic") {
  const auto a = gpu::random_activations_bf16(100000, 7), b = gpu::random_activations_bf16(100000, 7);
  const auto c = gpu::random_activations_bf16(100000, 8);
  REQUIRE(a == b);
  REQUIRE(a != c);
  double sum = 0, sum2 = 0;
  for (uint16_t v : a) {
    REQUIRE((v & 0x7FFF) != 0);
    const double f = detail::bf16_to_float(v);
    REQUIRE(std::isfinite(f));
    sum += f;
    sum2 += f * f;
  }
  CHECK(std::abs(sum / a.size()) < 0.02);
  CHECK(std::abs(sum2 / a.size() - 1.0) < 0.03);
}

TEST_CASE("gpu timing: copy bandwidth, timer statistics and options") {
  gpu::GpuStream stream;
  const gpu::CopyBandwidth copy = gpu::measure_copy_bandwidth(stream.get(), uint64_t{256} << 20);
  INFO("copy " << copy.gb_per_s << " GB/s");
  CHECK(copy.bytes == uint64_t{256} << 20);
  CHECK(copy.median_us > 0);
  CHECK(copy.gb_per_s > 100);     // any datacenter GPU
  CHECK(copy.gb_per_s < 100000);  // (read + write) / time, not something absurd

  gpu::TimingOptions options;
  gpu::GpuTimer timer(stream.get(), options);
  CHECK(timer.calls() == options.warmup_runs + options.timed_runs);
  CHECK(timer.options().l2_flush_bytes >= 2 * gpu::current_gpu_device().l2_bytes);
  gpu::DeviceMemory a(uint64_t{64} << 20), b(uint64_t{64} << 20);
  a.fill(0x3C);  // a copy of unwritten memory is what initcheck reports
  int calls = 0;
  const gpu::TimingResult t = timer.time([&](int i) {
    CHECK(i == calls++);
    REQUIRE(cudaMemcpyAsync(b.get(), a.get(), a.bytes(), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream.get())) ==
            cudaSuccess);
  });
  CHECK(calls == timer.calls());
  CHECK(t.runs == options.timed_runs);
  CHECK(t.min_us > 0);
  CHECK(t.min_us <= t.median_us);
  CHECK(t.median_us <= t.max_us);
  // 64 MiB copied at no more than 2x the measured copy bandwidth.
  CHECK(t.median_us > 0.5 * 2.0 * (64 << 20) / (copy.gb_per_s * 1e3));

  // An exception from the enqueued work propagates, after the stream drained.
  CHECK_THROWS_AS(timer.time([&](int i) {
                    if (i == 2) throw Error(ErrorCode::kIo, "boom");
                  }),
                  Error);

  gpu::TimingOptions few;
  few.timed_runs = gpu::kMinTimedRuns - 1;
  CHECK_THROWS_AS(gpu::GpuTimer(stream.get(), few), Error);
}

TEST_CASE("gpu timing: the read floor grows with the bytes and reads at a plausible rate") {
  gpu::GpuStream stream;
  const gpu::CopyBandwidth copy = gpu::measure_copy_bandwidth(stream.get(), uint64_t{256} << 20);
  const gpu::ReadFloor small = gpu::measure_read_floor(stream.get(), uint64_t{16} << 20);
  const gpu::ReadFloor large = gpu::measure_read_floor(stream.get(), (uint64_t{256} << 20) + 5);
  INFO("16 MiB read in " << small.median_us << " us, 256 MiB in " << large.median_us << " us (" << large.gb_per_s
                         << " GB/s); copy " << copy.gb_per_s << " GB/s");
  CHECK(small.bytes == uint64_t{16} << 20);
  CHECK(large.bytes == (uint64_t{256} << 20) + 16);  // rounded up to 16
  CHECK(small.median_us > 0);
  CHECK(large.median_us > 4 * small.median_us);  // 16x the bytes, the launch's fixed cost aside
  CHECK(large.gb_per_s == Approx(large.bytes / (large.median_us * 1e3)));
  // reading alone moves at most what a copy reads and writes together, and some of it
  CHECK(large.gb_per_s < 1.5 * copy.gb_per_s);
  CHECK(large.gb_per_s > 0.25 * copy.gb_per_s);
  CHECK_THROWS_AS(gpu::measure_read_floor(stream.get(), 0), Error);
}

TEST_CASE("gpu timing: cuBLAS BF16 GEMM layout y(batch, n) = x(batch, k) * w(n, k)^T") {
  const uint64_t n = 5, k = 7;
  const uint32_t batch = 3;
  std::vector<uint16_t> w(n * k), x(batch * k);
  for (uint64_t i = 0; i < n; ++i)
    for (uint64_t j = 0; j < k; ++j) w[i * k + j] = detail::float_to_bf16_bits(float(int(i * 3 + j) % 5 - 2));
  for (uint32_t b = 0; b < batch; ++b)
    for (uint64_t j = 0; j < k; ++j) x[b * k + j] = detail::float_to_bf16_bits(float(int(b * 2 + j) % 7 - 3));
  gpu::GpuStream stream;
  gpu::CublasBf16Gemm gemm(stream.get());
  gpu::DeviceMemory w_dev(w.size() * 2), x_dev(x.size() * 2), y_dev(n * batch * 4);
  w_dev.upload(w.data(), w.size() * 2);
  x_dev.upload(x.data(), x.size() * 2);
  gemm.run(w_dev.as<uint16_t>(), x_dev.as<uint16_t>(), y_dev.as<float>(), n, k, batch);
  stream.synchronize();
  std::vector<float> y(n * batch);
  y_dev.download(y.data(), y.size() * 4);
  for (uint32_t b = 0; b < batch; ++b)
    for (uint64_t i = 0; i < n; ++i) {
      float expect = 0;
      for (uint64_t j = 0; j < k; ++j) expect += detail::bf16_to_float(w[i * k + j]) * detail::bf16_to_float(x[b * k + j]);
      INFO("b " << b << " i " << i);
      CHECK(y[b * n + i] == expect);  // small integers: exact
    }
  CHECK_THROWS_AS(gemm.run(w_dev.as<uint16_t>(), x_dev.as<uint16_t>(), y_dev.as<float>(), 0, k, batch), Error);
}

TEST_CASE("gpu verify: lossless tensors (BF16 matrices, F32, 1-D, zstd tiles) against the source") {
  const std::vector<Spec> specs = {
      {"w", DType::BF16, {300, 520}},
      {"row", DType::BF16, {1, 4096}},
      {"bias", DType::BF16, {4096}},
      {"f32", DType::F32, {70, 130}},
      {"z", DType::BF16, {300, 200}, "lossless:codec=zstd"},
  };
  auto p = pack(specs, Codec::kRans, 64, 96);
  const std::vector<uint32_t> batches = {1, 3, 16};
  const GpuVerifyReport r = verify_gpu(*p->reader, &p->source, options_with(batches));
  REQUIRE(r.ran);
  CHECK(r.not_run_reason.empty());
  CHECK(!r.device.name.empty());
  CHECK(r.copy.gb_per_s > 100);
  CHECK(r.timing.timed_runs >= gpu::kMinTimedRuns);
  REQUIRE(r.tensors.size() == specs.size());
  std::string errors;
  for (const auto& t : r.tensors) errors += t.error.empty() ? "" : t.error + "\n";
  INFO(errors);
  CHECK(r.ok());

  for (const char* name : {"w", "row"}) {
    const GpuTensorCheck& t = find(r, name);
    require_checked_matrix(t, batches, true);
    CHECK(t.scheme == "lossless");
    CHECK(t.compared);
    CHECK(t.rel_error == 0.0);
    CHECK(t.cublas_weights == "source");
    for (const auto& b : t.batches) CHECK(b.cublas_rel_error <= kMatmulRelTolerance);  // the same BF16 weights
    CHECK(t.bits_per_weight > 8);
    CHECK(t.bits_per_weight < 16);
  }
  const GpuTensorCheck& bias = find(r, "bias");
  CHECK(bias.gpu_checked);
  CHECK(bias.decode_bit_exact);
  REQUIRE(bias.batches.size() == batches.size());
  for (const auto& b : bias.batches) {
    CHECK(!b.ran);
    CHECK(b.skipped.find("not a matrix") != std::string::npos);
  }
  const GpuTensorCheck& f32 = find(r, "f32");
  CHECK(f32.gpu_checked);
  CHECK(f32.decode_bit_exact);
  CHECK(f32.rel_error == 0.0);
  for (const auto& b : f32.batches) {  // lossless F32 multiplies on the block-per-tile kernel
    INFO("f32 batch " << b.batch << ": " << b.skipped);
    CHECK(b.ran);
    CHECK(b.kernel_path == "block-per-tile");
    CHECK(b.matmul_rel_error <= kMatmulRelTolerance);
    CHECK(b.matmul_output_error <= kMatmulRelTolerance);
  }
  const GpuTensorCheck& z = find(r, "z");
  INFO("z: " << z.skipped);
  CHECK(!z.gpu_checked);
  CHECK(z.skipped.find("not GPU-decodable") != std::string::npos);
  CHECK(z.skipped.find("zstd") != std::string::npos);

  REQUIRE(r.totals.size() == batches.size());
  for (size_t i = 0; i < batches.size(); ++i) {
    const GpuBatchTotals& tot = r.totals[i];
    CHECK(tot.batch == batches[i]);
    CHECK(tot.tensors == 3);  // w, row and f32
    CHECK(tot.packed_bytes == find(r, "w").packed_bytes + find(r, "row").packed_bytes + find(r, "f32").packed_bytes);
    CHECK(tot.speedup == Approx(tot.cublas_us / tot.kernel_us));
    CHECK(tot.max_matmul_rel_error <= kMatmulRelTolerance);
  }
}

TEST_CASE("gpu verify: without a source, cuBLAS multiplies the decoded weights, and correctness only without timing") {
  auto p = pack({{"w", DType::BF16, {257, 300}}});
  const GpuVerifyReport timed = verify_gpu(*p->reader, nullptr, options_with({1}));
  REQUIRE(timed.ok());
  const GpuTensorCheck& t = find(timed, "w");
  require_checked_matrix(t, {1}, true);
  CHECK(!t.compared);
  CHECK(std::isnan(t.rel_error));
  CHECK(t.cublas_weights == "decoded");

  const GpuVerifyReport untimed = verify_gpu(*p->reader, nullptr, options_with({1, 2}, false));
  REQUIRE(untimed.ok());
  require_checked_matrix(find(untimed, "w"), {1, 2}, false);
  CHECK(untimed.timing.timed_runs == 0);
}

TEST_CASE("gpu verify: lossy schemes decode bit-exact and multiply within 2e-3") {
  const std::vector<Spec> specs = {
      {"int4", DType::BF16, {256, 384}, "int4:g128:codec=none"},
      {"int4_rans", DType::BF16, {256, 384}, "int4:g64:sym:codec=rans"},
      {"int8", DType::BF16, {200, 300}, "int8:codec=none"},
      {"int3", DType::BF16, {256, 256}, "int3:g128:codec=none"},
      {"int2", DType::BF16, {256, 256}, "int2:g128:codec=rans"},
      {"fp8", DType::BF16, {130, 260}, "fp8:codec=none"},
      {"fp6", DType::F32, {256, 256}, "fp6:codec=none"},
      {"fp5", DType::BF16, {256, 256}, "fp5:codec=none"},
      {"fp4", DType::BF16, {256, 256}, "fp4:codec=none"},
      {"nf4", DType::BF16, {256, 256}, "nf4:codec=none"},
      {"lut4", DType::BF16, {256, 256}, "lut4:codec=none"},
      {"int4_sparse", DType::BF16, {256, 384}, "int4:g128:prune=0.5:codec=none"},
      {"fp6_24", DType::BF16, {256, 256}, "fp6:prune=2:4:codec=rans"},
      // Convolutions, multiplied as their folded views (row dims 1): 64 x 288 and 32 x 144.
      {"conv_int4", DType::BF16, {64, 32, 3, 3}, "int4:g128:codec=none"},
      {"conv_fp8", DType::F32, {32, 16, 3, 3}, "fp8:codec=rans"},
  };
  auto p = pack(specs, Codec::kNone);
  const std::vector<uint32_t> batches = {1, 16};
  const GpuVerifyReport r = verify_gpu(*p->reader, &p->source, options_with(batches));
  REQUIRE(r.ran);
  for (const auto& spec : specs) {
    const GpuTensorCheck& t = find(r, spec.name);
    require_checked_matrix(t, batches, true);
    CHECK(t.scheme_code != 0);
    CHECK(t.compared);
    INFO(spec.name << " rel_error " << t.rel_error << " recorded " << p->reader->tensors()[&t - r.tensors.data()].metrics.rel_error);
    CHECK(t.rel_error > 0);
    CHECK(t.rel_error <= p->reader->tensors()[&t - r.tensors.data()].metrics.rel_error * (1 + 1e-6));
  }
  CHECK(find(r, "int4").scheme_label == "int4 g128");
  CHECK(find(r, "int4_sparse").scheme_label == "int4 g128 pruned 0.5");
  CHECK(find(r, "int4").bits_per_weight < 5);
  CHECK(find(r, "conv_int4").bits_per_weight < 5);
  for (const WpkTensor& t : p->reader->tensors()) CHECK(t.row_dims == (t.shape.size() == 4 ? 1 : 0));
  CHECK(r.ok());

  // --max-error below the quantization error fails the lossy tensors (by name), and only them; their
  // products are still checked and timed (the file's weights, decoded bit for bit), and a product
  // that fails too (here: any error above 1e-12 of float32 accumulation) is added to the error.
  GpuVerifyOptions strict = options_with({1});
  strict.max_rel_error = 1e-6;
  for (const double product_limit : {2e-3, 1e-12}) {
    strict.max_matmul_rel_error = product_limit;
    const GpuVerifyReport s = verify_gpu(*p->reader, &p->source, strict);
    CHECK(!s.ok());
    for (const auto& t : s.tensors) {
      INFO(t.name << ": " << t.error);
      CHECK(t.error.find("tensor '" + t.name + "'") != std::string::npos);
      CHECK(t.error.find("--max-error") != std::string::npos);
      REQUIRE(t.batches.size() == 1);
      CHECK(t.batches[0].ran);
      CHECK(t.batches[0].timed);
      CHECK(t.batches[0].matmul_rel_error <= 2e-3);
      if (product_limit > 1e-9) {
        CHECK(t.product_error.empty());
        CHECK(t.error.find("; ") == std::string::npos);
      } else {  // "<the --max-error failure>; <the product's>"
        CHECK(t.product_error.find("batch 1: matmul_rel_error") != std::string::npos);
        const std::string tail = "; " + t.product_error;
        REQUIRE(t.error.size() > tail.size());
        CHECK(t.error.compare(t.error.size() - tail.size(), tail.size(), tail) == 0);
        CHECK(t.error.find("--max-error") < t.error.size() - tail.size());
      }
    }
  }
}

// K * batch not a multiple of 8: each timed call's activation set starts 128-byte aligned as the
// first does, so that the timed calls run the kernel that was checked (an unaligned x takes the
// generic kernel; verify_gpu fails a tensor whose timed calls ran another kernel).
TEST_CASE("gpu verify: K not a multiple of 8, the timed runs take the checked kernel") {
  const std::vector<Spec> specs = {
      {"int8", DType::BF16, {300, 4099}, "int8:codec=none"},
      {"lut3", DType::BF16, {130, 1001}, "lut3:codec=none"},
      {"fp6", DType::BF16, {129, 999}, "fp6:codec=none"},
  };
  auto p = pack(specs, Codec::kNone);
  const std::vector<uint32_t> batches = {1, 3, 16};
  const GpuVerifyReport r = verify_gpu(*p->reader, &p->source, options_with(batches));
  REQUIRE(r.ran);
  for (const auto& spec : specs) {
    const GpuTensorCheck& t = find(r, spec.name);
    require_checked_matrix(t, batches, true);
    for (const auto& b : t.batches) {
      INFO(spec.name << " batch " << b.batch << ": " << b.kernel_path);
      CHECK(b.kernel_path != gpu::GpuTensor::kGemvGeneric);  // x is aligned: one of the fast kernels
    }
  }
  CHECK(r.ok());
}

TEST_CASE("gpu verify: a corrupted tile fails, naming the tensor and the tile, and other tensors still run") {
  auto p = pack({{"a", DType::BF16, {256, 256}}, {"b", DType::BF16, {256, 256}}}, Codec::kRans, 64, 64);
  const WpkTensor& a = p->reader->tensors()[0];
  const uint64_t k = 5;
  const WpkTile& tile = p->reader->tiles()[a.first_tile + k];
  const uint64_t offset = tile.offset + tile.stored_size / 2;
  p->reader.reset();
  auto bytes = test::read_file(p->path);
  bytes[offset] ^= 0x20;
  const std::string bad = p->dir.file("bad.wpk");
  test::write_file(bad, bytes);
  auto reader = WpkReader::open(bad);
  const GpuVerifyReport r = verify_gpu(*reader, &p->source, options_with({1}, false));
  REQUIRE(r.ran);
  CHECK(!r.ok());
  const GpuTensorCheck& ta = find(r, "a");
  INFO(ta.error);
  CHECK(ta.error.find(bad) != std::string::npos);
  CHECK(ta.error.find("tensor 'a'") != std::string::npos);
  CHECK(ta.error.find("tile " + std::to_string(k)) != std::string::npos);
  require_checked_matrix(find(r, "b"), {1}, false);
}

TEST_CASE("gpu verify: bad options are refused") {
  auto p = pack({{"w", DType::BF16, {64, 64}}});
  for (const std::vector<uint32_t>& batches : std::vector<std::vector<uint32_t>>{{}, {0}, {65}, {1, 1}}) {
    GpuVerifyOptions o = options_with(batches);
    CHECK_THROWS_AS(verify_gpu(*p->reader, nullptr, o), Error);
  }
  GpuVerifyOptions few = options_with({1});
  few.timing_options.timed_runs = 5;
  CHECK_THROWS_AS(verify_gpu(*p->reader, nullptr, few), Error);
}

namespace {

// a == b, NaN equal to NaN.
bool same_double(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }
// The matrix-product errors: the fused GEMV adds tile columns with float atomicAdd
// (kernels/tile_decode.h), so the last bits of y, and with them these, can differ between two runs
// on the same weights and activations; 1e-6 is far below kMatmulRelTolerance.
bool same_product_error(double a, double b) { return (std::isnan(a) && std::isnan(b)) || std::abs(a - b) <= 1e-6; }

// Every field of two reports of the same file and options, except the timings (and what is
// derived from them: speedup, GB/s, % of copy, the totals' times).
void require_same_gpu_report(const GpuVerifyReport& a, const GpuVerifyReport& b) {
  REQUIRE(a.ran == b.ran);
  CHECK(a.not_run_reason == b.not_run_reason);
  CHECK(a.device.index == b.device.index);
  CHECK(a.device.name == b.device.name);
  CHECK(a.copy.gb_per_s == b.copy.gb_per_s);
  CHECK(a.timing.warmup_runs == b.timing.warmup_runs);
  CHECK(a.timing.timed_runs == b.timing.timed_runs);
  CHECK(a.timing.l2_flush_bytes == b.timing.l2_flush_bytes);
  CHECK(a.ok() == b.ok());
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const GpuTensorCheck& x = a.tensors[i];
    const GpuTensorCheck& y = b.tensors[i];
    INFO("tensor " << i << " " << x.name << ": error '" << x.error << "' / '" << y.error << "', skipped '" << x.skipped
                   << "' / '" << y.skipped << "'");
    CHECK(x.name == y.name);
    CHECK(x.dtype == y.dtype);
    CHECK(x.shape == y.shape);
    CHECK(x.scheme_code == y.scheme_code);
    CHECK(x.scheme == y.scheme);
    CHECK(x.scheme_label == y.scheme_label);
    CHECK(x.packed_bytes == y.packed_bytes);
    CHECK(x.bits_per_weight == y.bits_per_weight);
    CHECK(x.gpu_checked == y.gpu_checked);
    CHECK(x.skipped == y.skipped);
    CHECK(x.decode_bit_exact == y.decode_bit_exact);
    CHECK(x.decode_mismatches == y.decode_mismatches);
    CHECK(x.compared == y.compared);
    CHECK(same_double(x.rel_error, y.rel_error));
    CHECK(x.cublas_weights == y.cublas_weights);
    CHECK(x.error == y.error);
    REQUIRE(x.batches.size() == y.batches.size());
    for (size_t k = 0; k < x.batches.size(); ++k) {
      const GpuBatchCheck& p = x.batches[k];
      const GpuBatchCheck& q = y.batches[k];
      INFO("batch " << p.batch << ": matmul_rel_error " << p.matmul_rel_error << " / " << q.matmul_rel_error);
      CHECK(p.batch == q.batch);
      CHECK(p.ran == q.ran);
      CHECK(p.skipped == q.skipped);
      CHECK(same_product_error(p.matmul_rel_error, q.matmul_rel_error));
      CHECK(same_product_error(p.cublas_rel_error, q.cublas_rel_error));
      CHECK(p.timed == q.timed);
      CHECK(p.kernel.runs == q.kernel.runs);
      CHECK(p.cublas.runs == q.cublas.runs);
    }
  }
  REQUIRE(a.totals.size() == b.totals.size());
  for (size_t i = 0; i < a.totals.size(); ++i) {
    CHECK(a.totals[i].batch == b.totals[i].batch);
    CHECK(a.totals[i].tensors == b.totals[i].tensors);
    CHECK(a.totals[i].packed_bytes == b.totals[i].packed_bytes);
    CHECK(same_product_error(a.totals[i].max_matmul_rel_error, b.totals[i].max_matmul_rel_error));
  }
}

}  // namespace

TEST_CASE("gpu verify: GpuVerifier on verify_cpu's decodes gives verify_gpu's report, corrupt tiles included") {
  const std::vector<Spec> specs = {
      {"w", DType::BF16, {300, 520}},
      {"bias", DType::BF16, {4096}},
      {"f32", DType::F32, {70, 130}},
      {"z", DType::BF16, {200, 200}, "lossless:codec=zstd"},
      {"q", DType::BF16, {256, 384}, "int4:g64:codec=none"},
      {"qr", DType::BF16, {256, 256}, "fp6:codec=rans"},
      {"bad", DType::BF16, {256, 256}},                        // a tile whose checksum fails
      {"badq", DType::BF16, {256, 384}, "int4:g64:codec=rans"},  // the same, lossy
      {"badstream", DType::BF16, {256, 256}},                  // a malformed rANS stream, checksum ok
      {"badzstd", DType::BF16, {200, 200}, "lossless:codec=zstd"},  // a malformed zstd tile, checksum ok
  };
  auto p = pack(specs, Codec::kRans, 64, 64);
  const auto tensor_index = [&](const std::string& name) {
    for (size_t t = 0; t < p->reader->tensors().size(); ++t)
      if (p->reader->tensors()[t].name == name) return t;
    FAIL("no tensor " << name);
    return size_t{0};
  };
  std::vector<uint8_t> bytes = test::read_file(p->path);
  const auto tile_of = [&](const std::string& name, uint64_t k) {
    return p->reader->tiles()[p->reader->tensors()[tensor_index(name)].first_tile + k];
  };
  for (const auto& [name, k] : std::vector<std::pair<std::string, uint64_t>>{{"bad", 5}, {"badq", 3}}) {
    const WpkTile tile = tile_of(name, k);
    bytes[tile.offset + tile.stored_size / 2] ^= 0x20;
  }
  bytes = test::with_damaged_stream(std::move(bytes), p->reader->tensors()[tensor_index("badstream")].first_tile + 2,
                                    test::StreamDamage::kPrecisionField);
  REQUIRE(tile_of("badzstd", 1).codec == static_cast<uint8_t>(Codec::kZstd));
  test::edit_wpk_tile(bytes, p->reader->tensors()[tensor_index("badzstd")].first_tile + 1, [](uint8_t* stored, uint64_t size) {
    REQUIRE(size >= 4);
    stored[0] = stored[1] = stored[2] = 0xFF;  // plane 0's size word: past the tile's end
    stored[3] = 0x7F;
  });
  const std::string bad = p->dir.file("bad.wpk");
  test::write_file(bad, bytes);

  for (const std::string& path : {p->path, bad}) {
    for (const TensorSource* against : {static_cast<const TensorSource*>(&p->source), static_cast<const TensorSource*>(nullptr)}) {
      INFO(path << (against ? " against the source" : " alone"));
      auto reader = WpkReader::open(path);
      GpuVerifyOptions options = options_with({1, 16});
      options.copy_gb_per_s = 4000;  // not measured: the same in both reports
      std::vector<std::string> progress_alone, progress_hooked;
      options.progress = [&](uint64_t done, uint64_t total, const std::string& name) {
        progress_alone.push_back(std::to_string(done) + "/" + std::to_string(total) + " " + name);
      };
      const GpuVerifyReport alone = verify_gpu(*reader, against, options);
      REQUIRE(alone.ran);

      options.progress = [&](uint64_t done, uint64_t total, const std::string& name) {
        progress_hooked.push_back(std::to_string(done) + "/" + std::to_string(total) + " " + name);
      };
      GpuVerifier verifier(*reader, against, options);
      REQUIRE(verifier.ran());
      std::vector<bool> failed_decodes;
      const VerifyReport cpu = verify_cpu(*reader, against, 0, std::numeric_limits<double>::infinity(),
                                          [&](const DecodedTensor& d) {
                                            failed_decodes.push_back(d.error != nullptr);
                                            verifier.check_tensor(d);
                                          });
      const GpuVerifyReport hooked = verifier.finish();
      require_same_gpu_report(alone, hooked);
      CHECK(progress_alone == progress_hooked);
      CHECK(progress_alone.size() == reader->tensors().size() + 1);

      // The CPU report is the one without the hook.
      const VerifyReport cpu_alone = verify_cpu(*reader, against, 0);
      REQUIRE(cpu.tensors.size() == cpu_alone.tensors.size());
      for (size_t t = 0; t < cpu.tensors.size(); ++t) {
        CHECK(cpu.tensors[t].decoded == cpu_alone.tensors[t].decoded);
        CHECK(cpu.tensors[t].error == cpu_alone.tensors[t].error);
      }

      // What the files hold: the corrupt tensors fail on the CPU (the hook hands over their
      // Error), and on the GPU the checksum failures and the malformed rANS stream fail while the
      // malformed zstd tile is not GPU-decodable (a skip, as in verify_gpu alone).
      REQUIRE(failed_decodes.size() == reader->tensors().size());
      for (size_t t = 0; t < reader->tensors().size(); ++t) {
        const std::string& name = reader->tensors()[t].name;
        const bool corrupt = path == bad && name.rfind("bad", 0) == 0;
        INFO(name << ": GPU error '" << hooked.tensors[t].error << "', skipped '" << hooked.tensors[t].skipped << "'");
        CHECK(failed_decodes[t] == corrupt);
        CHECK(cpu.tensors[t].decoded == !corrupt);
        if (!corrupt) {
          CHECK(hooked.tensors[t].error.empty());
          continue;
        }
        if (name == "badzstd") {
          CHECK(hooked.tensors[t].error.empty());
          CHECK(hooked.tensors[t].skipped.find("not GPU-decodable") != std::string::npos);
        } else {
          CHECK(hooked.tensors[t].error.find("tensor '" + name + "'") != std::string::npos);
          CHECK(hooked.tensors[t].error.find(name == "bad" ? "tile 5" : name == "badq" ? "tile 3" : "tile 2") !=
                std::string::npos);
        }
      }
      CHECK(hooked.ok() == (path == p->path));
    }
  }

  // The order and count contract.
  GpuVerifier out_of_order(*p->reader, nullptr, options_with({1}, false));
  CHECK_THROWS_AS(out_of_order.check_tensor(1), Error);
  GpuVerifier unfinished(*p->reader, nullptr, options_with({1}, false));
  unfinished.check_tensor(0);
  CHECK_THROWS_AS(unfinished.check_tensor(0), Error);
  CHECK_THROWS_AS(unfinished.finish(), Error);
  GpuVerifier wrong_size(*p->reader, nullptr, options_with({1}, false));
  DecodedTensor short_reference;  // tensor 0 with no bytes
  CHECK_THROWS_AS(wrong_size.check_tensor(short_reference), Error);
}

TEST_CASE("gpu verify: wpack verify --device cuda, table and --json") {
  test::TempDir dir;
  const std::string model = dir.file("m.safetensors");
  const std::vector<TensorInfo> infos = {{"mlp.w1", DType::BF16, {512, 384}}, {"mlp.w2", DType::BF16, {384, 512}},
                                         {"norm", DType::BF16, {384}}};
  const std::vector<std::vector<uint8_t>> data = {test::gaussian_bf16(512 * 384, 0.02f, 1),
                                                  test::gaussian_bf16(384 * 512, 0.02f, 2), test::gaussian_bf16(384, 0.02f, 3)};
  write_safetensors(model, infos, data, {}, true);
  const std::string packed = dir.file("m.wpk");
  REQUIRE(test::run_wpack({"compress", model, "-o", packed, "--codec", "rans"}).exit_code == 0);

  test::RunResult t = test::run_wpack({"verify", packed, "--device", "cuda", "--against", model, "--batch", "1,16"});
  INFO("stdout: " << t.out << "\nstderr: " << t.err);
  CHECK(t.exit_code == 0);
  // the table's columns under issue 5's names
  for (const char* column : {"decode_bit_exact", "rel_error", "matmul_rel_error", "kernel_us", "cuBLAS_us", "speedup",
                             "GB/s", "%copy"})
    CHECK(t.out.find(column) != std::string::npos);
  CHECK(t.out.find("GPU OK") != std::string::npos);
  CHECK(t.err.find("did not run") == std::string::npos);

  test::RunResult j = test::run_wpack({"verify", packed, "--device", "cuda", "--json", "--batch", "1,16", "--against", model});
  INFO("stdout: " << j.out << "\nstderr: " << j.err);
  REQUIRE(j.exit_code == 0);
  const json report = json::parse(j.out);
  CHECK(report["ok"] == true);
  CHECK(report["gpu_checks_ran"] == true);
  CHECK_FALSE(report.contains("cublas_error"));
  CHECK(report["gpu"]["name"].is_string());
  CHECK(report["copy_bandwidth"]["gb_per_s"].get<double>() > 100);
  CHECK(report["timing"]["timed_runs"].get<int>() >= 20);
  REQUIRE(report["totals"].size() == 2);
  CHECK(report["totals"][1]["batch"] == 16);
  REQUIRE(report["tensors"].size() == 3);
  for (const auto& tensor : report["tensors"]) {
    INFO(tensor.dump());
    CHECK(tensor["ok"] == true);
    CHECK(tensor["decode_bit_exact"] == true);
    CHECK(tensor["scheme"] == "lossless");
    CHECK(tensor.contains("bits_per_weight"));
    REQUIRE(tensor["batches"].size() == 2);
    if (tensor["name"] == "norm") {
      CHECK(tensor["batches"][0].contains("skipped_reason"));
      continue;
    }
    for (const auto& b : tensor["batches"]) {
      CHECK(b["matmul_rel_error"].get<double>() <= 2e-3);
      for (const char* key : {"kernel_time_us", "cublas_bf16_time_us", "speedup", "packed_gb_per_s", "copy_bw_percent"})
        CHECK(b[key].get<double>() > 0);
      // lossless BF16 tiles of the default shape (the warp-per-tile kernel, built with CUDA 11.8+)
      CHECK(b["kernel"] == (wpack::gpu::gpu_build_has_warp_tiles() ? "warp-per-tile" : "block-per-tile"));
    }
  }
  // every output within 2e-3 of its |W||x| too
  for (const auto& tensor : report["tensors"])
    for (const auto& b : tensor["batches"])
      if (b.contains("matmul_output_error")) CHECK(b["matmul_output_error"].get<double>() <= 2e-3);
  // the table's note: the rANS-coded lossless matrices ran a slow kernel, and what to do
  CHECK(t.out.find("note: 2 lossless BF16 tensors ran a slow kernel") != std::string::npos);

  // Integrity first: a damaged tile stops the GPU checks before they start (the CPU checks name it)
  {
    auto bytes = test::read_file(packed);
    auto reader = WpkReader::open(packed);
    const auto w2 = std::find_if(reader->tensors().begin(), reader->tensors().end(),
                                 [](const WpkTensor& wt) { return wt.name == "mlp.w2"; });
    REQUIRE(w2 != reader->tensors().end());
    REQUIRE(w2->tile_count > 2);
    const WpkTile& tile = reader->tiles()[w2->first_tile + 2];
    bytes[tile.offset + tile.stored_size / 2] ^= 0x04;
    const std::string bad = dir.file("bad.wpk");
    test::write_file(bad, bytes);
    test::RunResult d = test::run_wpack({"verify", bad, "--device", "cuda", "--batch", "1,16"});
    INFO("stdout: " << d.out << "\nstderr: " << d.err);
    CHECK(d.exit_code == 1);
    CHECK(d.err.find("tensor 'mlp.w2': tile 2") != std::string::npos);
    CHECK(d.err.find("GPU checks did not run: 1 tensor has a tile whose checksum fails") != std::string::npos);
    CHECK(d.out.find("speedup") == std::string::npos);  // no GPU table
  }
  CHECK(t.out.find("--codec exp4") != std::string::npos);

  // Lossless with --codec exp4: both matrices on the bulk-copy GEMV (where the build has it), bit-exact,
  // no note
  const std::string exp4 = dir.file("e.wpk");
  REQUIRE(test::run_wpack({"compress", model, "-o", exp4, "--codec", "exp4"}).exit_code == 0);
  test::RunResult e =
      test::run_wpack({"verify", exp4, "--device", "cuda", "--against", model, "--batch", "1,16", "--json"});
  INFO("stdout: " << e.out << "\nstderr: " << e.err);
  REQUIRE(e.exit_code == 0);
  const char* ring = wpack::gpu::gpu_ring_gemv_name();  // "bulk-copy", or "cp.async-ring" (CUDA 11.8)
  const char* exp4_kernel = ring ? ring : "block-per-tile";
  const json exp4_report = json::parse(e.out);  // a named object: a range-for over a temporary's member dangles
  REQUIRE(exp4_report["tensors"].size() == 3);
  for (const auto& tensor : exp4_report["tensors"]) {
    INFO(tensor.dump());
    CHECK(tensor["decode_bit_exact"] == true);
    if (tensor["name"] == "norm") continue;
    for (const auto& b : tensor["batches"]) {
      CHECK(b["kernel"] == exp4_kernel);
      CHECK(b["matmul_rel_error"].get<double>() <= 2e-3);
    }
  }
  test::RunResult et = test::run_wpack({"verify", exp4, "--device", "cuda"});
  INFO("table stdout: " << et.out);
  CHECK(et.exit_code == 0);
  CHECK((et.out.find("slow kernel") == std::string::npos) == (ring != nullptr));

  // A lossy file beyond --max-error exits 1 (the CPU and the GPU checks both say so).
  const std::string lossy = dir.file("q.wpk");
  REQUIRE(test::run_wpack({"compress", model, "-o", lossy, "--scheme", "int4", "--codec", "none"}).exit_code == 0);
  test::RunResult fast = test::run_wpack({"verify", lossy, "--device", "cuda", "--against", model});
  INFO("stdout: " << fast.out << "\nstderr: " << fast.err);
  CHECK(fast.exit_code == 0);
  if (ring) CHECK(fast.out.find(ring) != std::string::npos);  // raw int4 tiles: the kernel column
  CHECK(fast.out.find("slow kernel") == std::string::npos);
  test::RunResult strict = test::run_wpack({"verify", lossy, "--device", "cuda", "--against", model, "--max-error", "0.001"});
  CHECK(strict.exit_code == 1);
  CHECK(strict.err.find("mlp.w1") != std::string::npos);

  // int4 with the default codec (rans, which pays on these weights): the rANS decoder, a warp per
  // tile (the 128x128 tiles of both matrices qualify), and a note under the table says why it is
  // slow and what to do
  const std::string coded = dir.file("r.wpk");
  REQUIRE(test::run_wpack({"compress", model, "-o", coded, "--scheme", "int4"}).exit_code == 0);
  test::RunResult slow = test::run_wpack({"verify", coded, "--device", "cuda", "--json"});
  INFO("stdout: " << slow.out << "\nstderr: " << slow.err);
  REQUIRE(slow.exit_code == 0);
  const char* coded_kernel = wpack::gpu::gpu_build_has_warp_tiles() ? "warp-per-tile" : "generic";
  const json slow_report = json::parse(slow.out);
  REQUIRE(slow_report["tensors"].size() == 3);
  for (const auto& tensor : slow_report["tensors"])
    if (tensor["name"] != "norm") CHECK(tensor["batches"][0]["kernel"] == coded_kernel);
  test::RunResult table = test::run_wpack({"verify", coded, "--device", "cuda"});
  INFO("table stdout: " << table.out);
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("note: 2 quantized tensors ran a slow kernel") != std::string::npos);
  CHECK(table.out.find("--codec none") != std::string::npos);
}

TEST_CASE("gpu verify: where cuBLAS cannot be loaded, the kernels are still checked and timed") {
  test::TempDir dir;
  const std::string model = dir.file("m.safetensors");
  write_safetensors(model, {{"w", DType::BF16, {256, 512}}}, {test::gaussian_bf16(256 * 512, 0.02f, 7)}, {}, true);
  const std::string packed = dir.file("q.wpk");
  REQUIRE(test::run_wpack({"compress", model, "-o", packed, "--scheme", "int4", "--codec", "none"}).exit_code == 0);
  const std::string missing = dir.file("no-such-libcublas.so");
  test::ScopedEnv env("WPACK_CUBLAS_LIBRARY", missing.c_str());  // the wpack child inherits it

  test::RunResult j = test::run_wpack({"verify", packed, "--device", "cuda", "--json", "--batch", "1,16", "--against", model});
  INFO("stdout: " << j.out << "\nstderr: " << j.err);
  REQUIRE(j.exit_code == 0);
  const json report = json::parse(j.out);
  CHECK(report["ok"] == true);
  CHECK(report["gpu_checks_ran"] == true);
  CHECK(report["cublas_error"].get<std::string>().find("no-such-libcublas.so") != std::string::npos);
  REQUIRE(report["tensors"].size() == 1);
  const json& tensor = report["tensors"][0];
  CHECK(tensor["decode_bit_exact"] == true);
  REQUIRE(tensor["batches"].size() == 2);
  for (const auto& b : tensor["batches"]) {
    INFO(b.dump());
    CHECK(b["matmul_rel_error"].get<double>() <= 2e-3);
    CHECK(b["kernel_time_us"].get<double>() > 0);
    CHECK(b["packed_gb_per_s"].get<double>() > 0);
    CHECK(b["cublas_bf16_time_us"].is_null());
    CHECK(b["speedup"].is_null());
    CHECK(b["cublas_rel_error"].is_null());
  }
  REQUIRE(report["totals"].size() == 2);
  for (const auto& tot : report["totals"]) {
    CHECK(tot["kernel_time_us"].get<double>() > 0);
    CHECK(tot["speedup"].is_null());
  }

  test::RunResult t = test::run_wpack({"verify", packed, "--device", "cuda", "--against", model});
  INFO("stdout: " << t.out << "\nstderr: " << t.err);
  CHECK(t.exit_code == 0);
  CHECK(t.out.find("baseline not timed (cuBLAS: ") != std::string::npos);
  CHECK(t.out.find("GPU OK") != std::string::npos);
}

#else  // no CUDA in this build: main() exits with 4 before any test runs

TEST_CASE("gpu verify: needs a CUDA build") { SUCCEED("skipped"); }

#endif
