// Fuzz surface: the byte filters (packer/filters.h) against their scalar references
// (packer/detail/filters_ref.h), which define the format.
//
// Input: mode byte (bits 0-1: filter none/byteshuffle/bitshuffle/floatplanes; bits 2-3: element
// size 1/2/4/8), then the bytes (cut to whole elements). The fast undo_filter must give the
// reference's bytes, apply_filter likewise, and undo(apply(x)) == x. A combination the filter does
// not take (floatplanes on 1-byte elements) must be refused with an Error by all of them.
#include <algorithm>
#include <vector>

#include "formats/error.h"
#include "fuzz/harness.h"
#include "packer/detail/filters_ref.h"
#include "packer/filters.h"

namespace wpack::fuzz {
namespace {

constexpr uint32_t kElemSizes[4] = {1, 2, 4, 8};

// Runs `fn` into a fresh buffer; false when it threw an Error.
template <typename Fn>
bool run_into(std::vector<uint8_t>& out, size_t size, Fn&& fn) {
  out.assign(size, 0x5A);
  try {
    fn(out);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void filters(Bytes data) {
  Input in(data);
  const uint8_t mode = in.u8();
  const auto filter = static_cast<Filter>(mode & 3);
  const uint32_t elem_size = kElemSizes[(mode >> 2) & 3];
  Bytes bytes = in.rest();
  bytes = bytes.first(bytes.size() / elem_size * elem_size);

  std::vector<uint8_t> fast, ref;
  const bool undo_ok = run_into(fast, bytes.size(), [&](std::span<uint8_t> o) { undo_filter(filter, elem_size, bytes, o); });
  const bool undo_ref_ok =
      run_into(ref, bytes.size(), [&](std::span<uint8_t> o) { ref::undo_filter_ref(filter, elem_size, bytes, o); });
  if (undo_ok != undo_ref_ok) fail("filters", "undo_filter and undo_filter_ref disagree on refusing the input");
  if (undo_ok && fast != ref) fail("filters", "undo_filter differs from undo_filter_ref");

  const bool apply_ok = run_into(fast, bytes.size(), [&](std::span<uint8_t> o) { apply_filter(filter, elem_size, bytes, o); });
  const bool apply_ref_ok =
      run_into(ref, bytes.size(), [&](std::span<uint8_t> o) { ref::apply_filter_ref(filter, elem_size, bytes, o); });
  if (apply_ok != apply_ref_ok) fail("filters", "apply_filter and apply_filter_ref disagree on refusing the input");
  if (apply_ok != undo_ok) fail("filters", "apply_filter and undo_filter disagree on refusing the input");
  if (!apply_ok) return;
  if (fast != ref) fail("filters", "apply_filter differs from apply_filter_ref");

  std::vector<uint8_t> back(bytes.size());
  undo_filter(filter, elem_size, fast, back);
  if (!std::equal(back.begin(), back.end(), bytes.begin(), bytes.end())) fail("filters", "undo(apply(x)) != x");
}

}  // namespace wpack::fuzz
