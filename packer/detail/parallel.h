// One way to run per-tile work on OpenMP threads with errors that behave like serial code; a
// histogram counted on all threads.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>  // std::forward
#include <vector>

#include "formats/error.h"

namespace wpack::detail {

// Calls body(i, state) for every i in [0, count) on `threads` threads (0: all cores), each thread
// with its own default-constructed `State` (scratch buffers reused across its calls). Exceptions
// cannot leave an OpenMP region, so each is caught; afterwards the one thrown for the lowest index
// is rethrown, keeping its ErrorCode (another exception type becomes kIo with its text). The error
// reported is thus the same for any thread count.
template <typename State, typename Body>
void parallel_for_first_error(uint64_t count, int threads, Body&& body) {
  if (threads <= 0) threads = omp_get_max_threads();
  uint64_t failed_index = UINT64_MAX;
  ErrorCode failed_code = ErrorCode::kIo;
  std::string failed_message;
#pragma omp parallel num_threads(threads)
  {
    State state{};
#pragma omp for schedule(dynamic, 1)
    for (uint64_t i = 0; i < count; ++i) {
      try {
        body(i, state);
      } catch (const std::exception& e) {
        const Error* error = dynamic_cast<const Error*>(&e);
#pragma omp critical(wpack_parallel_for_first_error)
        if (i < failed_index) {
          failed_index = i;
          failed_code = error ? error->code() : ErrorCode::kIo;
          failed_message = e.what();
        }
      }
    }
  }
  if (failed_index != UINT64_MAX) throw Error(failed_code, failed_message);
}

// counts[b] += the number of i in [0, n) with bucket(i) == b, for b < buckets = counts.size()
// (bucket(i) >= buckets: not counted), on OpenMP threads, each with its own counts (buckets * 8
// bytes) added up at the end: integer sums, so the same for any thread count. A thread takes at
// least 2 * buckets values, so the threads' counts never take more than 4 bytes a value.
template <typename Bucket>
void add_parallel_histogram(std::vector<uint64_t>& counts, uint64_t n, Bucket&& bucket) {
  const uint64_t buckets = counts.size();
  const int64_t n_signed = static_cast<int64_t>(n);
  const int threads = static_cast<int>(
      std::clamp<uint64_t>(n / (2 * std::max<uint64_t>(buckets, 1)), 1, static_cast<uint64_t>(omp_get_max_threads())));
#pragma omp parallel num_threads(threads)
  {
    std::vector<uint64_t> mine(buckets, 0);
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n_signed; ++i) {
      const uint64_t b = bucket(static_cast<uint64_t>(i));
      if (b < buckets) ++mine[b];
    }
#pragma omp critical(wpack_parallel_histogram)
    for (uint64_t b = 0; b < buckets; ++b) counts[b] += mine[b];
  }
}

// The histogram of add_parallel_histogram from zero counts.
template <typename Bucket>
std::vector<uint64_t> parallel_histogram(uint64_t n, uint64_t buckets, Bucket&& bucket) {
  std::vector<uint64_t> counts(buckets, 0);
  add_parallel_histogram(counts, n, std::forward<Bucket>(bucket));
  return counts;
}

}  // namespace wpack::detail
