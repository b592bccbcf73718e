#include "formats/wpk.h"

#include <nlohmann/json.hpp>  // UTF-8 and JSON checks of names and metadata
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "formats/detail/json_rules.h"
#include "formats/detail/le.h"
#include "formats/error.h"

namespace wpack {
namespace {

using detail::Cursor;

// "\x89WPK\r\n\x1a\n": the high byte catches 7-bit transfers, CR LF catches newline translation.
constexpr uint8_t kHeaderMagic[8] = {0x89, 'W', 'P', 'K', '\r', '\n', 0x1a, '\n'};
constexpr uint8_t kFooterMagic[8] = {'W', 'P', 'K', 'I', 'N', 'D', 'E', 'X'};

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Whether `text` is valid UTF-8 (nlohmann's serialiser refuses anything else).
bool is_utf8(std::string_view text) {
  try {
    (void)nlohmann::json(std::string(text)).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// Whether `text` is one JSON object and nothing else, in UTF-8, within the rules every JSON text
// wpack reads shares (formats/detail/json_rules.h).
bool is_json_object(const std::string& text) {
  try {
    return detail::check_json(text, /*unique_keys=*/false);
  } catch (const detail::JsonProblem&) {
    return false;
  }
}

// Whether bytes [begin, end) of `p` are all zero: fields the format reserves.
bool all_zero(const uint8_t* p, size_t begin, size_t end) {
  return std::all_of(p + begin, p + end, [](uint8_t b) { return b == 0; });
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return b == 0 ? 0 : (a / b) + (a % b != 0); }

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<uint8_t> make_header(uint32_t alignment) {
  std::vector<uint8_t> h;
  h.insert(h.end(), kHeaderMagic, kHeaderMagic + 8);
  detail::put_u32(h, kWpkFormatVersion);
  detail::put_u32(h, kWpkHeaderBytes);
  detail::put_u32(h, alignment);
  detail::put_u32(h, 0);  // flags
  h.resize(56, 0);        // reserved
  detail::put_u64(h, wpk_checksum({h.data(), 56}));
  return h;
}

// Whether the 2-D view's sides fit 64 bits. Its rows are a prefix of the shape's product, which
// is checked left to right, and the default view's cols one dimension; a split view's cols are not
// bounded by that product when it is 0 ([0, 2^40, 2^40] at row dims 1).
bool view_fits(const std::vector<uint64_t>& shape, uint32_t row_dims) {
  uint64_t cols = 1;
  for (size_t d = row_dims == 0 ? shape.size() : row_dims; d < shape.size(); ++d)
    if (__builtin_mul_overflow(cols, shape[d], &cols)) return false;
  return true;
}

}  // namespace

bool has_wpk_magic(std::span<const uint8_t> head) {
  return head.size() >= 4 && std::memcmp(head.data(), kHeaderMagic, 4) == 0;
}

uint64_t wpk_checksum(std::span<const uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

void check_wpk_tensor_fits(const std::string& name, const std::vector<uint64_t>& shape, DType dtype,
                           const std::string& context) {
  if (name.size() > 0xFFFF)
    throw Error(ErrorCode::kUnsupported, context + ": tensor name longer than 65535 bytes ('" + name.substr(0, 40) + "...')");
  if (!is_utf8(name)) throw Error(ErrorCode::kUnsupported, context + ": tensor name '" + name + "' is not UTF-8");
  if (shape.size() > kWpkMaxRank) throw Error(ErrorCode::kUnsupported, context + ": tensor '" + name + "' has rank > 16");
  // Left to right, as the reader checks it (docs/FORMAT.md "Tensor record").
  uint64_t elements = 1, bytes = 0;
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(elements, d, &elements))
      throw Error(ErrorCode::kUnsupported, context + ": tensor '" + name + "': shape " + shape_text(shape) + " overflows 64 bits");
  if (__builtin_mul_overflow(elements, uint64_t{dtype_size(dtype)}, &bytes))
    throw Error(ErrorCode::kUnsupported, context + ": tensor '" + name + "': shape " + shape_text(shape) + " overflows 64 bits");
}

uint64_t WpkTensor::num_elements() const {
  uint64_t n = 1;  // WpkReader::open refuses shapes whose byte size overflows; checked for other callers
  for (uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw Error(ErrorCode::kFormat, "tensor '" + name + "': shape " + shape_text(shape) + " overflows 64 bits");
  return n;
}
uint64_t WpkTensor::tile_grid_rows() const { return num_elements() == 0 ? 0 : ceil_div(rows(), tile_rows); }
uint64_t WpkTensor::tile_grid_cols() const { return num_elements() == 0 ? 0 : ceil_div(cols(), tile_cols); }

// ---------------------------------------------------------------------------------------------
// Writer

struct WpkWriter::Impl {
  AtomicOutputFile out;
  uint32_t alignment;
  std::vector<WpkTensor> tensors;
  std::vector<WpkTile> tiles;
  bool in_tensor = false;
  std::unordered_set<std::string> names;

  Impl(const std::string& path, bool overwrite, uint32_t align) : out(path, overwrite), alignment(align) {}
};

WpkWriter::WpkWriter(const std::string& path, bool overwrite, uint32_t alignment) {
  if (!is_power_of_two(alignment) || alignment < 16 || alignment > (1u << 20))
    throw Error(ErrorCode::kInvalidArgument, path + ": alignment " + std::to_string(alignment) +
                                                 " is not a power of two in [16, 1048576]");
  impl_ = std::make_unique<Impl>(path, overwrite, alignment);
  auto header = make_header(alignment);
  impl_->out.write(header.data(), header.size());
}

WpkWriter::~WpkWriter() = default;

uint64_t WpkWriter::bytes_written() const { return impl_->out.position(); }

void WpkWriter::begin_tensor(const WpkTensor& tensor) {
  const std::string& target = impl_->out.target();
  if (impl_->in_tensor) throw Error(ErrorCode::kInvalidArgument, target + ": begin_tensor inside a tensor");
  if (impl_->names.count(tensor.name) != 0)
    throw Error(ErrorCode::kInvalidArgument, target + ": duplicate tensor name '" + tensor.name + "'");
  check_wpk_tensor_fits(tensor.name, tensor.shape, tensor.dtype, target);
  if (tensor.scheme == 0 && !tensor.params.empty())
    throw Error(ErrorCode::kInvalidArgument, target + ": tensor '" + tensor.name + "': lossless tensor with " +
                                                 std::to_string(tensor.params.size()) + " bytes of params");
  if ((tensor.row_dims != 0 && size_t{tensor.row_dims} + 2 > tensor.shape.size()) ||
      !view_fits(tensor.shape, tensor.row_dims))
    throw Error(ErrorCode::kInvalidArgument, target + ": tensor '" + tensor.name + "': row dims " +
                                                 std::to_string(tensor.row_dims) + " for shape " + shape_text(tensor.shape));
  if (tensor.tile_rows == 0 || tensor.tile_cols == 0)
    throw Error(ErrorCode::kInvalidArgument, target + ": tensor '" + tensor.name + "': tile shape has a zero side");
  if (uint64_t{tensor.tile_rows} * tensor.tile_cols > kWpkMaxTileElements)
    throw Error(ErrorCode::kInvalidArgument, target + ": tensor '" + tensor.name + "': tile shape " +
                                                 std::to_string(tensor.tile_rows) + "x" + std::to_string(tensor.tile_cols) +
                                                 " has more than 2^24 elements");
  // Counts and sizes stored as u32: refused rather than truncated.
  if (impl_->tensors.size() >= UINT32_MAX)
    throw Error(ErrorCode::kUnsupported, target + ": more than 4294967295 tensors");
  if (tensor.params.size() > UINT32_MAX)
    throw Error(ErrorCode::kUnsupported, target + ": tensor '" + tensor.name + "': params larger than 4 GiB");
  impl_->names.insert(tensor.name);  // after the checks: a refused tensor leaves the writer as it was
  impl_->tensors.push_back(tensor);
  impl_->tensors.back().first_tile = impl_->tiles.size();
  impl_->tensors.back().tile_count = 0;
  impl_->in_tensor = true;
}

void WpkWriter::add_tile(std::span<const uint8_t> stored, uint64_t raw_size, uint8_t filter, uint8_t codec) {
  if (!impl_->in_tensor) throw Error(ErrorCode::kInvalidArgument, impl_->out.target() + ": add_tile outside a tensor");
  impl_->out.pad_to(impl_->alignment);
  WpkTile tile;
  tile.offset = impl_->out.position();
  tile.stored_size = stored.size();
  tile.raw_size = raw_size;
  tile.filter = filter;
  tile.codec = codec;
  tile.checksum = wpk_checksum(stored);
  impl_->out.write(stored.data(), stored.size());
  impl_->tiles.push_back(tile);
  impl_->tensors.back().tile_count++;
}

void WpkWriter::set_metrics(const ErrorMetrics& metrics) {
  if (!impl_->in_tensor) throw Error(ErrorCode::kInvalidArgument, impl_->out.target() + ": set_metrics outside a tensor");
  impl_->tensors.back().metrics = metrics;
}

void WpkWriter::end_tensor() {
  if (!impl_->in_tensor) throw Error(ErrorCode::kInvalidArgument, impl_->out.target() + ": end_tensor outside a tensor");
  const WpkTensor& t = impl_->tensors.back();
  uint64_t expected = t.tile_grid_rows() * t.tile_grid_cols();
  if (t.tile_count != expected)
    throw Error(ErrorCode::kInvalidArgument, impl_->out.target() + ": tensor '" + t.name + "' got " +
                                                 std::to_string(t.tile_count) + " tiles, its grid has " +
                                                 std::to_string(expected));
  impl_->in_tensor = false;
}

void WpkWriter::commit(const std::string& metadata_json) {
  if (impl_->in_tensor) throw Error(ErrorCode::kInvalidArgument, impl_->out.target() + ": commit inside a tensor");
  if (metadata_json.size() > UINT32_MAX)
    throw Error(ErrorCode::kUnsupported, impl_->out.target() + ": metadata larger than 4 GiB");
  if (!is_json_object(metadata_json))
    throw Error(ErrorCode::kInvalidArgument, impl_->out.target() + ": metadata is not a UTF-8 JSON object nested at most 128 levels");
  std::vector<uint8_t> index;
  detail::put_u32(index, static_cast<uint32_t>(impl_->tensors.size()));
  detail::put_u32(index, 0);  // reserved
  detail::put_u64(index, impl_->tiles.size());
  detail::put_u32(index, static_cast<uint32_t>(metadata_json.size()));
  detail::put_bytes(index, {reinterpret_cast<const uint8_t*>(metadata_json.data()), metadata_json.size()});
  for (const auto& t : impl_->tensors) {
    detail::put_u16(index, static_cast<uint16_t>(t.name.size()));
    detail::put_bytes(index, {reinterpret_cast<const uint8_t*>(t.name.data()), t.name.size()});
    detail::put_u8(index, static_cast<uint8_t>(t.dtype));
    detail::put_u8(index, static_cast<uint8_t>(t.shape.size()));
    detail::put_u8(index, t.scheme);
    detail::put_u8(index, t.row_dims);
    for (uint64_t d : t.shape) detail::put_u64(index, d);
    detail::put_u32(index, t.tile_rows);
    detail::put_u32(index, t.tile_cols);
    detail::put_u64(index, t.first_tile);
    detail::put_u64(index, t.tile_count);
    detail::put_f64(index, t.metrics.rel_error);
    detail::put_f64(index, t.metrics.max_abs_error);
    detail::put_f64(index, t.metrics.snr_db);
    detail::put_f64(index, t.metrics.sparsity);
    detail::put_u32(index, static_cast<uint32_t>(t.params.size()));
    detail::put_bytes(index, t.params);
  }
  for (const auto& tile : impl_->tiles) {
    detail::put_u64(index, tile.offset);
    detail::put_u64(index, tile.stored_size);
    detail::put_u64(index, tile.raw_size);
    detail::put_u8(index, tile.filter);
    detail::put_u8(index, tile.codec);
    detail::put_u16(index, tile.flags);
    detail::put_u32(index, 0);  // reserved
    detail::put_u64(index, tile.checksum);
  }
  impl_->out.pad_to(8);
  uint64_t index_offset = impl_->out.position();
  impl_->out.write(index.data(), index.size());

  std::vector<uint8_t> footer;
  detail::put_u64(footer, index_offset);
  detail::put_u64(footer, index.size());
  detail::put_u64(footer, wpk_checksum(index));
  detail::put_u32(footer, kWpkFormatVersion);
  detail::put_u32(footer, 0);  // reserved
  footer.insert(footer.end(), kFooterMagic, kFooterMagic + 8);
  detail::put_u64(footer, wpk_checksum({footer.data(), 40}));
  static_assert(kWpkFooterBytes == 48);
  impl_->out.write(footer.data(), footer.size());
  impl_->out.commit();
}

// ---------------------------------------------------------------------------------------------
// Reader

std::unique_ptr<WpkReader> WpkReader::open(const std::string& path) {
  std::unique_ptr<WpkReader> r(new WpkReader());
  r->file_ = MappedFile::open(path);
  const uint8_t* base = r->file_->data();
  const uint64_t size = r->file_->size();

  // Header. The magic, then the checksum, then the version: a flipped bit in the version field is
  // a corrupt header, not a newer format (every version keeps bytes [0, 16) and the checksum of
  // bytes [0, 56) at byte 56; docs/FORMAT.md "Versioning").
  const uint64_t magic_bytes = std::min<uint64_t>(size, 8);
  if (magic_bytes > 0 && std::memcmp(base, kHeaderMagic, magic_bytes) != 0)
    throw Error(ErrorCode::kFormat, path + ": not a .wpk file (bad magic)");
  if (size < kWpkHeaderBytes + kWpkFooterBytes)
    throw Error(ErrorCode::kFormat, path + ": truncated (" + std::to_string(size) + " bytes is shorter than header and footer, " +
                                        std::to_string(kWpkHeaderBytes + kWpkFooterBytes) + " bytes)");
  if (detail::load_u64(base + 56) != wpk_checksum({base, 56}))
    throw Error(ErrorCode::kCorrupt, path + ": header checksum mismatch (bytes [0, 56) against the checksum at byte 56)");
  const uint32_t version = detail::load_u32(base + 8);
  if (version > kWpkFormatVersion)
    throw Error(ErrorCode::kUnsupported, path + ": written by a newer wpack: format v" + std::to_string(version));
  if (version >= 1 && version < kWpkOldestReadableVersion)
    throw Error(ErrorCode::kUnsupported, path + ": written by an older wpack: format v" + std::to_string(version) +
                                             " (this wpack reads v" + std::to_string(kWpkOldestReadableVersion) + " to v" +
                                             std::to_string(kWpkFormatVersion) + "; pack the model again)");
  if (version < kWpkOldestReadableVersion)
    throw Error(ErrorCode::kFormat, path + ": bad format version " + std::to_string(version));
  r->format_version_ = version;
  if (detail::load_u32(base + 12) != kWpkHeaderBytes)
    throw Error(ErrorCode::kFormat, path + ": bad header size " + std::to_string(detail::load_u32(base + 12)));
  r->alignment_ = detail::load_u32(base + 16);
  if (!is_power_of_two(r->alignment_) || r->alignment_ < 16 || r->alignment_ > (1u << 20))
    throw Error(ErrorCode::kFormat, path + ": bad tile alignment " + std::to_string(r->alignment_));
  if (!all_zero(base, 20, 56)) throw Error(ErrorCode::kFormat, path + ": header flags or reserved bytes [20, 56) not zero");

  // Footer.
  const uint8_t* foot = base + size - kWpkFooterBytes;
  const std::string footer_at = " (footer at byte " + std::to_string(size - kWpkFooterBytes) + ")";
  if (std::memcmp(foot + 32, kFooterMagic, 8) != 0)
    throw Error(ErrorCode::kFormat, path + ": footer not found: file truncated or not a complete .wpk" + footer_at);
  if (detail::load_u64(foot + 40) != wpk_checksum({foot, 40}))
    throw Error(ErrorCode::kCorrupt, path + ": footer checksum mismatch" + footer_at);
  const uint64_t index_offset = detail::load_u64(foot);
  r->index_size_ = detail::load_u64(foot + 8);
  if (detail::load_u32(foot + 24) != version) throw Error(ErrorCode::kFormat, path + ": footer version differs from header");
  if (!all_zero(foot, 28, 32)) throw Error(ErrorCode::kFormat, path + ": footer reserved bytes [28, 32) not zero" + footer_at);
  const uint64_t data_end = size - kWpkFooterBytes;
  if (index_offset < kWpkHeaderBytes || index_offset > data_end || r->index_size_ > data_end - index_offset)
    throw Error(ErrorCode::kFormat, path + ": index range outside the file");
  if (index_offset % 8 != 0)
    throw Error(ErrorCode::kFormat, path + ": index offset " + std::to_string(index_offset) + " not a multiple of 8");
  if (index_offset + r->index_size_ != data_end)
    throw Error(ErrorCode::kFormat, path + ": " + std::to_string(data_end - index_offset - r->index_size_) +
                                        " bytes between the index and the footer");
  std::span<const uint8_t> index{base + index_offset, static_cast<size_t>(r->index_size_)};
  if (detail::load_u64(foot + 16) != wpk_checksum(index))
    throw Error(ErrorCode::kCorrupt, path + ": index checksum mismatch (index bytes [" + std::to_string(index_offset) +
                                         ", " + std::to_string(index_offset + r->index_size_) + "))");

  // Index.
  Cursor c(index, path + ": index");
  const uint32_t tensor_count = c.u32("tensor count");
  if (c.u32("reserved") != 0) throw Error(ErrorCode::kFormat, path + ": index reserved field not zero");
  const uint64_t tile_count = c.u64("tile count");
  const uint32_t metadata_size = c.u32("metadata size");
  auto meta = c.bytes(metadata_size, "metadata");
  r->metadata_json_.assign(reinterpret_cast<const char*>(meta.data()), meta.size());
  if (!is_json_object(r->metadata_json_))
    throw Error(ErrorCode::kFormat, path + ": metadata is not a UTF-8 JSON object nested at most 128 levels");
  // Smallest tensor record: 2 + 4 + 4 + 4 + 8 + 8 + 32 + 4 bytes.
  constexpr uint64_t kMinTensorRecord = 66;
  if (tensor_count > c.remaining() / kMinTensorRecord)
    throw Error(ErrorCode::kFormat, path + ": tensor count " + std::to_string(tensor_count) + " larger than the index holds");
  if (tile_count > c.remaining() / kWpkTileRecordBytes)
    throw Error(ErrorCode::kFormat, path + ": tile count " + std::to_string(tile_count) + " larger than the index holds");

  r->tensors_.reserve(tensor_count);
  std::unordered_set<std::string> names;
  uint64_t next_tile = 0;
  for (uint32_t i = 0; i < tensor_count; ++i) {
    const uint64_t record_start = c.position();
    WpkTensor t;
    auto name = c.bytes(c.u16("tensor name size"), "tensor name");
    t.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
    const std::string where = path + ": tensor '" + t.name + "'";
    if (!is_utf8(t.name)) throw Error(ErrorCode::kFormat, where + ": name is not UTF-8");
    if (!names.insert(t.name).second) throw Error(ErrorCode::kFormat, where + ": duplicate tensor name");
    const uint8_t dtype_code = c.u8("dtype");
    auto dtype = dtype_from_code(dtype_code);
    if (!dtype) throw Error(ErrorCode::kFormat, where + ": unknown dtype code " + std::to_string(dtype_code));
    t.dtype = *dtype;
    const uint8_t rank = c.u8("rank");
    if (rank > kWpkMaxRank) throw Error(ErrorCode::kFormat, where + ": rank " + std::to_string(rank) + " > 16");
    t.scheme = c.u8("scheme");
    t.row_dims = c.u8("row dims");
    if (version < 5 && t.row_dims != 0)  // v2..v4 writers never wrote it
      throw Error(ErrorCode::kCorrupt, where + ": row dims " + std::to_string(t.row_dims) +
                                           " (added in format v5) in a format v" + std::to_string(version) + " file");
    if (t.row_dims != 0 && t.row_dims + 2 > rank)
      throw Error(ErrorCode::kFormat, where + ": row dims " + std::to_string(t.row_dims) + " for a tensor of rank " +
                                          std::to_string(rank) + " (0, or 1.." + (rank >= 3 ? std::to_string(rank - 2) : "none") + ")");
    uint64_t elements = 1;
    for (uint8_t d = 0; d < rank; ++d) {
      t.shape.push_back(c.u64("shape"));
      elements = checked_mul(elements, t.shape.back(), where + ": shape");
    }
    checked_mul(elements, dtype_size(t.dtype), where + ": byte size");
    if (!view_fits(t.shape, t.row_dims))
      throw Error(ErrorCode::kFormat, where + ": the view of row dims " + std::to_string(t.row_dims) + " of shape " +
                                          shape_text(t.shape) + " overflows 64 bits");
    t.tile_rows = c.u32("tile rows");
    t.tile_cols = c.u32("tile cols");
    t.first_tile = c.u64("first tile");
    t.tile_count = c.u64("tile count");
    t.metrics.rel_error = c.f64("metrics");
    t.metrics.max_abs_error = c.f64("metrics");
    t.metrics.snr_db = c.f64("metrics");
    t.metrics.sparsity = c.f64("metrics");
    auto params = c.bytes(c.u32("params size"), "params");
    t.params.assign(params.begin(), params.end());
    if (t.scheme == 0 && !t.params.empty())
      throw Error(ErrorCode::kFormat, where + ": lossless tensor with " + std::to_string(t.params.size()) + " bytes of params");
    if (t.tile_rows == 0 || t.tile_cols == 0) throw Error(ErrorCode::kFormat, where + ": tile shape has a zero side");
    if (uint64_t{t.tile_rows} * t.tile_cols > kWpkMaxTileElements)
      throw Error(ErrorCode::kFormat, where + ": tile shape " + std::to_string(t.tile_rows) + "x" +
                                          std::to_string(t.tile_cols) + " has more than 2^24 elements");
    const uint64_t grid = t.tile_grid_rows() * t.tile_grid_cols();  // each factor <= elements
    if (t.first_tile != next_tile || t.tile_count != grid)
      throw Error(ErrorCode::kFormat, where + ": tile range [" + std::to_string(t.first_tile) + ", +" +
                                          std::to_string(t.tile_count) + ") does not match its tile grid (" +
                                          std::to_string(grid) + " tiles from " + std::to_string(next_tile) + ")");
    next_tile = checked_add(next_tile, t.tile_count, where + ": tile count");
    if (next_tile > tile_count) throw Error(ErrorCode::kFormat, where + ": more tiles than the tile index holds");
    r->tensor_record_bytes_.push_back(c.position() - record_start);
    r->tensors_.push_back(std::move(t));
  }
  if (next_tile != tile_count)
    throw Error(ErrorCode::kFormat, path + ": tensors cover " + std::to_string(next_tile) + " of " +
                                        std::to_string(tile_count) + " tiles");
  if (c.remaining() != tile_count * kWpkTileRecordBytes)
    throw Error(ErrorCode::kFormat, path + ": index size does not match its tile count");

  r->tiles_.resize(tile_count);
  r->checksum_state_ = std::make_unique<std::atomic<uint8_t>[]>(tile_count);  // value-initialised: 0
  uint64_t previous_end = kWpkHeaderBytes;
  size_t owner = 0;  // the tensor that tile i belongs to (tile ranges are consecutive)
  for (uint64_t i = 0; i < tile_count; ++i) {
    while (i >= r->tensors_[owner].first_tile + r->tensors_[owner].tile_count) ++owner;
    WpkTile& tile = r->tiles_[i];
    tile.offset = c.u64("tile offset");
    tile.stored_size = c.u64("tile size");
    tile.raw_size = c.u64("tile raw size");
    tile.filter = c.u8("tile filter");
    tile.codec = c.u8("tile codec");
    tile.flags = c.u16("tile flags");
    const uint32_t tile_reserved = c.u32("reserved");
    tile.checksum = c.u64("tile checksum");
    const WpkTensor& t = r->tensors_[owner];
    const std::string where = path + ": tensor '" + t.name + "': tile " + std::to_string(i - t.first_tile) +
                              " (record " + std::to_string(i) + " of the tile index)";
    if (version < 3 && tile.filter == kWpkFilterAddedInV3)  // v2 writers never wrote it
      throw Error(ErrorCode::kCorrupt, where + ": filter " + std::to_string(tile.filter) +
                                           " (quant_dense_zrel, added in format v3) in a format v" + std::to_string(version) + " file");
    if (version < 4 && tile.codec == kWpkCodecAddedInV4)  // v2 and v3 writers never wrote it
      throw Error(ErrorCode::kCorrupt, where + ": codec " + std::to_string(tile.codec) +
                                           " (exp4, added in format v4) in a format v" + std::to_string(version) + " file");
    if (tile.flags != 0 || tile_reserved != 0) throw Error(ErrorCode::kFormat, where + ": flags or reserved field not zero");
    if (tile.offset % r->alignment_ != 0) throw Error(ErrorCode::kFormat, where + ": offset not aligned");
    if (tile.offset < previous_end) throw Error(ErrorCode::kFormat, where + ": overlaps the previous tile or the header");
    if (tile.offset > index_offset || tile.stored_size > index_offset - tile.offset)
      throw Error(ErrorCode::kFormat, where + ": byte range outside the tile data");
    previous_end = tile.offset + tile.stored_size;
  }
  return r;
}

std::span<const uint8_t> WpkReader::tile_bytes(uint64_t index) const {
  const WpkTile& t = tiles_.at(index);
  return {file_->data() + t.offset, static_cast<size_t>(t.stored_size)};
}

void WpkReader::release_tiles(uint64_t first, uint64_t count) const {
  if (count == 0 || first >= tiles_.size() || count > tiles_.size() - first) return;
  const WpkTile& last = tiles_[first + count - 1];
  const uint64_t begin = tiles_[first].offset;
  file_->release(begin, last.offset + last.stored_size - begin);
}

bool WpkReader::tile_checksum_ok(uint64_t index) const {
  const std::span<const uint8_t> bytes = tile_bytes(index);  // throws for an index out of range
  std::atomic<uint8_t>& state = checksum_state_[index];
  uint8_t verdict = state.load(std::memory_order_relaxed);
  if (verdict == 0) {
    verdict = wpk_checksum(bytes) == tiles_[index].checksum ? 1 : 2;
    state.store(verdict, std::memory_order_relaxed);
  }
  return verdict == 1;
}

}  // namespace wpack
