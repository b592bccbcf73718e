// HDF5 weight reader (libhdf5, read-only).
//
// Layouts, tried in this order:
//  1. Keras legacy `.h5` (TF/Keras 2 `save_weights` / `model.save`): weights under `model_weights`
//     (or the root for a weights-only file), layer order from the attribute `layer_names` or its
//     split form `layer_names0, layer_names1, ...`; each layer group lists its datasets in the
//     attribute `weight_names` (names may contain '/' and end in ':0'). Tensor name:
//     "<layer>/<weight name without the ':0' suffix>".
//  2. Keras 3 `.weights.h5`: `layers/<name>/vars/0, 1, ...` (nested layers recursively).
//     Tensor name: "<path without the leading 'layers/'>" e.g. "dense/vars/0".
//  3. Any other HDF5 file: every dataset of a numeric type, in name order, depth first; tensor
//     name = dataset path without the leading '/'.
// Optimizer state (`optimizer_weights`, `optimizer/...`) is skipped. Dataset types map to the
// safetensors dtypes (IEEE floats of 16/32/64 bits, signed/unsigned integers of 8..64 bits, HDF5
// enum bool -> BOOL); bytes are converted to little-endian. Other types are refused with an error
// naming the file and dataset.
#pragma once

#include <memory>
#include <string>

#include "formats/tensor.h"

namespace wpack {

std::unique_ptr<TensorSource> open_hdf5(const std::string& path);

}  // namespace wpack
