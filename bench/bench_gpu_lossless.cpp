// Fused rANS-BF16 decode + GEMV (kernels/tile_decode.h) beside cuBLAS BF16 GEMV, batch 1, in one run.
// Shapes: 4096x4096, 8192x8192, 28672x8192 (W is N x K), N(0, 0.02) BF16 weights (trained-like),
// 128x128 tiles, codec rans, the packer's filter choice (floatplanes).
// Timing: CUDA events around each call, 5 warm-up calls, median of 50; weights rotated among
// copies totalling >= 256 MB (L2 is 60 MB) and a fresh random x per call.
// Without CUDA (bench/CMakeLists.txt links the CUDA libraries only when WPACK_HAVE_CUDA) it prints SKIP.
#if !defined(WPACK_HAVE_CUDA)
#include <cstdio>
int main() {
  std::printf("SKIP: this wpack build has no CUDA\n");
  return 4;
}
#else
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "formats/error.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "kernels/tile_decode.h"
#include "packer/pack.h"

namespace {

#define CHECK_CUDA(call)                                                                   \
  do {                                                                                     \
    cudaError_t e_ = (call);                                                               \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
#define CHECK_CUBLAS(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t s_ = (call);                                                            \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
      std::fprintf(stderr, "%s:%d %s: cublas status %d\n", __FILE__, __LINE__, #call, int(s_)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

class Source : public wpack::TensorSource {
 public:
  void add(std::string name, std::vector<uint64_t> shape, std::vector<uint8_t> bytes) {
    wpack::TensorInfo info;
    info.name = std::move(name);
    info.dtype = wpack::DType::BF16;
    info.shape = std::move(shape);
    infos_.push_back(info);
    data_.push_back(std::move(bytes));
  }
  const std::vector<wpack::TensorInfo>& tensors() const override { return infos_; }
  wpack::TensorBytes read(size_t i) const override {
    return wpack::TensorBytes::borrowed(data_[i].data(), data_[i].size(), nullptr);
  }
  const std::map<std::string, std::string>& metadata() const override { return meta_; }
  const std::string& path() const override { return path_; }
  std::string format_name() const override { return "memory"; }
  const std::vector<uint8_t>& data(size_t i) const { return data_[i]; }

 private:
  std::vector<wpack::TensorInfo> infos_;
  std::vector<std::vector<uint8_t>> data_;
  std::map<std::string, std::string> meta_;
  std::string path_ = "memory";
};

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

std::vector<uint8_t> gaussian_bf16(size_t n, float stddev, uint64_t seed) {
  std::vector<uint8_t> out(2 * n);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, stddev);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t b = to_bf16(dist(rng));
    out[2 * i] = static_cast<uint8_t>(b);
    out[2 * i + 1] = static_cast<uint8_t>(b >> 8);
  }
  return out;
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

constexpr int kWarmup = 5;
constexpr int kIters = 50;
constexpr int kActivationSets = 8;

// Times fn(i) for i = 0.. with events; returns the median in microseconds.
template <typename Fn>
float time_us(Fn fn) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < kWarmup; ++i) fn(i);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < kIters; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    fn(kWarmup + i);
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  return 1000.f * median(ms);
}

struct Row {
  std::string shape;
  double dense_mb, packed_mb, fused_us, cublas_us, rel_err, decode_us;
};

}  // namespace

int main(int argc, char** argv) try {
  // Optional: a lossy scheme and a codec (e.g. "int4 none") to time the quantized kernels instead.
  const std::string scheme_arg = argc > 1 ? argv[1] : "lossless", codec_arg = argc > 2 ? argv[2] : "rans";
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 4;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);

  // Copy ceiling: 1 GiB device-to-device, bytes read + written.
  double copy_gbs = 0;
  {
    const size_t bytes = size_t{1} << 30;
    void *src, *dst;
    CHECK_CUDA(cudaMalloc(&src, bytes));
    CHECK_CUDA(cudaMalloc(&dst, bytes));
    CHECK_CUDA(cudaMemset(src, 1, bytes));
    const float us = time_us([&](int) { CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
    copy_gbs = 2.0 * bytes / (us * 1e3);
    std::printf("device-to-device copy: %.1f us for 1 GiB, %.0f GB/s (read + write)\n", us, copy_gbs);
    CHECK_CUDA(cudaFree(src));
    CHECK_CUDA(cudaFree(dst));
  }

  const std::vector<std::pair<uint64_t, uint64_t>> shapes = {{4096, 4096}, {8192, 8192}, {28672, 8192}};
  Source src;
  for (size_t i = 0; i < shapes.size(); ++i)
    src.add("w" + std::to_string(i), {shapes[i].first, shapes[i].second},
            gaussian_bf16(shapes[i].first * shapes[i].second, 0.02f, 11 + i));
  const std::string path = "/tmp/bench_gpu_lossless.wpk";
  wpack::PackOptions opt;
  opt.codec = codec_arg == "none" ? wpack::Codec::kNone : wpack::Codec::kRans;
  opt.policy.spec.scheme = wpack::parse_scheme(scheme_arg).value();
  opt.overwrite = true;
  if (const char* tile = std::getenv("WPACK_BENCH_TILE")) {  // e.g. 128x512: tile-shape experiments
    unsigned r = 0, c = 0;
    if (std::sscanf(tile, "%ux%u", &r, &c) == 2) opt.tile_rows = r, opt.tile_cols = c;
  }
  wpack::pack_model(src, path, opt);
  auto reader = wpack::WpkReader::open(path);

  cublasHandle_t handle;
  CHECK_CUBLAS(cublasCreate(&handle));
  std::vector<Row> rows;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const uint64_t n = shapes[i].first, k = shapes[i].second;
    const size_t dense = n * k * 2;
    const int copies = static_cast<int>(std::max<size_t>(2, (size_t{256} << 20) / dense + 1));
    std::vector<wpack::gpu::GpuTensor> packed;
    std::vector<void*> dense_dev(copies);
    for (int c = 0; c < copies; ++c) {
      packed.push_back(wpack::gpu::GpuTensor::upload(*reader, i));
      CHECK_CUDA(cudaMalloc(&dense_dev[c], dense));
      CHECK_CUDA(cudaMemcpy(dense_dev[c], src.data(i).data(), dense, cudaMemcpyHostToDevice));
    }
    // Fresh activations: kActivationSets random x vectors, one per call in turn.
    std::vector<uint16_t*> x_dev(kActivationSets);
    for (int s = 0; s < kActivationSets; ++s) {
      const auto xb = gaussian_bf16(k, 1.f, 1000 * i + s);
      CHECK_CUDA(cudaMalloc(&x_dev[s], 2 * k));
      CHECK_CUDA(cudaMemcpy(x_dev[s], xb.data(), 2 * k, cudaMemcpyHostToDevice));
    }
    float *y_fused, *y_cublas;
    uint32_t* status;
    CHECK_CUDA(cudaMalloc(&y_fused, 4 * n));
    CHECK_CUDA(cudaMalloc(&y_cublas, 4 * n));
    CHECK_CUDA(cudaMalloc(&status, 4 * packed[0].tile_count()));

    const float alpha = 1.f, beta = 0.f;
    auto cublas_call = [&](int it) {
      // Row-major W (N,K) is column-major (K,N): y = W^T(col) x.
      CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), 1, static_cast<int>(k), &alpha,
                                dense_dev[it % copies], CUDA_R_16BF, static_cast<int>(k), x_dev[it % kActivationSets],
                                CUDA_R_16BF, static_cast<int>(k), &beta, y_cublas, CUDA_R_32F, static_cast<int>(n),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    };
    auto fused_call = [&](int it) {
      packed[it % copies].gemv(x_dev[it % kActivationSets], y_fused, 1, status);
    };
    const float cublas_us = time_us(cublas_call);
    const float fused_us = time_us(fused_call);
    // Decode alone (tiles -> dense BF16 tensor), to split the fused time into decode and multiply.
    void* decoded_dev;
    CHECK_CUDA(cudaMalloc(&decoded_dev, n * k * packed[0].decoded_elem_size()));
    const float decode_us = time_us([&](int it) { packed[it % copies].decode(decoded_dev, status); });
    CHECK_CUDA(cudaFree(decoded_dev));

    // Same x for both, then compare (and every tile decoded).
    cublas_call(0);
    fused_call(0);
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<float> a(n), b(n);
    std::vector<uint32_t> st(packed[0].tile_count());
    CHECK_CUDA(cudaMemcpy(a.data(), y_fused, 4 * n, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(b.data(), y_cublas, 4 * n, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(st.data(), status, 4 * st.size(), cudaMemcpyDeviceToHost));
    uint64_t bad_tiles = 0;
    for (uint32_t s : st) bad_tiles += s != 0;
    double num = 0, den = 0;
    for (uint64_t r = 0; r < n; ++r) num += double(a[r] - b[r]) * (a[r] - b[r]), den += double(b[r]) * b[r];
    const double rel = std::sqrt(num / den);
    if (bad_tiles) std::printf("WARNING: %llu tiles not decoded\n", static_cast<unsigned long long>(bad_tiles));

    Row row{std::to_string(n) + "x" + std::to_string(k), dense / 1e6, packed[0].stored_bytes() / 1e6, fused_us,
            cublas_us, rel, decode_us};
    std::printf("%s: %d weight copies, dense %.1f MB, packed %.1f MB (%.3f), fused %.1f us, cuBLAS %.1f us, rel err %.2e\n",
                row.shape.c_str(), copies, row.dense_mb, row.packed_mb, row.packed_mb / row.dense_mb, fused_us, cublas_us,
                rel);
    rows.push_back(row);
    for (void* p : dense_dev) CHECK_CUDA(cudaFree(p));
    for (auto* p : x_dev) CHECK_CUDA(cudaFree(p));
    CHECK_CUDA(cudaFree(y_fused));
    CHECK_CUDA(cudaFree(y_cublas));
    CHECK_CUDA(cudaFree(status));
  }
  CHECK_CUBLAS(cublasDestroy(handle));
  std::remove(path.c_str());

  std::printf("\nbatch 1, BF16 N(0,0.02), 128x128 tiles, %s, codec %s; copy ceiling %.0f GB/s (read+write)\n", copy_gbs);
  std::printf("%-12s %8s %8s %7s %10s %10s %10s %11s %8s %8s %8s %9s\n", "shape(NxK)", "denseMB", "packMB", "ratio",
              "fused_us", "decode_us", "cuBLAS_us", "packedGB/s", "%copy", "cuBLASGB/s", "speedup", "rel_err");
  for (const Row& r : rows) {
    const double packed_gbs = r.packed_mb * 1e6 / (r.fused_us * 1e3);
    const double cublas_gbs = r.dense_mb * 1e6 / (r.cublas_us * 1e3);
    std::printf("%-12s %8.1f %8.1f %7.3f %10.1f %10.1f %10.1f %11.0f %7.1f%% %8.0f %8.2fx %9.1e\n", r.shape.c_str(), r.dense_mb,
                r.packed_mb, r.packed_mb / r.dense_mb, r.fused_us, r.decode_us, r.cublas_us, packed_gbs, 100.0 * packed_gbs / copy_gbs,
                cublas_gbs, r.cublas_us / r.fused_us, r.rel_err);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_gpu_lossless: %s\n", e.what());
  return 1;
}
#endif  // WPACK_HAVE_CUDA
