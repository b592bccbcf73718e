// The wpack executable: compress, inspect, unpack, verify (CLI11).
//
// Exit codes: 0 success, 1 bad input / I/O error / failed check, 2 usage error. Every failure is
// one line on stderr that names the file (and tensor or tile).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <functional>
#include <cmath>
#include <csignal>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "formats/error.h"
#include "packer/pack.h"
#include "packer/prune.h"
#include "packer/quant_tile.h"  // which schemes take a group, symmetry, LUT rows
#include "packer/quantize.h"
#include "verify/verify_gpu.h"  // kMaxGemvBatch
#include "wpack_version.h"

namespace {

// `word` as one shell word: as it is when it needs no quoting, else in single quotes.
std::string shell_word(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                              "-_./=:,+@%^") == std::string::npos)
    return word;
  std::string quoted = "'";
  for (char ch : word) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

// The command line recorded in the .wpk metadata, from what CLI11 read rather than from argv:
// "wpack compress INPUT", then every option given that can change the output, in the order the
// options are defined, by its short name where it has one, each value a shell word. -T, -q, -v
// and -f, the program's path and how options were spelled or bundled ("-qfT2", "-fo x",
// "--tile=64x64") leave no trace, so the file is the same bytes for any of them.
std::string recorded_command_line(const CLI::App& compress) {
  std::string line = "wpack compress";
  for (const CLI::Option* o : compress.get_options())
    if (o->get_positional() && !o->nonpositional())
      for (const std::string& value : o->results()) line += " " + shell_word(value);
  for (const CLI::Option* o : compress.get_options()) {
    if (!o->nonpositional() || o->count() == 0) continue;
    const std::vector<std::string>& longs = o->get_lnames();
    if (std::any_of(longs.begin(), longs.end(), [](const std::string& n) {
          return n == "threads" || n == "force" || n == "quiet" || n == "verbose";
        }))
      continue;
    const std::string name = !o->get_snames().empty() ? "-" + o->get_snames().front() : "--" + longs.front();
    if (o->get_items_expected() == 0) {  // a flag
      line += " " + name;
      continue;
    }
    for (const std::string& value : o->results()) line += " " + name + " " + shell_word(value);
  }
  return line;
}

// -T: OpenMP threads; more than this is refused (libgomp crashed creating 100000).
constexpr int kMaxThreads = 1024;
const char* const kThreadsHelp = "Threads (default: all cores; at most 1024)";

// "128x128" -> rows, cols.
bool parse_tile(const std::string& text, uint32_t* rows, uint32_t* cols) {
  static const std::regex re("^([0-9]{1,9})[xX]([0-9]{1,9})$");  // < 2^32; the caller bounds the product
  std::smatch m;
  if (!std::regex_match(text, m, re)) return false;
  *rows = static_cast<uint32_t>(std::stoul(m[1]));
  *cols = static_cast<uint32_t>(std::stoul(m[2]));
  return *rows > 0 && *cols > 0;
}

// "1,16" -> {1, 16}: batch sizes in 1..kMaxGemvBatch, comma-separated, no repeats.
bool parse_batches(const std::string& text, std::vector<uint32_t>* batches) {
  static const std::regex re("^[0-9]{1,3}(,[0-9]{1,3})*$");
  // at most kMaxGemvBatch distinct batches of up to 3 digits; a longer text is refused before the
  // regex, whose executor recurses per repetition (a list of 20000 overflowed the stack)
  if (text.size() > 4 * wpack::kMaxGemvBatch || !std::regex_match(text, re)) return false;
  batches->clear();
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const uint32_t b = static_cast<uint32_t>(std::stoul(text.substr(start, end - start)));
    if (b < 1 || b > wpack::kMaxGemvBatch) return false;
    for (uint32_t seen : *batches)
      if (seen == b) return false;
    batches->push_back(b);
    start = end + 1;
  }
  return !batches->empty();
}

}  // namespace

namespace {

int run_cli(int argc, char** argv) {
  using namespace wpack::cli;
  // Past the file-size limit (ulimit -f) a write fails with EFBIG and is reported as any write
  // error is, instead of the process dying of SIGXFSZ with nothing said and a temp file left.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"wpack: compress and pack neural-network weights into GPU-decodable tiles"};
  app.set_version_flag("--version", std::string("wpack ") + WPACK_VERSION_STRING);
  app.require_subcommand(1);
  app.fallthrough();
  GlobalOptions global;
  auto* quiet = app.add_flag("-q,--quiet", global.quiet, "No progress and no messages but errors");
  app.add_flag("-v,--verbose", global.verbose, "More detail")->excludes(quiet);  // which one would win is a guess

  // compress
  CompressArgs compress;
  std::string tile_text = "128x128", codec_text = "rans", filter_text = "auto";
  auto* c = app.add_subcommand("compress", "Pack a model (safetensors, sharded index, HDF5) into a .wpk");
  c->add_option("input", compress.input, "Model: .safetensors, model.safetensors.index.json, or HDF5 (.h5)")->required();
  c->add_option("-o,--output", compress.output, "Output .wpk")->required();
  c->add_flag("-f,--force", compress.options.overwrite, "Overwrite the output if it exists");
  c->add_option("-T,--threads", compress.options.threads, kThreadsHelp)->check(CLI::Range(0, kMaxThreads));
  c->add_option("--tile", tile_text, "Tile shape RxC (default 128x128)");
  c->add_option("--codec", codec_text,
                "Plane codec: rans (default, GPU-decodable), zstd (CPU decode only, --level), none, auto (per tile the smaller "
                "of rans and zstd), exp4 (BF16/F32: 4-bit exponent codes, ~75%, decoded inside the GPU matmul at full speed; "
                "quantized tensors raw)")
      ->check(CLI::IsMember({"zstd", "rans", "none", "auto", "exp4"}));
  auto* level = c->add_option("--level", compress.options.level, "zstd level, -7 (fastest) to 19 (smallest), not 0; default 3")
                    ->check(CLI::Range(-7, 19));
  c->add_option("--filter", filter_text, "Filter: auto, floatplanes, byteshuffle, bitshuffle, none")
      ->check(CLI::IsMember({"auto", "floatplanes", "byteshuffle", "bitshuffle", "none"}));
  c->add_option("--alignment", compress.options.alignment, "Tile data alignment in bytes (power of two, >= 16)");
  std::string scheme_text = "lossless", clip_text = "mse", lut_per_text, prune_text;
  uint32_t group = 0;
  bool symmetric = false;
  std::vector<std::string> override_texts, keep_patterns;
  c->add_option("--scheme", scheme_text,
                "lossless (default), int8, int4, int3, int2, fp8, fp6, fp5, fp4, nf4, lut4, lut3 (float tensors of rank >= 2)")
      ->check(CLI::IsMember({"lossless", "int8", "int4", "int3", "int2", "fp8", "fp6", "fp5", "fp4", "nf4", "lut4", "lut3"}));
  c->add_option("--group", group, "Group size along K for int4/3/2, fp4, nf4: 32, 64, 128, 256 (default 128; nf4 64)")
      ->check(CLI::IsMember({32, 64, 128, 256}));
  c->add_flag("--symmetric", symmetric, "int4/3/2: symmetric (no zero points)");
  c->add_option("--clip", clip_text, "Scale choice: mse (search clipping ratios, default) or minmax (plain RTN)")
      ->check(CLI::IsMember({"mse", "minmax"}));
  c->add_option("--lut-per", lut_per_text, "lut4/lut3: one table per N rows, rows:N (default: one table)");
  c->add_option("--prune", prune_text, "Prune before quantizing: a fraction (0.5) or N:M along K (2:4, 4:8)");
  c->add_option("--override", override_texts,
                "REGEX=SPEC per-tensor policy (repeatable, last match wins), SPEC e.g. int8, int4:g64:sym, fp6, lut4:rows64, lossless");
  c->add_option("--keep", keep_patterns, "REGEX: tensors left lossless (repeatable)");
  auto* dry_run = c->add_flag("--dry-run", compress.dry_run,
                              "Print the plan per tensor (scheme, estimated bytes, bits/weight); write nothing");
  c->add_flag("--json", compress.json, "With --dry-run: the plan as JSON")->needs(dry_run);

  // inspect
  InspectArgs inspect;
  auto* i = app.add_subcommand("inspect", "Per-tensor table of a .wpk (or, for a model, the lossless ratio packing would reach)");
  i->add_option("input", inspect.input, ".wpk file, or a model for a dry-run estimate")->required();
  i->add_flag("--json", inspect.json, "Machine-readable output");

  // unpack
  UnpackArgs unpack;
  auto* u = app.add_subcommand("unpack", "Write the tensors of a .wpk back to a safetensors file");
  u->add_option("input", unpack.input, ".wpk file")->required();
  u->add_option("-o,--output", unpack.output, "Output .safetensors")->required();
  u->add_flag("-f,--force", unpack.overwrite, "Overwrite the output if it exists");
  u->add_option("-T,--threads", unpack.threads, kThreadsHelp)->check(CLI::Range(0, kMaxThreads));
  u->add_option("--dtype", unpack.dtype, "Write float tensors as F32, F16 or BF16 (default: the source dtype)")
      ->check(CLI::IsMember({"F32", "F16", "BF16"}));

  // verify
  VerifyArgs verify;
  auto* v = app.add_subcommand("verify", "Check every checksum, decode every tile, compare with the source");
  v->add_option("input", verify.input, ".wpk file")->required();
  v->add_option("--against", verify.against, "Source model to compare the decoded tensors with");
  v->add_option("--device", verify.device, "cpu or cuda (default cpu)")->check(CLI::IsMember({"cpu", "cuda"}));
  v->add_flag("--json", verify.json, "Machine-readable report on stdout");
  v->add_option("-T,--threads", verify.threads, kThreadsHelp)->check(CLI::Range(0, kMaxThreads));
  v->add_option("--max-error", verify.max_error, "Fail lossy tensors whose relative error exceeds X: against --against, else the error recorded at compress time")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            const double x = std::strtod(text.c_str(), nullptr);
            return std::isfinite(x) && x >= 0 ? std::string() : "must be a finite number >= 0 (got " + text + ")";
          },
          "X >= 0"));
  std::string batch_text;
  v->add_option("--batch", batch_text, "With --device cuda: GEMV batch sizes to check and time, e.g. 1,16 (1..64, default 1)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0 with their text; usage errors exit 2 with one line.
    if (e.get_exit_code() == 0) return app.exit(e);
    // A mistyped command name is named, not "a subcommand is required": the first argument after
    // the global flags (-q, -v, bundled or long), when it is not an option.
    if (app.get_subcommands().empty()) {
      int i = 1;
      auto global_flag = [](const std::string& a) {
        return a == "--quiet" || a == "--verbose" ||
               (a.size() > 1 && a[0] == '-' && a.find_first_not_of("qv", 1) == std::string::npos);
      };
      while (i < argc && global_flag(argv[i])) ++i;
      if (i < argc && argv[i][0] != '-' && argv[i][0] != '\0') {
        std::cerr << "wpack: unknown command '" << argv[i] << "' (commands: compress, inspect, unpack, verify; see wpack --help)\n";
        return 2;
      }
    }
    std::cerr << "wpack: " << e.what() << " (see wpack --help)\n";
    return 2;
  }

  try {
    if (c->parsed()) {
      if (!parse_tile(tile_text, &compress.options.tile_rows, &compress.options.tile_cols)) {
        std::cerr << "wpack: --tile must be RxC with positive integers, e.g. 128x128 (got '" << tile_text << "')\n";
        return 2;
      }
      if (uint64_t{compress.options.tile_rows} * compress.options.tile_cols > wpack::kWpkMaxTileElements) {
        std::cerr << "wpack: --tile " << tile_text << " has more than 2^24 elements per tile\n";
        return 2;
      }
      if (codec_text == "exp4" && filter_text != "auto" && filter_text != "floatplanes") {
        std::cerr << "wpack: --codec exp4 codes the floatplanes filter's exponent plane: --filter must be floatplanes or auto (got '"
                  << filter_text << "')\n";
        return 2;
      }
      if (level->count() && codec_text != "zstd" && codec_text != "auto") {
        std::cerr << "wpack: --level applies to --codec zstd or auto (got --codec " << codec_text << ")\n";
        return 2;
      }
      if (level->count() && compress.options.level == 0) {  // zstd's 0 means its default, which --level does not give
        std::cerr << "wpack: --level: 0 is not a zstd level here\n";
        return 2;
      }
      compress.options.codec_auto = (codec_text == "auto");
      if (!compress.options.codec_auto) compress.options.codec = *wpack::parse_codec(codec_text);
      if (filter_text != "auto") compress.options.filter = *wpack::parse_filter(filter_text);
      compress.options.command_line = recorded_command_line(*c);
      // The quantizer options, in a base policy that the file-wide --scheme and each --override
      // inherit (group, symmetry and LUT rows only where the scheme takes them).
      wpack::TensorPolicy base;
      base.spec.clip = clip_text == "mse" ? wpack::Clip::kMse : wpack::Clip::kMinMax;
      base.spec.group = group;
      base.spec.symmetric = symmetric;
      if (!prune_text.empty()) base.prune = wpack::parse_prune(prune_text);
      if (c->count("--lut-per")) {
        static const std::regex lut_re("^rows:([0-9]{1,9})$");
        std::smatch m;
        if (!std::regex_match(lut_per_text, m, lut_re) || std::stoul(m[1]) == 0) {
          std::cerr << "wpack: --lut-per must be rows:N with N > 0 (got '" << lut_per_text << "')\n";
          return 2;
        }
        base.spec.lut_rows = static_cast<uint32_t>(std::stoul(m[1]));
      }
      // The file-wide policy, as an override SPEC so that one parser handles both.
      compress.options.policy = wpack::parse_policy_spec(scheme_text, base);
      for (const auto& text : override_texts) {
        // SPEC may itself hold '=' (clip=mse): split at the first '=' followed by a scheme name.
        size_t split = std::string::npos;
        for (size_t pos = text.find('='); pos != std::string::npos; pos = text.find('=', pos + 1)) {
          const std::string rest = text.substr(pos + 1), head = rest.substr(0, rest.find(':'));
          if (head == "lossless" || wpack::parse_scheme(head)) {
            split = pos;
            break;
          }
        }
        if (split == std::string::npos || split == 0) {
          std::cerr << "wpack: --override must be REGEX=SPEC with SPEC a scheme (got '" << text << "')\n";
          return 2;
        }
        compress.options.overrides.push_back(
            {text.substr(0, split), wpack::parse_policy_spec(text.substr(split + 1), base)});
      }
      // Quantizer options with nothing to quantize (no lossy --scheme, no lossy --override), with no
      // scheme given that takes them, or where every scheme that takes one sets its own (int4:g32,
      // lut4:rows8): errors, not silently dropped.
      std::vector<wpack::QuantSpec> specs;  // of the file-wide policy and every override, lossy ones
      if (compress.options.policy.lossy()) specs.push_back(compress.options.policy.spec);
      for (const auto& o : compress.options.overrides)
        if (o.policy.lossy()) specs.push_back(o.policy.spec);
      if (specs.empty())
        for (const char* name : {"--prune", "--symmetric", "--clip", "--group", "--lut-per"})
          if (c->count(name)) {
            std::cerr << "wpack: " << name << " applies to lossy tensors: give a lossy --scheme or --override\n";
            return 2;
          }
      const struct {
        const char* option;
        bool (*takes)(wpack::Scheme);
        const char* schemes;
        std::function<bool(const wpack::QuantSpec&)> inherits;  // the spec holds the option's value
      } narrow[] = {{"--group", wpack::scheme_is_grouped, "int4/3/2, fp4 and nf4",
                     [&](const wpack::QuantSpec& s) { return s.group == group; }},
                    {"--symmetric", wpack::scheme_takes_symmetry, "int4/3/2", nullptr},
                    {"--lut-per", wpack::scheme_is_lut, "lut4 and lut3",
                     [&](const wpack::QuantSpec& s) { return s.lut_rows == base.spec.lut_rows; }}};
      for (const auto& n : narrow) {
        if (!c->count(n.option) || specs.empty()) continue;
        auto takes = [&](const wpack::QuantSpec& s) { return n.takes(s.scheme); };
        if (std::none_of(specs.begin(), specs.end(), takes)) {
          std::cerr << "wpack: " << n.option << " applies to " << n.schemes
                    << " tensors: no --scheme or --override gives one\n";
          return 2;
        }
        if (n.inherits && std::none_of(specs.begin(), specs.end(),
                                       [&](const wpack::QuantSpec& s) { return takes(s) && n.inherits(s); })) {
          std::cerr << "wpack: " << n.option
                    << " changes nothing: every --scheme and --override that takes it sets its own\n";
          return 2;
        }
      }
      compress.options.keep = keep_patterns;
      return run_compress(compress, global);
    }
    if (i->parsed()) return run_inspect(inspect, global);
    if (u->parsed()) return run_unpack(unpack, global);
    if (v->parsed()) {
      if (v->count("--batch")) {
        if (verify.device != "cuda") {
          std::cerr << "wpack: --batch applies to --device cuda only\n";
          return 2;
        }
        if (!parse_batches(batch_text, &verify.batches)) {
          std::cerr << "wpack: --batch must be batch sizes in 1.." << wpack::kMaxGemvBatch
                    << ", comma-separated, without repeats, e.g. 1,16 (got '" << batch_text << "')\n";
          return 2;
        }
      }
      return run_verify(verify, global);
    }
  } catch (const wpack::Error& e) {
    std::cerr << "wpack: " << e.what() << "\n";
    return e.code() == wpack::ErrorCode::kInvalidArgument ? 2 : 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "wpack: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "wpack: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const int rc = run_cli(argc, argv);
  // Standard output (tables, --json) is buffered: a write that failed (a full disk, /dev/full, a
  // closed pipe's EPIPE with SIGPIPE ignored) shows only here. Report it; never exit 0 with a
  // truncated report.
  errno = 0;
  std::cout.flush();
  if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
    int err = errno;
    if (err == 0) {  // the write that failed came before this flush: ask the descriptor
      pollfd out{STDOUT_FILENO, POLLOUT, 0};
      if (::fcntl(STDOUT_FILENO, F_GETFL) == -1) err = errno;  // closed (EBADF)
      else if (::poll(&out, 1, 0) == 1 && (out.revents & POLLERR)) err = EPIPE;  // a pipe without a reader
    }
    std::cerr << "wpack: cannot write standard output" << (err ? std::string(": ") + std::strerror(err) : std::string())
              << "\n";
    return 1;
  }
  return rc;
}
