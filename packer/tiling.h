// How a tensor is cut into tiles (docs/FORMAT.md "Tiling").
//
// A tensor is viewed as a 2-D row-major matrix (formats/tensor.h matrix_view): by default rank 0 ->
// 1x1, rank 1 -> 1xn, rank r -> prod(shape[0..r-2]) x shape[r-1]; a record's row dims can fold
// trailing dimensions into the columns instead. Tiles of tile_rows x tile_cols cover it row-major
// over the tile grid; the last tile row/column is cut short at the edges. Tile bytes are the tile's
// elements in row-major order.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/tensor.h"  // MatrixView

namespace wpack {

// ceil(a / b) for b > 0.
inline uint64_t ceil_div(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

// Raw bytes in the largest tile of a 0-D or 1-D tensor: 64 KiB, so that a GPU thread block can
// load and decode any such tile in shared memory (kernels/tile_decode.cu), whatever the element
// size; these tensors (biases, norms) are small, and a long one gets many tiles.
inline constexpr uint32_t kMaxVectorTileBytes = 1u << 16;

// Elements in the largest tile of a 0-D or 1-D tensor of elem_size-byte elements (1..8).
inline constexpr uint32_t max_vector_tile_elements(uint32_t elem_size) { return kMaxVectorTileBytes / elem_size; }

struct TileRect {
  uint64_t row0 = 0, col0 = 0;  // first element of the tile in the 2-D view
  uint64_t rows = 0, cols = 0;  // the tile's extent (short at the edges)
  uint64_t elements() const { return rows * cols; }
};

struct TileGeometry {
  uint64_t rows = 0, cols = 0;            // the 2-D view
  uint32_t tile_rows = 1, tile_cols = 1;  // nominal tile shape
  uint64_t grid_rows = 0, grid_cols = 0;  // tiles per column / per row of the grid; 0 when empty

  uint64_t tile_count() const { return grid_rows * grid_cols; }
  TileRect rect(uint64_t tile_index) const;
};

// The geometry of a matrix stored with the given tile shape (as recorded in a .wpk).
TileGeometry tile_geometry(const MatrixView& view, uint32_t tile_rows, uint32_t tile_cols);

// How the packer folds a quantized tensor's trailing dimensions into the columns (choose_row_dims):
// only below kFoldLastDimBelow, towards kMinFoldedCols columns, never beyond kMaxFoldedCols.
inline constexpr uint64_t kFoldLastDimBelow = 32;
inline constexpr uint64_t kMinFoldedCols = 128;
inline constexpr uint64_t kMaxFoldedCols = 65536;

// The row dims the packer records for a quantized tensor of `shape` (formats/tensor.h
// matrix_view; lossless tensors keep the default view, 0): 0 for rank < 3, for a tensor without
// elements and for a last dimension of kFoldLastDimBelow or more (a stack of matrices [experts, out,
// in], attention heads [hidden, heads, 64], a Keras convolution [kh, kw, in, out >= 32]); otherwise
// the most leading dimensions that leave at least kMinFoldedCols columns, folding no further than
// kMaxFoldedCols columns, and 0 where no fold stays within it or where it would not change the
// matrix. So a PyTorch convolution [out, in, 3, 3] becomes out x (in*9) instead of (out*in*3) x 3,
// which would give every 3 weights a quantization group of their own, while a long thin tensor
// [2, 2^25, 4] keeps its 2^26 rows (folded, its 2 rows would make bands of the whole tensor).
uint32_t choose_row_dims(const std::vector<uint64_t>& shape);

// The tile shape the packer chooses for a tensor of `rank` viewed as `view` (elements of elem_size
// bytes) when asked for tile_rows x tile_cols: rank 0/1 tensors get 1 x min(n,
// max_vector_tile_elements(elem_size)); a matrix that fits in one requested tile is one tile of its
// own shape; otherwise the requested shape.
void choose_tile_shape(size_t rank, const MatrixView& view, uint32_t elem_size, uint32_t tile_rows, uint32_t tile_cols,
                       uint32_t* chosen_rows, uint32_t* chosen_cols);

// Copies a tile out of / into a row-major matrix with `cols` columns of `elem_size`-byte elements.
void gather_tile(const uint8_t* matrix, uint64_t cols, uint32_t elem_size, const TileRect& rect, uint8_t* tile);
void scatter_tile(const uint8_t* tile, uint64_t cols, uint32_t elem_size, const TileRect& rect, uint8_t* matrix);

}  // namespace wpack
