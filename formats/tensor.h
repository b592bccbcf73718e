// What every input reader yields: a list of named tensors and their bytes.
//
// Readers (safetensors, sharded safetensors, HDF5) implement TensorSource. Tensor bytes are
// little-endian, row-major (C order), exactly as safetensors stores them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "formats/dtype.h"
#include "formats/io.h"  // MappedFile: TensorBytes::mapped

namespace wpack {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // empty for a 0-d (scalar) tensor

  // Product of the shape (1 for 0-d), and that times the dtype size. Readers validate shapes when
  // they list tensors; a shape whose product overflows 64 bits throws Error(kFormat) here too.
  uint64_t num_elements() const;
  uint64_t num_bytes() const;
};

// "[768, 384]" style text for messages and tables.
std::string shape_to_string(const std::vector<uint64_t>& shape);

// The 2-D matrix a tensor is tiled, quantized and multiplied as (docs/FORMAT.md "Tiling"): rows
// are the product of the first `row_dims` dimensions and cols the product of the rest. row_dims 0
// is the default view: rank 0 is 1x1, rank 1 is 1xn, rank r is prod(shape[0..r-2]) x shape[r-1].
// A row_dims of 1..rank-2 (rank >= 3) folds the trailing dimensions into the columns: a PyTorch
// convolution [out, in, kh, kw] with row_dims 1 is out x (in*kh*kw). The caller keeps row_dims in
// that range (WpkReader checks it); the shape's product must not overflow 64 bits.
struct MatrixView {
  uint64_t rows = 1, cols = 1;
};
MatrixView matrix_view(const std::vector<uint64_t>& shape, uint32_t row_dims);

// The bytes of one tensor: owned, or borrowed from memory that `keep_alive` holds, e.g. a map.
class TensorBytes {
 public:
  TensorBytes() = default;
  static TensorBytes owned(std::vector<uint8_t> bytes);
  static TensorBytes borrowed(const uint8_t* data, size_t size, std::shared_ptr<const void> keep_alive);
  // Bytes [offset, offset + size) of a mapped file; `keep_alive` holds the map (and may do more
  // when it goes, see SafetensorsFile). release() works on these.
  static TensorBytes mapped(std::shared_ptr<const MappedFile> map, uint64_t offset, uint64_t size,
                            std::shared_ptr<const void> keep_alive);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  // A hint that bytes [offset, offset + size) of the tensor are done with: mapped bytes leave the
  // resident set (MappedFile::release) and stay readable; a no-op for other bytes. A reader that
  // goes through a large tensor once (pack_model) keeps its resident memory at what it is on.
  void release(uint64_t offset, uint64_t size) const;

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> keep_alive_;  // owns the vector or the mapping
  std::shared_ptr<const MappedFile> map_;   // mapped(): the map and where the bytes start in it
  uint64_t map_offset_ = 0;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // The tensors in file order (names unique).
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // Bytes of tensor `index` (size == tensors()[index].num_bytes()). Throws Error naming file and tensor.
  virtual TensorBytes read(size_t index) const = 0;
  // safetensors `__metadata__` (string to string); empty where the format has none.
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // The path the source was opened from, and its format: "safetensors", "safetensors-sharded",
  // "keras-h5", "keras3-weights-h5", "hdf5".
  virtual const std::string& path() const = 0;
  virtual std::string format_name() const = 0;
  // What the file holds but the source does not give as tensors, one item each with why (an HDF5
  // file's datasets of strings, compounds, ...: "dataset '/s' (string type)", its soft links, a
  // dataset's second name); empty for most.
  virtual std::vector<std::string> skipped() const { return {}; }
  // Every file the source reads: path() and, for a sharded model, each shard (a writer must not
  // replace one of them).
  virtual std::vector<std::string> files() const { return {path()}; }
};

// A TensorSource over tensors held in memory: for callers that build tensors themselves, and for
// tests and benchmarks. `path()` is the name given to the constructor.
class MemorySource : public TensorSource {
 public:
  explicit MemorySource(std::string name = "memory", std::map<std::string, std::string> metadata = {})
      : name_(std::move(name)), metadata_(std::move(metadata)) {}
  // Adds a tensor (owned). Throws Error(kInvalidArgument) when bytes.size() is not the shape's
  // byte size or the name is taken.
  void add(std::string name, DType dtype, std::vector<uint64_t> shape, std::vector<uint8_t> bytes);
  void set_metadata(std::map<std::string, std::string> metadata) { metadata_ = std::move(metadata); }
  // Bytes of tensor i (i < tensors().size()).
  const std::vector<uint8_t>& data(size_t i) const { return data_[i]; }

  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  TensorBytes read(size_t i) const override;
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::string& path() const override { return name_; }
  std::string format_name() const override { return "memory"; }

 private:
  std::string name_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> infos_;
  std::vector<std::vector<uint8_t>> data_;
};

// Opens a model by its content: a safetensors file, a sharded `*.safetensors.index.json`, or an
// HDF5 file (signature \x89HDF\r\n\x1a\n). Throws Error(kFormat) naming the file otherwise.
std::unique_ptr<TensorSource> open_tensor_source(const std::string& path);

}  // namespace wpack
