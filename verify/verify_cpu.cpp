#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>  // std::bad_alloc
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "formats/error.h"
#include "packer/quantize.h"
#include "packer/tiling.h"
#include "packer/unpack.h"
#include "verify/verify.h"

namespace wpack {

bool VerifyReport::ok() const {
  if (!errors.empty()) return false;
  for (const auto& t : tensors)
    if (!t.error.empty()) return false;
  return true;
}

namespace {

// The error for a tensor whose decoded form does not fit in memory: a file of a few MB can declare a
// tensor of any size (constant tiles code 2^24 elements in a few bytes), which the GPU verify's hook
// takes whole.
Error out_of_memory(const WpkReader& reader, const WpkTensor& wt, uint64_t bytes) {
  return Error(ErrorCode::kIo, reader.path() + ": tensor '" + wt.name + "': out of memory for its " +
                                   std::to_string(bytes) + " decoded bytes");
}

// The source's tensor of wt's name (at `index`), as bytes, when there is one of wt's dtype and
// shape and it can be read (an HDF5 dataset may fail to decompress); else nullopt with `why`: that
// tensor fails, the others are still checked.
std::optional<TensorBytes> source_bytes(const WpkReader& reader, const WpkTensor& wt, const TensorSource& against,
                                        std::optional<size_t> index, std::string& why) {
  if (!index) {
    why = reader.path() + ": tensor '" + wt.name + "' is not in " + against.path();
    return std::nullopt;
  }
  const TensorInfo& src = against.tensors()[*index];
  if (src.dtype != wt.dtype || src.shape != wt.shape) {
    why = reader.path() + ": tensor '" + wt.name + "': " + std::string(dtype_name(wt.dtype)) +
          shape_to_string(wt.shape) + " but the source has " + std::string(dtype_name(src.dtype)) +
          shape_to_string(src.shape);
    return std::nullopt;
  }
  try {
    return against.read(*index);
  } catch (const Error& e) {
    why = e.what();
    return std::nullopt;
  }
}

// Tensor t decoded a block of tile rows at a time (packer/unpack.h stream_tensor_blocks) as
// `out_dtype` bytes, each block handed to on_block(first element, bytes); with `keep`, the whole
// decode is also kept there (the hook's). Memory: a block (and `keep`), not the tensor. A failed
// decode sets check.error and, with `decode_error`, keeps the Error. Returns whether it decoded.
bool decode_blocks(const WpkReader& reader, size_t t, DType out_dtype, int threads, std::vector<uint8_t>* keep,
                   TensorCheck& check, std::optional<Error>* decode_error,
                   const std::function<void(uint64_t, std::span<const uint8_t>)>& on_block) {
  const WpkTensor& wt = reader.tensors()[t];
  const uint32_t esize = dtype_size(out_dtype);
  try {
    if (keep) keep->assign(wt.num_elements() * esize, 0);
    stream_tensor_blocks(reader, t, out_dtype, threads, [&](uint64_t first, std::span<const uint8_t> bytes) {
      if (keep) std::memcpy(keep->data() + first * esize, bytes.data(), bytes.size());
      on_block(first, bytes);
    });
    check.decoded = true;
  } catch (const Error& e) {
    check.error = e.what();
    if (decode_error) decode_error->emplace(e);
  } catch (const std::bad_alloc&) {
    if (keep) *keep = {};
    const Error e = out_of_memory(reader, wt, wt.num_elements() * esize);
    check.error = e.what();
    if (decode_error) decode_error->emplace(e);
  }
  return check.decoded;
}

// A lossy tensor: decode every tile to float (with `keep`, into it: num_elements floats as bytes);
// with a source, compare relative errors. A failed decode sets check.error and, with
// `decode_error`, keeps the Error.
void verify_lossy(const WpkReader& reader, size_t t, const TensorSource* against, std::optional<size_t> source_index,
                  int threads, double max_rel_error, std::vector<uint8_t>* keep, TensorCheck& check,
                  std::optional<Error>* decode_error) {
  const WpkTensor& wt = reader.tensors()[t];
  check.lossy = true;
  check.recorded_rel_error = wt.metrics.rel_error;
  // rel_error (against the source, or as recorded at compress time) beyond --max-error
  const auto check_max_error = [&](double rel_error, const char* recorded) {
    if (rel_error <= max_rel_error) return;  // (NaN is beyond it)
    char buf[200];
    std::snprintf(buf, sizeof buf, ": rel_error %.6g%s exceeds --max-error %.6g", rel_error, recorded, max_rel_error);
    check.error = reader.path() + ": tensor '" + wt.name + "'" + buf;
  };
  std::string no_source;  // why the source cannot be compared (reported after the decode's own errors)
  const std::optional<TensorBytes> source =
      against ? source_bytes(reader, wt, *against, source_index, no_source) : std::nullopt;
  // The error sums block by block, in index order: error_stats over the whole tensor, bit for bit.
  ErrorAccumulator sums;
  std::vector<float> ref;
  uint64_t non_finite = UINT64_MAX;  // the source's first value that is not finite
  const uint32_t esize = dtype_size(wt.dtype);
  const bool decoded =
      decode_blocks(reader, t, DType::F32, threads, keep, check, decode_error, [&](uint64_t first, std::span<const uint8_t> bytes) {
        if (!source || non_finite != UINT64_MAX) return;
        const uint64_t n = bytes.size() / 4;
        ref.resize(n);
        convert_to_f32(wt.dtype, source->data() + first * esize, n, ref.data());
        source->release(first * esize, n * esize);
        const auto bad = std::find_if(ref.begin(), ref.end(), [](float v) { return !std::isfinite(v); });
        if (bad != ref.end()) {
          non_finite = first + static_cast<uint64_t>(bad - ref.begin());
          return;
        }
        sums.add(ref.data(), reinterpret_cast<const float*>(bytes.data()), n);  // F32 bytes, 4-aligned
      });
  if (!decoded) return;
  if (!against) {  // the error recorded at compress time, against the source it was packed from
    check_max_error(wt.metrics.rel_error, " (recorded at compress time)");
    return;
  }
  if (!source) {
    check.error = no_source;
    return;
  }
  // compress refuses a lossy tensor that is not finite, so such a source is not this file's (and
  // its rel_error would read nan).
  if (non_finite != UINT64_MAX) {
    const uint64_t cols = std::max<uint64_t>(wt.cols(), 1);
    check.error = reader.path() + ": tensor '" + wt.name + "': " + against->path() + " holds a value that is not finite at row " +
                  std::to_string(non_finite / cols) + ", col " + std::to_string(non_finite % cols) +
                  ": not the source it was packed from";
    return;
  }
  const ErrorStats stats = sums.stats();
  check.compared = true;
  check.rel_error = stats.rel_error;
  // The packer recorded this very figure against its source (the same decode, the same sums up to
  // their order): a source changed toward the decoded values (zeros where pruning put zeros) gives
  // less, one changed away from them more; either is not the source this file was packed from.
  const double recorded = wt.metrics.rel_error;
  char buf[300];
  if (!(stats.rel_error <= recorded * (1 + kLossyRelTolerance))) {
    std::snprintf(buf, sizeof buf, ": rel_error %.9g against %s exceeds the %.9g recorded at compress time",
                  stats.rel_error, against->path().c_str(), recorded);
    check.error = reader.path() + ": tensor '" + wt.name + "'" + buf;
  } else if (!(stats.rel_error >= recorded * (1 - kLossyRelTolerance))) {
    std::snprintf(buf, sizeof buf,
                  ": rel_error %.9g against %s is below the %.9g recorded at compress time: not the source it was "
                  "packed from",
                  stats.rel_error, against->path().c_str(), recorded);
    check.error = reader.path() + ": tensor '" + wt.name + "'" + buf;
  } else {
    check_max_error(stats.rel_error, "");
  }
}

// A lossless tensor: decode every tile (with `keep`, into it) and, with a source, compare the bytes.
void verify_lossless(const WpkReader& reader, size_t t, const TensorSource* against, std::optional<size_t> source_index,
                     int threads, std::vector<uint8_t>* keep, TensorCheck& check, std::optional<Error>* decode_error) {
  const WpkTensor& wt = reader.tensors()[t];
  std::string no_source;
  const std::optional<TensorBytes> source =
      against ? source_bytes(reader, wt, *against, source_index, no_source) : std::nullopt;
  const uint32_t esize = dtype_size(wt.dtype);
  uint64_t first_bad_element = UINT64_MAX, mismatched = 0;
  const bool decoded =
      decode_blocks(reader, t, wt.dtype, threads, keep, check, decode_error, [&](uint64_t first, std::span<const uint8_t> bytes) {
        if (!source) return;
        const uint8_t* src = source->data() + first * esize;
        if (std::memcmp(bytes.data(), src, bytes.size()) != 0)
          for (uint64_t i = 0; i < bytes.size() / esize; ++i)
            if (std::memcmp(bytes.data() + i * esize, src + i * esize, esize) != 0) {
              first_bad_element = std::min(first_bad_element, first + i);
              ++mismatched;
            }
        source->release(first * esize, bytes.size());
      });
  if (!decoded || !against) return;
  if (!source) {
    check.error = no_source;
    return;
  }
  check.compared = true;
  check.mismatched_elements = mismatched;
  check.bit_exact = mismatched == 0;
  if (!check.bit_exact) {
    const TileGeometry g = tile_geometry(wt.view(), wt.tile_rows, wt.tile_cols);
    const uint64_t row = first_bad_element / g.cols, col = first_bad_element % g.cols;
    check.first_bad_tile = (row / g.tile_rows) * g.grid_cols + col / g.tile_cols;
    check.error = tile_context(reader, t, check.first_bad_tile) + ": " + std::to_string(mismatched) +
                  " elements differ from " + against->path() + " (first at row " + std::to_string(row) + ", col " +
                  std::to_string(col) + ")";
  }
}

}  // namespace

std::vector<BadChecksum> bad_checksums(const WpkReader& reader, int threads) {
  const int64_t tiles = static_cast<int64_t>(reader.tiles().size());
  std::vector<uint8_t> ok(static_cast<size_t>(tiles), 1);
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
  for (int64_t i = 0; i < tiles; ++i) ok[static_cast<size_t>(i)] = reader.tile_checksum_ok(static_cast<uint64_t>(i));
  std::vector<BadChecksum> bad;
  for (size_t t = 0; t < reader.tensors().size(); ++t) {
    const WpkTensor& wt = reader.tensors()[t];
    for (uint64_t k = 0; k < wt.tile_count; ++k)
      if (!ok[wt.first_tile + k]) {
        bad.push_back({t, k});
        break;
      }
  }
  return bad;
}

VerifyReport verify_cpu(const WpkReader& reader, const TensorSource* against, int threads, double max_rel_error,
                        const TensorDecodedHook& on_decoded) {
  VerifyReport report;
  std::unordered_map<std::string, size_t> source_index;
  if (against)
    for (size_t i = 0; i < against->tensors().size(); ++i) source_index[against->tensors()[i].name] = i;

  // Without a hook a tensor is never held whole: its decode and its source go a block at a time.
  std::vector<uint8_t> decoded;
  std::vector<uint8_t>* keep = on_decoded ? &decoded : nullptr;
  for (size_t t = 0; t < reader.tensors().size(); ++t) {
    const WpkTensor& wt = reader.tensors()[t];
    TensorCheck check;
    check.name = wt.name;
    std::optional<Error> decode_error;  // kept for the hook only
    std::optional<size_t> in_source;    // the source's tensor of this name
    if (against)
      if (auto it = source_index.find(wt.name); it != source_index.end()) in_source = it->second;
    if (wt.scheme != 0)
      verify_lossy(reader, t, against, in_source, threads, max_rel_error, keep, check, on_decoded ? &decode_error : nullptr);
    else
      verify_lossless(reader, t, against, in_source, threads, keep, check, on_decoded ? &decode_error : nullptr);
    report.tiles_checked += wt.tile_count;
    report.tensors.push_back(std::move(check));
    if (on_decoded) {
      DecodedTensor d;
      d.tensor = t;
      if (decode_error) {
        d.error = &*decode_error;
      } else if (wt.scheme != 0) {
        d.values = std::span(reinterpret_cast<const float*>(decoded.data()), decoded.size() / sizeof(float));
      } else {
        d.bytes = decoded;
      }
      on_decoded(d);
    }
    if (wt.scheme != 0) decoded = {};  // a lossy tensor's floats: freed before the next one is decoded
  }
  if (against) {
    std::unordered_set<std::string> packed;
    for (const auto& wt : reader.tensors()) packed.insert(wt.name);
    for (const auto& st : against->tensors())
      if (!packed.count(st.name))
        report.errors.push_back(against->path() + ": tensor '" + st.name + "' is missing from " + reader.path());
  }
  return report;
}

}  // namespace wpack
