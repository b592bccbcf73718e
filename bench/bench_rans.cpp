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
// copying the raw low plane, zstd-planes decodes both planes; the scalar reference decoder and the
// AVX2 loop are timed beside rans_decode (AVX-512, else AVX2, else scalar: what the CPU has).
//
// int4: weights quantised to 16 levels with an absmax scale per 128 consecutive elements of a row
// (a group along K), cut into 128x128 tiles like the packer does (edge tiles smaller), one rANS
// stream of 4-bit codes per tile, every byte counted. The target is the order-0 entropy of the
// codes per tensor (sum over tensors of codes x H(that tensor's codes)); also printed: the entropy
// over all codes of the file (higher: it mixes tensors) and the sum of each tile's own order-0
// entropy (what per-tile tables would reach if they and the lane states were free). --model: every
// 2-D BF16 tensor whose rows are a multiple of 128 long; --bf16-raw: the whole file as one tensor
// of 128-element rows; synthetic: N(0, 1), 4096 columns.
//
// int4 as packed: the same tensors quantized as `wpack compress --scheme int4` does (quantize():
// asymmetric, a u8 zero point per group of 128 along K, clip mse), cut into 128x128 tiles and coded
// by the packer's tile encoder (QuantTileEncoder, codec rans). The target is again the order-0
// entropy of these codes per tensor. Plane B of each tile (the codes) is counted: rANS on the plain
// codes (layout 4, what the packer wrote before layout 6), rANS on the zero-relative symbols
// s = (code - zero) mod 16 (layout 6, what the packer stores now; docs/FORMAT.md "Quantized tiles"),
// and zstd -3 on the packed codes; also the whole stored tiles (plane directory, plane A with the
// fp16 scales and zero points, plane B) in bits per weight. Every tile is decoded again
// (decode_quant_tile_ref) and compared with dequantize().
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
#include "packer/detail/fp.h"  // float_to_bf16_bits
#include "packer/detail/rans_decode.h"  // the scalar reference decoder, beside the fast one
#include "packer/quant_tile.h"  // QuantTileEncoder, decode_quant_tile_ref: int4 as packed
#include "packer/quantize.h"
#include "packer/rans.h"
#include "packer/tile_codec.h"  // split_planes: plane B of a stored tile
#include "packer/tiling.h"
#include "synthetic_weights.h"  // gaussian (tests/)

namespace {

using Clock = std::chrono::steady_clock;

using wpack::test::gaussian;

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
  // rans_decode (what this CPU runs), the scalar reference decoder and the AVX2 loop, the same way
  auto time_decode = [&](wpack::detail::RansDecodeFn decoder, const char* what) {
    const double seconds = best_seconds(5, [&] {
      for (size_t t = 0; t < tiles; ++t) {
        decoder(rans[t], tile_elems, 8, {&out_hi[t * tile_elems], tile_elems}, shared);
        std::memcpy(&out_lo[t * tile_elems], &lo[t * tile_elems], tile_elems);
      }
    });
    if (out_hi != hi) throw std::runtime_error(std::string(what) + " round trip failed");
    return seconds;
  };
  const double t_rans = time_decode(wpack::rans_decode, "rANS");
  const double t_rans_ref = time_decode(wpack::detail::rans_decode_reference, "rANS reference");
  const double t_rans_avx2 = time_decode(wpack::detail::rans_decode_avx2, "rANS AVX2");
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
  line("  same, scalar reference", double(rans_bytes), t_rans_ref);
  line("  same, AVX2 loop", double(rans_bytes), t_rans_avx2);
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

// The codes of tile `rect` of a code matrix with `cols` columns, row-major in the tile, packed two
// per byte (low nibble first): rANS's 4-bit symbols, and plane B of a dense int4 tile.
std::vector<uint8_t> tile_nibbles(const uint8_t* codes, uint64_t cols, const wpack::TileRect& rect) {
  std::vector<uint8_t> packed((rect.elements() + 1) / 2);
  for (uint64_t r = 0; r < rect.rows; ++r)
    for (uint64_t c = 0; c < rect.cols; ++c) {
      const uint64_t i = r * rect.cols + c;
      packed[i / 2] |= static_cast<uint8_t>(codes[(rect.row0 + r) * cols + rect.col0 + c] << (4 * (i % 2)));
    }
  return packed;
}

void bench_int4(const std::string& label, const std::vector<Matrix>& tensors) {
  double tensor_bits = 0, tile_bits = 0;
  std::vector<uint64_t> file_hist(16);
  size_t codes_total = 0, streams = 0, rans_bytes = 0, z_bytes = 0;
  for (const Matrix& m : tensors) {
    const std::vector<uint8_t> codes = int4_codes(m);
    std::vector<uint64_t> hist(16);
    for (uint8_t c : codes) ++hist[c], ++file_hist[c];
    tensor_bits += entropy_total_bits(hist);
    codes_total += codes.size();
    const wpack::TileGeometry geometry = wpack::tile_geometry(wpack::MatrixView{m.rows, m.cols}, 128, 128);
    for (uint64_t k = 0; k < geometry.tile_count(); ++k) {
      const wpack::TileRect rect = geometry.rect(k);
      const std::vector<uint8_t> packed = tile_nibbles(codes.data(), m.cols, rect);
      std::vector<uint64_t> tile_hist(16);
      for (uint64_t i = 0; i < rect.elements(); ++i) ++tile_hist[(packed[i / 2] >> (4 * (i % 2))) & 15];
      tile_bits += entropy_total_bits(tile_hist);
      const auto stream = wpack::rans_encode(packed, rect.elements(), 4);
      std::vector<uint8_t> check(packed.size());
      wpack::rans_decode(stream, rect.elements(), 4, check);
      if (check != packed) throw std::runtime_error("int4 round trip failed");
      rans_bytes += stream.size();
      z_bytes += std::min(zstd3(packed.data(), packed.size()).size(), packed.size());  // zstd or raw
      ++streams;
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

void bench_int4_packed(const std::string& label, const std::vector<Matrix>& tensors) {
  double code_bits = 0, zero_rel_bits = 0;  // sum over tensors of count x order-0 entropy
  size_t codes_total = 0, streams = 0, zero_rel_tiles = 0;
  size_t plain_bytes = 0, stored_b_bytes = 0, z_bytes = 0, tile_bytes = 0;
  wpack::QuantTileEncoder encoder;
  for (const Matrix& m : tensors) {
    wpack::QuantSpec spec;  // the packer's int4 defaults: asymmetric, group 128, clip mse
    spec.scheme = wpack::Scheme::kInt4;
    const wpack::QuantizedMatrix q = wpack::quantize(m.values.data(), m.rows, m.cols, spec);
    const wpack::QuantTensorParams params = wpack::quant_params_from(q, wpack::PruneSpec{});
    std::vector<float> expected(q.codes.size());
    wpack::dequantize(q, expected.data());
    std::vector<uint64_t> hist(16), zero_rel_hist(16);
    for (size_t r = 0; r < m.rows; ++r)
      for (size_t c = 0; c < m.cols; ++c) {
        const uint8_t code = q.codes[r * m.cols + c];
        ++hist[code];
        ++zero_rel_hist[(code - q.zeros[r * q.groups() + c / q.spec.group]) & 15];
      }
    code_bits += entropy_total_bits(hist);
    zero_rel_bits += entropy_total_bits(zero_rel_hist);
    codes_total += q.codes.size();
    const wpack::TileGeometry geometry = wpack::tile_geometry(wpack::MatrixView{m.rows, m.cols}, 128, 128);
    std::vector<float> decoded;
    for (uint64_t k = 0; k < geometry.tile_count(); ++k) {
      const wpack::TileRect rect = geometry.rect(k);
      encoder.prepare(q, params, nullptr, rect);
      const wpack::QuantEncodedTile tile = encoder.code(wpack::Codec::kRans, 0);
      decoded.resize(rect.elements());
      wpack::decode_quant_tile_ref(tile.tile.stored, tile.layout, tile.tile.codec, tile.raw_size, params, rect,
                                   decoded.data());
      for (uint64_t r = 0; r < rect.rows; ++r)
        if (std::memcmp(&decoded[r * rect.cols], &expected[(rect.row0 + r) * m.cols + rect.col0], 4 * rect.cols) != 0)
          throw std::runtime_error("int4 tile round trip failed");
      stored_b_bytes += wpack::split_planes(tile.tile.stored, 2)[1].bytes.size();  // plane B as stored
      tile_bytes += tile.tile.stored.size();
      zero_rel_tiles += tile.layout == wpack::kFilterQuantDenseZeroRel;
      // The plain codes of the tile, as layout 4 coded them.
      const std::vector<uint8_t> packed = tile_nibbles(q.codes.data(), m.cols, rect);
      plain_bytes += std::min(wpack::rans_encode(packed, rect.elements(), 4).size(), packed.size());  // rANS or raw
      z_bytes += std::min(zstd3(packed.data(), packed.size()).size(), packed.size());
      ++streams;
    }
  }
  std::printf("int4 as packed (%s; quantize(): asymmetric, group 128, clip mse): %zu codes, %zu tile streams, "
              "%zu of them layout 6\n",
              label.c_str(), codes_total, streams, zero_rel_tiles);
  std::printf("  order-0 entropy per tensor of the codes %.4f bits/code (the target); of the zero-relative symbols "
              "%.4f\n",
              code_bits / codes_total, zero_rel_bits / codes_total);
  auto line = [&](const char* name, double bytes) {
    std::printf("  %-38s %10.0f B  %.4f bits/code  vs per-tensor entropy of the codes %+7.3f%%  (vs that of the "
                "symbols %+7.3f%%)\n",
                name, bytes, 8.0 * bytes / codes_total, 100.0 * (8 * bytes - code_bits) / code_bits,
                100.0 * (8 * bytes - zero_rel_bits) / zero_rel_bits);
  };
  line("rANS, plain codes (layout 4)", double(plain_bytes));
  line("rANS, zero-relative (layout 6, stored)", double(stored_b_bytes));
  line("zstd-3, plain codes", double(z_bytes));
  std::printf("  whole stored tiles (directory, scales and zeros, codes): %zu B, %.4f bits/weight\n", tile_bytes,
              8.0 * double(tile_bytes) / double(codes_total));
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
    wpack::convert_to_f32(wpack::DType::BF16, bytes.data(), v.size(), m.values.data());
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
      for (size_t i = 0; i < f.size(); ++i) v[i] = wpack::detail::float_to_bf16_bits(f[i]);
      bench_bf16("synthetic N(0, 0.02) BF16, " + std::to_string(mib) + " MiB", v, tile_elems, false);
      bench_bf16("synthetic N(0, 0.02) BF16, " + std::to_string(mib) + " MiB", v, tile_elems, true);
    }
    if (!model_file.empty()) {
      const ModelBf16 model = read_model(model_file);
      bench_bf16(model_file + " (BF16 tensors)", model.all, tile_elems, false);
      bench_bf16(model_file + " (BF16 tensors)", model.all, tile_elems, true);
      bench_int4(model_file + ", 2-D BF16 tensors", model.matrices);
      bench_int4_packed(model_file + ", 2-D BF16 tensors", model.matrices);
    } else if (!raw_file.empty()) {
      std::ifstream in(raw_file, std::ios::binary);
      if (!in) throw std::runtime_error("cannot open " + raw_file);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::vector<uint16_t> v(bytes.size() / 2);
      std::memcpy(v.data(), bytes.data(), v.size() * 2);
      bench_bf16(raw_file, v, tile_elems, false);
      bench_bf16(raw_file, v, tile_elems, true);
      Matrix whole{raw_file, v.size() / 128, 128, std::vector<float>(v.size() / 128 * 128)};
      wpack::convert_to_f32(wpack::DType::BF16, reinterpret_cast<const uint8_t*>(bytes.data()), whole.values.size(),
                            whole.values.data());
      bench_int4(raw_file + " as one tensor of 128-element rows", {whole});
      bench_int4_packed(raw_file + " as one tensor of 128-element rows", {whole});
    } else {
      std::printf("(no --model or --bf16-raw FILE: real-model case skipped)\n");
    }
    const size_t synthetic_codes = std::min<size_t>(mib, 16) * 1024 * 1024;
    const std::vector<Matrix> synthetic = {
        Matrix{"synthetic", synthetic_codes / 4096, 4096, gaussian(synthetic_codes, 1.0f, 7)}};
    bench_int4("synthetic N(0, 1)", synthetic);
    bench_int4_packed("synthetic N(0, 1)", synthetic);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rans: %s\n", e.what());
    return 1;
  }
  return 0;
}
