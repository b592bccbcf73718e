// HDF5 reader: Keras legacy (.h5), Keras 3 (.weights.h5) and generic layouts, type mapping,
// big-endian conversion, and the errors of formats/hdf5.h. The tests write their HDF5 files with
// the libhdf5 C API, laid out the way h5py/Keras lay them out.
#include <catch2/catch.hpp>
#include <hdf5.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/hdf5.h"
#include "formats/tensor.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;

namespace {

// ---- writing HDF5 files --------------------------------------------------------------------

// A file created (truncated) for writing; closed on destruction.
class H5Writer {
 public:
  explicit H5Writer(const std::string& path) : file_(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) {
    REQUIRE(file_ >= 0);
    lcpl_ = H5Pcreate(H5P_LINK_CREATE);
    REQUIRE(H5Pset_create_intermediate_group(lcpl_, 1) >= 0);
  }
  ~H5Writer() {
    H5Pclose(lcpl_);
    H5Fclose(file_);
  }
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  hid_t id() const { return file_; }

  // Creates group `path` (and missing parents).
  void group(const std::string& path) {
    hid_t g = H5Gcreate2(file_, path.c_str(), lcpl_, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(g >= 0);
    H5Gclose(g);
  }

  // Creates dataset `path` of `file_type`; `dims` empty = 0-d (scalar). Writes `data` (in
  // `mem_type`) unless it is null. `dcpl` lets a test choose the storage layout.
  void dataset(const std::string& path, hid_t file_type, const std::vector<hsize_t>& dims, hid_t mem_type,
               const void* data, hid_t dcpl = H5P_DEFAULT) {
    hid_t space = dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    REQUIRE(space >= 0);
    hid_t ds = H5Dcreate2(file_, path.c_str(), file_type, space, lcpl_, dcpl, H5P_DEFAULT);
    REQUIRE(ds >= 0);
    if (data != nullptr) REQUIRE(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(ds);
    H5Sclose(space);
  }

  // Attribute `name` on object `obj_path` as an array of fixed-length strings (numpy 'S', as Keras
  // 2 writes layer_names/weight_names through h5py).
  void fixed_strings(const std::string& obj_path, const std::string& name, const std::vector<std::string>& values) {
    size_t width = 1;
    for (const auto& v : values) width = std::max(width, v.size());
    std::vector<char> buffer(values.size() * width, '\0');
    for (size_t i = 0; i < values.size(); ++i) std::memcpy(buffer.data() + i * width, values[i].data(), values[i].size());
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, width);
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    attribute(obj_path, name, type, values.size(), buffer.data());
    H5Tclose(type);
  }

  // The same as variable-length UTF-8 strings (h5py's `str` objects).
  void vlen_strings(const std::string& obj_path, const std::string& name, const std::vector<std::string>& values) {
    std::vector<const char*> ptrs;
    for (const auto& v : values) ptrs.push_back(v.c_str());
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    attribute(obj_path, name, type, values.size(), ptrs.data());
    H5Tclose(type);
  }

  // A scalar variable-length UTF-8 string, as h5py writes `attrs[name] = "text"`.
  void scalar_vlen_string(const std::string& obj_path, const std::string& name, const std::string& value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t obj = H5Oopen(file_, obj_path.c_str(), H5P_DEFAULT);
    REQUIRE(obj >= 0);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(attr >= 0);
    const char* text = value.c_str();
    REQUIRE(H5Awrite(attr, type, &text) >= 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Oclose(obj);
    H5Tclose(type);
  }

  // What Keras writes for an empty list: np.asarray([]) -> float64 of shape [0].
  void empty_list(const std::string& obj_path, const std::string& name) {
    attribute(obj_path, name, H5T_IEEE_F64LE, 0, nullptr);
  }

 private:
  void attribute(const std::string& obj_path, const std::string& name, hid_t type, size_t count, const void* data) {
    hid_t obj = H5Oopen(file_, obj_path.c_str(), H5P_DEFAULT);
    REQUIRE(obj >= 0);
    const hsize_t dims[1] = {count};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    hid_t attr = H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(attr >= 0);
    if (count > 0) REQUIRE(H5Awrite(attr, type, data) >= 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Oclose(obj);
  }

  hid_t file_;
  hid_t lcpl_;
};

// IEEE binary16 in the given byte order (HDF5 1.10 has no predefined half type).
hid_t make_half_type(H5T_order_t order) {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, 10, 5, 0, 10);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, 15);
  H5Tset_order(t, order);
  return t;
}

// A float of `size` bytes with the given fields (mantissa at bit 0) and byte order, built as the
// HDF5 1.10 API allows: bfloat16 and FP8 are predefined only from HDF5 2.0 on, with these layouts.
hid_t make_float_type(size_t size, size_t spos, size_t epos, size_t esize, size_t msize, size_t ebias,
                      H5T_order_t order = H5T_ORDER_LE) {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  REQUIRE(H5Tset_fields(t, spos, epos, esize, 0, msize) >= 0);
  REQUIRE(H5Tset_size(t, size) >= 0);
  REQUIRE(H5Tset_ebias(t, ebias) >= 0);
  REQUIRE(H5Tset_order(t, order) >= 0);
  return t;
}

// A 16-bit float with 6 exponent bits: no dtype wpack knows, refused.
hid_t make_odd_float_type() { return make_float_type(2, 15, 9, 6, 9, 31); }

// h5py's numpy bool: enum of int8 with FALSE = 0, TRUE = 1.
hid_t make_bool_type() {
  hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
  const int8_t no = 0, yes = 1;
  H5Tenum_insert(t, "FALSE", &no);
  H5Tenum_insert(t, "TRUE", &yes);
  return t;
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::vector<float> floats_of(const std::vector<uint8_t>& bytes) {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<uint8_t> read_bytes(const TensorSource& source, size_t index) {
  TensorBytes b = source.read(index);
  REQUIRE(b.size() == source.tensors()[index].num_bytes());
  return std::vector<uint8_t>(b.data(), b.data() + b.size());
}

std::vector<std::string> names_of(const TensorSource& source) {
  std::vector<std::string> names;
  for (const auto& t : source.tensors()) names.push_back(t.name);
  return names;
}

const TensorInfo& find(const TensorSource& source, const std::string& name, size_t* index = nullptr) {
  const auto& ts = source.tensors();
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].name == name) {
      if (index != nullptr) *index = i;
      return ts[i];
    }
  }
  FAIL("no tensor named " << name);
  throw;  // unreachable
}

template <typename F>
Error capture_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("expected a wpack::Error");
  return Error(ErrorCode::kIo, "unreachable");
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- fixtures ------------------------------------------------------------------------------

const std::vector<uint8_t> kKernel = wpack::test::gaussian_f32(4 * 3, 0.5f, 1);
const std::vector<uint8_t> kBias = wpack::test::gaussian_f32(3, 0.5f, 2);
const std::vector<uint8_t> kInner = wpack::test::gaussian_f32(3 * 2, 0.5f, 3);
const std::vector<uint8_t> kGamma = wpack::test::gaussian_f32(2, 0.5f, 4);
const std::vector<uint8_t> kMean = wpack::test::gaussian_f32(2, 0.5f, 5);
const std::vector<uint8_t> kScale = wpack::test::gaussian_f32(1, 0.5f, 6);

// A Keras 2 `model.save("x.h5")` file: weights under /model_weights, an optimizer_weights group
// beside it. Layer order in layer_names is the model order, not alphabetical.
void write_keras_full_model(const std::string& path) {
  H5Writer w(path);
  w.fixed_strings("/", "keras_version", {"2.15.0"});
  w.group("/model_weights");
  w.fixed_strings("/model_weights", "layer_names", {"input_1", "dense", "sub_model", "bn", "dropout"});
  w.group("/model_weights/input_1");
  w.empty_list("/model_weights/input_1", "weight_names");
  w.group("/model_weights/dense");
  w.fixed_strings("/model_weights/dense", "weight_names", {"dense/kernel:0", "dense/bias:0"});
  w.dataset("/model_weights/dense/dense/kernel:0", H5T_IEEE_F32LE, {4, 3}, H5T_IEEE_F32LE, kKernel.data());
  w.dataset("/model_weights/dense/dense/bias:0", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
  // A nested model: its weight names carry the inner layer's name, not the outer one.
  w.group("/model_weights/sub_model");
  w.fixed_strings("/model_weights/sub_model", "weight_names", {"inner/kernel:0"});
  w.dataset("/model_weights/sub_model/inner/kernel:0", H5T_IEEE_F32LE, {3, 2}, H5T_IEEE_F32LE, kInner.data());
  // Weight names without the layer prefix, one without ':0'.
  w.group("/model_weights/bn");
  w.fixed_strings("/model_weights/bn", "weight_names", {"gamma:0", "moving_mean"});
  w.dataset("/model_weights/bn/gamma:0", H5T_IEEE_F32LE, {2}, H5T_IEEE_F32LE, kGamma.data());
  w.dataset("/model_weights/bn/moving_mean", H5T_IEEE_F32LE, {2}, H5T_IEEE_F32LE, kMean.data());
  w.group("/model_weights/dropout");  // no weight_names at all
  // The model's own variables (no layer's): Keras' legacy writer always makes this group.
  w.group("/model_weights/top_level_model_weights");
  w.fixed_strings("/model_weights/top_level_model_weights", "weight_names", {"logit_scale:0"});
  w.dataset("/model_weights/top_level_model_weights/logit_scale:0", H5T_IEEE_F32LE, {}, H5T_IEEE_F32LE, kScale.data());
  // Optimizer state: must not appear.
  w.group("/optimizer_weights");
  w.fixed_strings("/optimizer_weights", "weight_names", {"Adam/iter:0", "Adam/dense/kernel/m:0"});
  const int64_t iter = 7;
  w.dataset("/optimizer_weights/Adam/iter:0", H5T_STD_I64LE, {}, H5T_NATIVE_INT64, &iter);
  w.dataset("/optimizer_weights/Adam/dense/kernel/m:0", H5T_IEEE_F32LE, {4, 3}, H5T_IEEE_F32LE, kKernel.data());
}

}  // namespace

// ---- Keras legacy ----------------------------------------------------------------------------

TEST_CASE("keras legacy full model: layer order, names, dtypes, shapes and bytes, the model's own weights, optimizer skipped") {
  TempDir dir;
  const std::string path = dir.file("model.h5");
  write_keras_full_model(path);
  auto source = open_hdf5(path);
  REQUIRE(source->format_name() == "keras-h5");
  REQUIRE(source->path() == path);
  REQUIRE(source->metadata().empty());
  REQUIRE(names_of(*source) == std::vector<std::string>{"dense/kernel", "dense/bias", "sub_model/inner/kernel", "bn/gamma",
                                                        "bn/moving_mean", "top_level_model_weights/logit_scale"});
  const auto& ts = source->tensors();
  for (const auto& t : ts) REQUIRE(t.dtype == DType::F32);
  REQUIRE(ts[0].shape == std::vector<uint64_t>{4, 3});
  REQUIRE(ts[1].shape == std::vector<uint64_t>{3});
  REQUIRE(ts[2].shape == std::vector<uint64_t>{3, 2});
  REQUIRE(read_bytes(*source, 0) == kKernel);
  REQUIRE(read_bytes(*source, 1) == kBias);
  REQUIRE(read_bytes(*source, 2) == kInner);
  REQUIRE(read_bytes(*source, 3) == kGamma);
  REQUIRE(read_bytes(*source, 4) == kMean);
  REQUIRE(ts[5].shape.empty());
  REQUIRE(read_bytes(*source, 5) == kScale);
  // Reads are independent and repeatable.
  REQUIRE(read_bytes(*source, 0) == kKernel);
}

TEST_CASE("keras legacy: split layer_names0/1 and weight_names0/1 (variable-length strings)") {
  TempDir dir;
  const std::string path = dir.file("split.h5");
  const auto a = wpack::test::gaussian_f32(5, 1.0f, 10);
  const auto b = wpack::test::gaussian_f32(6, 1.0f, 11);
  const auto c = wpack::test::gaussian_f32(7, 1.0f, 12);
  {
    H5Writer w(path);
    w.group("/model_weights");
    w.vlen_strings("/model_weights", "layer_names0", {"conv_b", "conv_a"});
    w.vlen_strings("/model_weights", "layer_names1", {"head"});
    w.group("/model_weights/conv_b");
    w.vlen_strings("/model_weights/conv_b", "weight_names0", {"conv_b/kernel:0"});
    w.vlen_strings("/model_weights/conv_b", "weight_names1", {"conv_b/bias:0"});
    w.dataset("/model_weights/conv_b/conv_b/kernel:0", H5T_IEEE_F32LE, {5}, H5T_IEEE_F32LE, a.data());
    w.dataset("/model_weights/conv_b/conv_b/bias:0", H5T_IEEE_F32LE, {6}, H5T_IEEE_F32LE, b.data());
    w.group("/model_weights/conv_a");
    w.empty_list("/model_weights/conv_a", "weight_names");
    w.group("/model_weights/head");
    w.vlen_strings("/model_weights/head", "weight_names", {"head/w:0"});
    w.dataset("/model_weights/head/head/w:0", H5T_IEEE_F32LE, {7, 1}, H5T_IEEE_F32LE, c.data());
    w.group("/optimizer_weights");
    w.dataset("/optimizer_weights/m", H5T_IEEE_F32LE, {5}, H5T_IEEE_F32LE, a.data());
  }
  auto source = open_hdf5(path);
  REQUIRE(source->format_name() == "keras-h5");
  REQUIRE(names_of(*source) == std::vector<std::string>{"conv_b/kernel", "conv_b/bias", "head/w"});
  REQUIRE(source->tensors()[2].shape == std::vector<uint64_t>{7, 1});
  REQUIRE(read_bytes(*source, 0) == a);
  REQUIRE(read_bytes(*source, 1) == b);
  REQUIRE(read_bytes(*source, 2) == c);
}

TEST_CASE("keras legacy weights-only file: layers at the root") {
  TempDir dir;
  const std::string path = dir.file("weights.h5");
  const std::vector<int32_t> steps = {1, 2, 3};
  {
    H5Writer w(path);
    w.fixed_strings("/", "layer_names", {"embedding", "counter"});
    w.fixed_strings("/", "backend", {"tensorflow"});
    w.group("/embedding");
    w.fixed_strings("/embedding", "weight_names", {"embedding/embeddings:0"});
    w.dataset("/embedding/embedding/embeddings:0", H5T_IEEE_F32LE, {4, 3}, H5T_IEEE_F32LE, kKernel.data());
    w.group("/counter");
    w.fixed_strings("/counter", "weight_names", {"steps:0"});
    w.dataset("/counter/steps:0", H5T_STD_I32LE, {3}, H5T_NATIVE_INT32, steps.data());
  }
  auto source = open_hdf5(path);
  REQUIRE(source->format_name() == "keras-h5");
  REQUIRE(names_of(*source) == std::vector<std::string>{"embedding/embeddings", "counter/steps"});
  REQUIRE(source->tensors()[1].dtype == DType::I32);
  REQUIRE(read_bytes(*source, 0) == kKernel);
  REQUIRE(read_bytes(*source, 1) == bytes_of(steps));
}

// ---- Keras 3 ---------------------------------------------------------------------------------

TEST_CASE("keras 3 weights.h5: nested layers, numeric var order, optimizer skipped") {
  TempDir dir;
  const std::string path = dir.file("model.weights.h5");
  std::vector<std::vector<float>> big(12);
  {
    H5Writer w(path);
    w.group("/vars");  // the model's own (empty) variable list
    w.dataset("/layers/dense/vars/0", H5T_IEEE_F32LE, {4, 3}, H5T_IEEE_F32LE, kKernel.data());
    w.dataset("/layers/dense/vars/1", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
    w.group("/layers/functional/vars");
    w.dataset("/layers/functional/layers/dense/vars/0", H5T_IEEE_F32LE, {3, 2}, H5T_IEEE_F32LE, kInner.data());
    for (int i = 0; i < 12; ++i) {
      big[i] = {static_cast<float>(i)};
      w.dataset("/layers/big/vars/" + std::to_string(i), H5T_IEEE_F32LE, {1}, H5T_IEEE_F32LE, big[i].data());
    }
    w.dataset("/optimizer/vars/0", H5T_STD_I64LE, {}, H5T_NATIVE_INT64, std::vector<int64_t>{3}.data());
    w.dataset("/optimizer/vars/1", H5T_IEEE_F32LE, {4, 3}, H5T_IEEE_F32LE, kKernel.data());
  }
  auto source = open_hdf5(path);
  REQUIRE(source->format_name() == "keras3-weights-h5");
  REQUIRE(source->skipped().empty());  // the optimizer is left out by design, not named
  std::vector<std::string> expected;
  for (int i = 0; i < 12; ++i) expected.push_back("big/vars/" + std::to_string(i));
  expected.insert(expected.end(), {"dense/vars/0", "dense/vars/1", "functional/layers/dense/vars/0"});
  REQUIRE(names_of(*source) == expected);
  for (size_t i = 0; i < 12; ++i) REQUIRE(floats_of(read_bytes(*source, i)) == big[i]);
  size_t index = 0;
  REQUIRE(find(*source, "dense/vars/0", &index).shape == std::vector<uint64_t>{4, 3});
  REQUIRE(read_bytes(*source, index) == kKernel);
  REQUIRE(find(*source, "functional/layers/dense/vars/0", &index).shape == std::vector<uint64_t>{3, 2});
  REQUIRE(read_bytes(*source, index) == kInner);
}

// Keras 3 saves a bfloat16 variable as ml_dtypes' bfloat16: h5py stores a 2-byte opaque type, and
// Keras tags the dataset with the attribute dtype = "bfloat16".
TEST_CASE("keras 3: bfloat16 variables (2-byte opaque, dtype attribute 'bfloat16') read as BF16, bit for bit") {
  TempDir dir;
  const std::string path = dir.file("bf16.weights.h5");
  std::vector<uint16_t> bits(3 * 4);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(0x3F80 + 37 * i);  // from 1.0 on
  bits[5] = 0x7FC1;  // a NaN payload, kept
  {
    H5Writer w(path);
    w.group("/vars");
    hid_t opaque = H5Tcreate(H5T_OPAQUE, 2);
    H5Tset_tag(opaque, "<V2");  // as h5py tags a numpy void of 2 bytes
    w.dataset("/layers/dense/vars/0", opaque, {3, 4}, opaque, bits.data());
    w.dataset("/layers/dense/vars/1", opaque, {4}, opaque, bits.data());
    H5Tclose(opaque);
    w.scalar_vlen_string("/layers/dense/vars/0", "dtype", "bfloat16");
    w.scalar_vlen_string("/layers/dense/vars/1", "dtype", "float16");  // not bfloat16: an opaque type, refused
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kUnsupported);
  REQUIRE(contains(e.what(), "'/layers/dense/vars/1'"));
  REQUIRE(contains(e.what(), "opaque type"));
  {
    H5Writer w(path);  // again, without the second variable
    w.group("/vars");
    hid_t opaque = H5Tcreate(H5T_OPAQUE, 2);
    H5Tset_tag(opaque, "<V2");
    w.dataset("/layers/dense/vars/0", opaque, {3, 4}, opaque, bits.data());
    H5Tclose(opaque);
    w.scalar_vlen_string("/layers/dense/vars/0", "dtype", "bfloat16");
  }
  auto source = open_hdf5(path);
  REQUIRE(names_of(*source) == std::vector<std::string>{"dense/vars/0"});
  REQUIRE(source->tensors()[0].dtype == DType::BF16);
  REQUIRE(source->tensors()[0].shape == std::vector<uint64_t>{3, 4});
  REQUIRE(read_bytes(*source, 0) == bytes_of(bits));
}

TEST_CASE("keras 3: a non-numeric variable is refused naming the dataset") {
  TempDir dir;
  const std::string path = dir.file("bad.weights.h5");
  {
    H5Writer w(path);
    hid_t pair = H5Tcreate(H5T_COMPOUND, 8);
    H5Tinsert(pair, "a", 0, H5T_NATIVE_FLOAT);
    H5Tinsert(pair, "b", 4, H5T_NATIVE_FLOAT);
    w.dataset("/layers/dense/vars/0", pair, {2}, pair, nullptr);
    H5Tclose(pair);
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kUnsupported);
  REQUIRE(contains(e.what(), path));
  REQUIRE(contains(e.what(), "/layers/dense/vars/0"));
}

// ---- generic ---------------------------------------------------------------------------------

TEST_CASE("generic HDF5: every numeric dataset depth first in name order, dtypes, 0-d and empty") {
  TempDir dir;
  const std::string path = dir.file("data.h5");
  const std::vector<int8_t> deep = {-128, -1, 0, 1, 127};
  const std::vector<uint16_t> u16 = {0, 1, 2, 65535, 40000, 7};
  const std::vector<uint64_t> u64 = {0, 0xFFFFFFFFFFFFFFFFull};
  const std::vector<uint8_t> bools = {1, 0, 1, 1};
  const std::vector<uint8_t> half = wpack::test::gaussian_f16(8, 1.0f, 20);
  const std::vector<int32_t> i32 = {-5, 0, 123456789};
  const double scalar = 3.25;
  const std::vector<double> f64 = {1.0, -2.0, 0.5, 1e300};
  const std::vector<int64_t> i64 = {-1, 1};
  {
    H5Writer w(path);
    w.dataset("/a/b/deep_i8", H5T_STD_I8LE, {5}, H5T_NATIVE_INT8, deep.data());
    w.dataset("/a/u16", H5T_STD_U16LE, {2, 3}, H5T_NATIVE_UINT16, u16.data());
    w.dataset("/a/x_u64", H5T_STD_U64LE, {2}, H5T_NATIVE_UINT64, u64.data());
    hid_t bool_type = make_bool_type();
    w.dataset("/bools", bool_type, {4}, bool_type, bools.data());
    H5Tclose(bool_type);
    w.dataset("/empty", H5T_IEEE_F32LE, {0, 3}, H5T_IEEE_F32LE, nullptr);
    hid_t half_type = make_half_type(H5T_ORDER_LE);
    w.dataset("/half", half_type, {8}, half_type, half.data());
    H5Tclose(half_type);
    w.dataset("/i32", H5T_STD_I32LE, {3}, H5T_NATIVE_INT32, i32.data());
    w.dataset("/i64", H5T_STD_I64LE, {2}, H5T_NATIVE_INT64, i64.data());
    // Non-numeric datasets are skipped: a string list and a compound.
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    const char* labels[2] = {"cat", "dog"};
    w.dataset("/labels", str, {2}, str, labels);
    H5Tclose(str);
    hid_t pair = H5Tcreate(H5T_COMPOUND, 8);
    H5Tinsert(pair, "a", 0, H5T_NATIVE_FLOAT);
    H5Tinsert(pair, "b", 4, H5T_NATIVE_FLOAT);
    w.dataset("/pairs", pair, {2}, pair, nullptr);
    H5Tclose(pair);
    w.dataset("/scalar", H5T_IEEE_F64LE, {}, H5T_NATIVE_DOUBLE, &scalar);
    w.dataset("/zz_f64", H5T_IEEE_F64LE, {2, 2}, H5T_NATIVE_DOUBLE, f64.data());
    REQUIRE(H5Lcreate_soft("/i32", w.id(), "/a/alias", H5P_DEFAULT, H5P_DEFAULT) >= 0);  // not followed
  }
  auto source = open_hdf5(path);
  REQUIRE(source->format_name() == "hdf5");
  REQUIRE(names_of(*source) == std::vector<std::string>{"a/b/deep_i8", "a/u16", "a/x_u64", "bools", "empty", "half",
                                                         "i32", "i64", "scalar", "zz_f64"});
  // ... and named, with why (compress prints them)
  CHECK(source->skipped() == std::vector<std::string>{"link '/a/alias' (soft link, not followed)",
                                                      "dataset '/labels' (string type)", "dataset '/pairs' (compound type)"});
  const auto& ts = source->tensors();
  const std::vector<DType> dtypes = {DType::I8,  DType::U16, DType::U64, DType::BOOL, DType::F32,
                                     DType::F16, DType::I32, DType::I64, DType::F64,  DType::F64};
  for (size_t i = 0; i < ts.size(); ++i) {
    INFO(ts[i].name);
    REQUIRE(ts[i].dtype == dtypes[i]);
  }
  REQUIRE(ts[1].shape == std::vector<uint64_t>{2, 3});
  REQUIRE(ts[4].shape == std::vector<uint64_t>{0, 3});
  REQUIRE(ts[4].num_bytes() == 0);
  REQUIRE(ts[8].shape.empty());
  REQUIRE(ts[8].num_bytes() == 8);
  REQUIRE(read_bytes(*source, 0) == bytes_of(deep));
  REQUIRE(read_bytes(*source, 1) == bytes_of(u16));
  REQUIRE(read_bytes(*source, 2) == bytes_of(u64));
  REQUIRE(read_bytes(*source, 3) == bools);
  REQUIRE(read_bytes(*source, 4).empty());
  REQUIRE(read_bytes(*source, 5) == half);
  REQUIRE(read_bytes(*source, 6) == bytes_of(i32));
  REQUIRE(read_bytes(*source, 7) == bytes_of(i64));
  REQUIRE(read_bytes(*source, 8) == bytes_of(std::vector<double>{scalar}));
  REQUIRE(read_bytes(*source, 9) == bytes_of(f64));
}

TEST_CASE("big-endian datasets are converted to little-endian bytes") {
  TempDir dir;
  const std::string path = dir.file("be.h5");
  const auto f32 = wpack::test::gaussian_f32(16, 1.0f, 30);
  const auto half = wpack::test::gaussian_f16(6, 1.0f, 31);
  const std::vector<int16_t> i16 = {-2, 300, 32767, -32768};
  const std::vector<uint32_t> u32 = {1, 0xDEADBEEF};
  const std::vector<double> f64 = {1.5, -1e-300};
  {
    H5Writer w(path);
    // The memory type is little-endian, the file type big-endian: HDF5 swaps on write.
    w.dataset("/f32", H5T_IEEE_F32BE, {4, 4}, H5T_IEEE_F32LE, f32.data());
    w.dataset("/f64", H5T_IEEE_F64BE, {2}, H5T_IEEE_F64LE, f64.data());
    hid_t half_le = make_half_type(H5T_ORDER_LE);
    hid_t half_be = make_half_type(H5T_ORDER_BE);
    w.dataset("/half", half_be, {6}, half_le, half.data());
    H5Tclose(half_le);
    H5Tclose(half_be);
    w.dataset("/i16", H5T_STD_I16BE, {4}, H5T_STD_I16LE, i16.data());
    w.dataset("/u32", H5T_STD_U32BE, {2}, H5T_STD_U32LE, u32.data());
  }
  // The file really holds big-endian data.
  {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "/f32", H5P_DEFAULT);
    hid_t t = H5Dget_type(ds);
    REQUIRE(H5Tget_order(t) == H5T_ORDER_BE);
    H5Tclose(t);
    H5Dclose(ds);
    H5Fclose(f);
  }
  auto source = open_hdf5(path);
  REQUIRE(names_of(*source) == std::vector<std::string>{"f32", "f64", "half", "i16", "u32"});
  REQUIRE(source->tensors()[0].dtype == DType::F32);
  REQUIRE(source->tensors()[2].dtype == DType::F16);
  REQUIRE(source->tensors()[3].dtype == DType::I16);
  REQUIRE(source->tensors()[4].dtype == DType::U32);
  REQUIRE(read_bytes(*source, 0) == f32);
  REQUIRE(read_bytes(*source, 1) == bytes_of(f64));
  REQUIRE(read_bytes(*source, 2) == half);
  REQUIRE(read_bytes(*source, 3) == bytes_of(i16));
  REQUIRE(read_bytes(*source, 4) == bytes_of(u32));
}

TEST_CASE("bfloat16 and FP8 datasets read as BF16/F8, every bit kept: NaN payloads, infinities, subnormals") {
  TempDir dir;
  const std::string path = dir.file("small_floats.h5");
  // bfloat16: 1, -2, +inf, a NaN with a payload, a signalling NaN, the smallest subnormal, -0.
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x7F80, 0x7FC5, 0x7F81, 0x0001, 0x8000};
  // half: the same kinds of values.
  const std::vector<uint16_t> half = {0x3C00, 0xC000, 0x7C00, 0x7E05, 0x7C01, 0x0001, 0x8000};
  const std::vector<float> f32 = {1.0f, std::bit_cast<float>(0x7FC00123u), std::bit_cast<float>(0x7F800001u)};
  // E4M3 (FN: no infinities): 256..448 are 0x78..0x7E, 0x7F is NaN; E5M2: 0x7C inf, 0x7D NaN.
  std::vector<uint8_t> e4m3(256), e5m2(256);
  for (size_t i = 0; i < 256; ++i) e4m3[i] = e5m2[i] = static_cast<uint8_t>(i);
  const bool big_endian = GENERATE(false, true);
  const H5T_order_t order = big_endian ? H5T_ORDER_BE : H5T_ORDER_LE;
  auto swapped16 = [&](std::vector<uint16_t> v) {  // the file's bytes, written without conversion
    if (big_endian)
      for (uint16_t& x : v) x = static_cast<uint16_t>((x >> 8) | (x << 8));
    return v;
  };
  {
    H5Writer w(path);
    hid_t t = make_float_type(2, 15, 7, 8, 7, 127, order);
    w.dataset("/bf16", t, {7}, t, swapped16(bf16).data());
    H5Tclose(t);
    t = make_float_type(2, 15, 10, 5, 10, 15, order);
    w.dataset("/half", t, {7}, t, swapped16(half).data());
    H5Tclose(t);
    std::vector<uint8_t> f32_bytes = bytes_of(f32);
    if (big_endian)
      for (size_t i = 0; i < f32_bytes.size(); i += 4) std::reverse(f32_bytes.begin() + i, f32_bytes.begin() + i + 4);
    w.dataset("/f32", big_endian ? H5T_IEEE_F32BE : H5T_IEEE_F32LE, {3}, big_endian ? H5T_IEEE_F32BE : H5T_IEEE_F32LE,
              f32_bytes.data());
    t = make_float_type(1, 7, 3, 4, 3, 7, order);
    w.dataset("/e4m3", t, {16, 16}, t, e4m3.data());
    H5Tclose(t);
    t = make_float_type(1, 7, 2, 5, 2, 15, order);
    w.dataset("/e5m2", t, {256}, t, e5m2.data());
    H5Tclose(t);
  }
  auto source = open_hdf5(path);
  REQUIRE(names_of(*source) == std::vector<std::string>{"bf16", "e4m3", "e5m2", "f32", "half"});
  REQUIRE(source->tensors()[0].dtype == DType::BF16);
  REQUIRE(source->tensors()[1].dtype == DType::F8_E4M3);
  REQUIRE(source->tensors()[1].shape == std::vector<uint64_t>{16, 16});
  REQUIRE(source->tensors()[2].dtype == DType::F8_E5M2);
  REQUIRE(source->tensors()[3].dtype == DType::F32);
  REQUIRE(source->tensors()[4].dtype == DType::F16);
  REQUIRE(read_bytes(*source, 0) == bytes_of(bf16));
  REQUIRE(read_bytes(*source, 1) == e4m3);
  REQUIRE(read_bytes(*source, 2) == e5m2);
  REQUIRE(read_bytes(*source, 3) == bytes_of(f32));
  REQUIRE(read_bytes(*source, 4) == bytes_of(half));
}

TEST_CASE("generic HDF5: chunked and compressed datasets read back exactly") {
  TempDir dir;
  const std::string path = dir.file("chunked.h5");
  const auto data = wpack::test::gaussian_f32(64 * 10, 1.0f, 40);
  {
    H5Writer w(path);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    const hsize_t chunk[2] = {16, 10};
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
    w.dataset("/w", H5T_IEEE_F32LE, {64, 10}, H5T_IEEE_F32LE, data.data(), dcpl);
    H5Pclose(dcpl);
  }
  auto source = open_hdf5(path);
  REQUIRE(source->tensors()[0].shape == std::vector<uint64_t>{64, 10});
  REQUIRE(read_bytes(*source, 0) == data);
}

// Chunked datasets are read in blocks of at most 16384 chunks: 40000 chunks of one element take
// three blocks (the last partial); 2-D chunks of 3 x 2 over 5 columns (3 chunks a chunk row) take
// blocks of whole rows; a wide 2 x 40000 dataset of one-element chunks blocks of part of a row; a
// 3-D one blocks of 7 x 3 x 700 (the inner two dimensions whole).
TEST_CASE("generic HDF5: datasets of many small chunks read back exactly, in blocks") {
  TempDir dir;
  const std::string path = dir.file("small_chunks.h5");
  std::vector<float> a(40000), b(30001 * 5), c(2 * 40000), e(40 * 3 * 700);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f - 7.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 977) - 0.25f * static_cast<float>(i % 13);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<float>(i % 1013) * 0.125f;
  for (size_t i = 0; i < e.size(); ++i) e[i] = static_cast<float>(i % 4099) - 100.0f;
  auto chunked = [](std::vector<hsize_t> chunk) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
    return dcpl;
  };
  {
    H5Writer w(path);
    hid_t dcpl = chunked({1});
    w.dataset("/a", H5T_IEEE_F32LE, {40000}, H5T_NATIVE_FLOAT, a.data(), dcpl);
    H5Pclose(dcpl);
    dcpl = chunked({3, 2});
    w.dataset("/b", H5T_IEEE_F32BE, {30001, 5}, H5T_NATIVE_FLOAT, b.data(), dcpl);
    H5Pclose(dcpl);
    dcpl = chunked({1, 1});
    w.dataset("/c", H5T_IEEE_F32LE, {2, 40000}, H5T_NATIVE_FLOAT, c.data(), dcpl);
    H5Pclose(dcpl);
    dcpl = chunked({1, 1, 1});
    w.dataset("/e", H5T_IEEE_F32LE, {40, 3, 700}, H5T_NATIVE_FLOAT, e.data(), dcpl);
    H5Pclose(dcpl);
    // empty, compressed as h5py makes it: chunks of 1024 over a maximum of 0 (the library allows
    // a chunk larger than a fixed dimension of size 0)
    dcpl = chunked({1024, 4});
    H5Pset_deflate(dcpl, 4);
    w.dataset("/z_empty", H5T_IEEE_F32LE, {0, 4}, H5T_NATIVE_FLOAT, nullptr, dcpl);
    H5Pclose(dcpl);
  }
  auto source = open_hdf5(path);
  REQUIRE(source->tensors().size() == 5);
  CHECK(source->tensors()[4].shape == std::vector<uint64_t>{0, 4});
  CHECK(read_bytes(*source, 4).empty());
  CHECK(read_bytes(*source, 0) == bytes_of(a));
  CHECK(read_bytes(*source, 1) == bytes_of(b));
  CHECK(read_bytes(*source, 2) == bytes_of(c));
  CHECK(read_bytes(*source, 3) == bytes_of(e));
}

// A file whose chunk shape was changed after its chunks were indexed: libhdf5 1.10 reads it "with
// success", values misplaced and partly uninitialised. A chunk larger than a fixed dimension (which
// the library never writes) is refused; so is a dimension larger than its maximum.
TEST_CASE("error: a chunk or a dimension larger than the dataset's maximum is corrupt") {
  TempDir dir;
  std::vector<float> v(16 * 16);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  const std::string path = dir.file("chunked.h5");
  {
    H5Writer w(path);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    const hsize_t chunk[2] = {4, 4};
    H5Pset_chunk(dcpl, 2, chunk);
    w.dataset("/w", H5T_IEEE_F32LE, {16, 16}, H5T_NATIVE_FLOAT, v.data(), dcpl);
    H5Pclose(dcpl);
  }
  const std::vector<uint8_t> good = wpack::test::read_file(path);
  // Find a pattern of bytes once in the file; returns its offset.
  auto find_once = [&](const std::vector<uint8_t>& pattern) {
    const auto at = std::search(good.begin(), good.end(), pattern.begin(), pattern.end());
    REQUIRE(at != good.end());
    REQUIRE(std::search(at + 1, good.end(), pattern.begin(), pattern.end()) == good.end());
    return static_cast<size_t>(at - good.begin());
  };
  // The file with `bytes` is refused as corrupt, with `message`.
  auto require_corrupt = [&](const std::vector<uint8_t>& bytes, const std::string& message) {
    const std::string bad = dir.file("bad.h5");
    wpack::test::write_file(bad, bytes);
    try {
      open_hdf5(bad);
      FAIL("opened");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::kCorrupt);
      CHECK(std::string(e.what()).find(message) != std::string::npos);
    }
  };
  {  // layout message v3, chunked, rank 2 + 1, then an 8-byte address and the chunk dims (u32)
    std::vector<uint8_t> bytes = good;
    const size_t at = find_once({3, 2, 3});
    bytes[at + 11] = 255;  // chunk dimension 0: 4 -> 255
    require_corrupt(bytes, "dataset '/w': chunk dimension 0 is 255, more than the dataset's maximum 16");
  }
  {  // dataspace message v1: version 1, rank 2, flags 1 (maxima present), 5 reserved, dims, maxima
    std::vector<uint8_t> bytes = good;
    const size_t at = find_once({1, 2, 1, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 16});
    bytes[at + 10] = 1;  // dims[0]: 16 -> 65552 (maximum still 16)
    require_corrupt(bytes, "dataset '/w': dimension 0 is 65552, more than its maximum 16");
  }
}

TEST_CASE("generic HDF5: a hard-link cycle is walked once, a dataset with two names packed once and named") {
  TempDir dir;
  const std::string path = dir.file("cycle.h5");
  const std::vector<int32_t> x = {1, 2};
  {
    H5Writer w(path);
    w.dataset("/g/x", H5T_STD_I32LE, {2}, H5T_NATIVE_INT32, x.data());
    REQUIRE(H5Lcreate_hard(w.id(), "/g", w.id(), "/g/loop", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    REQUIRE(H5Lcreate_hard(w.id(), "/g", w.id(), "/g/loop2", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    REQUIRE(H5Lcreate_soft("/g", w.id(), "/g/soft", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    REQUIRE(H5Lcreate_hard(w.id(), "/g/x", w.id(), "/y", H5P_DEFAULT, H5P_DEFAULT) >= 0);  // a second name
  }
  auto source = open_hdf5(path);
  REQUIRE(names_of(*source) == std::vector<std::string>{"g/x"});
  REQUIRE(read_bytes(*source, 0) == bytes_of(x));
  // The soft link and the dataset's second name are named as not packed.
  REQUIRE(source->skipped() == std::vector<std::string>{"link '/g/soft' (soft link, not followed)",
                                                        "dataset '/y' (a second name of '/g/x')"});
}

// ---- errors ----------------------------------------------------------------------------------

TEST_CASE("error: a file that is not HDF5 is a format error naming the file") {
  TempDir dir;
  const std::string path = dir.file("not.h5");
  wpack::test::write_file(path, std::vector<uint8_t>(4096, 'x'));
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(contains(e.what(), path));
  REQUIRE(std::string(e.what()).find('\n') == std::string::npos);
}

TEST_CASE("error: a missing file is an I/O error naming the file") {
  TempDir dir;
  const std::string path = dir.file("missing.h5");
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kIo);
  REQUIRE(contains(e.what(), path));
}

TEST_CASE("error: layer_names naming a missing group") {
  TempDir dir;
  const std::string path = dir.file("ghost.h5");
  {
    H5Writer w(path);
    w.group("/model_weights/dense");
    w.fixed_strings("/model_weights", "layer_names", {"dense", "ghost_layer"});
    w.empty_list("/model_weights/dense", "weight_names");
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(contains(e.what(), path));
  REQUIRE(contains(e.what(), "/model_weights/ghost_layer"));
}

TEST_CASE("error: weight_names naming a missing dataset") {
  TempDir dir;
  const std::string path = dir.file("noweight.h5");
  {
    H5Writer w(path);
    w.fixed_strings("/", "layer_names", {"dense"});
    w.group("/dense");
    w.fixed_strings("/dense", "weight_names", {"dense/kernel:0"});
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(contains(e.what(), "/dense/dense/kernel:0"));
}

TEST_CASE("error: a weight that is an external link, or behind one, is named as such, not as missing") {
  TempDir dir;
  const std::string target = dir.file("target.h5");
  {
    H5Writer w(target);
    w.dataset("/x", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
    w.dataset("/g/kernel:0", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
  }
  struct Case {
    const char* weight;       // in layer 'dense's weight_names
    const char* link;         // the external link in the file, to `linked` in the target
    const char* linked;
    const char* dataset;      // as the error names it
  };
  // The weight itself; a group on the way, where the weight exists in the other file (a FIFO there
  // would block: the link is not followed to find out)
  for (const Case& c : {Case{"dense/kernel:0", "/dense/dense/kernel:0", "/x", "/dense/dense/kernel:0"},
                        Case{"ext/kernel:0", "/dense/ext", "/g", "/dense/ext/kernel:0"}}) {
    INFO(c.weight);
    const std::string path = dir.file("extlink.h5");
    {
      H5Writer w(path);
      w.fixed_strings("/", "layer_names", {"dense"});
      w.group("/dense/dense");
      w.fixed_strings("/dense", "weight_names", {c.weight});
      REQUIRE(H5Lcreate_external(target.c_str(), c.linked, w.id(), c.link, H5P_DEFAULT, H5P_DEFAULT) >= 0);
    }
    const Error e = capture_error([&] { open_hdf5(path); });  // the target exists: still not followed
    CHECK(e.code() == ErrorCode::kUnsupported);
    CHECK(contains(e.what(), std::string("dataset '") + c.dataset + "' named in weight_names: is an external link to another file"));
  }
}

TEST_CASE("keras legacy: a weight or layer name starting with '/' is read from the object it names") {
  TempDir dir;
  const std::string path = dir.file("slash.h5");
  const std::vector<float> y = {1.5f}, evil = {1, 2, 3, 4}, decoy = {9, 9, 9, 9};
  std::vector<float> big(100000, 7.0f);
  {
    H5Writer w(path);
    w.group("/model_weights/x");
    w.group("/evil");
    // weight "/y" of layer "x" is the root's /y (absolute, as h5py takes it), not /x/y
    w.fixed_strings("/model_weights", "layer_names", {"x", "/evil"});
    w.fixed_strings("/model_weights/x", "weight_names", {"/y"});
    w.dataset("/y", H5T_IEEE_F32LE, {1}, H5T_IEEE_F32LE, y.data());
    w.dataset("/model_weights/x/y", H5T_IEEE_F32LE, {100000}, H5T_IEEE_F32LE, big.data());
    // layer "/evil" is the root's /evil, not /model_weights/evil
    w.fixed_strings("/evil", "weight_names", {"k:0"});
    w.dataset("/evil/k:0", H5T_IEEE_F32LE, {4}, H5T_IEEE_F32LE, evil.data());
    w.dataset("/model_weights/evil/k:0", H5T_IEEE_F32LE, {4}, H5T_IEEE_F32LE, decoy.data());
  }
  auto source = open_hdf5(path);
  REQUIRE(names_of(*source) == std::vector<std::string>{"x//y", "/evil/k"});
  REQUIRE(source->tensors()[0].shape == std::vector<uint64_t>{1});
  CHECK(read_bytes(*source, 0) == bytes_of(y));
  CHECK(read_bytes(*source, 1) == bytes_of(evil));
}

TEST_CASE("error: groups nested deeper than 256 are refused, not walked until the stack overflows") {
  TempDir dir;
  const std::string path = dir.file("deep.h5");
  const std::vector<float> x = {1};
  std::string group;
  for (int i = 0; i < 300; ++i) group += "/a";
  {
    H5Writer w(path);
    w.dataset(group + "/w", H5T_IEEE_F32LE, {1}, H5T_IEEE_F32LE, x.data());
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  CHECK(e.code() == ErrorCode::kUnsupported);
  CHECK(contains(e.what(), "is nested more than 256 groups deep"));
}

TEST_CASE("error: a dataset of more chunks than its size warrants is refused before any read") {
  TempDir dir;
  const std::string path = dir.file("chunks.h5");
  {
    H5Writer w(path);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    const hsize_t chunk = 1;
    REQUIRE(H5Pset_chunk(dcpl, 1, &chunk) >= 0);
    // 2^20 + 1 one-byte chunks, none written: a file of a few KiB
    w.dataset("/w", H5T_STD_I8LE, {(hsize_t{1} << 20) + 1}, H5T_NATIVE_INT8, nullptr, dcpl);
    H5Pclose(dcpl);
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  CHECK(e.code() == ErrorCode::kUnsupported);
  CHECK(contains(e.what(), "dataset '/w': is stored in 1048577 chunks"));
}

TEST_CASE("error: a dataset compressed by a filter this libhdf5 lacks is refused naming the filter") {
  TempDir dir;
  const std::string path = dir.file("lzf.h5");
  const H5Z_filter_t id = 32000;  // h5py's LZF, a plugin
  static const H5Z_class2_t kFake = {H5Z_CLASS_T_VERS, id, 1, 1, "lzf-like", nullptr, nullptr,
                                     [](unsigned, size_t, const unsigned[], size_t n, size_t*, void**) { return n; }};
  REQUIRE(H5Zregister(&kFake) >= 0);
  {
    H5Writer w(path);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    const hsize_t chunk = 2;
    REQUIRE(H5Pset_chunk(dcpl, 1, &chunk) >= 0);
    REQUIRE(H5Pset_filter(dcpl, id, H5Z_FLAG_MANDATORY, 0, nullptr) >= 0);
    w.dataset("/w", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data(), dcpl);
    H5Pclose(dcpl);
  }
  REQUIRE(H5Zunregister(id) >= 0);
  const Error e = capture_error([&] { open_hdf5(path); });
  CHECK(e.code() == ErrorCode::kUnsupported);
  CHECK(contains(e.what(), "dataset '/w': is compressed with HDF5 filter 32000 ('lzf-like')"));
}

TEST_CASE("error: a NUL-padded name with a NUL inside is refused, not cut at the NUL") {
  TempDir dir;
  const std::string path = dir.file("nul.h5");
  {
    H5Writer w(path);
    w.group("/a");
    w.fixed_strings("/", "layer_names", {std::string("a\0b", 3)});
    w.fixed_strings("/a", "weight_names", {"k:0"});
    w.dataset("/a/k:0", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  CHECK(e.code() == ErrorCode::kFormat);
  CHECK(contains(e.what(), "layer_names"));
  CHECK(contains(e.what(), "entry 0 has a NUL byte inside"));
}

TEST_CASE("error: unsupported dtypes in a keras layer name the dataset") {
  TempDir dir;
  const std::string path = dir.file("types.h5");
  const bool use_string = GENERATE(true, false);
  {
    H5Writer w(path);
    w.fixed_strings("/", "layer_names", {"dense"});
    w.group("/dense");
    w.fixed_strings("/dense", "weight_names", {"dense/odd:0"});
    if (use_string) {
      hid_t str = H5Tcopy(H5T_C_S1);
      H5Tset_size(str, 4);
      w.dataset("/dense/dense/odd:0", str, {2}, str, "abcdefgh");
      H5Tclose(str);
    } else {
      hid_t odd = make_odd_float_type();
      const std::vector<uint16_t> raw = {0x3F80, 0x4000};
      w.dataset("/dense/dense/odd:0", odd, {2}, odd, raw.data());
      H5Tclose(odd);
    }
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kUnsupported);
  REQUIRE(contains(e.what(), path));
  REQUIRE(contains(e.what(), "/dense/dense/odd:0"));
}

TEST_CASE("error: a numeric but unsupported float in a generic file is refused, not skipped") {
  TempDir dir;
  const std::string path = dir.file("f16e6.h5");
  {
    H5Writer w(path);
    hid_t odd = make_odd_float_type();
    const std::vector<uint16_t> raw = {0x3F80};
    w.dataset("/w", odd, {1}, odd, raw.data());
    H5Tclose(odd);
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kUnsupported);
  REQUIRE(contains(e.what(), "'/w'"));
  REQUIRE(contains(e.what(), "float of 16 bits"));
}

TEST_CASE("error: two weights mapping to one tensor name") {
  TempDir dir;
  const std::string path = dir.file("dup.h5");
  {
    H5Writer w(path);
    w.fixed_strings("/", "layer_names", {"dense"});
    w.group("/dense");
    w.fixed_strings("/dense", "weight_names", {"kernel:0", "dense/kernel:0"});
    w.dataset("/dense/kernel:0", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
    w.dataset("/dense/dense/kernel:0", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(contains(e.what(), "dense/kernel"));
}

TEST_CASE("error: data stored in an external file is refused") {
  TempDir dir;
  const std::string path = dir.file("external.h5");
  wpack::test::write_file(dir.file("raw.bin"), std::vector<uint8_t>(16, 0));
  {
    H5Writer w(path);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    REQUIRE(H5Pset_external(dcpl, dir.file("raw.bin").c_str(), 0, 16) >= 0);
    w.dataset("/w", H5T_IEEE_F32LE, {4}, H5T_IEEE_F32LE, nullptr, dcpl);
    H5Pclose(dcpl);
  }
  const Error e = capture_error([&] { open_hdf5(path); });
  REQUIRE(e.code() == ErrorCode::kUnsupported);
  REQUIRE(contains(e.what(), "external"));
}

TEST_CASE("error: a boolean byte other than 0/1 is corrupt, an out-of-range index is refused") {
  TempDir dir;
  const std::string path = dir.file("bool.h5");
  {
    H5Writer w(path);
    hid_t bool_type = make_bool_type();
    const std::vector<uint8_t> raw = {1, 2};  // written without conversion: 2 is no member
    w.dataset("/flags", bool_type, {2}, bool_type, raw.data());
    H5Tclose(bool_type);
  }
  auto source = open_hdf5(path);
  REQUIRE(source->tensors().size() == 1);
  const Error bad = capture_error([&] { source->read(0); });
  REQUIRE(bad.code() == ErrorCode::kCorrupt);
  REQUIRE(contains(bad.what(), "flags"));
  const Error range = capture_error([&] { source->read(1); });
  REQUIRE(range.code() == ErrorCode::kInvalidArgument);
}

// ---- dispatch --------------------------------------------------------------------------------

TEST_CASE("open_tensor_source dispatches HDF5 files by signature") {
  TempDir dir;
  const std::string legacy = dir.file("model.bin");  // no telling extension on purpose
  write_keras_full_model(legacy);
  auto a = open_tensor_source(legacy);
  REQUIRE(a->format_name() == "keras-h5");
  REQUIRE(a->tensors().size() == 6);

  const std::string keras3 = dir.file("k3.weights.h5");
  {
    H5Writer w(keras3);
    w.dataset("/layers/dense/vars/0", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
  }
  auto b = open_tensor_source(keras3);
  REQUIRE(b->format_name() == "keras3-weights-h5");
  REQUIRE(names_of(*b) == std::vector<std::string>{"dense/vars/0"});
  REQUIRE(read_bytes(*b, 0) == kBias);

  const std::string generic = dir.file("plain.h5");
  {
    H5Writer w(generic);
    w.dataset("/x", H5T_IEEE_F32LE, {3}, H5T_IEEE_F32LE, kBias.data());
  }
  auto c = open_tensor_source(generic);
  REQUIRE(c->format_name() == "hdf5");
  REQUIRE(names_of(*c) == std::vector<std::string>{"x"});

  // A user block before the superblock (h5py's userblock_size): the signature at 512, 1024, ...
  for (hsize_t user_block : {512, 2048}) {
    const std::string ub = dir.file("ub" + std::to_string(user_block) + ".h5");
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    REQUIRE(H5Pset_userblock(fcpl, user_block) >= 0);
    hid_t file = H5Fcreate(ub.c_str(), H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    REQUIRE(file >= 0);
    const hsize_t dims[1] = {3};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    hid_t ds = H5Dcreate2(file, "/x", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(H5Dwrite(ds, H5T_IEEE_F32LE, H5S_ALL, H5S_ALL, H5P_DEFAULT, kBias.data()) >= 0);
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(file);
    H5Pclose(fcpl);
    auto d = open_tensor_source(ub);
    CHECK(d->format_name() == "hdf5");
    CHECK(read_bytes(*d, 0) == kBias);
  }
}

// A safetensors header may start with whitespace (the reference implementation reads it): such a
// file is safetensors even when its tensor data holds the HDF5 signature where a user block would
// end. It was opened as HDF5 ("not a readable HDF5 file").
TEST_CASE("open_tensor_source: a safetensors file whose header starts with spaces is safetensors, whatever its data") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  std::string header = "  \n{\"w\":{\"dtype\":\"U8\",\"shape\":[2048],\"data_offsets\":[0,2048]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<uint8_t> file;
  for (int i = 0; i < 8; ++i) file.push_back(static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i)));
  for (char c : header) file.push_back(static_cast<uint8_t>(c));
  const size_t data = file.size();
  file.resize(data + 2048, 7);
  const uint8_t signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  std::copy(signature, signature + 8, file.begin() + 1024);  // inside the tensor's bytes
  test::write_file(path, file);
  auto source = open_tensor_source(path);
  CHECK(source->format_name() == "safetensors");
  REQUIRE(source->tensors().size() == 1);
  CHECK(read_bytes(*source, 0) == std::vector<uint8_t>(file.begin() + data, file.end()));
}
