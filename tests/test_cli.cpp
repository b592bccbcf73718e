// The wpack executable end to end, through run_wpack(): compress -> inspect -> verify -> unpack
// round trips, inspect --json, dry runs, output safety, error messages and exit codes, thread-count
// determinism, HDF5 input, quiet/progress behaviour and `verify --device cuda` on a CPU build.
#include <catch2/catch.hpp>
#include <hdf5.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "formats/hdf5.h"
#include "formats/safetensors.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::RunResult;
using wpack::test::ScopedEnv;
using wpack::test::run_wpack;
using wpack::test::TempDir;
using json = nlohmann::json;

namespace {

const std::map<std::string, std::string> kMetadata = {{"format", "pt"}, {"author", "wpack tests"}};

struct Model {
  std::vector<TensorInfo> infos;
  std::vector<std::vector<uint8_t>> data;
};

// Several dtypes and ranks: BF16 2-D, F32 3-D, I64 1-D, a 0-d tensor and an empty tensor.
Model small_model() {
  Model m;
  m.infos = {
      {"layer.0.weight", DType::BF16, {64, 96}},
      {"layer.0.proj", DType::F32, {3, 5, 40}},
      {"positions", DType::I64, {17}},
      {"scale", DType::F32, {}},
      {"empty", DType::BF16, {0, 8}},
  };
  m.data.push_back(test::gaussian_bf16(64 * 96, 0.02f, 11));
  m.data.push_back(test::gaussian_f32(3 * 5 * 40, 0.05f, 12));
  std::vector<uint8_t> pos(17 * 8);
  for (int64_t i = 0; i < 17; ++i) {
    const int64_t v = i * 1000 - 3;
    std::memcpy(pos.data() + 8 * i, &v, 8);
  }
  m.data.push_back(pos);
  const float scale = 0.125f;
  std::vector<uint8_t> s(4);
  std::memcpy(s.data(), &scale, 4);
  m.data.push_back(s);
  m.data.push_back({});
  return m;
}

void write_model(const std::string& path, const Model& m) { write_safetensors(path, m.infos, m.data, kMetadata, true); }

std::string write_small_model(const TempDir& dir, const std::string& name = "model.safetensors") {
  const std::string path = dir.file(name);
  write_model(path, small_model());
  return path;
}

// A model large enough for meaningful ratios: gaussian BF16.
std::string write_gaussian_model(const TempDir& dir, const std::string& name = "gauss.safetensors") {
  const std::string path = dir.file(name);
  std::vector<TensorInfo> infos = {{"mlp.w1", DType::BF16, {256, 384}}, {"mlp.w2", DType::BF16, {384, 256}}};
  std::vector<std::vector<uint8_t>> data = {test::gaussian_bf16(256 * 384, 0.02f, 21),
                                            test::gaussian_bf16(384 * 256, 0.02f, 22)};
  write_safetensors(path, infos, data, kMetadata, true);
  return path;
}

size_t count_lines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

// A failure reported as exactly one line "wpack: ..." on stderr, naming `mention`.
void require_one_line_error(const RunResult& r, const std::string& mention) {
  INFO("stderr: " << r.err);
  CHECK(count_lines(r.err) == 1);
  CHECK(!r.err.empty());
  CHECK(r.err.back() == '\n');
  CHECK(r.err.rfind("wpack: ", 0) == 0);
  if (!mention.empty()) CHECK(contains(r.err, mention));
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

RunResult compress(const std::string& in, const std::string& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"compress", in, "-o", out};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_wpack(args);
}

json inspect_json(const std::string& path) {
  RunResult r = run_wpack({"inspect", "--json", path});
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  json j = json::parse(r.out, nullptr, false);
  REQUIRE(!j.is_discarded());
  return j;
}

const json& tensor_named(const json& j, const std::string& name) {
  for (const auto& t : j.at("tensors"))
    if (t.at("name") == name) return t;
  FAIL("tensor " << name << " not in inspect output");
  static json none;
  return none;
}

uint64_t elements_of(const json& shape) {
  uint64_t n = 1;
  for (const auto& d : shape) n *= d.get<uint64_t>();
  return n;
}

bool is_wpk(const std::string& path) {
  auto b = test::read_file(path);
  return b.size() >= 4 && b[0] == 0x89 && b[1] == 'W' && b[2] == 'P' && b[3] == 'K';
}

}  // namespace

TEST_CASE("compress -> inspect -> verify --against -> unpack round trip, all dtypes and metadata") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("model.wpk");
  const std::string unpacked = dir.file("unpacked.safetensors");

  RunResult c = compress(model, packed);
  INFO("compress stderr: " << c.err);
  REQUIRE(c.exit_code == 0);
  REQUIRE(is_wpk(packed));

  RunResult i = run_wpack({"inspect", packed});
  INFO("inspect stderr: " << i.err);
  REQUIRE(i.exit_code == 0);
  const Model expected = small_model();
  for (const auto& t : expected.infos) CHECK(contains(i.out, t.name));

  RunResult v = run_wpack({"verify", packed, "--against", model});
  INFO("verify stdout: " << v.out << " stderr: " << v.err);
  REQUIRE(v.exit_code == 0);
  CHECK(contains(v.out, "OK"));
  CHECK(v.err.empty());

  RunResult u = run_wpack({"unpack", packed, "-o", unpacked});
  INFO("unpack stderr: " << u.err);
  REQUIRE(u.exit_code == 0);

  auto src = open_safetensors(model);
  auto out = open_safetensors(unpacked);
  REQUIRE(out->tensors().size() == src->tensors().size());
  for (size_t k = 0; k < src->tensors().size(); ++k) {
    const TensorInfo& s = src->tensors()[k];
    INFO("tensor " << s.name);
    auto it = std::find_if(out->tensors().begin(), out->tensors().end(), [&](const TensorInfo& t) { return t.name == s.name; });
    REQUIRE(it != out->tensors().end());
    CHECK(it->dtype == s.dtype);
    CHECK(it->shape == s.shape);
    TensorBytes a = src->read(k), b = out->read(static_cast<size_t>(it - out->tensors().begin()));
    REQUIRE(a.size() == b.size());
    CHECK(std::equal(a.data(), a.data() + a.size(), b.data()));
  }
  CHECK(out->metadata() == src->metadata());
  CHECK(out->metadata() == kMetadata);

  // The unpacked file verifies against the .wpk as well, and unpack refuses to overwrite it.
  CHECK(run_wpack({"verify", packed, "--against", unpacked}).exit_code == 0);
  const auto before = test::read_file(unpacked);
  RunResult again = run_wpack({"unpack", packed, "-o", unpacked});
  CHECK(again.exit_code == 1);
  require_one_line_error(again, unpacked);
  CHECK(test::read_file(unpacked) == before);
  CHECK(run_wpack({"unpack", packed, "-o", unpacked, "-f"}).exit_code == 0);
}

TEST_CASE("inspect --json on a .wpk: keys, types and consistent numbers") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("model.wpk");
  REQUIRE(compress(model, packed).exit_code == 0);

  json j = inspect_json(packed);
  REQUIRE(j.is_object());
  REQUIRE(j.contains("tensors"));
  REQUIRE(j.contains("totals"));
  REQUIRE(j["tensors"].is_array());
  const Model expected = small_model();
  REQUIRE(j["tensors"].size() == expected.infos.size());

  uint64_t sum_original = 0, sum_elements = 0;
  for (const auto& t : j["tensors"]) {
    INFO(t.dump());
    for (const char* key : {"name", "dtype", "shape", "scheme", "codec", "filter", "tiles", "tile_shape",
                            "original_bytes", "packed_bytes", "ratio", "bits_per_weight"})
      REQUIRE(t.contains(key));
    CHECK(t["name"].is_string());
    CHECK(t["dtype"].is_string());
    CHECK(t["shape"].is_array());
    CHECK(t["scheme"].is_string());
    CHECK(t["scheme"] == "lossless");
    CHECK(t["codec"].is_string());
    CHECK(t["filter"].is_string());
    CHECK(t["tiles"].is_number_unsigned());
    CHECK(t["original_bytes"].is_number_unsigned());
    CHECK(t["packed_bytes"].is_number_unsigned());
    // null for a tensor of no elements (its record still takes bytes)
    CHECK((elements_of(t["shape"]) ? t["ratio"].is_number() : t["ratio"].is_null()));
    CHECK((elements_of(t["shape"]) ? t["bits_per_weight"].is_number() : t["bits_per_weight"].is_null()));
    REQUIRE(t["tile_shape"].is_array());
    CHECK(t["tile_shape"].size() == 2);

    const uint64_t elements = elements_of(t["shape"]);
    const uint64_t original = t["original_bytes"].get<uint64_t>();
    const uint64_t packed_bytes = t["packed_bytes"].get<uint64_t>();
    const auto src = std::find_if(expected.infos.begin(), expected.infos.end(),
                                  [&](const TensorInfo& i) { return i.name == t["name"].get<std::string>(); });
    REQUIRE(src != expected.infos.end());
    CHECK(t["dtype"] == std::string(dtype_name(src->dtype)));
    CHECK(t["shape"].get<std::vector<uint64_t>>() == src->shape);
    CHECK(original == src->num_bytes());
    CHECK(packed_bytes > 0);  // at least its index entry
    if (original > 0) CHECK(t["ratio"].get<double>() == Approx(double(packed_bytes) / double(original)));
    if (elements > 0) CHECK(t["bits_per_weight"].get<double>() == Approx(8.0 * double(packed_bytes) / double(elements)));
    if (elements == 0) CHECK(t["tiles"] == 0);
    else CHECK(t["tiles"].get<uint64_t>() >= 1);
    sum_original += original;
    sum_elements += elements;
  }
  const json& totals = j["totals"];
  CHECK(totals["original_bytes"].get<uint64_t>() == sum_original);
  CHECK(totals["elements"].get<uint64_t>() == sum_elements);
  CHECK(totals["tensors"].get<uint64_t>() == expected.infos.size());
  CHECK(totals["packed_bytes"].get<uint64_t>() == std::filesystem::file_size(packed));
  CHECK(totals["ratio"].get<double>() == Approx(double(std::filesystem::file_size(packed)) / double(sum_original)));
  CHECK(tensor_named(j, "scale")["shape"].empty());
  CHECK(tensor_named(j, "scale")["tiles"] == 1);
}

// Paths are bytes: one that is not UTF-8 (here 0xFF in both names) still packs, and the JSON outputs
// stay valid JSON, the bad byte written as U+FFFD (the file's metadata records the command line).
TEST_CASE("paths that are not UTF-8: compress, inspect --json and verify --json work") {
  TempDir dir;
  const std::string model = dir.file("in\xff.safetensors"), packed = dir.file("out\xff.wpk");
  std::filesystem::copy_file(write_small_model(dir), model);
  const RunResult c = compress(model, packed);
  INFO("stderr: " << c.err);
  REQUIRE(c.exit_code == 0);
  const json j = inspect_json(packed);
  CHECK(j.at("file").get<std::string>().find("out\xef\xbf\xbd.wpk") != std::string::npos);  // U+FFFD
  auto r = WpkReader::open(packed);
  CHECK(json::parse(r->metadata_json()).at("command_line").get<std::string>().find("in\xef\xbf\xbd.safetensors") !=
        std::string::npos);
  const RunResult v = run_wpack({"verify", packed, "--against", model, "--json"});
  INFO("stderr: " << v.err);
  CHECK(v.exit_code == 0);
  CHECK_FALSE(json::parse(v.out, nullptr, false).is_discarded());
}

TEST_CASE("compress: rans is the default codec, --codec zstd still selects zstd") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);
  REQUIRE(compress(model, dir.file("default.wpk")).exit_code == 0);
  REQUIRE(compress(model, dir.file("zstd.wpk"), {"--codec", "zstd"}).exit_code == 0);
  // named objects: a range-for over a member of a temporary json dangles (operator[] returns a reference)
  const json rans_report = inspect_json(dir.file("default.wpk")), zstd_report = inspect_json(dir.file("zstd.wpk"));
  REQUIRE_FALSE(rans_report["tensors"].empty());
  REQUIRE_FALSE(zstd_report["tensors"].empty());
  for (const auto& t : rans_report["tensors"]) CHECK(t["codec"].get<std::string>() == "rans");
  for (const auto& t : zstd_report["tensors"]) CHECK(t["codec"].get<std::string>() == "zstd");
  CHECK(run_wpack({"verify", dir.file("default.wpk"), "--against", model}).exit_code == 0);
}

TEST_CASE("compress --codec exp4: inspect names exp4, verify --device cpu passes, unpack gives the source bytes") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("exp4.wpk"), unpacked = dir.file("exp4.safetensors");
  RunResult c = compress(model, packed, {"--codec", "exp4"});
  INFO("compress stderr: " << c.err);
  REQUIRE(c.exit_code == 0);

  // inspect: the codec per tensor, in --json and in the table.
  const json j = inspect_json(packed);
  CHECK(j["format_version"] == 5);
  CHECK(tensor_named(j, "layer.0.weight")["codec"] == "exp4");  // BF16
  CHECK(tensor_named(j, "layer.0.weight")["filter"] == "floatplanes");
  CHECK(tensor_named(j, "layer.0.proj")["codec"] == "exp4");    // F32
  CHECK(tensor_named(j, "positions")["codec"] != "exp4");       // I64: rans (or raw)
  CHECK(tensor_named(j, "scale")["codec"] == "none");           // one F32: exp4 would not shrink it
  RunResult table = run_wpack({"inspect", packed});
  REQUIRE(table.exit_code == 0);
  CHECK(contains(table.out, "format v5"));
  bool weight_row = false;
  std::istringstream lines(table.out);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("layer.0.weight ", 0) == 0) weight_row = contains(line, " exp4 ") && contains(line, " floatplanes ");
  CHECK(weight_row);

  RunResult v = run_wpack({"verify", packed, "--against", model, "--device", "cpu"});
  INFO("verify stdout: " << v.out << " stderr: " << v.err);
  CHECK(v.exit_code == 0);
  CHECK(contains(v.out, "bit-exact"));

  REQUIRE(run_wpack({"unpack", packed, "-o", unpacked}).exit_code == 0);
  auto src = open_safetensors(model);
  auto out = open_safetensors(unpacked);
  REQUIRE(out->tensors().size() == src->tensors().size());
  for (size_t k = 0; k < src->tensors().size(); ++k) {
    INFO("tensor " << src->tensors()[k].name);
    REQUIRE(out->tensors()[k].name == src->tensors()[k].name);
    CHECK(out->tensors()[k].dtype == src->tensors()[k].dtype);
    TensorBytes a = src->read(k), b = out->read(k);
    REQUIRE(a.size() == b.size());
    CHECK(std::equal(a.data(), a.data() + a.size(), b.data()));
  }

  // The gaussian model: 12 bits per BF16 weight and a little more; the dry run predicts the tiles.
  const std::string gauss = write_gaussian_model(dir);
  REQUIRE(compress(gauss, dir.file("g.wpk"), {"--codec", "exp4"}).exit_code == 0);
  const json g = inspect_json(dir.file("g.wpk"));
  for (const auto& t : g["tensors"]) {
    CHECK(t["codec"] == "exp4");
    CHECK(t["ratio"].get<double>() == Approx(0.754).margin(0.005));
  }
  RunResult dry = compress(gauss, dir.file("unused.wpk"), {"--codec", "exp4", "--dry-run", "--json"});
  REQUIRE(dry.exit_code == 0);
  const json plan = json::parse(dry.out);
  for (const auto& t : plan["tensors"]) {
    const uint64_t packed_bytes = tensor_named(g, t["name"].get<std::string>())["packed_bytes"].get<uint64_t>();
    CHECK(t["estimated_bytes"].get<double>() == Approx(double(packed_bytes)).epsilon(0.001));
    // inspect's fields: ratio as estimated / original bytes
    CHECK(t["ratio"].get<double>() ==
          Approx(t["estimated_bytes"].get<double>() / t["original_bytes"].get<double>()).epsilon(1e-12));
  }
  CHECK(plan["totals"]["elements"] == g["totals"]["elements"]);
  CHECK(plan["totals"]["ratio"].get<double>() ==
        Approx(plan["totals"]["estimated_bytes"].get<double>() / plan["totals"]["original_bytes"].get<double>()).epsilon(1e-12));
  CHECK(!std::filesystem::exists(dir.file("unused.wpk")));
}

// --filter floatplanes on a model with an integer tensor: that one is byteshuffled, which compress
// says (not with -q); the file unpacks bit-exactly either way.
TEST_CASE("compress --filter floatplanes notes the tensors that are not floats (byteshuffled)") {
  TempDir dir;
  const std::string model = write_small_model(dir);  // "positions" is I64
  const std::string packed = dir.file("fp.wpk");
  RunResult c = compress(model, packed, {"--filter", "floatplanes"});
  REQUIRE(c.exit_code == 0);
  CHECK(contains(c.err, "note: --filter floatplanes: 1 tensor is not floating point ('positions'): byteshuffle instead"));
  CHECK(run_wpack({"verify", packed, "--against", model}).exit_code == 0);
  RunResult q = run_wpack({"-q", "compress", model, "-o", dir.file("q.wpk"), "--filter", "floatplanes"});
  CHECK(q.exit_code == 0);
  CHECK(q.err.empty());
  RunResult plain = compress(model, dir.file("plain.wpk"));  // the packer's own choice: no note
  CHECK(!contains(plain.err, "floatplanes"));
}

TEST_CASE("compress --codec exp4 with --filter other than floatplanes or auto is a usage error") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string out = dir.file("out.wpk");
  for (const char* filter : {"none", "byteshuffle", "bitshuffle"}) {
    INFO(filter);
    RunResult r = compress(model, out, {"--codec", "exp4", "--filter", filter});
    CHECK(r.exit_code == 2);
    require_one_line_error(r, std::string("--filter must be floatplanes or auto (got '") + filter + "')");
    CHECK(!std::filesystem::exists(out));
  }
  // exp4 in an override with a forced filter: refused by the packer, before writing.
  RunResult o = compress(model, out, {"--filter", "none", "--override", "^layer=lossless:codec=exp4"});
  CHECK(o.exit_code == 2);
  require_one_line_error(o, "codec exp4 (override '^layer') takes filter floatplanes only, not none");
  CHECK(!std::filesystem::exists(out));
  for (const char* filter : {"auto", "floatplanes"}) {
    INFO(filter);
    CHECK(compress(model, out, {"--codec", "exp4", "--filter", filter, "-f"}).exit_code == 0);
  }
  RunResult help = run_wpack({"compress", "--help"});
  CHECK(contains(help.out, "exp4 (BF16/F32: 4-bit exponent codes"));
}

TEST_CASE("inspect on a model (not packed) is a dry run with a lossless estimate") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);
  json j = inspect_json(model);
  CHECK(j["dry_run"] == true);
  REQUIRE(j["tensors"].size() == 2);
  for (const auto& t : j["tensors"]) {
    INFO(t.dump());
    CHECK(t["dtype"] == "BF16");
    const double ratio = t["ratio"].get<double>();
    CHECK(ratio < 1.0);
    CHECK(ratio > 0.55);  // gaussian BF16: exponent byte compresses, mantissa byte does not (~0.66)
    CHECK(ratio < 0.80);
    CHECK(t["bits_per_weight"].get<double>() == Approx(16 * ratio));
  }
  CHECK(j["totals"]["original_bytes"] == 2 * 256 * 384 * 2);
  // Nothing was written next to the model.
  CHECK(list_dir(dir.path()) == std::vector<std::string>{"gauss.safetensors"});

  RunResult text = run_wpack({"inspect", model});
  CHECK(text.exit_code == 0);
  CHECK(contains(text.out, "mlp.w1"));
  CHECK(contains(text.out, "not packed"));
}

TEST_CASE("output safety: existing output, -f, output == input, no temp files after a failure") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string out = dir.file("out.wpk");
  const std::vector<uint8_t> precious = {'k', 'e', 'e', 'p', ' ', 'm', 'e', '\n'};
  test::write_file(out, precious);

  SECTION("existing output without -f is refused and left unchanged") {
    RunResult r = compress(model, out);
    CHECK(r.exit_code == 1);
    require_one_line_error(r, out);
    CHECK(test::read_file(out) == precious);
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"model.safetensors", "out.wpk"});
  }
  SECTION("with -f the output is replaced") {
    RunResult r = compress(model, out, {"-f"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(is_wpk(out));
    CHECK(run_wpack({"verify", out, "--against", model}).exit_code == 0);
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"model.safetensors", "out.wpk"});
  }
  SECTION("-f replaces regular files only: a FIFO, a directory and an empty path are refused before packing") {
    const std::string fifo = dir.file("pipe.wpk"), sub = dir.file("sub.wpk");
    REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    std::filesystem::create_directory(sub);
    const std::string packed = dir.file("p.wpk");
    REQUIRE(compress(model, packed).exit_code == 0);
    for (const std::string& target : {fifo, sub}) {
      INFO(target);
      RunResult r = compress(model, target, {"-f"});
      CHECK(r.exit_code == 1);
      require_one_line_error(r, target + ": not a regular file (-f replaces regular files only)");
      RunResult u = run_wpack({"unpack", packed, "-o", target, "-f"});
      CHECK(u.exit_code == 1);
      require_one_line_error(u, target + ": not a regular file (-f replaces regular files only)");
    }
    struct stat st;
    REQUIRE(::lstat(fifo.c_str(), &st) == 0);
    CHECK(S_ISFIFO(st.st_mode));
    CHECK(std::filesystem::is_directory(sub));
    RunResult empty = compress(model, "");
    CHECK(empty.exit_code == 2);
    require_one_line_error(empty, "the output path is empty");
  }
  SECTION("output == input is refused, with or without -f, also under another spelling") {
    const auto before = test::read_file(model);
    for (const std::string& target : {model, dir.path() + "/./model.safetensors"}) {
      for (bool force : {false, true}) {
        INFO(target << (force ? " -f" : ""));
        RunResult r = force ? compress(model, target, {"-f"}) : compress(model, target);
        CHECK(r.exit_code == 2);  // a usage error (Error kInvalidArgument)
        require_one_line_error(r, target + ": output is the input file " + model);
        CHECK(r.err == "wpack: " + target + ": output is the input file " + model + "\n");
        CHECK(test::read_file(model) == before);
      }
    }
    const std::string packed = dir.file("p.wpk");
    REQUIRE(compress(model, packed).exit_code == 0);
    const auto packed_before = test::read_file(packed);
    RunResult u = run_wpack({"unpack", packed, "-o", packed, "-f"});
    CHECK(u.exit_code == 2);
    require_one_line_error(u, packed + ": output is the input file");
    CHECK(u.err == "wpack: " + packed + ": output is the input file\n");
    CHECK(test::read_file(packed) == packed_before);
  }
  SECTION("a shard of a sharded input is refused as the output, with or without -f") {
    const std::string shard = write_small_model(dir, "model-00001-of-00001.safetensors");
    json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
    for (const TensorInfo& t : small_model().infos) index["weight_map"][t.name] = "model-00001-of-00001.safetensors";
    const std::string index_path = dir.file("model.safetensors.index.json");
    const std::string text = index.dump();
    test::write_file(index_path, std::vector<uint8_t>(text.begin(), text.end()));
    REQUIRE(compress(index_path, dir.file("sharded.wpk")).exit_code == 0);
    const auto before = test::read_file(shard);
    for (bool force : {false, true}) {
      INFO((force ? "-f" : "no -f"));
      RunResult r = force ? compress(index_path, shard, {"-f"}) : compress(index_path, shard);
      CHECK(r.exit_code == 2);
      require_one_line_error(r, shard + ": output is the input file " + shard);
      CHECK(r.err == "wpack: " + shard + ": output is the input file " + shard + "\n");
      CHECK(test::read_file(shard) == before);
    }
  }
  SECTION("a failed compress leaves no output and no temporary file") {
    const std::string garbage = dir.file("garbage.safetensors");
    test::write_file(garbage, test::random_bytes(4096, 99));
    const std::string target = dir.file("new.wpk");
    RunResult r = compress(garbage, target);
    CHECK(r.exit_code == 1);
    require_one_line_error(r, garbage);
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"garbage.safetensors", "model.safetensors", "out.wpk"});

    // A failure after the output was opened (bad alignment) also leaves nothing behind.
    RunResult a = compress(model, target, {"--alignment", "24"});
    CHECK(a.exit_code == 2);
    require_one_line_error(a, target + ": alignment 24 is not a power of two in [16, 1048576]");
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"garbage.safetensors", "model.safetensors", "out.wpk"});
  }
  SECTION("a failure at the final rename (output is a directory, -f) removes the temporary file") {
    const std::string sub = dir.file("sub");
    std::filesystem::create_directories(sub + "/target");
    RunResult r = compress(model, sub + "/target", {"-f"});
    CHECK(r.exit_code == 1);
    require_one_line_error(r, sub + "/target");
    CHECK(list_dir(sub) == std::vector<std::string>{"target"});
    CHECK(list_dir(sub + "/target").empty());

    REQUIRE(compress(model, out, {"-f"}).exit_code == 0);
    RunResult u = run_wpack({"unpack", out, "-o", sub + "/target", "-f"});
    CHECK(u.exit_code == 1);
    require_one_line_error(u, sub + "/target");
    CHECK(list_dir(sub) == std::vector<std::string>{"target"});
  }
}

TEST_CASE("errors: missing, garbage and truncated inputs exit 1 with one line naming the file") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("model.wpk");
  REQUIRE(compress(model, packed).exit_code == 0);

  SECTION("a FIFO or a directory as input: refused at once (opening a FIFO used to wait for a writer)") {
    const std::string fifo = dir.file("in.fifo"), sub = dir.file("in.dir");
    REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    std::filesystem::create_directory(sub);
    for (const std::string& input : {fifo, sub})
      for (const auto& args : std::vector<std::vector<std::string>>{{"compress", input, "-o", dir.file("x.wpk")},
                                                                    {"inspect", input},
                                                                    {"verify", input},
                                                                    {"unpack", input, "-o", dir.file("x.safetensors")}}) {
        INFO(args[0] << " " << input);
        RunResult r = run_wpack(args);
        CHECK(r.exit_code == 1);
        require_one_line_error(r, input + ": not a regular file");
      }
  }
  SECTION("a .wpk given where a model is expected is named as one") {
    for (const auto& args : std::vector<std::vector<std::string>>{{"compress", packed, "-o", dir.file("x.wpk")},
                                                                   {"verify", packed, "--against", packed}}) {
      INFO(args[0]);
      RunResult r = run_wpack(args);
      CHECK(r.exit_code == 1);
      require_one_line_error(r, packed + ": a .wpk file (packed by wpack), not a model");
    }
  }
  SECTION("nonexistent input") {
    const std::string missing = dir.file("does-not-exist.safetensors");
    for (const auto& args : std::vector<std::vector<std::string>>{{"compress", missing, "-o", dir.file("x.wpk")},
                                                                   {"inspect", missing},
                                                                   {"inspect", "--json", missing},
                                                                   {"verify", missing},
                                                                   {"unpack", missing, "-o", dir.file("x.safetensors")},
                                                                   {"verify", packed, "--against", missing}}) {
      INFO(args[0] << " " << args[1]);
      RunResult r = run_wpack(args);
      CHECK(r.exit_code == 1);
      require_one_line_error(r, missing);
      CHECK(r.out.empty());
    }
    CHECK(!std::filesystem::exists(dir.file("x.wpk")));
    CHECK(!std::filesystem::exists(dir.file("x.safetensors")));
  }
  SECTION("garbage input") {
    const std::string garbage = dir.file("garbage.bin");
    test::write_file(garbage, test::random_bytes(1000, 7));
    for (const auto& args : std::vector<std::vector<std::string>>{{"compress", garbage, "-o", dir.file("x.wpk")},
                                                                   {"inspect", garbage},
                                                                   {"verify", garbage},
                                                                   {"unpack", garbage, "-o", dir.file("x.safetensors")}}) {
      INFO(args[0]);
      RunResult r = run_wpack(args);
      CHECK(r.exit_code == 1);
      require_one_line_error(r, garbage);
    }
    // A file too short to be anything.
    const std::string tiny = dir.file("tiny.bin");
    test::write_file(tiny, {1, 2, 3});
    RunResult t = compress(tiny, dir.file("x.wpk"));
    CHECK(t.exit_code == 1);
    require_one_line_error(t, tiny);
    CHECK(!std::filesystem::exists(dir.file("x.wpk")));
  }
  SECTION("a NaN or inf weight under a lossy scheme or pruning") {
    // Bad input data, not a usage error: exit 1, one line naming the file and the tensor.
    for (const uint16_t bad_bits : {uint16_t{0x7FC0}, uint16_t{0xFF80}}) {
      std::vector<uint8_t> w = test::gaussian_bf16(64 * 96, 0.02f, 31);
      std::memcpy(w.data() + 2 * (17 * 96 + 5), &bad_bits, 2);
      const std::string bad = dir.file("nonfinite.safetensors");
      write_safetensors(bad, {{"mlp.bad", DType::BF16, {64, 96}}}, {w}, kMetadata, true);
      const std::string out = dir.file("nonfinite.wpk");
      const bool is_nan = bad_bits == 0x7FC0;
      std::vector<std::vector<std::string>> options = {{"--scheme", "int4"}, {"--scheme", "lut4"}, {"--scheme", "fp8"}};
      if (is_nan)  // pruning rejects NaN (before the quantizer's check)
        options.insert(options.end(), {{"--scheme", "int8", "--prune", "0.5"}, {"--scheme", "int8", "--prune", "2:4"}});
      for (const auto& extra : options) {
        INFO(std::hex << bad_bits << std::dec << " " << extra[1] << " " << extra.back());
        RunResult r = compress(bad, out, extra);
        CHECK(r.exit_code == 1);
        require_one_line_error(r, bad);
        CHECK(contains(r.err, "mlp.bad"));
        CHECK(!std::filesystem::exists(out));
      }
      // Lossless keeps any bits.
      CHECK(compress(bad, out).exit_code == 0);
      std::filesystem::remove(out);
    }
  }
  SECTION("a tensor the .wpk format cannot hold") {
    // Valid safetensors inputs beyond the container's limits: bad input (exit 1), not a usage error.
    auto raw_safetensors = [&](const std::string& name, const std::string& shape) {
      std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[0,4]}}";
      header.resize((header.size() + 7) / 8 * 8, ' ');
      std::vector<uint8_t> bytes(8 + header.size() + 4, 0);
      const uint64_t n = header.size();
      std::memcpy(bytes.data(), &n, 8);
      std::memcpy(bytes.data() + 8, header.data(), header.size());
      const std::string path = dir.file("limits.safetensors");
      test::write_file(path, bytes);
      return path;
    };
    const std::string out = dir.file("limits.wpk");
    // Named by the input file, found before anything is written.
    const std::string deep = raw_safetensors("deep", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]");
    RunResult rank = compress(deep, out);
    CHECK(rank.exit_code == 1);
    require_one_line_error(rank, deep + ": tensor 'deep' has rank > 16");
    const std::string long_name = raw_safetensors(std::string(70000, 'n'), "[1]");
    RunResult name = compress(long_name, out);
    CHECK(name.exit_code == 1);
    require_one_line_error(name, long_name + ": tensor name longer than 65535 bytes");
    CHECK(!std::filesystem::exists(out));
  }
  SECTION("truncated .wpk") {
    const auto bytes = test::read_file(packed);
    for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t(70), size_t(10)}) {
      INFO("kept " << keep << " of " << bytes.size() << " bytes");
      const std::string cut = dir.file("cut.wpk");
      test::write_file(cut, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(keep)));
      for (const auto& args : std::vector<std::vector<std::string>>{{"inspect", cut},
                                                                     {"verify", cut},
                                                                     {"unpack", cut, "-o", dir.file("x.safetensors")}}) {
        INFO(args[0]);
        RunResult r = run_wpack(args);
        CHECK(r.exit_code == 1);
        require_one_line_error(r, cut);
      }
      CHECK(!std::filesystem::exists(dir.file("x.safetensors")));
    }
  }
}

TEST_CASE("verify: a flipped byte in tile data names the tensor and the tile") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("model.wpk");
  REQUIRE(compress(model, packed, {"--tile", "32x32"}).exit_code == 0);
  REQUIRE(run_wpack({"verify", packed}).exit_code == 0);

  uint64_t offset = 0;
  const std::string name = "layer.0.weight";
  const uint64_t k = 4;
  {
    auto reader = WpkReader::open(packed);
    const auto it = std::find_if(reader->tensors().begin(), reader->tensors().end(),
                                 [&](const WpkTensor& t) { return t.name == name; });
    REQUIRE(it != reader->tensors().end());
    REQUIRE(it->tile_count == 6);  // 64x96 in 32x32 tiles
    const WpkTile& tile = reader->tiles()[it->first_tile + k];
    offset = tile.offset + tile.stored_size / 2;
  }
  auto bytes = test::read_file(packed);
  bytes[offset] ^= 0x10;
  const std::string bad = dir.file("bad.wpk");
  test::write_file(bad, bytes);

  // The index is intact: inspect still works.
  CHECK(run_wpack({"inspect", bad}).exit_code == 0);

  const std::string where = "tensor '" + name + "': tile " + std::to_string(k);
  RunResult v = run_wpack({"verify", bad});
  CHECK(v.exit_code == 1);
  require_one_line_error(v, where);
  CHECK(contains(v.err, bad));
  CHECK(contains(v.out, "FAILED"));

  RunResult va = run_wpack({"verify", bad, "--against", model});
  CHECK(va.exit_code == 1);
  require_one_line_error(va, where);

  RunResult vj = run_wpack({"verify", "--json", bad});
  CHECK(vj.exit_code == 1);
  json j = json::parse(vj.out, nullptr, false);
  REQUIRE(!j.is_discarded());
  CHECK(j["ok"] == false);
  require_one_line_error(vj, where);  // with --json too, each failure is a line on stderr

  // A file that cannot be read at all: with --json still a report (ok false, the error), the same
  // one line on stderr and exit 1.
  const std::string cut = dir.file("cut.wpk");
  test::write_file(cut, std::vector<uint8_t>(bytes.begin(), bytes.begin() + 100));
  RunResult vt = run_wpack({"verify", "--json", cut});
  CHECK(vt.exit_code == 1);
  require_one_line_error(vt, cut);
  json jt = json::parse(vt.out, nullptr, false);
  REQUIRE(!jt.is_discarded());
  CHECK(jt["ok"] == false);
  CHECK(jt["file"] == cut);
  REQUIRE(jt["errors"].size() == 1);
  CHECK(contains(jt["errors"][0].get<std::string>(), cut));
  CHECK(contains(vt.err, jt["errors"][0].get<std::string>()));
  // --against that cannot be opened: a report too
  RunResult va_missing = run_wpack({"verify", "--json", packed, "--against", dir.file("missing.safetensors")});
  CHECK(va_missing.exit_code == 1);
  CHECK(json::parse(va_missing.out, nullptr, false)["ok"] == false);

  // --device cuda: the CPU checks name the tile as without it, and no GPU check runs (here for
  // want of a GPU; with one, for the damaged tile: gpu_verify "wpack verify --device cuda").
  RunResult vc = run_wpack({"verify", bad, "--device", "cuda"});
  CHECK(vc.exit_code == 1);
  CHECK(contains(vc.err, where));
  CHECK(contains(vc.err, "GPU checks did not run"));
  RunResult vcj = run_wpack({"verify", "--json", bad, "--device", "cuda", "--batch", "1,16"});
  CHECK(vcj.exit_code == 1);
  json jc = json::parse(vcj.out, nullptr, false);
  REQUIRE(!jc.is_discarded());
  CHECK(jc["gpu_checks_ran"] == false);
  // bad options are still usage errors
  CHECK(run_wpack({"verify", bad, "--device", "cuda", "--batch", "1,1"}).exit_code == 2);

  RunResult u = run_wpack({"unpack", bad, "-o", dir.file("bad.safetensors")});
  CHECK(u.exit_code == 1);
  require_one_line_error(u, where);
  CHECK(!std::filesystem::exists(dir.file("bad.safetensors")));
}

TEST_CASE("verify --against a different model names the differing tensor") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("model.wpk");
  REQUIRE(compress(model, packed).exit_code == 0);

  Model other = small_model();
  other.data[1][40] ^= 0x01;  // one element of layer.0.proj
  const std::string changed = dir.file("changed.safetensors");
  write_model(changed, other);

  RunResult r = run_wpack({"verify", packed, "--against", changed});
  CHECK(r.exit_code == 1);
  require_one_line_error(r, "tensor 'layer.0.proj'");
  CHECK(contains(r.err, "1 elements differ"));
  CHECK(!contains(r.err, "layer.0.weight"));

  // A source missing a tensor, and one with an extra tensor, also fail.
  Model fewer = small_model();
  fewer.infos.erase(fewer.infos.begin() + 2);
  fewer.data.erase(fewer.data.begin() + 2);
  write_model(changed, fewer);
  RunResult m = run_wpack({"verify", packed, "--against", changed});
  CHECK(m.exit_code == 1);
  require_one_line_error(m, "positions");
}

TEST_CASE("quantizer options (group, symmetry, LUT rows) reach the --override tensors whose scheme takes them") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);
  const std::string out = dir.file("o.wpk");
  auto policy_of = [&](const std::vector<std::string>& extra) {
    RunResult r = compress(model, out, extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const json j = json::parse(run_wpack({"inspect", out, "--json"}).out);
    std::filesystem::remove(out);
    std::map<std::string, json> by_name;
    for (const auto& t : j.at("tensors")) by_name[t.at("name").get<std::string>()] = t;
    return by_name;
  };
  auto t = policy_of({"--override", "w1=int4", "--group", "64", "--symmetric"});
  CHECK(t["mlp.w1"]["scheme"] == "int4");
  CHECK(t["mlp.w1"]["group"] == 64);
  CHECK(t["mlp.w1"]["symmetric"] == true);
  CHECK(t["mlp.w2"]["scheme"] == "lossless");
  // The file-wide scheme does not take a group; the override does. An override's own option wins.
  t = policy_of({"--scheme", "int8", "--group", "64", "--override", "w1=int4"});
  CHECK(t["mlp.w1"]["group"] == 64);
  CHECK(t["mlp.w2"]["scheme"] == "int8");
  t = policy_of({"--scheme", "int4", "--group", "64", "--override", "w1=int4:g32"});
  CHECK(t["mlp.w1"]["group"] == 32);
  CHECK(t["mlp.w2"]["group"] == 64);
  t = policy_of({"--override", "w1=lut4", "--lut-per", "rows:64"});
  CHECK(t["mlp.w1"]["lut_rows"] == 64);
  t = policy_of({"--override", "w1=int4:g64", "--group", "64"});  // the same group: not an error
  CHECK(t["mlp.w1"]["group"] == 64);
  // Given where no scheme takes them, or malformed: usage errors
  for (const auto& [extra, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--scheme", "int8", "--group", "64"}, "--group applies to int4/3/2, fp4 and nf4 tensors"},
           {{"--override", "w1=fp8", "--symmetric"}, "--symmetric applies to int4/3/2 tensors"},
           {{"--scheme", "int8", "--symmetric"}, "--symmetric applies to int4/3/2 tensors"},  // int8 is symmetric
           {{"--scheme", "lut4", "--symmetric", "--override", "w1=int8"}, "--symmetric applies to int4/3/2 tensors"},
           {{"--override", "w1=int4", "--lut-per", "rows:4"}, "--lut-per applies to lut4 and lut3 tensors"},
           {{"--override", "w1=lut4", "--lut-per", "bogus"}, "--lut-per must be rows:N"},
           {{"--override", "w1=int4:g32", "--group", "64"},
            "--group changes nothing: every --scheme and --override that takes it sets its own"},
           {{"--scheme", "int8", "--override", "w1=lut4:rows8", "--lut-per", "rows:4"},
            "--lut-per changes nothing: every --scheme and --override that takes it sets its own"}}) {
    RunResult r = compress(model, out, extra);
    CHECK(r.exit_code == 2);
    require_one_line_error(r, message);
    CHECK(!std::filesystem::exists(out));
  }
}

TEST_CASE("compress warns of --keep and --override patterns that match no tensor name") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir), out = dir.file("o.wpk");
  RunResult r = compress(model, out, {"--override", "w1=int8", "--override", "mlp.w3=int4", "--keep", "^w2$"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.err, "wpack: warning: --override 'mlp.w3' matches no tensor name\n"));
  CHECK(contains(r.err, "wpack: warning: --keep '^w2$' matches no tensor name\n"));
  CHECK(!contains(r.err, "'w1'"));
  CHECK(count_lines(r.err) == 3);  // the two warnings, the summary
  RunResult quiet = compress(model, out, {"-f", "-q", "--override", "mlp.w3=int4"});
  CHECK(quiet.exit_code == 0);
  CHECK(quiet.err.empty());
}

TEST_CASE("a dry run (inspect of a model, compress --dry-run) refuses what compress refuses") {
  TempDir dir;
  const std::string model = dir.file("rank17.safetensors");
  write_safetensors(model, {{"deep", DType::F32, std::vector<uint64_t>(17, 1)}}, {test::gaussian_f32(1, 1.0f, 5)},
                    kMetadata, true);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"compress", model, "-o", dir.file("o.wpk")},
        std::vector<std::string>{"compress", model, "-o", dir.file("o.wpk"), "--dry-run"},
        std::vector<std::string>{"inspect", model}, std::vector<std::string>{"inspect", model, "--json"}}) {
    INFO(args[0] << " " << args.back());
    RunResult r = run_wpack(args);
    CHECK(r.exit_code == 1);
    require_one_line_error(r, model + ": tensor 'deep' has rank > 16");
    CHECK(r.out.empty());
  }
  // A lossy F64 tensor beyond float32's range: refused by the dry run too
  const std::string f64 = dir.file("f64.safetensors");
  std::vector<double> values(4 * 32, 0.25);
  values[5] = 1e300;
  std::vector<uint8_t> bytes(values.size() * 8);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  write_safetensors(f64, {{"w", DType::F64, {4, 32}}}, {bytes}, kMetadata, true);
  for (const bool dry : {false, true}) {
    std::vector<std::string> args = {"compress", f64, "-o", dir.file("f.wpk"), "--scheme", "int8"};
    if (dry) args.push_back("--dry-run");
    RunResult r = run_wpack(args);
    CHECK(r.exit_code == 1);
    require_one_line_error(r, f64 + ": tensor 'w': weight at row 0, col 5 is 1e+300, beyond float32's range");
    CHECK(r.out.empty());
  }
}

TEST_CASE("a mistyped command is named") {
  for (const std::string name : {"compres", "bogus"}) {
    RunResult r = run_wpack({name, "x"});
    CHECK(r.exit_code == 2);
    require_one_line_error(r, "unknown command '" + name + "'");
    r = run_wpack({"-q", name, "x"});  // after the global flags
    CHECK(r.exit_code == 2);
    require_one_line_error(r, "unknown command '" + name + "'");
  }
  // an option's value is not taken for the command
  RunResult option_first = run_wpack({"-T", "4", "verifyy", "x.wpk"});
  CHECK(option_first.exit_code == 2);
  require_one_line_error(option_first, "");
  CHECK(!contains(option_first.err, "unknown command '4'"));
}

TEST_CASE("inspect: an empty tensor's ratio and bits/weight are null, not 0") {
  TempDir dir;
  const std::string model = write_small_model(dir), out = dir.file("m.wpk");
  REQUIRE(compress(model, out).exit_code == 0);
  const json j = json::parse(run_wpack({"inspect", out, "--json"}).out);
  bool seen = false;
  for (const auto& t : j.at("tensors"))
    if (t.at("name") == "empty") {
      seen = true;
      CHECK(t.at("packed_bytes").get<uint64_t>() > 0);
      CHECK(t.at("ratio").is_null());
      CHECK(t.at("bits_per_weight").is_null());
    } else {
      CHECK(t.at("ratio").get<double>() > 0);
    }
  CHECK(seen);
  RunResult table = run_wpack({"inspect", out});
  bool row = false;
  std::istringstream lines(table.out);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("empty ", 0) == 0) {
      row = true;
      CHECK(line.substr(line.size() - 3) == "  -");  // bits/w, the last column
    }
  CHECK(row);
  const json estimate = json::parse(run_wpack({"inspect", model, "--json"}).out);
  for (const auto& t : estimate.at("tensors"))
    if (t.at("name") == "empty") CHECK(t.at("ratio").is_null());
}

TEST_CASE("a file of no known format is named so, not read as a safetensors header length") {
  TempDir dir;
  const std::string text = dir.file("notes.txt");
  const std::string words = "These are notes, not weights.\n";
  test::write_file(text, std::vector<uint8_t>(words.begin(), words.end()));
  for (const std::vector<std::string>& args : {std::vector<std::string>{"compress", text, "-o", dir.file("n.wpk")},
                                                std::vector<std::string>{"inspect", text}}) {
    RunResult r = run_wpack(args);
    CHECK(r.exit_code == 1);
    require_one_line_error(r, text + ": not a safetensors, safetensors index or HDF5 file");
    CHECK(!contains(r.err, "header length"));
  }
  // A .wpk whose magic is damaged: inspect says so, as verify does
  const std::string model = write_small_model(dir), packed = dir.file("m.wpk");
  REQUIRE(compress(model, packed).exit_code == 0);
  std::vector<uint8_t> bytes = test::read_file(packed);
  bytes[0] ^= 0x80;
  test::write_file(packed, bytes);
  for (const char* cmd : {"inspect", "verify"}) {
    RunResult r = run_wpack({cmd, packed});
    CHECK(r.exit_code == 1);
    require_one_line_error(r, packed + ": not a .wpk file");
  }
}

TEST_CASE("usage errors exit 2 with one line") {
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string out = dir.file("out.wpk");
  std::string many_batches = "1";
  for (int i = 0; i < 19999; ++i) many_batches += ",1";
  const std::vector<std::vector<std::string>> cases = {
      {"compress", model, "-o", out, "--bogus"},
      {"compress", model},
      {"compress", "-o", out},
      {"compress", model, "-o", out, "--tile", "0x5"},
      {"compress", model, "-o", out, "--tile", "5x0"},
      {"compress", model, "-o", out, "--tile", "abc"},
      {"compress", model, "-o", out, "--tile", "32"},
      {"compress", model, "-o", out, "--tile", "4096x4097"},
      {"compress", model, "-o", out, "--tile", ""},
      {"compress", model, "-o", out, "--codec", "gzip"},
      {"compress", model, "-o", out, "--filter", "magic"},
      {"compress", model, "-o", out, "-T", "-1"},
      {"compress", model, "-o", out, "-T", "many"},
      {"compress", model, "-o", out, "-T", "100000"},  // libgomp crashed creating them
      {"verify", out, "-T", "2147483647"},
      {"compress", model, "-o", out, "--json"},  // --json goes with --dry-run
      {"verify", out, "--device", "tpu"},
      {"verify", out, "--device", "cuda", "--batch", "0"},
      {"verify", out, "--device", "cuda", "--batch", "65"},
      {"verify", out, "--device", "cuda", "--batch", "abc"},
      {"verify", out, "--device", "cuda", "--batch", "1,,16"},
      {"verify", out, "--device", "cuda", "--batch", "1,16,"},
      {"verify", out, "--device", "cuda", "--batch", "1,1"},
      {"verify", out, "--device", "cuda", "--batch", ""},
      {"verify", out, "--device", "cuda", "--batch"},
      {"verify", out, "--device", "cuda", "--batch", many_batches},  // the list's regex overflowed the stack
      {"verify", out, "--batch", "1"},
      {"verify", out, "--against", model, "--max-error", "nan"},
      {"verify", out, "--against", model, "--max-error", "inf"},
      {"verify", out, "--against", model, "--max-error", "-1"},
      // options that do not apply to what is asked: errors, not silently ignored
      {"compress", model, "-o", out, "--level", "19"},
      {"compress", model, "-o", out, "--codec", "none", "--level", "5"},
      {"compress", model, "-o", out, "--prune", "0.5"},
      {"compress", model, "-o", out, "--symmetric"},
      {"compress", model, "-o", out, "--clip", "minmax"},
      {"compress", model, "-o", out, "--group", "64"},
      {"compress", model, "-o", out, "--lut-per", "rows:4"},
      {"compress", model, "-o", out, "--tile", "16777216x2"},
      {"unpack", out},
      {"-q", "-v", "inspect", out},  // quiet and verbose at once
      {"inspect", out, "-v", "-q"},
      {"frobnicate", model},
      {},
  };
  for (const auto& args : cases) {
    std::string line;
    for (const auto& a : args) line += a + " ";
    INFO("wpack " << line);
    RunResult r = run_wpack(args);
    CHECK(r.exit_code == 2);
    require_one_line_error(r, "");
    CHECK(!std::filesystem::exists(out));
  }
  RunResult tile = compress(model, out, {"--tile", "abc"});
  CHECK(contains(tile.err, "--tile"));
  CHECK(contains(tile.err, "abc"));
  CHECK(contains(compress(model, out, {"--tile", "16777216x2"}).err, "has more than 2^24 elements per tile"));
  CHECK(contains(run_wpack({"verify", out, "--against", model, "--max-error", "-1"}).err, "must be a finite number >= 0"));
  CHECK(contains(compress(model, out, {"--prune", "0.5"}).err, "--prune applies to lossy tensors"));
  RunResult level0 = compress(model, out, {"--codec", "zstd", "--level", "0"});  // not at the first tile
  CHECK(level0.exit_code == 2);
  CHECK(contains(level0.err, "0 is not a zstd level here"));
  // ... and with only lossless overrides (they quantize nothing either)
  RunResult lossless_override = compress(model, out, {"--group", "64", "--override", "^x$=lossless"});
  CHECK(lossless_override.exit_code == 2);
  CHECK(contains(lossless_override.err, "--group applies to lossy tensors"));
  // The options where they apply: --tile of exactly 2^24 elements, --level with zstd, --prune with --override.
  for (const auto& extra : std::vector<std::vector<std::string>>{{"--tile", "16777216x1"},
                                                                  {"--codec", "zstd", "--level", "-5"},
                                                                  {"--prune", "0.5", "--override", "^x$=int8"}}) {
    INFO(extra[0]);
    RunResult ok = compress(model, out, extra);
    INFO(ok.err);
    CHECK(ok.exit_code == 0);
    std::filesystem::remove(out);
  }

  CHECK(run_wpack({"--version"}).exit_code == 0);
  CHECK(run_wpack({"--help"}).exit_code == 0);
}

TEST_CASE("thread count does not change the packed bytes, --tile reaches the file") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);

  SECTION("-T 1 and -T 2: identical tiles and index; only the recorded command line differs") {
    const std::string a = dir.file("t1.wpk"), b = dir.file("t2.wpk");
    REQUIRE(compress(model, a, {"-T", "1", "--tile", "64x64"}).exit_code == 0);
    REQUIRE(compress(model, b, {"-T", "2", "--tile", "64x64"}).exit_code == 0);
    auto ra = WpkReader::open(a), rb = WpkReader::open(b);
    REQUIRE(ra->tiles().size() == rb->tiles().size());
    REQUIRE(ra->tiles().size() > 8);
    for (size_t i = 0; i < ra->tiles().size(); ++i) {
      INFO("tile " << i);
      CHECK(ra->tiles()[i].offset == rb->tiles()[i].offset);
      CHECK(ra->tiles()[i].stored_size == rb->tiles()[i].stored_size);
      CHECK(ra->tiles()[i].checksum == rb->tiles()[i].checksum);
      CHECK(ra->tiles()[i].filter == rb->tiles()[i].filter);
      CHECK(ra->tiles()[i].codec == rb->tiles()[i].codec);
    }
    // Header and all tile data byte-identical.
    const auto ba = test::read_file(a), bb = test::read_file(b);
    const uint64_t data_end = ra->file_size() - kWpkFooterBytes - ra->index_bytes();
    REQUIRE(data_end == rb->file_size() - kWpkFooterBytes - rb->index_bytes());
    CHECK(std::equal(ba.begin(), ba.begin() + static_cast<ptrdiff_t>(data_end), bb.begin()));
    json ma = json::parse(ra->metadata_json()), mb = json::parse(rb->metadata_json());
    ma.erase("command_line");
    mb.erase("command_line");
    CHECK(ma == mb);
  }
  SECTION("-T 1 and -T 2 to the same path: the whole files are byte-identical") {
    const std::string out = dir.file("same-T.wpk");
    REQUIRE(compress(model, out, {"-T", "1", "--tile", "64x64"}).exit_code == 0);
    const auto one = test::read_file(out);
    REQUIRE(compress(model, out, {"-T", "2", "-f", "--tile", "64x64"}).exit_code == 0);
    CHECK(test::read_file(out) == one);
  }
  SECTION("bundled short options: -qfT1, -fT2 -q and -T 2 -f -q give byte-identical files") {
    // The recorded command line left -T out only when it stood alone: "-qfT2" was kept whole.
    const std::string out = dir.file("bundled.wpk");
    std::vector<std::vector<uint8_t>> files;
    for (const std::vector<std::string>& options :
         {std::vector<std::string>{"-qfT1"}, {"-fT2", "-q"}, {"-T", "2", "-f", "-q"}, {"-fvT", "3"}}) {
      std::vector<std::string> args = {"compress", model};
      args.insert(args.end(), options.begin(), options.end());
      args.insert(args.end(), {"-o", out, "--tile", "64x64"});
      INFO(args[2]);
      REQUIRE(run_wpack(args).exit_code == 0);
      files.push_back(test::read_file(out));
    }
    for (size_t i = 1; i < files.size(); ++i) CHECK(files[i] == files[0]);
    // "-fo PATH" records as "-o PATH"
    REQUIRE(run_wpack({"compress", model, "-fo", out, "--tile", "64x64"}).exit_code == 0);
    CHECK(test::read_file(out) == files[0]);
    CHECK(json::parse(WpkReader::open(out)->metadata_json())["command_line"].get<std::string>().find(" -o " + out) !=
          std::string::npos);
  }
  SECTION("the recorded command line: option values and arguments after -- are kept as written") {
    const std::string out = dir.file("rec.wpk");
    const auto recorded = [&](std::vector<std::string> args) {
      args.insert(args.begin(), "compress");
      INFO(args.back());
      const RunResult r = run_wpack(args);
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      return json::parse(WpkReader::open(out)->metadata_json())["command_line"].get<std::string>();
    };
    // what CLI11 read, canonically: input, then the options in their order of definition, values
    // as shell words; -T, -q, -v, -f and the program's path left out
    const std::string head = "wpack compress " + model + " -o " + out;
    CHECK(recorded({model, "-o", out, "-fq", "--scheme", "int4", "--override", "-q.*=int8", "--keep", "-fT2", "-T2"}) ==
          head + " --scheme int4 --override '-q.*=int8' --keep -fT2");
    CHECK(recorded({"-qfT", "2", model, "--tile=64x64", "-fo" + out, "--symmetric", "--scheme=int4"}) ==
          head + " --tile 64x64 --scheme int4 --symmetric");
    CHECK(recorded({"--threads=1", model, "-o", out, "-f"}) == head);
    CHECK(recorded({"--threads", "3", model, "-o", out, "-f", "--keep", "a -T 4", "--keep=b's"}) ==
          head + " --keep 'a -T 4' --keep 'b'\\''s'");
    // "--" ending --keep's list: CLI11 reads the -T 2 after it as the thread count
    CHECK(recorded({model, "-o", out, "-f", "--keep", "zz", "--", "-T", "2"}) == head + " --keep zz");
    // an input named "-qf.safetensors", after "--" (relative: wpack runs in the test's folder)
    std::filesystem::copy_file(model, dir.file("-qf.safetensors"));
    const std::filesystem::path cwd = std::filesystem::current_path();
    std::filesystem::current_path(dir.path());
    std::string dashed;
    try {
      dashed = recorded({"-fqo", out, "--", "-qf.safetensors"});
    } catch (...) {
      std::filesystem::current_path(cwd);
      throw;
    }
    std::filesystem::current_path(cwd);
    CHECK(dashed == "wpack compress -qf.safetensors -o " + out);
  }
  SECTION("the same command line at 1 and 4 threads (OMP_NUM_THREADS): byte-identical files") {
    const std::string out = dir.file("same.wpk");
    std::vector<uint8_t> one, four;
    {
      ScopedEnv env("OMP_NUM_THREADS", "1");
      REQUIRE(compress(model, out, {"-f", "--tile", "64x64"}).exit_code == 0);
      one = test::read_file(out);
    }
    {
      ScopedEnv env("OMP_NUM_THREADS", "4");
      REQUIRE(compress(model, out, {"-f", "--tile", "64x64"}).exit_code == 0);
      four = test::read_file(out);
    }
    CHECK(one.size() > 1000);
    CHECK(one == four);
  }
  SECTION("--tile 32x64 is reflected in tile_shape") {
    const std::string out = dir.file("tiles.wpk");
    REQUIRE(compress(model, out, {"--tile", "32x64"}).exit_code == 0);
    json j = inspect_json(out);
    for (const auto& t : j["tensors"]) {
      INFO(t.dump());
      CHECK(t["tile_shape"] == json::array({32, 64}));
      const auto shape = t["shape"].get<std::vector<uint64_t>>();
      CHECK(t["tiles"].get<uint64_t>() == (shape[0] / 32) * (shape[1] / 64));
    }
    CHECK(run_wpack({"verify", out, "--against", model}).exit_code == 0);
  }
}

TEST_CASE("compress --alignment: 4096 aligns every tile, [16, 2^20] powers of two only") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);
  auto offsets_aligned_to = [](const WpkReader& r, uint64_t alignment) {
    uint64_t aligned = 0;
    for (const WpkTile& tile : r.tiles()) aligned += tile.offset % alignment == 0;
    return aligned;
  };

  const std::string out = dir.file("a4096.wpk");
  {
    RunResult r = compress(model, out, {"--alignment", "4096", "--tile", "64x64"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto reader = WpkReader::open(out);
    CHECK(reader->alignment() == 4096);
    REQUIRE(reader->tiles().size() == 2 * (256 / 64) * (384 / 64));
    for (size_t i = 0; i < reader->tiles().size(); ++i) {
      INFO("tile " << i << " at " << reader->tiles()[i].offset);
      CHECK(reader->tiles()[i].offset % 4096 == 0);
    }
    CHECK(offsets_aligned_to(*reader, 4096) == reader->tiles().size());
  }
  CHECK(run_wpack({"verify", out, "--against", model}).exit_code == 0);
  // Without the option (default alignment 64) the same tiles are not all 4096-aligned: the check
  // above sees the option.
  const std::string plain = dir.file("plain.wpk");
  REQUIRE(compress(model, plain, {"--tile", "64x64"}).exit_code == 0);
  {
    auto reader = WpkReader::open(plain);
    CHECK(reader->alignment() == kWpkDefaultAlignment);
    CHECK(offsets_aligned_to(*reader, 4096) < reader->tiles().size());
    CHECK(offsets_aligned_to(*reader, kWpkDefaultAlignment) == reader->tiles().size());
  }

  // The limits themselves are accepted.
  for (const uint64_t alignment : {uint64_t{16}, uint64_t{1} << 20}) {
    INFO("--alignment " << alignment);
    const std::string path = dir.file("edge.wpk");
    RunResult ok = compress(model, path, {"--alignment", std::to_string(alignment), "-f"});
    INFO(ok.err);
    REQUIRE(ok.exit_code == 0);
    auto reader = WpkReader::open(path);
    CHECK(reader->alignment() == alignment);
    CHECK(offsets_aligned_to(*reader, alignment) == reader->tiles().size());
  }
  std::filesystem::remove(dir.file("edge.wpk"));

  // Below 16, above 2^20, or not a power of two: a usage error (exit 2) before anything is written.
  const std::string refused = dir.file("refused.wpk");
  for (const char* alignment : {"0", "1", "2", "8", "15", "24", "48", "1000", "4095", "1048577", "2097152",
                                "2147483648", "4294967295"}) {
    INFO("--alignment " << alignment);
    RunResult bad = compress(model, refused, {"--alignment", alignment});
    CHECK(bad.exit_code == 2);
    require_one_line_error(bad, "");
    CHECK(bad.err == "wpack: " + refused + ": alignment " + alignment + " is not a power of two in [16, 1048576]\n");
    CHECK(!std::filesystem::exists(refused));
  }
  // Not a uint32 at all: refused by the option parser, also exit 2.
  for (const char* alignment : {"-16", "4294967296", "4k"}) {
    INFO("--alignment '" << alignment << "'");
    RunResult bad = compress(model, refused, {"--alignment", alignment});
    CHECK(bad.exit_code == 2);
    require_one_line_error(bad, "--alignment");
    CHECK(!std::filesystem::exists(refused));
  }
  CHECK(list_dir(dir.path()) == std::vector<std::string>{"a4096.wpk", "gauss.safetensors", "plain.wpk"});
}

TEST_CASE("HDF5 input: compress, inspect lists the datasets, verify and unpack match") {
  TempDir dir;
  const std::string h5 = dir.file("weights.h5");
  std::vector<float> a(4 * 6);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.25f * float(i) - 2.0f;
  std::vector<int32_t> b(10);
  for (size_t i = 0; i < b.size(); ++i) b[i] = int32_t(i * i) - 7;
  const double c = 3.5;
  {
    hid_t file = H5Fcreate(h5.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(file >= 0);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    REQUIRE(H5Pset_create_intermediate_group(lcpl, 1) >= 0);
    auto dataset = [&](const char* path, hid_t type, std::vector<hsize_t> dims, hid_t mem, const void* data) {
      hid_t space = dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr);
      REQUIRE(space >= 0);
      hid_t ds = H5Dcreate2(file, path, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
      REQUIRE(ds >= 0);
      REQUIRE(H5Dwrite(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
      H5Dclose(ds);
      H5Sclose(space);
    };
    dataset("/dense/kernel", H5T_IEEE_F32LE, {4, 6}, H5T_NATIVE_FLOAT, a.data());
    dataset("/dense/bias", H5T_STD_I32BE, {10}, H5T_NATIVE_INT32, b.data());
    dataset("/scalar", H5T_IEEE_F64LE, {}, H5T_NATIVE_DOUBLE, &c);
    hid_t str = H5Tcopy(H5T_C_S1);  // not a tensor: skipped, and named on stderr
    H5Tset_size(str, H5T_VARIABLE);
    const char* labels[2] = {"cat", "dog"};
    dataset("/labels", str, {2}, str, labels);
    H5Tclose(str);
    H5Pclose(lcpl);
    H5Fclose(file);
  }
  const std::string packed = dir.file("weights.wpk");
  RunResult r = compress(h5, packed);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.err, "wpack: note: " + h5 + ": 1 item not packed: dataset '/labels' (string type)\n"));
  CHECK(count_lines(r.err) == 2);  // the note, the summary
  CHECK(compress(h5, packed, {"-f", "-q"}).err.empty());
  // A model without a tensor packs (an empty .wpk), with a warning
  const std::string none = dir.file("none.safetensors");
  write_safetensors(none, {}, {}, kMetadata, true);
  RunResult e = compress(none, dir.file("none.wpk"));
  CHECK(e.exit_code == 0);
  CHECK(contains(e.err, "wpack: warning: " + none + ": no tensors to pack\n"));

  json j = inspect_json(packed);
  REQUIRE(j["tensors"].size() == 3);
  CHECK(tensor_named(j, "dense/kernel")["dtype"] == "F32");
  CHECK(tensor_named(j, "dense/kernel")["shape"] == json::array({4, 6}));
  CHECK(tensor_named(j, "dense/bias")["dtype"] == "I32");
  CHECK(tensor_named(j, "scalar")["dtype"] == "F64");
  CHECK(tensor_named(j, "scalar")["shape"].empty());

  json dry = inspect_json(h5);
  CHECK(dry["dry_run"] == true);
  CHECK(dry["tensors"].size() == 3);
  CHECK(dry["skipped"] == json::array({"dataset '/labels' (string type)"}));
  RunResult text = run_wpack({"inspect", h5});  // the table, and the same note as compress's
  CHECK(text.exit_code == 0);
  CHECK(contains(text.err, "wpack: note: " + h5 + ": 1 item not packed: dataset '/labels' (string type)\n"));
  CHECK(run_wpack({"-q", "inspect", h5}).err.empty());

  CHECK(run_wpack({"verify", packed, "--against", h5}).exit_code == 0);

  const std::string st = dir.file("weights.safetensors");
  REQUIRE(run_wpack({"unpack", packed, "-o", st}).exit_code == 0);
  auto src = open_hdf5(h5);
  auto out = open_safetensors(st);
  REQUIRE(out->tensors().size() == 3);
  for (size_t k = 0; k < src->tensors().size(); ++k) {
    const TensorInfo& s = src->tensors()[k];
    INFO(s.name);
    auto it = std::find_if(out->tensors().begin(), out->tensors().end(), [&](const TensorInfo& t) { return t.name == s.name; });
    REQUIRE(it != out->tensors().end());
    CHECK(it->dtype == s.dtype);
    CHECK(it->shape == s.shape);
    TensorBytes x = src->read(k), y = out->read(static_cast<size_t>(it - out->tensors().begin()));
    REQUIRE(x.size() == y.size());
    CHECK(std::equal(x.data(), x.data() + x.size(), y.data()));
  }
  // Little-endian values in the unpacked file, whatever the HDF5 byte order was.
  auto it = std::find_if(out->tensors().begin(), out->tensors().end(), [](const TensorInfo& t) { return t.name == "dense/bias"; });
  TensorBytes bias = out->read(static_cast<size_t>(it - out->tensors().begin()));
  std::vector<int32_t> got(10);
  std::memcpy(got.data(), bias.data(), 40);
  CHECK(got == b);
}

TEST_CASE("quiet: -q is silent, no progress bar when stderr is not a terminal") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);
  const std::string packed = dir.file("m.wpk");

  RunResult q1 = run_wpack({"-q", "compress", model, "-o", packed});
  CHECK(q1.exit_code == 0);
  CHECK(q1.err.empty());
  CHECK(q1.out.empty());
  RunResult q2 = run_wpack({"compress", "-q", model, "-o", packed, "-f"});
  CHECK(q2.exit_code == 0);
  CHECK(q2.err.empty());
  RunResult q3 = run_wpack({"-q", "unpack", packed, "-o", dir.file("u.safetensors")});
  CHECK(q3.exit_code == 0);
  CHECK(q3.err.empty());
  RunResult q4 = run_wpack({"-q", "verify", packed});
  CHECK(q4.exit_code == 0);
  CHECK(q4.err.empty());

  RunResult c = run_wpack({"compress", model, "-o", packed, "-f"});
  CHECK(c.exit_code == 0);
  CHECK(c.err.find('\r') == std::string::npos);
  CHECK(c.err.find('\x1b') == std::string::npos);
  CHECK(count_lines(c.err) == 1);  // the summary line
  CHECK(contains(c.err, packed));
  RunResult u = run_wpack({"unpack", packed, "-o", dir.file("u.safetensors"), "-f"});
  CHECK(u.exit_code == 0);
  CHECK(u.err.find('\r') == std::string::npos);
  RunResult v = run_wpack({"verify", packed});
  CHECK(v.exit_code == 0);
  CHECK(v.err.find('\r') == std::string::npos);
}

TEST_CASE("compress warns, one line per tensor, when scales or LUT values hit fp16's limits") {
  TempDir dir;
  const std::string model = dir.file("range.safetensors");
  std::vector<float> big(64 * 128), tiny(64 * 128);
  const std::vector<uint8_t> g = test::gaussian_f32(big.size(), 1.0f, 81);
  std::memcpy(big.data(), g.data(), g.size());
  for (size_t i = 0; i < big.size(); ++i) tiny[i] = big[i] * 1e-12f, big[i] *= 1e6f;
  std::vector<uint8_t> big_bytes(4 * big.size()), tiny_bytes(4 * tiny.size());
  std::memcpy(big_bytes.data(), big.data(), big_bytes.size());
  std::memcpy(tiny_bytes.data(), tiny.data(), tiny_bytes.size());
  write_safetensors(model,
                    {{"huge", DType::F32, {64, 128}}, {"tiny", DType::F32, {64, 128}}, {"w", DType::BF16, {256, 384}}},
                    {big_bytes, tiny_bytes, test::gaussian_bf16(256 * 384, 0.02f, 82)}, kMetadata, true);
  const std::string packed = dir.file("m.wpk");

  RunResult r = compress(model, packed, {"--scheme", "nf4"});
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(count_lines(r.err) == 3);  // two warnings, the summary
  CHECK(contains(r.err, "wpack: warning: tensor 'huge': 128 of 128 scales at fp16's largest, 65504"));
  CHECK(contains(r.err, "wpack: warning: tensor 'tiny': 128 of 128 scales at fp16's smallest"));
  CHECK(!contains(r.err, "'w'"));
  RunResult lut = compress(model, packed, {"--scheme", "lut4", "-f"});
  CHECK(lut.exit_code == 0);
  CHECK(contains(lut.err, "wpack: warning: tensor 'huge': "));
  CHECK(contains(lut.err, "table values at fp16's largest"));
  // LUT values that round to 0 are not counted as scales are: the tensor that decodes to about 0 is
  // named by its rel_error
  CHECK(contains(lut.err, "wpack: warning: tensor 'tiny': its weights decode to about 0"));
  CHECK(contains(lut.err, "rel_error 1.0000"));
  CHECK(!contains(lut.err, "'w'"));
  // int8's per-row scales reach 65504 * 127: these weights fit; the tiny ones do not
  RunResult int8 = compress(model, packed, {"--scheme", "int8", "-f"});
  CHECK(int8.exit_code == 0);
  CHECK(!contains(int8.err, "'huge'"));
  CHECK(contains(int8.err, "'tiny'"));
  // --keep packs them lossless: no warning; -q: none either
  RunResult kept = compress(model, packed, {"--scheme", "nf4", "--keep", "huge|tiny", "-f"});
  CHECK(kept.exit_code == 0);
  CHECK(count_lines(kept.err) == 1);
  RunResult quiet = compress(model, packed, {"--scheme", "nf4", "-f", "-q"});
  CHECK(quiet.exit_code == 0);
  CHECK(quiet.err.empty());
}

// Hides every CUDA device from the processes this test starts (and restores the variable).
class NoCudaDevices {
 public:
  NoCudaDevices() {
    if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) saved_ = v;
    ::setenv("CUDA_VISIBLE_DEVICES", "-1", 1);
  }
  ~NoCudaDevices() {
    if (saved_) ::setenv("CUDA_VISIBLE_DEVICES", saved_->c_str(), 1);
    else ::unsetenv("CUDA_VISIBLE_DEVICES");
  }

 private:
  std::optional<std::string> saved_;
};

TEST_CASE("verify --device cuda without a GPU (or without CUDA): CPU checks decide, GPU note on stderr") {
  NoCudaDevices no_gpu;  // so that this holds on a machine with a GPU too
  TempDir dir;
  const std::string model = write_small_model(dir);
  const std::string packed = dir.file("model.wpk");
  REQUIRE(compress(model, packed).exit_code == 0);

  RunResult r = run_wpack({"verify", packed, "--device", "cuda", "--against", model, "--batch", "1,16"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.err, "GPU checks did not run"));
  CHECK(contains(r.err, "no CUDA"));  // the reason: no CUDA in the build, or no CUDA device
  CHECK(contains(r.out, "OK"));
  CHECK(!contains(r.out, "speedup"));  // no GPU table

  RunResult j = run_wpack({"verify", "--json", packed, "--device", "cuda"});
  CHECK(j.exit_code == 0);
  CHECK(j.err.empty());  // the note is in the report; stderr has failures only
  json report = json::parse(j.out, nullptr, false);
  REQUIRE(!report.is_discarded());
  CHECK(report["ok"] == true);
  CHECK(report["gpu_checks_ran"] == false);
  CHECK(report["device"] == "cuda");
  CHECK(contains(report["gpu_note"].get<std::string>(), "GPU checks did not run"));

  // The exit code is the CPU checks': a source that differs fails with --device cuda as without it.
  Model other = small_model();
  other.data[0][10] ^= 0x01;  // one element of layer.0.weight
  const std::string changed = dir.file("changed.safetensors");
  write_model(changed, other);
  RunResult bad = run_wpack({"verify", packed, "--device", "cuda", "--against", changed});
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.err, "tensor 'layer.0.weight'"));
  CHECK(contains(bad.err, "GPU checks did not run"));
  CHECK(contains(bad.out, "FAILED"));
  RunResult badj = run_wpack({"verify", "--json", packed, "--device", "cuda", "--against", changed});
  CHECK(badj.exit_code == 1);
  json bad_report = json::parse(badj.out, nullptr, false);
  REQUIRE(!bad_report.is_discarded());
  CHECK(bad_report["ok"] == false);
  CHECK(bad_report["gpu_checks_ran"] == false);

  // Quiet: no note, and nothing at all when the CPU checks pass.
  RunResult q = run_wpack({"-q", "verify", packed, "--device", "cuda"});
  CHECK(q.exit_code == 0);
  CHECK(q.err.empty());
  CHECK(q.out.empty());
}

// A report that cannot be written (a full disk: /dev/full) is an error, not exit 0 with nothing
// said and a truncated file.
TEST_CASE("a failed write to standard output is reported, exit 1") {
  TempDir dir;
  const std::string model = write_gaussian_model(dir);
  const std::string packed = dir.file("m.wpk");
  REQUIRE(compress(model, packed).exit_code == 0);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"inspect", packed}, {"inspect", "--json", packed}, {"verify", packed},
        {"inspect", model}, {"--help"}}) {
    INFO(args[0] << " " << args.back());
    const RunResult r = run_wpack(args, "/dev/full");
    CHECK(r.exit_code == 1);
    CHECK(r.err == "wpack: cannot write standard output: No space left on device\n");
  }
  // stdout closed: the write fails before the last flush, and the reason still comes
  const std::string cmd = "'" + std::string(WPACK_BINARY) + "' inspect --json '" + packed + "' >&- 2>'" +
                          dir.file("closed.err") + "'";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  const std::vector<uint8_t> err = test::read_file(dir.file("closed.err"));
  CHECK(std::string(err.begin(), err.end()) == "wpack: cannot write standard output: Bad file descriptor\n");
}
