// Fuzz surface: wpack's HDF5 weight walker (formats/hdf5.h): layout detection (Keras legacy,
// Keras 3, generic), the layer_names / weight_names attributes (whole and split into name0,
// name1, ...; fixed and variable-length strings; empty lists and non-string types), the name rules
// (":0" suffix, layer prefix, '/' inside weight names), the Keras 3 walk order and optimizer skip,
// links (soft, hard aliases and cycles, external), type mapping and the size checks.
//
// libhdf5's own parser of file bytes is not wpack's code and not fuzzed here (see fuzz/README.md):
// the input is a small program that builds a well-formed file through the HDF5 API, in memory
// (core driver), with names, attribute contents, types and shapes drawn from the input. The image
// is then opened with open_hdf5 and every tensor read.
//
// Program: up to 48 operations, each one byte (mod 8) and its arguments:
//   0 group      parent, name
//   1 dataset    parent, name, type, shape, then data from the input (or left unwritten)
//   2 attribute  object, attribute name, string list (fixed or variable length, ASCII or UTF-8,
//                1-D, 2-D or scalar; the strings often names of existing objects) or a numeric list
//   3 soft link  parent, name, target path
//   4 hard link  parent, name, an existing object (aliases and cycles)
//   5 external link  parent, name
//   6 committed datatype  parent, name
//   7 attribute    group, then as 2 under the name layer_names (op bit 7 set) or weight_names
// Names come from a small dictionary of Keras names, existing object names, or raw input bytes.
#include <hdf5.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/hdf5.h"
#include "fuzz/harness.h"

namespace wpack::fuzz {
namespace {

const char* const kNames[] = {
    "model_weights", "layer_names", "weight_names", "layer_names0", "layer_names1", "weight_names0",
    "weight_names1", "layers",      "vars",         "optimizer",    "dense",        "dense_1",
    "kernel:0",      "bias:0",      "dense/kernel:0", "0",          "1",            "2",
    "10",            "007",         "gamma:0",      ":0",           "a/b",          "..",
    ".",             "",            "layers/dense", "/",            "x:0:0",        "dense/",
};

struct Object {
  hid_t id;          // open group or dataset (closed at the end)
  std::string path;  // absolute, "" for the root
  bool is_group;
};

class Builder {
 public:
  explicit Builder(Input& in) : in_(in) {}

  // Returns the file image, or an empty vector when HDF5 could not make one.
  std::vector<uint8_t> build() {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 16, /*backing_store=*/0);
    const hid_t file = H5Fcreate("wpack-fuzz.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) return {};
    objects_.push_back({file, "", true});
    for (int op = 0; op < 48 && in_.remaining() > 0; ++op) step();
    for (size_t i = 1; i < objects_.size(); ++i) H5Oclose(objects_[i].id);
    objects_.clear();
    std::vector<uint8_t> image;
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0) {
      const ssize_t size = H5Fget_file_image(file, nullptr, 0);
      if (size > 0) {
        image.resize(static_cast<size_t>(size));
        if (H5Fget_file_image(file, image.data(), image.size()) != size) image.clear();
      }
    }
    H5Fclose(file);
    return image;
  }

 private:
  const Object& pick(bool groups_only) {
    std::vector<size_t> candidates;
    for (size_t i = 0; i < objects_.size(); ++i)
      if (!groups_only || objects_[i].is_group) candidates.push_back(i);
    return objects_[candidates[in_.u8() % candidates.size()]];
  }

  std::string base_name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

  // A dictionary name, an existing object's name or path, or raw bytes.
  std::string name() {
    const uint8_t how = in_.u8();
    switch (how % 4) {
      case 0:
      case 1: return kNames[(how / 4) % (sizeof(kNames) / sizeof(kNames[0]))];
      case 2: {
        const Object& o = objects_[(how / 4) % objects_.size()];
        return (how & 0x80) ? o.path : base_name(o.path);
      }
      default: return in_.string(24);
    }
  }

  hid_t make_type() {
    switch (in_.u8() % 20) {
      case 0: return H5Tcopy(H5T_IEEE_F32LE);
      case 1: return H5Tcopy(H5T_IEEE_F32BE);
      case 2: return H5Tcopy(H5T_IEEE_F64LE);
      case 3: {  // IEEE half, little- or big-endian
        hid_t t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        if (in_.flag()) H5Tset_order(t, H5T_ORDER_BE);
        return t;
      }
      case 4: {  // a 16-bit float with 8 exponent bits (bfloat16 layout): refused
        hid_t t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 7, 8, 0, 7);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 127);
        return t;
      }
      case 5: return H5Tcopy(H5T_STD_I8LE);
      case 6: return H5Tcopy(H5T_STD_U8LE);
      case 7: return H5Tcopy(H5T_STD_I16BE);
      case 8: return H5Tcopy(H5T_STD_U32LE);
      case 9: return H5Tcopy(H5T_STD_I64LE);
      case 10: return H5Tcopy(H5T_STD_U64BE);
      case 11: {  // h5py boolean, or an enum that is not one
        hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
        int8_t no = 0, yes = static_cast<int8_t>(in_.u8() % 3);
        H5Tenum_insert(t, "FALSE", &no);
        H5Tenum_insert(t, in_.flag() ? "TRUE" : "YES", &yes);
        return t;
      }
      case 12: {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 1 + in_.u8() % 8);
        return t;
      }
      case 13: {
        hid_t t = H5Tcreate(H5T_COMPOUND, 8);
        H5Tinsert(t, "a", 0, H5T_NATIVE_FLOAT);
        H5Tinsert(t, "b", 4, H5T_NATIVE_INT32);
        return t;
      }
      case 14: return H5Tcreate(H5T_OPAQUE, 1 + in_.u8() % 4);
      case 15: {
        hsize_t dim = 2;
        return H5Tarray_create2(H5T_NATIVE_FLOAT, 1, &dim);
      }
      case 16: {  // an integer of 3 bytes
        hid_t t = H5Tcopy(H5T_STD_I32LE);
        H5Tset_precision(t, 24);
        H5Tset_size(t, 3);
        return t;
      }
      case 17: return H5Tcopy(H5T_STD_B8LE);
      case 18: return H5Tvlen_create(H5T_NATIVE_INT);
      default: return H5Tcopy(H5T_NATIVE_DOUBLE);
    }
  }

  void dataset() {
    const Object& parent = pick(true);
    const hid_t parent_id = parent.id;
    const std::string parent_path = parent.path;
    const std::string n = name();
    const hid_t type = make_type();
    if (type < 0) return;
    const uint8_t shape = in_.u8();
    hid_t space;
    hsize_t dims[4] = {0, 0, 0, 0};
    int rank = 0;
    if (shape % 8 == 0) {
      space = H5Screate(H5S_SCALAR);
    } else if (shape % 8 == 1) {
      space = H5Screate(H5S_NULL);
    } else {
      rank = 1 + (shape / 8) % 4;
      for (int d = 0; d < rank; ++d) dims[d] = in_.u8() % 9;
      space = H5Screate_simple(rank, dims, nullptr);
    }
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if ((shape & 0x80) && rank > 0) {  // chunked (and compressed): storage not bounded by the shape
      hsize_t chunk[4];
      for (int d = 0; d < rank; ++d) chunk[d] = std::max<hsize_t>(dims[d], 1);
      H5Pset_chunk(dcpl, rank, chunk);
      if (in_.flag()) H5Pset_deflate(dcpl, 1);
    }
    const hid_t ds = H5Dcreate2(parent_id, n.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    if (ds >= 0) {
      const bool write = in_.flag();
      const size_t points = static_cast<size_t>(std::max<hssize_t>(H5Sget_simple_extent_npoints(space), 0));
      const size_t bytes = points * H5Tget_size(type);
      if (write && bytes > 0 && bytes <= 4096 && H5Tget_class(type) != H5T_VLEN) {
        std::vector<uint8_t> buffer(bytes, 0);
        const Bytes from = in_.bytes(bytes);
        std::copy(from.begin(), from.end(), buffer.begin());
        if (H5Tget_class(type) == H5T_STRING) std::replace(buffer.begin(), buffer.end(), uint8_t{0}, uint8_t{'x'});
        H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data());
      }
      objects_.push_back({ds, parent_path + "/" + n, false});
    }
    H5Sclose(space);
    H5Tclose(type);
  }

  void attribute(const Object& target, const std::string& attr_name) {
    if (H5Aexists(target.id, attr_name.c_str()) > 0) H5Adelete(target.id, attr_name.c_str());
    const uint8_t kind = in_.u8();
    const size_t count = kind % 8 == 7 ? 0 : kind % 8;
    if ((kind & 0x18) == 0x18) {  // a numeric attribute (np.asarray([]) when empty)
      hsize_t dim = count;
      const hid_t space = H5Screate_simple(1, &dim, nullptr);
      const hid_t attr = H5Acreate2(target.id, attr_name.c_str(), H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
      if (attr >= 0) {
        std::vector<double> zeros(count, 0.0);
        H5Awrite(attr, H5T_NATIVE_DOUBLE, zeros.data());
        H5Aclose(attr);
      }
      H5Sclose(space);
      return;
    }
    std::vector<std::string> strings;
    for (size_t i = 0; i < count; ++i) strings.push_back(name());
    const bool variable = kind & 0x20;
    const bool utf8 = kind & 0x40;
    hid_t space;
    if (kind & 0x80 && count == 1) {
      space = H5Screate(H5S_SCALAR);
    } else if ((kind & 0x80) && count % 2 == 0 && count > 0) {
      hsize_t dims[2] = {2, count / 2};
      space = H5Screate_simple(2, dims, nullptr);
    } else {
      hsize_t dim = count;
      space = H5Screate_simple(1, &dim, nullptr);
    }
    hid_t type = H5Tcopy(H5T_C_S1);
    if (utf8) H5Tset_cset(type, H5T_CSET_UTF8);
    std::vector<char> fixed;
    std::vector<const char*> pointers;
    if (variable) {
      H5Tset_size(type, H5T_VARIABLE);
      for (const auto& s : strings) pointers.push_back(s.c_str());
    } else {
      size_t width = 1;
      for (const auto& s : strings) width = std::max(width, s.size());
      if (in_.flag()) H5Tset_strpad(type, H5T_STR_SPACEPAD);
      H5Tset_size(type, width);
      fixed.assign(width * std::max<size_t>(count, 1), 0);
      for (size_t i = 0; i < count; ++i) std::copy(strings[i].begin(), strings[i].end(), fixed.begin() + i * width);
    }
    const hid_t attr = H5Acreate2(target.id, attr_name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr >= 0) {
      if (count > 0) H5Awrite(attr, type, variable ? static_cast<const void*>(pointers.data()) : fixed.data());
      H5Aclose(attr);
    }
    H5Tclose(type);
    H5Sclose(space);
  }

  void step() {
    const uint8_t op = in_.u8();
    switch (op % 8) {
      case 0: {
        const Object& parent = pick(true);
        const hid_t parent_id = parent.id;
        const std::string path = parent.path;
        const std::string n = name();
        const hid_t g = H5Gcreate2(parent_id, n.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) objects_.push_back({g, path + "/" + n, true});
        return;
      }
      case 1: dataset(); return;
      case 2: {
        const Object& target = pick(false);
        attribute(target, name());
        return;
      }
      case 3: {
        const hid_t parent = pick(true).id;
        const std::string n = name(), target = name();
        H5Lcreate_soft(target.c_str(), parent, n.c_str(), H5P_DEFAULT, H5P_DEFAULT);
        return;
      }
      case 4: {
        const hid_t parent = pick(true).id;
        const std::string n = name();
        const hid_t target = pick(false).id;
        H5Lcreate_hard(target, ".", parent, n.c_str(), H5P_DEFAULT, H5P_DEFAULT);
        return;
      }
      case 5: {
        const hid_t parent = pick(true).id;
        const std::string n = name();
        H5Lcreate_external("wpack-fuzz-missing.h5", "/x", parent, n.c_str(), H5P_DEFAULT, H5P_DEFAULT);
        return;
      }
      case 6: {
        const hid_t parent = pick(true).id;
        const std::string n = name();
        const hid_t type = H5Tcopy(H5T_NATIVE_FLOAT);
        H5Tcommit2(parent, n.c_str(), type, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Tclose(type);
        return;
      }
      default: {
        // layer_names on the root or a group, listing existing groups: the Keras legacy entry.
        const Object& target = pick(true);
        attribute(target, (op & 0x80) ? "layer_names" : "weight_names");
        return;
      }
    }
  }

  Input& in_;
  std::vector<Object> objects_;
};

}  // namespace

std::vector<uint8_t> hdf5_image(Bytes program) {
  static std::once_flag quiet;
  std::call_once(quiet, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
  Input in(program);
  std::vector<uint8_t> image = Builder(in).build();
  H5Eclear2(H5E_DEFAULT);
  return image;
}

void hdf5(Bytes data) {
  const std::vector<uint8_t> image = hdf5_image(data);
  if (image.empty()) return;
  TempFile file(image);
  try {
    const std::unique_ptr<TensorSource> source = open_hdf5(file.path());
    for (size_t i = 0; i < source->tensors().size(); ++i) {
      const TensorInfo& info = source->tensors()[i];
      if (info.num_bytes() > kMaxDecodeBytes) continue;
      try {
        const TensorBytes bytes = source->read(i);
        if (bytes.size() != info.num_bytes()) fail("hdf5", "tensor '" + info.name + "' read with the wrong size");
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
}

}  // namespace wpack::fuzz
