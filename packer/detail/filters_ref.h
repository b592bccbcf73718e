// Scalar reference implementations of the filters in packer/filters.h.
//
// These are the executable definition of each filter's byte layout: plain per-bit and per-byte
// loops with no tricks, slow on purpose. The fast paths in packer/filters.cpp are tested against
// them bit-exactly (tests/test_filters.cpp); a change here is a format change (docs/FORMAT.md).
//
// Same contract as apply_filter/undo_filter: `in` and `out` are host memory of the same size, a
// multiple of elem_size (1, 2, 4 or 8; kFloatPlanes: 2, 4 or 8), and do not overlap. Throws
// Error(kInvalidArgument) otherwise.
#pragma once

#include <cstdint>
#include <span>

#include "packer/filters.h"

namespace wpack::ref {

void apply_filter_ref(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out);
void undo_filter_ref(Filter filter, uint32_t elem_size, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace wpack::ref
