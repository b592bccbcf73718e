#include "formats/tensor.h"

#include <algorithm>
#include <cstring>

#include "formats/error.h"
#include "formats/hdf5.h"
#include "formats/io.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"  // has_wpk_magic

namespace wpack {

uint64_t TensorInfo::num_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw Error(ErrorCode::kFormat, "tensor '" + name + "': shape " + shape_to_string(shape) + " overflows 64 bits");
  return n;
}

uint64_t TensorInfo::num_bytes() const {
  uint64_t bytes;
  if (__builtin_mul_overflow(num_elements(), uint64_t{dtype_size(dtype)}, &bytes))
    throw Error(ErrorCode::kFormat, "tensor '" + name + "': shape " + shape_to_string(shape) + " of " +
                                        std::string(dtype_name(dtype)) + " overflows 64 bits");
  return bytes;
}

std::string shape_to_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

MatrixView matrix_view(const std::vector<uint64_t>& shape, uint32_t row_dims) {
  MatrixView v;
  if (shape.empty()) return v;
  const size_t split = row_dims == 0 ? shape.size() - 1 : row_dims;
  v.cols = 1;
  for (size_t i = 0; i < shape.size(); ++i) (i < split ? v.rows : v.cols) *= shape[i];
  return v;
}

TensorBytes TensorBytes::owned(std::vector<uint8_t> bytes) {
  auto holder = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  TensorBytes t;
  t.data_ = holder->data();
  t.size_ = holder->size();
  t.keep_alive_ = holder;
  return t;
}

TensorBytes TensorBytes::borrowed(const uint8_t* data, size_t size, std::shared_ptr<const void> keep_alive) {
  TensorBytes t;
  t.data_ = data;
  t.size_ = size;
  t.keep_alive_ = std::move(keep_alive);
  return t;
}

void MemorySource::add(std::string name, DType dtype, std::vector<uint64_t> shape, std::vector<uint8_t> bytes) {
  for (const auto& info : infos_)
    if (info.name == name) throw Error(ErrorCode::kInvalidArgument, name_ + ": duplicate tensor name '" + name + "'");
  TensorInfo info{std::move(name), dtype, std::move(shape)};
  if (info.num_bytes() != bytes.size())
    throw Error(ErrorCode::kInvalidArgument, name_ + ": tensor '" + info.name + "': " + std::to_string(bytes.size()) +
                                                 " bytes for a shape of " + std::to_string(info.num_bytes()));
  infos_.push_back(std::move(info));
  data_.push_back(std::move(bytes));
}

TensorBytes MemorySource::read(size_t i) const {
  if (i >= data_.size()) throw Error(ErrorCode::kInvalidArgument, name_ + ": no tensor " + std::to_string(i));
  return TensorBytes::borrowed(data_[i].data(), data_[i].size(), nullptr);
}

TensorBytes TensorBytes::mapped(std::shared_ptr<const MappedFile> map, uint64_t offset, uint64_t size,
                                std::shared_ptr<const void> keep_alive) {
  TensorBytes t;
  t.data_ = map->data() + offset;
  t.size_ = size;
  t.keep_alive_ = std::move(keep_alive);
  t.map_ = std::move(map);
  t.map_offset_ = offset;
  return t;
}

void TensorBytes::release(uint64_t offset, uint64_t size) const {
  if (!map_ || offset >= size_) return;
  map_->release(map_offset_ + offset, std::min<uint64_t>(size, size_ - offset));
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::unique_ptr<TensorSource> open_tensor_source(const std::string& path) {
  // MappedFile takes regular files only: reading a FIFO would wait for a writer, and a directory
  // would read as empty.
  static const uint8_t kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  bool hdf5 = false, eight = false, wpk = false, brace = false;
  {
    const auto file = MappedFile::open(path);
    eight = file->size() >= 8;
    // The signature is at 0, or after a user block of 512, 1024, 2048, ... bytes (HDF5's rule);
    // the user block is looked into only when the file does not start as safetensors does (a
    // header length that fits, then '{' after any whitespace), whose tensor data may hold any bytes.
    const uint8_t* p = file->data();
    uint64_t header = 0;
    if (eight) std::memcpy(&header, p, 8);  // little-endian, as the hosts wpack builds for
    // (JSON may start with whitespace, which the safetensors reference implementation accepts)
    uint64_t at_brace = 8;
    while (at_brace < file->size() && at_brace < 8 + header &&
           (p[at_brace] == ' ' || p[at_brace] == '\t' || p[at_brace] == '\n' || p[at_brace] == '\r'))
      ++at_brace;
    brace = at_brace < file->size() && p[at_brace] == '{';
    const bool safetensors_like = brace && header <= file->size() - 8;
    wpk = has_wpk_magic({p, static_cast<size_t>(file->size())});
    for (uint64_t at = 0; !hdf5 && at + 8 <= file->size(); at = at == 0 ? 512 : 2 * at) {
      hdf5 = std::memcmp(p + at, kHdf5Signature, 8) == 0;
      if (safetensors_like) break;
    }
  }
  if (wpk)
    throw Error(ErrorCode::kFormat, path + ": a .wpk file (packed by wpack), not a model; wpack unpack writes it back as safetensors");
  if (hdf5) return open_hdf5(path);
  if (ends_with(path, ".json")) return open_safetensors_index(path);
  // A safetensors file's JSON header starts at byte 8: a file with anything else there is named as
  // no known format, not judged by a "header length" its first bytes would make.
  if (eight && brace) return open_safetensors(path);
  throw Error(ErrorCode::kFormat, path + ": not a safetensors, safetensors index or HDF5 file" +
                                      (eight ? std::string() : std::string(" (too short)")));
}

}  // namespace wpack
