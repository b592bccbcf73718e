// Internal to kernels/ (CUDA only): a BF16 bit pattern as the float it stands for.
#pragma once

#include <cstdint>

namespace wpack::gpu::detail {

// bits: a BF16 in the low 16 bits (the high ones zero). Exact: BF16 is float's upper half.
__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits) { return __uint_as_float(bits << 16); }

}  // namespace wpack::gpu::detail
