// safetensors reader (single file and sharded index) and streaming writer. Contract: safetensors.h.
//
// File layout (all of it untrusted on read):
//   bytes [0, 8)        N, the header length, u64 little-endian
//   bytes [8, 8+N)      header: UTF-8 JSON object, may end in spaces
//                       { "__metadata__": {str: str}?, "<name>": {"dtype": str, "shape": [u64...],
//                         "data_offsets": [begin, end]}, ... }
//   bytes [8+N, EOF)    data: every tensor at [begin, end) relative to 8+N, contiguous, no trailing bytes
#include "formats/safetensors.h"

#include <algorithm>     // std::stable_sort
#include <cstring>       // std::memcpy
#include <filesystem>    // shard paths relative to the index
#include <optional>
#include <set>           // the writer's duplicate names
#include <string_view>
#include <unordered_map> // tensor name -> shard lookups

#include <nlohmann/json.hpp>  // header parsing and writing (no hand-written JSON)

#include "formats/detail/json_rules.h"
#include "formats/error.h"
#include "formats/io.h"

namespace wpack {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;
// An index file is a small JSON document; bound it like a header before parsing.
constexpr uint64_t kMaxIndexBytes = kSafetensorsMaxHeaderBytes;
// Tensors of at least this many bytes give their mapped pages back when their TensorBytes go.
constexpr uint64_t kReleaseMinBytes = uint64_t{1} << 20;

// Messages are one line: control characters (and, where asked, non-ASCII bytes, e.g. raw bytes
// echoed by a JSON parse error) are written as \xNN.
std::string printable(std::string_view text, bool ascii_only = false) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte == 0x7f || (ascii_only && byte >= 0x80)) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += ch;
    }
  }
  return out;
}

[[noreturn]] void fail_file(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::kFormat, printable(path) + ": " + what);
}
[[noreturn]] void fail_tensor(const std::string& path, const std::string& name, const std::string& what) {
  throw Error(ErrorCode::kFormat, printable(path) + ": tensor '" + printable(name) + "': " + what);
}

// Parses `text` as JSON one top-level member at a time (detail::parse_json_members: memory follows
// the largest member, not the text), refusing duplicate keys in any object (nlohmann keeps the last
// one silently). A duplicate at the top level is reported through `on_top_level_duplicate` (a
// tensor name in a header), deeper ones as a duplicate key. Invalid JSON / UTF-8 and nesting deeper
// than detail::kMaxJsonDepth, a NUL byte or a byte order mark (formats/detail/json_rules.h) are
// Error(kFormat), found in the whole text before `sink` sees a member. Returns the top-level value
// when it is not an object.
template <typename OnTopLevelDuplicate>
std::optional<Json> parse_json_unique_keys(std::string_view text, const std::string& path, const char* what,
                                           OnTopLevelDuplicate on_top_level_duplicate, const detail::JsonMembers& sink) {
  try {
    return detail::parse_json_members(text, /*unique_keys=*/true, sink);
  } catch (const detail::JsonProblem& p) {
    switch (p.kind) {
      case detail::JsonProblem::Kind::kDuplicateKey:
        if (p.top_level) on_top_level_duplicate(p.key);
        fail_file(path, std::string(what) + " has duplicate key '" + printable(p.key) + "'");
      case detail::JsonProblem::Kind::kTooDeep: fail_file(path, std::string(what) + " " + p.problem);
      case detail::JsonProblem::Kind::kInvalid:
        fail_file(path, std::string(what) + " is not valid UTF-8 JSON: " + printable(p.problem, true));
    }
    throw;
  }
}

// A JSON number that is a non-negative integer (not a float, not a bool), or nullopt.
std::optional<uint64_t> as_u64(const Json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    const auto v = value.get<int64_t>();
    if (v >= 0) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

std::string json_text(const Json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return printable(text, true);
}

// One tensor entry of a header, validated.
struct Entry {
  TensorInfo info;
  uint64_t begin = 0;  // data_offsets, relative to the start of the data section (bytes)
  uint64_t end = 0;
};

Entry parse_entry(const std::string& path, const std::string& name, const Json& value) {
  if (!value.is_object()) fail_tensor(path, name, "entry is not an object but " + json_text(value));
  for (const auto& [key, field] : value.items()) {
    (void)field;
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail_tensor(path, name, "unexpected field '" + printable(key) + "'");
  }
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!value.contains(key)) fail_tensor(path, name, std::string("missing field '") + key + "'");

  Entry entry;
  entry.info.name = name;

  const auto& dtype = value["dtype"];
  if (!dtype.is_string()) fail_tensor(path, name, "dtype is not a string but " + json_text(dtype));
  const auto parsed = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed) {
    const std::string& text = dtype.get_ref<const std::string&>();
    // In the specification (safetensors 0.6), but not among wpack's dtypes (formats/dtype.h)
    for (const char* spec_only : {"C64", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"})
      if (text == spec_only)
        throw Error(ErrorCode::kUnsupported,
                    printable(path) + ": tensor '" + printable(name) + "': dtype '" + text + "' is not supported by wpack");
    fail_tensor(path, name, "unknown dtype '" + printable(text) + "'");
  }
  entry.info.dtype = *parsed;

  const auto& shape = value["shape"];
  if (!shape.is_array()) fail_tensor(path, name, "shape is not an array but " + json_text(shape));
  entry.info.shape.reserve(shape.size());
  for (const auto& dim : shape) {
    const auto d = as_u64(dim);
    if (!d) fail_tensor(path, name, "shape has " + json_text(dim) + ", not a non-negative 64-bit integer");
    entry.info.shape.push_back(*d);
  }

  const auto& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    fail_tensor(path, name, "data_offsets is not an array of 2 integers but " + json_text(offsets));
  const auto begin = as_u64(offsets[0]);
  const auto end = as_u64(offsets[1]);
  if (!begin || !end)
    fail_tensor(path, name, "data_offsets " + json_text(offsets) + " are not non-negative 64-bit integers");
  entry.begin = *begin;
  entry.end = *end;

  // Size rules, in the reference order: checked shape product, begin <= end, size matches.
  const std::string what = printable(path) + ": tensor '" + printable(name) + "': shape " +
                           shape_to_string(entry.info.shape) + " x " + std::string(dtype_name(entry.info.dtype));
  uint64_t elements = 1;
  for (uint64_t d : entry.info.shape) elements = checked_mul(elements, d, what);
  const uint64_t bytes = checked_mul(elements, dtype_size(entry.info.dtype), what);
  if (entry.begin > entry.end)
    fail_tensor(path, name, "data_offsets begin " + std::to_string(entry.begin) + " > end " + std::to_string(entry.end));
  if (entry.end - entry.begin != bytes)
    fail_tensor(path, name, "data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                                "] hold " + std::to_string(entry.end - entry.begin) + " bytes but shape " +
                                shape_to_string(entry.info.shape) + " of " + std::string(dtype_name(entry.info.dtype)) +
                                " needs " + std::to_string(bytes));
  return entry;
}

// ---------------------------------------------------------------------------------------------
// Single file

class SafetensorsFile final : public TensorSource {
 public:
  explicit SafetensorsFile(const std::string& path) : path_(path) {
    map_ = MappedFile::open(path);
    const uint64_t file_size = map_->size();
    if (file_size < kLengthPrefixBytes)
      fail_file(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");

    uint64_t header_bytes = 0;  // N, little-endian on disk
    for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | map_->data()[i];
    if (header_bytes > kSafetensorsMaxHeaderBytes)
      fail_file(path, "header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                          std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
    const uint64_t data_start = checked_add(kLengthPrefixBytes, header_bytes, printable(path) + ": header length");
    if (data_start > file_size)
      fail_file(path, "header length " + std::to_string(header_bytes) + " runs past the end of the " +
                          std::to_string(file_size) + "-byte file");

    const std::string_view header_text(reinterpret_cast<const char*>(map_->data()) + kLengthPrefixBytes,
                                       header_bytes);
    // Members in file order (ties in data order stay in header order); __metadata__'s strings one
    // by one, none of it kept as JSON.
    std::vector<Entry> entries;
    detail::JsonMembers sink;
    sink.member = [&](const std::string& key, const Json& value, bool truncated) {
      if (key == "__metadata__") {
        // None when null, as the reference implementation reads it (an Option); an object's members
        // went to flat_member.
        if (!value.is_null() && !value.is_object())
          fail_file(path, "__metadata__ is not an object but " + json_text(value));
        return;
      }
      if (truncated && value.is_object())  // not an object: parse_entry says so, quoting what was kept
        fail_tensor(path, key, "entry holds more than " + std::to_string(detail::kMaxMemberValues) +
                                   " JSON values (dtype, shape and data_offsets need 6 plus the rank)");
      entries.push_back(parse_entry(path, key, value));
    };
    sink.flat_key = "__metadata__";
    sink.flat_member = [&](const std::string& key, Json& value, bool) {
      if (!value.is_string())
        fail_file(path, "__metadata__ '" + printable(key) + "' is not a string but " + json_text(value));
      metadata_.emplace(key, std::move(value.get_ref<std::string&>()));
    };
    const std::optional<Json> header = parse_json_unique_keys(
        header_text, path, "header",
        [&](const std::string& key) {
          if (key == "__metadata__") fail_file(path, "header has __metadata__ twice");
          fail_tensor(path, key, "duplicate tensor name");
        },
        sink);
    if (header) fail_file(path, "header is not a JSON object but " + json_text(*header));

    // Coverage: sorted by offset, the tensors tile [0, data size) exactly.
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const uint64_t data_bytes = file_size - data_start;
    uint64_t covered = 0;  // end of the data described so far
    for (const Entry& e : entries) {
      if (e.begin > covered)
        fail_tensor(path, e.info.name, "data_offsets begin " + std::to_string(e.begin) + " leaves a hole after byte " +
                                           std::to_string(covered));
      if (e.begin < covered)
        fail_tensor(path, e.info.name, "data_offsets begin " + std::to_string(e.begin) +
                                           " overlaps the previous tensor, which ends at " + std::to_string(covered));
      if (e.end > data_bytes)
        fail_tensor(path, e.info.name, "data_offsets end " + std::to_string(e.end) + " runs past the end of the " +
                                           std::to_string(data_bytes) + "-byte data section");
      covered = e.end;
    }
    if (covered != data_bytes)
      fail_file(path, std::to_string(data_bytes - covered) + " trailing bytes after the last tensor (data section " +
                          std::to_string(data_bytes) + " bytes, tensors cover " + std::to_string(covered) + ")");

    tensors_.reserve(entries.size());
    data_begin_.reserve(entries.size());
    for (Entry& e : entries) {
      data_begin_.push_back(data_start + e.begin);
      tensors_.push_back(std::move(e.info));
    }
  }

  const std::vector<TensorInfo>& tensors() const override { return tensors_; }

  TensorBytes read(size_t index) const override {
    if (index >= tensors_.size())
      throw Error(ErrorCode::kInvalidArgument, printable(path_) + ": tensor index " + std::to_string(index) +
                                                   " out of range (" + std::to_string(tensors_.size()) + " tensors)");
    // Sizes were validated against the file size in the constructor.
    const uint64_t begin = data_begin_[index], size = tensors_[index].num_bytes();
    if (size < kReleaseMinBytes) return TensorBytes::mapped(map_, begin, size, map_);
    // When the last copy of these bytes is gone, their pages leave the resident set: a reader that
    // goes through the tensors one by one (pack_model) stays at about one tensor of mapped memory.
    std::shared_ptr<const void> release(map_.get(), [map = map_, begin, size](const void*) { map->release(begin, size); });
    return TensorBytes::mapped(map_, begin, size, std::move(release));
  }

  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::string& path() const override { return path_; }
  std::string format_name() const override { return "safetensors"; }

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  std::vector<TensorInfo> tensors_;   // in data-offset order
  std::vector<uint64_t> data_begin_;  // absolute file offset of each tensor's bytes
  std::map<std::string, std::string> metadata_;
};

// ---------------------------------------------------------------------------------------------
// Sharded index

// A shard name from weight_map: relative, no ".." component, no NUL. Returns why it is refused.
std::optional<std::string> bad_shard_name(const std::string& name) {
  if (name.empty()) return "is empty";
  if (name.find('\0') != std::string::npos) return "contains a NUL byte";
  if (name.front() == '/') return "is an absolute path";
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    if (name.compare(start, slash - start, "..") == 0 && slash - start == 2) return "leaves the index's directory ('..')";
    start = slash + 1;
  }
  return std::nullopt;
}

class SafetensorsSharded final : public TensorSource {
 public:
  explicit SafetensorsSharded(const std::string& index_path) : path_(index_path) {
    const auto map = MappedFile::open(index_path);
    if (map->size() > kMaxIndexBytes)
      fail_file(index_path, "index is " + std::to_string(map->size()) + " bytes, over the limit of " +
                                std::to_string(kMaxIndexBytes));
    const std::string_view text(reinterpret_cast<const char*>(map->data()), map->size());
    // weight_map's members one by one, in file order. The rest is not read: the index's own
    // "metadata" (total_size) describes the shard set, not the tensors, and is not the model's.
    struct Mapping {
      std::string tensor;
      std::string shard;     // the shard's file name, when the value is a string
      std::string not_name;  // otherwise the value, as json_text prints it
    };
    std::vector<Mapping> mappings;
    std::optional<Json> weight_map;
    detail::JsonMembers sink;
    sink.member = [&](const std::string& key, Json& value, bool) {
      if (key == "weight_map") weight_map = std::move(value);  // an object arrives empty (flat_member)
    };
    sink.flat_key = "weight_map";
    sink.flat_member = [&](const std::string& tensor, Json& value, bool) {
      if (value.is_string())
        mappings.push_back({tensor, std::move(value.get_ref<std::string&>()), {}});
      else
        mappings.push_back({tensor, {}, json_text(value)});
    };
    const std::optional<Json> index =
        parse_json_unique_keys(text, index_path, "index", [](const std::string&) {}, sink);
    if (index) fail_file(index_path, "index is not a JSON object but " + json_text(*index));
    if (!weight_map) fail_file(index_path, "index has no weight_map");
    if (!weight_map->is_object()) fail_file(index_path, "weight_map is not an object but " + json_text(*weight_map));

    // Shards in order of first appearance; tensor -> shard as the index says.
    std::vector<std::string> shard_names;
    std::unordered_map<std::string, size_t> shard_of_name;  // shard name (normalised) -> position in shard_names
    std::unordered_map<std::string, size_t> mapped_shard;   // tensor name -> shard position
    for (const Mapping& m : mappings) {
      if (!m.not_name.empty())
        fail_tensor(index_path, m.tensor, "weight_map value is not a shard file name but " + m.not_name);
      if (const auto why = bad_shard_name(m.shard))
        fail_tensor(index_path, m.tensor, "shard '" + printable(m.shard) + "' " + *why);
      // One shard however it is spelled ("./a.safetensors", "a.safetensors")
      auto [it, added] = shard_of_name.emplace(std::filesystem::path(m.shard).lexically_normal().generic_string(),
                                               shard_names.size());
      if (added) shard_names.push_back(m.shard);
      mapped_shard.emplace(m.tensor, it->second);
    }

    const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
    std::unordered_map<std::string, size_t> found_shard;  // tensor name -> shard that holds it
    std::unordered_map<std::string, size_t> metadata_shard;  // __metadata__ key -> the first shard that has it
    for (size_t s = 0; s < shard_names.size(); ++s) {
      const std::string shard_path = (dir / shard_names[s]).string();
      if (!path_exists(shard_path))
        throw Error(ErrorCode::kIo, printable(index_path) + ": shard '" + printable(shard_names[s]) +
                                        "' listed in weight_map does not exist (" + printable(shard_path) + ")");
      auto shard = std::make_unique<SafetensorsFile>(shard_path);
      for (size_t t = 0; t < shard->tensors().size(); ++t) {
        const std::string& tensor = shard->tensors()[t].name;
        auto [seen, added] = found_shard.emplace(tensor, s);
        if (!added)
          fail_tensor(index_path, tensor, "is in two shards, '" + printable(shard_names[seen->second]) + "' and '" +
                                              printable(shard_names[s]) + "'");
        const auto mapped = mapped_shard.find(tensor);
        if (mapped == mapped_shard.end())
          fail_tensor(index_path, tensor, "is in shard '" + printable(shard_names[s]) + "' but not in weight_map");
        if (mapped->second != s)
          fail_tensor(index_path, tensor, "is in shard '" + printable(shard_names[s]) + "' but weight_map maps it to '" +
                                              printable(shard_names[mapped->second]) + "'");
        tensors_.push_back(shard->tensors()[t]);
        location_.push_back({s, t});
      }
      // Shards first, in order. Shards that disagree on a key are refused: keeping one value would
      // drop the other silently (unpack writes the metadata back).
      for (const auto& [key, value] : shard->metadata()) {
        const auto [it, added] = metadata_.emplace(key, value);
        if (added) {
          metadata_shard[key] = s;
        } else if (it->second != value) {
          fail_file(index_path, "shards '" + printable(shard_names[metadata_shard[key]]) + "' and '" +
                                    printable(shard_names[s]) + "' disagree on __metadata__ '" + printable(key) + "' ('" +
                                    printable(it->second) + "' against '" + printable(value) + "')");
        }
      }
      shards_.push_back(std::move(shard));
    }
    for (const Mapping& m : mappings)
      if (!found_shard.contains(m.tensor))
        fail_tensor(index_path, m.tensor, "is in weight_map (shard '" + printable(m.shard) + "') but not in that shard");

  }

  const std::vector<TensorInfo>& tensors() const override { return tensors_; }

  TensorBytes read(size_t index) const override {
    if (index >= tensors_.size())
      throw Error(ErrorCode::kInvalidArgument, printable(path_) + ": tensor index " + std::to_string(index) +
                                                   " out of range (" + std::to_string(tensors_.size()) + " tensors)");
    const auto [shard, local] = location_[index];
    return shards_[shard]->read(local);
  }

  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  const std::string& path() const override { return path_; }
  std::string format_name() const override { return "safetensors-sharded"; }
  std::vector<std::string> files() const override {
    std::vector<std::string> files = {path_};
    for (const auto& shard : shards_) files.push_back(shard->path());
    return files;
  }

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TensorInfo> tensors_;
  std::vector<std::pair<size_t, size_t>> location_;  // per tensor: (shard, index within shard)
  std::map<std::string, std::string> metadata_;
};

[[noreturn]] void fail_argument(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::kInvalidArgument, printable(path) + ": " + what);
}

}  // namespace

std::unique_ptr<TensorSource> open_safetensors(const std::string& path) {
  return std::make_unique<SafetensorsFile>(path);
}

std::unique_ptr<TensorSource> open_safetensors_index(const std::string& index_path) {
  return std::make_unique<SafetensorsSharded>(index_path);
}

// ---------------------------------------------------------------------------------------------
// Writer

struct SafetensorsWriter::Impl {
  std::string path;
  std::vector<TensorInfo> tensors;
  std::vector<uint64_t> tensor_end;  // cumulative data end of each tensor (bytes)
  uint64_t total_bytes = 0;          // data section size
  uint64_t written_bytes = 0;        // data bytes appended so far
  bool committed = false;
  std::unique_ptr<AtomicOutputFile> file;
};

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<TensorInfo> tensors,
                                     const std::map<std::string, std::string>& metadata, bool overwrite)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  // The header text is put together entry by entry (each dumped by nlohmann): an ordered_json
  // object inserts each key by linear search, quadratic in the tensors.
  std::string header_text = "{";
  auto append = [&](const std::string& key, const auto& value) {
    try {  // strict: a name or value that is not UTF-8 is refused here
      if (header_text.size() > 1) header_text += ',';
      header_text += Json(key).dump();
      header_text += ':';
      header_text += value.dump();
    } catch (const nlohmann::json::exception& e) {
      fail_argument(path, std::string("tensor name or metadata is not valid UTF-8: ") + printable(e.what(), true));
    }
  };
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    append("__metadata__", meta);
  }
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorInfo& t : tensors) {
    if (t.name == "__metadata__") fail_argument(path, "a tensor may not be named '__metadata__'");
    if (!names.insert(t.name).second) fail_argument(path, "tensor '" + printable(t.name) + "': duplicate tensor name");
    uint64_t bytes = dtype_size(t.dtype);
    for (uint64_t d : t.shape)
      if (__builtin_mul_overflow(bytes, d, &bytes))
        fail_argument(path, "tensor '" + printable(t.name) + "': shape " + shape_to_string(t.shape) + " overflows 64 bits");
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, bytes, &end)) fail_argument(path, "total tensor size overflows 64 bits");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();  // fields in the usual order
    entry["dtype"] = std::string(dtype_name(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, end};
    append(t.name, entry);
    impl_->tensor_end.push_back(end);
    offset = end;
  }
  header_text += '}';
  impl_->total_bytes = offset;
  impl_->tensors = std::move(tensors);

  // Pad so the data section starts 8-byte aligned (8 + N is a multiple of 8).
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  if (header_text.size() > kSafetensorsMaxHeaderBytes)
    fail_argument(path, "header would be " + std::to_string(header_text.size()) + " bytes, over the limit of " +
                            std::to_string(kSafetensorsMaxHeaderBytes));

  uint8_t length_le[8];
  for (int i = 0; i < 8; ++i) length_le[i] = static_cast<uint8_t>(uint64_t{header_text.size()} >> (8 * i));
  impl_->file = std::make_unique<AtomicOutputFile>(path, overwrite);
  impl_->file->write(length_le, sizeof(length_le));
  impl_->file->write(header_text.data(), header_text.size());
}

SafetensorsWriter::~SafetensorsWriter() = default;  // an uncommitted AtomicOutputFile removes its temp file

void SafetensorsWriter::append(std::span<const uint8_t> bytes) {
  if (impl_->committed) fail_argument(impl_->path, "append() after commit()");
  if (bytes.size() > impl_->total_bytes - impl_->written_bytes)
    fail_argument(impl_->path, "append() of " + std::to_string(bytes.size()) + " bytes with only " +
                                   std::to_string(impl_->total_bytes - impl_->written_bytes) +
                                   " bytes of tensor data left to write");
  impl_->file->write(bytes.data(), bytes.size());
  impl_->written_bytes += bytes.size();
}

void SafetensorsWriter::commit() {
  if (impl_->committed) fail_argument(impl_->path, "commit() called twice");
  if (impl_->written_bytes != impl_->total_bytes) {
    // Name the first tensor that is short.
    size_t i = 0;
    while (i < impl_->tensor_end.size() && impl_->tensor_end[i] <= impl_->written_bytes) ++i;
    fail_argument(impl_->path, "tensor '" + printable(impl_->tensors[i].name) + "': commit() with " +
                                   std::to_string(impl_->written_bytes) + " of " +
                                   std::to_string(impl_->total_bytes) + " data bytes supplied");
  }
  impl_->file->commit();
  impl_->committed = true;
}

void write_safetensors(const std::string& path, const std::vector<TensorInfo>& tensors,
                       const std::vector<std::vector<uint8_t>>& data,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  if (data.size() != tensors.size())
    fail_argument(path, std::to_string(tensors.size()) + " tensors but " + std::to_string(data.size()) + " data buffers");
  for (size_t i = 0; i < tensors.size(); ++i) {
    // num_bytes() is unchecked; a shape that overflows is refused by the writer itself below.
    uint64_t bytes = dtype_size(tensors[i].dtype);
    bool overflow = false;
    for (uint64_t d : tensors[i].shape) overflow |= __builtin_mul_overflow(bytes, d, &bytes);
    if (!overflow && data[i].size() != bytes)
      fail_argument(path, "tensor '" + printable(tensors[i].name) + "': " + std::to_string(data[i].size()) +
                              " data bytes for shape " + shape_to_string(tensors[i].shape) + " of " +
                              std::string(dtype_name(tensors[i].dtype)) + " (" + std::to_string(bytes) + " bytes)");
  }
  SafetensorsWriter writer(path, tensors, metadata, overwrite);
  for (const auto& bytes : data) writer.append(bytes);
  writer.commit();
}

}  // namespace wpack
