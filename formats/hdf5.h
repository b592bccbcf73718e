// HDF5 weight reader (libhdf5, read-only).
//
// Layouts, tried in this order:
//  1. Keras legacy `.h5` (TF/Keras 2 `save_weights` / `model.save`): weights under `model_weights`
//     (or the root for a weights-only file), layer order from the attribute `layer_names` or its
//     split form `layer_names0, layer_names1, ...` (the root's attribute wins, as in Keras); each
//     layer group lists its datasets in the attribute `weight_names` (same split convention; absent
//     or empty = a layer without weights). Weight names may contain '/' and end in ':0'; the dataset
//     path is relative to the layer group. Tensor name: the weight name without a trailing ":0",
//     prefixed with "<layer>/" unless it already starts with "<layer>/":
//       layer "dense",     weight "dense/kernel:0" -> "dense/kernel"
//       layer "sub_model", weight "inner/kernel:0" -> "sub_model/inner/kernel"
//       layer "bn",        weight "gamma:0"        -> "bn/gamma"
//     Only the layers in layer_names are read, so `optimizer_weights` never appears; then the
//     group `top_level_model_weights` beside them (the model's own variables, which belong to no
//     layer; Keras' legacy writer always makes it), read as a layer of that name:
//       weight "logit_scale:0" -> "top_level_model_weights/logit_scale"
//  2. Keras 3 `.weights.h5` (a root group `layers` or `vars`, no layer_names): every dataset below
//     the root except the top-level `optimizer` group, depth first; all-digit names in numeric order
//     (vars/2 before vars/10), other names in byte order. Tensor name: the path without the leading
//     '/' and without a leading "layers/", e.g. "dense/vars/0", "functional/layers/dense/vars/0".
//  3. Any other HDF5 file: every dataset of a numeric type, depth first, names in byte order;
//     tensor name = dataset path without the leading '/'. Datasets of non-numeric classes (strings,
//     compounds, non-boolean enums, ...) and with a null dataspace are skipped (TensorSource::skipped()
//     names them).
// In layouts 2 and 3, soft and external links are not followed and a dataset reached under a second
// name (another hard link) is given once, under the first name met; skipped() names both. A group
// reached twice is walked once.
// Dataset types map to the safetensors dtypes: IEEE 754 half/single/double -> F16/F32/F64,
// bfloat16 -> BF16, FP8 E4M3/E5M2 -> F8_E4M3/F8_E5M2 (the layouts HDF5 2.0 predefines as
// H5T_FLOAT_BFLOAT16LE/BE, H5T_FLOAT_F8E4M3, H5T_FLOAT_F8E5M2; bytes kept exactly, NaN payloads
// included; any other float layout, e.g. a 16-bit float with 6 exponent bits, is refused rather
// than converted; and Keras 3's bfloat16 variables, a 2-byte opaque type that h5py stores for
// ml_dtypes' bfloat16, tagged with the string attribute dtype = "bfloat16", bytes as stored), signed/unsigned integers of 1/2/4/8 bytes -> I8..I64/U8..U64, h5py's boolean (an
// enum of a one-byte integer with FALSE = 0, TRUE = 1) -> BOOL (a stored byte other than 0/1 is
// Error(kCorrupt) on read). Bytes are converted to little-endian by libhdf5 (big-endian files read
// correctly). 0-d datasets have an empty shape; empty datasets read as zero bytes.
//
// Errors (wpack::Error, message names the file and the dataset/attribute/layer):
//  kIo           the file cannot be opened; an allocation for a read fails
//  kFormat       not an HDF5 file; layer_names/weight_names name a missing or wrong-kind object, or
//                are not string lists, or hold a NUL byte inside a NUL-padded entry; two datasets
//                map to one tensor name; size overflow
//  kUnsupported  a dataset named by a Keras layout (or a numeric dataset in a generic file) whose
//                type is not listed above; a tensor over 64 GiB; raw data in external files or a
//                virtual dataset (never followed, nor are external links, also on the way to a
//                named weight); groups nested more than 256 deep; a dataset stored in more than
//                max(2^20, bytes / 64) chunks (at most 2^24: libhdf5 spends microseconds on each,
//                written or not); a filter this libhdf5 lacks (e.g. h5py's LZF plugin, 32000)
//  kCorrupt      contiguous storage that does not match the declared size; a read that fails; a
//                dataset that, opened again to be read, is not the one listed
// Keras legacy weight and layer names are paths relative to their group, except that a name
// starting with '/' is absolute (as in h5py); a tensor is read from the object its names opened.
//  kInvalidArgument  read() with an index out of range
//
// Reading: the file stays open (H5F_ACC_RDONLY) for the source's lifetime; read(i) opens the
// dataset and returns its bytes as an owned buffer, so peak memory is one tensor. metadata() is
// empty. libhdf5 is not thread-safe as built by Debian: every HDF5 call of this reader holds one
// process-wide mutex, so concurrent read() calls are safe but serialized. HDF5's automatic error
// printing is switched off (H5Eset_auto2) for the calling thread.
#pragma once

#include <memory>
#include <string>

#include "formats/tensor.h"

namespace wpack {

// Opens `path` read-only and lists its tensors (no tensor data is read). Throws Error as above.
std::unique_ptr<TensorSource> open_hdf5(const std::string& path);

}  // namespace wpack
