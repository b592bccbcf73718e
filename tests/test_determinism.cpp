// Determinism (issue 6, item 6): the same input and options give the same bytes on any thread
// count and on every run, for lossless and lossy packing with every codec (zstd, rans, auto, none),
// in one process (thread-local codec contexts reused across runs) and across processes (the
// binary); unpack gives the same bytes on any thread count.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "packer/pack.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::RunResult;
using wpack::test::run_wpack;
using wpack::test::TempDir;

namespace {

MemorySource determinism_model() {
  MemorySource src("memory", {{"format", "pt"}});
  src.add("layers.0.attn.w", DType::BF16, {192, 256}, test::gaussian_bf16(192 * 256, 0.02f, 1));
  src.add("layers.0.mlp.w", DType::F32, {130, 200}, test::gaussian_f32(130 * 200, 0.05f, 2));
  src.add("layers.0.conv", DType::F16, {3, 40, 64}, test::gaussian_f16(3 * 40 * 64, 0.1f, 3));
  src.add("layers.0.norm", DType::F32, {256}, test::gaussian_f32(256, 1.0f, 4));
  src.add("positions", DType::I32, {1000}, test::random_bytes(4000, 5));
  src.add("mask", DType::U8, {70, 90}, test::random_bytes(70 * 90, 6));
  return src;
}

struct Config {
  std::string name;
  PackOptions options;
};

std::vector<Config> configs() {
  std::vector<Config> out;
  const std::vector<std::pair<std::string, Codec>> codecs = {{"zstd", Codec::kZstd}, {"rans", Codec::kRans}, {"none", Codec::kNone}};
  auto base = [] {
    PackOptions o;
    o.tile_rows = 32;
    o.tile_cols = 64;
    o.command_line = "test_determinism";
    o.overwrite = true;
    return o;
  };
  for (const auto& [name, codec] : codecs) {
    Config c{"lossless " + name, base()};
    c.options.codec = codec;
    out.push_back(c);
  }
  {
    Config c{"lossless auto", base()};
    c.options.codec_auto = true;
    out.push_back(c);
  }
  const std::vector<std::string> schemes = {"int4", "int8", "lut4:rows32", "fp4", "nf4:prune=2:4", "int4:g64:prune=0.5", "fp6"};
  for (const auto& scheme : schemes) {
    for (const char* codec : {"zstd", "rans", "auto"}) {
      Config c{"lossy " + scheme + " " + codec, base()};
      c.options.policy = parse_policy_spec(scheme + ":codec=" + codec, TensorPolicy{});
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("determinism: the same bytes for 1, 2, 3 and 8 threads and on a repeated run, every codec, lossless and lossy") {
  TempDir dir;
  const MemorySource src = determinism_model();
  for (const Config& c : configs()) {
    INFO(c.name);
    PackOptions o = c.options;
    o.threads = 1;
    pack_model(src, dir.file("ref.wpk"), o);
    const auto reference = test::read_file(dir.file("ref.wpk"));
    REQUIRE(reference.size() > 1000);
    // Each count once, then 1 and 3 again: a repeated run reuses this process's codec contexts.
    for (int threads : {2, 3, 8, 1, 3}) {
      INFO(threads << " threads");
      o.threads = threads;
      pack_model(src, dir.file("again.wpk"), o);
      CHECK(test::read_file(dir.file("again.wpk")) == reference);
    }
  }
}

TEST_CASE("determinism: the binary gives the same bytes in separate runs at any -T, unpack too") {
  TempDir dir;
  const std::string model = dir.file("model.safetensors");
  {
    const MemorySource src = determinism_model();
    std::vector<std::vector<uint8_t>> data;
    for (size_t i = 0; i < src.tensors().size(); ++i) data.push_back(src.data(i));
    write_safetensors(model, src.tensors(), data, src.metadata(), false);
  }
  const std::vector<std::vector<std::string>> option_sets = {
      {"--codec", "zstd"}, {"--codec", "rans"}, {"--codec", "auto"}, {"--scheme", "int4", "--codec", "rans"},
      {"--scheme", "lut3", "--lut-per", "rows:64", "--codec", "auto"}, {"--scheme", "fp8", "--prune", "0.3"}};
  for (const auto& options : option_sets) {
    std::string label;
    for (const auto& o : options) label += o + " ";
    INFO(label);
    std::vector<uint8_t> reference;
    for (const char* threads : {"1", "2", "3", "2"}) {
      INFO("-T " << threads);
      const std::string out = dir.file("out.wpk");
      std::vector<std::string> args = {"compress", model, "-o", out, "-f", "-q", "-T", threads, "--tile", "32x64"};
      args.insert(args.end(), options.begin(), options.end());
      RunResult r = run_wpack(args);
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      const auto bytes = test::read_file(out);
      if (reference.empty()) reference = bytes;
      CHECK(bytes == reference);
    }
    // unpack: the same safetensors bytes for any thread count.
    std::vector<uint8_t> unpacked;
    for (const char* threads : {"1", "3"}) {
      const std::string out = dir.file("out.safetensors");
      RunResult r = run_wpack({"unpack", dir.file("out.wpk"), "-o", out, "-f", "-q", "-T", threads});
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      const auto bytes = test::read_file(out);
      if (unpacked.empty()) unpacked = bytes;
      CHECK(bytes == unpacked);
    }
  }
}
