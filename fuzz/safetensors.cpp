// Fuzz surface: the safetensors reader (formats/safetensors.h) on arbitrary file bytes.
//
// An input that starts with '{' is a sharded model's index (model.safetensors.index.json), opened
// with open_safetensors_index in a folder that holds two fixed shards, "a.safetensors" (tensors
// "x", "y") and "b.safetensors" (tensor "z"): weight_map handling, shard names, coverage rules.
// Any other input is a whole .safetensors file. When the reader accepts one, the harness checks
// what it returned against its own reading of the header: every tensor's bytes are the file's
// bytes at 8 + N + data_offsets, of the declared size, and the tensors cover the data section.
#include <cstdlib>  // mkdtemp
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "fuzz/harness.h"

namespace wpack::fuzz {
namespace {

// A folder with the two shards, made once per process and removed at exit (the path is never
// destroyed, so the exit handler can still read it).
const std::string& shard_folder() {
  static const std::string* const folder = [] {
    const std::string base = (std::filesystem::temp_directory_path() / "wpack-fuzz-shards-XXXXXX").string();
    std::vector<char> name(base.begin(), base.end());
    name.push_back('\0');
    if (::mkdtemp(name.data()) == nullptr) fail("safetensors", "mkdtemp failed");
    const auto* dir = new std::string(name.data());
    write_safetensors(*dir + "/a.safetensors", {{"x", DType::F32, {2}}, {"y", DType::U8, {3}}},
                      {{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11}}, {{"format", "pt"}}, true);
    write_safetensors(*dir + "/b.safetensors", {{"z", DType::BF16, {1, 2}}}, {{1, 2, 3, 4}}, {{"format", "np"}}, true);
    return dir;
  }();
  static const bool cleanup = std::atexit([] { std::filesystem::remove_all(*folder); }) == 0;
  (void)cleanup;
  return *folder;
}

void sharded(Bytes data) {
  const std::string index = shard_folder() + "/model.safetensors.index.json";
  std::ofstream(index, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  std::unique_ptr<TensorSource> source;
  try {
    source = open_safetensors_index(index);
  } catch (const Error&) {
    return;
  }
  // Accepted: shard tensors only (x, y, z: 8, 3 and 4 bytes), each once, read with that size.
  const std::map<std::string, size_t> known = {{"x", 8}, {"y", 3}, {"z", 4}};
  std::map<std::string, int> seen;
  for (size_t i = 0; i < source->tensors().size(); ++i) {
    const std::string& name = source->tensors()[i].name;
    const auto it = known.find(name);
    if (it == known.end() || ++seen[name] > 1) fail("safetensors", "sharded model lists tensor '" + name + "'");
    if (source->read(i).size() != it->second) fail("safetensors", "sharded tensor '" + name + "' of the wrong size");
  }
}

}  // namespace

void safetensors(Bytes data) {
  if (!data.empty() && data[0] == '{') {
    sharded(data);
    return;
  }
  TempFile file(data);
  std::unique_ptr<TensorSource> source;
  try {
    source = open_safetensors(file.path());
  } catch (const Error&) {
    return;  // refused: fine
  }

  // Accepted: the file has a well-formed header; cross-check every tensor.
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, data.data(), 8);
  const auto* text = reinterpret_cast<const char*>(data.data()) + 8;
  const auto header = nlohmann::json::parse(text, text + header_bytes, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) fail("safetensors", "accepted a header that is not a JSON object");
  const uint64_t data_start = 8 + header_bytes;
  uint64_t covered = 0;
  for (size_t i = 0; i < source->tensors().size(); ++i) {
    const TensorInfo& info = source->tensors()[i];
    if (!header.contains(info.name)) fail("safetensors", "tensor '" + info.name + "' is not in the header");
    const auto& offsets = header[info.name]["data_offsets"];
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    const TensorBytes bytes = source->read(i);
    if (bytes.size() != end - begin || bytes.size() != info.num_bytes())
      fail("safetensors", "tensor '" + info.name + "' has " + std::to_string(bytes.size()) + " bytes");
    if (data_start + end > data.size()) fail("safetensors", "tensor '" + info.name + "' ends past the file");
    if (bytes.size() != 0 && std::memcmp(bytes.data(), data.data() + data_start + begin, bytes.size()) != 0)
      fail("safetensors", "tensor '" + info.name + "' bytes differ from the file at its data_offsets");
    covered += bytes.size();
  }
  if (covered != data.size() - data_start) fail("safetensors", "tensors do not cover the data section");
  // __metadata__ as the whole header parsed at once holds it (the reader streams its members)
  std::map<std::string, std::string> metadata;
  if (header.contains("__metadata__") && header["__metadata__"].is_object())
    for (const auto& [key, value] : header["__metadata__"].items()) metadata[key] = value.get<std::string>();
  if (metadata != source->metadata()) fail("safetensors", "__metadata__ differs from the header's");
  try {
    (void)source->read(source->tensors().size());
    fail("safetensors", "read() past the last tensor did not throw");
  } catch (const Error&) {
  }
}

}  // namespace wpack::fuzz
