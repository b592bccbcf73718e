#include "packer/exp4.h"

#include <array>
#include <cstring>  // memcpy of the raw planes
#include <string>

#include "formats/detail/le.h"  // load_u32 / store_u32: the header's E and the escape indices
#include "formats/error.h"

namespace wpack {
namespace {

// Header fields (docs/FORMAT.md "Codec 3, exp4").
constexpr uint32_t kBaseOffset = 0;
constexpr uint32_t kEscapeCountOffset = 4;
// Bytes that must be zero: [1, 4) and [8, 16).
constexpr uint32_t kReservedRanges[2][2] = {{1, 4}, {8, 16}};

[[noreturn]] void corrupt(const std::string& what) { throw Error(ErrorCode::kCorrupt, "exp4: " + what); }

// Plane-0 byte histogram of a tile.
std::array<uint64_t, 256> histogram(std::span<const uint8_t> plane0) {
  std::array<uint64_t, 256> hist{};
  for (uint8_t v : plane0) ++hist[v];
  return hist;
}

// The chosen base of `hist` (see exp4_choose_base) and how many elements its window holds.
struct Window {
  uint8_t base = 0;
  uint64_t inside = 0;
};
Window best_window(const std::array<uint64_t, 256>& hist) {
  uint64_t sum = 0;
  for (uint32_t v = 0; v < kExp4Window; ++v) sum += hist[v];
  Window best{0, sum};
  for (uint32_t base = 1; base <= kExp4MaxBase; ++base) {
    sum += hist[base + kExp4Window - 1];
    sum -= hist[base - 1];
    if (sum > best.inside) best = {static_cast<uint8_t>(base), sum};  // strictly more: the smallest base wins ties
  }
  return best;
}

bool in_window(uint8_t value, uint8_t base) { return value >= base && uint32_t{value} - base < kExp4Window; }

// Code of element i in the packed codes (low nibble first).
uint8_t code_at(const uint8_t* codes, uint64_t i) { return (codes[i / 2] >> (4 * (i % 2))) & 0x0F; }

}  // namespace

bool exp4_elem_size_ok(uint32_t elem_size) { return elem_size == 2 || elem_size == 4; }

uint64_t exp4_stored_bytes(uint64_t elements, uint32_t elem_size, uint64_t escapes) {
  if (!exp4_elem_size_ok(elem_size))
    throw Error(ErrorCode::kInvalidArgument, "exp4 takes elements of 2 or 4 bytes, not " + std::to_string(elem_size));
  if (elements > kExp4MaxElements)
    throw Error(ErrorCode::kInvalidArgument, "exp4 tile of " + std::to_string(elements) + " elements (at most 2^32 - 1)");
  if (escapes > elements) throw Error(ErrorCode::kInvalidArgument, "exp4: more escapes than elements");
  // elements < 2^32: no term can overflow.
  return kExp4HeaderBytes + (elem_size - 1) * elements + (elements + 1) / 2 + 5 * escapes;
}

uint8_t exp4_choose_base(std::span<const uint8_t> plane0) { return best_window(histogram(plane0)).base; }

uint64_t exp4_encoded_bytes(std::span<const uint8_t> plane0, uint32_t elem_size) {
  const Window w = best_window(histogram(plane0));
  return exp4_stored_bytes(plane0.size(), elem_size, plane0.size() - w.inside);
}

std::vector<uint8_t> exp4_encode(std::span<const uint8_t> filtered, uint32_t elem_size) {
  if (!exp4_elem_size_ok(elem_size))
    throw Error(ErrorCode::kInvalidArgument, "exp4 takes elements of 2 or 4 bytes, not " + std::to_string(elem_size));
  if (filtered.size() % elem_size != 0)
    throw Error(ErrorCode::kInvalidArgument, "exp4: tile bytes are not a whole number of elements");
  const uint64_t n = filtered.size() / elem_size;
  const std::span<const uint8_t> plane0 = filtered.first(n);
  const Window window = best_window(histogram(plane0));
  const uint8_t base = window.base;
  const uint64_t escapes = n - window.inside;
  std::vector<uint8_t> out(exp4_stored_bytes(n, elem_size, escapes), 0);  // checks elem_size and n

  out[kBaseOffset] = base;
  detail::store_u32(out.data() + kEscapeCountOffset, static_cast<uint32_t>(escapes));
  uint8_t* const other_planes = out.data() + kExp4HeaderBytes;
  if (n) std::memcpy(other_planes, filtered.data() + n, (elem_size - 1) * n);
  uint8_t* const codes = other_planes + (elem_size - 1) * n;
  uint8_t* const indices = codes + (n + 1) / 2;
  uint8_t* const values = indices + 4 * escapes;
  uint64_t j = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t v = plane0[i];
    if (in_window(v, base)) {
      codes[i / 2] |= static_cast<uint8_t>((v - base) << (4 * (i % 2)));
    } else {  // code 0 (already zero), value in the escape lists
      detail::store_u32(indices + 4 * j, static_cast<uint32_t>(i));
      values[j] = v;
      ++j;
    }
  }
  return out;
}

void exp4_check(std::span<const uint8_t> stored, uint32_t elem_size, uint64_t n) {
  if (!exp4_elem_size_ok(elem_size)) corrupt("element size " + std::to_string(elem_size) + " (exp4 takes 2 or 4)");
  if (stored.size() < kExp4HeaderBytes)
    corrupt("stored size " + std::to_string(stored.size()) + " is shorter than the 16-byte header");
  const uint8_t base = stored[kBaseOffset];
  if (base > kExp4MaxBase) corrupt("base " + std::to_string(base) + " is above 240");
  for (const auto& range : kReservedRanges)
    for (uint32_t k = range[0]; k < range[1]; ++k)
      if (stored[k] != 0) corrupt("reserved header byte " + std::to_string(k) + " is not zero");
  const uint64_t escapes = detail::load_u32(stored.data() + kEscapeCountOffset);
  if (escapes > n) corrupt(std::to_string(escapes) + " escapes in a tile of " + std::to_string(n) + " elements");
  if (n > kExp4MaxElements) corrupt("a tile of " + std::to_string(n) + " elements (at most 2^32 - 1)");
  const uint64_t fixed = kExp4HeaderBytes + (elem_size - 1) * n + (n + 1) / 2;  // n < 2^32: no overflow
  const uint64_t expected = fixed + 5 * escapes;                                 // escapes <= n
  if (stored.size() != expected)
    corrupt("stored size " + std::to_string(stored.size()) + " differs from " + std::to_string(expected) + " (" +
            std::to_string(n) + " elements, " + std::to_string(escapes) + " escapes)");
  const uint8_t* const codes = stored.data() + kExp4HeaderBytes + (elem_size - 1) * n;
  const uint8_t* const indices = codes + (n + 1) / 2;
  const uint8_t* const values = indices + 4 * escapes;
  if (n % 2 == 1 && (codes[n / 2] >> 4) != 0) corrupt("the unused last nibble is not zero (odd element count)");
  for (uint64_t j = 0; j < escapes; ++j) {
    const uint64_t index = detail::load_u32(indices + 4 * j);
    const auto escape = [&] { return "escape " + std::to_string(j) + ": "; };
    if (index >= n) corrupt(escape() + "index " + std::to_string(index) + " is not below " + std::to_string(n));
    if (j > 0 && index <= detail::load_u32(indices + 4 * (j - 1)))
      corrupt(escape() + "index " + std::to_string(index) + " does not follow the previous escape's");
    const uint8_t value = values[j];
    if (in_window(value, base))
      corrupt(escape() + "value " + std::to_string(value) + " lies in the window [" + std::to_string(base) + ", " +
              std::to_string(base + kExp4Window - 1) + "]");
    if (code_at(codes, index) != 0) corrupt(escape() + "element " + std::to_string(index) + " has a nonzero code");
  }
}

void exp4_decode(std::span<const uint8_t> stored, uint32_t elem_size, std::span<uint8_t> filtered_out) {
  if (!exp4_elem_size_ok(elem_size)) corrupt("element size " + std::to_string(elem_size) + " (exp4 takes 2 or 4)");
  if (filtered_out.size() % elem_size != 0) corrupt("raw size is not a whole number of elements");
  const uint64_t n = filtered_out.size() / elem_size;
  exp4_check(stored, elem_size, n);
  const uint8_t base = stored[kBaseOffset];
  const uint64_t escapes = detail::load_u32(stored.data() + kEscapeCountOffset);
  const uint8_t* const other_planes = stored.data() + kExp4HeaderBytes;
  const uint8_t* const codes = other_planes + (elem_size - 1) * n;
  const uint8_t* const indices = codes + (n + 1) / 2;
  const uint8_t* const values = indices + 4 * escapes;
  uint8_t* const plane0 = filtered_out.data();
  for (uint64_t i = 0; i < n; ++i) plane0[i] = static_cast<uint8_t>(base + code_at(codes, i));
  if (n) std::memcpy(filtered_out.data() + n, other_planes, (elem_size - 1) * n);
  for (uint64_t j = 0; j < escapes; ++j) plane0[detail::load_u32(indices + 4 * j)] = values[j];
}

}  // namespace wpack
