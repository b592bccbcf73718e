// Fuzz surface: the packing side (packer/pack.h pack_model) on tensors and options drawn from the
// input, and the file it writes read back.
//
// Input: u8 scheme (mod 12: lossless, int8, int4, int3, int2, fp8, fp6, fp5, fp4, nf4, lut4, lut3),
// u8 option bits (0-1 group g32/g64/g128/default, 2 sym, 3 clip=minmax, 4-5 prune none/0.5/2:4/
// 0.9, 6 rows8 for the LUT schemes, 7 a second pack on 2 threads), u8 codec (mod 5: rans, zstd,
// none, exp4, auto), u8 filter (mod 5: auto, none, byteshuffle, bitshuffle, floatplanes), u8 dtype
// (mod 8: F32, F16, BF16, F64, F8_E4M3, F8_E5M2, I32, U8), u8 rows (mod 41), u16 cols (mod 700),
// u8 tile (mod 16: rows {1, 7, 32, 128} x cols {16, 61, 128, 256}), then the tensor's bytes (the
// rest of the input, repeated; zeros when there is none). A second tensor, a vector of 7 elements
// of the same dtype, is cut from the same bytes.
//
// pack_model may refuse the input (Error: weights that are not finite, an option the scheme does
// not take); when it writes a file, the file must open and pass verify_cpu against the source
// (every lossless tensor its source bytes, every lossy one the rel_error recorded), and the second
// pack, on another thread count, must be the same bytes.
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/io.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "fuzz/harness.h"
#include "packer/pack.h"
#include "verify/verify.h"

namespace wpack::fuzz {
namespace {

constexpr uint64_t kMaxElements = 1u << 14;

std::vector<uint8_t> file_bytes(const std::string& path) {
  const auto map = MappedFile::open(path);
  return std::vector<uint8_t>(map->data(), map->data() + map->size());
}

}  // namespace

void pack(Bytes data) {
  Input in(data);
  static const char* const kSchemes[] = {"lossless", "int8", "int4", "int3", "int2", "fp8",
                                         "fp6",      "fp5",  "fp4",  "nf4",  "lut4", "lut3"};
  static const char* const kCodecs[] = {"rans", "zstd", "none", "exp4", "auto"};
  static const DType kDtypes[] = {DType::F32,     DType::F16,     DType::BF16, DType::F64,
                                  DType::F8_E4M3, DType::F8_E5M2, DType::I32,  DType::U8};
  const uint8_t scheme = in.u8() % 12, bits = in.u8(), codec = in.u8() % 5, filter = in.u8() % 5;
  const DType dtype = kDtypes[in.u8() % 8];
  const uint64_t rows = in.u8() % 41, cols = in.u16() % 700;
  const uint8_t tile = in.u8() % 16;
  const Bytes rest = in.rest();

  std::string spec = kSchemes[scheme];
  if (scheme != 0) {
    static const char* const kGroups[] = {":g32", ":g64", ":g128", ""};
    static const char* const kPrunes[] = {"", ":prune=0.5", ":prune=2:4", ":prune=0.9"};
    spec += kGroups[bits & 3];
    if (bits & 4) spec += ":sym";
    if (bits & 8) spec += ":clip=minmax";
    spec += kPrunes[(bits >> 4) & 3];
    if (bits & 64) spec += ":rows8";
  }
  spec += std::string(":codec=") + kCodecs[codec];

  const uint32_t esize = dtype_size(dtype);
  const uint64_t elements = rows * cols;
  if (elements > kMaxElements) return;
  auto bytes_of = [&](uint64_t n, uint64_t offset) {
    std::vector<uint8_t> out(n * esize, 0);
    if (!rest.empty())
      for (size_t i = 0; i < out.size(); ++i) out[i] = rest[(offset + i) % rest.size()];
    return out;
  };
  MemorySource src("fuzz.safetensors");
  src.add("w", dtype, {rows, cols}, bytes_of(elements, 0));
  src.add("v", dtype, {7}, bytes_of(7, 3));

  PackOptions options;
  static const uint32_t kTileRows[] = {1, 7, 32, 128}, kTileCols[] = {16, 61, 128, 256};
  options.tile_rows = kTileRows[tile & 3];
  options.tile_cols = kTileCols[tile >> 2];
  options.threads = 1;
  options.overwrite = true;
  options.command_line = "fuzz";
  static const std::optional<Filter> kFilters[] = {std::nullopt, Filter::kNone, Filter::kByteShuffle,
                                                   Filter::kBitShuffle, Filter::kFloatPlanes};
  options.filter = kFilters[filter];
  try {
    options.overrides.push_back({".*", parse_policy_spec(spec, TensorPolicy{})});
  } catch (const Error&) {
    return;  // an option the scheme does not take
  }

  const TempFile out(Bytes{});
  try {
    pack_model(src, out.path(), options);
  } catch (const Error&) {
    return;  // refused (weights that are not finite, a filter the codec does not take, ...)
  }
  std::unique_ptr<WpkReader> reader;
  try {
    reader = WpkReader::open(out.path());
  } catch (const Error& e) {
    fail("pack", std::string("the packed file does not open: ") + e.what());
  }
  if (reader->tensors().size() != 2) fail("pack", "the packed file does not hold the 2 tensors");
  // verify --against: lossless tensors bit-exact, lossy ones at the recorded rel_error
  const VerifyReport report = verify_cpu(*reader, &src, 1);
  if (!report.ok()) {
    std::string why = report.errors.empty() ? "" : report.errors.front();
    for (const TensorCheck& check : report.tensors)
      if (!check.error.empty()) why = check.error;
    fail("pack", "verify --against fails (" + spec + "): " + why);
  }
  if (bits & 128) {  // the same bytes on 2 threads
    const std::vector<uint8_t> first = file_bytes(out.path());
    options.threads = 2;
    pack_model(src, out.path(), options);
    if (file_bytes(out.path()) != first) fail("pack", "2 threads wrote other bytes (" + spec + ")");
  }
}

}  // namespace wpack::fuzz
