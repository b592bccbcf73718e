// The .wpk container, format version 5 (byte-by-byte specification: docs/FORMAT.md); readers also
// read versions 2, 3 and 4 (docs/FORMAT.md "Versioning").
//
//   [file header, 64 B] [tile data, each tile aligned] [index] [footer, 48 B]
//
// The writer streams tiles and writes the index (tensor table + tile index + metadata) at the end;
// the output goes to a temporary file that is renamed into place on commit(). The reader maps the
// file read-only, validates header, footer and index (checksums, bounds, overlaps, counts) before
// returning, and hands out each tile's stored bytes without touching any other tile.
//
// This layer knows nothing about filters, codecs and schemes beyond their numeric codes: the packer
// interprets them (packer/tile_codec.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "formats/io.h"
#include "formats/tensor.h"  // MatrixView

namespace wpack {

// The version the writer writes. v5 gives the tensor record's reserved byte a meaning, the row dims
// of its 2-D view (0, the default, in v4); v4 added tile codec byte 3 (exp4) to v3, and v3 tile
// filter byte 6 (quantized layout quant_dense_zrel) to v2, so a v5 reader reads v4, v3 and v2 files
// exactly. v1 (before the rANS stream revision of docs/FORMAT-rans.md) is refused: its rANS
// tiles do not decode with this decoder.
inline constexpr uint32_t kWpkFormatVersion = 5;
inline constexpr uint32_t kWpkOldestReadableVersion = 2;
// Tile filter byte first valid in v3 (packer/quant_tile.h kFilterQuantDenseZeroRel). This layer
// knows it only to refuse it in a v2 file: v2 writers never wrote it, so such a file is corrupt.
inline constexpr uint8_t kWpkFilterAddedInV3 = 6;
// Tile codec byte first valid in v4 (packer/codec.h Codec::kExp4). This layer knows it only to
// refuse it in a v2 or v3 file: their writers never wrote it, so such a file is corrupt.
inline constexpr uint8_t kWpkCodecAddedInV4 = 3;
// Largest tile (tile_rows * tile_cols elements): bounds what decoding one tile allocates, whatever
// a file declares (a constant rANS plane of any length takes 2 bytes). 2^24 elements = 64 MiB of
// float32; the packer's default tiles are 2^14 (128 x 128) and vector tiles at most 64 KiB.
inline constexpr uint64_t kWpkMaxTileElements = uint64_t{1} << 24;
inline constexpr uint32_t kWpkHeaderBytes = 64;
inline constexpr uint32_t kWpkFooterBytes = 48;
inline constexpr uint32_t kWpkTileRecordBytes = 40;
inline constexpr uint32_t kWpkDefaultAlignment = 64;
inline constexpr uint32_t kWpkMaxRank = 16;

// Accuracy of a tensor's packed form against its source, computed at compress time.
// Lossless tensors: rel_error 0, max_abs_error 0, snr_db +inf.
struct ErrorMetrics {
  double rel_error = 0;      // ||W' - W|| / ||W||
  double max_abs_error = 0;  // max |W' - W|
  double snr_db = 0;         // 10 log10(||W||^2 / ||W' - W||^2)
  double sparsity = 0;       // fraction of exact zeros in W'
};

struct WpkTile {
  uint64_t offset = 0;       // from the start of the file, a multiple of the alignment
  uint64_t stored_size = 0;  // bytes in the file
  uint64_t raw_size = 0;     // bytes after the codec is undone (before the filter is undone)
  uint8_t filter = 0;        // packer/filters.h Filter
  uint8_t codec = 0;         // packer/codec.h Codec
  uint16_t flags = 0;        // reserved, 0
  uint64_t checksum = 0;     // XXH3-64 (seed 0) of the stored bytes
};

struct WpkTensor {
  std::string name;
  DType dtype = DType::F32;      // the source dtype
  std::vector<uint64_t> shape;   // the source shape
  uint8_t scheme = 0;            // 0 = lossless; packer/quantize.h Scheme
  uint8_t row_dims = 0;          // the 2-D view's split (formats/tensor.h matrix_view); 0 = default, v5
  uint32_t tile_rows = 0;        // tile shape over the 2-D view (see docs/FORMAT.md "Tiling")
  uint32_t tile_cols = 0;
  uint64_t first_tile = 0;       // index of its first tile in the tile index
  uint64_t tile_count = 0;
  std::vector<uint8_t> params;   // scheme parameters (empty for lossless)
  ErrorMetrics metrics;

  uint64_t num_elements() const;
  // The 2-D view, matrix_view(shape, row_dims): by default rank 0 -> 1x1, rank 1 -> 1xn, rank r ->
  // prod(shape[0..r-2]) x shape[r-1].
  MatrixView view() const { return matrix_view(shape, row_dims); }
  uint64_t rows() const { return view().rows; }
  uint64_t cols() const { return view().cols; }
  uint64_t tile_grid_rows() const;  // ceil(rows / tile_rows), 0 for an empty tensor
  uint64_t tile_grid_cols() const;
};

// Streams a .wpk file. Call begin_tensor, add_tile for each of its tiles (row-major over the tile
// grid), end_tensor; then commit(). Nothing appears at `path` before commit() succeeds.
class WpkWriter {
 public:
  // Throws Error(kExists) if `path` exists and !overwrite; Error(kInvalidArgument) for an
  // alignment that is not a power of two in [16, 1 MiB].
  WpkWriter(const std::string& path, bool overwrite, uint32_t alignment = kWpkDefaultAlignment);
  ~WpkWriter();

  // `tensor.first_tile` and `tensor.tile_count` are filled in by the writer. Throws
  // Error(kUnsupported) for a tensor the format cannot hold (a name longer than 65535 bytes, rank
  // > 16, a byte size over 64 bits, params over 4 GiB, the 2^32-th tensor), kInvalidArgument for a
  // call out of order, a duplicate name or a tile shape out of range.
  void begin_tensor(const WpkTensor& tensor);
  // Appends one tile of the current tensor; computes its checksum.
  void add_tile(std::span<const uint8_t> stored, uint64_t raw_size, uint8_t filter, uint8_t codec);
  // Sets the current tensor's metrics (may be called any time before end_tensor).
  void set_metrics(const ErrorMetrics& metrics);
  void end_tensor();
  // Writes index and footer, fsyncs and renames into place. `metadata_json` is a JSON object text.
  void commit(const std::string& metadata_json);

  uint64_t bytes_written() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A validated, memory-mapped .wpk file.
class WpkReader {
 public:
  // Validates everything but the tiles' checksums (see tile_checksum_ok). Reads format versions
  // kWpkOldestReadableVersion..kWpkFormatVersion. Throws Error naming the file and what is wrong:
  // kFormat (not a .wpk, bad structure), kUnsupported (newer version, or v1), kCorrupt
  // (header/index/footer checksum mismatch; a v2 file with a tile of filter kWpkFilterAddedInV3; a
  // v2 or v3 file with a tile of codec kWpkCodecAddedInV4; a v2..v4 file with a tensor's row dims set).
  static std::unique_ptr<WpkReader> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint64_t file_size() const { return file_->size(); }
  uint32_t alignment() const { return alignment_; }
  // The file's format version (header byte 8): kWpkOldestReadableVersion..kWpkFormatVersion.
  uint32_t format_version() const { return format_version_; }
  uint64_t index_bytes() const { return index_size_; }
  const std::vector<WpkTensor>& tensors() const { return tensors_; }
  const std::vector<WpkTile>& tiles() const { return tiles_; }
  const std::string& metadata_json() const { return metadata_json_; }

  // The stored bytes of tile `index` (inside the mapping; valid while the reader lives).
  std::span<const uint8_t> tile_bytes(uint64_t index) const;
  // True when the tile's stored bytes hash to its recorded checksum. Each tile is hashed once per
  // reader (its verdict kept: the mapping is read-only), so that every check after the first (the
  // CPU decode, the GPU upload) is free. Thread-safe.
  bool tile_checksum_ok(uint64_t index) const;
  // A hint that tiles [first, first + count) are done with: their pages leave the resident set
  // (MappedFile::release); their bytes stay readable. For callers that stream through a file.
  void release_tiles(uint64_t first, uint64_t count) const;
  // Bytes of the index entry of tensor `t` (its record in the tensor table plus its tile records).
  uint64_t tensor_index_bytes(size_t t) const { return tensor_record_bytes_[t] + tensors_[t].tile_count * kWpkTileRecordBytes; }

 private:
  WpkReader() = default;
  std::shared_ptr<const MappedFile> file_;
  uint32_t alignment_ = 0;
  uint32_t format_version_ = 0;
  uint64_t index_size_ = 0;
  std::vector<WpkTensor> tensors_;
  std::vector<uint64_t> tensor_record_bytes_;
  std::vector<WpkTile> tiles_;
  std::string metadata_json_;
  // Per tile: 0 not hashed yet, 1 checksum ok, 2 mismatch (tile_checksum_ok).
  mutable std::unique_ptr<std::atomic<uint8_t>[]> checksum_state_;
};

// XXH3-64 with seed 0, the checksum used throughout the format.
uint64_t wpk_checksum(std::span<const uint8_t> bytes);

// Whether `head` (a file's first bytes) starts as a .wpk does: its magic's first 4 bytes, "\x89WPK"
// (enough to tell a .wpk from a model; WpkReader::open checks all 8).
bool has_wpk_magic(std::span<const uint8_t> head);

// Throws Error(kUnsupported) naming `context` and the tensor when the format cannot hold a tensor of
// this name, shape and dtype: a name longer than 65535 bytes or not UTF-8, rank > 16, a byte size
// that overflows 64 bits. WpkWriter::begin_tensor checks it (naming the output); a packer checks
// every tensor first, naming its source, before it writes anything.
void check_wpk_tensor_fits(const std::string& name, const std::vector<uint64_t>& shape, DType dtype,
                           const std::string& context);

}  // namespace wpack
