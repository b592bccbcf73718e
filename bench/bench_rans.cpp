// bench_rans: the interleaved rANS plane codec against zstd on BF16 weight tiles and int4 codes.
//
//   bench_rans [--bf16-raw FILE] [--mib N] [--tile-elems N]
//
// BF16 (synthetic N(0, 0.02^2), N MiB, default 64; and FILE if given, raw little-endian BF16):
// the data is cut into 1-D tiles of 16384 elements (one 128x128 tile); each tile is split into the
// high byte plane (sign + 7 exponent bits) and the low byte plane. wpack-rANS codes the high plane
// per tile and stores the low plane raw (16384 bytes, no header), once with a table in every
// tile and once with one shared table for the file (its serialised bytes counted once). Reported beside it: the order-0
// bound (H(high byte over the whole file) + 8) / 16, zstd -3 on each plane per tile, and zstd -3 on
// each tile's raw bytes. Decode speed is one thread, MB of original bytes per second, best of 5;
// rANS decode includes copying the raw low plane, zstd-planes decodes both planes.
// int4: N(0,1) values quantised to 16 levels with an absmax scale per 128-element group, packed
// 4-bit, coded per 16384-code tile with symbol_bits = 4, against the order-0 entropy of the codes.
#include <zstd.h>  // ZSTD_compress / ZSTD_decompress baselines

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "packer/rans.h"

namespace {

using Clock = std::chrono::steady_clock;

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<float> gaussian(size_t n, float stddev, uint64_t seed) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; i += 2) {
    const double u1 = ((splitmix64(seed) >> 11) + 1.0) / 9007199254740993.0;
    const double u2 = (splitmix64(seed) >> 11) / 9007199254740992.0;
    const double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(stddev * r * std::cos(2 * M_PI * u2));
    if (i + 1 < n) out[i + 1] = static_cast<float>(stddev * r * std::sin(2 * M_PI * u2));
  }
  return out;
}

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

double entropy_bits(const std::vector<uint64_t>& hist) {
  uint64_t total = 0;
  for (uint64_t c : hist) total += c;
  double h = 0;
  for (uint64_t c : hist)
    if (c) h -= double(c) / total * std::log2(double(c) / total);
  return h;
}

template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

std::vector<uint8_t> zstd3(const uint8_t* data, size_t n) {
  std::vector<uint8_t> out(ZSTD_compressBound(n));
  const size_t r = ZSTD_compress(out.data(), out.size(), data, n, 3);
  if (ZSTD_isError(r)) throw std::runtime_error("zstd compress failed");
  out.resize(r);
  return out;
}

void zstd_dec(const std::vector<uint8_t>& in, uint8_t* out, size_t n) {
  const size_t r = ZSTD_decompress(out, n, in.data(), in.size());
  if (ZSTD_isError(r) || r != n) throw std::runtime_error("zstd decompress failed");
}

void bench_bf16(const std::string& label, const std::vector<uint16_t>& values, size_t tile_elems, bool shared_table) {
  const size_t tiles = values.size() / tile_elems;
  const size_t n = tiles * tile_elems;
  if (tiles == 0) {
    std::printf("%s: fewer than %zu elements, skipped\n", label.c_str(), tile_elems);
    return;
  }
  std::vector<uint8_t> hi(n), lo(n), raw(2 * n);
  std::vector<uint64_t> hist(256);
  for (size_t i = 0; i < n; ++i) {
    hi[i] = static_cast<uint8_t>(values[i] >> 8);
    lo[i] = static_cast<uint8_t>(values[i]);
    std::memcpy(&raw[2 * i], &values[i], 2);
    ++hist[hi[i]];
  }
  const double h = entropy_bits(hist);
  const double original = 2.0 * n;
  const double bound = n * (h + 8) / 8;

  wpack::RansTable table;
  std::vector<uint8_t> table_bytes;
  if (shared_table) {
    table = wpack::build_rans_table(hist, 8);
    table_bytes = wpack::serialize_rans_table(table);
  }
  const wpack::RansTable* shared = shared_table ? &table : nullptr;

  std::vector<std::vector<uint8_t>> rans(tiles), z_hi(tiles), z_lo(tiles), z_raw(tiles);
  size_t rans_bytes = table_bytes.size(), zp_bytes = 0, zr_bytes = 0, rans_coded_tiles = 0;
  for (size_t t = 0; t < tiles; ++t) {
    rans[t] = wpack::rans_encode({&hi[t * tile_elems], tile_elems}, tile_elems, 8, shared);
    rans_coded_tiles += rans[t][0] == 1 || rans[t][0] == 3;
    rans_bytes += rans[t].size() + tile_elems;
    z_hi[t] = zstd3(&hi[t * tile_elems], tile_elems);
    z_lo[t] = zstd3(&lo[t * tile_elems], tile_elems);
    z_raw[t] = zstd3(&raw[2 * t * tile_elems], 2 * tile_elems);
    zp_bytes += z_hi[t].size() + z_lo[t].size();
    zr_bytes += z_raw[t].size();
  }

  std::vector<uint8_t> out_hi(n), out_lo(n), out_raw(2 * n);
  const double t_rans = best_seconds(5, [&] {
    for (size_t t = 0; t < tiles; ++t) {
      wpack::rans_decode(rans[t], tile_elems, 8, {&out_hi[t * tile_elems], tile_elems}, shared);
      std::memcpy(&out_lo[t * tile_elems], &lo[t * tile_elems], tile_elems);
    }
  });
  if (out_hi != hi) throw std::runtime_error("rANS round trip failed");
  const double t_zp = best_seconds(5, [&] {
    for (size_t t = 0; t < tiles; ++t) {
      zstd_dec(z_hi[t], &out_hi[t * tile_elems], tile_elems);
      zstd_dec(z_lo[t], &out_lo[t * tile_elems], tile_elems);
    }
  });
  const double t_zr = best_seconds(5, [&] {
    for (size_t t = 0; t < tiles; ++t) zstd_dec(z_raw[t], &out_raw[2 * t * tile_elems], 2 * tile_elems);
  });
  if (out_raw != raw) throw std::runtime_error("zstd round trip failed");

  auto line = [&](const char* name, double bytes, double seconds) {
    std::printf("  %-26s %12.0f B  ratio %.4f  gap to bound %+7.3f%%", name, bytes, bytes / original,
                100.0 * (bytes - bound) / bound);
    if (seconds > 0) std::printf("  decode %7.0f MB/s", original / seconds / 1e6);
    std::printf("\n");
  };
  std::printf("%s: %zu tiles x %zu BF16 elements, H(high byte) = %.4f bits, bound ratio %.4f%s\n", label.c_str(),
              tiles, tile_elems, h, bound / original, shared_table ? ", shared table" : "");
  line("order-0 bound", bound, 0);
  line(shared_table ? "rANS hi (shared) + raw lo" : "rANS hi + raw lo", double(rans_bytes), t_rans);
  line("zstd-3 hi + zstd-3 lo", double(zp_bytes), t_zp);
  line("zstd-3 raw tile", double(zr_bytes), t_zr);
  std::printf("  rANS-coded tiles %zu/%zu, mean stream %.1f B, table %zu B; rANS/zstd-planes decode speed %.2f\n",
              rans_coded_tiles, tiles, double(rans_bytes - table_bytes.size() - n) / tiles, table_bytes.size(),
              t_zp / t_rans);
}

void bench_int4(const std::string& label, const std::vector<float>& weights, size_t tile_codes) {
  const size_t n = weights.size() / tile_codes * tile_codes;
  const std::vector<float> w(weights.begin(), weights.begin() + static_cast<ptrdiff_t>(n));
  std::vector<uint8_t> codes(n);
  std::vector<uint64_t> hist(16);
  for (size_t g = 0; g < n; g += 128) {
    float absmax = 0;
    for (size_t i = g; i < g + 128; ++i) absmax = std::max(absmax, std::fabs(w[i]));
    const float scale = absmax > 0 ? absmax / 7.5f : 1.0f;
    for (size_t i = g; i < g + 128; ++i) {
      const long q = std::lround(w[i] / scale);
      codes[i] = static_cast<uint8_t>(std::clamp<long>(q, -8, 7) + 8);
      ++hist[codes[i]];
    }
  }
  std::vector<uint8_t> packed(n / 2);
  for (size_t i = 0; i < n; i += 2) packed[i / 2] = static_cast<uint8_t>(codes[i] | (codes[i + 1] << 4));
  const double h = entropy_bits(hist);
  size_t rans_bytes = 0, z_bytes = 0;
  const size_t tile_bytes = tile_codes / 2;
  std::vector<uint8_t> check(tile_bytes);
  for (size_t t = 0; t < n / tile_codes; ++t) {
    const std::span<const uint8_t> in(&packed[t * tile_bytes], tile_bytes);
    const auto s = wpack::rans_encode(in, tile_codes, 4);
    wpack::rans_decode(s, tile_codes, 4, check);
    if (!std::equal(check.begin(), check.end(), in.begin())) throw std::runtime_error("int4 round trip failed");
    rans_bytes += s.size();
    z_bytes += zstd3(in.data(), in.size()).size();
  }
  const double bound = n * h / 8;
  std::printf("int4 (%s): %zu codes in tiles of %zu, H(codes) = %.4f bits/code\n", label.c_str(), n, tile_codes, h);
  std::printf("  rANS  %10zu B  %.4f bits/code  vs entropy %+7.3f%%\n", rans_bytes, 8.0 * rans_bytes / n,
              100.0 * (rans_bytes - bound) / bound);
  std::printf("  zstd-3 %9zu B  %.4f bits/code  vs entropy %+7.3f%%\n", z_bytes, 8.0 * z_bytes / n,
              100.0 * (z_bytes - bound) / bound);
}

}  // namespace

int main(int argc, char** argv) {
  std::string raw_file;
  size_t mib = 64, tile_elems = 16384;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--bf16-raw" && i + 1 < argc) raw_file = argv[++i];
    else if (a == "--mib" && i + 1 < argc) mib = std::stoul(argv[++i]);
    else if (a == "--tile-elems" && i + 1 < argc) tile_elems = std::stoul(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_rans [--bf16-raw FILE] [--mib N] [--tile-elems N]\n");
      return 2;
    }
  }
  try {
    {
      const std::vector<float> f = gaussian(mib * 1024 * 1024 / 2, 0.02f, 1);
      std::vector<uint16_t> v(f.size());
      for (size_t i = 0; i < f.size(); ++i) v[i] = to_bf16(f[i]);
      bench_bf16("synthetic N(0, 0.02) BF16, " + std::to_string(mib) + " MiB", v, tile_elems, false);
      bench_bf16("synthetic N(0, 0.02) BF16, " + std::to_string(mib) + " MiB", v, tile_elems, true);
    }
    if (!raw_file.empty()) {
      std::ifstream in(raw_file, std::ios::binary);
      if (!in) throw std::runtime_error("cannot open " + raw_file);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::vector<uint16_t> v(bytes.size() / 2);
      std::memcpy(v.data(), bytes.data(), v.size() * 2);
      bench_bf16(raw_file, v, tile_elems, false);
      bench_bf16(raw_file, v, tile_elems, true);
      std::vector<float> real(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        const uint32_t bits = uint32_t(v[i]) << 16;
        std::memcpy(&real[i], &bits, 4);
      }
      bench_int4(raw_file + ", absmax per 128 along the flattened tensors", real, tile_elems);
    } else {
      std::printf("(no --bf16-raw FILE: real-model case skipped)\n");
    }
    bench_int4("synthetic N(0, 1)", gaussian(std::min<size_t>(mib, 16) * 1024 * 1024, 1.0f, 7), tile_elems);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rans: %s\n", e.what());
    return 1;
  }
  return 0;
}
