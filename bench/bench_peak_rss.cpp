// Peak memory of packing and unpacking a multi-GB model (issue 6, item 5): wpack streams tensor by
// tensor, and within a tensor a batch of tiles at a time, so its peak resident memory should not
// grow with the model. Target: under 1 GiB beyond the memory map of the input, for any input size.
//
//   bench_peak_rss [--gib 2,6] [--dir DIR] [--threads N] [--scheme SCHEME] [--dtype bf16|f32]
//
// For each size, generates a Llama-7B-like model of about that many GiB (a 32000 x 4096 embedding,
// layers of q/k/v/o 4096 x 4096 and MLP 11008 x 4096 matrices, BF16 by default or F32 with
// --dtype f32 (values with all 32 bits used), F32 norms, one F32 vector of 64M elements, which is
// stored in 1 x 16384 tiles) in DIR (default $TMPDIR or /tmp), then runs
// pack_model (lossless zstd; with --scheme also that lossy scheme), unpack_to_safetensors and
// verify_cpu (alone and against the model: wpack verify [--against]) each in a child process and prints the child's peak RSS (getrusage ru_maxrss: everything resident,
// the mapped input and output pages included), and the peaks of its anonymous and file-backed
// resident memory (RssAnon / RssFile in /proc/PID/status, sampled every 2 ms) beside the target.
// Needs about 2.7x the largest size free in DIR; the files are removed at the end.
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "formats/error.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "packer/detail/fp.h"  // float_to_bf16_bits
#include "packer/pack.h"
#include "packer/unpack.h"
#include "verify/verify.h"

using namespace wpack;

namespace {

constexpr double kTargetBytes = double(uint64_t(1) << 30);  // 1 GiB beyond the map
constexpr double kMiB = 1024.0 * 1024.0;

// N(0, 0.02) BF16 weights, fast: a table of 65536 gaussian values indexed by a PCG-style stream.
class WeightStream {
 public:
  explicit WeightStream(uint64_t seed) : state_(seed) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < table_.size(); i += 2) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const double u2 = (s >> 11) / 9007199254740992.0;
      const double r = std::sqrt(-2.0 * std::log(u1)) * 0.02;
      table_[i] = detail::float_to_bf16_bits(float(r * std::cos(2 * M_PI * u2)));
      table_[i + 1] = detail::float_to_bf16_bits(float(r * std::sin(2 * M_PI * u2)));
    }
  }
  void fill_bf16(uint8_t* out, uint64_t count) {
    for (uint64_t i = 0; i < count; ++i) {
      state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
      std::memcpy(out + 2 * i, &table_[state_ >> 48], 2);
    }
  }
  void fill_f32(uint8_t* out, uint64_t count) {
    for (uint64_t i = 0; i < count; ++i) {
      state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
      uint16_t h = table_[state_ >> 48];
      const uint32_t bits = uint32_t(h) << 16 | uint32_t((state_ >> 20) & 0xFFFF);
      std::memcpy(out + 4 * i, &bits, 4);
    }
  }

 private:
  uint64_t state_;
  std::vector<uint16_t> table_ = std::vector<uint16_t>(65536);
};

// Writes the model; returns its size in bytes.
uint64_t write_model(const std::string& path, double gib, DType matrices) {
  std::vector<TensorInfo> infos;
  const uint64_t target = uint64_t(gib * double(uint64_t(1) << 30));
  uint64_t bytes = 0;
  auto add = [&](std::string name, DType dtype, std::vector<uint64_t> shape) {
    infos.push_back({std::move(name), dtype, std::move(shape)});
    bytes += infos.back().num_bytes();
  };
  add("model.embed_tokens.weight", matrices, {32000, 4096});
  add("model.long_vector", DType::F32, {uint64_t(64) << 20});  // a long vector: 1 x 16384 tiles
  for (int layer = 0; bytes < target; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(p + "self_attn." + m + ".weight", matrices, {4096, 4096});
    add(p + "mlp.gate_proj.weight", matrices, {11008, 4096});
    add(p + "mlp.up_proj.weight", matrices, {11008, 4096});
    add(p + "mlp.down_proj.weight", matrices, {4096, 11008});
    add(p + "input_layernorm.weight", DType::F32, {4096});
    add(p + "post_attention_layernorm.weight", DType::F32, {4096});
  }
  SafetensorsWriter writer(path, infos, {{"format", "pt"}}, true);
  WeightStream weights(42);
  std::vector<uint8_t> chunk(uint64_t(16) << 20);
  for (const TensorInfo& t : infos) {
    const uint32_t esize = dtype_size(t.dtype);
    for (uint64_t left = t.num_elements(); left > 0;) {
      const uint64_t n = std::min<uint64_t>(left, chunk.size() / esize);
      if (t.dtype == DType::BF16) weights.fill_bf16(chunk.data(), n);
      else weights.fill_f32(chunk.data(), n);
      writer.append({chunk.data(), n * esize});
      left -= n;
    }
  }
  writer.commit();
  return bytes;
}

struct Peak {
  double seconds = 0;
  double max_rss = 0;   // ru_maxrss, bytes
  double rss_anon = 0;  // sampled peaks, bytes
  double rss_file = 0;
  int exit_code = -1;
};

// "RssAnon:   1234 kB" -> bytes
double status_field(const std::string& status, const char* key) {
  const size_t at = status.find(key);
  if (at == std::string::npos) return 0;
  return std::strtod(status.c_str() + at + std::strlen(key), nullptr) * 1024.0;
}

// Runs `work` in a child process and measures it.
template <typename Work>
Peak measure(Work&& work) {
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    try {
      work();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_peak_rss: %s\n", e.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
  Peak peak;
  const std::string status_path = "/proc/" + std::to_string(pid) + "/status";
  int status = 0;
  struct rusage usage {};
  for (;;) {
    const pid_t done = ::wait4(pid, &status, WNOHANG, &usage);
    if (done == pid) break;
    std::ifstream in(status_path);
    std::stringstream text;
    text << in.rdbuf();
    peak.rss_anon = std::max(peak.rss_anon, status_field(text.str(), "RssAnon:"));
    peak.rss_file = std::max(peak.rss_file, status_field(text.str(), "RssFile:"));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  peak.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  peak.max_rss = double(usage.ru_maxrss) * 1024.0;
  peak.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return peak;
}

void print_row(const char* what, double input_bytes, const Peak& p) {
  const bool ok = p.exit_code == 0 && p.max_rss < kTargetBytes && p.rss_anon < kTargetBytes;
  std::printf("%-32s %9.0f %8.1f %9.0f %9.0f %9.0f   %s\n", what, input_bytes / kMiB, p.seconds, p.max_rss / kMiB,
              p.rss_anon / kMiB, p.rss_file / kMiB,
              p.exit_code != 0 ? "FAILED (exit)" : ok ? "ok (< 1024 MiB)" : "over the target");
}

std::vector<double> parse_sizes(const std::string& text) {
  std::vector<double> sizes;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) sizes.push_back(std::atof(item.c_str()));
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<double> sizes = {2, 6};
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = tmp && *tmp ? tmp : "/tmp";
  int threads = 0;
  std::string scheme;
  DType matrices = DType::BF16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--gib" && i + 1 < argc) sizes = parse_sizes(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--scheme" && i + 1 < argc) scheme = argv[++i];
    else if (a == "--dtype" && i + 1 < argc && (std::strcmp(argv[i + 1], "bf16") == 0 || std::strcmp(argv[i + 1], "f32") == 0))
      matrices = std::strcmp(argv[++i], "f32") == 0 ? DType::F32 : DType::BF16;
    else {
      std::fprintf(stderr, "usage: bench_peak_rss [--gib 2,6] [--dir DIR] [--threads N] [--scheme SCHEME] [--dtype bf16|f32]\n");
      return 2;
    }
  }
  struct statvfs vfs;
  const double largest = *std::max_element(sizes.begin(), sizes.end());
  if (::statvfs(dir.c_str(), &vfs) == 0) {
    const double free_gib = double(vfs.f_bavail) * double(vfs.f_frsize) / double(uint64_t(1) << 30);
    if (free_gib < 2.8 * largest) {
      std::fprintf(stderr, "bench_peak_rss: %s has %.1f GiB free, needs about %.1f GiB for %.1f GiB models\n",
                   dir.c_str(), free_gib, 2.8 * largest, largest);
      return 1;
    }
  }
  const std::string work = dir + "/bench_peak_rss." + std::to_string(::getpid());
  std::filesystem::create_directories(work);
  const std::string model = work + "/model.safetensors", packed = work + "/model.wpk",
                    unpacked = work + "/unpacked.safetensors";
  std::printf("peak resident memory of wpack (threads: %d; target: < 1024 MiB beyond the memory map)\n",
              threads > 0 ? threads : int(std::thread::hardware_concurrency()));
  std::printf("%-32s %9s %8s %9s %9s %9s\n", "run", "input MiB", "seconds", "maxrss", "anon", "file");
  std::printf("%-32s %9s %8s %9s %9s %9s\n", "", "", "", "MiB", "peak MiB", "peak MiB");
  int status = 0;
  for (double gib : sizes) {
    const double model_bytes = double(write_model(model, gib, matrices));
    std::vector<std::pair<std::string, PackOptions>> runs;
    PackOptions lossless;
    lossless.codec = Codec::kZstd;
    lossless.threads = threads;
    lossless.overwrite = true;
    runs.push_back({"lossless zstd", lossless});
    if (!scheme.empty()) {
      PackOptions lossy = lossless;
      lossy.policy = parse_policy_spec(scheme, TensorPolicy{});
      runs.push_back({scheme, lossy});
    }
    for (const auto& [name, options] : runs) {
      const Peak pack = measure([&] { pack_model(*open_tensor_source(model), packed, options); });
      print_row(("pack " + name).c_str(), model_bytes, pack);
      const Peak unpack = measure([&] {
        auto reader = WpkReader::open(packed);
        unpack_to_safetensors(*reader, unpacked, true, threads);
      });
      print_row(("unpack " + name).c_str(), double(std::filesystem::file_size(packed)), unpack);
      // verify on the CPU, alone and against the source (exit code 3 when a check fails)
      const auto verify_run = [&](bool against) {
        return measure([&] {
          auto reader = WpkReader::open(packed);
          const auto source = against ? open_tensor_source(model) : nullptr;
          if (!verify_cpu(*reader, source.get(), threads).ok()) std::_Exit(3);
        });
      };
      const Peak verify = verify_run(false), verify_against = verify_run(true);
      print_row(("verify " + name).c_str(), double(std::filesystem::file_size(packed)), verify);
      print_row(("verify --against " + name).c_str(), double(std::filesystem::file_size(packed)), verify_against);
      bool ok = pack.exit_code == 0 && unpack.exit_code == 0 && pack.max_rss < kTargetBytes &&
                unpack.max_rss < kTargetBytes;
      for (const Peak& p : {verify, verify_against}) ok = ok && p.exit_code == 0 && p.max_rss < kTargetBytes;
      if (!ok) status = 1;
      std::filesystem::remove(unpacked);
      std::filesystem::remove(packed);
    }
  }
  std::filesystem::remove_all(work);
  std::printf("maxrss: getrusage ru_maxrss of the child (all resident pages, mapped files included);\n"
              "anon / file: peaks of RssAnon / RssFile in /proc/PID/status, sampled every 2 ms.\n");
  return status;
}
