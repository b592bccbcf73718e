// verify_cpu's on_decoded hook (verify/verify.h): what it hands over (the GPU checks of `wpack verify
// --device cuda` take it as their CPU reference, tests/gpu_verify.cpp), and that it changes nothing
// of the CPU report.
#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "formats/error.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "packer/unpack.h"
#include "test_util.h"
#include "verify/verify.h"

using namespace wpack;

namespace {

// One call of the hook, copied out of it (its spans are valid during the call only).
struct HookCall {
  size_t tensor = 0;
  bool failed = false;
  ErrorCode code = ErrorCode::kIo;
  std::string message;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

HookCall copy_call(const DecodedTensor& d) {
  HookCall c;
  c.tensor = d.tensor;
  c.failed = d.error != nullptr;
  if (d.error) {
    c.code = d.error->code();
    c.message = d.error->what();
  }
  c.bytes.assign(d.bytes.begin(), d.bytes.end());
  c.values.assign(d.values.begin(), d.values.end());
  return c;
}

void require_same_report(const VerifyReport& a, const VerifyReport& b) {
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorCheck& x = a.tensors[i];
    const TensorCheck& y = b.tensors[i];
    INFO("tensor " << i << " " << x.name);
    CHECK(x.name == y.name);
    CHECK(x.decoded == y.decoded);
    CHECK(x.compared == y.compared);
    CHECK(x.bit_exact == y.bit_exact);
    CHECK(x.mismatched_elements == y.mismatched_elements);
    CHECK(x.first_bad_tile == y.first_bad_tile);
    CHECK(x.lossy == y.lossy);
    CHECK(std::memcmp(&x.rel_error, &y.rel_error, sizeof(double)) == 0);
    CHECK(std::memcmp(&x.recorded_rel_error, &y.recorded_rel_error, sizeof(double)) == 0);
    CHECK(x.error == y.error);
  }
  CHECK(a.errors == b.errors);
  CHECK(a.tiles_checked == b.tiles_checked);
}

// Tile k of tensor `name` with one stored byte flipped: its checksum no longer matches.
std::vector<uint8_t> with_flipped_tile(std::vector<uint8_t> bytes, const WpkReader& reader, const std::string& name,
                                       uint64_t k) {
  for (const WpkTensor& t : reader.tensors())
    if (t.name == name) {
      const WpkTile& tile = reader.tiles()[t.first_tile + k];
      bytes[tile.offset + tile.stored_size / 2] ^= 0x20;
      return bytes;
    }
  FAIL("no tensor " << name);
  return bytes;
}

}  // namespace

TEST_CASE("verify_cpu hook: once per tensor in file order, with decode_tensor's bytes and decode_tensor_f32's values") {
  test::TempDir dir;
  MemorySource source("source");
  source.add("w", DType::BF16, {200, 300}, test::gaussian_bf16(200 * 300, 0.02f, 1));
  source.add("bias", DType::BF16, {300}, test::gaussian_bf16(300, 0.02f, 2));
  source.add("f32", DType::F32, {70, 90}, test::gaussian_f32(70 * 90, 0.02f, 3));
  source.add("q", DType::BF16, {128, 256}, test::gaussian_bf16(128 * 256, 0.02f, 4));
  source.add("bad", DType::BF16, {128, 128}, test::gaussian_bf16(128 * 128, 0.02f, 5));
  source.add("badq", DType::BF16, {128, 256}, test::gaussian_bf16(128 * 256, 0.02f, 6));
  source.add("empty", DType::F32, {0, 8}, {});
  PackOptions options;
  options.tile_rows = 64;
  options.tile_cols = 64;
  for (const char* lossy : {"^q$", "^badq$"})
    options.overrides.push_back({lossy, parse_policy_spec("int4:g64:codec=rans", TensorPolicy{})});
  const std::string good_path = dir.file("good.wpk");
  pack_model(source, good_path, options);

  // "bad" (lossless) and "badq" (lossy) each with a tile whose checksum fails.
  const std::string bad_path = dir.file("bad.wpk");
  {
    auto good = WpkReader::open(good_path);
    std::vector<uint8_t> bytes = test::read_file(good_path);
    bytes = with_flipped_tile(std::move(bytes), *good, "bad", 2);
    bytes = with_flipped_tile(std::move(bytes), *good, "badq", 3);
    test::write_file(bad_path, bytes);
  }

  for (const bool with_source : {false, true}) {
    const TensorSource* against = with_source ? &source : nullptr;
    for (const std::string& path : {good_path, bad_path}) {
      INFO(path << (with_source ? " against the source" : ""));
      auto reader = WpkReader::open(path);
      const size_t count = reader->tensors().size();
      REQUIRE(count == 7);
      std::vector<HookCall> calls;
      const VerifyReport hooked =
          verify_cpu(*reader, against, 2, std::numeric_limits<double>::infinity(),
                     [&](const DecodedTensor& d) { calls.push_back(copy_call(d)); });
      const VerifyReport plain = verify_cpu(*reader, against, 2);
      require_same_report(hooked, plain);
      CHECK(plain.ok() == (path == good_path));

      REQUIRE(calls.size() == count);
      for (size_t t = 0; t < count; ++t) {
        const WpkTensor& wt = reader->tensors()[t];
        const HookCall& c = calls[t];
        INFO("tensor " << t << " " << wt.name);
        CHECK(c.tensor == t);
        const bool should_fail = path == bad_path && (wt.name == "bad" || wt.name == "badq");
        CHECK(c.failed == should_fail);
        CHECK(c.failed == !plain.tensors[t].decoded);
        if (c.failed) {
          // The Error that the decode throws: code and message (which names the tile).
          CHECK(c.bytes.empty());
          CHECK(c.values.empty());
          CHECK(c.message == plain.tensors[t].error);
          CHECK(c.code == ErrorCode::kCorrupt);
          CHECK(c.message.find("tensor '" + wt.name + "'") != std::string::npos);
          CHECK(c.message.find(wt.name == "bad" ? "tile 2" : "tile 3") != std::string::npos);
          std::string decode_message;
          ErrorCode decode_code = ErrorCode::kIo;
          try {
            if (wt.scheme != 0) {
              std::vector<float> out(wt.num_elements());
              decode_tensor_f32(*reader, t, out, 1);
            } else {
              std::vector<uint8_t> out(wt.num_elements() * dtype_size(wt.dtype));
              decode_tensor(*reader, t, out, 1);
            }
          } catch (const Error& e) {
            decode_message = e.what();
            decode_code = e.code();
          }
          CHECK(decode_message == c.message);
          CHECK(decode_code == c.code);
        } else if (wt.scheme != 0) {
          std::vector<float> expect(wt.num_elements());
          decode_tensor_f32(*reader, t, expect, 1);
          CHECK(c.bytes.empty());
          REQUIRE(c.values.size() == expect.size());
          CHECK(std::memcmp(c.values.data(), expect.data(), expect.size() * sizeof(float)) == 0);
        } else {
          std::vector<uint8_t> expect(wt.num_elements() * dtype_size(wt.dtype));
          decode_tensor(*reader, t, expect, 1);
          CHECK(c.values.empty());
          CHECK(c.bytes == expect);
          if (wt.name == "empty") CHECK(c.bytes.empty());
        }
      }
      // The lossless tensors' bytes are the source's: the hook hands over what the CPU checked.
      if (path == good_path)
        for (size_t t = 0; t < count; ++t)
          for (size_t s = 0; s < source.tensors().size(); ++s)
            if (source.tensors()[s].name == reader->tensors()[t].name && reader->tensors()[t].scheme == 0)
              CHECK(calls[t].bytes == source.data(s));
    }
  }
}

TEST_CASE("verify_cpu hook: an exception from the hook propagates, and no tensor is handed over after it") {
  test::TempDir dir;
  MemorySource source("source");
  for (int i = 0; i < 3; ++i)
    source.add("t" + std::to_string(i), DType::BF16, {64, 64}, test::gaussian_bf16(64 * 64, 0.02f, 10 + i));
  const std::string path = dir.file("m.wpk");
  pack_model(source, path, PackOptions{});
  auto reader = WpkReader::open(path);
  std::vector<size_t> seen;
  CHECK_THROWS_AS(verify_cpu(*reader, &source, 1, std::numeric_limits<double>::infinity(),
                             [&](const DecodedTensor& d) {
                               seen.push_back(d.tensor);
                               if (d.tensor == 1) throw Error(ErrorCode::kIo, "hook failed");
                             }),
                  Error);
  CHECK(seen == std::vector<size_t>{0, 1});
}
