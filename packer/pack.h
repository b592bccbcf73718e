// The packing pipeline: tensors from a TensorSource -> tiles -> filter -> codec -> .wpk.
//
// Tensors are processed one at a time (peak memory: one tensor's tiles in flight, in batches),
// tiles of a tensor in parallel with OpenMP. Each tile's bytes depend only on its input and the
// options, and tiles are written in index order, so the output is identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tensor.h"
#include "formats/wpk.h"
#include "packer/codec.h"
#include "packer/filters.h"
#include "packer/prune.h"
#include "packer/quantize.h"

namespace wpack {

// How one tensor is stored. scheme kLossless: the lossless path (filter + codec of the source bytes).
struct TensorPolicy {
  QuantSpec spec{Scheme::kLossless};  // scheme, group, symmetric, clip, lut_rows
  PruneSpec prune;                     // applied before quantizing (lossy schemes only)
  std::optional<Codec> codec;          // tile codec; nullopt: PackOptions::codec
  bool codec_auto = false;             // "codec=auto": per tile the smaller of rans and zstd
  bool lossy() const { return spec.scheme != Scheme::kLossless; }
};

// Parses an --override SPEC on top of `base` (whose clip, prune and codec it inherits unless it sets
// them, and its group, symmetry and LUT rows where the scheme takes them): "lossless" or a scheme name ("int8", "int4", ..., "lut3") followed by ':'-separated options
// "g32|g64|g128|g256" (group), "sym", "asym", "rows<N>" (LUT rows per table), "clip=mse|minmax",
// "codec=zstd|rans|none|exp4|auto", "prune=<fraction>|<N>:<M>", "noprune". Throws Error(kInvalidArgument).
TensorPolicy parse_policy_spec(std::string_view spec, const TensorPolicy& base);
// "int4:g128:asym" style text of a policy ("lossless" for the lossless path).
std::string policy_to_string(const TensorPolicy& policy);

struct PolicyOverride {
  std::string pattern;  // ECMAScript regex, searched in the tensor name (anchor with ^...$)
  TensorPolicy policy;
};

struct PackOptions {
  uint32_t tile_rows = 128;
  uint32_t tile_cols = 128;
  Codec codec = Codec::kRans;     // rans: the GPU decodes it; zstd: CPU-only archives; exp4: lossless
                                  // BF16/F32 tensors exp4 (filter floatplanes), quantized tensors none,
                                  // other lossless tensors rans (also for a TensorPolicy's codec)
  bool codec_auto = false;        // per tile the smaller of rans and zstd (ties: rans, GPU-decodable)
  int level = 3;                  // zstd level
  std::optional<Filter> filter;   // nullopt: chosen per tensor by trying a sample of tiles; exp4-coded
                                  // tensors always take floatplanes (another filter with exp4 is refused)
  int threads = 0;                // 0: all cores
  uint32_t alignment = kWpkDefaultAlignment;
  bool overwrite = false;
  std::string command_line;       // recorded in the metadata
  // Lossy packing. `policy` applies to float tensors (F32/F16/BF16/F64) of rank >= 2; then the last
  // `overrides` entry whose pattern matches a tensor's name replaces it (for float tensors of any
  // rank); a name matched by any `keep` pattern stays lossless. Non-float tensors are always lossless.
  TensorPolicy policy;
  std::vector<PolicyOverride> overrides;
  std::vector<std::string> keep;
  // Called after each tensor with (bytes of source done, total source bytes, tensor name).
  std::function<void(uint64_t, uint64_t, const std::string&)> progress;
};

struct PackedTensor {
  std::string name;
  Filter filter = Filter::kNone;  // lossless tensors
  TensorPolicy policy;            // as applied
  ErrorMetrics metrics;
  uint64_t original_bytes = 0;
  uint64_t stored_bytes = 0;  // tile bytes in the file
  Fp16Limits fp16_limits;     // lossy: its scales / LUT values at fp16's limits (the weights lost range)
};

struct PackReport {
  std::vector<PackedTensor> tensors;
  uint64_t original_bytes = 0;
  uint64_t file_bytes = 0;
};

// Packs every tensor of `source` into a new .wpk at `out_path`. Throws Error (nothing is left at
// `out_path` on failure); Error(kInvalidArgument), before anything is written, for codec exp4 (in
// the options or an override) with a forced filter other than floatplanes.
PackReport pack_model(const TensorSource& source, const std::string& out_path, const PackOptions& options);

// What pack_model checks of each tensor before it packs any: a name, rank and size a .wpk can hold
// (check_wpk_tensor_fits), and not the name "__metadata__", which safetensors reserves (an HDF5
// dataset may have it). Throws Error(kUnsupported) naming `source_path` and the tensor.
void check_tensor_packable(const TensorInfo& info, const std::string& source_path);

// The policy pack_model applies to tensor `info` (see PackOptions). Throws Error(kInvalidArgument)
// for a pattern that is not a valid regex.
TensorPolicy resolve_policy(const TensorInfo& info, const PackOptions& options);
// The --keep and --override patterns (as "--keep 'P'", "--override 'P'") that match no tensor name
// of `source`: most likely mistyped, since they change nothing. Throws Error(kInvalidArgument) for
// a pattern that is not a valid regex.
std::vector<std::string> unmatched_patterns(const TensorSource& source, const PackOptions& options);

// One line of a --dry-run plan.
struct TensorPlan {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  uint32_t row_dims = 0;  // the 2-D view's split, as the record will hold it (choose_row_dims)
  TensorPolicy policy;
  uint32_t tile_rows = 0, tile_cols = 0;
  uint64_t original_bytes = 0;
  uint64_t estimated_bytes = 0;  // tiles + index entry; lossy: before entropy coding (an upper
                                 // estimate); lossless: order-0 entropy of the byte planes, or
                                 // with codec exp4 (BF16/F32) the exact exp4 tile bytes
};
// What pack_model would do, without writing anything (reads lossless tensors for the estimate).
std::vector<TensorPlan> plan_model(const TensorSource& source, const PackOptions& options);

// The filter the packer would choose for these tensor bytes: floatplanes for floats; otherwise the
// candidate (byteshuffle, bitshuffle, none; bitshuffle, none for 1-byte dtypes) whose coded size
// over up to 2 evenly spaced sample tiles is smallest.
Filter choose_filter(const TensorInfo& info, const uint8_t* bytes, uint32_t tile_rows, uint32_t tile_cols,
                     Codec codec, int level);

}  // namespace wpack
