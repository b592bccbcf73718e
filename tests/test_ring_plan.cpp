// The bulk-copy GEMV's ring depth (kernels/detail/ring_plan.h): the rules that keep its consumer
// units from racing, checked on the CPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>

#include "kernels/detail/ring_plan.h"

using wpack::gpu::detail::ring_stages;

namespace {
constexpr uint32_t kMaxStages = wpack::gpu::detail::kMaxRingStages;  // the GEMV's
}

TEST_CASE("ring plan: a multiple of the units, at least 2, at most the maximum, within the budget when it can be") {
  for (uint32_t units : {1u, 2u, 4u}) {
    for (uint32_t stage : {2304u, 6912u, 8960u, 13056u, 16768u, 33280u}) {
      for (uint32_t budget = 0; budget <= (240u << 10); budget += 1000) {
        for (uint32_t wanted : {0u, 1u, 3u, 7u, 40u}) {
          const uint32_t s = ring_stages(budget, stage, units, kMaxStages, wanted);
          INFO("units " << units << ", stage " << stage << " B, budget " << budget << " B, wanted " << wanted);
          REQUIRE(s % units == 0);
          REQUIRE(s >= std::max(2u, units));
          REQUIRE(s <= kMaxStages);
          const uint32_t asked = wanted ? wanted : budget / stage;
          if (asked >= units && asked >= 2) REQUIRE(s <= asked);      // never more than asked for...
          if (asked >= units && asked <= kMaxStages) REQUIRE(s > asked - units);  // ...nor fewer than needed
          // Consumer unit u takes tiles u, u + units, ...: tile i's stage was last used by tile
          // i - s, which must be the same unit's (so the unit waited on that copy already).
          for (uint32_t i = s; i < 3 * s + 5; ++i) REQUIRE((i - s) % units == i % units);
        }
      }
    }
  }
}

TEST_CASE("ring plan: the int4 batch-1 plan of 128x128 tiles") {
  // stage = 8704 bytes of tile (8584 stored, to 16 and then 128) + 256 bytes of x; 110 KiB budget
  REQUIRE(ring_stages(110u << 10, 8960, 4, kMaxStages) == 12);
  // 100 KiB gave 11 stages for 4 units: a multiple of 4 below that
  REQUIRE(ring_stages(100u << 10, 8960, 4, kMaxStages) == 8);
  REQUIRE(ring_stages(100u << 10, 8960, 1, kMaxStages) == 11);
  // int4 batch 16 (one unit, 3 blocks of about 73 KiB): 5 stages of 13056 bytes
  REQUIRE(ring_stages((220u << 10) / 3, 13056, 1, kMaxStages) == 5);
}
