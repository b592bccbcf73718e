// Decoding a .wpk back to tensors: per tile (checksum, codec, filter) and per tensor.
// This is the CPU reference decode that verify and the GPU tests compare against.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "formats/wpk.h"

namespace wpack {

// "<file>: tensor '<name>': tile <k>" (k counted within the tensor), for error messages.
std::string tile_context(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor);

// Checks tile `tile_in_tensor` of tensor `tensor` (its checksum, filter, codec and sizes) and
// decodes it into `out` (resized to the tile's raw bytes: the tile's elements in the source dtype,
// row-major). Throws Error(kCorrupt / kUnsupported) naming file, tensor and tile.
void decode_tile_of(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor, std::vector<uint8_t>& out);

// Decodes a whole tensor into `out` (its source bytes, num_elements * dtype size), tiles in
// parallel on `threads` threads (0: all cores).
void decode_tensor(const WpkReader& reader, size_t tensor, std::span<uint8_t> out, int threads = 0);

// Writes every tensor to a safetensors file (temp file + rename; `overwrite` as -f). The source
// `__metadata__` recorded at compress time is restored.
void unpack_to_safetensors(const WpkReader& reader, const std::string& out_path, bool overwrite, int threads,
                           const std::function<void(uint64_t, uint64_t, const std::string&)>& progress = {});

}  // namespace wpack
