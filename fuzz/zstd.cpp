// Fuzz surface: the zstd plane codec wrapper (packer/zstd_codec.h).
//
// Input: mode byte, then
//   mode bit 0 = 0, decode: bit 1 picks the output size: 0 = the frame's own content size (when
//                the frame header states one), 1 = a u32 from the input (mod kMaxDecodeBytes + 1);
//                the rest is the frame. zstd_decompress must fill exactly that many bytes or throw.
//   mode bit 0 = 1, round trip: a level byte, then the rest is a plane; compressing it and
//                decompressing the result must give it back.
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "formats/error.h"
#include "fuzz/harness.h"
#include "packer/zstd_codec.h"

namespace wpack::fuzz {

void zstd(Bytes data) {
  Input in(data);
  const uint8_t mode = in.u8();
  if ((mode & 1) == 0) {
    uint64_t out_size = (mode & 2) ? in.u32() % (kMaxDecodeBytes + 1) : 0;
    const Bytes frame = in.rest();
    if ((mode & 2) == 0) {
      const unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
      if (content != ZSTD_CONTENTSIZE_ERROR && content != ZSTD_CONTENTSIZE_UNKNOWN)
        out_size = std::min<uint64_t>(content, kMaxDecodeBytes);
    }
    std::vector<uint8_t> out(out_size);
    try {
      zstd_decompress(frame, out);
    } catch (const Error&) {
    }
    return;
  }

  // Round trip. Levels 1..9 and zstd's fast levels; higher levels only cost time here.
  const int level = static_cast<int>(in.u8() % 14) - 4;
  const ZstdTuning tuning = (mode & 2) ? ZstdTuning::kMemoryless : ZstdTuning::kLevel;
  const Bytes plane = in.rest();
  const std::vector<uint8_t> frame = zstd_compress(plane, level == 0 ? 1 : level, tuning);
  std::vector<uint8_t> back(plane.size());
  zstd_decompress(frame, back);
  if (!plane.empty() && std::memcmp(back.data(), plane.data(), plane.size()) != 0)
    fail("zstd", "round trip changed the plane");
  // One byte short must be refused, never written past.
  if (!plane.empty()) {
    std::vector<uint8_t> shorter(plane.size() - 1);
    try {
      zstd_decompress(frame, shorter);
      fail("zstd", "decompressing into a buffer one byte short did not throw");
    } catch (const Error&) {
    }
  }
}

}  // namespace wpack::fuzz
