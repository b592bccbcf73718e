// GPU tile decode and fused GEMV (kernels/tile_decode.h) against the CPU reference
// (packer/unpack.h decode_tensor / decode_tensor_f32) and a float64 GEMV, lossless and lossy.
// main: tests/catch_gpu_main.cpp (SKIP, exit 4, without CUDA or a device).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/wpk.h"
#include "kernels/tile_decode.h"
#include "packer/codec.h"
#include "packer/pack.h"
#include "packer/tiling.h"
#include "packer/unpack.h"
#include "test_util.h"

#if defined(WPACK_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

#if defined(WPACK_HAVE_CUDA)
namespace {

using wpack::Codec;
using wpack::DType;
using wpack::Filter;
using wpack::gpu::GpuTensor;
using wpack::gpu::TileStatus;

// The name of the ring GEMV (kernels/quant_gemv_tma.cu) in this build: "bulk-copy", or
// "cp.async-ring" with CUDA 11.8 (nullptr without it: then the tests do not check the kernel).
const char* ring() { return wpack::gpu::gpu_ring_gemv_name(); }

#define CUDA_OK(call) REQUIRE((call) == cudaSuccess)

// A device buffer for the tests (freed on scope exit).
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) { CUDA_OK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void poison() { CUDA_OK(cudaMemset(ptr, 0xFF, std::max<size_t>(count, 1) * sizeof(T))); }
  std::vector<T> download() const {
    std::vector<T> out(count);
    if (count) REQUIRE(cudaMemcpy(out.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
};

struct Spec {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
};

std::vector<uint8_t> gaussian(DType dtype, size_t n, uint64_t seed) {
  switch (dtype) {
    case DType::BF16: return wpack::test::gaussian_bf16(n, 0.02f, seed);
    case DType::F16: return wpack::test::gaussian_f16(n, 0.02f, seed);
    case DType::F64: {  // the F32 values widened, their low mantissa bits filled from the seed
      const std::vector<uint8_t> f32 = wpack::test::gaussian_f32(n, 0.02f, seed);
      std::vector<uint8_t> out(8 * n);
      std::mt19937_64 rng(seed);
      for (size_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, f32.data() + 4 * i, 4);
        uint64_t bits;
        const double d = f;
        std::memcpy(&bits, &d, 8);
        bits ^= rng() & ((uint64_t{1} << 29) - 1);
        std::memcpy(out.data() + 8 * i, &bits, 8);
      }
      return out;
    }
    case DType::I8: {  // small integers, as quantized weights are
      const std::vector<uint8_t> f32 = wpack::test::gaussian_f32(n, 0.02f, seed);
      std::vector<uint8_t> out(n);
      for (size_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, f32.data() + 4 * i, 4);
        out[i] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::lrint(f * 2000.0f), -127L, 127L)));
      }
      return out;
    }
    default: return wpack::test::gaussian_f32(n, 0.02f, seed);
  }
}

struct Packed {
  wpack::test::TempDir dir;
  std::unique_ptr<wpack::WpkReader> reader;
  std::vector<std::vector<uint8_t>> source;
};

// Packs gaussian tensors of `specs` into t.wpk (lossless). edit, when set, may change each tensor's
// bytes before they are packed.
using EditBytes = std::function<void(const Spec&, std::vector<uint8_t>&)>;
std::unique_ptr<Packed> pack(const std::vector<Spec>& specs, Codec codec, uint32_t tile_rows, uint32_t tile_cols,
                             std::optional<Filter> filter = std::nullopt, uint64_t seed = 1,
                             const EditBytes& edit = nullptr) {
  auto p = std::make_unique<Packed>();
  wpack::MemorySource src;
  for (size_t i = 0; i < specs.size(); ++i) {
    uint64_t n = 1;
    for (uint64_t d : specs[i].shape) n *= d;
    std::vector<uint8_t> bytes = gaussian(specs[i].dtype, n, seed * 1000 + i);
    if (edit) edit(specs[i], bytes);
    p->source.push_back(bytes);
    src.add(specs[i].name, specs[i].dtype, specs[i].shape, std::move(bytes));
  }
  wpack::PackOptions opt;
  opt.codec = codec;
  opt.tile_rows = tile_rows;
  opt.tile_cols = tile_cols;
  opt.filter = filter;
  const std::string path = p->dir.file("t.wpk");
  wpack::pack_model(src, path, opt);
  p->reader = wpack::WpkReader::open(path);
  return p;
}

// Decodes every tensor on the GPU into a poisoned buffer and compares with the CPU decode (and the
// source: the tensors are lossless). Returns the number of tiles checked.
uint64_t check_decode(const Packed& p) {
  uint64_t tiles = 0;
  for (size_t t = 0; t < p.reader->tensors().size(); ++t) {
    const auto& info = p.reader->tensors()[t];
    INFO("tensor " << info.name);
    GpuTensor g = GpuTensor::upload(*p.reader, t);
    const size_t bytes = info.num_elements() * wpack::dtype_size(info.dtype);
    std::vector<uint8_t> cpu(bytes);
    wpack::decode_tensor(*p.reader, t, cpu);
    REQUIRE(cpu == p.source[t]);
    DeviceBuffer<uint8_t> out(bytes);
    DeviceBuffer<uint32_t> status(g.tile_count());
    for (int run = 0; run < 2; ++run) {  // twice: a race would show as a difference
      out.poison();
      status.poison();
      g.decode(out.ptr, status.ptr);
      CUDA_OK(cudaDeviceSynchronize());
      const auto st = status.download();
      for (uint64_t k = 0; k < st.size(); ++k) {
        INFO("tile " << k << " status " << st[k]);
        REQUIRE(st[k] == static_cast<uint32_t>(TileStatus::kOk));
      }
      const auto gpu = out.download();
      size_t first_diff = bytes;
      for (size_t i = 0; i < bytes && first_diff == bytes; ++i)
        if (gpu[i] != cpu[i]) first_diff = i;
      INFO("first differing byte " << first_diff << " of " << bytes);
      REQUIRE(first_diff == bytes);
    }
    tiles += g.tile_count();
  }
  return tiles;
}

float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// y = W x on the GPU (batch columns) vs float64 on the CPU for the weights w (rows x cols floats,
// what the tensor decodes to); relative error <= 2e-3, twice (a race would show), and every
// output within min(tolerance, 2^-12) of its sum |W| |x| (a norm over the whole output does not
// see one wrong group scale among thousands: that moves its row by ~2e-3 of |W| |x|). x_offset: x is
// placed that many elements past a cudaMalloc'ed start (x_offset = 1: not 16-byte aligned).
// kernel: when set, GpuTensor::gemv_kernel() must name it after each call. x_exp: x is gaussian
// (sigma 1) times 2^x_exp (exact in BF16 for the exponents the tests use). Returns the kernel's name.
std::string check_gemv_f32(const Packed& p, size_t t, const std::vector<float>& w, uint32_t batch, uint64_t seed,
                    size_t x_offset = 0, double tolerance = 2e-3, const char* kernel = nullptr, int x_exp = 0) {
  const auto& info = p.reader->tensors()[t];
  GpuTensor g = GpuTensor::upload(*p.reader, t);
  const uint64_t n = g.rows(), k = g.cols();
  INFO("tensor " << info.name << " " << n << "x" << k << " batch " << batch << " x offset " << x_offset
                   << " x times 2^" << x_exp);
  const std::vector<uint8_t> xb = wpack::test::gaussian_bf16(k * batch, 1.0f, seed);
  std::vector<uint16_t> x(k * batch);
  std::memcpy(x.data(), xb.data(), xb.size());
  for (uint16_t& v : x) {  // times 2^x_exp: the BF16 exponent field moved (zeros stay zeros)
    const int e = (v >> 7) & 0xFF;
    if (e == 0 || x_exp == 0) continue;
    if (x_exp < -100 && e + x_exp <= 0) {  // far down: what would leave BF16's normal range is 0
      v &= 0x8000;
      continue;
    }
    REQUIRE(e + x_exp > 0);
    REQUIRE(e + x_exp < 255);
    v = static_cast<uint16_t>((v & 0x807F) | ((e + x_exp) << 7));
  }
  std::vector<double> ref(n * batch, 0.0), abs_ref(n * batch, 0.0);
  for (uint64_t r = 0; r < n; ++r)
    for (uint64_t c = 0; c < k; ++c) {
      const double wv = w[r * k + c];
      for (uint32_t b = 0; b < batch; ++b) {
        const double xv = bf16_to_float(x[c * batch + b]);
        ref[r * batch + b] += wv * xv;
        abs_ref[r * batch + b] += std::fabs(wv * xv);
      }
    }
  const double out_tolerance = std::min(tolerance, 0x1p-12);
  const double out_floor = 1e-3 * out_tolerance * *std::max_element(abs_ref.begin(), abs_ref.end());
  DeviceBuffer<uint16_t> x_dev(x.size() + x_offset);
  CUDA_OK(cudaMemcpy(x_dev.ptr + x_offset, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  DeviceBuffer<float> y_dev(n * batch);
  DeviceBuffer<uint32_t> status(g.tile_count());
  for (int run = 0; run < 2; ++run) {
    y_dev.poison();
    status.poison();
    g.gemv(x_dev.ptr + x_offset, y_dev.ptr, batch, status.ptr);
    CUDA_OK(cudaDeviceSynchronize());
    if (kernel) CHECK(std::string(g.gemv_kernel()) == kernel);
    for (uint32_t s : status.download()) REQUIRE(s == static_cast<uint32_t>(TileStatus::kOk));
    const auto y = y_dev.download();
    double num = 0, den = 0, worst = 0;
    size_t worst_at = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      REQUIRE(std::isfinite(y[i]));
      num += (y[i] - ref[i]) * (y[i] - ref[i]);
      den += ref[i] * ref[i];
      const double e = std::fabs(y[i] - ref[i]) / (abs_ref[i] + out_floor);
      if (e > worst) worst = e, worst_at = i;
    }
    const double rel = std::sqrt(num / den);
    INFO("relative error " << rel << "; worst output (row " << worst_at / batch << ", column " << worst_at % batch
                           << "): " << y[worst_at] << " against " << ref[worst_at] << ", " << worst << " of |W||x|");
    REQUIRE(rel <= tolerance);
    REQUIRE(worst <= out_tolerance);
  }
  return g.gemv_kernel();
}

// The same for a lossless BF16 tensor: the weights are its source, exactly, so only float32
// accumulation separates y from the float64 product (a wrong bit of a weight shows far above 1e-5).
std::string check_gemv(const Packed& p, size_t t, uint32_t batch, uint64_t seed, const char* kernel = nullptr,
                       size_t x_offset = 0) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(p.source[t].data());
  std::vector<float> w(p.source[t].size() / 2);
  for (size_t i = 0; i < w.size(); ++i) w[i] = bf16_to_float(bits[i]);
  return check_gemv_f32(p, t, w, batch, seed, x_offset, 1e-5, kernel);
}

// Lossless F16, F32 and FP8 matrices multiply on the block-per-tile kernel too (it took BF16 only,
// so verify --device cuda checked their decode but no product): every filter, coded and raw, edge
// tiles, batch 1..11. The weights are the source values exactly, so only float32 accumulation
// separates y from the float64 product. FP8: every finite code (floatplanes is for wider floats:
// the packer stores FP8 tiles byteshuffled, which for 1-byte elements is the identity).
TEST_CASE("gpu gemv: lossless F16, F32 and FP8 tensors, every filter, rans and none") {
  std::mt19937 rng(11);
  const EditBytes fp8_codes = [&](const Spec& spec, std::vector<uint8_t>& bytes) {
    if (spec.dtype != DType::F8_E4M3 && spec.dtype != DType::F8_E5M2) return;
    uint64_t n = 1;
    for (uint64_t d : spec.shape) n *= d;
    bytes.resize(n);
    for (uint8_t& b : bytes) {
      do b = static_cast<uint8_t>(rng());
      while (spec.dtype == DType::F8_E4M3 ? (b & 0x7F) == 0x7F : (b & 0x7C) == 0x7C);  // NaN (and E5M2 inf)
    }
  };
  for (const Codec codec : {Codec::kRans, Codec::kNone})
    for (const Filter filter : {Filter::kFloatPlanes, Filter::kByteShuffle, Filter::kBitShuffle, Filter::kNone}) {
      INFO("codec " << static_cast<int>(codec) << " filter " << static_cast<int>(filter));
      auto p = pack({{"h", DType::F16, {133, 250}},
                     {"f", DType::F32, {97, 131}},
                     {"e4m3", DType::F8_E4M3, {70, 200}},
                     {"e5m2", DType::F8_E5M2, {65, 129}}},
                    codec, 64, 64, filter, 1, fp8_codes);
      check_decode(*p);
      for (size_t t = 0; t < 4; ++t) {
        const DType dtype = p->reader->tensors()[t].dtype;
        std::vector<float> w(p->source[t].size() / wpack::dtype_size(dtype));
        wpack::convert_to_f32(dtype, p->source[t].data(), w.size(), w.data());
        for (uint32_t batch : {1u, 4u, 11u}) check_gemv_f32(*p, t, w, batch, 60 + batch, 0, 1e-5, "block-per-tile");
      }
    }
}

// ---- lossy tensors ----

struct LossyCase {
  wpack::Scheme scheme;
  Codec codec;
  double prune = 0;  // magnitude fraction (sparse tiles), 0 = none
  uint32_t group = 0;
  bool symmetric = false;
  uint32_t lut_rows = 0;
};

std::string case_name(const LossyCase& c) {
  return std::string(wpack::scheme_name(c.scheme)) + (c.codec == Codec::kRans ? "/rans" : "/none") +
         (c.prune > 0 ? "/prune" : "") + (c.group ? "/g" + std::to_string(c.group) : "") + (c.symmetric ? "/sym" : "") +
         (c.lut_rows ? "/lut_rows" + std::to_string(c.lut_rows) : "");
}

std::unique_ptr<Packed> pack_lossy(const std::vector<Spec>& specs, const LossyCase& c, uint32_t tile_rows,
                                   uint32_t tile_cols, uint64_t seed) {
  auto p = std::make_unique<Packed>();
  wpack::MemorySource src;
  for (size_t i = 0; i < specs.size(); ++i) {
    uint64_t n = 1;
    for (uint64_t d : specs[i].shape) n *= d;
    std::vector<uint8_t> bytes = gaussian(specs[i].dtype, n, seed * 1000 + i);
    p->source.push_back(bytes);
    src.add(specs[i].name, specs[i].dtype, specs[i].shape, std::move(bytes));
  }
  wpack::PackOptions opt;
  opt.codec = c.codec;
  opt.tile_rows = tile_rows;
  opt.tile_cols = tile_cols;
  opt.policy.spec.scheme = c.scheme;
  opt.policy.spec.group = c.group;
  opt.policy.spec.symmetric = c.symmetric;
  opt.policy.spec.lut_rows = c.lut_rows;
  if (c.prune > 0) {
    opt.policy.prune.kind = wpack::PruneSpec::Kind::kFraction;
    opt.policy.prune.fraction = c.prune;
  }
  const std::string path = p->dir.file("q.wpk");
  wpack::pack_model(src, path, opt);
  p->reader = wpack::WpkReader::open(path);
  return p;
}

// GPU decode of lossy tensor t (float32) equals the CPU reference decode bit for bit.
std::vector<float> check_decode_lossy(const Packed& p, size_t t) {
  const auto& info = p.reader->tensors()[t];
  INFO("tensor " << info.name);
  GpuTensor g = GpuTensor::upload(*p.reader, t);
  REQUIRE(g.lossy());
  REQUIRE(g.decoded_elem_size() == 4);
  std::vector<float> cpu(info.num_elements());
  wpack::decode_tensor_f32(*p.reader, t, cpu);
  DeviceBuffer<float> out(cpu.size());
  DeviceBuffer<uint32_t> status(g.tile_count());
  out.poison();
  status.poison();
  g.decode(out.ptr, status.ptr);
  CUDA_OK(cudaDeviceSynchronize());
  const auto st = status.download();
  for (uint64_t k = 0; k < st.size(); ++k) {
    INFO("tile " << k << " status " << st[k]);
    REQUIRE(st[k] == static_cast<uint32_t>(TileStatus::kOk));
  }
  const auto gpu = out.download();
  size_t first_diff = cpu.size();
  for (size_t i = 0; i < cpu.size() && first_diff == cpu.size(); ++i)
    if (std::memcmp(&gpu[i], &cpu[i], 4) != 0) first_diff = i;
  INFO("first differing element " << first_diff << " of " << cpu.size()
                                  << (first_diff < cpu.size() ? " gpu " + std::to_string(gpu[first_diff]) + " cpu " +
                                                                    std::to_string(cpu[first_diff])
                                                              : std::string()));
  REQUIRE(first_diff == cpu.size());
  return cpu;
}

// decode() and gemv() at each of `batches` report tile `bad` kCorrupt and every other tile ok
// (statuses poisoned before each call; x is constant BF16 0.74...: the products are not what is
// checked). kernel: what gemv_kernel() must name after each gemv, when set.
void check_corrupt_tile_reported(const GpuTensor& g, uint64_t bad, std::initializer_list<uint32_t> batches,
                                 const char* kernel = nullptr) {
  DeviceBuffer<uint32_t> status(g.tile_count());
  auto check_statuses = [&] {
    CUDA_OK(cudaDeviceSynchronize());
    const auto st = status.download();
    for (uint64_t k = 0; k < st.size(); ++k) {
      INFO("tile " << k);
      CHECK(st[k] == static_cast<uint32_t>(k == bad ? TileStatus::kCorrupt : TileStatus::kOk));
    }
  };
  DeviceBuffer<uint8_t> out(g.rows() * g.cols() * g.decoded_elem_size());
  status.poison();
  g.decode(out.ptr, status.ptr);
  check_statuses();
  const uint32_t widest = std::max(batches);
  DeviceBuffer<uint16_t> x(g.cols() * widest);
  CUDA_OK(cudaMemset(x.ptr, 0x3F, x.count * 2));
  DeviceBuffer<float> y(g.rows() * widest);
  for (uint32_t batch : batches) {
    INFO("batch " << batch);
    status.poison();
    g.gemv(x.ptr, y.ptr, batch, status.ptr);
    check_statuses();
    if (kernel) CHECK(std::string(g.gemv_kernel()) == kernel);
  }
}

}  // namespace

TEST_CASE("gpu decode: rans, BF16/F16/F32, odd shapes, bit-exact with the CPU") {
  const std::vector<Spec> specs = {
      {"row_bf16", DType::BF16, {4096}},
      {"odd_bf16", DType::BF16, {4097, 4099}},
      {"odd_f16", DType::F16, {1031, 517}},
      {"odd_f32", DType::F32, {1029, 771}},
      {"tiny", DType::BF16, {3, 5}},
  };
  auto p = pack(specs, Codec::kRans, 64, 96);
  REQUIRE(check_decode(*p) > 1000);
}

// 8-byte elements (eight byte planes, decoded four at a time by the block's warps) and 1-byte ones
// (one plane): a 1-D F64 vector in its 8192-element tiles, F64 matrices in 64x64 tiles (32 KiB raw:
// the default 128x128 needs 128 KiB, more than a block's shared memory beside the stored bytes),
// I8 matrices; rANS and none.
TEST_CASE("gpu decode: F64 and I8 tensors, bit-exact with the CPU") {
  const std::vector<Spec> specs = {
      {"f64_vector", DType::F64, {20000}},
      {"f64_odd", DType::F64, {300, 201}},
      {"i8_odd", DType::I8, {517, 300}},
  };
  for (const Codec codec : {Codec::kRans, Codec::kNone}) {
    INFO(wpack::codec_name(codec));
    auto p = pack(specs, codec, 64, 64);
    REQUIRE(p->reader->tensors()[0].tile_count == 3);
    CHECK(check_decode(*p) > 30);
  }
}

TEST_CASE("gpu decode: codec none, and tiles of fewer than 32 elements per plane") {
  auto none = pack({{"a", DType::BF16, {777, 1025}}, {"b", DType::F32, {300, 301}}}, Codec::kNone, 64, 64);
  check_decode(*none);
  auto tiny = pack({{"c", DType::BF16, {37, 53}}, {"d", DType::F16, {29, 31}}}, Codec::kRans, 3, 5);
  check_decode(*tiny);
}

TEST_CASE("gpu decode: byteshuffle and none filters with rans") {
  auto bs = pack({{"a", DType::F32, {255, 257}}, {"b", DType::BF16, {129, 130}}}, Codec::kRans, 32, 64,
                 Filter::kByteShuffle);
  check_decode(*bs);
  auto nf = pack({{"c", DType::BF16, {129, 130}}}, Codec::kRans, 32, 64, Filter::kNone);
  check_decode(*nf);
}

// bitshuffle (one plane: 8e bit planes of the tile's first n - n mod 8 elements, then the rest as
// they are) for every element size, with tiles of n mod 8 != 0 elements, coded and raw; a BF16
// tensor of bitshuffled tiles multiplies on the block-per-tile kernel. (The GPU reported these tiles
// "unsupported filter", so verify left such tensors, e.g. an I64 position_ids, unchecked.)
TEST_CASE("gpu decode: bitshuffle tiles of every element size, n mod 8 != 0, rans and none") {
  // 31 x 61 tiles: 1891 elements, n mod 8 = 3 (and smaller edge tiles). Codec none keeps the
  // gaussian bytes (every bit varies); with rans, elements whose low 5 bits vary and whose other
  // bits are 0, so that coding shrinks the bit planes and the tiles stay bitshuffled.
  std::mt19937 rng(9);
  const EditBytes small_values = [&](const Spec& spec, std::vector<uint8_t>& bytes) {
    const uint32_t esize = wpack::dtype_size(spec.dtype);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = i % esize == 0 ? static_cast<uint8_t>(rng() & 0x1F) : 0;
  };
  for (const Codec codec : {Codec::kNone, Codec::kRans}) {
    INFO("codec " << static_cast<int>(codec));
    auto p = pack({{"i8", DType::I8, {67, 131}},
                   {"bf16", DType::BF16, {129, 130}},
                   {"f16", DType::F16, {40, 70}},
                   {"f32", DType::F32, {65, 71}},
                   {"f64", DType::F64, {33, 75}}},
                  codec, 31, 61, Filter::kBitShuffle, 1, codec == Codec::kRans ? small_values : nullptr);
    for (const auto& t : p->reader->tensors()) {  // each tensor's full tiles bitshuffled (and coded)
      INFO("tensor " << t.name);
      const wpack::TileGeometry g = wpack::tile_geometry(t.view(), t.tile_rows, t.tile_cols);
      uint64_t odd = 0;
      for (uint64_t k = 0; k < t.tile_count; ++k) {
        const auto& tile = p->reader->tiles()[t.first_tile + k];
        if (g.rect(k).elements() != 31 * 61) continue;
        CHECK(tile.filter == static_cast<uint8_t>(Filter::kBitShuffle));
        CHECK(tile.codec == static_cast<uint8_t>(codec));
        ++odd;
      }
      CHECK(odd > 0);
    }
    CHECK(check_decode(*p) == p->reader->tiles().size());
    if (codec == Codec::kNone)  // (the rans case's BF16 weights are subnormal)
      for (uint32_t batch : {1u, 3u}) check_gemv(*p, 1, batch, 40 + batch, "block-per-tile");
  }
}

TEST_CASE("gpu decode: constant tensor (constant-run rANS streams)") {
  wpack::test::TempDir dir;
  wpack::MemorySource src;
  std::vector<uint8_t> ones(2 * 200 * 300);
  for (size_t i = 0; i < ones.size(); i += 2) ones[i] = 0x80, ones[i + 1] = 0x3F;  // BF16 1.0
  src.add("ones", DType::BF16, {200, 300}, ones);
  wpack::PackOptions opt;
  opt.codec = Codec::kRans;
  opt.tile_rows = 64;
  opt.tile_cols = 64;
  wpack::pack_model(src, dir.file("c.wpk"), opt);
  Packed p;
  p.reader = wpack::WpkReader::open(dir.file("c.wpk"));
  p.source.push_back(ones);
  check_decode(p);
}

TEST_CASE("gpu decode: 11008x4096 BF16 at 128x128") {
  auto p = pack({{"mlp", DType::BF16, {11008, 4096}}}, Codec::kRans, 128, 128);
  check_decode(*p);
  check_gemv(*p, 0, 1, 77);
}

TEST_CASE("gpu decode: zstd tiles are reported unsupported per tile") {
  auto p = pack({{"z", DType::BF16, {300, 200}}}, Codec::kZstd, 64, 64);
  GpuTensor g = GpuTensor::upload(*p->reader, 0);
  DeviceBuffer<uint8_t> out(300 * 200 * 2);
  DeviceBuffer<uint32_t> status(g.tile_count());
  status.poison();
  g.decode(out.ptr, status.ptr);
  CUDA_OK(cudaDeviceSynchronize());
  const auto st = status.download();
  const auto& tiles = p->reader->tiles();
  uint64_t zstd_tiles = 0;
  for (uint64_t k = 0; k < st.size(); ++k) {
    const bool is_zstd = tiles[p->reader->tensors()[0].first_tile + k].codec == static_cast<uint8_t>(Codec::kZstd);
    zstd_tiles += is_zstd;
    REQUIRE(st[k] == static_cast<uint32_t>(is_zstd ? TileStatus::kUnsupportedCodec : TileStatus::kOk));
  }
  REQUIRE(zstd_tiles == st.size());  // every tile: no tile sizes gemv's x in shared memory
  // gemv reports the same per tile, and writes nothing out of its shared memory (x for a tile it
  // does not decode once went past the end: an illegal address at batch 8).
  DeviceBuffer<uint16_t> x(200 * 8);
  CUDA_OK(cudaMemset(x.ptr, 0x3F, x.count * 2));
  DeviceBuffer<float> y(300 * 8);
  for (uint32_t batch : {1u, 8u}) {
    INFO("batch " << batch);
    status.poison();
    g.gemv(x.ptr, y.ptr, batch, status.ptr);
    CUDA_OK(cudaDeviceSynchronize());
    for (uint32_t s : status.download()) REQUIRE(s == static_cast<uint32_t>(TileStatus::kUnsupportedCodec));
  }
}

// The packer cuts a 1-D tensor into tiles of 64 KiB at most, whatever --tile says, so that the GPU
// decodes every one, F32 to the largest (rANS planes and 4 decode tables in shared memory). A tile
// whose bytes do not fit a block's shared memory (a matrix packed with a large --tile, or a 1-D
// tensor of a file from before that rule) is refused at upload, naming the tensor and what to do.
TEST_CASE("gpu upload: 1-D tensors of any length decode; tiles too large for shared memory are refused, saying what to do") {
  auto vectors = pack({{"bias", DType::F32, {60000}}, {"half", DType::BF16, {100003}}}, Codec::kRans, 256, 256);
  REQUIRE(vectors->reader->tensors()[0].tile_count == 4);  // 16384-element tiles
  REQUIRE(vectors->reader->tensors()[1].tile_count == 4);  // 32768-element tiles
  check_decode(*vectors);                                  // bit for bit, every tile
  auto p = pack({{"bias", DType::F32, {60000}}, {"big", DType::F32, {300, 300}}}, Codec::kRans, 256, 256);

  // A 1-D tensor in one tile of 60000 F32 elements stored as they are (240 KB), as wpack packed
  // them before: the file is valid, the tile too large for a block.
  const std::string old = p->dir.file("old.wpk");
  {
    wpack::WpkWriter w(old, false);
    wpack::WpkTensor t;
    t.name = "bias";
    t.dtype = DType::F32;
    t.shape = {60000};
    t.tile_rows = 1;
    t.tile_cols = 60000;
    w.begin_tensor(t);
    w.add_tile(p->source[0], p->source[0].size(), static_cast<uint8_t>(Filter::kNone), static_cast<uint8_t>(Codec::kNone));
    w.end_tensor();
    w.commit("{}");
  }
  const auto old_reader = wpack::WpkReader::open(old);
  const std::pair<const wpack::WpkReader*, size_t> cases[] = {{old_reader.get(), 0}, {p->reader.get(), 1}};
  const char* names[] = {"'bias': tiles need", "'big': tiles need"};
  const char* hints[] = {"a 1-D tensor in tiles over 64 KiB, as earlier versions of wpack packed them: compress it again",
                         "pack it with smaller tiles: --tile"};
  for (size_t i = 0; i < 2; ++i) {
    std::string message;
    try {
      GpuTensor::upload(*cases[i].first, cases[i].second);
    } catch (const wpack::Error& e) {
      message = e.what();
    }
    INFO(message);
    CHECK(message.find(names[i]) != std::string::npos);
    CHECK(message.find(hints[i]) != std::string::npos);
    CHECK(message.find(hints[1 - i]) == std::string::npos);
  }
}

TEST_CASE("gpu gemv: BF16 rans and none, batch 1..21, edge tiles, vs float64") {
  auto p = pack({{"w", DType::BF16, {4097, 4099}}, {"row", DType::BF16, {1, 4096}}, {"s", DType::BF16, {77, 1000}}},
                Codec::kRans, 64, 96, std::nullopt, 5);
  for (uint32_t batch : {1u, 3u, 8u, 16u, 21u}) {
    check_gemv(*p, 0, batch, 100 + batch);
    check_gemv(*p, 1, batch, 200 + batch);
    check_gemv(*p, 2, batch, 300 + batch);
  }
  auto none = pack({{"w", DType::BF16, {513, 700}}}, Codec::kNone, 128, 128, std::nullopt, 6);
  check_gemv(*none, 0, 1, 400);
  check_gemv(*none, 0, 8, 401);
}

// A matrix of at most 16384 elements is one tile of its own shape (packer/tiling.cpp
// choose_tile_shape): [1, 8192] BF16 is one 1 x 8192 tile, which the block-per-tile kernel takes
// (the warp-per-tile one takes tiles up to 128 columns). It held x for the tile's whole width per
// pass of up to 8 batch columns, which beside the decode no longer fit from 6 columns on: batch 6..8
// and every batch above 8 were refused ("tiles need N bytes of shared memory"). It now stages x in
// slices of 512 columns where x whole does not fit beside the decode at 8 batch columns (whole
// where it does: 6 x 2730, one tile as well, 87 KiB of x). A refusal throws out of check_gemv and
// fails the case; the kernel's name is required too. 8 x 4096 in one 8 x 4096 tile (--tile):
// x whole (128 KiB) beside its decode (64 KiB raw, ~45 KiB stored, tables) does not fit, so two
// rounds of the kernel's 4 warps over 8 slices.
TEST_CASE("gpu gemv: lossless BF16 one-tile 1x8192 matrix on the block-per-tile kernel, x in slices, batch 1..64") {
  auto p = pack({{"row", DType::BF16, {1, 8192}}, {"whole", DType::BF16, {6, 2730}}}, wpack::PackOptions{}.codec, 128,
                128, std::nullopt, 12);
  auto rounds = pack({{"rounds", DType::BF16, {8, 4096}}}, wpack::PackOptions{}.codec, 8, 4096, std::nullopt, 13);
  for (const auto* q : {p.get(), rounds.get()})
    for (const auto& info : q->reader->tensors()) {
      REQUIRE(info.tile_count == 1);
      REQUIRE(info.tile_rows == info.shape[0]);
      REQUIRE(info.tile_cols == info.shape[1]);
    }
  check_decode(*p);
  check_decode(*rounds);
  for (uint32_t batch : {1u, 6u, 8u, 16u, 64u}) REQUIRE(check_gemv(*p, 0, batch, 1100 + batch) == "block-per-tile");
  for (uint32_t batch : {1u, 5u, 8u, 13u}) REQUIRE(check_gemv(*p, 1, batch, 1200 + batch) == "block-per-tile");
  for (uint32_t batch : {1u, 5u, 8u, 13u}) REQUIRE(check_gemv(*rounds, 0, batch, 1300 + batch) == "block-per-tile");
}

// Thin and tall matrices (fewer rows or columns than the 128 x 128 tile) in tiles cut short to
// their height or width: 2 x 128, 8 x 128, 5 x 128 (an edge tile of 48 columns), 128 x 3 (an edge
// tile of 32 rows); lossless (rans and none) and lossy (int4 rans and none, int8, fp8, nf4), decode
// bit-exact and the product, on whichever kernels take such tiles.
TEST_CASE("gpu: thin and tall matrices in tiles cut short to their height or width, lossless and lossy, decode and gemv") {
  using wpack::Scheme;
  const std::vector<Spec> specs = {{"thin2", DType::BF16, {2, 65536}},
                                   {"thin8", DType::F32, {8, 4096}},
                                   {"thin5", DType::BF16, {5, 30000}},
                                   {"tall", DType::BF16, {20000, 3}}};
  const uint64_t expect_tiles[] = {512, 32, 235, 157};
  auto check_tiles = [&](const Packed& p) {
    for (size_t t = 0; t < specs.size(); ++t) {
      INFO("tensor " << specs[t].name);
      CHECK(p.reader->tensors()[t].tile_count == expect_tiles[t]);
    }
  };
  for (const Codec codec : {Codec::kRans, Codec::kNone}) {
    INFO("lossless, codec " << wpack::codec_name(codec));
    auto p = pack(specs, codec, 128, 128, std::nullopt, 71);
    check_tiles(*p);
    check_decode(*p);
    for (size_t t = 0; t < specs.size(); ++t)
      if (specs[t].dtype == DType::BF16)
        for (uint32_t batch : {1u, 8u, 16u}) check_gemv(*p, t, batch, 7100 + 10 * t + batch);
  }
  const LossyCase cases[] = {{Scheme::kInt4, Codec::kRans}, {Scheme::kInt4, Codec::kNone}, {Scheme::kInt8, Codec::kNone},
                             {Scheme::kFp8, Codec::kRans}, {Scheme::kNf4, Codec::kNone}};
  uint64_t seed = 72;
  for (const LossyCase& c : cases) {
    INFO("case " << case_name(c));
    auto p = pack_lossy(specs, c, 128, 128, seed++);
    check_tiles(*p);
    for (size_t t = 0; t < specs.size(); ++t) {
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 8u, 16u}) check_gemv_f32(*p, t, w, batch, seed * 100 + 10 * t + batch);
    }
  }
}

// The warp-per-tile lossless kernel (kernels/lossless_gemv.cu) takes tiles 32..128 columns wide
// in steps of 32 whose exponent plane is a rANS stream; the others (here the 3- and 8-column edge
// tiles) go to the block-per-tile kernel in the same call. Both pass widths (1 on CUDA cores, 16 on
// tensor cores from batch 2: rows staged in groups of 8, here also groups cut short by the tile's
// last row) and passes of 16 with a remainder; decode() through the same two kernels.
TEST_CASE("gpu gemv: lossless warp-per-tile kernel, 128/64/32-column tiles, edge tiles, batch 1..64, decode") {
  auto p = pack({{"a", DType::BF16, {1000, 4096}}, {"b", DType::BF16, {300, 4160}}, {"c", DType::BF16, {77, 4099}}},
                Codec::kRans, 128, 128, std::nullopt, 7);
  auto q = pack({{"d", DType::BF16, {256, 1000}}}, Codec::kRans, 64, 32, std::nullopt, 8);
  const uint64_t expect_warp_tiles[] = {8 * 32, 3 * 33, 32, 4 * 31};  // all; all; the 128-wide; all but the edge
  for (size_t t = 0; t < 4; ++t) {
    const Packed& pk = t < 3 ? *p : *q;
    const size_t ti = t < 3 ? t : 0;
    GpuTensor g = GpuTensor::upload(*pk.reader, ti);
    REQUIRE(g.warp_tiles() == (wpack::gpu::gpu_build_has_warp_tiles() ? expect_warp_tiles[t] : 0));
    if (t == 0 || t == 3) check_decode(pk);  // both kernels' tiles, bit-exact
    for (uint32_t batch : {1u, 2u, 3u, 4u, 5u, 8u, 9u, 16u, 33u, 64u}) check_gemv(pk, ti, batch, 700 + 10 * t + batch);
  }
}

// The files of test_corrupt_files' "a rANS stream changed with every checksum recomputed": tile 1's
// exponent stream made wrong while every checksum agrees. Its precision field out of range sends
// the tile to the block-per-tile kernels (the host cannot read its precision); a bit of its last
// renormalisation word leaves it on the warp-per-tile kernel, which finds it by the final states.
// Either way decode() and gemv() report that tile corrupt and every other tile ok.
TEST_CASE("gpu decode and gemv: a corrupt rANS stream whose checksums agree is reported for its tile") {
  auto p = pack({{"w", DType::BF16, {256, 256}}}, Codec::kRans, 128, 128, std::nullopt, 41);
  const std::string path = p->dir.file("t.wpk");
  const auto good = wpack::test::read_file(path);
  for (const wpack::test::StreamDamage damage : wpack::test::kStreamDamages) {
    INFO(wpack::test::stream_damage_name(damage));
    const std::string crafted = p->dir.file("c.wpk");
    wpack::test::write_file(crafted, wpack::test::with_damaged_stream(good, 1, damage));
    auto reader = wpack::WpkReader::open(crafted);
    GpuTensor g = GpuTensor::upload(*reader, 0);
    REQUIRE(g.tile_count() == 4);
    if (wpack::gpu::gpu_build_has_warp_tiles()) REQUIRE(g.warp_tiles() == (damage == wpack::test::StreamDamage::kLastWord ? 4u : 3u));
    check_corrupt_tile_reported(g, 1, {1u, 8u});
  }
}

// The tiles of tensor t stored sparse (layout 5).
static uint64_t sparse_tile_count(const Packed& p, size_t t) {
  const auto& info = p.reader->tensors()[t];
  uint64_t sparse = 0;
  for (uint64_t k = 0; k < info.tile_count; ++k) sparse += p.reader->tiles()[info.first_tile + k].filter == 5;
  return sparse;
}

// The same for rANS-coded quantized tiles (int4 g128, asymmetric: plane A, scales and zero
// points, and plane B, the zero-relative codes, both rANS streams): tile 1's plane A or plane B
// damaged behind valid checksums. A precision field out of range sends the tile to the generic
// kernel (the host cannot read its precision); a bit of the last renormalisation word leaves it
// on the warp-per-tile kernel, which finds it by the final states. Either way gemv() reports that
// tile corrupt and every other tile ok, and decode() (the generic kernel) says the same. Also with
// every tile sparse (int8 pruned 0.5: plane A is the bitmap, stored raw where rANS does not pay;
// plane B the occupied codes), its coded planes damaged the same way, and its bitmap (below).
TEST_CASE("gpu gemv: a corrupt rANS stream of a quantized tile whose checksums agree is reported for its tile") {
  const LossyCase cases[] = {{wpack::Scheme::kInt4, Codec::kRans, 0, 128}, {wpack::Scheme::kInt8, Codec::kRans, 0.5}};
  for (const LossyCase& c : cases) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"w", DType::BF16, {256, 256}}}, c, 128, 128, 43);
    if (c.prune > 0) REQUIRE(sparse_tile_count(*p, 0) == 4);
    // int4: the packer keeps a dense tile's plane A raw; coded as the packer wrote it before, so
    // that its stream is damaged too.
    const std::string path = p->dir.file(c.prune > 0 ? "q.wpk" : "coded-a.wpk");
    if (c.prune == 0) {
      wpack::test::with_side_planes_coded(p->reader->path(), path);
      p->reader = wpack::WpkReader::open(path);
    }
    const auto tile1 = p->reader->tile_bytes(p->reader->tensors()[0].first_tile + 1);
    REQUIRE(tile1.size() >= 8);
    REQUIRE(!(tile1[7] & 0x80));  // plane B coded
    REQUIRE((tile1[3] & 0x80) == (c.prune > 0 ? 0x80 : 0));  // plane A: int4 coded; the int8 bitmap, 50% set, raw
    const auto good = wpack::test::read_file(path);
    const bool warp_kernels = wpack::gpu::gpu_build_has_warp_tiles();
    for (uint32_t plane : {0u, 1u}) {
      if (tile1[4 * plane + 3] & 0x80) continue;  // a plane stored raw has no stream to damage
      for (const wpack::test::StreamDamage damage : wpack::test::kStreamDamages) {
        INFO("plane " << plane << ", " << wpack::test::stream_damage_name(damage));
        const std::string crafted = p->dir.file("c.wpk");
        wpack::test::write_file(crafted, wpack::test::with_damaged_stream(good, 1, damage, plane));
        auto reader = wpack::WpkReader::open(crafted);
        GpuTensor g = GpuTensor::upload(*reader, 0);
        REQUIRE(g.tile_count() == 4);
        const bool stays = damage == wpack::test::StreamDamage::kLastWord;
        REQUIRE(g.warp_tiles() == (warp_kernels ? (stays ? 4u : 3u) : 0u));
        check_corrupt_tile_reported(g, 1, {1u, 16u},
                                    !warp_kernels ? "generic" : stays ? "warp-per-tile" : "warp-per-tile + generic");
      }
    }
    // A sparse tile whose raw bitmap (plane A) claims more occupied elements than plane B codes:
    // one more (which the stream's own end checks would pass) or all of them. The host cannot see
    // it (the bitmap is not counted there): the warp-per-tile kernel keeps the tile and reports it
    // corrupt (the count against the tile's raw size).
    if (c.prune > 0 && (tile1[3] & 0x80)) {
      for (const bool all : {false, true}) {
        INFO((all ? "every bitmap bit set" : "one more bitmap bit set"));
        std::vector<uint8_t> crafted_bytes = good;
        wpack::test::edit_wpk_tile(crafted_bytes, p->reader->tensors()[0].first_tile + 1, [&](uint8_t* b, uint64_t) {
          uint8_t* bitmap = b + 8;  // int8: plane A is the bitmap alone
          for (uint32_t i = 0; i < 128 * 128 / 8; ++i) {
            if (all) {
              bitmap[i] = 0xFF;
            } else if (bitmap[i] != 0xFF) {
              bitmap[i] = static_cast<uint8_t>(bitmap[i] | (bitmap[i] + 1));  // its lowest clear bit set
              break;
            }
          }
        });
        const std::string crafted = p->dir.file("b.wpk");
        wpack::test::write_file(crafted, crafted_bytes);
        auto reader = wpack::WpkReader::open(crafted);
        GpuTensor g = GpuTensor::upload(*reader, 0);
        REQUIRE(g.warp_tiles() == (warp_kernels ? 4u : 0u));
        check_corrupt_tile_reported(g, 1, {1u, 16u}, warp_kernels ? "warp-per-tile" : "generic");
      }
    }
  }
}

TEST_CASE("gpu gemv: refuses lossless F64 (not BF16, F16 or F32) and bad batch") {
  auto p = pack({{"f", DType::F64, {64, 64}}, {"b", DType::BF16, {64, 64}}}, Codec::kRans, 64, 64);
  GpuTensor f = GpuTensor::upload(*p->reader, 0);
  GpuTensor b = GpuTensor::upload(*p->reader, 1);
  DeviceBuffer<uint16_t> x(64 * 9);
  DeviceBuffer<float> y(64 * 9);
  DeviceBuffer<uint32_t> st(1);
  REQUIRE_THROWS_AS(f.gemv(x.ptr, y.ptr, 1, st.ptr), wpack::Error);
  REQUIRE_THROWS_AS(b.gemv(x.ptr, y.ptr, 65, st.ptr), wpack::Error);
  REQUIRE_THROWS_AS(b.gemv(x.ptr, y.ptr, 0, st.ptr), wpack::Error);
}

TEST_CASE("gpu lossy: every scheme, codec none and rans, dense and sparse, decode bit-exact and gemv") {
  using wpack::Scheme;
  const std::vector<LossyCase> cases = {
      {Scheme::kInt8, Codec::kNone},  {Scheme::kInt8, Codec::kRans},   {Scheme::kInt4, Codec::kNone},
      {Scheme::kInt4, Codec::kRans},  {Scheme::kInt4, Codec::kNone, 0, 64, true},
      {Scheme::kInt3, Codec::kNone},  {Scheme::kInt3, Codec::kRans},   {Scheme::kInt2, Codec::kNone, 0, 32},
      {Scheme::kInt2, Codec::kRans},  {Scheme::kFp8, Codec::kNone},    {Scheme::kFp8, Codec::kRans},
      {Scheme::kFp6, Codec::kNone},   {Scheme::kFp6, Codec::kRans},    {Scheme::kFp5, Codec::kNone},
      {Scheme::kFp5, Codec::kRans},   {Scheme::kFp4, Codec::kNone},    {Scheme::kFp4, Codec::kRans, 0, 256},
      {Scheme::kNf4, Codec::kNone},   {Scheme::kNf4, Codec::kRans},    {Scheme::kLut4, Codec::kNone},
      {Scheme::kLut4, Codec::kRans, 0, 0, false, 100},               {Scheme::kLut3, Codec::kNone},
      {Scheme::kInt4, Codec::kNone, 0.5}, {Scheme::kInt4, Codec::kRans, 0.5}, {Scheme::kFp6, Codec::kNone, 0.5},
      {Scheme::kInt8, Codec::kRans, 0.7}, {Scheme::kLut4, Codec::kNone, 0.5},
  };
  const std::vector<Spec> specs = {
      {"odd", DType::BF16, {333, 515}}, {"row", DType::BF16, {1, 1024}}, {"f32", DType::F32, {130, 256}}};
  uint64_t seed = 11;
  for (const LossyCase& c : cases) {
    INFO("case " << case_name(c));
    auto p = pack_lossy(specs, c, 64, 128, seed++);
    for (size_t t = 0; t < specs.size(); ++t) {
      REQUIRE(p->reader->tensors()[t].scheme != 0);
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 3u, 8u, 16u, 40u}) check_gemv_f32(*p, t, w, batch, seed * 10 + batch);
    }
  }
}

// The packer keeps a dense rANS tile's plane A (scales, zero points) raw; files written before it
// did (plane A a rANS stream of its own) must still decode and multiply: the same tensors with
// every dense tile's plane A coded (test::with_side_planes_coded), on the warp-per-tile kernel.
TEST_CASE("gpu lossy: dense rANS tiles with plane A rANS-coded (as written before), int4/int3/int2/nf4, decode and gemv") {
  using wpack::Scheme;
  const LossyCase cases[] = {{Scheme::kInt4, Codec::kRans}, {Scheme::kInt3, Codec::kRans},
                             {Scheme::kInt2, Codec::kRans, 0, 64}, {Scheme::kNf4, Codec::kRans}};
  uint64_t seed = 51;
  for (const LossyCase& c : cases) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"w", DType::BF16, {384, 640}}, {"edge", DType::BF16, {200, 300}}}, c, 128, 128, seed++);
    const std::string coded_path = p->dir.file("coded-a.wpk");
    const uint64_t recoded = wpack::test::with_side_planes_coded(p->reader->path(), coded_path);
    REQUIRE(recoded >= 15);  // the first tensor's 3 x 5 tiles at least
    p->reader = wpack::WpkReader::open(coded_path);
    for (size_t t = 0; t < 2; ++t) {
      if (wpack::gpu::gpu_build_has_warp_tiles()) {
        GpuTensor g = GpuTensor::upload(*p->reader, t);
        CHECK(g.warp_tiles() > 0);
      }
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 5u, 16u}) check_gemv_f32(*p, t, w, batch, seed * 10 + batch);
    }
  }
}

TEST_CASE("gpu lossy: x not 16-byte aligned takes the generic kernel and is still right") {
  using wpack::Scheme;
  auto p = pack_lossy({{"w", DType::BF16, {200, 304}}}, LossyCase{Scheme::kInt8, Codec::kNone}, 128, 128, 9);
  const std::vector<float> w = check_decode_lossy(*p, 0);
  check_gemv_f32(*p, 0, w, 1, 5, /*x_offset=*/1, 2e-3, "generic");  // 2 bytes off alignment
}

// lut3 and lut4 with a table per 100 rows (no bulk-copy or tensor-core kernel) on the CUDA-core
// streaming GEMV at every batch: up to 8 columns in one pass, more in passes of 8 (x's columns
// gathered, each pass adding to its columns of y); 1000 x 4096: an edge tile row of 104 rows.
TEST_CASE("gpu lossy: streaming GEMV in passes of 8 batch columns, lut3, lut4 (lut_rows 100), batch 1..64") {
  using wpack::Scheme;
  for (const LossyCase& c :
       {LossyCase{Scheme::kLut3, Codec::kNone}, LossyCase{Scheme::kLut4, Codec::kNone, 0, 0, false, 100}}) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"a", DType::BF16, {1000, 4096}}}, c, 128, 128, 31);
    const std::vector<float> w = check_decode_lossy(*p, 0);
    for (uint32_t batch : {1u, 8u, 9u, 16u, 21u, 64u}) check_gemv_f32(*p, 0, w, batch, 600 + batch, 0, 2e-3, "streaming");
  }
}

// int3 g64 and int2 g32 (groups the bulk-copy GEMV does not take) in tiles of 8 x 1280 columns: 40
// spans of 32 columns, so at batch 7 and 8 a tile row has 280 and 320 sums of x per span and batch
// for the zero points, more than the streaming kernel's 256 threads (they once went unwritten past
// column 1024); 21 x 2600 adds edge tiles of 5 rows and 40 columns.
TEST_CASE("gpu lossy: streaming GEMV, int3/int2 tiles of 1280 columns, more sums of x than threads, batch 1..12") {
  using wpack::Scheme;
  for (const LossyCase& c : {LossyCase{Scheme::kInt3, Codec::kNone, 0, 64}, LossyCase{Scheme::kInt2, Codec::kNone, 0, 32}}) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"w", DType::BF16, {21, 2600}}}, c, 8, 1280, 41);
    const std::vector<float> w = check_decode_lossy(*p, 0);
    for (uint32_t batch : {1u, 7u, 8u, 12u}) check_gemv_f32(*p, 0, w, batch, 700 + batch, 0, 2e-3, "streaming");
  }
}

TEST_CASE("gpu lossy: layer shapes (11008x4096, 4096x11008, 5120x13824) and edge tiles (4097x4099), int4 and fp6") {
  using wpack::Scheme;
  for (const LossyCase& c : {LossyCase{Scheme::kInt4, Codec::kNone}, LossyCase{Scheme::kFp6, Codec::kNone},
                             LossyCase{Scheme::kInt4, Codec::kRans}}) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"up", DType::BF16, {11008, 4096}}, {"down", DType::BF16, {4096, 11008}},
                         {"odd", DType::BF16, {4097, 4099}}, {"mlp13b", DType::BF16, {5120, 13824}}},
                        c, 128, 128, 3);
    for (size_t t = 0; t < 4; ++t) {
      const std::vector<float> w = check_decode_lossy(*p, t);
      check_gemv_f32(*p, t, w, 1, 50 + t);
      check_gemv_f32(*p, t, w, 8, 60 + t);
      check_gemv_f32(*p, t, w, 16, 70 + t);
    }
  }
}

// One-tile wide matrices (a matrix of at most 16384 elements is one tile of its own shape:
// packer/tiling.cpp choose_tile_shape) of rANS-coded codes take the generic GEMV (checked: the
// tile's codec, the kernel's name). It held x for the tile's whole width and 8 batch columns
// (32 bytes a column: 512 KiB at 16384 columns), so [1, 16384] int4 and int8 were refused at
// every batch, batch 1 too ("tiles need N bytes of shared memory"), though their decode takes
// 55-80 KiB; [3, 5000] (156 KiB of x) fit only while its decode took under about 70 KiB (it does
// here; rANS tables of precision 12 would not). x is now staged in slices of 512 columns. A refusal
// throws out of check_gemv_f32 and fails the case. Where x whole fits beside the decode at 8
// batch columns it is held whole (12 x 1365, one tile as well). 16 x 4096 in one 16 x 4096 tile
// (--tile): x whole (128 KiB) beside 64 KiB of codes and ~33 KiB stored does not fit, so two rounds
// of the kernel's 8 warps over 8 slices. The weights are the CPU decode's exactly, so only float32
// accumulation separates y from float64.
TEST_CASE("gpu lossy: one-tile wide matrices (1x16384 int4 and int8, 3x5000 int4, rans) on the generic GEMV, x in slices, batch 1..64") {
  using wpack::Scheme;
  struct WideCase {
    LossyCase lossy;
    Spec spec;
    std::vector<uint32_t> batches;
    uint32_t tile_rows = 128, tile_cols = 128;
  };
  const WideCase cases[] = {
      {{Scheme::kInt4, Codec::kRans}, {"row", DType::F32, {1, 16384}}, {1, 8, 16, 64}},
      {{Scheme::kInt8, Codec::kRans}, {"row", DType::F32, {1, 16384}}, {1, 8, 16, 64}},
      {{Scheme::kInt4, Codec::kRans}, {"wide", DType::F32, {3, 5000}}, {1, 3, 8, 9, 64}},
      {{Scheme::kInt4, Codec::kRans}, {"whole", DType::F32, {12, 1365}}, {1, 8, 9}},
      {{Scheme::kInt4, Codec::kRans}, {"rounds", DType::F32, {16, 4096}}, {1, 8, 9}, 16, 4096},
  };
  uint64_t seed = 81;
  for (const WideCase& c : cases) {
    INFO("case " << case_name(c.lossy) << ", " << c.spec.shape[0] << " x " << c.spec.shape[1]);
    auto p = pack_lossy({c.spec}, c.lossy, c.tile_rows, c.tile_cols, seed++);
    const auto& info = p->reader->tensors()[0];
    REQUIRE(info.scheme != 0);
    REQUIRE(info.tile_count == 1);
    REQUIRE(info.tile_rows == c.spec.shape[0]);
    REQUIRE(info.tile_cols == c.spec.shape[1]);
    REQUIRE(p->reader->tiles()[info.first_tile].codec == static_cast<uint8_t>(Codec::kRans));
    const std::vector<float> w = check_decode_lossy(*p, 0);
    for (uint32_t batch : c.batches)
      REQUIRE(check_gemv_f32(*p, 0, w, batch, seed * 100 + batch, 0, 1e-4, "generic") == "generic");
  }
}

// The bulk-copy GEMV (kernels/quant_gemv_tma.cu) serves int4/int8/fp8/fp6 (and int3/int2/fp4/nf4/lut4/fp5, below)
// tensors of dense raw tiles whose widths are multiples of 64 (int4, fp6) / 32 (int8, fp8) columns:
// a (1000 rows: an edge tile of 104 rows, code plane 8-byte aligned), d (258 rows: an edge tile of
// 2 rows, int4 g64 code plane at 8 + 2 * 6 = 20, 4 mod 8: the unaligned-load path), b (258 x 4160:
// also an edge tile of 2 x 64, whose asymmetric int4 g64 code plane at 8 + 2 * 3 = 14 is not 4-byte
// aligned: realigned in the warps' scratch) and e (45 rows, every tile an edge tile: asymmetric int4
// g64 codes at 8 + 45 * 6 = 278, 2 mod 4, realigned in every tile) take it in every case (checked:
// gemv_kernel()); c (4 rows only) is multiplied right but not always there: measured on an H200, it
// takes the generic kernel for int8 and fp8 at every batch. Every batch width of the bulk-copy
// kernel's variants: 1 (batch-1 kernels), 2..8 (warp per tile), 9..64 (n-tiles).
TEST_CASE("gpu lossy: bulk-copy GEMV, int4/int8/fp8/fp6, edge rows and columns, groups, batch 1..64") {
  using wpack::Scheme;
  for (const LossyCase& c : {LossyCase{Scheme::kInt4, Codec::kNone, 0, 64}, LossyCase{Scheme::kInt4, Codec::kNone, 0, 64, true},
                             LossyCase{Scheme::kInt8, Codec::kNone}, LossyCase{Scheme::kFp8, Codec::kNone},
                             LossyCase{Scheme::kFp6, Codec::kNone}}) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"a", DType::BF16, {1000, 4096}}, {"b", DType::BF16, {258, 4160}}, {"c", DType::BF16, {4, 2048}},
                         {"d", DType::BF16, {258, 4096}}, {"e", DType::BF16, {45, 4096}}},
                        c, 128, 128, 21);
    for (size_t t = 0; t < 5; ++t) {
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 2u, 5u, 8u, 9u, 16u, 33u, 64u})
        check_gemv_f32(*p, t, w, batch, 90 + 10 * t + batch, 0, 2e-3, t != 2 ? ring() : nullptr);
    }
  }
  // The default int4 (group 128) on 64-row tiles: four 16-row blocks per tile.
  auto p = pack_lossy({{"d", DType::BF16, {700, 2048}}}, LossyCase{Scheme::kInt4, Codec::kNone}, 64, 256, 22);
  const std::vector<float> w = check_decode_lossy(*p, 0);
  for (uint32_t batch : {1u, 3u, 16u}) check_gemv_f32(*p, 0, w, batch, 500 + batch, 0, 2e-3, ring());
  // Tiles wider than 256 columns: prepare_kernel's sums of x for 8 and 16 groups of 64 per tile
  // column (32 and 64 bytes after each batch row of x); 1536 columns: with 1024-column tiles an edge
  // tile column of 512.
  for (uint32_t tile_cols : {512u, 1024u}) {
    INFO("int4 g64 asymmetric, 32 x " << tile_cols << " tiles");
    auto q = pack_lossy({{"w", DType::BF16, {100, 1536}}}, LossyCase{Scheme::kInt4, Codec::kNone, 0, 64}, 32,
                        tile_cols, 23);
    const std::vector<float> wq = check_decode_lossy(*q, 0);
    for (uint32_t batch : {1u, 5u, 16u}) check_gemv_f32(*q, 0, wq, batch, 510 + batch, 0, 2e-3, ring());
  }
}

// The tensor-core streaming GEMV (kernels/quant_kernels.cu) serves int4 and int8 where the
// bulk-copy GEMV does not run (a toolkit before CUDA 12, a GPU before compute capability 9.0;
// WPACK_GPU_NO_TMA here): int4 with zero points whose edge tiles' code planes start off a word
// boundary (b, 258 x 4160: a 2 x 64 edge tile with codes at 8 + 2 * 3 = 14; e, 45 x 4096: every
// tile's at 8 + 45 * 6 = 278 (g64) or 8 + 45 * 3 = 143 (g128); f, 301 x 4096: an edge row of 45)
// take its funnel-shift word loads; the symmetric case (aligned) its plain ones. Every n-tile count.
TEST_CASE("gpu lossy: tensor-core GEMV without bulk copies, int4 code planes off a word boundary, batch 1..64") {
  using wpack::Scheme;
  wpack::test::ScopedEnv no_tma("WPACK_GPU_NO_TMA", "1");  // read at upload (check_gemv_f32)
  for (const LossyCase& c : {LossyCase{Scheme::kInt4, Codec::kNone, 0, 64}, LossyCase{Scheme::kInt4, Codec::kNone},
                             LossyCase{Scheme::kInt4, Codec::kNone, 0, 64, true}}) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"b", DType::BF16, {258, 4160}}, {"e", DType::BF16, {45, 4096}},
                         {"f", DType::BF16, {301, 4096}}},
                        c, 128, 128, 23);
    for (size_t t = 0; t < 3; ++t) {
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 8u, 9u, 16u, 33u, 64u})
        check_gemv_f32(*p, t, w, batch, 300 + 10 * t + batch, 0, 2e-3, "tensor-core");
    }
  }
}

// Random shapes on the tensor-core GEMV, which the random configurations below reach only a few
// times: int4 (groups 32-256, with or without zero points) and int8, dense, codec none, with
// WPACK_GPU_NO_TMA so that the bulk-copy GEMV leaves them to it. Tiles of 1-256 rows and 8-1024
// columns (multiples of 8, at most 32768 elements after the packer rounds them to the group),
// matrices of any row count and K a multiple of 8, batch 1-64; each decodes bit-exact and
// multiplies within 2e-3, on the tensor-core kernel where its stages fit a multiprocessor's shared
// memory, else on the CUDA-core streaming kernel, whose 8-column passes fit wherever upload called
// the tensor streamable (wide tiles at a large batch: on an H200 2 of these 60 cases, 16x1024 int4
// tiles at batch 32 and 8x512 int8 ones at batch 48; before, those fell to the generic kernel).
TEST_CASE("gpu lossy: random int4 and int8 shapes on the tensor-core GEMV") {
  using wpack::Scheme;
  wpack::test::ScopedEnv no_tma("WPACK_GPU_NO_TMA", "1");  // read at upload (check_gemv_f32)
  std::mt19937_64 rng(20261126);
  auto below = [&](uint64_t n) { return static_cast<uint32_t>(rng() % n); };
  const uint32_t tile_rows_choices[] = {1, 3, 8, 16, 32, 64, 100, 128, 256};
  const uint32_t tile_cols_choices[] = {8, 40, 64, 128, 136, 256, 512, 1024};
  const uint32_t batches[] = {1, 2, 7, 8, 9, 16, 17, 31, 32, 48, 64};
  int tensor_core = 0;
  for (int i = 0; i < 60; ++i) {
    const bool int8 = below(3) == 0;
    LossyCase c{int8 ? Scheme::kInt8 : Scheme::kInt4, Codec::kNone};
    if (!int8) {
      c.group = 32u << below(4);
      c.symmetric = below(2) == 1;
    }
    uint32_t tile_rows = 0, tile_cols = 0;
    do {
      tile_rows = tile_rows_choices[below(std::size(tile_rows_choices))];
      tile_cols = tile_cols_choices[below(std::size(tile_cols_choices))];
    } while (uint64_t{tile_rows} * (c.group ? (tile_cols + c.group - 1) / c.group * c.group : tile_cols) > 32768);
    const uint64_t rows = 1 + below(400), cols = 8 * (1 + below(300));
    const uint32_t batch = batches[below(std::size(batches))];
    const DType dtype = below(4) == 0 ? DType::F32 : DType::BF16;
    INFO("case " << i << ": " << case_name(c) << (dtype == DType::F32 ? " F32 " : " BF16 ") << rows << "x" << cols
                 << " in " << tile_rows << "x" << tile_cols << " tiles, batch " << batch);
    auto p = pack_lossy({{"w", dtype, {rows, cols}}}, c, tile_rows, tile_cols, 900 + i);
    const std::vector<float> w = check_decode_lossy(*p, 0);
    const std::string kernel = check_gemv_f32(*p, 0, w, batch, 1900 + i, 0, 2e-3);
    CHECK((kernel == GpuTensor::kGemvTensorCore || kernel == GpuTensor::kGemvStreaming));
    tensor_core += kernel == GpuTensor::kGemvTensorCore;
  }
  std::printf("tensor-core GEMV: %d of 60 random cases, the others on the streaming kernel\n", tensor_core);
  CHECK(tensor_core >= 50);
}

// int3, int2, fp4, nf4, lut4 (one table) and fp5 on the bulk-copy GEMV (mma_codes.cuh's lane-codes
// types: int3 and fp5 in k-steps of 128 columns, the others of 64; nf4 and lut4 from a table of
// FP16 pairs in shared memory, one per code byte, with FP16 x; lut4 without scales, fp5 with
// per-row scales),
// asymmetric and symmetric, groups of 64 and 128, on 128 x 128
// and 64 x 256 tiles. a (1000 x 4096): an edge tile row of 104 rows; e (300 x 4224): an edge row
// of 44 (128-row tiles) or 44 of 64, and with 256-column tiles an edge column of 128; f (45 x 4096)
// and g (175 x 4096): edge rows of 45 and 47, whose code planes start off a word boundary (realigned
// in the warps' scratch) for the asymmetric int3/int2 and the fp4/nf4 g128 128-column cases: int3
// g128 at 8 + 45 * 3 = 143 (3 mod 4) and 8 + 47 * 3 = 149 (1 mod 4), nf4 g128 at 8 + 45 * 2 = 98
// (2 mod 4). All take the bulk-copy kernel (checked: gemv_kernel()), at every batch width of the
// kernel's variants.
TEST_CASE("gpu lossy: bulk-copy GEMV, int3/int2/fp4/nf4/lut4/fp5, edge rows and columns, groups, batch 1..64") {
  using wpack::Scheme;
  struct Case {
    LossyCase c;
    uint32_t tile_rows, tile_cols;
  };
  const Case cases[] = {
      {{Scheme::kInt3, Codec::kNone, 0, 128}, 128, 128},       {{Scheme::kInt3, Codec::kNone, 0, 128, true}, 64, 256},
      {{Scheme::kInt2, Codec::kNone, 0, 64}, 128, 128},        {{Scheme::kInt2, Codec::kNone, 0, 128, true}, 64, 256},
      {{Scheme::kFp4, Codec::kNone, 0, 128}, 128, 128},        {{Scheme::kFp4, Codec::kNone, 0, 64}, 64, 256},
      {{Scheme::kNf4, Codec::kNone, 0, 128}, 128, 128},        {{Scheme::kNf4, Codec::kNone, 0, 64}, 64, 256},
      {{Scheme::kLut4, Codec::kNone}, 128, 128},               {{Scheme::kLut4, Codec::kNone}, 64, 256},
      {{Scheme::kFp5, Codec::kNone}, 128, 128},                {{Scheme::kFp5, Codec::kNone}, 64, 256},
  };
  uint64_t seed = 700;
  for (const Case& k : cases) {
    INFO("case " << case_name(k.c) << " tiles " << k.tile_rows << "x" << k.tile_cols);
    auto p = pack_lossy({{"a", DType::BF16, {1000, 4096}}, {"e", DType::BF16, {300, 4224}},
                         {"f", DType::BF16, {45, 4096}}, {"g", DType::BF16, {175, 4096}}},
                        k.c, k.tile_rows, k.tile_cols, seed++);
    for (size_t t = 0; t < 4; ++t) {
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 2u, 5u, 8u, 9u, 16u, 33u, 64u})
        check_gemv_f32(*p, t, w, batch, seed * 100 + 10 * t + batch, 0, 2e-3, ring());
    }
  }
}

// The minifloat schemes' bulk-copy GEMV takes x times 2^64 (kernels/detail/mma_codes.cuh scale_x)
// where a warp multiplies several row blocks, or multiplies each A pair (warps sharing a tile): x
// far from 1 (times 2^40 and 2^-40) keeps the relative error of x near 1, at every batch path
// (1, 2..8, 9..16, 17..64), for fp8, fp6, fp5 and fp4 (and int4, which takes x as it is, and int8
// at batch <= 16, nf4 and lut4, whose FP16 x takes a power of two per tile column).
// 2^-116 (int8, int4, nf4, lut4): x near the bottom of BF16's range, where the FP16 x of nf4, lut4
// and int8 (batch up to 16) is scaled up by 2^129 or more (that factor, formed alone, was infinite:
// y was NaN and inf). Not much further down: y (~2^-117 here) nears float32's subnormals, which
// the float atomics that add the tiles' partial sums flush to zero (PTX atom.add.f32); at 2^-120
// int8's y was 1% off, most likely so. The
// minifloat kinds take x times 2^64 and their codes' values times 2^-120..2^-126 in BF16
// (kernels/quant_gemv_tma.cu): x within 2^-60..2^60 (tile_decode.h); at 2^-116 their products
// underflow.
TEST_CASE("gpu lossy: bulk-copy GEMV of minifloat codes with x far from 1 (times 2^+-40, 2^+-60, 2^-116), batch 1..64") {
  using wpack::Scheme;
  const LossyCase cases[] = {{Scheme::kFp8, Codec::kNone}, {Scheme::kFp6, Codec::kNone}, {Scheme::kFp5, Codec::kNone},
                             {Scheme::kFp4, Codec::kNone, 0, 64}, {Scheme::kInt8, Codec::kNone},
                             {Scheme::kInt4, Codec::kNone, 0, 128}, {Scheme::kNf4, Codec::kNone, 0, 64},
                             {Scheme::kLut4, Codec::kNone}};
  uint64_t seed = 760;
  for (const LossyCase& c : cases) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"a", DType::BF16, {300, 1024}}}, c, 128, 128, seed++);
    const std::vector<float> w = check_decode_lossy(*p, 0);
    const bool minifloat = c.scheme == Scheme::kFp8 || c.scheme == Scheme::kFp6 || c.scheme == Scheme::kFp5 ||
                           c.scheme == Scheme::kFp4;
    for (int x_exp : {40, -40, 60, -60, -116})
      for (uint32_t batch : {1u, 5u, 16u, 33u})
        if (x_exp > -100 || !minifloat) check_gemv_f32(*p, 0, w, batch, seed * 100 + batch, 0, 2e-3, ring(), x_exp);
  }
}

// The bulk-copy GEMV's layout depends on the tensor's tiles per multiprocessor (QuantDevParams
// tiles_per_sm): at batch 9..16 fp6, nf4, lut4 and fp5 take a warp per half tile from
// kManyTilesPerSm (48) on, int8, fp8 and int3 from kFewTilesPerSm (16) on, a quarter tile below;
// int8 and fp8 at batch 1 a half tile from kManyTilesPerSm on, a quarter below (fp6 a half tile).
// Each "many" tensor has enough tiles for its threshold on a GPU of up to 133 multiprocessors (the
// H200 has 132): 4096 x 6400 in 64 x 64 tiles is 6400 tiles, fp5's 8192 x 6400 in 64 x 128 tiles
// (its kernel steps 128 columns) too (64-row tiles leave the second warp of each tile idle), int3 g128
// 4224 x 8448 in 128 x 128 tiles 2178; 300 x 1024 is few.
TEST_CASE("gpu lossy: bulk-copy GEMV at batch 1 and 9..16 with many tiles and with few: the kinds whose layout depends on it") {
  using wpack::Scheme;
  struct ManyCase {
    LossyCase c;
    uint64_t rows, cols;
    uint32_t tile_rows, tile_cols;
  };
  const ManyCase cases[] = {{{Scheme::kFp6, Codec::kNone}, 4096, 6400, 64, 64},
                            {{Scheme::kInt8, Codec::kNone}, 4096, 6400, 64, 64},
                            {{Scheme::kFp8, Codec::kNone}, 4096, 6400, 64, 64},
                            {{Scheme::kNf4, Codec::kNone, 0, 64}, 4096, 6400, 64, 64},
                            {{Scheme::kLut4, Codec::kNone}, 4096, 6400, 64, 64},
                            {{Scheme::kFp5, Codec::kNone}, 8192, 6400, 64, 128},
                            {{Scheme::kInt3, Codec::kNone, 0, 128}, 4224, 8448, 128, 128}};
  uint64_t seed = 780;
  for (const ManyCase& m : cases) {
    auto p = pack_lossy({{"many", DType::BF16, {m.rows, m.cols}}, {"few", DType::BF16, {300, 1024}}}, m.c, m.tile_rows,
                        m.tile_cols, seed++);
    for (size_t t = 0; t < 2; ++t) {
      INFO("case " << case_name(m.c) << ", tensor " << t);
      const std::vector<float> w = check_decode_lossy(*p, t);
      for (uint32_t batch : {1u, 9u, 16u})
        check_gemv_f32(*p, t, w, batch, seed * 100 + 10 * t + batch, 0, 2e-3, ring());
    }
  }
}

// rANS-coded quantized tiles (the default codec) on the warp-per-tile GEMV: every scheme whose
// plane-B symbols are its codes (int8/4/3/2, fp8, fp4, nf4, one-table lut4/lut3) and fp6/fp5,
// whose plane-B symbols are the packed code bytes (decoded first, then unpacked), layouts 4 and 6
// (asymmetric int: zero-relative symbols), grouped scales decoded from plane A, row scales, value
// tables; and pruned tensors' sparse tiles (layout 5: the bitmap in plane A, the occupied codes
// decoded into shared memory first, or read in place from a raw plane B, codec none; unoccupied
// elements multiplied as +0.0). Tensor a: 128x128 tiles with a 104-row edge (every tile
// qualifies); e: 128x128 tiles with 44-row and 64-column edges; o: a 3-column edge tile (not 32, 64
// or 128 wide, and too small for rANS to pay), which takes the generic kernel in the same call;
// s: 64x32 tiles (64x64 or 64x128 with groups of 64 or 128) and edge tiles of 8 rows and 8, 40 or
// 104 columns. Batch 1..8 multiplies on CUDA cores, 9..64 on tensor cores (rows staged in groups of
// 8, here also groups cut short by a tile's last row; nf4's and the LUTs' values as a high and a
// low BF16 part, minifloats as they are): y within 1e-4 of the float64 product of the decoded
// weights either way (nf4 staged without its low part would miss by ~1e-3).
TEST_CASE("gpu lossy: warp-per-tile GEMV of rANS-coded tiles, every code scheme, edge tiles, batch 1..64") {
  using wpack::Scheme;
  const LossyCase cases[] = {
      {Scheme::kInt4, Codec::kRans, 0, 128}, {Scheme::kInt4, Codec::kRans, 0, 32, true}, {Scheme::kInt8, Codec::kRans},
      {Scheme::kInt3, Codec::kRans, 0, 64},  {Scheme::kInt2, Codec::kRans, 0, 128},      {Scheme::kFp8, Codec::kRans},
      {Scheme::kFp4, Codec::kRans, 0, 64},   {Scheme::kNf4, Codec::kRans, 0, 128},       {Scheme::kLut4, Codec::kRans},
      {Scheme::kLut3, Codec::kRans}, {Scheme::kFp6, Codec::kRans},         {Scheme::kFp5, Codec::kRans},
      // pruned: sparse tiles (layout 5), the occupied codes buffered in shared memory first (the
      // packer stores these sparse; asymmetric int4 and nf4 pruned 0.5 code smaller dense)
      {Scheme::kInt4, Codec::kRans, 0.5, 128, true}, {Scheme::kInt8, Codec::kRans, 0.5},
      {Scheme::kFp8, Codec::kRans, 0.5},             {Scheme::kFp6, Codec::kRans, 0.7},
      // pruned, codec none: raw sparse tiles of a scheme the bulk-copy GEMV does not take (lut3),
      // the codes read in place
      {Scheme::kLut3, Codec::kNone, 0.5},
  };
  const bool warp_kernels = wpack::gpu::gpu_build_has_warp_tiles();
  uint64_t seed = 900;
  for (const LossyCase& c : cases) {
    INFO("case " << case_name(c));
    auto p = pack_lossy({{"a", DType::BF16, {1000, 4096}}, {"e", DType::BF16, {300, 4160}}, {"o", DType::BF16, {77, 4099}}},
                        c, 128, 128, seed++);
    auto q = pack_lossy({{"s", DType::BF16, {200, 1000}}}, c, 64, 32, seed++);
    for (size_t t = 0; t < 4; ++t) {
      const Packed& pk = t < 3 ? *p : *q;
      const size_t ti = t < 3 ? t : 0;
      const auto& info = pk.reader->tensors()[ti];
      // The kernel's tiles: layout 4, 5 or 6 with plane B coded, or layout 5 with plane B raw, 32,
      // 64 or 128 columns wide.
      uint64_t coded = 0, fast = 0, sparse_a_coded = 0;  // the last: sparse tiles whose plane A (with the bitmap) is coded
      for (uint64_t k = 0; k < info.tile_count; ++k) {
        const auto bytes = pk.reader->tile_bytes(info.first_tile + k);
        const bool c = bytes.size() >= 8 && (!(bytes[7] & 0x80) || pk.reader->tiles()[info.first_tile + k].filter == 5);
        const uint64_t col0 = k % info.tile_grid_cols() * info.tile_cols;
        const uint64_t width = std::min<uint64_t>(info.tile_cols, info.cols() - col0);
        coded += c;
        fast += c && (width == 32 || width == 64 || width == 128);
        sparse_a_coded += c && pk.reader->tiles()[info.first_tile + k].filter == 5 && !(bytes[3] & 0x80);
      }
      GpuTensor g = GpuTensor::upload(*pk.reader, ti);
      INFO("tensor " << info.name << ": " << coded << " coded tiles, " << fast << " for the kernel, of " << info.tile_count
                      << "; " << sparse_a_coded << " sparse with plane A coded");
      // rANS pays for every full tile of these Gaussian weights (not always for small edge tiles,
      // nor for fp6's and fp5's 64 x 32 tiles, whose packed bytes code a few percent smaller at best)
      const bool packed = c.scheme == Scheme::kFp6 || c.scheme == Scheme::kFp5;
      if (!(packed && t == 3)) REQUIRE(fast > 0);
      if (c.prune > 0 && t < 3) REQUIRE(sparse_tile_count(pk, ti) > 0);
      if (c.codec == Codec::kNone && t == 0) REQUIRE(sparse_tile_count(pk, ti) == info.tile_count);
      // fp6 pruned 0.7: a bitmap of 30% density codes smaller, so the kernel decodes plane A and
      // keeps the row scales after it
      if (c.prune > 0.6 && t == 0) REQUIRE(sparse_a_coded > 0);
      if (t == 0) REQUIRE(fast == info.tile_count);
      if (t == 2) REQUIRE(fast < info.tile_count);
      REQUIRE(g.warp_tiles() == (warp_kernels ? fast : 0));
      // (with no tile for the kernel, not pinned: all-raw tiles may take a streaming kernel)
      const char* kernel = fast == 0                ? nullptr
                           : !warp_kernels          ? "generic"
                           : fast < info.tile_count ? "warp-per-tile + generic"
                                                    : "warp-per-tile";
      const std::vector<float> w = check_decode_lossy(pk, ti);
      for (uint32_t batch : {1u, 2u, 3u, 5u, 8u, 9u, 16u, 33u, 64u})
        check_gemv_f32(pk, ti, w, batch, seed * 100 + 10 * t + batch, 0, 1e-4, kernel);
    }
  }
}

// Sparse tiles of the lane-codes kinds (layout 5, codec none) on the bulk-copy GEMV: the consumer
// expands bitmap and occupied codes into dense codes, every unoccupied element given a code whose
// value is 0 (int codes: the group's zero point, symmetric 2^(bits-1); fp4, fp5: 0; nf4 and lut4:
// the table's 0 entry). int4 pruned 0.5 and 0.9 (every tile sparse), and 0.25, where a 128x128
// tile's sparse form is about as large as its dense one, so that tensor "a" mixes both layouts
// (checked); fp4, nf4, lut4, int3 and fp5 pruned 0.5, int2 0.7 (at 0.5 its sparse tiles are as
// large as its dense ones) (lut4's table, fitted to weights half of which are 0 and the rest far
// from it, has an entry 0: checked). Shapes as in the case above; the edge tile rows of "b" (2
// rows; 2 x 64 tile asymmetric: bitmap at 2 mod 4), "d" (57 rows: at 2 mod 4, asymmetric g128 3)
// and "e" (3 rows: asymmetric g128 at 1 mod 4) put the bitmap and the codes off a 4-byte
// boundary, which the kernel reads by funnel shifts.
TEST_CASE("gpu lossy: bulk-copy GEMV, sparse int4/3/2, fp5/4, nf4, lut4 tiles and a mix of dense and sparse, batch 1..64") {
  using wpack::Scheme;
  for (const LossyCase& c : {LossyCase{Scheme::kInt4, Codec::kNone, 0.5, 64},
                             LossyCase{Scheme::kInt4, Codec::kNone, 0.9, 128, true},
                             LossyCase{Scheme::kInt4, Codec::kNone, 0.25, 64},
                             LossyCase{Scheme::kInt4, Codec::kNone, 0.5, 128},
                             LossyCase{Scheme::kFp4, Codec::kNone, 0.5, 64},
                             LossyCase{Scheme::kNf4, Codec::kNone, 0.5, 128},
                             LossyCase{Scheme::kLut4, Codec::kNone, 0.5},
                             LossyCase{Scheme::kInt3, Codec::kNone, 0.5, 128},
                             LossyCase{Scheme::kInt2, Codec::kNone, 0.7, 64},
                             LossyCase{Scheme::kInt2, Codec::kNone, 0.7, 128, true},
                             LossyCase{Scheme::kFp5, Codec::kNone, 0.5}}) {
    INFO("case " << case_name(c) << " " << c.prune);
    auto p = pack_lossy({{"a", DType::BF16, {1000, 4096}},
                         {"b", DType::BF16, {258, 4160}},
                         {"c", DType::BF16, {4, 2048}},
                         {"d", DType::BF16, {185, 4096}},
                         {"e", DType::BF16, {131, 4096}}},
                        c, 128, 128, 23);
    auto sparse_tiles = [&](size_t t) { return sparse_tile_count(*p, t); };
    const uint64_t a_tiles = p->reader->tensors()[0].tile_count;
    if (c.prune >= 0.5) {
      REQUIRE(sparse_tiles(0) == a_tiles);
      for (size_t t : {3, 4}) {  // edge tile rows too
        INFO("tensor " << p->reader->tensors()[t].name);
        REQUIRE(sparse_tiles(t) == p->reader->tensors()[t].tile_count);
      }
    } else {
      REQUIRE((sparse_tiles(0) > 0 && sparse_tiles(0) < a_tiles));
    }
    // groups and the k-step (int3, fp5: 128 columns, the others 64) must divide K (tensor "b": 4160)
    const uint32_t step = std::max<uint32_t>(c.group, c.scheme == Scheme::kInt3 || c.scheme == Scheme::kFp5 ? 128 : 64);
    for (size_t t = 0; t < 5; ++t) {
      if (c.scheme == Scheme::kLut4) {  // (one table for the tensor)
        const std::vector<uint16_t> table = wpack::tensor_quant_params(*p->reader, t).tables;
        INFO("tensor " << p->reader->tensors()[t].name);
        REQUIRE(std::any_of(table.begin(), table.end(), [](uint16_t h) { return (h & 0x7FFF) == 0; }));
      }
      const std::vector<float> w = check_decode_lossy(*p, t);
      const bool ring_takes = t != 2 && !(t == 1 && 4160 % step);
      for (uint32_t batch : {1u, 2u, 5u, 8u, 9u, 16u, 33u, 64u})
        check_gemv_f32(*p, t, w, batch, 190 + 10 * t + batch, 0, 2e-3, ring_takes ? ring() : nullptr);
    }
  }
}

// Sparse int8, fp8 and fp6 tiles (layout 5: the bitmap, then the occupied codes, a byte each or 6
// bits each) on the bulk-copy GEMV: each warp expands its rows into its scratch, unoccupied
// elements 128 (int8) or 0 (fp8, fp6: +0.0), then multiplies as for dense tiles. Pruned 0.5 and 0.9
// (every tile sparse, edge tile rows of 2, 57 and 3 rows included) and where a tile's sparse form
// is about as large as its dense one (int8, fp8: 0.125, 1/8 + 7/8 of the dense bytes; fp6: 1/6,
// 1/8 + 5/6 x 3/4 of a byte a code against 3/4), so that tensor "a" mixes both layouts (checked).
// Every batch width of the kernel's variants; "c" (4 rows) is checked for its product, not pinned
// to a kernel.
TEST_CASE("gpu lossy: bulk-copy GEMV, sparse int8, fp8 and fp6 tiles and a mix of dense and sparse, batch 1..64") {
  using wpack::Scheme;
  uint64_t seed = 1300;
  for (const Scheme scheme : {Scheme::kInt8, Scheme::kFp8, Scheme::kFp6}) {
    for (const double prune : {0.5, 0.9, scheme == Scheme::kFp6 ? 1.0 / 6 : 0.125}) {
      const LossyCase c{scheme, Codec::kNone, prune};
      INFO("case " << case_name(c) << " " << prune);
      auto p = pack_lossy({{"a", DType::BF16, {1000, 4096}},
                           {"b", DType::BF16, {258, 4160}},
                           {"c", DType::BF16, {4, 2048}},
                           {"d", DType::BF16, {185, 4096}},
                           {"e", DType::BF16, {131, 4096}}},
                          c, 128, 128, seed++);
      const uint64_t a_tiles = p->reader->tensors()[0].tile_count;
      if (prune >= 0.5) {
        for (size_t t : {0, 1, 3, 4}) {
          INFO("tensor " << p->reader->tensors()[t].name);
          REQUIRE(sparse_tile_count(*p, t) == p->reader->tensors()[t].tile_count);
        }
      } else {
        REQUIRE((sparse_tile_count(*p, 0) > 0 && sparse_tile_count(*p, 0) < a_tiles));
      }
      for (size_t t = 0; t < 5; ++t) {
        const std::vector<float> w = check_decode_lossy(*p, t);
        for (uint32_t batch : {1u, 2u, 5u, 8u, 9u, 16u, 33u, 64u})
          check_gemv_f32(*p, t, w, batch, seed * 100 + 10 * t + batch, 0, 2e-3, t == 2 ? nullptr : ring());
      }
    }
  }
}

// ---- lossless exp4 tiles (docs/FORMAT.md "Codec 3, exp4") ----

// BF16 weights (sigma 0.02) with escapes in every tile: every 61st weight 0 (exponent 0) and every
// 257th one 3000 or -3000 (exponent 138), both far outside a tile's window; tile row 0 of tensor
// "z" is all zeros but for its escapes (window base 0).
static std::unique_ptr<Packed> pack_exp4(const std::vector<Spec>& specs, uint32_t tile_rows, uint32_t tile_cols,
                                         uint64_t seed) {
  auto add_escapes = [&](const Spec& spec, std::vector<uint8_t>& bytes) {
    if (spec.dtype != DType::BF16) return;
    auto* w = reinterpret_cast<uint16_t*>(bytes.data());
    const uint64_t n = bytes.size() / 2, cols = spec.shape.back();
    for (uint64_t e = 0; e < n; ++e) {
      if (spec.name == "z" && e / cols < tile_rows) w[e] = 0;
      if (e % 61 == 7) w[e] = 0;
      if (e % 257 == 11) w[e] = e % 2 ? 0xC53B : 0x453B;  // -/+ 2992
    }
  };
  auto p = pack(specs, Codec::kExp4, tile_rows, tile_cols, std::nullopt, seed, add_escapes);
  for (size_t t = 0; t < specs.size(); ++t) {  // every tile exp4: the data is what the test says it is
    const auto& info = p->reader->tensors()[t];
    for (uint64_t k = 0; k < info.tile_count; ++k)
      REQUIRE(p->reader->tiles()[info.first_tile + k].codec == static_cast<uint8_t>(Codec::kExp4));
  }
  return p;
}

// decode() bit-exact (BF16 and F32, edge tiles, 1-row tensors) and gemv() against float64 with the
// exact weights, batch 1..64: tensors of 128x128 tiles 32-column multiples wide take the bulk-copy
// GEMV (escapes added per batch column), "c" (a 3-column edge tile) the block-per-tile kernel.
TEST_CASE("gpu exp4: decode bit-exact, bulk-copy GEMV with escapes, edge tiles, batch 1..64") {
  auto p = pack_exp4({{"a", DType::BF16, {1000, 4096}},
                      {"b", DType::BF16, {300, 4160}},
                      {"c", DType::BF16, {77, 4099}},
                      {"z", DType::BF16, {256, 512}},
                      {"f", DType::F32, {33, 1000}},
                      {"r", DType::BF16, {1, 4096}}},
                     128, 128, 51);
  CHECK(check_decode(*p) > 0);
  const bool built = ring() != nullptr;
  const char* expect[] = {ring(), ring(), GpuTensor::kGemvBlockPerTile, ring()};
  for (size_t t = 0; t < 4; ++t)
    for (uint32_t batch : {1u, 2u, 3u, 5u, 8u, 9u, 16u, 17u, 33u, 64u})
      check_gemv(*p, t, batch, 900 + 10 * t + batch, built ? expect[t] : nullptr);
  for (uint32_t batch : {1u, 16u}) check_gemv(*p, 5, batch, 990 + batch);  // 1 x 4096: one 1-row tile row
  // 64 x 32 tiles: "d" 1024 columns (every tile 32 wide), "e" 1000 (31 x 32 + an 8-column edge tile:
  // the block-per-tile kernel)
  auto q = pack_exp4({{"d", DType::BF16, {200, 1024}}, {"e", DType::BF16, {200, 1000}}}, 64, 32, 52);
  CHECK(check_decode(*q) > 0);
  const char* kernels[] = {ring(), GpuTensor::kGemvBlockPerTile};
  for (uint32_t batch : {1u, 4u, 16u, 40u})
    for (size_t t = 0; t < 2; ++t) check_gemv(*q, t, batch, 1000 + 10 * t + batch, built ? kernels[t] : nullptr);
}

// An exp4 tile whose bytes break a rule of the format while every checksum agrees (test_util's
// edit_wpk_tile): upload leaves the tensor to the block-per-tile kernels, which report that tile
// corrupt in decode() and gemv() and every other tile ok.
TEST_CASE("gpu exp4: a malformed tile whose checksums agree is reported for its tile") {
  auto p = pack_exp4({{"w", DType::BF16, {256, 256}}}, 128, 128, 53);
  const std::string path = p->dir.file("t.wpk");
  const auto good = wpack::test::read_file(path);
  struct Damage {
    const char* name;
    std::function<void(uint8_t*, uint64_t)> edit;
  };
  const uint64_t n = 128 * 128, at = 16 + n + n / 2;  // the escape indices
  const Damage damages[] = {
      {"base above 240", [](uint8_t* b, uint64_t) { b[0] = 241; }},
      {"reserved byte set", [](uint8_t* b, uint64_t) { b[9] = 1; }},
      {"escape index out of range", [&](uint8_t* b, uint64_t) { b[at + 3] = 0x7F; }},
      {"escape value inside the window", [&](uint8_t* b, uint64_t size) {
         const uint32_t count = b[4] | (b[5] << 8);
         b[size - count] = b[0];  // the first escape's value := base
       }},
      {"escaped element with a nonzero code", [&](uint8_t* b, uint64_t) {
         const uint32_t i = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
         b[16 + n + i / 2] |= static_cast<uint8_t>(1u << (4 * (i & 1)));
       }},
  };
  for (const Damage& d : damages) {
    INFO(d.name);
    auto bytes = good;
    wpack::test::edit_wpk_tile(bytes, 1, d.edit);
    const std::string crafted = p->dir.file("c.wpk");
    wpack::test::write_file(crafted, bytes);
    auto reader = wpack::WpkReader::open(crafted);
    GpuTensor g = GpuTensor::upload(*reader, 0);
    REQUIRE(g.tile_count() == 4);
    check_corrupt_tile_reported(g, 1, {1u, 16u}, GpuTensor::kGemvBlockPerTile);
  }
}

// Tile records and params that contradict each other while every checksum agrees, written with
// WpkWriter from tensor 0 of a packed file after `edit_params` and `edit_tile` (index, stored bytes,
// raw size, filter) changed them. The CPU reference decoder judges each tile; upload must not refuse
// the tensor nor let a tile it cannot hold size the kernels' shared memory, decode() must give each
// tile the CPU's verdict, and gemv() at batch 1 and 16 report every tile the CPU refuses. Returns
// how many tiles the CPU refused.
uint64_t check_rewritten_tensor(const Packed& p, const std::function<void(std::vector<uint8_t>&)>& edit_params,
                                const std::function<void(uint64_t, std::vector<uint8_t>&, uint64_t&, uint8_t&)>& edit_tile) {
  const wpack::WpkReader& src = *p.reader;
  wpack::WpkTensor t = src.tensors()[0];
  const uint64_t first = t.first_tile, tiles = t.tile_count;
  const std::string path = p.dir.file("rewritten.wpk");
  {
    wpack::WpkWriter w(path, true);
    t.first_tile = 0;
    t.tile_count = 0;
    edit_params(t.params);
    w.begin_tensor(t);
    for (uint64_t k = 0; k < tiles; ++k) {
      const wpack::WpkTile& rec = src.tiles()[first + k];
      const auto bytes = src.tile_bytes(first + k);
      std::vector<uint8_t> stored(bytes.begin(), bytes.end());
      uint64_t raw_size = rec.raw_size;
      uint8_t filter = rec.filter;
      edit_tile(k, stored, raw_size, filter);
      w.add_tile(stored, raw_size, filter, rec.codec);
    }
    w.end_tensor();
    w.commit("{}");
  }
  const auto reader = wpack::WpkReader::open(path);
  const bool lossless = reader->tensors()[0].scheme == 0;
  wpack::QuantTensorParams params;
  if (!lossless) params = wpack::tensor_quant_params(*reader, 0);
  std::vector<bool> cpu_ok(tiles);
  uint64_t refused = 0;
  for (uint64_t k = 0; k < tiles; ++k) {
    std::vector<uint8_t> bytes;
    std::vector<float> values;
    try {
      if (lossless) wpack::decode_tile_of(*reader, 0, k, bytes);
      else wpack::decode_tile_f32_of(*reader, 0, k, &params, values);
      cpu_ok[k] = true;
    } catch (const wpack::Error& e) {
      INFO("CPU: " << e.what());
      ++refused;
    }
  }
  GpuTensor g = GpuTensor::upload(*reader, 0);
  DeviceBuffer<uint8_t> out(g.rows() * g.cols() * g.decoded_elem_size());
  DeviceBuffer<uint32_t> status(tiles);
  status.poison();
  g.decode(out.ptr, status.ptr);
  CUDA_OK(cudaDeviceSynchronize());
  auto st = status.download();
  for (uint64_t k = 0; k < tiles; ++k) {
    INFO("decode: tile " << k << ": CPU " << (cpu_ok[k] ? "ok" : "refuses") << ", GPU status " << st[k]);
    CHECK(st[k] == static_cast<uint32_t>(cpu_ok[k] ? TileStatus::kOk : TileStatus::kCorrupt));
  }
  DeviceBuffer<uint16_t> x(g.cols() * 16);
  CUDA_OK(cudaMemset(x.ptr, 0x3F, x.count * 2));
  DeviceBuffer<float> y(g.rows() * 16);
  for (uint32_t batch : {1u, 16u}) {
    status.poison();
    g.gemv(x.ptr, y.ptr, batch, status.ptr);
    CUDA_OK(cudaDeviceSynchronize());
    st = status.download();
    for (uint64_t k = 0; k < tiles; ++k) {
      INFO("gemv batch " << batch << " (" << g.gemv_kernel() << "): tile " << k << ", GPU status " << st[k]);
      CHECK(st[k] == static_cast<uint32_t>(cpu_ok[k] ? TileStatus::kOk : TileStatus::kCorrupt));
    }
  }
  return refused;
}

// A lossless tile whose record's raw size is not its shape's (2^32 less the tensor's largest
// stored tile plus 16, which made the 32-bit shared-memory sum wrap; just under 2^32, which
// rounded to 0; 100 MB, which refused the whole tensor; over 4 GiB), in a rANS tensor (the
// warp-per-tile GEMV takes the other tiles) and an exp4 one; a quantized tile whose empty plane A
// is a coded stream (int8: per-row scales, so plane A is empty; the CPU refuses any coded empty
// plane); sparse tiles in a tensor whose params say it has none.
TEST_CASE("gpu decode and gemv: tile records and params that contradict each other are reported for their tiles") {
  using wpack::Scheme;
  const auto nothing = [](std::vector<uint8_t>&) {};
  for (const Codec codec : {Codec::kRans, Codec::kExp4}) {
    auto p = pack({{"w", DType::BF16, {256, 384}}}, codec, 128, 128, std::nullopt, 61);
    uint64_t stored_cap = 0;
    for (uint64_t k = 0; k < 6; ++k) stored_cap = std::max<uint64_t>(stored_cap, (p->reader->tiles()[k].stored_size + 15) / 16 * 16);
    for (const uint64_t raw : {(uint64_t{1} << 32) - stored_cap + 16, uint64_t{0xFFFFFFF8}, uint64_t{100000000},
                               (uint64_t{1} << 33) + 2 * 128 * 128}) {
      INFO(wpack::codec_name(codec) << ": tile 1's raw size " << raw);
      CHECK(check_rewritten_tensor(*p, nothing, [&](uint64_t k, std::vector<uint8_t>&, uint64_t& raw_size, uint8_t&) {
              if (k == 1) raw_size = raw;
            }) == 1);
    }
  }
  {
    auto p = pack_lossy({{"w", DType::BF16, {256, 384}}}, LossyCase{Scheme::kInt8, Codec::kRans}, 128, 128, 62);
    const auto tile1 = p->reader->tile_bytes(1);
    REQUIRE(tile1.size() >= 8);
    REQUIRE((tile1[0] | tile1[1] | tile1[2]) == 0);  // plane A: empty, raw
    REQUIRE(tile1[3] == 0x80);
    CHECK(check_rewritten_tensor(*p, nothing, [](uint64_t k, std::vector<uint8_t>& stored, uint64_t&, uint8_t&) {
            if (k != 1) return;
            stored[0] = 1;  // plane A: a coded stream of one byte (mode 0, stored, no symbols)
            stored[3] = 0;
            stored.insert(stored.begin() + 8, 0);
          }) == 1);
  }
  {
    auto p = pack_lossy({{"w", DType::BF16, {256, 384}}}, LossyCase{Scheme::kInt4, Codec::kNone, 0.5}, 128, 128, 63);
    REQUIRE(sparse_tile_count(*p, 0) == 6);
    REQUIRE((p->reader->tensors()[0].params.at(1) & 2) != 0);
    CHECK(check_rewritten_tensor(*p, [](std::vector<uint8_t>& params) { params.at(1) &= ~2; },
                                 [](uint64_t, std::vector<uint8_t>&, uint64_t&, uint8_t&) {}) == 6);
  }
}

// Random configurations from a fixed seed: scheme (lossless BF16 too), group, symmetry, LUT rows,
// pruning, codec, tile shape (up to 32768 elements, 1 to 256 rows, 32 to 2048 columns), matrix
// shape, batch, x off its alignment, and the bulk-copy kernels switched off at upload
// (WPACK_GPU_NO_TMA) for some; each tensor decoded bit-exact and multiplied within 2e-3 of float64
// (lossless: 1e-5). The fixed cases above pick shapes by hand for each kernel; these draw
// combinations nobody picked. Half the cases are drawn within the bulk-copy kernels' reach. Prints
// the cases each kernel took (on an H200: eight kernels or pairs of them, 1 to 92 cases each).
TEST_CASE("gpu random configurations: decode bit-exact and gemv on whichever kernel takes them") {
  using wpack::Scheme;
  std::mt19937_64 rng(20261125);
  auto below = [&](uint64_t n) { return static_cast<uint32_t>(rng() % n); };
  const Scheme schemes[] = {Scheme::kLossless, Scheme::kInt8, Scheme::kInt4, Scheme::kInt3, Scheme::kInt2,
                            Scheme::kFp8,      Scheme::kFp6,  Scheme::kFp5,  Scheme::kFp4,  Scheme::kNf4,
                            Scheme::kLut4,     Scheme::kLut3};
  const uint32_t tile_rows_choices[] = {1, 2, 8, 16, 32, 64, 100, 128, 256};
  const uint32_t tile_cols_choices[] = {32, 64, 96, 128, 192, 256, 512, 1024, 1280, 2048};
  const uint32_t batches[] = {1, 2, 3, 5, 7, 8, 9, 13, 16, 24, 33, 64};
  std::map<std::string, int> kernels;
  for (int i = 0; i < 300; ++i) {
    const Scheme scheme = schemes[below(std::size(schemes))];
    // Half the cases in the bulk-copy kernels' reach: widths in steps of 64, tiles of 64-256 columns.
    const bool aligned = below(2) == 0;
    uint32_t tile_rows = 0, tile_cols = 0;
    do {
      tile_rows = tile_rows_choices[below(std::size(tile_rows_choices))];
      tile_cols = aligned ? 64u << below(3) : tile_cols_choices[below(std::size(tile_cols_choices))];
    } while (uint64_t{tile_rows} * tile_cols > 32768);
    const uint64_t rows = 1 + below(520), cols = aligned ? 64 * (1 + below(40)) : 1 + below(2600);
    const uint32_t batch = batches[below(std::size(batches))];
    const size_t x_offset = below(aligned ? 16 : 6) == 0 ? 1 : 0;
    const bool no_bulk_copy = !aligned && below(3) == 0;
    LossyCase c{scheme, below(aligned ? 5 : 3) == 0 ? Codec::kRans : Codec::kNone};
    const bool grouped = scheme == Scheme::kInt4 || scheme == Scheme::kInt3 || scheme == Scheme::kInt2 ||
                         scheme == Scheme::kFp4 || scheme == Scheme::kNf4;
    if (grouped) c.group = 32u << (aligned ? 2 + below(2) : below(4));
    if (scheme == Scheme::kInt4 || scheme == Scheme::kInt3 || scheme == Scheme::kInt2) c.symmetric = below(2);
    if (scheme == Scheme::kLut4 || scheme == Scheme::kLut3) c.lut_rows = below(2) ? 0 : 1 + below(130);
    if (scheme != Scheme::kLossless && below(4) == 0) c.prune = 0.3 + 0.2 * below(3);
    if (scheme == Scheme::kLossless && below(3) == 0) c.codec = Codec::kExp4;
    const DType dtype = scheme != Scheme::kLossless && below(5) == 0 ? DType::F32 : DType::BF16;
    std::ostringstream what;
    what << "case " << i << ": " << (scheme == Scheme::kLossless ? "lossless" : case_name(c))
         << (c.codec == Codec::kExp4 ? "/exp4" : "") << (dtype == DType::F32 ? " F32 " : " BF16 ") << rows << "x"
         << cols << " in " << tile_rows << "x" << tile_cols << " tiles, batch " << batch << (x_offset ? ", x unaligned" : "")
         << (no_bulk_copy ? ", WPACK_GPU_NO_TMA" : "");
    INFO(what.str());
    std::optional<wpack::test::ScopedEnv> no_tma;  // for this case's uploads only, even when a check throws
    if (no_bulk_copy) no_tma.emplace("WPACK_GPU_NO_TMA", "1");
    std::string kernel;
    if (scheme == Scheme::kLossless) {
      auto p = pack({{"w", dtype, {rows, cols}}}, c.codec, tile_rows, tile_cols, std::nullopt, 100 + i);
      check_decode(*p);
      kernel = check_gemv(*p, 0, batch, 500 + i, nullptr, x_offset);
    } else {
      auto p = pack_lossy({{"w", dtype, {rows, cols}}}, c, tile_rows, tile_cols, 100 + i);
      const std::vector<float> w = check_decode_lossy(*p, 0);
      kernel = check_gemv_f32(*p, 0, w, batch, 500 + i, x_offset);
    }
    ++kernels[kernel];
  }
  std::string taken;
  for (const auto& [name, count] : kernels) taken += " " + name + ": " + std::to_string(count) + ";";
  std::printf("random configurations, cases per kernel:%s\n", taken.c_str());
  // The draw reaches most kernels, not one or two: of the eight, the warp-per-tile and bulk-copy
  // ones need compute capability 9.0 and a build with them; elsewhere streaming, generic,
  // block-per-tile and tensor-core remain.
  int major = 0;
  CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  CHECK(kernels.size() >= (wpack::gpu::gpu_build_has_warp_tiles() && major >= 9 ? 6u : 3u));
}

// Tiles of every kind changed at random (bits flipped, a byte set, four bytes zeroed or saturated;
// half the time within the first 64 bytes: the plane directory, rANS headers and tables), each
// file's checksums recomputed as a crafted file's would be. The CPU reference decoder judges each
// tile. upload() may refuse the tensor (an Error, which verify reports), but only when the CPU finds a
// bad tile; otherwise decode() must run without a CUDA error, give each tile the CPU's verdict (ok
// or not) and the ok tiles bit for bit, and gemv() at batch 1 and 16 must run without a CUDA error
// and report every tile decode() reports, except for values and padding that only decode() checks
// (an infinite or NaN scale, an fp8 NaN code, a code plane's padding bits).
TEST_CASE("gpu fuzz: tiles changed with their checksums recomputed: no CUDA error, each tile judged as the CPU does") {
  using wpack::Scheme;
  struct Kind {
    LossyCase c;
    bool lossless;
  };
  const Kind kinds[] = {
      {{Scheme::kLossless, Codec::kRans}, true},  {{Scheme::kLossless, Codec::kExp4}, true},
      {{Scheme::kLossless, Codec::kNone}, true},  {{Scheme::kInt4, Codec::kRans, 0, 64}, false},
      {{Scheme::kInt4, Codec::kNone, 0, 128}, false}, {{Scheme::kInt8, Codec::kRans}, false},
      {{Scheme::kFp6, Codec::kRans, 0.5}, false}, {{Scheme::kInt4, Codec::kNone, 0.5}, false},
      {{Scheme::kLut4, Codec::kRans}, false},     {{Scheme::kFp8, Codec::kNone}, false},
      {{Scheme::kInt3, Codec::kNone}, false},     {{Scheme::kNf4, Codec::kRans}, false},
  };
  std::mt19937_64 rng(777);
  uint64_t refused_open = 0, refused_upload = 0, bad_tiles = 0, runs = 0;
  for (const Kind& kind : kinds) {
    const std::string name =
        kind.lossless ? "lossless/" + std::string(wpack::codec_name(kind.c.codec)) : case_name(kind.c);
    INFO("kind " << name);
    const std::vector<Spec> specs = {{"w", DType::BF16, {130, 300}}};
    auto p = kind.lossless ? pack(specs, kind.c.codec, 64, 128, std::nullopt, 3) : pack_lossy(specs, kind.c, 64, 128, 3);
    const std::string path = p->dir.file(kind.lossless ? "t.wpk" : "q.wpk");
    const auto good = wpack::test::read_file(path);
    const uint64_t tiles = p->reader->tensors()[0].tile_count;
    REQUIRE(tiles == 9);
    for (int m = 0; m < 40; ++m) {
      auto bytes = good;
      const uint64_t tile = rng() % tiles;
      const uint32_t how = rng() % 4;
      wpack::test::edit_wpk_tile(bytes, tile, [&](uint8_t* b, uint64_t size) {
        if (size == 0) return;
        // One draw per statement, in a fixed order (the order GCC gave the first version's
        // expressions, so the changes are the ones measured).
        const uint64_t draw = rng();
        const bool head = rng() % 2;
        const uint64_t at = draw % (head ? std::min<uint64_t>(size, 64) : size);
        switch (how) {
          case 0:
            for (uint32_t k = 0, n = 1 + rng() % 4; k < n; ++k) {
              const uint32_t bit = rng() % 8;
              const uint64_t offset = rng() % 16;
              b[(at + offset) % size] ^= 1u << bit;
            }
            break;
          case 1: b[at] = static_cast<uint8_t>(rng()); break;
          default:
            for (uint64_t k = at; k < std::min(size, at + 4); ++k) b[k] = how == 2 ? 0x00 : 0xFF;
        }
      });
      if (bytes == good) continue;
      INFO("change " << m << ": tile " << tile << ", kind of change " << how);
      const std::string crafted = p->dir.file("c.wpk");
      wpack::test::write_file(crafted, bytes);
      std::unique_ptr<wpack::WpkReader> reader;
      try {
        reader = wpack::WpkReader::open(crafted);
      } catch (const wpack::Error&) {
        ++refused_open;
        continue;
      }
      const wpack::WpkTensor& info = reader->tensors()[0];
      const auto geometry = wpack::tile_geometry(info.view(), info.tile_rows, info.tile_cols);
      wpack::QuantTensorParams params;
      if (!kind.lossless) params = wpack::tensor_quant_params(*reader, 0);
      std::vector<bool> cpu_ok(tiles), value_check(tiles);  // value_check: refused for what decode() only checks
      std::vector<std::vector<float>> cpu_values(tiles);
      std::vector<std::vector<uint8_t>> cpu_bytes(tiles);
      for (uint64_t k = 0; k < tiles; ++k) {
        try {
          if (kind.lossless) wpack::decode_tile_of(*reader, 0, k, cpu_bytes[k]);
          else wpack::decode_tile_f32_of(*reader, 0, k, &params, cpu_values[k]);
          cpu_ok[k] = true;
        } catch (const wpack::Error& e) {
          const std::string why = e.what();
          value_check[k] = why.find("is not finite") != std::string::npos || why.find("NaN code") != std::string::npos ||
                           why.find("codes plane padding") != std::string::npos;
          ++bad_tiles;
        }
      }
      std::optional<GpuTensor> g;
      try {
        g.emplace(GpuTensor::upload(*reader, 0));
      } catch (const wpack::Error& e) {
        INFO("upload refused: " << e.what());
        CHECK(std::count(cpu_ok.begin(), cpu_ok.end(), false) > 0);
        ++refused_upload;
        continue;
      }
      ++runs;
      const uint64_t elem = g->decoded_elem_size();
      DeviceBuffer<uint8_t> out(info.num_elements() * elem);
      DeviceBuffer<uint32_t> status(tiles);
      out.poison();
      status.poison();
      g->decode(out.ptr, status.ptr);
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      const auto decoded = status.download();
      const auto gpu = out.download();
      for (uint64_t k = 0; k < tiles; ++k) {
        INFO("tile " << k << ": CPU " << (cpu_ok[k] ? "ok" : "refuses") << ", GPU status " << decoded[k]);
        CHECK(cpu_ok[k] == (decoded[k] == static_cast<uint32_t>(TileStatus::kOk)));
        if (!cpu_ok[k] || decoded[k] != static_cast<uint32_t>(TileStatus::kOk)) continue;
        const wpack::TileRect r = geometry.rect(k);
        uint64_t same_rows = 0;
        for (uint64_t i = 0; i < r.rows; ++i) {
          const uint8_t* row = gpu.data() + ((r.row0 + i) * info.cols() + r.col0) * elem;
          const uint8_t* want = kind.lossless ? cpu_bytes[k].data() + i * r.cols * elem
                                              : reinterpret_cast<const uint8_t*>(cpu_values[k].data() + i * r.cols);
          same_rows += std::memcmp(row, want, r.cols * elem) == 0;
        }
        CHECK(same_rows == r.rows);
      }
      DeviceBuffer<uint16_t> x(info.cols() * 16);
      CUDA_OK(cudaMemset(x.ptr, 0x3F, x.count * 2));
      DeviceBuffer<float> y(info.rows() * 16);
      for (uint32_t batch : {1u, 16u}) {
        INFO("gemv batch " << batch);
        status.poison();
        g->gemv(x.ptr, y.ptr, batch, status.ptr);
        REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
        const auto st = status.download();
        for (uint64_t k = 0; k < tiles; ++k) {
          INFO("tile " << k << ": decode status " << decoded[k] << ", gemv status " << st[k]);
          if (decoded[k] != static_cast<uint32_t>(TileStatus::kOk) && !value_check[k])
            CHECK(st[k] != static_cast<uint32_t>(TileStatus::kOk));
        }
      }
    }
  }
  std::printf("gpu fuzz: %llu files refused at open, %llu tensors at upload, %llu run on the GPU; %llu bad tiles\n",
              static_cast<unsigned long long>(refused_open), static_cast<unsigned long long>(refused_upload),
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(bad_tiles));
  CHECK(runs > 200);
  CHECK(bad_tiles > 50);
}

#else  // no CUDA in this build: main() exits with 4 before any test runs

TEST_CASE("gpu decode: needs a CUDA build") { SUCCEED("skipped"); }

#endif
