#include "cli/commands.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/error.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "packer/codec.h"
#include "packer/estimate.h"
#include "packer/filters.h"
#include "packer/quant_tile.h"
#include "packer/unpack.h"
#include "verify/verify.h"

namespace wpack::cli {
namespace {

using json = nlohmann::ordered_json;

// A one-line progress bar on stderr, drawn only when stderr is a terminal and not --quiet.
class Progress {
 public:
  explicit Progress(const GlobalOptions& global) : enabled_(!global.quiet && ::isatty(2)) {}
  ~Progress() { finish(); }
  void update(uint64_t done, uint64_t total, const std::string& what) {
    if (!enabled_) return;
    const double f = total ? double(done) / double(total) : 1.0;
    const int width = 30, filled = static_cast<int>(f * width);
    std::string bar(filled, '=');
    bar.resize(width, ' ');
    std::string name = what.size() > 40 ? "..." + what.substr(what.size() - 37) : what;
    std::fprintf(stderr, "\r[%s] %5.1f%% %-40s", bar.c_str(), 100 * f, name.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\r%80s\r", "");
    drawn_ = false;
  }

 private:
  bool enabled_;
  bool drawn_ = false;
};

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// A plain text table with right-aligned numeric columns.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void separator() { rows_.push_back({}); }
  void print(std::ostream& out) const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& r : rows_)
      for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
    size_t total = 0;
    for (size_t w : width) total += w + 2;
    for (const auto& r : rows_) {
      if (r.empty()) {
        out << std::string(total - 2, '-') << "\n";
        continue;
      }
      std::string line;
      for (size_t c = 0; c < r.size(); ++c) {
        const bool left = (c == 0);
        std::string cell = r[c];
        std::string pad(width[c] - cell.size(), ' ');
        line += left ? cell + pad : pad + cell;
        if (c + 1 < r.size()) line += "  ";
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool has_wpk_magic(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(ErrorCode::kIo, path + ": cannot open");
  unsigned char head[4] = {};
  size_t n = std::fread(head, 1, 4, f);
  std::fclose(f);
  return n == 4 && head[0] == 0x89 && head[1] == 'W' && head[2] == 'P' && head[3] == 'K';
}

json json_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

double ratio_of(uint64_t packed, uint64_t original) { return original ? double(packed) / double(original) : 0.0; }
double bits_per_weight(uint64_t packed, uint64_t elements) { return elements ? 8.0 * double(packed) / double(elements) : 0.0; }

std::string tile_codec_of(const WpkReader& r, const WpkTensor& t) {
  if (t.tile_count == 0) return "-";
  const uint8_t code = r.tiles()[t.first_tile].codec;
  for (uint64_t i = 1; i < t.tile_count; ++i)
    if (r.tiles()[t.first_tile + i].codec != code) return "mixed";
  auto c = codec_from_code(code);
  return c ? std::string(codec_name(*c)) : "?" + std::to_string(code);
}

std::string tile_filter_of(const WpkReader& r, const WpkTensor& t) {
  if (t.tile_count == 0) return "-";
  const uint8_t code = r.tiles()[t.first_tile].filter;
  for (uint64_t i = 1; i < t.tile_count; ++i)
    if (r.tiles()[t.first_tile + i].filter != code) return "mixed";
  auto f = filter_from_code(code);
  return f ? std::string(filter_name(*f)) : "?" + std::to_string(code);
}

std::string scheme_of(uint8_t scheme) {
  if (scheme == 0) return "lossless";
  auto s = scheme_from_code(scheme);
  return s ? std::string(scheme_name(*s)) : "scheme" + std::to_string(scheme);
}

std::string tile_layout_of(const WpkReader& r, const WpkTensor& t) {
  if (t.scheme == 0) return tile_filter_of(r, t);
  uint64_t sparse = 0;
  for (uint64_t i = 0; i < t.tile_count; ++i) sparse += r.tiles()[t.first_tile + i].filter == kFilterQuantSparse;
  if (sparse == 0) return "quant_dense";
  if (sparse == t.tile_count) return "quant_sparse";
  return "quant_mixed";
}

// Scheme details of a lossy tensor for inspect --json (empty object when the params do not parse).
json scheme_details(const WpkReader& r, size_t index) {
  const WpkTensor& t = r.tensors()[index];
  json j = json::object();
  try {
    QuantTensorParams p = parse_quant_params(t.scheme, t.params, t.rows(), t.cols(), t.tile_rows, t.tile_cols);
    j["bits"] = p.bits;
    if (p.group) j["group"] = p.group;
    if (p.scheme == Scheme::kInt4 || p.scheme == Scheme::kInt3 || p.scheme == Scheme::kInt2 || p.scheme == Scheme::kInt8)
      j["symmetric"] = p.symmetric;
    if (scheme_is_lut(p.scheme)) j["lut_rows"] = p.lut_rows;
    j["clip"] = p.clip == Clip::kMse ? "mse" : "minmax";
    if (p.prune.kind == PruneSpec::Kind::kFraction) j["prune"] = p.prune.fraction;
    if (p.prune.kind == PruneSpec::Kind::kNM) j["prune"] = std::to_string(p.prune.n) + ":" + std::to_string(p.prune.m);
  } catch (const Error& e) {
    j["params_error"] = e.what();
  }
  return j;
}

std::string scheme_label(const json& details, const std::string& scheme) {
  std::string s = scheme;
  if (details.contains("group")) s += " g" + std::to_string(details["group"].get<uint32_t>());
  if (details.contains("prune")) s += details["prune"].is_string() ? " " + details["prune"].get<std::string>() : " pruned";
  return s;
}

std::string metric_text(double v, int digits) { return std::isfinite(v) ? fixed(v, digits) : "inf"; }

int inspect_wpk(const InspectArgs& args) {
  auto reader = WpkReader::open(args.input);
  json tensors = json::array();
  bool any_lossy = false;
  for (const auto& t : reader->tensors()) any_lossy |= t.scheme != 0;
  std::vector<std::string> header = {"tensor", "shape", "dtype", "scheme", "codec", "filter", "tiles", "original", "packed", "ratio", "bits/w"};
  if (any_lossy) header.insert(header.end(), {"rel_err", "max_abs", "snr_db", "sparsity"});
  Table table(header);
  uint64_t total_original = 0, total_elements = 0;
  for (size_t i = 0; i < reader->tensors().size(); ++i) {
    const WpkTensor& t = reader->tensors()[i];
    uint64_t packed = reader->tensor_index_bytes(i);
    for (uint64_t k = 0; k < t.tile_count; ++k) packed += reader->tiles()[t.first_tile + k].stored_size;
    const uint64_t original = t.num_elements() * dtype_size(t.dtype);
    total_original += original;
    total_elements += t.num_elements();
    json j;
    j["name"] = t.name;
    j["dtype"] = dtype_name(t.dtype);
    j["shape"] = t.shape;
    j["scheme"] = scheme_of(t.scheme);
    json details;
    if (t.scheme != 0) {
      details = scheme_details(*reader, i);
      for (auto& [k, v] : details.items()) j[k] = v;
    }
    j["codec"] = tile_codec_of(*reader, t);
    j["filter"] = tile_layout_of(*reader, t);
    j["tiles"] = t.tile_count;
    j["tile_shape"] = {t.tile_rows, t.tile_cols};
    j["original_bytes"] = original;
    j["packed_bytes"] = packed;
    j["ratio"] = ratio_of(packed, original);
    j["bits_per_weight"] = bits_per_weight(packed, t.num_elements());
    j["rel_error"] = t.metrics.rel_error;
    j["max_abs_error"] = t.metrics.max_abs_error;
    j["snr_db"] = json_or_null(t.metrics.snr_db);
    j["sparsity"] = t.metrics.sparsity;
    tensors.push_back(j);
    std::vector<std::string> row = {t.name, shape_to_string(t.shape), std::string(dtype_name(t.dtype)),
                                    t.scheme ? scheme_label(details, scheme_of(t.scheme)) : scheme_of(t.scheme),
                                    j["codec"].get<std::string>(), j["filter"].get<std::string>(), std::to_string(t.tile_count),
                                    human_bytes(double(original)), human_bytes(double(packed)),
                                    fixed(100 * ratio_of(packed, original), 1) + "%", fixed(bits_per_weight(packed, t.num_elements()), 2)};
    if (any_lossy) {
      if (t.scheme != 0)
        row.insert(row.end(), {metric_text(t.metrics.rel_error, 5), metric_text(t.metrics.max_abs_error, 5),
                               metric_text(t.metrics.snr_db, 1), fixed(t.metrics.sparsity, 3)});
      else
        row.insert(row.end(), {"0", "0", "exact", fixed(t.metrics.sparsity, 3)});
    }
    table.add(row);
  }
  const uint64_t file_bytes = reader->file_size();
  json totals;
  totals["tensors"] = reader->tensors().size();
  totals["tiles"] = reader->tiles().size();
  totals["elements"] = total_elements;
  totals["original_bytes"] = total_original;
  totals["packed_bytes"] = file_bytes;
  totals["ratio"] = ratio_of(file_bytes, total_original);
  totals["bits_per_weight"] = bits_per_weight(file_bytes, total_elements);
  if (args.json) {
    json out;
    out["file"] = args.input;
    out["format_version"] = kWpkFormatVersion;
    out["tensors"] = tensors;
    out["totals"] = totals;
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  table.separator();
  std::vector<std::string> total_row = {"total (whole file)", "", "", "", "", "", std::to_string(reader->tiles().size()),
                                        human_bytes(double(total_original)), human_bytes(double(file_bytes)),
                                        fixed(100 * ratio_of(file_bytes, total_original), 1) + "%",
                                        fixed(bits_per_weight(file_bytes, total_elements), 2)};
  if (any_lossy) total_row.insert(total_row.end(), {"", "", "", ""});
  table.add(total_row);
  std::cout << args.input << ": " << reader->tensors().size() << " tensors, " << reader->tiles().size()
            << " tiles, format v" << kWpkFormatVersion << "\n";
  table.print(std::cout);
  return 0;
}

int inspect_model(const InspectArgs& args) {
  auto source = open_tensor_source(args.input);
  json tensors = json::array();
  Table table({"tensor", "shape", "dtype", "original", "estimate", "ratio", "bits/w"});
  double total_packed = 0;
  uint64_t total_original = 0, total_elements = 0;
  for (size_t i = 0; i < source->tensors().size(); ++i) {
    const TensorInfo& info = source->tensors()[i];
    TensorBytes bytes = source->read(i);
    const double estimate = lossless_entropy_bytes(info.dtype, bytes.span());
    const uint64_t original = info.num_bytes();
    total_original += original;
    total_elements += info.num_elements();
    total_packed += estimate;
    json j;
    j["name"] = info.name;
    j["dtype"] = dtype_name(info.dtype);
    j["shape"] = info.shape;
    j["scheme"] = "lossless";
    j["original_bytes"] = original;
    j["estimated_bytes"] = static_cast<uint64_t>(std::ceil(estimate));
    j["ratio"] = original ? estimate / double(original) : 0.0;
    j["bits_per_weight"] = info.num_elements() ? 8 * estimate / double(info.num_elements()) : 0.0;
    tensors.push_back(j);
    table.add({info.name, shape_to_string(info.shape), std::string(dtype_name(info.dtype)), human_bytes(double(original)),
               human_bytes(estimate), fixed(100 * j["ratio"].get<double>(), 1) + "%",
               fixed(j["bits_per_weight"].get<double>(), 2)});
  }
  json totals;
  totals["tensors"] = source->tensors().size();
  totals["elements"] = total_elements;
  totals["original_bytes"] = total_original;
  totals["estimated_bytes"] = static_cast<uint64_t>(std::ceil(total_packed));
  totals["ratio"] = total_original ? total_packed / double(total_original) : 0.0;
  totals["bits_per_weight"] = total_elements ? 8 * total_packed / double(total_elements) : 0.0;
  if (args.json) {
    json out;
    out["file"] = args.input;
    out["dry_run"] = true;
    out["estimate"] = "order-0 entropy of each byte plane (lossless bound)";
    out["tensors"] = tensors;
    out["totals"] = totals;
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  table.separator();
  table.add({"total", "", "", human_bytes(double(total_original)), human_bytes(total_packed),
             fixed(100 * totals["ratio"].get<double>(), 1) + "%", fixed(totals["bits_per_weight"].get<double>(), 2)});
  std::cout << args.input << " (" << source->format_name() << "): not packed; lossless estimate (order-0 entropy of each byte plane)\n";
  table.print(std::cout);
  return 0;
}

int dry_run(const CompressArgs& args, const TensorSource& source) {
  std::vector<TensorPlan> plans = plan_model(source, args.options);
  json tensors = json::array();
  Table table({"tensor", "shape", "dtype", "scheme", "tile", "original", "estimate", "bits/w"});
  uint64_t total_original = 0, total_estimate = 0, total_elements = 0;
  for (const auto& p : plans) {
    const uint64_t elements = TensorInfo{p.name, p.dtype, p.shape}.num_elements();
    total_original += p.original_bytes;
    total_estimate += p.estimated_bytes;
    total_elements += elements;
    json j;
    j["name"] = p.name;
    j["dtype"] = dtype_name(p.dtype);
    j["shape"] = p.shape;
    j["scheme"] = p.policy.lossy() ? std::string(scheme_name(p.policy.spec.scheme)) : "lossless";
    j["policy"] = policy_to_string(p.policy);
    j["tile_shape"] = {p.tile_rows, p.tile_cols};
    j["original_bytes"] = p.original_bytes;
    j["estimated_bytes"] = p.estimated_bytes;
    j["bits_per_weight"] = p.bits_per_weight;
    tensors.push_back(j);
    table.add({p.name, shape_to_string(p.shape), std::string(dtype_name(p.dtype)), policy_to_string(p.policy),
               std::to_string(p.tile_rows) + "x" + std::to_string(p.tile_cols), human_bytes(double(p.original_bytes)),
               human_bytes(double(p.estimated_bytes)), fixed(p.bits_per_weight, 2)});
  }
  const double bpw = total_elements ? 8.0 * double(total_estimate) / double(total_elements) : 0.0;
  if (args.json) {
    json out;
    out["file"] = args.input;
    out["dry_run"] = true;
    out["estimate"] = "lossless: order-0 entropy of each byte plane; lossy: codes, side data and index before entropy coding";
    out["tensors"] = tensors;
    out["totals"] = {{"tensors", plans.size()}, {"original_bytes", total_original}, {"estimated_bytes", total_estimate},
                     {"bits_per_weight", bpw}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  table.separator();
  table.add({"total", "", "", "", "", human_bytes(double(total_original)), human_bytes(double(total_estimate)), fixed(bpw, 2)});
  std::cout << args.input << ": dry run, nothing written (estimates: lossless = order-0 entropy bound, lossy = before entropy coding)\n";
  table.print(std::cout);
  return 0;
}

}  // namespace

int run_compress(const CompressArgs& args, const GlobalOptions& global) {
  if (path_exists(args.output) && same_file(args.input, args.output))
    throw Error(ErrorCode::kInvalidArgument, args.output + ": output is the input file");
  auto source = open_tensor_source(args.input);
  if (args.dry_run) return dry_run(args, *source);
  Progress progress(global);
  PackOptions options = args.options;
  options.progress = [&](uint64_t done, uint64_t total, const std::string& name) { progress.update(done, total, name); };
  const auto start = std::chrono::steady_clock::now();
  PackReport report = pack_model(*source, args.output, options);
  progress.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (global.verbose)
    for (const auto& t : report.tensors)
      std::cerr << "  " << t.name << ": " << (t.policy.lossy() ? policy_to_string(t.policy) : std::string(filter_name(t.filter))) << ", " << t.original_bytes << " -> " << t.stored_bytes << " bytes\n";
  if (!global.quiet)
    std::cerr << "wpack: " << args.output << ": " << source->tensors().size() << " tensors, "
              << human_bytes(double(report.original_bytes)) << " -> " << human_bytes(double(report.file_bytes)) << " ("
              << fixed(100 * ratio_of(report.file_bytes, report.original_bytes), 2) << "%) in " << fixed(seconds, 2)
              << " s\n";
  return 0;
}

int run_inspect(const InspectArgs& args, const GlobalOptions&) {
  return has_wpk_magic(args.input) ? inspect_wpk(args) : inspect_model(args);
}

int run_unpack(const UnpackArgs& args, const GlobalOptions& global) {
  if (path_exists(args.output) && same_file(args.input, args.output))
    throw Error(ErrorCode::kInvalidArgument, args.output + ": output is the input file");
  auto reader = WpkReader::open(args.input);
  Progress progress(global);
  std::optional<DType> dtype;
  if (!args.dtype.empty()) dtype = parse_dtype(args.dtype);
  unpack_to_safetensors(*reader, args.output, args.overwrite, args.threads,
                        [&](uint64_t done, uint64_t total, const std::string& name) { progress.update(done, total, name); },
                        dtype);
  progress.finish();
  if (!global.quiet) std::cerr << "wpack: " << args.output << ": " << reader->tensors().size() << " tensors written\n";
  return 0;
}

int run_verify(const VerifyArgs& args, const GlobalOptions& global) {
  auto reader = WpkReader::open(args.input);
  std::unique_ptr<TensorSource> against;
  if (!args.against.empty()) against = open_tensor_source(args.against);
  VerifyReport report = verify_cpu(*reader, against.get(), args.threads,
                                   args.max_error >= 0 ? args.max_error : std::numeric_limits<double>::infinity());
  std::string gpu_note;
  if (args.device == "cuda") gpu_note = "GPU checks did not run: this wpack build has no CUDA verify path yet";

  if (args.json) {
    json out;
    out["file"] = args.input;
    out["device"] = args.device;
    out["gpu_checks_ran"] = false;
    if (!gpu_note.empty()) out["gpu_note"] = gpu_note;
    json tensors = json::array();
    for (const auto& t : report.tensors) {
      json j;
      j["name"] = t.name;
      j["decoded"] = t.decoded;
      if (t.lossy) {
        j["lossy"] = true;
        j["recorded_rel_error"] = t.recorded_rel_error;
        if (t.compared) j["rel_error"] = t.rel_error;
      } else if (t.compared) {
        j["bit_exact"] = t.bit_exact;
        j["mismatched_elements"] = t.mismatched_elements;
      }
      j["ok"] = t.error.empty();
      if (!t.error.empty()) j["error"] = t.error;
      tensors.push_back(j);
    }
    out["tensors"] = tensors;
    out["errors"] = report.errors;
    out["tiles_checked"] = report.tiles_checked;
    out["ok"] = report.ok();
    std::cout << out.dump(2) << "\n";
  } else {
    for (const auto& t : report.tensors)
      if (!t.error.empty()) std::cerr << "wpack: " << t.error << "\n";
    for (const auto& e : report.errors) std::cerr << "wpack: " << e << "\n";
    if (!gpu_note.empty() && !global.quiet) std::cerr << "wpack: " << gpu_note << "\n";
    if (global.verbose)
      for (const auto& t : report.tensors)
        std::cout << "  " << (t.error.empty() ? "ok  " : "FAIL") << "  " << t.name << "\n";
    if (!global.quiet || !report.ok()) {
      size_t bad = 0;
      for (const auto& t : report.tensors) bad += !t.decoded;
      std::cout << args.input << ": " << (report.ok() ? "OK" : "FAILED") << ": " << report.tensors.size()
                << " tensors, " << report.tiles_checked << " tiles, checksums and decode "
                << (bad ? std::to_string(bad) + " bad" : "ok");
      size_t lossy = 0;
      for (const auto& t : report.tensors) lossy += t.lossy;
      if (against && lossy == 0) std::cout << ", " << (report.ok() ? "bit-exact against " : "compared with ") << args.against;
      if (against && lossy > 0)
        std::cout << ", compared with " << args.against << " (lossless bit-exact, " << lossy
                  << " lossy within their recorded rel_error" << (args.max_error >= 0 ? " and --max-error" : "") << ")";
      std::cout << "\n";
    }
  }
  return report.ok() ? 0 : 1;
}

}  // namespace wpack::cli
