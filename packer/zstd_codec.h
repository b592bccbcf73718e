// zstd as a plane codec: one zstd frame per plane, content size recorded in the frame.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace wpack {

// How the match finder is set for a plane.
enum class ZstdTuning {
  kLevel,       // zstd's own parameters for `level`
  kMemoryless,  // for planes close to memoryless (float exponent planes): strategy fast, min match 7,
                // hash log 6. LZ matches there cost more than they save; with the match finder this
                // small zstd codes almost only Huffman literals, near the order-0 entropy, and fast.
};

// Compresses `in` at `level` (1..19; zstd's negative fast levels also accepted) as one frame.
// Deterministic: the same bytes for the same input and level on any thread count (no zstd
// multithreading is used; each call uses its own context).
std::vector<uint8_t> zstd_compress(std::span<const uint8_t> in, int level, ZstdTuning tuning = ZstdTuning::kLevel);

// Decompresses one frame into exactly out.size() bytes. Throws Error(kCorrupt) with a message
// (no file context: the caller adds it) if the frame is malformed, has trailing bytes, or does
// not decompress to exactly out.size() bytes. Never writes outside `out`.
void zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace wpack
