// safetensors reader, sharded index and writer: round trips, one test per validation rule (bad
// files built by hand as bytes), sharded cross-checks, atomic writer behaviour.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;
using namespace std::string_literals;

namespace {

// 8-byte little-endian length, then `header` as is, then `data`.
std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data, uint64_t length) {
  std::vector<uint8_t> bytes;
  bytes.reserve(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(length >> (8 * i)));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  return raw_file(header, test::random_bytes(data_bytes, 7), header.size());
}

// Runs `f`, which must throw wpack::Error; returns it.
Error thrown_by(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no wpack::Error thrown");
  throw;  // unreachable: FAIL aborts the test case
}

// Writes `bytes` to `name` in `dir`, opens it and checks the kFormat error: one line, naming the
// file, the tensor (when `tensor` is not empty) and containing `fragment`.
void require_format_error(const TempDir& dir, const std::vector<uint8_t>& bytes, const std::string& tensor,
                          const std::string& fragment) {
  const std::string path = dir.file("bad.safetensors");
  test::write_file(path, bytes);
  const Error e = thrown_by([&] { open_safetensors(path); });
  const std::string message = e.what();
  INFO(message);
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(message.rfind(path + ": ", 0) == 0);
  if (!tensor.empty()) REQUIRE(message.find("tensor '" + tensor + "'") != std::string::npos);
  REQUIRE(message.find(fragment) != std::string::npos);
  REQUIRE(message.find('\n') == std::string::npos);
}

std::vector<std::string> directory_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<uint8_t> bytes_of(const TensorBytes& t) { return {t.data(), t.data() + t.size()}; }

void require_same(const TensorSource& source, const std::vector<TensorInfo>& tensors,
                  const std::vector<std::vector<uint8_t>>& data) {
  REQUIRE(source.tensors().size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    INFO("tensor " << tensors[i].name);
    REQUIRE(source.tensors()[i].name == tensors[i].name);
    REQUIRE(source.tensors()[i].dtype == tensors[i].dtype);
    REQUIRE(source.tensors()[i].shape == tensors[i].shape);
    REQUIRE(bytes_of(source.read(i)) == data[i]);
  }
}

// A valid one-tensor header: "a" F32 [2] at [0, 8).
const std::string kGoodEntry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_CASE("safetensors round trip: every dtype, 0-d, empty, 3-D and odd shapes, metadata") {
  TempDir dir;
  const std::vector<DType> all = {DType::F64,  DType::F32, DType::F16, DType::BF16, DType::F8_E4M3,
                                  DType::F8_E5M2, DType::I64, DType::I32, DType::I16, DType::I8,
                                  DType::U64,  DType::U32, DType::U16, DType::U8,   DType::BOOL};
  std::vector<TensorInfo> tensors;
  for (DType d : all) tensors.push_back({"t." + std::string(dtype_name(d)), d, {3, 5}});
  tensors.push_back({"scalar", DType::F32, {}});
  tensors.push_back({"empty", DType::BF16, {4, 0, 3}});
  tensors.push_back({"cube", DType::F16, {3, 7, 5}});
  tensors.push_back({"odd", DType::U8, {1, 13, 1, 3}});
  tensors.push_back({"empty_last", DType::I64, {0}});
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < tensors.size(); ++i) data.push_back(test::random_bytes(tensors[i].num_bytes(), i + 1));
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode \"quoted\""}};

  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, tensors, data, metadata, false);
  const auto source = open_safetensors(path);
  require_same(*source, tensors, data);
  REQUIRE(source->metadata() == metadata);
  REQUIRE(source->format_name() == "safetensors");
  REQUIRE(source->path() == path);
  REQUIRE(source->tensors()[tensors.size() - 5].num_elements() == 1);  // the 0-d tensor
  REQUIRE(source->read(tensors.size() - 4).size() == 0);                 // the empty tensor
}

TEST_CASE("safetensors writer: header keys in given order, metadata first, padded with spaces to 8") {
  TempDir dir;
  const std::string path = dir.file("order.safetensors");
  const std::vector<TensorInfo> tensors = {{"zeta", DType::U8, {3}}, {"alpha", DType::U8, {1}}};
  write_safetensors(path, tensors, {{1, 2, 3}, {4}}, {{"k", "v"}}, false);
  const auto bytes = test::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  REQUIRE((8 + n) % 8 == 0);
  REQUIRE(bytes.size() == 8 + n + 4);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  REQUIRE(header.find("__metadata__") < header.find("zeta"));
  REQUIRE(header.find("zeta") < header.find("alpha"));
  REQUIRE(header.find_last_not_of(' ') == header.find_last_of('}'));
  // Data laid out in the given order.
  REQUIRE(std::vector<uint8_t>(bytes.end() - 4, bytes.end()) == std::vector<uint8_t>{1, 2, 3, 4});
  const auto source = open_safetensors(path);
  REQUIRE(source->tensors()[0].name == "zeta");
  REQUIRE(source->tensors()[1].name == "alpha");
}

TEST_CASE("safetensors reader lists tensors in data-offset order, not header order") {
  TempDir dir;
  const std::string header =
      R"({"second":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},"first":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
  const std::string path = dir.file("m.safetensors");
  test::write_file(path, raw_file(header, {10, 11, 12, 20, 21}, header.size()));
  const auto source = open_safetensors(path);
  REQUIRE(source->tensors()[0].name == "first");
  REQUIRE(source->tensors()[1].name == "second");
  REQUIRE(bytes_of(source->read(0)) == std::vector<uint8_t>{10, 11, 12});
  REQUIRE(bytes_of(source->read(1)) == std::vector<uint8_t>{20, 21});
  REQUIRE(source->metadata().empty());
  REQUIRE_THROWS_AS(source->read(2), Error);
}

TEST_CASE("safetensors reader accepts a header padded with whitespace and a file with no tensors") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  test::write_file(path, raw_file("  {" + kGoodEntry + "}     \n\t ", 8));
  REQUIRE(open_safetensors(path)->tensors().size() == 1);
  test::write_file(path, raw_file("{}", 0));
  REQUIRE(open_safetensors(path)->tensors().empty());
}

TEST_CASE("safetensors bytes stay valid after the source is destroyed") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  const auto data = test::gaussian_f32(1000, 0.02f, 3);
  write_safetensors(path, {{"w", DType::F32, {10, 100}}}, {data}, {}, false);
  TensorBytes bytes;
  {
    auto source = open_safetensors(path);
    bytes = source->read(0);
  }
  REQUIRE(bytes_of(bytes) == data);
}

// ---------------------------------------------------------------------------------------------
// Validation: one test per rule

TEST_CASE("safetensors refuses a file shorter than 8 bytes") {
  TempDir dir;
  require_format_error(dir, {1, 0, 0}, "", "shorter than the 8-byte header length");
  require_format_error(dir, {}, "", "shorter than the 8-byte header length");
}

TEST_CASE("safetensors refuses a header length over 100 MB") {
  TempDir dir;
  require_format_error(dir, raw_file("{}", {}, kSafetensorsMaxHeaderBytes + 1), "", "exceeds the limit");
  require_format_error(dir, raw_file("{}", {}, ~uint64_t{0}), "", "exceeds the limit");
  // Exactly the limit is allowed by that rule; this file then fails the next one.
  require_format_error(dir, raw_file("{}", {}, kSafetensorsMaxHeaderBytes), "", "runs past the end");
}

TEST_CASE("safetensors refuses a header length past the end of the file") {
  TempDir dir;
  require_format_error(dir, raw_file("{}", {}, 3), "", "runs past the end of the 10-byte file");
}

TEST_CASE("safetensors refuses a header that is not valid JSON or not UTF-8") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"a": )", 0), "", "not valid UTF-8 JSON");
  require_format_error(dir, raw_file("", 0), "", "not valid UTF-8 JSON");
  require_format_error(dir, raw_file("{} {}", 0), "", "not valid UTF-8 JSON");
  require_format_error(dir, raw_file("{}\0\0\0"s, 0), "", "not valid UTF-8 JSON");
  require_format_error(dir, raw_file("{" + kGoodEntry + "}\0trailing garbage"s, 8), "", "NUL byte at offset");
  // Invalid UTF-8 inside a string (a lone continuation byte); the message stays printable.
  require_format_error(dir, raw_file("{\"__metadata__\":{\"k\":\"\x80\xff\"}}", 0), "", "not valid UTF-8 JSON");
  // A byte order mark before the JSON: refused, as the reference implementation refuses it.
  require_format_error(dir, raw_file("\xEF\xBB\xBF{" + kGoodEntry + "}", 8), "", "starts with a byte order mark");
}

TEST_CASE("safetensors refuses a header that is not a JSON object") {
  TempDir dir;
  require_format_error(dir, raw_file("[1, 2]", 0), "", "not a JSON object");
  require_format_error(dir, raw_file("\"text\"", 0), "", "not a JSON object");
  require_format_error(dir, raw_file("42", 0), "", "not a JSON object");
}

TEST_CASE("safetensors refuses duplicate tensor names") {
  TempDir dir;
  const std::string header = "{" + kGoodEntry + "," + R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})" + "}";
  require_format_error(dir, raw_file(header, 16), "a", "duplicate tensor name");
  // A duplicate key inside an entry is refused too.
  require_format_error(dir, raw_file(R"({"b":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1),
                       "", "duplicate key 'dtype'");
}

TEST_CASE("safetensors refuses an unknown dtype or a dtype that is not a string") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16), "w",
                       "unknown dtype 'F128'");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4), "w",
                       "unknown dtype 'f32'");
  require_format_error(dir, raw_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4), "w",
                       "dtype is not a string");
}

TEST_CASE("safetensors: the specification's dtypes that wpack does not read are unsupported, not unknown") {
  TempDir dir;
  for (const char* dtype : {"C64", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"}) {
    INFO(dtype);
    const std::string path = dir.file(std::string(dtype) + ".safetensors");
    test::write_file(path, raw_file(std::string(R"({"w":{"dtype":")") + dtype + R"(","shape":[1],"data_offsets":[0,8]}})", 8));
    try {
      open_safetensors(path);
      FAIL("opened");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::kUnsupported);
      CHECK(std::string(e.what()) == path + ": tensor 'w': dtype '" + dtype + "' is not supported by wpack");
    }
  }
}

TEST_CASE("safetensors: __metadata__ null is no metadata, as the reference implementation reads it") {
  TempDir dir;
  const std::string path = dir.file("null_meta.safetensors");
  test::write_file(path, raw_file(R"({"__metadata__":null,"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2));
  auto source = open_safetensors(path);
  CHECK(source->metadata().empty());
  REQUIRE(source->tensors().size() == 1);
  CHECK(source->tensors()[0].name == "w");
}

TEST_CASE("safetensors refuses a shape that is not an array of integers") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":"2","data_offsets":[0,2]}})", 2), "w",
                       "shape is not an array");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":null,"data_offsets":[0,2]}})", 2), "w",
                       "shape is not an array");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}})", 2), "w",
                       "not a non-negative 64-bit integer");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":["2"],"data_offsets":[0,2]}})", 2), "w",
                       "not a non-negative 64-bit integer");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}})", 1), "w",
                       "not a non-negative 64-bit integer");
}

TEST_CASE("safetensors refuses data_offsets that are not exactly two integers") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0]}})", 2), "w",
                       "not an array of 2 integers");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2,4]}})", 2), "w",
                       "not an array of 2 integers");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":{"a":0}}})", 2), "w",
                       "not an array of 2 integers");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,"2"]}})", 2), "w",
                       "are not non-negative 64-bit integers");
}

TEST_CASE("safetensors refuses a tensor entry with missing or extra fields, or not an object") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2]}})", 2), "w", "missing field 'data_offsets'");
  require_format_error(dir, raw_file(R"({"w":{"shape":[2],"data_offsets":[0,2]}})", 2), "w", "missing field 'dtype'");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":1}})", 2), "w",
                       "unexpected field 'x'");
  require_format_error(dir, raw_file(R"({"w":[1,2]})", 2), "w", "entry is not an object");
}

TEST_CASE("safetensors refuses negative and oversized numbers") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0), "w",
                       "not a non-negative 64-bit integer");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[-2,0]}})", 2), "w",
                       "are not non-negative 64-bit integers");
  // 2^64 does not fit in 64 bits (the JSON parser makes it a float).
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,0]}})", 0),
                       "w", "not a non-negative 64-bit integer");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}})", 1),
                       "w", "are not non-negative 64-bit integers");
}

TEST_CASE("safetensors refuses a shape whose byte size overflows 64 bits") {
  TempDir dir;
  // 2^32 * 2^32 elements overflows in the product; 2^62 elements of F32 overflows in the byte size.
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
                       "w", "overflows 64 bits");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
                       "w", "overflows 64 bits");
  // Overflow is refused even when a 0 later in the shape would make the product 0.
  require_format_error(
      dir, raw_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,2,0],"data_offsets":[0,0]}})", 0), "w",
      "overflows 64 bits");
}

TEST_CASE("safetensors refuses data_offsets whose size does not match shape x dtype") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "w",
                       "hold 4 bytes but shape [2] of F32 needs 8");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,0]}})", 0), "w",
                       "needs 4");
}

TEST_CASE("safetensors refuses data_offsets with begin > end") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})", 8), "w",
                       "begin 8 > end 4");
}

TEST_CASE("safetensors refuses a hole between tensors or before the first") {
  TempDir dir;
  const std::string header = "{" + kGoodEntry + "," + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})" + "}";
  require_format_error(dir, raw_file(header, 20), "b", "leaves a hole after byte 8");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4), "w",
                       "leaves a hole after byte 0");
}

TEST_CASE("safetensors refuses overlapping tensors") {
  TempDir dir;
  const std::string header = "{" + kGoodEntry + "," + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})" + "}";
  require_format_error(dir, raw_file(header, 12), "b", "overlaps the previous tensor");
  // An empty tensor inside another one overlaps it too.
  const std::string inside = "{" + kGoodEntry + "," + R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]})" + "}";
  require_format_error(dir, raw_file(inside, 8), "e", "overlaps the previous tensor");
}

TEST_CASE("safetensors refuses trailing bytes after the last tensor") {
  TempDir dir;
  require_format_error(dir, raw_file("{" + kGoodEntry + "}", 12), "", "4 trailing bytes");
  require_format_error(dir, raw_file("{}", 1), "", "1 trailing bytes");
}

TEST_CASE("safetensors refuses tensor data past the end of the file") {
  TempDir dir;
  require_format_error(dir, raw_file("{" + kGoodEntry + "}", 4), "a", "runs past the end of the 4-byte data section");
}

TEST_CASE("safetensors refuses __metadata__ that is not a map of string to string") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"__metadata__":{"k":1}})", 0), "", "__metadata__ 'k' is not a string");
  require_format_error(dir, raw_file(R"({"__metadata__":{"k":{"x":"y"}}})", 0), "", "__metadata__ 'k' is not a string");
  require_format_error(dir, raw_file(R"({"__metadata__":{"k":null}})", 0), "", "__metadata__ 'k' is not a string");
  require_format_error(dir, raw_file(R"({"__metadata__":["a"]})", 0), "", "__metadata__ is not an object");
  require_format_error(dir, raw_file(R"({"__metadata__":{},"__metadata__":{}})", 0), "", "__metadata__ twice");
}

TEST_CASE("safetensors: __metadata__'s first value in file order that is not a string is the one named") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"__metadata__":{"z":"ok","y":1,"a":2}})", 0), "", "__metadata__ 'y' is not a string");
}

// The reader builds one header member at a time (detail::parse_json_members), keeping at most 4096
// values of any one; a larger entry is refused by its size, a larger __metadata__ map is read whole.
TEST_CASE("safetensors: a tensor entry of 4096 JSON values is read, one of more is refused") {
  TempDir dir;
  auto entry = [](size_t rank) {
    std::string shape = "[0";
    for (size_t i = 1; i < rank; ++i) shape += ",1";
    return R"({"w":{"dtype":"U8","shape":)" + shape + R"(],"data_offsets":[0,0]}})";
  };
  const std::string path = dir.file("rank.safetensors");
  test::write_file(path, raw_file(entry(4090), 0));  // 1 object + dtype + shape + 4090 dims + offsets + 2
  const auto source = open_safetensors(path);
  REQUIRE(source->tensors().size() == 1);
  CHECK(source->tensors()[0].shape.size() == 4090);
  require_format_error(dir, raw_file(entry(4091), 0), "w", "entry holds more than 4096 JSON values");
  require_format_error(dir, raw_file(entry(1000000), 0), "w", "entry holds more than 4096 JSON values");
}

TEST_CASE("safetensors: a value kept in part is quoted as the whole value prints") {
  TempDir dir;
  std::string arrays = "[";
  for (int i = 0; i < 100000; ++i) arrays += i ? ",[]" : "[]";
  arrays += "]";
  // The first 57 characters of the value as JSON, as the message quotes it.
  const std::string quoted = arrays.substr(0, 57) + "...";
  require_format_error(dir, raw_file(R"({"w":)" + arrays + "}", 0), "w", "entry is not an object but " + quoted);
  require_format_error(dir, raw_file(R"({"__metadata__":{"k":)" + arrays + "}}", 0), "",
                       "__metadata__ 'k' is not a string but " + quoted);
  require_format_error(dir, raw_file(arrays, 0), "", "header is not a JSON object but " + quoted);
}

TEST_CASE("safetensors: a __metadata__ map of many keys is read whole, in any size") {
  TempDir dir;
  std::string header = R"({"__metadata__":{)";
  for (int i = 0; i < 10000; ++i) header += (i ? "," : "") + ("\"k" + std::to_string(i) + "\":\"v" + std::to_string(i) + "\"");
  header += "}," + kGoodEntry + "}";
  const std::string path = dir.file("meta.safetensors");
  test::write_file(path, raw_file(header, 8));
  const auto source = open_safetensors(path);
  REQUIRE(source->metadata().size() == 10000);
  CHECK(source->metadata().at("k0") == "v0");
  CHECK(source->metadata().at("k9999") == "v9999");
  REQUIRE(source->tensors().size() == 1);
  CHECK(source->tensors()[0].name == "a");
}

TEST_CASE("safetensors error messages stay on one line for names with control characters") {
  TempDir dir;
  require_format_error(dir, raw_file(R"({"bad\nname":{"dtype":"X","shape":[],"data_offsets":[0,0]}})", 0),
                       "bad\\x0aname", "unknown dtype");
}

TEST_CASE("safetensors refuses a missing file with an I/O error") {
  TempDir dir;
  const Error e = thrown_by([&] { open_safetensors(dir.file("absent.safetensors")); });
  REQUIRE(e.code() == ErrorCode::kIo);
  REQUIRE(std::string(e.what()).find(dir.file("absent.safetensors")) != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Sharded index

namespace {

struct TwoShards {
  std::vector<TensorInfo> tensors = {{"layer0.w", DType::BF16, {4, 8}},
                                     {"layer0.b", DType::F32, {8}},
                                     {"layer1.w", DType::BF16, {8, 4}},
                                     {"step", DType::I64, {}}};
  std::vector<std::vector<uint8_t>> data;
  explicit TwoShards(const TempDir& dir) {
    for (size_t i = 0; i < tensors.size(); ++i) data.push_back(test::random_bytes(tensors[i].num_bytes(), 40 + i));
    write_safetensors(dir.file("model-00001-of-00002.safetensors"), {tensors[0], tensors[1]}, {data[0], data[1]},
                      {{"format", "pt"}}, false);
    write_safetensors(dir.file("model-00002-of-00002.safetensors"), {tensors[2], tensors[3]}, {data[2], data[3]},
                      {{"format", "pt"}, {"shard", "2"}}, false);
  }
};

void write_index(const TempDir& dir, const std::string& weight_map, const std::string& metadata = "") {
  const std::string text = "{" + (metadata.empty() ? "" : "\"metadata\":" + metadata + ",") +
                           "\"weight_map\":{" + weight_map + "}}";
  test::write_file(dir.file("model.safetensors.index.json"), std::vector<uint8_t>(text.begin(), text.end()));
}

const std::string kGoodWeightMap =
    R"("layer1.w":"model-00002-of-00002.safetensors","layer0.w":"model-00001-of-00002.safetensors",)"
    R"("layer0.b":"model-00001-of-00002.safetensors","step":"model-00002-of-00002.safetensors")";

Error index_error(const TempDir& dir) {
  return thrown_by([&] { open_safetensors_index(dir.file("model.safetensors.index.json")); });
}

void require_index_format_error(const TempDir& dir, const std::string& tensor, const std::string& fragment) {
  const Error e = index_error(dir);
  const std::string message = e.what();
  INFO(message);
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(message.find("model.safetensors.index.json") != std::string::npos);
  if (!tensor.empty()) REQUIRE(message.find("tensor '" + tensor + "'") != std::string::npos);
  REQUIRE(message.find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("sharded safetensors: two shards round trip, ordered by shard then offset, shards' metadata merged") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, kGoodWeightMap, R"({"total_size": 240, "name": "demo"})");
  const std::string index = dir.file("model.safetensors.index.json");
  const auto source = open_safetensors_index(index);
  REQUIRE(source->format_name() == "safetensors-sharded");
  REQUIRE(source->path() == index);
  // Shard 2 appears first in weight_map.
  require_same(*source, {shards.tensors[2], shards.tensors[3], shards.tensors[0], shards.tensors[1]},
               {shards.data[2], shards.data[3], shards.data[0], shards.data[1]});
  // The index's own metadata describes the shard set (total_size), not the model: not read.
  const std::map<std::string, std::string> expected = {{"format", "pt"}, {"shard", "2"}};
  REQUIRE(source->metadata() == expected);
  // open_tensor_source dispatches on the .json name.
  REQUIRE(open_tensor_source(index)->format_name() == "safetensors-sharded");
}

TEST_CASE("sharded safetensors: shards that disagree on a __metadata__ key are refused") {
  TempDir dir;
  TwoShards shards(dir);
  // Shard 1 again with another "format": keeping one value would drop the other silently.
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), {shards.tensors[0], shards.tensors[1]},
                    {shards.data[0], shards.data[1]}, {{"format", "tf"}}, true);
  write_index(dir, kGoodWeightMap);
  require_index_format_error(dir, "",
                             "shards 'model-00002-of-00002.safetensors' and 'model-00001-of-00002.safetensors' disagree "
                             "on __metadata__ 'format' ('pt' against 'tf')");
}

TEST_CASE("sharded safetensors: shards in a subdirectory are allowed") {
  TempDir dir;
  std::filesystem::create_directory(dir.file("shards"));
  write_safetensors(dir.file("shards/a.safetensors"), {{"x", DType::U8, {2}}}, {{5, 6}}, {}, false);
  write_index(dir, R"("x":"shards/a.safetensors")");
  const auto source = open_safetensors_index(dir.file("model.safetensors.index.json"));
  REQUIRE(bytes_of(source->read(0)) == std::vector<uint8_t>{5, 6});
}

TEST_CASE("sharded safetensors: one shard spelled two ways in weight_map is one shard") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, R"("layer1.w":"./model-00002-of-00002.safetensors","layer0.w":"model-00001-of-00002.safetensors",)"
                   R"("layer0.b":".//model-00001-of-00002.safetensors","step":"model-00002-of-00002.safetensors")");
  const auto source = open_safetensors_index(dir.file("model.safetensors.index.json"));
  require_same(*source, {shards.tensors[2], shards.tensors[3], shards.tensors[0], shards.tensors[1]},
               {shards.data[2], shards.data[3], shards.data[0], shards.data[1]});
}

TEST_CASE("sharded safetensors: a missing shard file is an I/O error naming the shard") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, kGoodWeightMap + R"(,"extra":"model-00003-of-00003.safetensors")");
  const Error e = index_error(dir);
  REQUIRE(e.code() == ErrorCode::kIo);
  REQUIRE(std::string(e.what()).find("model-00003-of-00003.safetensors") != std::string::npos);
  REQUIRE(std::string(e.what()).find("model.safetensors.index.json") != std::string::npos);
}

TEST_CASE("sharded safetensors: a weight_map tensor absent from its shard is refused") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, kGoodWeightMap + R"(,"ghost":"model-00001-of-00002.safetensors")");
  require_index_format_error(dir, "ghost", "not in that shard");
}

TEST_CASE("sharded safetensors: a shard tensor absent from weight_map is refused") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, R"("layer1.w":"model-00002-of-00002.safetensors","layer0.w":"model-00001-of-00002.safetensors",)"
                   R"("layer0.b":"model-00001-of-00002.safetensors")");
  require_index_format_error(dir, "step", "not in weight_map");
}

TEST_CASE("sharded safetensors: a tensor mapped to the wrong shard is refused") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, R"("layer1.w":"model-00002-of-00002.safetensors","layer0.w":"model-00001-of-00002.safetensors",)"
                   R"("layer0.b":"model-00002-of-00002.safetensors","step":"model-00002-of-00002.safetensors")");
  require_index_format_error(dir, "layer0.b", "weight_map maps it to 'model-00002-of-00002.safetensors'");
}

TEST_CASE("sharded safetensors: a tensor name in two shards is refused") {
  TempDir dir;
  TwoShards shards(dir);
  write_safetensors(dir.file("model-00003.safetensors"), {{"layer0.b", DType::U8, {1}}}, {{9}}, {}, false);
  write_index(dir, kGoodWeightMap + R"(,"other":"model-00003.safetensors")");
  require_index_format_error(dir, "layer0.b", "is in two shards");
}

TEST_CASE("sharded safetensors: shard names escaping the index directory are refused") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, R"("layer0.w":"../model-00001-of-00002.safetensors")");
  require_index_format_error(dir, "layer0.w", "leaves the index's directory");
  write_index(dir, R"("layer0.w":"sub/../../x.safetensors")");
  require_index_format_error(dir, "layer0.w", "leaves the index's directory");
  write_index(dir, R"("layer0.w":")" + dir.file("model-00001-of-00002.safetensors") + "\"");
  require_index_format_error(dir, "layer0.w", "is an absolute path");
  write_index(dir, R"("layer0.w":"")");
  require_index_format_error(dir, "layer0.w", "is empty");
}

// Nesting deeper than serde_json's limit exhausted the parser's stack (SIGSEGV at 100000 levels, in a
// 200 KB header): refused with one line, in a header and in an index file.
TEST_CASE("safetensors refuses headers and index files nested deeper than 128 levels") {
  TempDir dir;
  auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  require_format_error(dir, raw_file(R"({"__metadata__":{"a":)" + nested(100000) + "}}", 0), "",
                       "header nests arrays and objects deeper than 128 levels");
  require_format_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":)" + nested(130) + R"(,"data_offsets":[0,0]}})", 0),
                       "", "nests arrays and objects deeper than 128 levels");
  // 128 levels in all parse (and are then refused for what they hold, not for their depth).
  const Error shallow = thrown_by([&] {
    test::write_file(dir.file("ok.safetensors"), raw_file(R"({"w":{"dtype":"F32","shape":)" + nested(126) + R"(,"data_offsets":[0,0]}})", 0));
    open_safetensors(dir.file("ok.safetensors"));
  });
  CHECK(std::string(shallow.what()).find("deeper than") == std::string::npos);
  write_index(dir, kGoodWeightMap, R"({"a":)" + nested(100000) + "}");
  require_index_format_error(dir, "", "index nests arrays and objects deeper than 128 levels");
}

TEST_CASE("sharded safetensors: a malformed index is refused") {
  TempDir dir;
  TwoShards shards(dir);
  write_index(dir, R"("layer0.w":7)");
  require_index_format_error(dir, "layer0.w", "not a shard file name");
  write_index(dir, R"("x":"a.safetensors","x":"b.safetensors")");
  require_index_format_error(dir, "", "duplicate key 'x'");
  test::write_file(dir.file("model.safetensors.index.json"), {'{', '}'});
  require_index_format_error(dir, "", "no weight_map");
  test::write_file(dir.file("model.safetensors.index.json"), {'[', ']'});
  require_index_format_error(dir, "", "not a JSON object");
  test::write_file(dir.file("model.safetensors.index.json"), {'{', '"'});
  require_index_format_error(dir, "", "not valid UTF-8 JSON");
}

TEST_CASE("sharded safetensors: a weight_map of many tensors is read whole") {
  TempDir dir;
  // One shard of 5000 one-byte tensors, listed in weight_map in reverse.
  std::string header = "{", weight_map;
  for (int i = 0; i < 5000; ++i) {
    const std::string name = "t" + std::to_string(i);
    header += (i ? "," : "") + ("\"" + name + R"(":{"dtype":"U8","shape":[1],"data_offsets":[)" + std::to_string(i) +
                                "," + std::to_string(i + 1) + "]}");
    weight_map = "\"" + name + R"(":"one.safetensors")" + (i ? "," : "") + weight_map;
  }
  header += "}";
  test::write_file(dir.file("one.safetensors"), raw_file(header, 5000));
  write_index(dir, weight_map, R"({"total_size":5000})");
  const auto source = open_safetensors_index(dir.file("model.safetensors.index.json"));
  REQUIRE(source->tensors().size() == 5000);
  CHECK(source->tensors()[4999].name == "t4999");
  CHECK(source->metadata().empty());
}

TEST_CASE("sharded safetensors: an invalid shard reports the shard's own error") {
  TempDir dir;
  TwoShards shards(dir);
  test::write_file(dir.file("model-00002-of-00002.safetensors"), {1, 2, 3});
  write_index(dir, kGoodWeightMap);
  const Error e = index_error(dir);
  REQUIRE(e.code() == ErrorCode::kFormat);
  REQUIRE(std::string(e.what()).find("model-00002-of-00002.safetensors: ") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Writer

TEST_CASE("safetensors writer streams data in arbitrary chunks") {
  TempDir dir;
  const std::vector<TensorInfo> tensors = {{"a", DType::F32, {17, 3}}, {"b", DType::U8, {5}}, {"c", DType::F16, {0}},
                                           {"d", DType::BF16, {2, 2, 9}}};
  std::vector<uint8_t> all;
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    data.push_back(test::random_bytes(tensors[i].num_bytes(), 90 + i));
    all.insert(all.end(), data.back().begin(), data.back().end());
  }
  const std::string path = dir.file("stream.safetensors");
  SafetensorsWriter writer(path, tensors, {}, false);
  for (size_t at = 0; at < all.size(); at += 7)
    writer.append(std::span<const uint8_t>(all).subspan(at, std::min<size_t>(7, all.size() - at)));
  writer.append({});
  REQUIRE_FALSE(std::filesystem::exists(path));  // nothing at the target before commit()
  writer.commit();
  require_same(*open_safetensors(path), tensors, data);
}

TEST_CASE("safetensors writer refuses more bytes than the tensors hold") {
  TempDir dir;
  SafetensorsWriter writer(dir.file("x.safetensors"), {{"a", DType::U8, {4}}}, {}, false);
  writer.append(std::vector<uint8_t>{1, 2, 3});
  const Error e = thrown_by([&] { writer.append(std::vector<uint8_t>{4, 5}); });
  REQUIRE(e.code() == ErrorCode::kInvalidArgument);
  writer.append(std::vector<uint8_t>{4});
  writer.commit();
  REQUIRE(bytes_of(open_safetensors(dir.file("x.safetensors"))->read(0)) == std::vector<uint8_t>{1, 2, 3, 4});
}

TEST_CASE("safetensors writer: commit() with missing bytes fails and leaves no file") {
  TempDir dir;
  {
    SafetensorsWriter writer(dir.file("x.safetensors"), {{"a", DType::U8, {4}}, {"b", DType::U8, {4}}}, {}, false);
    writer.append(std::vector<uint8_t>{1, 2, 3, 4, 5});
    const Error e = thrown_by([&] { writer.commit(); });
    REQUIRE(e.code() == ErrorCode::kInvalidArgument);
    REQUIRE(std::string(e.what()).find("tensor 'b'") != std::string::npos);
  }
  REQUIRE(directory_entries(dir.path()).empty());
}

TEST_CASE("safetensors writer refuses an existing target without overwrite and leaves no temp files") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  test::write_file(path, {'o', 'l', 'd'});
  const Error e = thrown_by([&] { write_safetensors(path, {{"a", DType::U8, {1}}}, {{1}}, {}, false); });
  REQUIRE(e.code() == ErrorCode::kExists);
  REQUIRE(test::read_file(path) == std::vector<uint8_t>{'o', 'l', 'd'});
  REQUIRE(directory_entries(dir.path()) == std::vector<std::string>{"m.safetensors"});

  write_safetensors(path, {{"a", DType::U8, {1}}}, {{1}}, {}, true);
  REQUIRE(bytes_of(open_safetensors(path)->read(0)) == std::vector<uint8_t>{1});
  REQUIRE(directory_entries(dir.path()) == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("safetensors writer refuses bad arguments before creating anything") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  auto code_of = [&](const std::function<void()>& f) { return thrown_by(f).code(); };
  REQUIRE(code_of([&] { write_safetensors(path, {{"a", DType::U8, {1}}, {"a", DType::U8, {1}}}, {{1}, {2}}, {}, false); }) ==
          ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { write_safetensors(path, {{"__metadata__", DType::U8, {1}}}, {{1}}, {}, false); }) ==
          ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { write_safetensors(path, {{"a", DType::U8, {2}}}, {{1}}, {}, false); }) ==
          ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { write_safetensors(path, {{"a", DType::U8, {1}}}, {}, {}, false); }) ==
          ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] { write_safetensors(path, {{"bad\xff", DType::U8, {1}}}, {{1}}, {}, false); }) ==
          ErrorCode::kInvalidArgument);
  REQUIRE(code_of([&] {
            SafetensorsWriter writer(path, {{"a", DType::F32, {uint64_t{1} << 62, 8}}}, {}, false);
            writer.commit();
          }) == ErrorCode::kInvalidArgument);
  REQUIRE(directory_entries(dir.path()).empty());
}
