#include "packer/tiling.h"

#include <algorithm>
#include <cstring>

namespace wpack {

TileRect TileGeometry::rect(uint64_t tile_index) const {
  TileRect r;
  const uint64_t gr = tile_index / grid_cols, gc = tile_index % grid_cols;
  r.row0 = gr * tile_rows;
  r.col0 = gc * tile_cols;
  r.rows = std::min<uint64_t>(tile_rows, rows - r.row0);
  r.cols = std::min<uint64_t>(tile_cols, cols - r.col0);
  return r;
}

TileGeometry tile_geometry(const MatrixView& view, uint32_t tile_rows, uint32_t tile_cols) {
  TileGeometry g;
  g.rows = view.rows;
  g.cols = view.cols;
  g.tile_rows = tile_rows;
  g.tile_cols = tile_cols;
  if (g.rows != 0 && g.cols != 0) {
    g.grid_rows = ceil_div(g.rows, tile_rows);
    g.grid_cols = ceil_div(g.cols, tile_cols);
  }
  return g;
}

uint32_t choose_row_dims(const std::vector<uint64_t>& shape) {
  if (shape.size() < 3 || shape.back() >= kFoldLastDimBelow) return 0;
  if (std::find(shape.begin(), shape.end(), uint64_t{0}) != shape.end()) return 0;
  uint32_t chosen = 0;
  uint64_t cols = shape.back(), chosen_cols = cols;  // no overflow: products of the tensor's dimensions
  for (size_t k = shape.size() - 2; k >= 1 && cols < kMinFoldedCols; --k) {
    cols *= shape[k];
    if (cols > kMaxFoldedCols) break;
    chosen = static_cast<uint32_t>(k);
    chosen_cols = cols;
  }
  return chosen_cols != shape.back() ? chosen : 0;  // [512, 1, 4] is 512 x 4 either way
}

void choose_tile_shape(size_t rank, const MatrixView& view, uint32_t elem_size, uint32_t tile_rows, uint32_t tile_cols,
                       uint32_t* chosen_rows, uint32_t* chosen_cols) {
  if (rank <= 1) {
    *chosen_rows = 1;
    *chosen_cols = static_cast<uint32_t>(std::clamp<uint64_t>(view.cols, 1, max_vector_tile_elements(elem_size)));
    return;
  }
  const uint64_t requested = uint64_t(tile_rows) * tile_cols;
  if (view.rows * view.cols <= requested && view.rows <= UINT32_MAX && view.cols <= UINT32_MAX) {
    *chosen_rows = static_cast<uint32_t>(std::max<uint64_t>(view.rows, 1));
    *chosen_cols = static_cast<uint32_t>(std::max<uint64_t>(view.cols, 1));
    return;
  }
  *chosen_rows = tile_rows;
  *chosen_cols = tile_cols;
}

void gather_tile(const uint8_t* matrix, uint64_t cols, uint32_t elem_size, const TileRect& rect, uint8_t* tile) {
  const uint64_t row_bytes = rect.cols * elem_size;
  for (uint64_t r = 0; r < rect.rows; ++r)
    std::memcpy(tile + r * row_bytes, matrix + ((rect.row0 + r) * cols + rect.col0) * elem_size, row_bytes);
}

void scatter_tile(const uint8_t* tile, uint64_t cols, uint32_t elem_size, const TileRect& rect, uint8_t* matrix) {
  const uint64_t row_bytes = rect.cols * elem_size;
  for (uint64_t r = 0; r < rect.rows; ++r)
    std::memcpy(matrix + ((rect.row0 + r) * cols + rect.col0) * elem_size, tile + r * row_bytes, row_bytes);
}

}  // namespace wpack
