// Pruning masks: exact counts, N:M in every group, deterministic ties, spec parsing.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <vector>

#include "formats/error.h"
#include "packer/prune.h"
#include "test_util.h"

using namespace wpack;

namespace {
std::vector<float> gaussian(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> bytes = test::gaussian_f32(n, 1.0f, seed);
  std::vector<float> v(n);
  if (n != 0) std::memcpy(v.data(), bytes.data(), bytes.size());  // both null when n == 0
  return v;
}
uint64_t zeros(const std::vector<uint8_t>& mask) {
  uint64_t z = 0;
  for (uint8_t m : mask) z += m == 0;
  return z;
}
}  // namespace

TEST_CASE("magnitude pruning zeroes exactly round(fraction * n), smallest first") {
  for (uint64_t n : {0ull, 1ull, 7ull, 1000ull, 4097ull}) {
    std::vector<float> w = gaussian(n, n + 1);
    for (double fraction : {0.0, 0.1, 0.25, 0.5, 0.9, 1.0}) {
      std::vector<uint8_t> mask = prune_mask_magnitude(w.data(), n, fraction);
      INFO("n " << n << " fraction " << fraction);
      REQUIRE(mask.size() == n);
      REQUIRE(zeros(mask) == static_cast<uint64_t>(std::llround(fraction * double(n))));
      REQUIRE(mask == prune_mask_magnitude_ref(w.data(), n, fraction));
      float max_pruned = 0, min_kept = INFINITY;
      for (uint64_t i = 0; i < n; ++i)
        (mask[i] ? min_kept : max_pruned) =
            mask[i] ? std::min(min_kept, std::fabs(w[i])) : std::max(max_pruned, std::fabs(w[i]));
      REQUIRE(max_pruned <= min_kept);
    }
  }
}

TEST_CASE("magnitude pruning breaks ties by index") {
  const std::vector<float> w = {1, -1, 1, 0.5f, -1, 1};
  // 0.5 goes first, then the equal magnitudes in index order: 0, 1.
  REQUIRE(prune_mask_magnitude(w.data(), 6, 0.5) == std::vector<uint8_t>{0, 0, 1, 0, 1, 1});
  std::vector<float> same(1000, 0.25f);
  std::vector<uint8_t> mask = prune_mask_magnitude(same.data(), same.size(), 0.3);
  for (size_t i = 0; i < same.size(); ++i) REQUIRE(mask[i] == (i < 300 ? 0 : 1));
}

// The fast mask selects the threshold magnitude by histograms of its high and low bits (on all
// threads) and takes the ties at it in index order: equal to the full sort on inputs whose threshold
// bucket is crowded (BF16-exact values, many of them equal), on neighbouring floats that share their
// high bits, with +-0, infinities and subnormals, on 1 and 2 threads.
TEST_CASE("magnitude pruning by radix select equals the full sort on ties, neighbours and extremes") {
  const uint64_t n = 300000;  // 2 threads' worth of values for the histograms (2 * 2^16 each)
  std::vector<float> bf16 = gaussian(n, 9);
  for (float& v : bf16) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits &= 0xFFFF0000u;
    std::memcpy(&v, &bits, 4);
  }
  for (uint64_t i = 0; i < n; i += 7) bf16[i] = (i / 7) % 2 ? -0.0f : 0.0f;
  std::vector<float> neighbours(n);  // 1.0 and the next 4999 floats up, each 60 times, both signs
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t bits = 0x3F800000u + static_cast<uint32_t>((i * 7919) % 5000);
    std::memcpy(&neighbours[i], &bits, 4);
    if (i % 3 == 0) neighbours[i] = -neighbours[i];
  }
  std::vector<float> extremes = gaussian(n, 10);
  for (uint64_t i = 0; i < n; i += 101) extremes[i] = (i % 2 ? 1 : -1) * INFINITY;
  for (uint64_t i = 50; i < n; i += 103) extremes[i] = std::ldexp(1.0f, -140) * static_cast<float>(i % 5);
  for (uint64_t i = 25; i < n; i += 107) extremes[i] = -3.4e38f;
  const int saved = omp_get_max_threads();
  for (const auto& [name, w] : {std::pair{"bf16", &bf16}, {"neighbours", &neighbours}, {"extremes", &extremes}})
    for (double fraction : {0.001, 0.3, 0.5, 0.77, 0.999, 1.0}) {
      const std::vector<uint8_t> ref = prune_mask_magnitude_ref(w->data(), n, fraction);
      for (int threads : {1, 2}) {
        INFO(name << " fraction " << fraction << " threads " << threads);
        omp_set_num_threads(threads);
        REQUIRE(prune_mask_magnitude(w->data(), n, fraction) == ref);
      }
    }
  omp_set_num_threads(saved);
}

TEST_CASE("MagnitudePruner over pieces equals the whole-tensor mask") {
  const uint64_t n = 10007;
  std::vector<float> w = gaussian(n, 31);
  for (uint64_t i = 0; i < n; i += 5) w[i] = 0.5f;  // ties spread over every piece
  for (double fraction : {0.0, 0.2, 0.5, 0.9, 1.0}) {
    INFO("fraction " << fraction);
    const std::vector<uint8_t> whole = prune_mask_magnitude(w.data(), n, fraction);
    for (uint64_t piece : {1ull, 999ull, 4096ull}) {
      MagnitudePruner pruner(n, fraction);
      for (uint64_t i = 0; i < n; i += piece) pruner.add_high(w.data() + i, std::min(piece, n - i), i);
      for (uint64_t i = 0; i < n; i += piece) pruner.add_low(w.data() + i, std::min(piece, n - i));
      std::vector<uint8_t> mask(n);
      for (uint64_t i = 0; i < n; i += piece) pruner.mask(w.data() + i, std::min(piece, n - i), mask.data() + i);
      REQUIRE(mask == whole);
    }
  }
}

TEST_CASE("N:M keeps the N largest of every M along K") {
  for (auto [n, m] : {std::pair{2u, 4u}, {4u, 8u}, {1u, 4u}, {3u, 3u}}) {
    const uint64_t rows = 5, cols = 37;  // short last group (37 % m != 0 for m = 4, 8, 3)
    std::vector<float> w = gaussian(rows * cols, 100 + m);
    std::vector<uint8_t> mask = prune_mask_nm(w.data(), rows, cols, n, m);
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t begin = 0; begin < cols; begin += m) {
        uint64_t len = std::min<uint64_t>(m, cols - begin);
        uint64_t kept = 0;
        float min_kept = INFINITY, max_pruned = 0;
        for (uint64_t j = begin; j < begin + len; ++j) {
          float a = std::fabs(w[r * cols + j]);
          if (mask[r * cols + j]) ++kept, min_kept = std::min(min_kept, a);
          else max_pruned = std::max(max_pruned, a);
        }
        INFO(n << ":" << m << " row " << r << " group at " << begin);
        REQUIRE(kept == std::min<uint64_t>(n, len));
        REQUIRE(max_pruned <= min_kept);
      }
    }
  }
  // Ties: the lower index is kept.
  const std::vector<float> w = {1, 1, 1, 1, -2, 0, 2, 0};
  REQUIRE(prune_mask_nm(w.data(), 1, 8, 2, 4) == std::vector<uint8_t>{1, 1, 0, 0, 1, 0, 1, 0});
}

TEST_CASE("apply_prune_mask and bad arguments") {
  std::vector<float> w = {1, 2, 3};
  const std::vector<uint8_t> mask = {1, 0, 1};
  apply_prune_mask(w.data(), mask.data(), 3);
  REQUIRE(w == std::vector<float>{1, 0, 3});
  REQUIRE_THROWS_AS(prune_mask_magnitude(w.data(), 3, 1.5), Error);
  REQUIRE_THROWS_AS(prune_mask_magnitude(w.data(), 3, -0.1), Error);
  REQUIRE_THROWS_AS(prune_mask_nm(w.data(), 1, 3, 0, 4), Error);
  REQUIRE_THROWS_AS(prune_mask_nm(w.data(), 1, 3, 5, 4), Error);
  const float nan_w[2] = {1, NAN};
  REQUIRE_THROWS_AS(prune_mask_magnitude(nan_w, 2, 0.5), Error);
}

TEST_CASE("parse_prune") {
  PruneSpec a = parse_prune("0.5");
  REQUIRE(a.kind == PruneSpec::Kind::kFraction);
  REQUIRE(a.fraction == 0.5);
  PruneSpec b = parse_prune("2:4");
  REQUIRE(b.kind == PruneSpec::Kind::kNM);
  REQUIRE((b.n == 2 && b.m == 4));
  REQUIRE(parse_prune("4:8").m == 8);
  REQUIRE(parse_prune("1").fraction == 1.0);
  for (const char* bad : {"", "1.5", "-0.1", "0:4", "5:4", "2:", ":4", "2:4x", "abc", "0.5 ", "2:300"}) {
    INFO("'" << bad << "'");
    try {
      parse_prune(bad);
      FAIL("accepted");
    } catch (const Error& e) {
      REQUIRE(e.code() == ErrorCode::kInvalidArgument);
    }
  }
}

TEST_CASE("prune_mask applies the spec it is given") {
  const uint64_t rows = 6, cols = 20;
  const std::vector<float> w = gaussian(rows * cols, 31);
  REQUIRE(prune_mask(PruneSpec{}, w.data(), rows, cols).empty());
  const PruneSpec fraction = parse_prune("0.3");
  const auto by_fraction = prune_mask(fraction, w.data(), rows, cols);
  REQUIRE(by_fraction == prune_mask_magnitude(w.data(), w.size(), 0.3));
  REQUIRE(zeros(by_fraction) == 36);
  const auto by_nm = prune_mask(parse_prune("2:4"), w.data(), rows, cols);
  REQUIRE(by_nm == prune_mask_nm(w.data(), rows, cols, 2, 4));
  REQUIRE(zeros(by_nm) == 60);
}
