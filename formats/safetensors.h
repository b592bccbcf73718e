// safetensors: memory-mapped reader (single file and sharded index) and streaming writer.
//
// Validation follows the reference implementation, in this order, each rule with its own error
// message naming the file (and tensor): file at least 8 bytes; header length N ≤ 100 MB and
// 8 + N ≤ file size; header is a JSON object (UTF-8); `__metadata__`, if present, is a map of
// string to string (or null: none); each tensor entry has exactly dtype/shape/data_offsets of the
// right types (stricter than the reference, which ignores other fields: unpack would drop them);
// unknown dtype refused (kUnsupported for the specification's C64, F8_E8M0, F6_E2M3, F6_E3M2 and
// F4, which wpack does not read); duplicate names refused (the reference keeps the last); shape product × dtype size computed with checked
// arithmetic and equal to end − begin; begin ≤ end; offsets, sorted, are contiguous from 0 with no
// hole and no overlap; the last end equals the data size (no trailing bytes). A tensor entry of
// more than 4096 JSON values (a rank over 4090) is refused: the header is read one entry at a time,
// so that its memory follows the largest entry and what is kept of each, not the JSON text (which
// nlohmann's values would take 10–40 times over).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace wpack {

// Largest header accepted, as in the reference implementation.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Opens one .safetensors file (mmap, read-only). Tensors are listed in data-offset order. read()
// borrows the mapping; for a tensor of 1 MiB or more, its pages leave the process's resident set
// when the last TensorBytes of it is destroyed (MappedFile::release), so that going through a large
// model tensor by tensor keeps about one tensor resident.
// Throws Error(kFormat) with a one-line message "<file>: tensor '<name>': <rule>" on invalid input.
std::unique_ptr<TensorSource> open_safetensors(const std::string& path);

// Opens a sharded model from its `model.safetensors.index.json` (`weight_map`: tensor -> shard
// file, relative to the index's directory). Every shard is validated; every tensor of the
// weight_map must be in its shard and every tensor of a shard in the weight_map. Tensors are listed
// by shard (in order of first appearance in weight_map), then by offset. `metadata()` is the union
// of the shards' `__metadata__`, which must agree on every key they share (else Error(kFormat)).
// The index's own "metadata" (total_size: the shard set's) is not read, nor are other members.
std::unique_ptr<TensorSource> open_safetensors_index(const std::string& index_path);

// Streams a safetensors file: the header is written first (all tensor infos are known up front),
// then each tensor's bytes in order with append(); commit() checks that every byte was supplied and
// renames the temp file into place (see AtomicOutputFile). Header JSON keys are written in the
// order given; offsets contiguous from 0; the header padded with spaces to a multiple of 8 bytes.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<TensorInfo> tensors,
                    const std::map<std::string, std::string>& metadata, bool overwrite);
  ~SafetensorsWriter();
  // Appends the next bytes of tensor data (tensors in the order given to the constructor, any
  // chunking). Throws Error(kInvalidArgument) if more bytes are supplied than the tensors hold.
  void append(std::span<const uint8_t> bytes);
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes a whole file in one call (tests, demo data): `data[i]` holds tensor i's bytes.
void write_safetensors(const std::string& path, const std::vector<TensorInfo>& tensors,
                       const std::vector<std::vector<uint8_t>>& data,
                       const std::map<std::string, std::string>& metadata, bool overwrite);

}  // namespace wpack
