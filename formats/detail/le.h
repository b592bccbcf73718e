// Little-endian encoding of on-disk fields, and a bounds-checked cursor over untrusted bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "formats/error.h"

namespace wpack::detail {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "wpack assumes a little-endian host");

inline void put_u8(std::vector<uint8_t>& out, uint8_t v) { out.push_back(v); }
inline void put_u16(std::vector<uint8_t>& out, uint16_t v) { out.insert(out.end(), {uint8_t(v), uint8_t(v >> 8)}); }
inline void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
inline void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
inline void put_f64(std::vector<uint8_t>& out, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  put_u64(out, bits);
}
inline void put_bytes(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

inline uint32_t load_u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t load_u64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
inline void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void store_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// Reads fields from untrusted bytes; every read is checked against the end, and a short read
// throws Error(kFormat) with "<context>: truncated <what>".
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, std::string context) : bytes_(bytes), context_(std::move(context)) {}

  uint8_t u8(const char* what) { return *take(1, what); }
  uint16_t u16(const char* what) { const uint8_t* p = take(2, what); return uint16_t(p[0] | (p[1] << 8)); }
  uint32_t u32(const char* what) { return load_u32(take(4, what)); }
  uint64_t u64(const char* what) { return load_u64(take(8, what)); }
  double f64(const char* what) { double v; std::memcpy(&v, take(8, what), 8); return v; }
  std::span<const uint8_t> bytes(uint64_t n, const char* what) { return {take(n, what), static_cast<size_t>(n)}; }
  uint64_t remaining() const { return bytes_.size() - pos_; }
  uint64_t position() const { return pos_; }

 private:
  const uint8_t* take(uint64_t n, const char* what) {
    if (n > remaining()) throw Error(ErrorCode::kFormat, context_ + ": truncated " + what);
    const uint8_t* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::span<const uint8_t> bytes_;
  std::string context_;
  uint64_t pos_ = 0;
};

}  // namespace wpack::detail
