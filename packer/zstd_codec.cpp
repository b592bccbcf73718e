// zstd as a plane codec; see packer/zstd_codec.h.
#include "packer/zstd_codec.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_literalCompressionMode (experimental; Debian 12: libzstd 1.5.4)
#include <zstd.h>  // libzstd (Debian libzstd-dev): ZSTD_compressCCtx, ZSTD_decompressDCtx, frame queries

#include <memory>
#include <string>

#include "formats/error.h"

namespace wpack {
namespace {

// The highest level the header promises; 20..22 ("ultra") need large windows a decoder may refuse.
constexpr int kMaxLevel = 19;

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* cctx) const { ZSTD_freeCCtx(cctx); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* dctx) const { ZSTD_freeDCtx(dctx); }
};

// One context per thread, reused across calls to avoid reallocating zstd's tables per plane.
// ZSTD_compressCCtx resets every parameter from `level` on each call, so reuse does not change the
// output: the bytes depend only on the input and the level.
ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  if (!cctx) throw Error(ErrorCode::kIo, "zstd: cannot allocate a compression context");
  return cctx.get();
}
ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) throw Error(ErrorCode::kIo, "zstd: cannot allocate a decompression context");
  return dctx.get();
}

[[noreturn]] void throw_corrupt(const std::string& what) { throw Error(ErrorCode::kCorrupt, "zstd: " + what); }

}  // namespace

std::vector<uint8_t> zstd_compress(std::span<const uint8_t> in, int level, ZstdTuning tuning) {
  if (level == 0 || level > kMaxLevel || level < ZSTD_minCLevel())
    throw Error(ErrorCode::kInvalidArgument, "zstd: level " + std::to_string(level) + " is not in 1.." +
                                                 std::to_string(kMaxLevel) + " or a negative fast level down to " +
                                                 std::to_string(ZSTD_minCLevel()));
  const size_t bound = ZSTD_compressBound(in.size());
  if (ZSTD_isError(bound))
    throw Error(ErrorCode::kInvalidArgument, "zstd: input of " + std::to_string(in.size()) + " bytes is too large");
  std::vector<uint8_t> out(bound);
  size_t written;
  if (tuning == ZstdTuning::kLevel) {
    written = ZSTD_compressCCtx(thread_cctx(), out.data(), out.size(), in.data(), in.size(), level);
  } else {
    // Every parameter is reset and set again, so the bytes depend only on input and level.
    ZSTD_CCtx* cctx = thread_cctx();
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, ZSTD_fast);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 7);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, 6);
    // Literals always Huffman-coded: the fast strategy takes the level's targetLength as a step
    // between match searches (every level but 1..3, negative ones included, has one), and with a
    // step zstd's automatic mode leaves literals raw: those levels stored these planes uncoded.
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
    written = ZSTD_compress2(cctx, out.data(), out.size(), in.data(), in.size());
  }
  // With a destination of ZSTD_compressBound bytes this cannot fail short of a zstd bug.
  if (ZSTD_isError(written))
    throw Error(ErrorCode::kIo, std::string("zstd: compression failed: ") + ZSTD_getErrorName(written));
  out.resize(written);
  return out;
}

void zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  // Checked in this order, each with its own message: a real zstd frame (not a skippable one,
  // which would otherwise read as an empty plane), its recorded content size, its extent (exactly
  // the whole input), then the decode itself.
  if (in.size() < 4) throw_corrupt("frame of " + std::to_string(in.size()) + " bytes is truncated");
  const uint32_t magic = uint32_t{in[0]} | (uint32_t{in[1]} << 8) | (uint32_t{in[2]} << 16) | (uint32_t{in[3]} << 24);
  if (magic != ZSTD_MAGICNUMBER) throw_corrupt("not a zstd frame (bad magic number)");

  const unsigned long long content_size = ZSTD_getFrameContentSize(in.data(), in.size());
  if (content_size == ZSTD_CONTENTSIZE_ERROR) throw_corrupt("frame header is malformed or truncated");
  if (content_size == ZSTD_CONTENTSIZE_UNKNOWN) throw_corrupt("frame does not record its content size");
  if (content_size != out.size())
    throw_corrupt("frame holds " + std::to_string(content_size) + " bytes, expected " + std::to_string(out.size()));

  const size_t frame_size = ZSTD_findFrameCompressedSize(in.data(), in.size());
  if (ZSTD_isError(frame_size)) throw_corrupt(ZSTD_getErrorName(frame_size));
  if (frame_size != in.size())
    throw_corrupt(std::to_string(in.size() - frame_size) + " trailing bytes after the frame");

  // zstd never writes past its dstCapacity, and may be handed a null pointer when it is 0; a
  // non-null dummy keeps empty spans from depending on that.
  uint8_t empty_dst = 0;
  uint8_t* dst = out.empty() ? &empty_dst : out.data();
  const size_t decoded = ZSTD_decompressDCtx(thread_dctx(), dst, out.size(), in.data(), in.size());
  if (ZSTD_isError(decoded)) throw_corrupt(ZSTD_getErrorName(decoded));
  if (decoded != out.size())
    throw_corrupt("frame decoded to " + std::to_string(decoded) + " bytes, expected " + std::to_string(out.size()));
}

}  // namespace wpack
