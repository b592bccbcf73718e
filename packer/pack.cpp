#include "packer/pack.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <unordered_map>
#include <string_view>

#include "formats/error.h"
#include "packer/estimate.h"
#include "packer/exp4.h"
#include "packer/quant_tile.h"
#include "packer/detail/parallel.h"
#include "packer/tile_codec.h"
#include "packer/tiling.h"
#include "wpack_version.h"

namespace wpack {
namespace {

// Tiles encoded in parallel before they are written in order: bounds memory to one batch.
constexpr uint64_t kTileBatch = 256;
// ... and, for the lossless path, to about this many raw bytes (vector tiles are up to 64 KiB).
constexpr uint64_t kTileBatchBytes = uint64_t{64} << 20;
// Tiles, evenly spaced, that the filter choice codes with each candidate filter.
constexpr uint64_t kFilterSampleTiles = 2;

std::vector<Filter> candidate_filters(DType dtype) {
  const uint32_t size = dtype_size(dtype);
  // Floats: grouping the exponent bits in their own plane is what compresses (byte shuffle puts
  // the sign in the exponent's byte, bit shuffle and no filter lose on weights); no trial needed.
  if (dtype_is_float(dtype)) return {Filter::kFloatPlanes};
  if (size == 1) return {Filter::kBitShuffle, Filter::kNone};
  return {Filter::kByteShuffle, Filter::kBitShuffle, Filter::kNone};
}

// Fraction of elements that are exactly zero (floats: +0 and -0).
// Counts elements whose bits under `mask` are zero; one loop per element width so that the
// compiler vectorises it (this runs over every byte of every tensor).
template <typename Word>
uint64_t count_zero_words(const uint8_t* bytes, uint64_t elements, Word mask) {
  uint64_t zeros = 0;
  for (uint64_t i = 0; i < elements; ++i) {
    Word v;
    std::memcpy(&v, bytes + i * sizeof(Word), sizeof(Word));
    zeros += (v & mask) == 0;
  }
  return zeros;
}

// Elements that are exactly zero (floats: +0 and -0). Summed over a tensor's tiles, divided by its
// elements: the sparsity metric of a lossless tensor.
uint64_t zero_count(DType dtype, const uint8_t* bytes, uint64_t elements) {
  const bool is_float = dtype_holds_floats(dtype);
  // Little-endian: the sign bit is the top bit of the element; +0 and -0 both count as zero.
  switch (dtype_size(dtype)) {
    case 1: return count_zero_words<uint8_t>(bytes, elements, is_float ? 0x7F : 0xFF);
    case 2: return count_zero_words<uint16_t>(bytes, elements, is_float ? 0x7FFF : 0xFFFF);
    case 4: return count_zero_words<uint32_t>(bytes, elements, is_float ? 0x7FFFFFFFu : ~0u);
    default: return count_zero_words<uint64_t>(bytes, elements, is_float ? ~0ull >> 1 : ~0ull);
  }
}

std::string metadata_json(const TensorSource& source, const PackOptions& options) {
  // A command line or an HDF5 attribute may hold bytes that are not UTF-8 (paths can): written as
  // U+FFFD, so that the metadata stays a UTF-8 JSON object (docs/FORMAT.md). The object's members
  // are dumped one by one, in this order: an ordered_json object inserts each key by linear search
  // (quadratic in a source's metadata keys); nlohmann::json keeps the source's keys sorted, as the
  // std::map they come from.
  auto dump = [](const nlohmann::json& value) { return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  nlohmann::json src = nlohmann::json::object();
  for (const auto& [k, v] : source.metadata()) src[k] = v;
  return "{\"wpack_version\":" + dump(WPACK_VERSION_STRING) + ",\"command_line\":" + dump(options.command_line) +
         ",\"source_format\":" + dump(source.format_name()) + ",\"source_metadata\":" + dump(src) + "}";
}

bool lossy_dtype(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F64;
}

[[noreturn]] void bad_spec(std::string_view spec, const std::string& why) {
  throw Error(ErrorCode::kInvalidArgument, "policy '" + std::string(spec) + "': " + why);
}

uint32_t parse_positive(std::string_view text, std::string_view spec) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string_view::npos)
    bad_spec(spec, "'" + std::string(text) + "' is not a positive integer");
  const uint32_t v = static_cast<uint32_t>(std::stoul(std::string(text)));
  if (v == 0) bad_spec(spec, "'" + std::string(text) + "' is not a positive integer");
  return v;
}

// The effective group of a policy (0 for schemes without groups).
uint32_t effective_group(const QuantSpec& spec) {
  if (!scheme_is_grouped(spec.scheme)) return 0;
  if (spec.group != 0) return spec.group;
  return spec.scheme == Scheme::kNf4 ? 64 : 128;
}


// The dtypes whose floatplanes plane 0 is exactly the exponent byte: what codec exp4 codes.
bool exp4_dtype(DType dtype) { return dtype == DType::BF16 || dtype == DType::F32; }

// The codec a tensor of `dtype` under `policy` is coded with when `codec` is asked for: exp4 codes
// lossless BF16 and F32 tensors only; quantized tensors take codec none under it (their raw planes
// are what the GPU's fastest GEMV reads), other lossless tensors (F16, F64, integers) rans.
Codec tensor_codec(Codec codec, const TensorPolicy& policy, DType dtype) {
  if (codec != Codec::kExp4) return codec;
  if (policy.lossy()) return Codec::kNone;
  return exp4_dtype(dtype) ? Codec::kExp4 : Codec::kRans;
}

// The codecs a tensor's tiles are coded with: one, or rans and zstd for "auto" (per tile the
// smaller; rans first, so that it wins ties: the GPU decodes it).
std::vector<Codec> codec_candidates(const TensorPolicy& policy, const PackOptions& options, DType dtype) {
  if (policy.codec) return {tensor_codec(*policy.codec, policy, dtype)};
  if (policy.codec_auto || options.codec_auto) return {Codec::kRans, Codec::kZstd};
  return {tensor_codec(options.codec, policy, dtype)};
}

// exp4 needs the floatplanes filter: a forced other filter together with codec exp4 (file-wide or
// in an override) is refused before anything is read. Throws Error(kInvalidArgument).
void check_exp4_filter(const PackOptions& options) {
  if (!options.filter || *options.filter == Filter::kFloatPlanes) return;
  const auto refuse = [&](const std::string& where) {
    throw Error(ErrorCode::kInvalidArgument, "codec exp4" + where + " takes filter floatplanes only, not " +
                                                 std::string(filter_name(*options.filter)) +
                                                 " (leave the filter to the packer, or choose floatplanes)");
  };
  if ((options.codec == Codec::kExp4 && !options.codec_auto) || options.policy.codec == Codec::kExp4) refuse("");
  for (const auto& o : options.overrides)
    if (o.policy.codec == Codec::kExp4) refuse(" (override '" + o.pattern + "')");
}

// The tile bytes of a lossless tensor coded with exp4, exactly as encode_tile makes them: per tile
// the exp4 size, or the raw size when exp4 does not make the tile smaller.
uint64_t exp4_tensor_tile_bytes(const TensorInfo& info, const uint8_t* bytes, const TileGeometry& g) {
  const uint32_t esize = dtype_size(info.dtype);
  std::vector<uint8_t> raw, filtered;
  uint64_t total = 0;
  for (uint64_t tile = 0; tile < g.tile_count(); ++tile) {
    const TileRect rect = g.rect(tile);
    raw.resize(rect.elements() * esize);
    filtered.resize(raw.size());
    gather_tile(bytes, g.cols, esize, rect, raw.data());
    apply_filter(Filter::kFloatPlanes, esize, raw, filtered);
    total += std::min<uint64_t>(raw.size(), exp4_encoded_bytes(std::span(filtered).first(rect.elements()), esize));
  }
  return total;
}

// Tiles per batch for tiles of up to `tile_bytes` raw bytes: kTileBatch, fewer for large tiles so
// that a batch holds about kTileBatchBytes, but never fewer than the threads that encode it.
uint64_t lossless_tile_batch(uint64_t tile_bytes, int threads) {
  const uint64_t by_bytes = kTileBatchBytes / std::max<uint64_t>(tile_bytes, 1);
  return std::min(kTileBatch, std::max<uint64_t>(by_bytes, static_cast<uint64_t>(std::max(threads, 1))));
}

// One tile as the writer takes it.
struct StoredTile {
  std::vector<uint8_t> stored;
  uint64_t raw_size = 0;
  uint8_t filter = 0;
  uint8_t codec = 0;
};

// A stored tile kept in a byte arena until its tensor is written.
struct StoredTileRef {
  uint64_t offset = 0, size = 0, raw_size = 0;
  uint8_t filter = 0, codec = 0;
};

// Encodes tiles [0, tiles) with encode(tile index) -> StoredTile, in parallel batches of
// `batch_tiles` (memory: one batch), and writes them in index order, so that the file is the same
// bytes for any thread count. After each batch, after_batch(tiles done so far) if given. Returns
// the stored bytes written. Errors name `context`.
template <typename Encode>
uint64_t encode_and_write_tiles(WpkWriter& writer, uint64_t tiles, int threads, const std::string& context,
                                Encode&& encode, uint64_t batch_tiles = kTileBatch,
                                const std::function<void(uint64_t)>& after_batch = {}) {
  uint64_t stored_bytes = 0;
  std::vector<StoredTile> batch;
  for (uint64_t first = 0; first < tiles; first += batch_tiles) {
    const uint64_t count = std::min(batch_tiles, tiles - first);
    batch.assign(count, StoredTile{});
    try {
      detail::parallel_for_first_error<int>(count, threads, [&](uint64_t i, int&) { batch[i] = encode(first + i); });
    } catch (const Error& e) {
      throw Error(e.code(), context + ": " + e.what());
    }
    for (const StoredTile& tile : batch) {
      writer.add_tile(tile.stored, tile.raw_size, tile.filter, tile.codec);
      stored_bytes += tile.stored.size();
    }
    if (after_batch) after_batch(first + count);
  }
  return stored_bytes;
}

// Buffers of the lossy path, kept from tensor to tensor: allocating (and page-faulting) fresh
// tensor-sized buffers for every tensor cost more than quantizing it.
struct LossyWorkspace {
  // Whole-tensor path (LUT with a table per N rows where the tile rows are not a multiple of N: a
  // band would split a table).
  std::vector<float> source;   // the tensor as float32 (while quantizing: with the pruned weights zeroed)
  std::vector<uint8_t> mask;   // prune mask (1 = kept); empty when nothing is pruned
  QuantizedMatrix q;
  // Band path (everything else): one row of tiles at a time.
  std::vector<float> band_source;  // the band as float32 (while quantizing: with the pruned weights zeroed)
  std::vector<uint8_t> band_mask;  // its prune mask
  QuantizedMatrix band_q;
  std::vector<uint8_t> tile_bytes;  // the tensor's stored tiles, back to back, until it is written
  std::vector<StoredTileRef> tiles;
  std::vector<QuantTileEncoder> encoders;  // one per thread
};

// The tile of `q` at `rect` (rect relative to q's rows), the smaller over `codecs` (the first wins ties).
StoredTile encode_lossy_tile(QuantTileEncoder& encoder, const QuantizedMatrix& q, const QuantTensorParams& params,
                             const uint8_t* keep, const TileRect& rect, const std::vector<Codec>& codecs, int level) {
  encoder.prepare(q, params, keep, rect);
  StoredTile best;
  for (size_t c = 0; c < codecs.size(); ++c) {
    QuantEncodedTile encoded = encoder.code(codecs[c], level);
    if (c == 0 || encoded.tile.stored.size() < best.stored.size())
      best = {std::move(encoded.tile.stored), encoded.raw_size, encoded.layout, static_cast<uint8_t>(codecs[c])};
  }
  return best;
}

// A lossy tensor's record metrics: its error stats against the source.
ErrorMetrics error_metrics(const ErrorStats& s) { return {s.rel_error, s.max_abs_error, s.snr_db, s.sparsity}; }

QuantTileEncoder& thread_encoder(LossyWorkspace& ws) {
  return ws.encoders[static_cast<size_t>(omp_get_thread_num())];
}

}  // namespace

TensorPolicy parse_policy_spec(std::string_view spec, const TensorPolicy& base) {
  std::vector<std::string> tokens;
  for (size_t start = 0;;) {
    const size_t colon = spec.find(':', start);
    tokens.emplace_back(spec.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  TensorPolicy policy;
  policy.spec.clip = base.spec.clip;
  policy.prune = base.prune;
  policy.codec = base.codec;
  auto scheme = parse_scheme(tokens[0]);
  if (!scheme) bad_spec(spec, "unknown scheme '" + tokens[0] + "'");
  policy.spec.scheme = *scheme;
  // The base's group, symmetry and LUT rows where this scheme takes them: a file-wide --group 64
  // reaches an int4 override, not an int8 one.
  if (scheme_is_grouped(*scheme)) policy.spec.group = base.spec.group;
  if (scheme_takes_symmetry(*scheme)) policy.spec.symmetric = base.spec.symmetric;
  if (scheme_is_lut(*scheme)) policy.spec.lut_rows = base.spec.lut_rows;
  for (size_t i = 1; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t.size() > 1 && t[0] == 'g' && std::isdigit(static_cast<unsigned char>(t[1]))) {
      policy.spec.group = parse_positive(std::string_view(t).substr(1), spec);
      if (!scheme_is_grouped(*scheme)) bad_spec(spec, std::string(scheme_name(*scheme)) + " has no group");
    } else if (t == "sym" || t == "asym") {
      policy.spec.symmetric = (t == "sym");
    } else if (t.rfind("rows", 0) == 0) {
      policy.spec.lut_rows = parse_positive(std::string_view(t).substr(4), spec);
      if (!scheme_is_lut(*scheme)) bad_spec(spec, std::string(scheme_name(*scheme)) + " has no tables");
    } else if (t == "clip=mse" || t == "clip=minmax") {
      policy.spec.clip = t == "clip=mse" ? Clip::kMse : Clip::kMinMax;
    } else if (t == "codec=auto") {
      policy.codec.reset();
      policy.codec_auto = true;
    } else if (t.rfind("codec=", 0) == 0) {
      auto codec = parse_codec(std::string_view(t).substr(6));
      if (!codec) bad_spec(spec, "unknown codec in '" + t + "'");
      policy.codec = codec;
      policy.codec_auto = false;
    } else if (t.rfind("prune=", 0) == 0) {
      std::string value = t.substr(6);
      // "prune=2:4" arrives as the tokens "prune=2" and "4".
      if (i + 1 < tokens.size() && !tokens[i + 1].empty() &&
          tokens[i + 1].find_first_not_of("0123456789") == std::string::npos)
        value += ":" + tokens[++i];
      policy.prune = parse_prune(value);
    } else if (t == "noprune") {
      policy.prune = PruneSpec{};
    } else {
      bad_spec(spec, "unknown option '" + t + "'");
    }
  }
  if (policy.spec.scheme == Scheme::kLossless) {
    policy.spec = QuantSpec{Scheme::kLossless};
    policy.prune = PruneSpec{};
  }
  if (policy.spec.symmetric && !scheme_takes_symmetry(policy.spec.scheme) && policy.spec.scheme != Scheme::kInt8)
    bad_spec(spec, "sym applies to int schemes only");
  const uint32_t group = policy.spec.group;
  if (group != 0 && group != 32 && group != 64 && group != 128 && group != 256)
    bad_spec(spec, "group " + std::to_string(group) + " is not one of 32, 64, 128, 256");
  return policy;
}

std::string policy_to_string(const TensorPolicy& policy) {
  if (!policy.lossy()) return "lossless";
  std::string s(scheme_name(policy.spec.scheme));
  if (const uint32_t g = effective_group(policy.spec)) s += ":g" + std::to_string(g);
  const Scheme sc = policy.spec.scheme;
  if (sc == Scheme::kInt4 || sc == Scheme::kInt3 || sc == Scheme::kInt2) s += policy.spec.symmetric ? ":sym" : ":asym";
  if (scheme_is_lut(sc) && policy.spec.lut_rows) s += ":rows" + std::to_string(policy.spec.lut_rows);
  if (!scheme_is_lut(sc)) s += policy.spec.clip == Clip::kMse ? ":clip=mse" : ":clip=minmax";
  if (policy.prune.kind == PruneSpec::Kind::kFraction) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", policy.prune.fraction);
    s += std::string(":prune=") + buf;
  } else if (policy.prune.kind == PruneSpec::Kind::kNM) {
    s += ":prune=" + std::to_string(policy.prune.n) + ":" + std::to_string(policy.prune.m);
  }
  if (policy.codec) s += ":codec=" + std::string(codec_name(*policy.codec));
  if (policy.codec_auto) s += ":codec=auto";
  return s;
}

namespace {

// libstdc++'s default regex executor recurses once per character that a loop (".*") takes, which
// overflows the stack on a tensor name of ~30000 bytes (names may have 65535); its polynomial one
// (a breadth-first walk of the automaton) does not recurse on the input, and refuses only
// back-references, which a name pattern has no use for.
constexpr std::regex::flag_type kNamePatternFlags = std::regex::ECMAScript
#if defined(__GLIBCXX__)
                                                    | std::regex_constants::__polynomial
#endif
    ;

// Whether `pattern` occurs in `name`, as regex_search says. regex_search walks the name once from
// every start that fails, quadratic in its length (a 16000-byte name took 8 s against
// ".*(norm|embed).*"); the pattern between any prefix and suffix, matched whole, is one walk. The
// pattern is compiled alone first: wrapped, some invalid ones (")(") would pass. Each pattern is
// compiled once per thread (every tensor of a model is matched against the same few: compiling
// them per tensor took 2.5 s of 3.2 for 20k small tensors and three patterns). A pattern that is
// not a valid regex is Error(kInvalidArgument).
bool name_matches(const std::string& name, const std::string& pattern) {
  thread_local std::unordered_map<std::string, std::regex> compiled;
  try {
    auto it = compiled.find(pattern);
    if (it == compiled.end()) {
      (void)std::regex(pattern, kNamePatternFlags);
      it = compiled.emplace(pattern, std::regex("[\\s\\S]*(?:" + pattern + ")[\\s\\S]*", kNamePatternFlags)).first;
    }
    return std::regex_match(name, it->second);
  } catch (const std::regex_error& e) {
    throw Error(ErrorCode::kInvalidArgument, "pattern '" + pattern + "' is not a valid regex: " + e.what());
  }
}

// An F64 tensor is quantized as its float32 values, and its metrics are taken against them: a
// weight beyond float32's range would read as inf ("not finite"), and a tensor whose weights are all
// below float32's smallest normal value would lose them in the conversion unseen (rel_error 0 for
// zeros). Both are refused, naming the value. Non-finite values are left to the quantizer's check.
void check_f64_fits_f32(const TensorInfo& info, const TensorBytes& bytes, uint64_t view_cols,
                        const std::string& source_path) {
  const uint64_t cols = std::max<uint64_t>(view_cols, 1);
  const std::string context = source_path + ": tensor '" + info.name + "': ";
  const std::string keep = " (--keep packs it lossless)";
  double largest = 0;
  for (uint64_t i = 0; i < info.num_elements(); ++i) {
    double d;
    std::memcpy(&d, bytes.data() + 8 * i, 8);
    if (!std::isfinite(d)) continue;
    if (std::fabs(d) > double{std::numeric_limits<float>::max()}) {
      char value[32];
      std::snprintf(value, sizeof value, "%.6g", d);
      throw Error(ErrorCode::kUnsupported, context + "weight at row " + std::to_string(i / cols) + ", col " +
                                               std::to_string(i % cols) + " is " + value +
                                               ", beyond float32's range, in which lossy schemes quantize" + keep);
    }
    largest = std::max(largest, std::fabs(d));
  }
  bytes.release(0, 8 * info.num_elements());  // read again band by band: not resident meanwhile
  if (largest != 0 && largest < double{std::numeric_limits<float>::min()}) {
    char value[32];
    std::snprintf(value, sizeof value, "%.6g", largest);
    throw Error(ErrorCode::kUnsupported, context + "every weight is below float32's smallest normal value (the largest is " +
                                             value + "): lossy schemes quantize in float32, which would lose them" + keep);
  }
}

void check_tile_shape(const TensorInfo& info, uint32_t tile_rows, uint32_t tile_cols, const std::string& source_path) {
  if (uint64_t{tile_rows} * tile_cols > kWpkMaxTileElements)
    throw Error(ErrorCode::kInvalidArgument, source_path + ": tensor '" + info.name + "': tile shape " +
                                                 std::to_string(tile_rows) + "x" + std::to_string(tile_cols) +
                                                 " (--tile, columns rounded up to the group) has more than 2^24 elements");
}

}  // namespace

void check_tensor_packable(const TensorInfo& info, const std::string& source_path) {
  check_wpk_tensor_fits(info.name, info.shape, info.dtype, source_path);
  // (an HDF5 dataset may have this name; safetensors reserves it, and unpack writes safetensors)
  if (info.name == "__metadata__")
    throw Error(ErrorCode::kUnsupported, source_path + ": tensor '__metadata__': safetensors reserves this name, so "
                                                       "wpack unpack could not write it back");
}

TensorPolicy resolve_policy(const TensorInfo& info, const PackOptions& options) {
  const TensorPolicy lossless;
  if (!lossy_dtype(info.dtype) || info.num_elements() == 0) return lossless;
  auto matches = [&](const std::string& pattern) { return name_matches(info.name, pattern); };
  for (const auto& pattern : options.keep)
    if (matches(pattern)) return lossless;
  for (auto it = options.overrides.rbegin(); it != options.overrides.rend(); ++it)
    if (matches(it->pattern)) return it->policy;
  return info.shape.size() >= 2 ? options.policy : lossless;
}

std::vector<std::string> unmatched_patterns(const TensorSource& source, const PackOptions& options) {
  auto matches_none = [&](const std::string& pattern) {
    return std::none_of(source.tensors().begin(), source.tensors().end(),
                        [&](const TensorInfo& t) { return name_matches(t.name, pattern); });
  };
  std::vector<std::string> unmatched;
  for (const auto& pattern : options.keep)
    if (matches_none(pattern)) unmatched.push_back("--keep '" + pattern + "'");
  for (const auto& o : options.overrides)
    if (matches_none(o.pattern)) unmatched.push_back("--override '" + o.pattern + "'");
  return unmatched;
}

namespace {

// What the dry run and the pack decide for a tensor before reading it, in one place: its policy,
// its 2-D view (a quantized tensor folds short trailing dimensions into the columns,
// choose_row_dims; a lossless one keeps the default view, which its coding does not depend on) and
// its tile shape (a quantized tensor's columns rounded up to its group). Refuses what the pack
// refuses.
struct TensorLayout {
  TensorPolicy policy;
  uint32_t row_dims = 0;
  MatrixView view;
  uint32_t tile_rows = 0, tile_cols = 0;
};

TensorLayout tensor_layout(const TensorInfo& info, const PackOptions& options, const std::string& source_path) {
  check_tensor_packable(info, source_path);
  TensorLayout l;
  l.policy = resolve_policy(info, options);
  l.row_dims = l.policy.lossy() ? choose_row_dims(info.shape) : 0;
  l.view = matrix_view(info.shape, l.row_dims);
  const uint32_t requested_cols =
      l.policy.lossy() ? quant_tile_cols(options.tile_cols, effective_group(l.policy.spec)) : options.tile_cols;
  choose_tile_shape(info.shape.size(), l.view, static_cast<uint32_t>(dtype_size(info.dtype)), options.tile_rows,
                    requested_cols, &l.tile_rows, &l.tile_cols);
  check_tile_shape(info, l.tile_rows, l.tile_cols, source_path);
  return l;
}

}  // namespace

std::vector<TensorPlan> plan_model(const TensorSource& source, const PackOptions& options) {
  check_exp4_filter(options);
  std::vector<TensorPlan> plans;
  for (size_t t = 0; t < source.tensors().size(); ++t) {
    const TensorInfo& info = source.tensors()[t];
    const TensorLayout layout = tensor_layout(info, options, source.path());  // what pack_model refuses too
    TensorPlan plan;
    plan.name = info.name;
    plan.dtype = info.dtype;
    plan.shape = info.shape;
    plan.row_dims = layout.row_dims;
    plan.policy = layout.policy;
    plan.original_bytes = info.num_bytes();
    plan.tile_rows = layout.tile_rows;
    plan.tile_cols = layout.tile_cols;
    if (plan.policy.lossy() && info.dtype == DType::F64)
      check_f64_fits_f32(info, source.read(t), layout.view.cols, source.path());
    const TileGeometry g = tile_geometry(layout.view, plan.tile_rows, plan.tile_cols);
    // Index entry: the record's fixed fields and name, plus one record per tile.
    double bytes = 2 + info.name.size() + 4 + 8 * info.shape.size() + 8 + 16 + 32 + 4 + 40.0 * g.tile_count();
    const uint64_t n = info.num_elements();
    if (!plan.policy.lossy()) {
      TensorBytes data = source.read(t);
      if (codec_candidates(plan.policy, options, info.dtype).front() == Codec::kExp4)  // fixed layout: exact
        bytes += double(exp4_tensor_tile_bytes(info, data.data(), g));
      else
        bytes += lossless_entropy_bytes(info.dtype, data.span());
    } else {
      const Scheme scheme = plan.policy.spec.scheme;
      const double bits = scheme_bits(scheme);
      const uint64_t rows = g.rows, cols = g.cols;
      bytes += kQuantParamsHeaderBytes + 8.0 * g.tile_count();  // params header, plane directories
      if (const uint32_t group = effective_group(plan.policy.spec)) {
        const bool zeros = (scheme == Scheme::kInt4 || scheme == Scheme::kInt3 || scheme == Scheme::kInt2) &&
                           !plan.policy.spec.symmetric;
        bytes += double(rows) * double((cols + group - 1) / group) * (zeros ? 3 : 2);
      } else if (scheme_is_lut(scheme)) {
        const uint32_t per = plan.policy.spec.lut_rows;
        bytes += 2.0 * (1u << uint32_t(bits)) * double(per ? (rows + per - 1) / per : 1);
      } else {
        bytes += 2.0 * double(rows);
      }
      double kept = 1.0;
      if (plan.policy.prune.kind == PruneSpec::Kind::kFraction) kept = 1.0 - plan.policy.prune.fraction;
      if (plan.policy.prune.kind == PruneSpec::Kind::kNM) kept = double(plan.policy.prune.n) / plan.policy.prune.m;
      const double dense = double(n) * bits / 8, sparse = double(n) * (kept * bits + 1) / 8;
      bytes += std::min(dense, sparse);
    }
    plan.estimated_bytes = static_cast<uint64_t>(std::ceil(bytes));
    plans.push_back(std::move(plan));
  }
  return plans;
}

Filter choose_filter(const TensorInfo& info, const uint8_t* bytes, uint32_t tile_rows, uint32_t tile_cols,
                     Codec codec, int level) {
  const auto candidates = candidate_filters(info.dtype);
  if (codec == Codec::kNone) return Filter::kNone;
  if (candidates.size() == 1) return candidates.front();
  const uint32_t esize = dtype_size(info.dtype);
  TileGeometry g = tile_geometry(matrix_view(info.shape, 0), tile_rows, tile_cols);  // lossless: the default view
  const uint64_t tiles = g.tile_count();
  if (tiles == 0) return candidates.front();
  const uint64_t samples = std::min<uint64_t>(tiles, kFilterSampleTiles);
  std::vector<uint64_t> cost(candidates.size(), 0);
  std::vector<uint8_t> raw;
  for (uint64_t s = 0; s < samples; ++s) {
    const uint64_t tile = (s * tiles) / samples;
    TileRect rect = g.rect(tile);
    raw.resize(rect.elements() * esize);
    gather_tile(bytes, g.cols, esize, rect, raw.data());
    for (size_t c = 0; c < candidates.size(); ++c)
      cost[c] += encode_tile(raw, esize, TileCoding{candidates[c], codec, level}).stored.size();
  }
  return candidates[std::min_element(cost.begin(), cost.end()) - cost.begin()];
}

namespace {

// A tensor's bytes in its 2-D view as bands of `band_rows` rows (the last one shorter), converted
// to float32 a band at a time into a buffer the caller reuses.
class TensorBands {
 public:
  TensorBands(const TensorInfo& info, const TensorBytes& bytes, const MatrixView& view, uint64_t band_rows)
      : dtype_(info.dtype), bytes_(bytes), band_rows_(band_rows), esize_(dtype_size(info.dtype)), rows_(view.rows),
        cols_(view.cols) {}
  uint64_t rows() const { return rows_; }  // the 2-D view's
  uint64_t cols() const { return cols_; }
  uint64_t count() const { return cols_ == 0 ? 0 : ceil_div(rows_, band_rows_); }  // none when empty, as the grid
  uint64_t band_rows() const { return band_rows_; }
  uint64_t row0(uint64_t band) const { return band * band_rows_; }
  uint64_t rows_of(uint64_t band) const { return std::min<uint64_t>(band_rows_, rows_ - row0(band)); }
  // Converts band `band` into `out` (resized to it); returns its element count. The band's source
  // bytes then leave the resident set (TensorBytes::release; they stay readable), so that the passes
  // over a mapped tensor hold about a band of it.
  uint64_t convert(uint64_t band, std::vector<float>& out) const {
    const uint64_t n = rows_of(band) * cols_;
    out.resize(n);
    convert_to_f32(dtype_, bytes_.data() + row0(band) * cols_ * esize_, n, out.data());
    bytes_.release(row0(band) * cols_ * esize_, n * esize_);
    return n;
  }

 private:
  DType dtype_;
  const TensorBytes& bytes_;
  uint64_t band_rows_;
  uint32_t esize_;
  uint64_t rows_ = 0, cols_ = 0;
};

// The prune masks of a tensor's bands, the same as one mask of the whole tensor: construction
// reports the first NaN or infinity (a weight pruning would drop is still refused, as the quantizer
// refuses it without pruning) and takes magnitude pruning's threshold in
// two passes over the bands (MagnitudePruner); then a pass over the bands takes a copy and prunes
// every band, in order (ties at the threshold go in index order). Throws as prune_mask().
class BandPruner {
 public:
  BandPruner(const PruneSpec& prune, const TensorBands& bands, std::vector<float>& scratch)
      : spec_(prune), cols_(bands.cols()) {
    const uint64_t cols = bands.cols();
    // (each band converted before scratch.data() is taken: converting may reallocate it)
    if (prune.kind == PruneSpec::Kind::kFraction) {
      magnitude_.emplace(bands.rows() * cols, prune.fraction);
      for (uint64_t band = 0; band < bands.count(); ++band) {
        const uint64_t n = bands.convert(band, scratch);
        check_finite_weights(scratch.data(), n, cols, bands.row0(band), "prune");
        magnitude_->add_high(scratch.data(), n, bands.row0(band) * cols);
      }
      for (uint64_t band = 0; band < bands.count(); ++band) {
        const uint64_t n = bands.convert(band, scratch);
        magnitude_->add_low(scratch.data(), n);
      }
    } else if (prune.kind == PruneSpec::Kind::kNM) {
      for (uint64_t band = 0; band < bands.count(); ++band) {
        const uint64_t n = bands.convert(band, scratch);
        check_finite_weights(scratch.data(), n, cols, bands.row0(band), "prune");
      }
    }
  }
  bool active() const { return spec_.kind != PruneSpec::Kind::kNone; }
  // The next band's mask (1 = kept) into `mask`, and the band (`rows` rows from row0, in w) pruned
  // in place.
  void prune(float* w, uint64_t rows, uint64_t row0, std::vector<uint8_t>& mask) {
    const uint64_t n = rows * cols_;
    if (magnitude_) {
      mask.resize(n);
      magnitude_->mask(w, n, mask.data());
    } else {
      mask = prune_mask_nm(w, rows, cols_, spec_.n, spec_.m, row0);
    }
    apply_prune_mask(w, mask.data(), n);
  }

 private:
  PruneSpec spec_;
  uint64_t cols_;
  std::optional<MagnitudePruner> magnitude_;
};

// Tile rows per band on the band path: one, or for a table per N rows as many as give each of
// `threads` a table to fit (quantize() fits a band's tables in parallel; one table alone would leave
// the other threads waiting on its k-means).
uint64_t band_tile_rows(const TensorPolicy& policy, const TileGeometry& g, int threads) {
  const uint32_t lut_rows = scheme_is_lut(policy.spec.scheme) ? policy.spec.lut_rows : 0;
  if (lut_rows == 0) return 1;
  return std::max<uint64_t>(1, ceil_div(uint64_t(std::max(threads, 1)) * lut_rows, g.tile_rows));
}

// Quantizes, measures, encodes and writes a tensor one band of tile rows at a time (`bands`: whole
// tile rows, band_tile_rows() of them; `pruner` prepared over those bands): every buffer is a band,
// which stays in cache, and nothing tensor-sized is allocated. Pruned or not: every scheme whose
// rows quantize independently, LUT schemes given their one table (`lut_table`, fit_lut_by_bands),
// and LUT schemes with a table per N rows whose bands hold whole tables. Grouped schemes and
// one-table LUT write each tile as it comes (the metrics go in at the end); per-row schemes and
// per-N-rows LUT keep their tiles in ws.tile_bytes until every row's scale or table, which the
// record's params hold, is known. Fills the record's params and metrics; returns the stored bytes.
uint64_t pack_bands(WpkWriter& writer, const TensorInfo& info, const TensorBands& bands, BandPruner pruner,
                    const TensorPolicy& policy, WpkTensor& record, const std::vector<Codec>& codecs, int level,
                    int threads, const std::string& context, LossyWorkspace& ws, Fp16Limits& limits,
                    const uint16_t* lut_table = nullptr) {
  const uint64_t cols = bands.cols();
  const TileGeometry g = tile_geometry(record.view(), record.tile_rows, record.tile_cols);
  ws.tile_bytes.clear();
  ws.tiles.clear();
  ErrorAccumulator errors;
  QuantTensorParams params;
  std::vector<uint16_t> row_scales, tables;  // per-row scales, LUT tables of N rows: every band's
  std::vector<StoredTile> band_tiles;
  bool streaming = false;  // tiles go to the writer as they come
  uint64_t stored_bytes = 0;
  const uint64_t tile_rows_per_band = bands.band_rows() / g.tile_rows;
  auto convert_band = [&](uint64_t band) { return bands.convert(band, ws.band_source); };
  // The band's codes, from the one table when given.
  auto quantize_band = [&](uint64_t band_rows, uint64_t row0, ErrorAccumulator* errors_or_null) {
    if (lut_table != nullptr)
      quantize_with_table(ws.band_source.data(), band_rows, cols, policy.spec, lut_table, &ws.band_q, row0,
                          errors_or_null);
    else
      quantize(ws.band_source.data(), band_rows, cols, policy.spec, &ws.band_q, row0, errors_or_null);
  };
  for (uint64_t band = 0; band < bands.count(); ++band) {
    const uint64_t row0 = bands.row0(band), band_rows = bands.rows_of(band);
    convert_band(band);
    const uint8_t* keep = nullptr;
    try {
      if (!pruner.active()) {
        quantize_band(band_rows, row0, &errors);
      } else {
        // Quantize the band pruned in place, then convert it again: the metrics are against the
        // source, pruned weights decoded as +0 (as the whole-tensor path does).
        pruner.prune(ws.band_source.data(), band_rows, row0, ws.band_mask);
        keep = ws.band_mask.data();
        quantize_band(band_rows, row0, nullptr);
        convert_band(band);
        errors.add_dequantized(ws.band_source.data(), ws.band_q, keep);
      }
    } catch (const Error& e) {
      throw Error(e.code(), context + ": " + e.what());
    }
    if (band == 0) {
      params = quant_params_from(ws.band_q, policy.prune);
      streaming = params.row_scales.empty() && params.lut_rows == 0;
      if (streaming) {
        record.params = serialize_quant_params(params);
        writer.begin_tensor(record);
      } else {  // room for every tile stored raw, so that the buffer grows once
        ws.tile_bytes.reserve(ceil_div(info.num_elements() * params.bits, 8) + 16 * g.tile_count());
      }
    }
    // The band's scales and tables at fp16's limits (a tensor's one LUT table counted once).
    if (band == 0 || lut_table == nullptr) limits.add(fp16_limits(ws.band_q));
    // Per-row schemes keep their scales in the params, LUT schemes with a table per N rows their
    // tables (a band holds whole tables: quantize() fits each over its own rows): collect every band's.
    // The band's tiles are coded with the band's own (their rects are relative to the band): a pruned
    // tile keeps the elements whose values, so decoded, are not +0.
    if (!streaming) {
      row_scales.insert(row_scales.end(), ws.band_q.scales.begin(), ws.band_q.scales.end());
      tables.insert(tables.end(), ws.band_q.tables.begin(), ws.band_q.tables.end());
      if (!params.row_scales.empty()) params.row_scales = ws.band_q.scales;
      if (params.lut_rows != 0) params.tables = ws.band_q.tables;
    }
    // the band's tiles: its tile rows', row by row
    const uint64_t first_tile = band * tile_rows_per_band * g.grid_cols;
    band_tiles.assign(std::min(tile_rows_per_band * g.grid_cols, g.tile_count() - first_tile), StoredTile{});
    try {
      detail::parallel_for_first_error<int>(band_tiles.size(), threads, [&](uint64_t i, int&) {
        TileRect rect = g.rect(first_tile + i);
        rect.row0 -= row0;  // relative to the band
        band_tiles[i] = encode_lossy_tile(thread_encoder(ws), ws.band_q, params, keep, rect, codecs, level);
      });
    } catch (const Error& e) {
      throw Error(e.code(), context + ": " + e.what());
    }
    for (const StoredTile& tile : band_tiles) {
      stored_bytes += tile.stored.size();
      if (streaming) {
        writer.add_tile(tile.stored, tile.raw_size, tile.filter, tile.codec);
      } else {
        ws.tiles.push_back({ws.tile_bytes.size(), tile.stored.size(), tile.raw_size, tile.filter, tile.codec});
        ws.tile_bytes.insert(ws.tile_bytes.end(), tile.stored.begin(), tile.stored.end());
      }
    }
  }
  record.metrics = error_metrics(errors.stats());
  if (streaming) {
    writer.set_metrics(record.metrics);
  } else {
    params.row_scales = std::move(row_scales);
    if (params.lut_rows != 0) params.tables = std::move(tables);
    record.params = serialize_quant_params(params);
    writer.begin_tensor(record);
    for (const StoredTileRef& tile : ws.tiles)
      writer.add_tile(std::span<const uint8_t>(ws.tile_bytes.data() + tile.offset, tile.size), tile.raw_size,
                      tile.filter, tile.codec);
  }
  writer.end_tensor();
  return stored_bytes;
}

// The one table of a LUT tensor (lut_rows 0) fitted a band at a time (LutPiecewiseFit: two passes
// over `bands`, each pruned by a copy of `pruner`), so that the tensor packs on the band path: the
// table quantize() fits for the whole (pruned) tensor. Errors name `context`.
std::vector<uint16_t> fit_lut_by_bands(const TensorBands& bands, const BandPruner& pruner, const TensorPolicy& policy,
                                       const std::string& context, LossyWorkspace& ws) {
  try {
    const uint64_t cols = bands.cols();
    LutPiecewiseFit fit(policy.spec.scheme, bands.rows() * cols);
    for (int pass = 0; pass < 2; ++pass) {
      BandPruner pass_pruner = pruner;
      for (uint64_t band = 0; band < bands.count(); ++band) {
        const uint64_t band_n = bands.convert(band, ws.band_source);
        if (pass_pruner.active()) pass_pruner.prune(ws.band_source.data(), bands.rows_of(band), bands.row0(band), ws.band_mask);
        if (pass == 0)
          fit.add_first(ws.band_source.data(), bands.rows_of(band), cols, bands.row0(band));
        else
          fit.add_second(ws.band_source.data(), band_n);
      }
    }
    return fit.table();
  } catch (const Error& e) {
    throw Error(e.code(), context + ": " + e.what());
  }
}

// Quantizes (after pruning) one float tensor, records its metrics and params, writes its tiles.
PackedTensor pack_lossy_tensor(WpkWriter& writer, const TensorInfo& info, const TensorBytes& bytes,
                               const TensorPolicy& policy, WpkTensor& record, const PackOptions& options, int threads,
                               const std::string& source_path, LossyWorkspace& ws) {
  // Errors name the tensor in its source file: they are about its values (a NaN or inf weight).
  const std::string context = source_path + ": tensor '" + info.name + "'";
  const TileGeometry g = tile_geometry(record.view(), record.tile_rows, record.tile_cols);
  const uint64_t rows = g.rows, cols = g.cols;
  const uint64_t n = info.num_elements();
  const std::vector<Codec> codecs = codec_candidates(policy, options, info.dtype);
  if (info.dtype == DType::F64) check_f64_fits_f32(info, bytes, cols, source_path);
  ws.encoders.resize(std::max<size_t>(ws.encoders.size(), static_cast<size_t>(std::max(threads, 1))));
  record.scheme = static_cast<uint8_t>(policy.spec.scheme);
  PackedTensor packed;
  packed.name = info.name;
  packed.policy = policy;
  packed.original_bytes = info.num_bytes();

  // The band path: every scheme whose rows quantize independently; LUT with a table per N rows on
  // whole bands (tile rows a multiple of N: each band's tables are the whole tensor's for its rows,
  // as each row's scale is); LUT with one table fitted over the bands first (the same bytes as the
  // whole-tensor path below, without its float32 copy of the tensor; float32 values, which the fit
  // keeps, 4 bytes a weight, instead of counting them, as quantize() keeps them).
  const uint32_t lut_rows = policy.spec.lut_rows;
  const bool lut = scheme_is_lut(policy.spec.scheme);
  const bool one_table = lut && lut_rows == 0;
  if (!lut || one_table || g.grid_rows == 1 || g.tile_rows % lut_rows == 0) {
    const TensorBands bands(info, bytes, record.view(), band_tile_rows(policy, g, threads) * g.tile_rows);
    std::optional<BandPruner> pruner;
    try {
      pruner.emplace(policy.prune, bands, ws.band_source);
    } catch (const Error& e) {
      throw Error(e.code(), context + ": " + e.what());
    }
    std::vector<uint16_t> table;
    if (one_table) table = fit_lut_by_bands(bands, *pruner, policy, context, ws);
    packed.stored_bytes = pack_bands(writer, info, bands, *pruner, policy, record, codecs, options.level, threads,
                                     context, ws, packed.fp16_limits, one_table ? table.data() : nullptr);
    packed.metrics = record.metrics;
    return packed;
  }

  ws.source.resize(n);
  convert_to_f32(info.dtype, bytes.data(), n, ws.source.data());
  ws.mask.clear();
  try {
    if (policy.prune.kind != PruneSpec::Kind::kNone) check_finite_weights(ws.source.data(), n, cols, 0, "prune");
    ws.mask = prune_mask(policy.prune, ws.source.data(), rows, cols);
    // pruned in place, no copy (4 bytes a weight): the source is converted again for the metrics
    if (!ws.mask.empty()) apply_prune_mask(ws.source.data(), ws.mask.data(), n);
  } catch (const Error& e) {
    throw Error(e.code(), context + ": " + e.what());
  }
  const uint8_t* keep = ws.mask.empty() ? nullptr : ws.mask.data();
  try {
    quantize(ws.source.data(), rows, cols, policy.spec, &ws.q);
  } catch (const Error& e) {
    throw Error(e.code(), context + ": " + e.what());
  }
  if (keep != nullptr) convert_to_f32(info.dtype, bytes.data(), n, ws.source.data());
  // Against the source: what the tiles decode to, the dequantized weights with pruned ones +0.
  record.metrics = error_metrics(dequantized_error_stats(ws.source.data(), ws.q, keep));
  const QuantTensorParams params = quant_params_from(ws.q, policy.prune);
  record.params = serialize_quant_params(params);
  packed.metrics = record.metrics;
  packed.fp16_limits = fp16_limits(ws.q);
  writer.begin_tensor(record);
  packed.stored_bytes = encode_and_write_tiles(writer, g.tile_count(), threads, context, [&](uint64_t tile) {
    return encode_lossy_tile(thread_encoder(ws), ws.q, params, keep, g.rect(tile), codecs, options.level);
  });
  writer.end_tensor();
  return packed;
}

}  // namespace

PackReport pack_model(const TensorSource& source, const std::string& out_path, const PackOptions& options) {
  if (options.tile_rows == 0 || options.tile_cols == 0)
    throw Error(ErrorCode::kInvalidArgument, "tile shape must have no zero side");
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  // quantize() and the prune masks parallelise with OpenMP's default team size: make it ours for
  // the duration of the call (their results do not depend on it).
  struct RestoreThreads {
    int saved = omp_get_max_threads();
    ~RestoreThreads() { omp_set_num_threads(saved); }
  } restore_threads;
  omp_set_num_threads(threads);
  // Validate the options and every pattern before writing anything: each tensor's policy and tile
  // shape, worked out once here (a lossy tensor's tile cols are rounded up to its group: the shape
  // the file gets is checked now rather than when the tensor's turn comes).
  check_exp4_filter(options);
  std::vector<TensorLayout> layouts;
  layouts.reserve(source.tensors().size());
  for (const TensorInfo& info : source.tensors()) layouts.push_back(tensor_layout(info, options, source.path()));
  WpkWriter writer(out_path, options.overwrite, options.alignment);
  PackReport report;
  LossyWorkspace lossy_workspace;
  uint64_t total = 0, done = 0;
  for (const auto& info : source.tensors()) total += info.num_bytes();

  for (size_t t = 0; t < source.tensors().size(); ++t) {
    const TensorInfo& info = source.tensors()[t];
    TensorBytes bytes = source.read(t);
    if (bytes.size() != info.num_bytes())
      throw Error(ErrorCode::kFormat, source.path() + ": tensor '" + info.name + "': read " +
                                          std::to_string(bytes.size()) + " bytes, expected " +
                                          std::to_string(info.num_bytes()));
    const uint32_t esize = dtype_size(info.dtype);
    const TensorPolicy& policy = layouts[t].policy;
    WpkTensor record;
    record.name = info.name;
    record.dtype = info.dtype;
    record.shape = info.shape;
    record.scheme = 0;
    record.row_dims = static_cast<uint8_t>(layouts[t].row_dims);
    record.tile_rows = layouts[t].tile_rows;
    record.tile_cols = layouts[t].tile_cols;
    if (policy.lossy()) {
      report.tensors.push_back(pack_lossy_tensor(writer, info, bytes, policy, record, options, threads,
                                                source.path(), lossy_workspace));
      report.original_bytes += info.num_bytes();
      done += info.num_bytes();
      if (options.progress) options.progress(done, total, info.name);
      continue;
    }
    const TileGeometry g = tile_geometry(record.view(), record.tile_rows, record.tile_cols);
    const std::vector<Codec> codecs = codec_candidates(policy, options, info.dtype);
    TileCoding coding;
    coding.codec = codecs.front();
    coding.level = options.level;
    coding.filter = coding.codec == Codec::kExp4 ? Filter::kFloatPlanes  // exp4 codes the floatplanes plane 0
                    : options.filter             ? *options.filter
                                                 : choose_filter(info, bytes.data(), record.tile_rows, record.tile_cols,
                                                                 coding.codec, options.level);
    if (coding.filter == Filter::kFloatPlanes && !dtype_is_float(info.dtype)) coding.filter = Filter::kByteShuffle;
    record.metrics.snr_db = std::numeric_limits<double>::infinity();
    writer.begin_tensor(record);

    PackedTensor packed;
    packed.name = info.name;
    packed.filter = coding.filter;
    packed.original_bytes = info.num_bytes();
    // One pass over the source, tile by tile: zeros are counted per tile, and the source bytes of
    // finished tiles leave the resident set after each batch (a mapped tensor of any size then
    // costs about one batch of memory; see TensorBytes::release).
    std::atomic<uint64_t> zeros{0};
    uint64_t released = 0;
    const auto release_done = [&](uint64_t tiles_done) {
      const uint64_t done_bytes = g.rows == 1 ? std::min(g.cols, tiles_done * g.tile_cols) * esize  // one row of tiles
                                              : std::min(g.rows, tiles_done / g.grid_cols * g.tile_rows) * g.cols * esize;
      if (done_bytes > released) bytes.release(released, done_bytes - released);
      released = std::max(released, done_bytes);
    };
    packed.stored_bytes = encode_and_write_tiles(
        writer, g.tile_count(), threads, out_path + ": tensor '" + info.name + "'", [&](uint64_t tile) {
          const TileRect rect = g.rect(tile);
          std::vector<uint8_t> raw(rect.elements() * esize);
          gather_tile(bytes.data(), g.cols, esize, rect, raw.data());
          zeros += zero_count(info.dtype, raw.data(), rect.elements());
          EncodedTile best = encode_tile(raw, esize, coding);
          for (size_t c = 1; c < codecs.size(); ++c) {  // codec auto: the smaller, the first on ties
            TileCoding other = coding;
            other.codec = codecs[c];
            EncodedTile encoded = encode_tile(raw, esize, other);
            if (encoded.stored.size() < best.stored.size()) best = std::move(encoded);
          }
          return StoredTile{std::move(best.stored), raw.size(), static_cast<uint8_t>(best.filter),
                            static_cast<uint8_t>(best.codec)};
        },
        lossless_tile_batch(std::min<uint64_t>(uint64_t{record.tile_rows} * record.tile_cols, info.num_elements()) * esize,
                            threads),
        release_done);
    const uint64_t elements = info.num_elements();
    record.metrics.sparsity = elements ? double(zeros.load()) / double(elements) : 0.0;
    writer.set_metrics(record.metrics);
    packed.metrics = record.metrics;
    writer.end_tensor();
    report.tensors.push_back(packed);
    report.original_bytes += info.num_bytes();
    done += info.num_bytes();
    if (options.progress) options.progress(done, total, info.name);
  }
  writer.commit(metadata_json(source, options));
  report.file_bytes = writer.bytes_written();
  return report;
}

}  // namespace wpack
