// bench_rans: the interleaved rANS plane codec against zstd on BF16 weight tiles and int4 codes.
//
//   bench_rans [--model FILE.safetensors | --bf16-raw FILE] [--mib N] [--tile-elems N]
//
// BF16 (synthetic N(0, 0.02^2), N MiB, default 64; and the model's BF16 tensors concatenated in
// file order, or FILE of raw little-endian BF16): the data is cut into 1-D tiles of 16384 elements
// (one 128x128 tile); each tile is split into the high byte plane (sign + 7 exponent bits) and the
// low byte plane. wpack-rANS codes the high plane per tile and stores the low plane raw (16384
// bytes, no header), once with a table in every tile and once with one shared table for the file
// (its serialised bytes counted once). Reported beside it: the order-0 bound (H(high byte over the
// whole file) + 8) / 16, zstd -3 on each plane per tile, and zstd -3 on each tile's raw bytes.
// Decode speed is one thread, MB of original bytes per second, best of 5; rANS decode includes
// copying the raw low plane, zstd-planes decodes both planes.
//
// int4: weights quantised to 16 levels with an absmax scale per 128 consecutive elements of a row
// (a group along K), cut into 128x128 tiles like the packer does (edge tiles smaller), one rANS
// stream of 4-bit codes per tile, every byte counted. The target is the order-0 entropy of the
// codes per tensor (sum over tensors of codes x H(that tensor's codes)); also printed: the entropy
// over all codes of the file (higher: it mixes tensors) and the sum of each tile's own order-0
// entropy (what per-tile tables would reach if they and the lane states were free). --model: every
// 2-D BF16 tensor whose rows are a multiple of 128 long; --bf16-raw: the whole file as one tensor
// of 128-element rows; synthetic: N(0, 1), 4096 columns.
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

#include "formats/tensor.h"  // open_tensor_source: the --model file
#include "packer/rans.h"
#include "synthetic_weights.h"  // gaussian (tests/)

namespace {

using Clock = std::chrono::steady_clock;

using wpack::test::gaussian;

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

// A 2-D float matrix, row-major.
struct Matrix {
  std::string name;
  size_t rows = 0, cols = 0;
  std::vector<float> values;
};

// int4 codes 0..15 (absmax / 7.5 per 128 elements of a row; cols % 128 == 0).
std::vector<uint8_t> int4_codes(const Matrix& m) {
  std::vector<uint8_t> codes(m.values.size());
  for (size_t g = 0; g < codes.size(); g += 128) {
    float absmax = 0;
    for (size_t i = g; i < g + 128; ++i) absmax = std::max(absmax, std::fabs(m.values[i]));
    const float scale = absmax > 0 ? absmax / 7.5f : 1.0f;
    for (size_t i = g; i < g + 128; ++i) {
      const long q = std::lround(m.values[i] / scale);
      codes[i] = static_cast<uint8_t>(std::clamp<long>(q, -8, 7) + 8);
    }
  }
  return codes;
}

double entropy_total_bits(const std::vector<uint64_t>& hist) {  // count x H
  uint64_t total = 0;
  for (uint64_t c : hist) total += c;
  return total ? entropy_bits(hist) * double(total) : 0.0;
}

void bench_int4(const std::string& label, const std::vector<Matrix>& tensors) {
  constexpr size_t kTile = 128;
  double tensor_bits = 0, tile_bits = 0;
  std::vector<uint64_t> file_hist(16);
  size_t codes_total = 0, streams = 0, rans_bytes = 0, z_bytes = 0;
  for (const Matrix& m : tensors) {
    const std::vector<uint8_t> codes = int4_codes(m);
    std::vector<uint64_t> hist(16);
    for (uint8_t c : codes) ++hist[c], ++file_hist[c];
    tensor_bits += entropy_total_bits(hist);
    codes_total += codes.size();
    for (size_t r0 = 0; r0 < m.rows; r0 += kTile) {
      for (size_t c0 = 0; c0 < m.cols; c0 += kTile) {
        const size_t rows = std::min(kTile, m.rows - r0), cols = std::min(kTile, m.cols - c0);
        std::vector<uint8_t> packed((rows * cols + 1) / 2);  // codes row-major in the tile, 2 per byte
        std::vector<uint64_t> tile_hist(16);
        for (size_t r = 0; r < rows; ++r)
          for (size_t c = 0; c < cols; ++c) {
            const size_t i = r * cols + c;
            const uint8_t code = codes[(r0 + r) * m.cols + c0 + c];
            packed[i / 2] |= static_cast<uint8_t>(code << (4 * (i % 2)));
            ++tile_hist[code];
          }
        tile_bits += entropy_total_bits(tile_hist);
        const auto stream = wpack::rans_encode(packed, rows * cols, 4);
        std::vector<uint8_t> check(packed.size());
        wpack::rans_decode(stream, rows * cols, 4, check);
        if (check != packed) throw std::runtime_error("int4 round trip failed");
        rans_bytes += stream.size();
        z_bytes += std::min(zstd3(packed.data(), packed.size()).size(), packed.size());  // zstd or raw
        ++streams;
      }
    }
  }
  const double file_bits = entropy_total_bits(file_hist);
  std::printf("int4 (%s): %zu tensors, %zu codes, %zu tile streams\n", label.c_str(), tensors.size(), codes_total,
              streams);
  std::printf("  order-0 entropy per tensor %.4f bits/code (the target); of all codes %.4f; of each tile %.4f\n",
              tensor_bits / codes_total, file_bits / codes_total, tile_bits / codes_total);
  auto line = [&](const char* name, double bytes) {
    std::printf("  %-7s %10.0f B  %.4f bits/code  vs per-tensor entropy %+7.3f%%  (vs all codes %+7.3f%%, vs "
                "per-tile %+7.3f%%)\n",
                name, bytes, 8.0 * bytes / codes_total, 100.0 * (8 * bytes - tensor_bits) / tensor_bits,
                100.0 * (8 * bytes - file_bits) / file_bits, 100.0 * (8 * bytes - tile_bits) / tile_bits);
  };
  line("rANS", double(rans_bytes));
  line("zstd-3", double(z_bytes));
  std::printf("  rANS bytes per stream above the tile's own entropy: %.1f\n",
              (double(rans_bytes) - tile_bits / 8) / double(streams));
}

// The BF16 tensors of a safetensors file (or any wpack input), in file order.
struct ModelBf16 {
  std::vector<uint16_t> all;     // every BF16 tensor, concatenated
  std::vector<Matrix> matrices;  // the 2-D ones with rows a multiple of 128 long, as floats
};

ModelBf16 read_model(const std::string& path) {
  ModelBf16 out;
  const auto source = wpack::open_tensor_source(path);
  for (size_t t = 0; t < source->tensors().size(); ++t) {
    const wpack::TensorInfo& info = source->tensors()[t];
    if (info.dtype != wpack::DType::BF16) continue;
    const wpack::TensorBytes bytes = source->read(t);
    std::vector<uint16_t> v(bytes.size() / 2);
    std::memcpy(v.data(), bytes.data(), v.size() * 2);
    out.all.insert(out.all.end(), v.begin(), v.end());
    if (info.shape.size() != 2 || info.shape[1] % 128 != 0 || v.empty()) continue;
    Matrix m{info.name, info.shape[0], info.shape[1], std::vector<float>(v.size())};
    for (size_t i = 0; i < v.size(); ++i) {
      const uint32_t bits = uint32_t(v[i]) << 16;
      std::memcpy(&m.values[i], &bits, 4);
    }
    out.matrices.push_back(std::move(m));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string raw_file, model_file;
  size_t mib = 64, tile_elems = 16384;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--bf16-raw" && i + 1 < argc) raw_file = argv[++i];
    else if (a == "--model" && i + 1 < argc) model_file = argv[++i];
    else if (a == "--mib" && i + 1 < argc) mib = std::stoul(argv[++i]);
    else if (a == "--tile-elems" && i + 1 < argc) tile_elems = std::stoul(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_rans [--model FILE.safetensors | --bf16-raw FILE] [--mib N] [--tile-elems N]\n");
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
    if (!model_file.empty()) {
      const ModelBf16 model = read_model(model_file);
      bench_bf16(model_file + " (BF16 tensors)", model.all, tile_elems, false);
      bench_bf16(model_file + " (BF16 tensors)", model.all, tile_elems, true);
      bench_int4(model_file + ", 2-D BF16 tensors", model.matrices);
    } else if (!raw_file.empty()) {
      std::ifstream in(raw_file, std::ios::binary);
      if (!in) throw std::runtime_error("cannot open " + raw_file);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::vector<uint16_t> v(bytes.size() / 2);
      std::memcpy(v.data(), bytes.data(), v.size() * 2);
      bench_bf16(raw_file, v, tile_elems, false);
      bench_bf16(raw_file, v, tile_elems, true);
      Matrix whole{raw_file, v.size() / 128, 128, std::vector<float>(v.size() / 128 * 128)};
      for (size_t i = 0; i < whole.values.size(); ++i) {
        const uint32_t bits = uint32_t(v[i]) << 16;
        std::memcpy(&whole.values[i], &bits, 4);
      }
      bench_int4(raw_file + " as one tensor of 128-element rows", {whole});
    } else {
      std::printf("(no --model or --bf16-raw FILE: real-model case skipped)\n");
    }
    const size_t synthetic_codes = std::min<size_t>(mib, 16) * 1024 * 1024;
    bench_int4("synthetic N(0, 1)", {Matrix{"synthetic", synthetic_codes / 4096, 4096, gaussian(synthetic_codes, 1.0f, 7)}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rans: %s\n", e.what());
    return 1;
  }
  return 0;
}
