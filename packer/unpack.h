// Decoding a .wpk back to tensors: per tile (checksum, codec, filter) and per tensor.
// This is the CPU reference decode that verify and the GPU tests compare against.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/wpk.h"
#include "packer/quant_tile.h"

namespace wpack {

// "<file>: tensor '<name>': tile <k>" (k counted within the tensor), for error messages.
std::string tile_context(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor);

// Checks tile `tile_in_tensor` of tensor `tensor` (its checksum, filter, codec and sizes) and
// decodes it into `out` (resized to the tile's elements in the source dtype, row-major; for a lossy
// tensor the dequantized values rounded to the source dtype, nearest even). Throws
// Error(kCorrupt / kUnsupported) naming file, tensor and tile.
void decode_tile_of(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor, std::vector<uint8_t>& out);

// Decodes a whole tensor into `out` (its source bytes, num_elements * dtype size), tiles in
// parallel on `threads` threads (0: all cores).
void decode_tensor(const WpkReader& reader, size_t tensor, std::span<uint8_t> out, int threads = 0);

// Decodes tensor `tensor` a block of whole tile rows at a time (~64 MiB; in a one-row tensor, a run
// of tiles), each block's tiles in parallel, and hands each block to sink(first element, bytes) in
// row-major order: as `out_dtype` bytes, which is the tensor's own dtype (decode_tensor's bytes) or
// F32 / F16 / BF16 (decode_tensor_f32's values, rounded to nearest even). Memory: one block, not the
// tensor. Throws as decode_tensor (the lowest failing tile); Error(kInvalidArgument) for another
// out_dtype.
void stream_tensor_blocks(const WpkReader& reader, size_t tensor, DType out_dtype, int threads,
                          const std::function<void(uint64_t, std::span<const uint8_t>)>& sink);

// The parsed and validated params of lossy tensor `tensor`. Throws Error(kCorrupt) naming file and
// tensor.
QuantTensorParams tensor_quant_params(const WpkReader& reader, size_t tensor);

// Checks and decodes one tile to float (rect.elements() values, row-major): a lossy tile through
// decode_quant_tile_ref with `params` (from tensor_quant_params, required for lossy tensors), a
// lossless tile of a float dtype (FP8 included) converted exactly (F64 rounded to nearest). Throws as decode_tile_of;
// Error(kUnsupported) for a lossless tensor of a non-float dtype.
void decode_tile_f32_of(const WpkReader& reader, size_t tensor, uint64_t tile_in_tensor,
                        const QuantTensorParams* params, std::vector<float>& out);

// Decodes a whole tensor to float (num_elements values), tiles in parallel.
void decode_tensor_f32(const WpkReader& reader, size_t tensor, std::span<float> out, int threads = 0);

// Writes `count` floats as `dtype` (F32, F16, BF16: round to nearest even; F64 exact) little-endian
// bytes. Throws Error(kUnsupported) for another dtype.
void convert_from_f32(DType dtype, const float* in, uint64_t count, uint8_t* out);

// Writes every tensor to a safetensors file (temp file + rename; `overwrite` as -f). The source
// `__metadata__` recorded at compress time is restored. Tensors are written in their source dtype;
// with `float_dtype` (F32, F16 or BF16) every float tensor (FP8 included) is written in that dtype instead
// (lossy tensors converted from their dequantized float values, lossless ones from the source).
void unpack_to_safetensors(const WpkReader& reader, const std::string& out_path, bool overwrite, int threads,
                           const std::function<void(uint64_t, uint64_t, const std::string&)>& progress = {},
                           std::optional<DType> float_dtype = std::nullopt);

}  // namespace wpack
