// Filter throughput: fast paths (packer/filters.cpp) beside the scalar references
// (packer/detail/filters_ref.cpp), on 64 MiB of gaussian BF16 and F32 weights, one thread.
//
//   build-*/bench/bench_filters
//
// MB/s counts input bytes (1 MB = 1e6 bytes). The fast paths run over the whole 64 MiB buffer
// (best of 3) and over 256 KiB tiles of it (what the packer hands them, L2-resident); the
// references, which are per-bit loops, over the first 2 MiB only to keep the run short.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "packer/detail/filters_ref.h"
#include "packer/filters.h"
#include "synthetic_weights.h"  // gaussian (tests/)

using namespace wpack;

namespace {

constexpr size_t kBytes = size_t{64} << 20;
constexpr size_t kTileBytes = size_t{256} << 10;
constexpr size_t kRefBytes = size_t{2} << 20;

using wpack::test::gaussian;

std::vector<uint8_t> as_f32_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());  // x86-64 and aarch64: little-endian
  return bytes;
}

std::vector<uint8_t> as_bf16_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    const uint32_t rounded = bits + 0x7FFF + ((bits >> 16) & 1);  // round to nearest even (no NaNs here)
    bytes[2 * i] = static_cast<uint8_t>(rounded >> 16);
    bytes[2 * i + 1] = static_cast<uint8_t>(rounded >> 24);
  }
  return bytes;
}

using FilterFn = void (*)(Filter, uint32_t, std::span<const uint8_t>, std::span<uint8_t>);

// Best-of-`repeats` throughput of fn over `in`, in `chunk`-byte calls.
double mb_per_s(FilterFn fn, Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out,
                size_t chunk, int repeats) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (size_t offset = 0; offset < in.size(); offset += chunk) {
      const size_t len = std::min(chunk, in.size() - offset);
      fn(filter, elem_size, in.subspan(offset, len), out.subspan(offset, len));
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return static_cast<double>(in.size()) / best / 1e6;
}

}  // namespace

int main() {
  const std::vector<float> values = gaussian(kBytes / 2, 0.02f, 1);
  struct Data {
    const char* name;
    uint32_t elem_size;
    std::vector<uint8_t> bytes;
  };
  const Data datasets[] = {{"BF16", 2, as_bf16_bytes(values)},
                           {"F32", 4, as_f32_bytes(std::vector<float>(values.begin(), values.begin() + kBytes / 4))}};
  std::vector<uint8_t> filtered(kBytes), restored(kBytes);

  std::printf("%-5s %-12s %-5s %14s %14s %14s %8s\n", "dtype", "filter", "dir", "fast 64MiB", "fast 256KiB",
              "ref", "speedup");
  for (const Data& data : datasets) {
    for (Filter filter : {Filter::kNone, Filter::kByteShuffle, Filter::kBitShuffle, Filter::kFloatPlanes}) {
      const std::span<const uint8_t> in(data.bytes);
      const double apply_whole = mb_per_s(apply_filter, filter, data.elem_size, in, filtered, kBytes, 3);
      const double apply_tiles = mb_per_s(apply_filter, filter, data.elem_size, in, filtered, kTileBytes, 3);
      const double apply_ref =
          mb_per_s(ref::apply_filter_ref, filter, data.elem_size, in.first(kRefBytes), restored, kTileBytes, 1);
      const double undo_whole = mb_per_s(undo_filter, filter, data.elem_size, filtered, restored, kBytes, 3);
      const double undo_tiles = mb_per_s(undo_filter, filter, data.elem_size, filtered, restored, kTileBytes, 3);
      const double undo_ref = mb_per_s(ref::undo_filter_ref, filter, data.elem_size,
                                       std::span<const uint8_t>(filtered).first(kRefBytes), restored, kTileBytes, 1);
      // The last undo ran over 256 KiB tiles of tile-filtered data: it must give the input back.
      const bool ok = std::memcmp(restored.data(), data.bytes.data(), kBytes) == 0;
      std::printf("%-5s %-12s %-5s %9.0f MB/s %9.0f MB/s %9.1f MB/s %7.0fx\n", data.name,
                  std::string(filter_name(filter)).c_str(), "apply", apply_whole, apply_tiles, apply_ref,
                  apply_tiles / apply_ref);
      std::printf("%-5s %-12s %-5s %9.0f MB/s %9.0f MB/s %9.1f MB/s %7.0fx%s\n", data.name,
                  std::string(filter_name(filter)).c_str(), "undo", undo_whole, undo_tiles, undo_ref,
                  undo_tiles / undo_ref, ok ? "" : "  ROUND TRIP FAILED");
      if (!ok) return 1;
    }
  }
  return 0;
}
