// verify on the CPU: integrity of every byte that is read, decode of every tile, and (optionally)
// comparison of the decoded tensors with the source model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "formats/error.h"  // Error (DecodedTensor::error)
#include "formats/tensor.h"
#include "formats/wpk.h"

namespace wpack {

struct TensorCheck {
  std::string name;
  bool decoded = false;          // every tile's checksum matched and it decoded
  bool compared = false;         // compared with the --against source's tensor (found, same dtype and shape)
  bool bit_exact = false;        // decoded bytes equal the source bytes (when compared)
  uint64_t mismatched_elements = 0;
  uint64_t first_bad_tile = 0;   // within the tensor, when !decoded or !bit_exact
  bool lossy = false;            // a quantized tensor: compared by relative error, not bytes
  double rel_error = 0;          // lossy and compared: ||decoded - source|| / ||source||
  double recorded_rel_error = 0; // lossy: the rel_error stored at compress time
  std::string error;             // one line, empty when the tensor passed
};

struct VerifyReport {
  std::vector<TensorCheck> tensors;
  std::vector<std::string> errors;  // problems not tied to one packed tensor (missing in source, ...)
  uint64_t tiles_checked = 0;
  bool ok() const;
};

// The CPU reference decode of one tensor, as verify_cpu hands it to its `on_decoded` hook (for the
// GPU checks of verify/verify_gpu.h, which compare against it). Host memory owned by verify_cpu,
// valid only during the call.
struct DecodedTensor {
  size_t tensor = 0;                // index in reader.tensors()
  const Error* error = nullptr;     // non-null: the decode failed (TensorCheck::decoded is false), with
                                    // this Error, as decode_tensor / decode_tensor_f32 threw it (code and
                                    // message); bytes and values are then empty
  std::span<const uint8_t> bytes;   // lossless tensor (scheme 0): its source bytes, num_elements * dtype
                                    // size, as packer/unpack.h decode_tensor gives them; empty when lossy
  std::span<const float> values;    // lossy tensor: its dequantized values, num_elements, as
                                    // decode_tensor_f32 gives them; empty when lossless
};
using TensorDecodedHook = std::function<void(const DecodedTensor&)>;

// Decodes every tile of every tensor (checksums first) and, with `against`, compares each decoded
// tensor with the source tensor of the same name (dtype, shape and bytes; lossless tensors must be
// bit-exact). Lossy tensors are decoded to float and pass when their relative error against the
// source (as float) is the recorded rel_error within a factor 1 -+ kLossyRelTolerance (a source
// that gives less is not the one packed either: e.g. zeroed where pruning put zeros) and at most
// `max_rel_error`; without `against`, when the rel_error recorded at compress time is at most
// `max_rel_error`. Tensors of the source that the .wpk lacks, and the reverse, are reported. Never
// throws for a bad tile or tensor: each problem is recorded and the other tensors still checked.
//
// `on_decoded`, when set, is called once per tensor, in file order, right after that tensor's CPU
// checks (its TensorCheck is final), also for a tensor whose decode failed (DecodedTensor::error
// set), so that a caller can check the tensor further without decoding it again. Only one tensor's
// decode is held at a time. An exception thrown by the hook propagates out of verify_cpu.
inline constexpr double kLossyRelTolerance = 1e-6;
VerifyReport verify_cpu(const WpkReader& reader, const TensorSource* against, int threads,
                        double max_rel_error = std::numeric_limits<double>::infinity(),
                        const TensorDecodedHook& on_decoded = {});

// Integrity first: every tile's checksum (OpenMP over tiles), before any decode. Returns, in file
// order, each tensor that has a tile whose stored bytes do not hash to its record, with the first
// such tile (within the tensor); empty when every tile is intact. `wpack verify --device cuda` runs
// it once the GPU is set up and checks no tensor on it when it finds one (verify_cpu reports them).
struct BadChecksum {
  size_t tensor = 0;
  uint64_t tile = 0;
};
std::vector<BadChecksum> bad_checksums(const WpkReader& reader, int threads);

}  // namespace wpack
