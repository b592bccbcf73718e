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

TileGeometry tile_geometry(const std::vector<uint64_t>& shape, uint32_t tile_rows, uint32_t tile_cols) {
  TileGeometry g;
  g.cols = shape.empty() ? 1 : shape.back();
  g.rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) g.rows *= shape[i];
  g.tile_rows = tile_rows;
  g.tile_cols = tile_cols;
  if (g.rows != 0 && g.cols != 0) {
    g.grid_rows = ceil_div(g.rows, tile_rows);
    g.grid_cols = ceil_div(g.cols, tile_cols);
  }
  return g;
}

void choose_tile_shape(const std::vector<uint64_t>& shape, uint32_t elem_size, uint32_t tile_rows, uint32_t tile_cols,
                       uint32_t* chosen_rows, uint32_t* chosen_cols) {
  TileGeometry g = tile_geometry(shape, 1, 1);
  if (shape.size() <= 1) {
    *chosen_rows = 1;
    *chosen_cols = static_cast<uint32_t>(std::clamp<uint64_t>(g.cols, 1, max_vector_tile_elements(elem_size)));
    return;
  }
  const uint64_t requested = uint64_t(tile_rows) * tile_cols;
  if (g.rows * g.cols <= requested && g.rows <= UINT32_MAX && g.cols <= UINT32_MAX) {
    *chosen_rows = static_cast<uint32_t>(std::max<uint64_t>(g.rows, 1));
    *chosen_cols = static_cast<uint32_t>(std::max<uint64_t>(g.cols, 1));
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
