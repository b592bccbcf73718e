#include "packer/estimate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "packer/filters.h"

namespace wpack {
namespace {

double entropy_of(const std::array<uint64_t, 256>& hist, uint64_t n) {
  if (n == 0) return 0;
  double h = 0;
  for (uint64_t c : hist)
    if (c) {
      const double p = double(c) / double(n);
      h -= p * std::log2(p);
    }
  return h;
}

}  // namespace

double order0_entropy_bits(std::span<const uint8_t> bytes) {
  // Four histograms, merged at the end: consecutive equal bytes then update different counters,
  // which breaks the store-to-load dependency that makes a single histogram slow.
  std::array<std::array<uint32_t, 256>, 4> part{};
  const uint8_t* p = bytes.data();
  const uint64_t n = bytes.size();
  uint64_t i = 0;
  std::array<uint64_t, 256> hist{};
  while (i < n) {
    // Flush before a 32-bit counter could overflow.
    const uint64_t end = std::min<uint64_t>(n, i + (uint64_t(1) << 30));
    for (; i + 4 <= end; i += 4) {
      part[0][p[i]]++;
      part[1][p[i + 1]]++;
      part[2][p[i + 2]]++;
      part[3][p[i + 3]]++;
    }
    for (; i < end; ++i) part[0][p[i]]++;
    for (int k = 0; k < 4; ++k)
      for (int b = 0; b < 256; ++b) {
        hist[b] += part[k][b];
        part[k][b] = 0;
      }
  }
  return entropy_of(hist, n);
}

double lossless_entropy_bytes(DType dtype, std::span<const uint8_t> bytes) {
  const uint32_t esize = dtype_size(dtype);
  const uint64_t n = bytes.size() / esize;
  if (n == 0) return 0;
  const Filter filter = dtype_is_float(dtype) ? Filter::kFloatPlanes : Filter::kByteShuffle;
  // Histogram per plane in chunks, so that no second copy of a large tensor is made.
  std::vector<std::array<uint64_t, 256>> hist(esize);
  for (auto& h : hist) h.fill(0);
  constexpr uint64_t kChunk = 1 << 16;
  std::vector<uint8_t> planes;
  for (uint64_t first = 0; first < n; first += kChunk) {
    const uint64_t count = std::min(kChunk, n - first);
    planes.resize(count * esize);
    apply_filter(filter, esize, bytes.subspan(first * esize, count * esize), planes);
    for (uint32_t p = 0; p < esize; ++p)
      for (uint64_t i = 0; i < count; ++i) hist[p][planes[p * count + i]]++;
  }
  double total = 0;
  for (uint32_t p = 0; p < esize; ++p) total += entropy_of(hist[p], n) * double(n) / 8.0;
  return total;
}

}  // namespace wpack
