// HDF5 weight reader: layout detection, type mapping and lazy reads (contract in formats/hdf5.h).
//
// Every libhdf5 call in this file runs under one process-wide mutex: the Debian libhdf5 is built
// without its thread-safety option, so two readers (or two read() calls) on different threads
// must not enter the library at the same time.
#include "formats/hdf5.h"

#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "formats/error.h"

namespace wpack {
namespace {

// One tensor may not exceed this many bytes. HDF5 data can be chunked and compressed, so the
// declared size cannot be bounded by the file size; this cap keeps a hostile header from asking
// for an absurd allocation (the largest real weight tensors are a few GiB).
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 36;  // 64 GiB
// A dataset may be stored in at most max(2^20, bytes / 64) chunks, and never more than 2^24 (libhdf5
// takes ~3.4 us a chunk, written or not: at most ~4 s for a small dataset, ~1 min in all).
constexpr uint64_t kMaxChunks = uint64_t{1} << 24;
constexpr unsigned kMaxGroupDepth = 256;                 // group nesting walked (Keras nests a few levels)
// Bounds on string-list attributes (layer_names, weight_names) before allocating for them.
constexpr uint64_t kMaxAttributeStrings = uint64_t{1} << 24;
constexpr uint64_t kMaxAttributeBytes = uint64_t{1} << 30;

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Handles and errors

// Owns one HDF5 identifier and closes it with the matching H5?close function.
class Hid {
 public:
  using CloseFn = herr_t (*)(hid_t);
  Hid() = default;
  Hid(hid_t id, CloseFn close) : id_(id), close_(close) {}
  ~Hid() { reset(); }
  Hid(Hid&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)), close_(other.close_) {}
  Hid& operator=(Hid&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
      close_ = other.close_;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  CloseFn close_ = nullptr;
};

// The innermost message on HDF5's error stack as " (message)", or "" when the stack is empty;
// clears the stack. Newlines are flattened so that wpack messages stay one line.
std::string hdf5_detail() {
  std::string detail;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
        if (n == 0 && err != nullptr && err->desc != nullptr) *static_cast<std::string*>(data) = err->desc;
        return 0;
      },
      &detail);
  H5Eclear2(H5E_DEFAULT);
  std::replace(detail.begin(), detail.end(), '\n', ' ');
  if (detail.find("bad version number") != std::string::npos)  // a newer file format (libver 'latest')
    detail += "; the file may need a newer HDF5 library than the " + std::to_string(H5_VERS_MAJOR) + "." +
              std::to_string(H5_VERS_MINOR) + " this wpack uses";
  return detail.empty() ? std::string() : " (" + detail + ")";
}

// Per-file context for messages: "<file>: <what>: <problem> (<hdf5 detail>)".
struct Ctx {
  std::string path;

  [[noreturn]] void fail(ErrorCode code, const std::string& what, const std::string& problem) const {
    throw Error(code, path + ": " + what + ": " + problem + hdf5_detail());
  }
  // Checks an HDF5 return value (negative = failure).
  template <typename T>
  T check(T ret, ErrorCode code, const std::string& what, const std::string& problem) const {
    if (ret < 0) fail(code, what, problem);
    return ret;
  }
  Hid hold(hid_t id, Hid::CloseFn close, ErrorCode code, const std::string& what,
           const std::string& problem) const {
    if (id < 0) fail(code, what, problem);
    return Hid(id, close);
  }
};

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// External links would make a weight file read other files on this machine: refuse to follow them.
herr_t deny_external_link(const char*, const char*, const char*, const char*, unsigned*, hid_t, void*) {
  return -1;
}

// Link access property list used for every open by name.
Hid make_link_access(const Ctx& ctx) {
  Hid lapl = ctx.hold(H5Pcreate(H5P_LINK_ACCESS), H5Pclose, ErrorCode::kIo, "HDF5", "cannot create a property list");
  ctx.check(H5Pset_elink_cb(lapl.get(), deny_external_link, nullptr), ErrorCode::kIo, "HDF5",
            "cannot set the external link policy");
  return lapl;
}

// Opens `name` below `loc` as an object of type `want` (H5I_GROUP or H5I_DATASET).
Hid open_object(const Ctx& ctx, hid_t loc, hid_t lapl, const std::string& name, H5I_type_t want,
                const std::string& what) {
  hid_t id = H5Oopen(loc, name.c_str(), lapl);
  if (id < 0) {
    const std::string detail = hdf5_detail();  // H5Oopen's (the calls below clear the stack)
    // An external link (another file) on the way is there but not followed: say so, not "no such
    // object". Each prefix of the path is asked for its link in turn, so that no external link is
    // traversed (lapl refuses them) before it is seen.
    bool external = false;
    for (size_t end = 0; end != std::string::npos && !external;) {
      end = name.find('/', end + 1);
      const std::string prefix = name.substr(0, end);  // "a", "a/b", ...; "/a", "/a/b" for an absolute name
      if (prefix.empty() || prefix.back() == '/') continue;  // an empty name; "a//b": its "a/"
      H5L_info_t link{};
      if (H5Lexists(loc, prefix.c_str(), lapl) <= 0 || H5Lget_info(loc, prefix.c_str(), &link, lapl) < 0) break;
      external = link.type == H5L_TYPE_EXTERNAL;
    }
    H5Eclear2(H5E_DEFAULT);
    if (external) ctx.fail(ErrorCode::kUnsupported, what, "is an external link to another file (not followed)");
    ctx.fail(ErrorCode::kFormat, what, "no such object in the file" + detail);
  }
  Hid obj(id, H5Oclose);
  if (H5Iget_type(obj.get()) != want) {
    ctx.fail(ErrorCode::kFormat, what, want == H5I_GROUP ? "is not a group" : "is not a dataset");
  }
  return obj;
}

// The absolute path HDF5 knows the open object `obj` by, which read() opens it by again. Keras
// legacy weight and layer names are joined to a path only for messages: a name that starts with
// '/' is absolute (in HDF5 as in h5py) and the joined string would name another object.
std::string object_path(const Ctx& ctx, hid_t obj, const std::string& what) {
  const ssize_t size = ctx.check(H5Iget_name(obj, nullptr, 0), ErrorCode::kFormat, what, "cannot query its path");
  if (size == 0) ctx.fail(ErrorCode::kFormat, what, "has no path in the file");
  std::string path(static_cast<size_t>(size) + 1, '\0');
  ctx.check(H5Iget_name(obj, path.data(), path.size()), ErrorCode::kFormat, what, "cannot query its path");
  path.resize(static_cast<size_t>(size));
  return path;
}

// A key that identifies one object of the file (its header address), to detect hard-link cycles.
std::string object_key(const Ctx& ctx, hid_t obj, const std::string& what) {
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  ctx.check(H5Oget_info3(obj, &info, H5O_INFO_BASIC), ErrorCode::kFormat, what, "cannot query the object");
  return std::string(reinterpret_cast<const char*>(&info.token), sizeof(info.token));
#else
  H5O_info_t info;
  ctx.check(H5Oget_info2(obj, &info, H5O_INFO_BASIC), ErrorCode::kFormat, what, "cannot query the object");
  return std::string(reinterpret_cast<const char*>(&info.addr), sizeof(info.addr));
#endif
}

// ---------------------------------------------------------------------------------------------
// Attributes

bool has_attribute(const Ctx& ctx, hid_t obj, const std::string& name, const std::string& what) {
  return ctx.check(H5Aexists(obj, name.c_str()), ErrorCode::kFormat, what,
                   "cannot query attribute " + quoted(name)) > 0;
}

// Reads a string (or string-array) attribute, fixed or variable length, as a flat list. A
// zero-element attribute of any type is an empty list: Keras writes `np.asarray([])` (float64,
// shape [0]) for a layer without weights.
std::vector<std::string> read_string_attribute(const Ctx& ctx, hid_t obj, const std::string& name,
                                               const std::string& owner) {
  const std::string what = owner + " attribute " + quoted(name);
  Hid attr = ctx.hold(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, ErrorCode::kFormat, what, "cannot open");
  Hid file_type = ctx.hold(H5Aget_type(attr.get()), H5Tclose, ErrorCode::kFormat, what, "cannot read its type");
  Hid space = ctx.hold(H5Aget_space(attr.get()), H5Sclose, ErrorCode::kFormat, what, "cannot read its shape");
  const hssize_t points = ctx.check(H5Sget_simple_extent_npoints(space.get()), ErrorCode::kFormat, what,
                                    "cannot read its element count");
  if (points == 0) return {};
  if (H5Tget_class(file_type.get()) != H5T_STRING) ctx.fail(ErrorCode::kFormat, what, "is not a list of strings");
  const auto count = static_cast<uint64_t>(points);
  if (count > kMaxAttributeStrings) ctx.fail(ErrorCode::kFormat, what, "has too many strings");

  const H5T_cset_t cset = H5Tget_cset(file_type.get());
  std::vector<std::string> out;
  out.reserve(count);
  const htri_t is_variable = ctx.check(H5Tis_variable_str(file_type.get()), ErrorCode::kFormat, what,
                                       "cannot read its string type");
  if (is_variable > 0) {
    Hid mem_type = ctx.hold(H5Tcopy(H5T_C_S1), H5Tclose, ErrorCode::kIo, what, "cannot create a string type");
    ctx.check(H5Tset_size(mem_type.get(), H5T_VARIABLE), ErrorCode::kIo, what, "cannot create a string type");
    ctx.check(H5Tset_cset(mem_type.get(), cset), ErrorCode::kIo, what, "cannot create a string type");
    std::vector<char*> ptrs(count, nullptr);
    ctx.check(H5Aread(attr.get(), mem_type.get(), ptrs.data()), ErrorCode::kFormat, what, "cannot read");
    for (char* p : ptrs) out.emplace_back(p != nullptr ? p : "");
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem_type.get(), space.get(), H5P_DEFAULT, ptrs.data());
#else
    H5Dvlen_reclaim(mem_type.get(), space.get(), H5P_DEFAULT, ptrs.data());
#endif
    return out;
  }

  const size_t width = H5Tget_size(file_type.get());
  if (width == 0) ctx.fail(ErrorCode::kFormat, what, "has a zero-width string type");
  const uint64_t total = checked_mul(count, width, ctx.path + ": " + what);
  if (total > kMaxAttributeBytes) ctx.fail(ErrorCode::kFormat, what, "is too large");
  // Reading into a null-padded memory type of the same width converts space padding as well.
  Hid mem_type = ctx.hold(H5Tcopy(H5T_C_S1), H5Tclose, ErrorCode::kIo, what, "cannot create a string type");
  ctx.check(H5Tset_size(mem_type.get(), width), ErrorCode::kIo, what, "cannot create a string type");
  ctx.check(H5Tset_strpad(mem_type.get(), H5T_STR_NULLPAD), ErrorCode::kIo, what, "cannot create a string type");
  ctx.check(H5Tset_cset(mem_type.get(), cset), ErrorCode::kIo, what, "cannot create a string type");
  std::vector<char> buffer(total);
  ctx.check(H5Aread(attr.get(), mem_type.get(), buffer.data()), ErrorCode::kFormat, what, "cannot read");
  for (uint64_t i = 0; i < count; ++i) {
    const char* s = buffer.data() + i * width;
    const size_t length = strnlen(s, width);
    // NUL padding only: "a\0b" would name object "a"
    if (std::any_of(s + length, s + width, [](char c) { return c != '\0'; }))
      ctx.fail(ErrorCode::kFormat, what, "entry " + std::to_string(i) + " has a NUL byte inside");
    out.emplace_back(s, length);
  }
  return out;
}

// Keras' attribute convention: `name`, or when too large for one HDF5 attribute the chunks
// `name0, name1, ...` concatenated in numeric order. nullopt when neither form is present.
std::optional<std::vector<std::string>> read_keras_string_list(const Ctx& ctx, hid_t obj, const std::string& name,
                                                               const std::string& owner) {
  if (has_attribute(ctx, obj, name, owner)) return read_string_attribute(ctx, obj, name, owner);
  std::optional<std::vector<std::string>> out;
  for (uint64_t chunk = 0;; ++chunk) {
    const std::string chunk_name = name + std::to_string(chunk);
    if (!has_attribute(ctx, obj, chunk_name, owner)) break;
    if (!out) out.emplace();
    std::vector<std::string> part = read_string_attribute(ctx, obj, chunk_name, owner);
    if (out->size() + part.size() > kMaxAttributeStrings) {
      ctx.fail(ErrorCode::kFormat, owner + " attribute " + quoted(name), "has too many strings");
    }
    for (auto& s : part) out->push_back(std::move(s));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dataset types

enum class TypeVerdict { kSupported, kNotNumeric, kUnsupported };

struct TypeMapping {
  TypeVerdict verdict = TypeVerdict::kNotNumeric;
  DType dtype = DType::F32;
  std::string reason;  // for kNotNumeric / kUnsupported
};

// The float layouts wpack reads, by their HDF5 fields (HDF5 2.0 predefines the last three as
// H5T_FLOAT_BFLOAT16LE/BE, H5T_FLOAT_F8E4M3 and H5T_FLOAT_F8E5M2).
struct FloatLayout {
  DType dtype;
  size_t size, spos, epos, esize, msize, ebias;  // mantissa at bit 0
};
constexpr FloatLayout kFloatLayouts[] = {
    {DType::F64, 8, 63, 52, 11, 52, 1023}, {DType::F32, 4, 31, 23, 8, 23, 127}, {DType::F16, 2, 15, 10, 5, 10, 15},
    {DType::BF16, 2, 15, 7, 8, 7, 127},    {DType::F8_E4M3, 1, 7, 3, 4, 3, 7},  {DType::F8_E5M2, 1, 7, 2, 5, 2, 15},
};

// The dtype of a float type whose layout is one of kFloatLayouts, without padding bits.
std::optional<DType> float_dtype(hid_t type, size_t size) {
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return std::nullopt;
  if (H5Tget_offset(type) != 0 || H5Tget_precision(type) != size * 8 || H5Tget_norm(type) != H5T_NORM_IMPLIED) {
    return std::nullopt;
  }
  const size_t ebias = H5Tget_ebias(type);
  for (const FloatLayout& f : kFloatLayouts)
    if (f.size == size && f.spos == spos && f.epos == epos && f.esize == esize && mpos == 0 && f.msize == msize &&
        f.ebias == ebias)
      return f.dtype;
  return std::nullopt;
}

// h5py's numpy-bool encoding: an enum of a one-byte integer with exactly FALSE = 0 and TRUE = 1.
bool is_bool_enum(hid_t type) {
  if (H5Tget_nmembers(type) != 2) return false;
  Hid base(H5Tget_super(type), H5Tclose);
  if (!base.valid() || H5Tget_class(base.get()) != H5T_INTEGER || H5Tget_size(base.get()) != 1) return false;
  bool saw_false = false, saw_true = false;
  for (unsigned i = 0; i < 2; ++i) {
    char* name = H5Tget_member_name(type, i);
    if (name == nullptr) return false;
    const std::string member(name);
    H5free_memory(name);
    uint8_t value = 0xFF;
    if (H5Tget_member_value(type, i, &value) < 0) return false;
    if (member == "FALSE" && value == 0) saw_false = true;
    if (member == "TRUE" && value == 1) saw_true = true;
  }
  return saw_false && saw_true;
}

TypeMapping map_type(hid_t type) {
  TypeMapping m;
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  auto supported = [&](DType d) {
    m.verdict = TypeVerdict::kSupported;
    m.dtype = d;
    return m;
  };
  auto unsupported = [&](const std::string& reason) {
    m.verdict = TypeVerdict::kUnsupported;
    m.reason = reason;
    return m;
  };
  switch (cls) {
    case H5T_FLOAT: {
      const H5T_order_t order = H5Tget_order(type);
      if (order != H5T_ORDER_LE && order != H5T_ORDER_BE) return unsupported("float of unsupported byte order");
      if (const std::optional<DType> d = float_dtype(type, size)) return supported(*d);
      return unsupported("float of " + std::to_string(size * 8) +
                         " bits that is not IEEE 754 half/single/double, bfloat16, FP8 E4M3 or FP8 E5M2");
    }
    case H5T_INTEGER: {
      const H5T_order_t order = H5Tget_order(type);
      if (order != H5T_ORDER_LE && order != H5T_ORDER_BE) return unsupported("integer of unsupported byte order");
      const H5T_sign_t sign = H5Tget_sign(type);
      const bool is_signed = sign == H5T_SGN_2;
      if (!is_signed && sign != H5T_SGN_NONE) return unsupported("integer of unknown signedness");
      switch (size) {
        case 1: return supported(is_signed ? DType::I8 : DType::U8);
        case 2: return supported(is_signed ? DType::I16 : DType::U16);
        case 4: return supported(is_signed ? DType::I32 : DType::U32);
        case 8: return supported(is_signed ? DType::I64 : DType::U64);
        default: return unsupported("integer of " + std::to_string(size) + " bytes");
      }
    }
    case H5T_ENUM:
      if (is_bool_enum(type)) return supported(DType::BOOL);
      m.reason = "enum that is not a FALSE/TRUE boolean";
      return m;
    case H5T_STRING: m.reason = "string type"; return m;
    case H5T_COMPOUND: m.reason = "compound type"; return m;
    case H5T_OPAQUE: m.reason = "opaque type"; return m;
    case H5T_ARRAY: m.reason = "array type"; return m;
    case H5T_VLEN: m.reason = "variable-length type"; return m;
    case H5T_REFERENCE: m.reason = "reference type"; return m;
    case H5T_BITFIELD: m.reason = "bitfield type"; return m;
    case H5T_TIME: m.reason = "time type"; return m;
    default: m.reason = "unknown type class"; return m;
  }
}

// The little-endian memory type HDF5 converts into for `dtype` (big-endian files are byte-swapped
// by H5Dread: a float's layout is one of kFloatLayouts, so only its byte order differs, and HDF5
// swaps the bytes without touching the value, NaN payloads included). HDF5 1.10 predefines only
// the IEEE single and double types, so the others are built field by field.
Hid memory_type(const Ctx& ctx, DType dtype, const std::string& what) {
  auto copy = [&](hid_t predefined) {
    return ctx.hold(H5Tcopy(predefined), H5Tclose, ErrorCode::kIo, what, "cannot create a memory type");
  };
  for (const FloatLayout& f : kFloatLayouts) {
    if (f.dtype != dtype) continue;
    Hid t = copy(f.size == 8 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE);  // fields are set within the size
    if (H5Tset_fields(t.get(), f.spos, f.epos, f.esize, 0, f.msize) < 0 || H5Tset_size(t.get(), f.size) < 0 ||
        H5Tset_ebias(t.get(), f.ebias) < 0) {
      ctx.fail(ErrorCode::kIo, what, "cannot create the " + std::string(dtype_name(dtype)) + " memory type");
    }
    return t;
  }
  switch (dtype) {
    case DType::I64: return copy(H5T_STD_I64LE);
    case DType::I32: return copy(H5T_STD_I32LE);
    case DType::I16: return copy(H5T_STD_I16LE);
    case DType::I8: return copy(H5T_STD_I8LE);
    case DType::U64: return copy(H5T_STD_U64LE);
    case DType::U32: return copy(H5T_STD_U32LE);
    case DType::U16: return copy(H5T_STD_U16LE);
    case DType::U8: return copy(H5T_STD_U8LE);
    case DType::BOOL: {
      // Enum-to-enum conversion matches members by name, so any FALSE/TRUE file enum lands as 0/1.
      Hid t = ctx.hold(H5Tenum_create(H5T_NATIVE_INT8), H5Tclose, ErrorCode::kIo, what, "cannot create a memory type");
      const int8_t no = 0, yes = 1;
      if (H5Tenum_insert(t.get(), "FALSE", &no) < 0 || H5Tenum_insert(t.get(), "TRUE", &yes) < 0) {
        ctx.fail(ErrorCode::kIo, what, "cannot create the boolean memory type");
      }
      return t;
    }
    default: ctx.fail(ErrorCode::kUnsupported, what, "dtype not produced by the HDF5 reader");
  }
}

// ---------------------------------------------------------------------------------------------
// Datasets

struct Entry {
  TensorInfo info;
  std::string dataset_path;  // absolute HDF5 path, e.g. "/model_weights/dense/dense/kernel:0"
  std::vector<uint64_t> chunk;  // a chunked dataset's chunk shape (each >= 1), else empty
  bool raw = false;             // read in the file's own type, bytes as stored (is_keras_bfloat16)
};

// Keras 3 saves a bfloat16 variable as ml_dtypes' bfloat16, which h5py stores as a 2-byte opaque
// type, and tags the dataset with the string attribute dtype = "bfloat16" (H5IOStore). Such a
// dataset holds BF16 values as their little-endian bytes.
bool is_keras_bfloat16(const Ctx& ctx, hid_t dataset, hid_t type, const std::string& what) {
  if (H5Tget_class(type) != H5T_OPAQUE || H5Tget_size(type) != 2 || !has_attribute(ctx, dataset, "dtype", what))
    return false;
  Hid attr = ctx.hold(H5Aopen(dataset, "dtype", H5P_DEFAULT), H5Aclose, ErrorCode::kFormat, what, "cannot open attribute 'dtype'");
  Hid attr_type = ctx.hold(H5Aget_type(attr.get()), H5Tclose, ErrorCode::kFormat, what, "cannot read attribute 'dtype'");
  if (H5Tget_class(attr_type.get()) != H5T_STRING) return false;
  const std::vector<std::string> dtype = read_string_attribute(ctx, dataset, "dtype", what);
  return dtype.size() == 1 && dtype[0] == "bfloat16";
}

// Describes the open dataset `dataset` (at `dataset_path`) as a tensor named `name`. Returns
// nullopt for a non-numeric dataset when `skip_non_numeric`; otherwise such a dataset is an
// Error(kUnsupported). Checks the shape product and byte size for overflow and the size cap, and
// refuses raw data stored outside the file (external storage, virtual datasets).
std::optional<Entry> describe_dataset(const Ctx& ctx, hid_t dataset, const std::string& dataset_path,
                                      const std::string& name, bool skip_non_numeric, std::string* skipped = nullptr) {
  const std::string what = "dataset " + quoted(dataset_path);
  Hid file_type = ctx.hold(H5Dget_type(dataset), H5Tclose, ErrorCode::kFormat, what, "cannot read its type");
  TypeMapping mapping = map_type(file_type.get());
  const bool raw = mapping.verdict == TypeVerdict::kNotNumeric && is_keras_bfloat16(ctx, dataset, file_type.get(), what);
  if (raw) mapping = {TypeVerdict::kSupported, DType::BF16, {}};
  if (mapping.verdict == TypeVerdict::kUnsupported) ctx.fail(ErrorCode::kUnsupported, what, mapping.reason);
  if (mapping.verdict == TypeVerdict::kNotNumeric) {
    if (skip_non_numeric) {
      if (skipped) *skipped = quoted(dataset_path) + " (" + mapping.reason + ")";
      return std::nullopt;
    }
    ctx.fail(ErrorCode::kUnsupported, what, "has a " + mapping.reason + ", not a numeric tensor");
  }

  Hid space = ctx.hold(H5Dget_space(dataset), H5Sclose, ErrorCode::kFormat, what, "cannot read its shape");
  const H5S_class_t space_class = H5Sget_simple_extent_type(space.get());
  if (space_class == H5S_NULL) {
    if (skip_non_numeric) {
      if (skipped) *skipped = quoted(dataset_path) + " (null dataspace)";
      return std::nullopt;
    }
    ctx.fail(ErrorCode::kUnsupported, what, "has a null dataspace (no shape)");
  }
  if (space_class != H5S_SCALAR && space_class != H5S_SIMPLE) ctx.fail(ErrorCode::kFormat, what, "has an unknown dataspace");

  Entry entry;
  entry.info.name = name;
  entry.info.dtype = mapping.dtype;
  entry.dataset_path = dataset_path;
  entry.raw = raw;
  std::vector<hsize_t> max_dims;
  if (space_class == H5S_SIMPLE) {
    const int rank = ctx.check(H5Sget_simple_extent_ndims(space.get()), ErrorCode::kFormat, what, "cannot read its rank");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    max_dims.resize(dims.size());
    ctx.check(H5Sget_simple_extent_dims(space.get(), dims.data(), max_dims.data()), ErrorCode::kFormat, what,
              "cannot read its dimensions");
    for (size_t i = 0; i < dims.size(); ++i)  // the library checks this when it writes, not when it reads
      if (max_dims[i] != H5S_UNLIMITED && dims[i] > max_dims[i])
        ctx.fail(ErrorCode::kCorrupt, what,
                 "dimension " + std::to_string(i) + " is " + std::to_string(dims[i]) + ", more than its maximum " +
                     std::to_string(max_dims[i]));
    entry.info.shape.assign(dims.begin(), dims.end());
  }
  const std::string label = ctx.path + ": " + what;
  uint64_t elements = 1;
  for (uint64_t d : entry.info.shape) elements = checked_mul(elements, d, label);
  const uint64_t bytes = checked_mul(elements, dtype_size(mapping.dtype), label);
  if (bytes > kMaxTensorBytes) {
    ctx.fail(ErrorCode::kUnsupported, what, std::to_string(bytes) + " bytes exceeds the per-tensor limit of " +
                                                std::to_string(kMaxTensorBytes) + " bytes");
  }

  Hid dcpl = ctx.hold(H5Dget_create_plist(dataset), H5Pclose, ErrorCode::kFormat, what, "cannot read its layout");
  if (ctx.check(H5Pget_external_count(dcpl.get()), ErrorCode::kFormat, what, "cannot read its layout") > 0) {
    ctx.fail(ErrorCode::kUnsupported, what, "stores its data in external files");
  }
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout == H5D_VIRTUAL) ctx.fail(ErrorCode::kUnsupported, what, "is a virtual dataset");
  if (layout == H5D_CHUNKED) {
    // Chunks no larger than a fixed dimension, as the library requires when it creates a dataset:
    // libhdf5 1.10 reads a file whose chunk shape was changed after its chunks were indexed with
    // success, the values misplaced and partly uninitialised.
    std::vector<hsize_t> chunk(max_dims.size());
    if (ctx.check(H5Pget_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), ErrorCode::kFormat, what,
                  "cannot read its chunk shape") != static_cast<int>(chunk.size()))
      ctx.fail(ErrorCode::kCorrupt, what, "its chunk rank differs from its rank");
    // (the library does not apply the rule to a dimension of size 0: h5py gives an empty dataset
    // chunks of 1024 with a maximum of 0)
    for (size_t i = 0; i < chunk.size(); ++i)
      if (chunk[i] == 0 || (max_dims[i] != H5S_UNLIMITED && entry.info.shape[i] != 0 && chunk[i] > max_dims[i]))
        ctx.fail(ErrorCode::kCorrupt, what,
                 "chunk dimension " + std::to_string(i) + " is " + std::to_string(chunk[i]) +
                     (chunk[i] == 0 ? "" : ", more than the dataset's maximum " + std::to_string(max_dims[i])));
    entry.chunk.assign(chunk.begin(), chunk.end());
    // A small file that declares a large dataset of tiny chunks would otherwise take hours.
    uint64_t chunks = 1;
    for (size_t i = 0; i < chunk.size(); ++i) chunks = checked_mul(chunks, (entry.info.shape[i] + chunk[i] - 1) / chunk[i], label);
    const uint64_t most = std::min(kMaxChunks, std::max<uint64_t>(uint64_t{1} << 20, bytes / 64));
    if (chunks > most)
      ctx.fail(ErrorCode::kUnsupported, what,
               "is stored in " + std::to_string(chunks) + " chunks, more than wpack reads for its " + std::to_string(bytes) +
                   " bytes (" + std::to_string(most) + "); h5repack -l CHUNK=... can store it in larger chunks");
  }
  // A filter this libhdf5 lacks (e.g. h5py's LZF, 32000, is a plugin) fails every read: say which,
  // here rather than at the read.
  const int filters = ctx.check(H5Pget_nfilters(dcpl.get()), ErrorCode::kFormat, what, "cannot read its filters");
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0, config = 0;
    size_t values = 0;
    char filter_name[64] = {};
    const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &values, nullptr,
                                           sizeof filter_name, filter_name, &config);
    if (id < 0) ctx.fail(ErrorCode::kFormat, what, "cannot read its filters");
    if (H5Zfilter_avail(id) <= 0) {
      H5Eclear2(H5E_DEFAULT);  // the plugin search's messages
      filter_name[sizeof filter_name - 1] = '\0';
      ctx.fail(ErrorCode::kUnsupported, what,
               "is compressed with HDF5 filter " + std::to_string(id) + (filter_name[0] ? " (" + quoted(filter_name) + ")" : "") +
                   ", which this libhdf5 does not have; h5repack -f NONE can store it without");
    }
  }
  if (layout == H5D_CONTIGUOUS) {
    // Uncompressed: allocated storage must hold exactly the declared elements (0 = never written,
    // reads return the fill value).
    const uint64_t stored = H5Dget_storage_size(dataset);
    const uint64_t expected = checked_mul(elements, H5Tget_size(file_type.get()), label);
    if (stored != 0 && stored != expected) {
      ctx.fail(ErrorCode::kCorrupt, what,
               "stores " + std::to_string(stored) + " bytes for " + std::to_string(expected) + " declared");
    }
  }
  return entry;
}

// The links of `group` (name and type), in byte order of their names.
std::vector<std::pair<std::string, H5L_type_t>> group_links(const Ctx& ctx, hid_t group, const std::string& what) {
  std::vector<std::pair<std::string, H5L_type_t>> links;
  ctx.check(H5Literate(
                group, H5_INDEX_NAME, H5_ITER_INC, nullptr,
                [](hid_t, const char* name, const H5L_info_t* info, void* data) -> herr_t {
                  static_cast<std::vector<std::pair<std::string, H5L_type_t>>*>(data)->emplace_back(name, info->type);
                  return 0;
                },
                &links),
            ErrorCode::kFormat, what, "cannot list the group");
  std::sort(links.begin(), links.end());
  return links;
}

// Keras 3 order: all-digit names ("0", "1", ..., "10") numerically first, then the rest by bytes.
bool keras3_name_less(const std::string& a, const std::string& b) {
  auto is_number = [](const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const bool na = is_number(a), nb = is_number(b);
  if (na != nb) return na;
  if (na) {
    const std::string_view ta = std::string_view(a).substr(std::min(a.find_first_not_of('0'), a.size()));
    const std::string_view tb = std::string_view(b).substr(std::min(b.find_first_not_of('0'), b.size()));
    if (ta.size() != tb.size()) return ta.size() < tb.size();
    if (ta != tb) return ta < tb;
  }
  return a < b;
}

// Depth-first walk over the hard links below a group, calling `on_dataset(hid, absolute_path)`.
class Walker {
 public:
  // links: when not null, the soft and external links met (not followed), "link '/path' (soft link,
  // not followed)", and the second names of datasets, "dataset '/b' (a second name of '/a')"
  Walker(const Ctx& ctx, hid_t lapl, bool numeric_order, std::vector<std::string>* links = nullptr)
      : ctx_(ctx), lapl_(lapl), numeric_order_(numeric_order), links_(links) {}

  template <typename OnDataset>
  void walk(hid_t group, const std::string& group_path, const std::vector<std::string>& skip, OnDataset&& on_dataset,
            unsigned depth = 0) {
    const std::string what = "group " + quoted(group_path.empty() ? "/" : group_path);
    // The walk recurses: a file of groups nested thousands deep would overflow the stack.
    if (depth > kMaxGroupDepth)
      ctx_.fail(ErrorCode::kUnsupported, what, "is nested more than " + std::to_string(kMaxGroupDepth) + " groups deep");
    // A group reached twice (hard-link cycle or alias) is walked once.
    if (!visited_.insert(object_key(ctx_, group, what)).second) return;
    // Hard links are walked; soft and external ones are not followed (and named in *links_).
    std::vector<std::string> names;
    for (const auto& [name, type] : group_links(ctx_, group, what)) {
      if (type == H5L_TYPE_HARD)
        names.push_back(name);
      else if (links_)
        links_->push_back("link " + quoted(group_path + "/" + name) + " (" +
                          (type == H5L_TYPE_SOFT ? "soft" : type == H5L_TYPE_EXTERNAL ? "external" : "user-defined") +
                          " link, not followed)");
    }
    if (numeric_order_) std::sort(names.begin(), names.end(), keras3_name_less);
    for (const std::string& name : names) {
      if (std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
      const std::string child_path = group_path + "/" + name;
      Hid child = ctx_.hold(H5Oopen(group, name.c_str(), lapl_), H5Oclose, ErrorCode::kFormat,
                            "object " + quoted(child_path), "cannot open");
      const H5I_type_t type = H5Iget_type(child.get());
      if (type == H5I_GROUP) {
        walk(child.get(), child_path, {}, on_dataset, depth + 1);
      } else if (type == H5I_DATASET) {
        // A dataset with two names (hard links) is one tensor, under the first name met.
        const auto [first, is_new] =
            datasets_.emplace(object_key(ctx_, child.get(), "dataset " + quoted(child_path)), child_path);
        if (!is_new) {
          if (links_) links_->push_back("dataset " + quoted(child_path) + " (a second name of " + quoted(first->second) + ")");
          continue;
        }
        on_dataset(child.get(), child_path);
      }  // committed datatypes are not tensors
    }
  }

 private:
  const Ctx& ctx_;
  hid_t lapl_;
  bool numeric_order_;
  std::vector<std::string>* links_;
  std::set<std::string> visited_;                  // groups
  std::map<std::string, std::string> datasets_;     // dataset key -> the path it was first met at
};

// ---------------------------------------------------------------------------------------------
// The source

class Hdf5Source final : public TensorSource {
 public:
  explicit Hdf5Source(const std::string& path) : ctx_{path}, path_(path) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    {
      std::ifstream probe(path, std::ios::binary);
      if (!probe) throw Error(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
    }
    try {
      file_ = ctx_.hold(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, ErrorCode::kFormat, "HDF5",
                        "not a readable HDF5 file");
      lapl_ = make_link_access(ctx_);
      list();
    } catch (...) {
      // Close while still holding the library lock (members would otherwise close after it).
      lapl_.reset();
      file_.reset();
      throw;
    }
  }

  ~Hdf5Source() override {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    lapl_.reset();
    file_.reset();
  }

  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::string& path() const override { return path_; }
  std::string format_name() const override { return format_name_; }
  std::vector<std::string> skipped() const override { return skipped_; }

  TensorBytes read(size_t index) const override {
    if (index >= entries_.size()) {
      throw Error(ErrorCode::kInvalidArgument, path_ + ": tensor index " + std::to_string(index) + " out of range (" +
                                                   std::to_string(entries_.size()) + " tensors)");
    }
    const Entry& entry = entries_[index];
    const std::string what = "tensor " + quoted(entry.info.name) + " (dataset " + quoted(entry.dataset_path) + ")";
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    Hid dataset = open_object(ctx_, file_.get(), lapl_.get(), entry.dataset_path, H5I_DATASET, what);
    // Still the dataset that was listed: the buffer below is sized from the listing.
    const Entry now = *describe_dataset(ctx_, dataset.get(), entry.dataset_path, entry.info.name, false);
    if (now.info.shape != entry.info.shape || now.info.dtype != entry.info.dtype || now.chunk != entry.chunk ||
        now.raw != entry.raw)
      ctx_.fail(ErrorCode::kCorrupt, what, "is not the dataset listed at that path (its shape, type or chunks differ)");
    const uint64_t size = entry.info.num_bytes();  // validated when listed
    std::vector<uint8_t> bytes;
    try {
      bytes.resize(size);
    } catch (const std::bad_alloc&) {
      ctx_.fail(ErrorCode::kIo, what, "cannot allocate " + std::to_string(size) + " bytes");
    }
    if (size != 0) read_dataset(dataset.get(), entry, what, bytes.data());
    if (entry.info.dtype == DType::BOOL) {
      for (uint8_t b : bytes) {
        if (b > 1) ctx_.fail(ErrorCode::kCorrupt, what, "boolean value " + std::to_string(b) + " is neither 0 nor 1");
      }
    }
    return TensorBytes::owned(std::move(bytes));
  }

 private:
  // Reads the whole dataset into `out`. A chunked dataset is read in blocks of at most
  // kChunksPerRead chunks: libhdf5 keeps a few KiB per chunk of a selection while it reads it, so
  // that a 2 GiB dataset of 4x4 chunks read at once needs tens of GiB. A block is whole along the
  // innermost dimensions whose chunks number at most kChunksPerRead together (from dimension d + 1
  // on), some chunks along dimension d, and one chunk along each dimension before d; each block
  // goes straight to its place in `out` (the same selection in a memory space of the full shape).
  void read_dataset(hid_t dataset, const Entry& entry, const std::string& what, uint8_t* out) const {
    Hid mem_type = entry.raw ? ctx_.hold(H5Dget_type(dataset), H5Tclose, ErrorCode::kFormat, what, "cannot read its type")
                             : memory_type(ctx_, entry.info.dtype, what);
    const std::vector<uint64_t>& shape = entry.info.shape;
    const std::vector<uint64_t>& chunk = entry.chunk;
    if (chunk.empty()) {  // contiguous or compact (or a scalar): one read
      ctx_.check(H5Dread(dataset, mem_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out), ErrorCode::kCorrupt, what,
                 "read failed");
      return;
    }
    constexpr uint64_t kChunksPerRead = 16384;
    const size_t rank = shape.size();
    std::vector<uint64_t> chunks(rank);  // chunks along each dimension
    for (size_t i = 0; i < rank; ++i) chunks[i] = (shape[i] + chunk[i] - 1) / chunk[i];
    size_t d = rank - 1;  // the outermost dimension with at most kChunksPerRead chunks after it
    uint64_t after = 1;   // chunks of one block's dimensions after d
    while (d > 0 && after * chunks[d] <= kChunksPerRead) after *= chunks[d--];
    std::vector<hsize_t> step(rank), dims(shape.begin(), shape.end());
    for (size_t i = 0; i < rank; ++i) step[i] = i < d ? chunk[i] : i == d ? chunk[i] * std::max<uint64_t>(1, kChunksPerRead / after) : shape[i];
    Hid file_space = ctx_.hold(H5Dget_space(dataset), H5Sclose, ErrorCode::kFormat, what, "cannot read its shape");
    Hid mem_space = ctx_.hold(H5Screate_simple(static_cast<int>(rank), dims.data(), nullptr), H5Sclose, ErrorCode::kIo,
                              what, "cannot describe a read");
    std::vector<hsize_t> start(rank, 0), count(rank);
    for (;;) {  // blocks in row-major order of their first element
      for (size_t i = 0; i < rank; ++i) count[i] = std::min<hsize_t>(step[i], dims[i] - start[i]);
      for (hid_t space : {file_space.get(), mem_space.get()})
        ctx_.check(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
                   ErrorCode::kFormat, what, "cannot select a block");
      ctx_.check(H5Dread(dataset, mem_type.get(), mem_space.get(), file_space.get(), H5P_DEFAULT, out),
                 ErrorCode::kCorrupt, what, "read failed");
      size_t i = d + 1;  // the next block: carry from dimension d outwards
      while (i-- > 0) {
        start[i] += step[i];
        if (start[i] < dims[i]) break;
        start[i] = 0;
      }
      if (i == static_cast<size_t>(-1)) return;
    }
  }

  void add(Entry entry) {
    if (!names_.insert(entry.info.name).second) {
      ctx_.fail(ErrorCode::kFormat, "tensor " + quoted(entry.info.name),
                "two datasets map to this name (at " + quoted(entry.dataset_path) + ")");
    }
    infos_.push_back(entry.info);
    entries_.push_back(std::move(entry));
  }

  bool has_group(hid_t loc, const std::string& name) const {
    const htri_t exists = ctx_.check(H5Lexists(loc, name.c_str(), H5P_DEFAULT), ErrorCode::kFormat, "HDF5",
                                     "cannot query link " + quoted(name));
    if (exists <= 0) return false;
    Hid obj(H5Oopen(loc, name.c_str(), lapl_.get()), H5Oclose);
    if (!obj.valid()) {
      hdf5_detail();  // clears the stack: e.g. a dangling soft link is not a group
      return false;
    }
    return H5Iget_type(obj.get()) == H5I_GROUP;
  }

  void list() {
    const hid_t root = file_.get();
    // 1. Keras legacy: `layer_names` on the root (save_weights) or on `model_weights` (model.save).
    if (auto layers = read_keras_string_list(ctx_, root, "layer_names", "root group")) {
      list_keras_legacy(root, "", *layers);
      format_name_ = "keras-h5";
      return;
    }
    if (has_group(root, "model_weights")) {
      Hid group = open_object(ctx_, root, lapl_.get(), "model_weights", H5I_GROUP, "group 'model_weights'");
      if (auto layers = read_keras_string_list(ctx_, group.get(), "layer_names", "group '/model_weights'")) {
        list_keras_legacy(group.get(), "/model_weights", *layers);
        format_name_ = "keras-h5";
        return;
      }
    }
    // 2. Keras 3: `layers/...` and the model's own `vars`; `optimizer` skipped.
    if (has_group(root, "layers") || has_group(root, "vars")) {
      Walker walker(ctx_, lapl_.get(), /*numeric_order=*/true, &skipped_);
      walker.walk(root, "", {"optimizer"}, [&](hid_t dataset, const std::string& dataset_path) {
        std::string name = dataset_path.substr(1);
        if (name.rfind("layers/", 0) == 0) name.erase(0, 7);
        add(*describe_dataset(ctx_, dataset, dataset_path, name, /*skip_non_numeric=*/false));
      });
      format_name_ = "keras3-weights-h5";
      return;
    }
    // 3. Generic: every numeric dataset.
    Walker walker(ctx_, lapl_.get(), /*numeric_order=*/false, &skipped_);
    walker.walk(root, "", {}, [&](hid_t dataset, const std::string& dataset_path) {
      std::string why;
      if (auto entry = describe_dataset(ctx_, dataset, dataset_path, dataset_path.substr(1), /*skip_non_numeric=*/true, &why))
        add(std::move(*entry));
      else
        skipped_.push_back("dataset " + why);
    });
    format_name_ = "hdf5";
  }

  // `weights_root` holds one group per layer; `root_path` is its absolute path ("" for the root).
  // Then the model's own variables, which belong to no layer: Keras' legacy writer puts them in the
  // group `top_level_model_weights` (with its own weight_names), read as a layer of that name.
  void list_keras_legacy(hid_t weights_root, const std::string& root_path, const std::vector<std::string>& layers) {
    for (const std::string& layer : layers) list_keras_layer(weights_root, root_path, layer, "named in layer_names");
    const std::string top = "top_level_model_weights";
    if (std::find(layers.begin(), layers.end(), top) == layers.end() && has_group(weights_root, top))
      list_keras_layer(weights_root, root_path, top, "of the model's own weights");
  }

  void list_keras_layer(hid_t weights_root, const std::string& root_path, const std::string& layer, const char* role) {
    const std::string layer_path = root_path + "/" + layer;
    const std::string layer_what = "layer group " + quoted(layer_path) + " " + role;
    Hid group = open_object(ctx_, weights_root, lapl_.get(), layer, H5I_GROUP, layer_what);
    // A layer without weights may omit `weight_names` or store an empty list.
    const std::vector<std::string> weights =
        read_keras_string_list(ctx_, group.get(), "weight_names", "group " + quoted(layer_path)).value_or(
            std::vector<std::string>{});
    for (const std::string& weight : weights) {
      const std::string dataset_path = layer_path + "/" + weight;
      const std::string dataset_what = "dataset " + quoted(dataset_path) + " named in weight_names";
      Hid dataset = open_object(ctx_, group.get(), lapl_.get(), weight, H5I_DATASET, dataset_what);
      std::string stem = weight;
      if (stem.size() >= 2 && stem.compare(stem.size() - 2, 2, ":0") == 0) stem.resize(stem.size() - 2);
      const std::string prefix = layer + "/";
      const std::string name = stem.rfind(prefix, 0) == 0 ? stem : prefix + stem;
      add(*describe_dataset(ctx_, dataset.get(), object_path(ctx_, dataset.get(), dataset_what), name,
                            /*skip_non_numeric=*/false));
    }
  }

  Ctx ctx_;
  std::string path_;
  Hid file_;
  Hid lapl_;
  std::string format_name_;
  std::vector<std::string> skipped_;  // generic and Keras 3 files: what is not given as a tensor, and why
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  std::set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace

std::unique_ptr<TensorSource> open_hdf5(const std::string& path) { return std::make_unique<Hdf5Source>(path); }

}  // namespace wpack
