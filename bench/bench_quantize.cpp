// Quantizer throughput and accuracy on a 4096 x 4096 layer (a typical 7B attention projection).
//
//   bench_quantize [rows cols]
//
// Throughput: one thread (omp_set_num_threads(1)), MB/s of BF16-equivalent input (rows*cols*2 bytes),
// best of 3, for int4 g128 clip mse (target >= 300 MB/s) and fp6, with their RTN (clip minmax) beside;
// lut4 (one table) on BF16-exact and on float32 values, on one thread and on all.
// Accuracy: rel_error = ||W^ - W|| / ||W|| of every scheme with clip mse beside plain RTN (clip minmax),
// on N(0, 0.02) weights with 0.1% outliers of +-10 sigma. LUT schemes ignore the clip (k-means).
#include <omp.h>

#include <chrono>
#include <ctime>  // clock_gettime(CLOCK_PROCESS_CPUTIME_ID): CPU time, robust on a loaded machine
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "packer/detail/fp.h"  // bf16 rounding
#include "packer/quantize.h"
#include "synthetic_weights.h"  // gaussian, splitmix64 (tests/)

namespace {

// N(0, sigma^2) with a fraction of +-10 sigma outliers (deterministic).
std::vector<float> weights(uint64_t n, float sigma, double outlier_fraction, uint64_t seed) {
  std::vector<float> w = wpack::test::gaussian(n, sigma, seed);
  uint64_t s = ~seed;  // the outliers' own stream
  const uint64_t outliers = static_cast<uint64_t>(outlier_fraction * static_cast<double>(n));
  for (uint64_t k = 0; k < outliers; ++k) {
    const uint64_t i = wpack::test::splitmix64(s) % n;
    w[i] = (wpack::test::splitmix64(s) & 1) ? 10.0f * sigma : -10.0f * sigma;
  }
  return w;
}

struct Timing {
  double wall = 1e30, cpu = 1e30;  // seconds, best of 3
};

double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

Timing time_best_of_3(const std::vector<float>& w, uint64_t rows, uint64_t cols, const wpack::QuantSpec& spec) {
  Timing best;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    double c0 = cpu_now();
    wpack::QuantizedMatrix q = wpack::quantize(w.data(), rows, cols, spec);
    double c1 = cpu_now();
    auto t1 = std::chrono::steady_clock::now();
    best.wall = std::min(best.wall, std::chrono::duration<double>(t1 - t0).count());
    best.cpu = std::min(best.cpu, c1 - c0);
    if (q.codes.size() != rows * cols) std::abort();
  }
  return best;
}

double rel_error(const std::vector<float>& w, uint64_t rows, uint64_t cols, const wpack::QuantSpec& spec) {
  wpack::QuantizedMatrix q = wpack::quantize(w.data(), rows, cols, spec);
  std::vector<float> out(w.size());
  wpack::dequantize(q, out.data());
  return wpack::error_stats(w.data(), out.data(), w.size()).rel_error;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t rows = 4096, cols = 4096;
  if (argc == 3) rows = std::strtoull(argv[1], nullptr, 10), cols = std::strtoull(argv[2], nullptr, 10);
  const std::vector<float> gaussian = weights(rows * cols, 0.02f, 0.0, 1);
  const std::vector<float> outliers = weights(rows * cols, 0.02f, 0.001, 2);
  const double mb = static_cast<double>(rows * cols * 2) / 1e6;

  omp_set_num_threads(1);
  std::printf("quantize throughput, %llux%llu gaussian N(0,0.02), 1 thread, MB/s of BF16 input (best of 3)\n"
              "  wall = elapsed time, cpu = process CPU time (the fair figure on a shared machine)\n",
              static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols));
  std::printf("  %-22s %14s %14s %14s %14s\n", "scheme", "mse wall", "mse cpu", "minmax wall", "minmax cpu");
  struct Row { const char* label; wpack::Scheme scheme; uint32_t group; };
  for (Row r : {Row{"int4 g128", wpack::Scheme::kInt4, 128}, Row{"fp6 (e3m2, per row)", wpack::Scheme::kFp6, 0},
                Row{"int8 (per row)", wpack::Scheme::kInt8, 0}, Row{"nf4 b64", wpack::Scheme::kNf4, 64}}) {
    Timing mse = time_best_of_3(gaussian, rows, cols, wpack::QuantSpec{r.scheme, r.group, false, wpack::Clip::kMse, 0});
    Timing rtn = time_best_of_3(gaussian, rows, cols, wpack::QuantSpec{r.scheme, r.group, false, wpack::Clip::kMinMax, 0});
    std::printf("  %-22s %14.0f %14.0f %14.0f %14.0f\n", r.label, mb / mse.wall, mb / mse.cpu, mb / rtn.wall, mb / rtn.cpu);
  }
  std::printf("  target: int4 g128 clip mse >= 300 MB/s per thread\n");
  // lut4 with one table for the tensor: its k-means counts BF16/F16 values into a histogram of bit
  // patterns and sorts a copy of float32 values (the way it took every input before).
  std::vector<float> bf16 = gaussian;
  for (float& v : bf16) v = wpack::detail::bf16_to_float(wpack::detail::float_to_bf16_bits(v));
  const wpack::QuantSpec lut{wpack::Scheme::kLut4, 0, false, wpack::Clip::kMse, 0};
  for (int threads : {1, omp_get_num_procs()}) {
    omp_set_num_threads(threads);
    const Timing hist = time_best_of_3(bf16, rows, cols, lut), sorted = time_best_of_3(gaussian, rows, cols, lut);
    std::printf("  lut4 (one table), %d thread%s: BF16 values (histogram) %.0f wall / %.0f cpu, float32 values "
                "(sorted copy) %.0f / %.0f\n",
                threads, threads == 1 ? "" : "s", mb / hist.wall, mb / hist.cpu, mb / sorted.wall, mb / sorted.cpu);
  }

  omp_set_num_threads(omp_get_num_procs());
  std::printf("\nrel_error ||W^-W||/||W||, N(0,0.02) + 0.1%% outliers of +-10 sigma, default groups\n");
  std::printf("  %-8s %12s %12s %8s\n", "scheme", "clip mse", "RTN minmax", "mse/RTN");
  for (uint8_t code = 1; code <= 11; ++code) {
    wpack::Scheme scheme = *wpack::scheme_from_code(code);
    wpack::QuantSpec mse{scheme, 0, false, wpack::Clip::kMse, 0};
    wpack::QuantSpec rtn{scheme, 0, false, wpack::Clip::kMinMax, 0};
    double e_mse = rel_error(outliers, rows, cols, mse), e_rtn = rel_error(outliers, rows, cols, rtn);
    std::printf("  %-8s %12.5f %12.5f %8.3f\n", std::string(wpack::scheme_name(scheme)).c_str(), e_mse, e_rtn,
                e_mse / e_rtn);
  }
  return 0;
}
