// Writes the seed corpus: fuzz/corpus/<surface>/seed-* (fuzz/run.sh --make-corpus runs it).
//
// Seeds are small valid inputs of each surface, made with wpack's own writers and encoders, each
// prefixed with the mode bytes its harness reads (fuzz/<surface>.cpp): starting from well-formed
// files and streams, mutations reach the deep checks instead of stopping at the first one.
// Deterministic for a given libzstd. Files named crash-* (inputs that once crashed) are never
// touched. Usage: wpack_fuzz_make_corpus <corpus dir>
#include <unistd.h>  // getpid

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/hdf5.h"
#include "formats/safetensors.h"
#include "formats/tensor.h"
#include "fuzz/harness.h"  // hdf5_image and TempFile, to check the HDF5 seeds
#include "packer/detail/fp.h"
#include "packer/detail/quant_kernels.h"  // pack_codes_ref: the rANS seeds' symbols, packed
#include "packer/pack.h"
#include "packer/quant_tile.h"
#include "packer/rans.h"
#include "packer/tile_codec.h"
#include "packer/zstd_codec.h"
#include "tests/synthetic_weights.h"  // splitmix64: deterministic bytes without the C library's rand()

using namespace wpack;
namespace fs = std::filesystem;

namespace {

fs::path g_corpus;
int g_written = 0;

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(test::splitmix64(seed));
  return out;
}

// BF16 weights near N(0, 0.05^2): a sum of uniforms, enough for realistic exponent planes.
std::vector<uint8_t> weights_bf16(size_t n, uint64_t seed) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (int k = 0; k < 4; ++k) s += static_cast<double>(test::splitmix64(seed) >> 11) / 9007199254740992.0 - 0.5;
    const uint16_t h = detail::float_to_bf16_bits(static_cast<float>(s * 0.08));
    out.push_back(static_cast<uint8_t>(h));
    out.push_back(static_cast<uint8_t>(h >> 8));
  }
  return out;
}

std::vector<uint8_t> read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void seed(const std::string& surface, const std::string& name, std::vector<uint8_t> prefix,
          const std::vector<uint8_t>& body) {
  prefix.insert(prefix.end(), body.begin(), body.end());
  const fs::path dir = g_corpus / surface;
  fs::create_directories(dir);
  std::ofstream(dir / ("seed-" + name), std::ios::binary)
      .write(reinterpret_cast<const char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
  ++g_written;
}

std::vector<uint8_t> u16le(uint16_t v) { return {uint8_t(v), uint8_t(v >> 8)}; }
std::vector<uint8_t> u32le(uint32_t v) { return {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)}; }
std::vector<uint8_t> cat(std::vector<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// ---- safetensors: whole files ----
void safetensors_seeds(const fs::path& tmp) {
  auto file = [&](const std::string& name, const std::vector<TensorInfo>& tensors,
                  const std::vector<std::vector<uint8_t>>& data, const std::map<std::string, std::string>& meta) {
    const fs::path path = tmp / (name + ".safetensors");
    write_safetensors(path.string(), tensors, data, meta, true);
    seed("safetensors", name, {}, read_file(path));
  };
  file("small", {{"w", DType::BF16, {2, 3}}, {"b", DType::F32, {3}}}, {weights_bf16(6, 1), random_bytes(12, 2)},
       {{"format", "pt"}});
  file("scalar-empty", {{"s", DType::I64, {}}, {"e", DType::U8, {0, 3}}, {"f", DType::BOOL, {2}}},
       {random_bytes(8, 3), {}, {0, 1}}, {});
  file("dtypes", {{"a", DType::F16, {1}}, {"b", DType::F8_E4M3, {2}}, {"c", DType::I16, {1, 1}}, {"d", DType::U64, {1}}},
       {random_bytes(2, 4), random_bytes(2, 5), random_bytes(2, 6), random_bytes(8, 7)}, {{"k", "v"}, {"note", ""}});
  // Sharded-model indexes over the harness's fixed shards a.safetensors (x, y) and b.safetensors (z).
  auto index = [&](const std::string& name, const std::string& json) { seed("safetensors", name, {}, {json.begin(), json.end()}); };
  index("index-full", R"({"metadata": {"total_size": 15}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}})");
  index("index-one-shard", R"({"weight_map": {"y": "a.safetensors", "x": "./a.safetensors"}})");
  index("index-escape", R"({"weight_map": {"x": "sub/../../a.safetensors", "z": "b.safetensors"}})");
  const std::string empty = "{}      ";
  seed("safetensors", "empty-header", cat({{8, 0, 0, 0, 0, 0, 0, 0}, {empty.begin(), empty.end()}}), {});
}

// Checks that an HDF5 seed program builds a file that open_hdf5 reads as `format` with `tensors`
// tensors (-1: refused), so that a change of the harness's encoding cannot leave stale seeds.
void check_hdf5_seed(const std::string& name, const std::vector<uint8_t>& program, const std::string& format,
                     int tensors) {
  const fuzz::TempFile file(fuzz::hdf5_image(program));  // as the harness opens it
  std::string got_format = "refused";
  int got_tensors = -1;
  try {
    const auto source = open_hdf5(file.path());
    got_format = source->format_name();
    got_tensors = static_cast<int>(source->tensors().size());
  } catch (const Error& e) {
    got_format = std::string("refused: ") + e.what();
  }
  if ((tensors < 0 && got_tensors >= 0) || (tensors >= 0 && (got_format != format || got_tensors != tensors)))
    throw Error(ErrorCode::kInvalidArgument, "hdf5 seed " + name + ": " + got_format + ", " +
                                                 std::to_string(got_tensors) + " tensors; expected " + format + ", " +
                                                 std::to_string(tensors));
  seed("hdf5", name, {}, program);
}

// ---- hdf5: programs in the harness's encoding (fuzz/hdf5.cpp, Builder) ----
// name(): 4*k selects kNames[k] (e.g. 40 "dense", 48 "kernel:0", 60 "0", 64 "1", 72 "10"); 2 + 4*i the base name of object i (objects in creation order,
// the root first); type 0 = float32; shape 2 + 8*(rank-1), then one byte per dimension.
void hdf5_seeds() {
  std::vector<uint8_t> kernel = cat({{1, 1, 48, 0, 10, 2, 3, 1}, random_bytes(24, 10)});  // /dense/kernel:0 [2,3]
  std::vector<uint8_t> bias = cat({{1, 1, 52, 0, 2, 3, 1}, random_bytes(12, 11)});        // /dense/bias:0 [3]
  check_hdf5_seed("keras-legacy",
       cat({{0, 0, 40},  // group /dense
            kernel, bias,
            {7, 1, 2, 10, 14, 0},   // weight_names on /dense: "kernel:0", "bias:0" (fixed length)
            {0x87, 0, 0x21, 6}}),   // layer_names on the root: "dense" (variable length)
       "keras-h5", 2);
  check_hdf5_seed("keras-legacy-model-weights",
       cat({{0, 0, 0},        // group /model_weights
            {0, 1, 40},       // group /model_weights/dense
            {1, 2, 48, 0, 10, 2, 2, 1}, random_bytes(16, 12),
            {7, 2, 0x21, 14},   // weight_names on dense: "kernel:0"
            {0x87, 1, 0x01, 10, 0},  // layer_names on /model_weights: "dense" (fixed, null padded)
            {2, 0, 20, 0x1f}}),  // a numeric attribute "weight_names0" on the root (empty float64)
       "keras-h5", 1);
  check_hdf5_seed("keras3",
       cat({{0, 0, 28},   // /layers
            {0, 1, 40},   // /layers/dense
            {0, 2, 32},   // /layers/dense/vars
            {1, 3, 72, 0, 2, 4, 1}, random_bytes(16, 13),  // vars/10
            {1, 3, 60, 0, 2, 4, 1}, random_bytes(16, 14),  // vars/0
            {1, 3, 64, 9, 2, 2, 1}, random_bytes(16, 15),  // vars/1 (int64)
            {0, 0, 36},   // /optimizer (skipped)
            {1, 4, 60, 0, 0, 1}, random_bytes(4, 16)}),  // /optimizer/0 scalar
       "keras3-weights-h5", 3);
  check_hdf5_seed("generic-types",
       cat({{1, 0, 60, 3, 0, 2, 5, 1}, random_bytes(10, 17),       // /0: f16 LE [5]
            {1, 0, 64, 11, 1, 1, 2, 2, 1, 0, 1},                     // /1: bool enum [2]
            {1, 0, 68, 12, 4, 2, 3, 1, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o'},  // /2: 3 strings of 5
            {3, 0, 3, 1, 'l', 3, 2, '/', '0'},                       // soft link /l -> /0
            {4, 0, 3, 1, 'h', 1},                                    // hard link /h -> /0
            {5, 0, 3, 1, 'x'}}),                                     // external link /x
       "hdf5", 2);
  check_hdf5_seed("bfloat16", {1, 0, 72, 4, 2, 2, 0}, "hdf5", 1);  // /10: 16-bit float, 8 exponent bits (BF16)
  check_hdf5_seed("chunked-cycle",
       cat({{0, 0, 40},                                          // /dense
            {1, 1, 48, 0, 0x8a, 3, 3, 1, 1}, random_bytes(36, 18), // chunked, deflate [3,3]
            {4, 1, 3, 4, 'l', 'o', 'o', 'p', 0}}),              // /dense/loop -> / (a cycle)
       "hdf5", 1);
  seed("hdf5", "random", random_bytes(96, 19), {});
}

// ---- wpk: whole files, packed by pack_model ----
void wpk_seeds(const fs::path& tmp) {
  MemorySource src;
  src.add("w", DType::BF16, {24, 40}, weights_bf16(24 * 40, 20));
  src.add("b", DType::F32, {7}, random_bytes(28, 21));
  src.add("ids", DType::I32, {5}, random_bytes(20, 22));
  src.add("s", DType::F64, {}, random_bytes(8, 23));
  src.add("e", DType::U8, {0, 2}, {});
  src.add("c", DType::BF16, {4, 2, 3, 3}, weights_bf16(72, 24));  // viewed 4 x 18 (row dims 1, v5)
  auto pack = [&](const std::string& name, PackOptions options) {
    const fs::path path = tmp / (name + ".wpk");
    options.tile_rows = 16;
    options.tile_cols = 16;
    options.threads = 1;
    options.alignment = 16;
    options.overwrite = true;
    options.command_line = "seed";
    pack_model(src, path.string(), options);
    const std::vector<uint8_t> bytes = read_file(path);
    seed("wpk", name + "-fix", {1}, bytes);  // the harness fixes checksums: mutations reach the index
    seed("wpk", name, {0}, bytes);
  };
  PackOptions zstd_options;
  pack("zstd", zstd_options);
  PackOptions rans_options;
  rans_options.codec = Codec::kRans;
  pack("rans", rans_options);
  PackOptions none_options;
  none_options.codec = Codec::kNone;
  pack("none", none_options);
  PackOptions exp4_options;
  exp4_options.codec = Codec::kExp4;
  pack("exp4", exp4_options);
  PackOptions lossy;
  lossy.policy = parse_policy_spec("int4:g32", TensorPolicy{});
  lossy.overrides.push_back({"^b$", parse_policy_spec("int8:codec=rans", TensorPolicy{})});
  pack("int4", lossy);
  PackOptions lut;
  lut.codec = Codec::kRans;
  lut.policy = parse_policy_spec("lut3:rows8:prune=0.5", TensorPolicy{});
  pack("lut3-pruned", lut);
}

// ---- zstd: frames and round-trip planes ----
void zstd_seeds() {
  const std::vector<uint8_t> plane = weights_bf16(300, 30);
  seed("zstd", "frame", {0}, zstd_compress(plane, 3));
  seed("zstd", "frame-memoryless", {0}, zstd_compress(plane, 1, ZstdTuning::kMemoryless));
  seed("zstd", "frame-sized", cat({{2}, u32le(600)}), zstd_compress(plane, 3));
  seed("zstd", "frame-empty", {0}, zstd_compress({}, 3));
  seed("zstd", "round-trip", {1, 7}, plane);
  seed("zstd", "round-trip-memoryless", {3, 4}, random_bytes(200, 31));
}

// ---- rans: streams of each mode and symbol width, and round trips ----
void rans_seeds() {
  const uint32_t widths[4] = {8, 4, 3, 2};
  for (uint8_t w = 0; w < 4; ++w) {
    const uint32_t bits = widths[w];
    // Skewed symbols: mostly small values, so rANS (mode 1) wins over stored.
    uint64_t state = 40 + w;
    const uint32_t count = 200 + 37 * w;
    std::vector<uint8_t> symbols(count);
    for (auto& s : symbols)
      s = static_cast<uint8_t>((test::splitmix64(state) % 8 == 0 ? test::splitmix64(state) : test::splitmix64(state) % 3) &
                               ((1u << bits) - 1));
    std::vector<uint8_t> packed(rans_packed_bytes(count, bits));
    detail::pack_codes_ref(symbols.data(), count, bits, packed.data());
    const std::string b = std::to_string(bits);
    seed("rans", "stream-b" + b, cat({{w}, u32le(count)}), rans_encode(packed, count, bits));
    // With a shared table.
    std::vector<uint64_t> histogram(size_t{1} << bits, 1);
    for (uint8_t s : symbols) ++histogram[s];
    const RansTable table = build_rans_table(histogram, bits);
    const std::vector<uint8_t> table_bytes = serialize_rans_table(table);
    seed("rans", "shared-b" + b,
         cat({{static_cast<uint8_t>(w | 4)}, u32le(count), u16le(static_cast<uint16_t>(table_bytes.size())), table_bytes}),
         rans_encode(packed, count, bits, &table));
    seed("rans", "round-trip-b" + b, cat({{static_cast<uint8_t>(w | 8 | (w % 2 ? 4 : 0))}, u16le(count)}), packed);
  }
  // Table mode: a u32 count and a shift byte per symbol (4-bit symbols: 16 of them).
  std::vector<uint8_t> counts;
  for (uint32_t s = 0; s < 16; ++s) counts = cat({counts, u32le(s < 3 ? 100000u >> s : s % 4 == 0 ? 0u : 1u), {0}});
  seed("rans", "table-b4", {static_cast<uint8_t>(16 | 1)}, counts);
  seed("rans", "table-b8", {16}, random_bytes(256 * 5, 45));
  seed("rans", "constant", cat({{0}, u32le(50)}), {2, 7});
  seed("rans", "stored", cat({{0}, u32le(3)}), {0, 1, 2, 3});
  seed("rans", "empty", cat({{0}, u32le(0)}), {0});
}

// ---- filters: each filter and element size, forward and back ----
void filters_seeds() {
  for (uint8_t filter = 0; filter < 4; ++filter)
    for (uint8_t size = 0; size < 4; ++size) {
      if (filter == 3 && size == 0) continue;
      seed("filters", "f" + std::to_string(filter) + "-e" + std::to_string(1u << size),
           {static_cast<uint8_t>(filter | (size << 2))}, random_bytes(8 * 19 + 5, 50 + filter * 4 + size));
    }
}

// ---- tile: coded lossless tiles of each filter and codec ----
void tile_seeds() {
  const std::vector<uint8_t> bf16 = weights_bf16(256, 60);
  const std::vector<uint8_t> ints = random_bytes(512, 61);
  struct Case { const char* name; Filter filter; uint32_t elem; Codec codec; const std::vector<uint8_t>* raw; };
  const Case cases[] = {
      {"floatplanes-zstd", Filter::kFloatPlanes, 2, Codec::kZstd, &bf16},
      {"floatplanes-rans", Filter::kFloatPlanes, 2, Codec::kRans, &bf16},
      {"floatplanes-exp4", Filter::kFloatPlanes, 2, Codec::kExp4, &bf16},
      {"byteshuffle-zstd", Filter::kByteShuffle, 2, Codec::kZstd, &bf16},
      {"bitshuffle-rans", Filter::kBitShuffle, 4, Codec::kRans, &bf16},
      {"none-none", Filter::kNone, 1, Codec::kNone, &ints},
  };
  const uint8_t elem_code[9] = {0, 0, 1, 0, 2, 0, 0, 0, 3};
  for (const Case& c : cases) {
    const EncodedTile enc = encode_tile(*c.raw, c.elem, TileCoding{c.filter, c.codec, 3});
    const uint8_t mode = static_cast<uint8_t>(static_cast<uint8_t>(enc.filter) | (elem_code[c.elem] << 2) |
                                              (static_cast<uint8_t>(enc.codec) << 4));
    seed("tile", c.name, cat({{mode}, u32le(static_cast<uint32_t>(c.raw->size()))}), enc.stored);
    seed("tile", std::string(c.name) + "-round-trip", {static_cast<uint8_t>(mode | 0x40), 3}, *c.raw);
  }
}

// ---- quant_tile: raw params + a real tile; made params; round trips ----
void quant_tile_seeds() {
  struct Case { const char* name; const char* spec; const char* prune; Codec codec; };
  const Case cases[] = {
      {"int4-g32", "int4:g32", "", Codec::kZstd},   {"int3-sym", "int3:g64:sym", "", Codec::kRans},
      {"int8", "int8", "", Codec::kRans},           {"fp6", "fp6", "", Codec::kNone},
      {"nf4-sparse", "nf4:g32", "0.5", Codec::kRans}, {"lut4-rows", "lut4:rows4", "", Codec::kZstd},
      {"lut3-sparse", "lut3", "2:4", Codec::kRans},
  };
  // One seed of mode 0: tile `tile` of the weights w (rows x cols) quantized by `spec`, coded.
  auto tile_seed = [](const char* name, const char* spec, const char* prune, Codec codec, const std::vector<float>& w,
                      uint64_t rows, uint64_t cols, uint32_t tile_rows, uint32_t requested_tile_cols, uint64_t tile) {
    const TensorPolicy policy = parse_policy_spec(std::string(spec) + (*prune ? std::string(":prune=") + prune : ""), TensorPolicy{});
    std::vector<float> pruned_w = w;
    std::vector<uint8_t> keep = prune_mask(policy.prune, w.data(), rows, cols);
    if (keep.empty()) keep.assign(w.size(), 1);
    apply_prune_mask(pruned_w.data(), keep.data(), keep.size());
    const QuantizedMatrix q = quantize(pruned_w.data(), rows, cols, policy.spec);
    const QuantTensorParams params = quant_params_from(q, policy.prune);
    std::vector<float> decoded(w.size());
    dequantize(q, decoded.data());
    for (size_t i = 0; i < keep.size(); ++i)
      if (!keep[i]) decoded[i] = 0.0f;
    const uint32_t tile_cols = quant_tile_cols(requested_tile_cols, params.group);
    const TileGeometry g = tile_geometry(wpack::MatrixView{rows, cols}, tile_rows, tile_cols);
    const QuantEncodedTile enc = encode_quant_tile(q, params, decoded.data(), g.rect(tile), codec, 3);
    const std::vector<uint8_t> blob = serialize_quant_params(params);
    // The harness's layout byte (fuzz/quant_tile.cpp): 0 dense, 1 sparse, 2 dense zero-relative.
    const uint8_t layout_byte = enc.layout == kFilterQuantSparse ? 1 : enc.layout == kFilterQuantDenseZeroRel ? 2 : 0;
    // mode 0: scheme, rows, cols, tile rows - 1 (mod rows), tile cols - 1 (mod cols), params, tile.
    seed("quant_tile", name,
         cat({{0, static_cast<uint8_t>(params.scheme)}, u16le(rows), u16le(cols), u16le(tile_rows - 1),
              u16le(static_cast<uint16_t>(tile_cols - 1)), u16le(static_cast<uint16_t>(blob.size())), blob,
              u16le(static_cast<uint16_t>(tile)), {layout_byte, static_cast<uint8_t>(enc.tile.codec)},
              u32le(static_cast<uint32_t>(enc.raw_size))}),
         enc.tile.stored);
    return enc.layout;
  };
  const uint64_t rows = 8, cols = 64;
  std::vector<float> w(rows * cols);
  uint64_t state = 70;
  for (auto& v : w) v = static_cast<float>(static_cast<int64_t>(test::splitmix64(state) % 2001) - 1000) / 10000.0f;
  for (const Case& c : cases) tile_seed(c.name, c.spec, c.prune, c.codec, w, rows, cols, 4, 32, 1);
  // Layout 6 (quant_dense_zrel): asymmetric int4 (group 128) with rans, on bell-shaped weights (a
  // sum of four uniforms) in one 16 x 128 tile, large enough that coding the zero-relative symbols pays.
  std::vector<float> bell(16 * 128);
  for (auto& v : bell) {
    int64_t sum = 0;
    for (int k = 0; k < 4; ++k) sum += static_cast<int64_t>(test::splitmix64(state) % 2001) - 1000;
    v = static_cast<float>(sum) / 40000.0f;
  }
  if (tile_seed("int4-zrel", "int4", "", Codec::kRans, bell, 16, 128, 16, 128, 0) != kFilterQuantDenseZeroRel)
    throw std::runtime_error("the int4-zrel seed is not a layout-6 tile");
  seed("quant_tile", "made-params", {1}, random_bytes(200, 71));
  seed("quant_tile", "round-trip", {2}, random_bytes(600, 72));
  seed("quant_tile", "round-trip-lut", {3, 9, 0x60, 5, 80, 0, 1, 3, 40, 0}, random_bytes(900, 73));
}

}  // namespace

// ---- pack: scheme, option bits, codec, filter, dtype, rows, cols (u16), tile, then the bytes ----

void pack_seeds() {
  // {scheme, option bits, codec, filter, dtype, rows, cols, tile}; fuzz/pack.cpp reads them mod their ranges
  struct Case { const char* name; uint8_t scheme, bits, codec, filter, dtype, rows; uint16_t cols; uint8_t tile; };
  const Case cases[] = {
      {"lossless-bf16", 0, 0, 0, 0, 2, 33, 150, 6},        {"lossless-f32-exp4", 0, 0, 3, 0, 0, 20, 130, 9},
      {"lossless-u8-bitshuffle", 0, 0, 0, 3, 7, 9, 61, 5}, {"int4-g32-sym-2t", 2, 0x84, 0, 0, 2, 40, 256, 10},
      {"int8-zstd", 1, 3, 1, 0, 0, 17, 99, 2},             {"fp6-prune", 6, 0x13, 2, 0, 1, 32, 128, 10},
      {"nf4-24", 9, 0x21, 4, 0, 2, 16, 64, 1},             {"lut4-rows8", 10, 0x43, 0, 0, 0, 24, 61, 5},
      {"lut3-minmax", 11, 0x0B, 1, 0, 3, 5, 33, 0},        {"fp8-e4m3-source", 5, 3, 0, 0, 4, 12, 40, 4},
  };
  for (const Case& c : cases) {
    const std::vector<uint8_t> head = cat({{c.scheme, c.bits, c.codec, c.filter, c.dtype, c.rows}, u16le(c.cols), {c.tile}});
    // F32/F64 weights as BF16 widened (finite, realistic exponents); other dtypes the same bytes
    seed("pack", c.name, head, weights_bf16(c.rows * size_t{c.cols} / 2 + 64, c.scheme + 101));
  }
  seed("pack", "random", cat({{2, 0x55, 0, 0, 0, 7}, u16le(90), {3}}), random_bytes(300, 77));
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  g_corpus = argv[1];
  const fs::path tmp = fs::temp_directory_path() / ("wpack-make-corpus-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  try {
    safetensors_seeds(tmp);
    hdf5_seeds();
    wpk_seeds(tmp);
    zstd_seeds();
    rans_seeds();
    filters_seeds();
    tile_seeds();
    quant_tile_seeds();
    pack_seeds();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_corpus: %s\n", e.what());
    fs::remove_all(tmp);
    return 1;
  }
  fs::remove_all(tmp);
  std::printf("wrote %d seeds under %s\n", g_written, g_corpus.c_str());
  return 0;
}
