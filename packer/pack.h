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
#include <vector>

#include "formats/tensor.h"
#include "formats/wpk.h"
#include "packer/codec.h"
#include "packer/filters.h"

namespace wpack {

struct PackOptions {
  uint32_t tile_rows = 128;
  uint32_t tile_cols = 128;
  Codec codec = Codec::kZstd;
  int level = 3;                  // zstd level
  std::optional<Filter> filter;   // nullopt: chosen per tensor by trying a sample of tiles
  int threads = 0;                // 0: all cores
  uint32_t alignment = kWpkDefaultAlignment;
  bool overwrite = false;
  std::string command_line;       // recorded in the metadata
  // Called after each tensor with (bytes of source done, total source bytes, tensor name).
  std::function<void(uint64_t, uint64_t, const std::string&)> progress;
};

struct PackedTensor {
  std::string name;
  Filter filter = Filter::kNone;
  uint64_t original_bytes = 0;
  uint64_t stored_bytes = 0;  // tile bytes in the file
};

struct PackReport {
  std::vector<PackedTensor> tensors;
  uint64_t original_bytes = 0;
  uint64_t file_bytes = 0;
};

// Packs every tensor of `source` into a new .wpk at `out_path`. Throws Error (nothing is left at
// `out_path` on failure).
PackReport pack_model(const TensorSource& source, const std::string& out_path, const PackOptions& options);

// The filter the packer would choose for these tensor bytes: the candidate (in the order
// floatplanes, byteshuffle for floats; byteshuffle, bitshuffle, none for other dtypes; bitshuffle,
// none for 1-byte dtypes) whose coded size over up to 2 evenly spaced sample tiles is smallest.
Filter choose_filter(const TensorInfo& info, const uint8_t* bytes, uint32_t tile_rows, uint32_t tile_cols,
                     Codec codec, int level);

}  // namespace wpack
