// Internal to kernels/: the ring depth of the bulk-copy GEMV (kernels/quant_gemv_tma.cu), a plain
// function so that CPU tests can check its rules (tests/test_ring_plan.cpp).
#pragma once

#include <cstdint>

namespace wpack::gpu::detail {

// The most stages a ring holds (the kernel's header has a barrier pair and a geometry record each).
inline constexpr uint32_t kMaxRingStages = 32;

// The ring's shared memory per multiprocessor, shared by its blocks (the opt-in limit is 228 KiB
// per multiprocessor, 1 KiB of it reserved per block): well over the bytes in flight that HBM
// latency needs.
inline constexpr uint32_t kRingBytesPerSm = 220u << 10;

// Stages of stage_bytes each that fit in ring_budget bytes, at least 2 and at most max_stages, then
// rounded down to a multiple of `units` (the tiles a block's consumer warps hold at once; at least
// `units` stages even over the budget, and the caller's occupancy check then says whether the
// plan fits). Consumer unit u takes the block's tiles u, u + units, ...; with a multiple of
// `units` the previous use of every stage was the same unit's, so the barrier phase it waits past
// has completed. Otherwise a unit could wait on a stage whose previous copy has not landed, and a
// parity wait on a barrier one phase behind passes (the preceding phase has the parity waited
// for). stages_wanted != 0 replaces the budget's count. units and max_stages >= 1, units <=
// max_stages.
constexpr uint32_t ring_stages(uint32_t ring_budget, uint32_t stage_bytes, uint32_t units, uint32_t max_stages,
                               uint32_t stages_wanted = 0) {
  uint32_t stages = stages_wanted ? stages_wanted : ring_budget / stage_bytes;
  stages = stages < 2 ? 2 : stages > max_stages ? max_stages : stages;
  return stages >= units ? stages / units * units : units;
}

}  // namespace wpack::gpu::detail
