#include "cli/commands.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/error.h"
#include "formats/io.h"
#include "formats/tensor.h"
#include "formats/wpk.h"
#include "packer/codec.h"
#include "packer/estimate.h"
#include "packer/filters.h"
#include "packer/quant_tile.h"
#include "packer/unpack.h"
#include "verify/verify.h"
#include "verify/verify_gpu.h"

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

bool is_wpk_file(const std::string& path) {
  const auto file = MappedFile::open(path);  // regular files only: reading a FIFO would wait for a writer
  return has_wpk_magic({file->data(), static_cast<size_t>(file->size())});
}

json json_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Packed over original bytes, and packed bits per element: NaN (JSON null, "-" in a table) where
// there is nothing to divide by: an empty tensor still takes its record's bytes, and 0.0 would
// read as perfect compression.
double ratio_of(double packed, uint64_t original) { return original ? packed / double(original) : std::nan(""); }
double bits_per_weight(double packed, uint64_t elements) { return elements ? 8.0 * packed / double(elements) : std::nan(""); }
std::string percent_text(double ratio, int digits) { return std::isfinite(ratio) ? fixed(100 * ratio, digits) + "%" : "-"; }
std::string bits_text(double bits) { return std::isfinite(bits) ? fixed(bits, 2) : "-"; }

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

// --json output: paths and names that are not UTF-8 (paths may hold any byte) are written with
// U+FFFD in place of their bad bytes instead of failing the dump.
void print_json(const json& out) { std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n"; }

std::string tile_layout_of(const WpkReader& r, const WpkTensor& t) {
  if (t.scheme == 0) return tile_filter_of(r, t);
  uint64_t sparse = 0;
  for (uint64_t i = 0; i < t.tile_count; ++i) sparse += r.tiles()[t.first_tile + i].filter == kFilterQuantSparse;
  if (sparse == 0) return "quant_dense";
  if (sparse == t.tile_count) return "quant_sparse";
  return "quant_mixed";
}

// Scheme details of a lossy tensor for inspect --json; throws (naming file and tensor) when its
// scheme or params do not parse.
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
  } catch (const Error& e) {  // a file whose params break the format's rules is refused, as decoding would
    throw Error(e.code(), r.path() + ": tensor '" + t.name + "': " + e.what());
  }
  return j;
}

std::string scheme_label(const json& details, const std::string& scheme) {
  std::string s = scheme;
  if (details.contains("group")) s += " g" + std::to_string(details["group"].get<uint32_t>());
  if (details.contains("prune")) s += details["prune"].is_string() ? " " + details["prune"].get<std::string>() : " pruned";
  return s;
}

std::string sci(double v, int digits) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return "inf";
  if (v == 0) return "0";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*e", digits, v);
  return buf;
}

// An error figure in inspect's table, in scientific notation (a fixed 5 decimals showed the 1e-9
// errors of tiny weights as 0.00000); NaN (a tensor holding NaN) as "nan".
std::string error_text(double v) { return std::isnan(v) ? "nan" : sci(v, 2); }

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
    j["matrix"] = {t.rows(), t.cols()};
    j["tile_shape"] = {t.tile_rows, t.tile_cols};
    j["original_bytes"] = original;
    j["packed_bytes"] = packed;
    j["ratio"] = json_or_null(ratio_of(packed, original));
    j["bits_per_weight"] = json_or_null(bits_per_weight(packed, t.num_elements()));
    j["rel_error"] = t.metrics.rel_error;
    j["max_abs_error"] = t.metrics.max_abs_error;
    j["snr_db"] = json_or_null(t.metrics.snr_db);
    j["sparsity"] = t.metrics.sparsity;
    tensors.push_back(j);
    std::vector<std::string> row = {one_line(t.name), shape_to_string(t.shape), std::string(dtype_name(t.dtype)),
                                    t.scheme ? scheme_label(details, scheme_of(t.scheme)) : scheme_of(t.scheme),
                                    j["codec"].get<std::string>(), j["filter"].get<std::string>(), std::to_string(t.tile_count),
                                    human_bytes(double(original)), human_bytes(double(packed)),
                                    percent_text(ratio_of(packed, original), 1), bits_text(bits_per_weight(packed, t.num_elements()))};
    if (any_lossy) {
      if (t.scheme != 0)
        row.insert(row.end(), {error_text(t.metrics.rel_error), error_text(t.metrics.max_abs_error),
                               std::isfinite(t.metrics.snr_db) ? fixed(t.metrics.snr_db, 1) : "inf",
                               fixed(t.metrics.sparsity, 3)});
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
  totals["ratio"] = json_or_null(ratio_of(file_bytes, total_original));
  totals["bits_per_weight"] = json_or_null(bits_per_weight(file_bytes, total_elements));
  if (args.json) {
    json out;
    out["file"] = args.input;
    out["format_version"] = reader->format_version();
    out["tensors"] = tensors;
    out["totals"] = totals;
    print_json(out);
    return 0;
  }
  table.separator();
  std::vector<std::string> total_row = {"total (whole file)", "", "", "", "", "", std::to_string(reader->tiles().size()),
                                        human_bytes(double(total_original)), human_bytes(double(file_bytes)),
                                        percent_text(ratio_of(file_bytes, total_original), 1),
                                        bits_text(bits_per_weight(file_bytes, total_elements))};
  if (any_lossy) total_row.insert(total_row.end(), {"", "", "", ""});
  table.add(total_row);
  std::cout << args.input << ": " << reader->tensors().size() << " tensors, " << reader->tiles().size()
            << " tiles, format v" << reader->format_version() << "\n";
  table.print(std::cout);
  return 0;
}

// One line naming what the input holds but does not give as tensors (an HDF5 file's string or
// compound datasets, its soft and external links, a dataset's second names: the first three), and
// one when it gives no tensor at all.
void note_skipped(const TensorSource& source, std::ostream& err) {
  const std::vector<std::string> skipped = source.skipped();
  if (!skipped.empty()) {
    err << "wpack: note: " << one_line(source.path()) << ": " << skipped.size() << " item"
        << (skipped.size() == 1 ? "" : "s") << " not packed: ";
    for (size_t i = 0; i < std::min<size_t>(3, skipped.size()); ++i) err << (i ? ", " : "") << one_line(skipped[i]);
    err << (skipped.size() > 3 ? ", ..." : "") << "\n";
  }
  if (source.tensors().empty()) err << "wpack: warning: " << one_line(source.path()) << ": no tensors to pack\n";
}

int inspect_model(const InspectArgs& args, const GlobalOptions& global) {
  auto source = open_tensor_source(args.input);
  json tensors = json::array();
  Table table({"tensor", "shape", "dtype", "original", "estimate", "ratio", "bits/w"});
  double total_packed = 0;
  uint64_t total_original = 0, total_elements = 0;
  for (size_t i = 0; i < source->tensors().size(); ++i) {
    const TensorInfo& info = source->tensors()[i];
    check_tensor_packable(info, source->path());  // an estimate for what compress would refuse: none
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
    const double ratio = ratio_of(estimate, original), bits = bits_per_weight(estimate, info.num_elements());
    j["ratio"] = json_or_null(ratio);
    j["bits_per_weight"] = json_or_null(bits);
    tensors.push_back(j);
    table.add({info.name, shape_to_string(info.shape), std::string(dtype_name(info.dtype)), human_bytes(double(original)),
               human_bytes(estimate), percent_text(ratio, 1), bits_text(bits)});
  }
  json totals;
  totals["tensors"] = source->tensors().size();
  totals["elements"] = total_elements;
  totals["original_bytes"] = total_original;
  totals["estimated_bytes"] = static_cast<uint64_t>(std::ceil(total_packed));
  const double total_ratio = ratio_of(total_packed, total_original), total_bits = bits_per_weight(total_packed, total_elements);
  totals["ratio"] = json_or_null(total_ratio);
  totals["bits_per_weight"] = json_or_null(total_bits);
  if (args.json) {
    json out;
    out["file"] = args.input;
    out["dry_run"] = true;
    out["estimate"] = "order-0 entropy of each byte plane (lossless bound)";
    out["tensors"] = tensors;
    out["totals"] = totals;
    out["skipped"] = source->skipped();  // what the file holds but does not give as tensors, and why
    print_json(out);
    return 0;
  }
  if (!global.quiet) note_skipped(*source, std::cerr);
  table.separator();
  table.add({"total", "", "", human_bytes(double(total_original)), human_bytes(total_packed),
             percent_text(total_ratio, 1), bits_text(total_bits)});
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
    const MatrixView view = matrix_view(p.shape, p.row_dims);
    j["matrix"] = {view.rows, view.cols};
    j["tile_shape"] = {p.tile_rows, p.tile_cols};
    j["original_bytes"] = p.original_bytes;
    j["estimated_bytes"] = p.estimated_bytes;
    j["ratio"] = json_or_null(ratio_of(double(p.estimated_bytes), p.original_bytes));  // as inspect's
    const double bits = bits_per_weight(double(p.estimated_bytes), elements);
    j["bits_per_weight"] = json_or_null(bits);
    tensors.push_back(j);
    table.add({p.name, shape_to_string(p.shape), std::string(dtype_name(p.dtype)), policy_to_string(p.policy),
               std::to_string(p.tile_rows) + "x" + std::to_string(p.tile_cols), human_bytes(double(p.original_bytes)),
               human_bytes(double(p.estimated_bytes)), bits_text(bits)});
  }
  const double bpw = bits_per_weight(double(total_estimate), total_elements);
  if (args.json) {
    json out;
    out["file"] = args.input;
    out["dry_run"] = true;
    out["estimate"] = "lossless: order-0 entropy of each byte plane; lossy: codes, side data and index before entropy coding";
    out["tensors"] = tensors;
    out["totals"] = {{"tensors", plans.size()},
                     {"elements", total_elements},
                     {"original_bytes", total_original},
                     {"estimated_bytes", total_estimate},
                     {"ratio", json_or_null(ratio_of(double(total_estimate), total_original))},
                     {"bits_per_weight", json_or_null(bpw)}};
    print_json(out);
    return 0;
  }
  table.separator();
  table.add({"total", "", "", "", "", human_bytes(double(total_original)), human_bytes(double(total_estimate)), bits_text(bpw)});
  std::cout << args.input << ": dry run, nothing written (estimates: lossless = order-0 entropy bound, lossy = before entropy coding)\n";
  table.print(std::cout);
  return 0;
}


// A warning line per lossy tensor whose scales or LUT values hit fp16's limits: its weights lost
// range (inspect shows the rel_error too, but nothing else says why). LUT values that rounded to 0
// are not counted by fp16_limits (a table holds zeros for pruned weights too): a tensor whose
// weights all decode to about 0 (rel_error ~1) is named by that.
void warn_fp16_limits(const PackReport& report, std::ostream& err) {
  for (const PackedTensor& t : report.tensors) {
    const Fp16Limits& l = t.fp16_limits;
    const bool lost = t.metrics.rel_error >= 0.999;
    if (!t.policy.lossy() || (!l.any() && !lost)) continue;
    const bool lut = scheme_is_lut(t.policy.spec.scheme);
    err << "wpack: warning: tensor '" << one_line(t.name) << "': ";
    if (!l.any()) err << "its weights decode to about 0 (values below fp16's smallest, 2^-24, round to 0)";
    if (l.saturated)
      err << l.saturated << " of " << l.total << (lut ? " table values" : " scales") << " at fp16's largest, 65504 (weights clipped)";
    if (l.saturated && l.underflowed) err << ", ";
    if (l.underflowed) err << l.underflowed << " of " << l.total << " scales at fp16's smallest, 2^-24 (weights too small)";
    err << "; rel_error " << fixed(t.metrics.rel_error, 4) << "; --keep packs it lossless\n";
  }
}

// A forced --filter floatplanes packs lossless tensors that are not floats (integers, FP8) with
// byteshuffle, the same planes without the rotation (docs/FORMAT.md): said once, naming the first.
void note_not_float_planes(const PackReport& report, const PackOptions& options, std::ostream& err) {
  if (options.filter != Filter::kFloatPlanes) return;
  size_t count = 0;
  const PackedTensor* first = nullptr;
  for (const auto& t : report.tensors)
    if (!t.policy.lossy() && t.filter == Filter::kByteShuffle) {
      if (!first) first = &t;
      ++count;
    }
  if (count == 0) return;
  err << "wpack: note: --filter floatplanes: " << count << " tensor" << (count == 1 ? " is" : "s are")
      << " not floating point ('" << one_line(first->name) << "'" << (count > 1 ? ", ..." : "")
      << "): byteshuffle instead, the same byte planes without the rotation\n";
}

}  // namespace

int run_compress(const CompressArgs& args, const GlobalOptions& global) {
  auto source = open_tensor_source(args.input);
  if (path_exists(args.output))
    for (const std::string& file : source->files())  // the input, and a sharded model's shards
      if (same_file(file, args.output))
        throw Error(ErrorCode::kInvalidArgument, args.output + ": output is the input file " + file);
  if (!global.quiet) {
    note_skipped(*source, std::cerr);
    for (const std::string& pattern : unmatched_patterns(*source, args.options))
      std::cerr << "wpack: warning: " << one_line(pattern) << " matches no tensor name\n";
  }
  if (args.dry_run) return dry_run(args, *source);
  Progress progress(global);
  PackOptions options = args.options;
  options.progress = [&](uint64_t done, uint64_t total, const std::string& name) { progress.update(done, total, name); };
  const auto start = std::chrono::steady_clock::now();
  PackReport report = pack_model(*source, args.output, options);
  progress.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!global.quiet) {
    warn_fp16_limits(report, std::cerr);
    note_not_float_planes(report, args.options, std::cerr);
  }
  if (global.verbose)
    for (const auto& t : report.tensors)
      std::cerr << "  " << t.name << ": " << (t.policy.lossy() ? policy_to_string(t.policy) : std::string(filter_name(t.filter))) << ", " << t.original_bytes << " -> " << t.stored_bytes << " bytes\n";
  if (!global.quiet)
    std::cerr << "wpack: " << args.output << ": " << source->tensors().size() << " tensors, "
              << human_bytes(double(report.original_bytes)) << " -> " << human_bytes(double(report.file_bytes)) << " ("
              << percent_text(ratio_of(report.file_bytes, report.original_bytes), 2) << ") in " << fixed(seconds, 2)
              << " s\n";
  return 0;
}

int run_inspect(const InspectArgs& args, const GlobalOptions& global) {
  // A .wpk by its magic, or by its name (one whose magic is damaged gets the .wpk reader's error)
  return is_wpk_file(args.input) || args.input.ends_with(".wpk") ? inspect_wpk(args) : inspect_model(args, global);
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

namespace {

// ---- verify --device cuda: the GPU report as JSON and as a table ----

json gpu_device_json(const GpuVerifyReport& gpu) {
  const gpu::GpuDeviceInfo& d = gpu.device;
  json j;
  j["index"] = d.index;
  j["name"] = d.name;
  j["sm_count"] = d.sm_count;
  j["compute_capability"] = std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor);
  j["l2_bytes"] = d.l2_bytes;
  j["memory_bytes"] = d.memory_bytes;
  j["driver_version"] = d.driver_version;
  j["runtime_version"] = d.runtime_version;
  return j;
}

json gpu_batch_json(const GpuBatchCheck& b) {
  json j;
  j["batch"] = b.batch;
  if (!b.ran) {
    j["skipped_reason"] = b.skipped;
    return j;
  }
  j["matmul_rel_error"] = json_or_null(b.matmul_rel_error);
  j["matmul_output_error"] = json_or_null(b.matmul_output_error);
  j["kernel"] = b.kernel_path;
  if (b.timed) {
    j["kernel_time_us"] = b.kernel.median_us;
    j["kernel_time_min_us"] = b.kernel.min_us;
    j["kernel_time_max_us"] = b.kernel.max_us;
    // null without the baseline (cuBLAS not loaded: the report's cublas_error)
    j["cublas_bf16_time_us"] = b.baseline_timed ? json(b.cublas.median_us) : json(nullptr);
    j["cublas_bf16_time_min_us"] = b.baseline_timed ? json(b.cublas.min_us) : json(nullptr);
    j["cublas_bf16_time_max_us"] = b.baseline_timed ? json(b.cublas.max_us) : json(nullptr);
    j["speedup"] = b.baseline_timed ? json(b.speedup) : json(nullptr);
    j["packed_gb_per_s"] = b.packed_gb_per_s;
    j["copy_bw_percent"] = b.copy_bw_percent;
    j["cublas_rel_error"] = json_or_null(b.cublas_rel_error);
  }
  return j;
}

// The GPU fields of one tensor record (merged into the CPU record of the same tensor).
void add_gpu_tensor_json(const GpuTensorCheck& t, json& j) {
  j["scheme"] = t.scheme;
  j["scheme_label"] = t.scheme_label;
  j["packed_bytes"] = t.packed_bytes;
  j["bits_per_weight"] = t.bits_per_weight;
  j["gpu_checked"] = t.gpu_checked;
  if (!t.skipped.empty()) j["gpu_skipped_reason"] = t.skipped;
  j["decode_bit_exact"] = t.gpu_checked ? json(t.decode_bit_exact) : json(nullptr);
  if (t.gpu_checked && !t.decode_bit_exact) j["decode_mismatched_elements"] = t.decode_mismatches;
  if (t.compared && !j.contains("rel_error")) j["rel_error"] = json_or_null(t.rel_error);  // the CPU's, where it has one
  if (!t.cublas_weights.empty()) j["cublas_weights"] = t.cublas_weights;
  json batches = json::array();
  for (const auto& b : t.batches) batches.push_back(gpu_batch_json(b));
  j["batches"] = batches;
  if (!t.error.empty()) j["gpu_error"] = t.error;
}

json gpu_totals_json(const GpuVerifyReport& gpu) {
  json totals = json::array();
  for (const auto& t : gpu.totals) {
    json j;
    j["batch"] = t.batch;
    j["tensors"] = t.tensors;
    j["packed_bytes"] = t.packed_bytes;
    j["kernel_time_us"] = t.kernel_us;
    j["cublas_bf16_time_us"] = t.baseline_timed ? json(t.cublas_us) : json(nullptr);
    j["speedup"] = t.baseline_timed ? json(t.speedup) : json(nullptr);
    j["packed_gb_per_s"] = t.packed_gb_per_s;
    j["copy_bw_percent"] = t.copy_bw_percent;
    j["max_matmul_rel_error"] = t.max_matmul_rel_error;
    totals.push_back(j);
  }
  return totals;
}


void print_gpu_table(const GpuVerifyReport& gpu, std::ostream& out) {
  const gpu::GpuDeviceInfo& d = gpu.device;
  out << "GPU " << d.index << ": " << d.name << " (" << d.sm_count << " SMs, L2 " << human_bytes(double(d.l2_bytes)) << ", "
      << human_bytes(double(d.memory_bytes)) << "), device copy " << fixed(gpu.copy.gb_per_s, 0)
      << " GB/s ((read + write) / time)\n";
  if (gpu.timing.timed_runs > 0)
    out << "timing: median of " << gpu.timing.timed_runs << " runs after " << gpu.timing.warmup_runs
        << " warm-up, CUDA events, L2 flushed before each run (" << human_bytes(double(gpu.timing.l2_flush_bytes))
        << " read), fresh random BF16 activations; "
        << (gpu.baseline_not_run.empty() ? "cuBLAS: cublasGemmEx BF16 in, FP32 compute and out"
                                         : "baseline not timed (" + gpu.baseline_not_run + ")")
        << "\n";
  Table table({"tensor", "scheme", "bits/w", "decode_bit_exact", "rel_error", "batch", "matmul_rel_error", "kernel_us",
               "cuBLAS_us", "speedup", "GB/s", "%copy", "kernel", "note"});
  for (const auto& t : gpu.tensors) {
    const std::string exact = t.gpu_checked ? (t.decode_bit_exact ? "yes" : "no") : "-";
    const std::string rel = t.compared ? sci(t.rel_error, 2) : "-";
    std::vector<std::string> head = {t.name, t.scheme_label, fixed(t.bits_per_weight, 2), exact, rel};
    std::string note = !t.error.empty() ? "FAILED" : t.skipped;
    if (t.batches.empty()) {
      table.add({head[0], head[1], head[2], head[3], head[4], "-", "-", "-", "-", "-", "-", "-", "-", note});
      continue;
    }
    for (const auto& b : t.batches) {
      std::vector<std::string> row = head;
      row.push_back(std::to_string(b.batch));
      if (!b.ran) {
        row.insert(row.end(), {"-", "-", "-", "-", "-", "-", "-", note.empty() ? b.skipped : note});
      } else if (!b.timed) {
        row.insert(row.end(), {sci(b.matmul_rel_error, 1), "-", "-", "-", "-", "-", b.kernel_path, note});
      } else {
        row.insert(row.end(), {sci(b.matmul_rel_error, 1), fixed(b.kernel.median_us, 1),
                               b.baseline_timed ? fixed(b.cublas.median_us, 1) : "-",
                               b.baseline_timed ? fixed(b.speedup, 2) + "x" : "-", fixed(b.packed_gb_per_s, 0),
                               fixed(b.copy_bw_percent, 1) + "%",
                               b.kernel_path, note});
      }
      table.add(row);
    }
  }
  table.separator();
  for (const auto& tot : gpu.totals) {
    const bool any = tot.tensors > 0;
    table.add({"total (" + std::to_string(tot.tensors) + " timed)", "", "", "", "", std::to_string(tot.batch),
               std::isnan(tot.max_matmul_rel_error) ? "nan" : sci(tot.max_matmul_rel_error, 1),
               any ? fixed(tot.kernel_us, 1) : "-",
               any && tot.baseline_timed ? fixed(tot.cublas_us, 1) : "-",
               any && tot.baseline_timed ? fixed(tot.speedup, 2) + "x" : "-", any ? fixed(tot.packed_gb_per_s, 0) : "-",
               any ? fixed(tot.copy_bw_percent, 1) + "%" : "-", "", ""});
  }
  table.print(out);
  // Quantized tensors on the rANS or the generic kernel are 10-190x slower than on the bulk-copy
  // GEMV (H200): say why and what to do
  uint64_t slow = 0;
  for (const auto& t : gpu.tensors)
    slow += t.scheme_code != 0 && std::any_of(t.batches.begin(), t.batches.end(), [](const GpuBatchCheck& b) {
              return is_slow_lossy_gemv_kernel(b.kernel_path);
            });
  if (slow > 0)
    out << "note: " << slow << " quantized tensor" << (slow == 1 ? "" : "s")
        << " ran a slow kernel (rANS-coded tiles, and sparse tiles of lut3 and of LUTs without a 0 entry: "
           "warp-per-tile; shapes the fast kernels do not take: generic); `wpack compress --codec none` stores "
           "quantized tiles raw, for the fast kernels\n";
  // Lossless BF16 tensors run the bulk-copy GEMV only when packed with exp4 (other dtypes always
  // take the block-per-tile kernel: nothing to advise)
  uint64_t slow_lossless = 0;
  for (const auto& t : gpu.tensors)
    slow_lossless += t.scheme_code == 0 && t.dtype == DType::BF16 &&
                     std::any_of(t.batches.begin(), t.batches.end(), [](const GpuBatchCheck& b) {
                       return is_slow_lossless_gemv_kernel(b.kernel_path);
                     });
  if (slow_lossless > 0)
    out << "note: " << slow_lossless << " lossless BF16 tensor" << (slow_lossless == 1 ? "" : "s")
        << " ran a slow kernel (rANS-coded or raw tiles: warp- or block-per-tile); `wpack compress --codec exp4` "
           "packs BF16 weights to 12 bits each for the bulk-copy GEMV\n";
}

}  // namespace

namespace {

int verify_file(const VerifyArgs& args, const GlobalOptions& global) {
  auto reader = WpkReader::open(args.input);
  std::unique_ptr<TensorSource> against;
  if (!args.against.empty()) against = open_tensor_source(args.against);
  const double max_rel_error = args.max_error >= 0 ? args.max_error : std::numeric_limits<double>::infinity();
  // Integrity and the CPU reference (every checksum, every tile, --against), and with --device cuda
  // the GPU checks of each tensor right after its CPU checks, on the CPU's decode of it (one decode
  // per tensor). An exception of the GPU side (bad options, a device failure) is rethrown only once
  // the CPU checks are done: the CPU's own exceptions come first, as when the GPU ran after them.
  VerifyReport report;
  std::optional<GpuVerifyReport> gpu;
  std::string gpu_note;
  std::string gpu_setup_error;  // --device cuda: the device failed before the first tensor
  if (args.device == "cuda") {
    GpuVerifyOptions options;
    options.batches = args.batches;
    options.threads = args.threads;
    options.max_rel_error = max_rel_error;
    Progress progress(global);
    options.progress = [&](uint64_t done, uint64_t total, const std::string& name) { progress.update(done, total, name); };
    std::optional<GpuVerifier> verifier;
    std::exception_ptr gpu_failure;
    try {
      verifier.emplace(*reader, against.get(), options);
    } catch (const Error& e) {
      // The device failed before the first tensor (its copy test, memory, cuBLAS): the CPU checks
      // still run and report; the GPU checks did not, and the verify fails.
      if (e.code() == ErrorCode::kInvalidArgument) throw;
      gpu_setup_error = args.input + ": GPU checks did not run: the device failed: " + e.what();
    } catch (...) {
      gpu_failure = std::current_exception();
    }
    // Integrity first: no tensor's GPU work on a file with a damaged tile (the CPU checks report
    // each one). Made only where the GPU checks run: it reads the whole file once more.
    if (verifier && verifier->ran())
      if (const std::vector<BadChecksum> damaged = bad_checksums(*reader, args.threads); !damaged.empty()) {
        verifier.reset();
        gpu_note = "GPU checks did not run: " + std::to_string(damaged.size()) + " tensor" +
                   (damaged.size() == 1 ? " has a tile" : "s have tiles") + " whose checksum fails";
      }
    TensorDecodedHook on_decoded;  // none when the GPU checks do not run: the CPU checks alone
    if (verifier && verifier->ran())
      on_decoded = [&](const DecodedTensor& decoded) {
        if (gpu_failure) return;  // the GPU checks stopped at an exception
        try {
          verifier->check_tensor(decoded);
        } catch (...) {
          gpu_failure = std::current_exception();
        }
      };
    report = verify_cpu(*reader, against.get(), args.threads, max_rel_error, on_decoded);
    if (gpu_failure) std::rethrow_exception(gpu_failure);
    if (verifier) {
      gpu = verifier->finish();
      if (!gpu->ran) gpu_note = "GPU checks did not run: " + gpu->not_run_reason + "; the result is the CPU checks'";
    }
    progress.finish();
  } else {
    report = verify_cpu(*reader, against.get(), args.threads, max_rel_error);
  }
  const bool gpu_ran = gpu && gpu->ran;
  const bool ok = report.ok() && (!gpu || gpu->ok()) && gpu_setup_error.empty();

  // A line on stderr for each failure, with --json too (its report holds them as well).
  for (const auto& t : report.tensors)
    if (!t.error.empty()) std::cerr << "wpack: " << t.error << "\n";
  for (const auto& e : report.errors) std::cerr << "wpack: " << e << "\n";
  if (gpu_ran)  // a tensor the CPU checks failed is reported once, by them, with its products' failure
    for (size_t i = 0; i < gpu->tensors.size(); ++i) {
      const GpuTensorCheck& g = gpu->tensors[i];
      if (g.error.empty()) continue;
      const bool cpu_failed = i < report.tensors.size() && !report.tensors[i].error.empty();
      if (!cpu_failed) std::cerr << "wpack: " << g.error << "\n";
      else if (!g.product_error.empty()) std::cerr << "wpack: " << g.product_error << "\n";
    }
  if (!gpu_note.empty() && !global.quiet && !args.json) std::cerr << "wpack: " << gpu_note << "\n";  // --json: gpu_note
  if (!gpu_setup_error.empty()) std::cerr << "wpack: " << gpu_setup_error << "\n";

  if (args.json) {
    json out;
    out["file"] = args.input;
    out["device"] = args.device;
    out["gpu_checks_ran"] = gpu_ran;
    if (!gpu_note.empty()) out["gpu_note"] = gpu_note;
    if (!gpu_setup_error.empty()) out["gpu_error"] = gpu_setup_error;
    if (gpu_ran) {
      out["gpu"] = gpu_device_json(*gpu);
      if (!gpu->baseline_not_run.empty()) out["cublas_error"] = gpu->baseline_not_run;
      out["copy_bandwidth"] = {{"gb_per_s", gpu->copy.gb_per_s},
                               {"bytes", gpu->copy.bytes},
                               {"median_us", gpu->copy.median_us},
                               {"method", "device-to-device cudaMemcpyAsync, median of " + std::to_string(gpu::kMinTimedRuns)},
                               {"convention", "(bytes read + bytes written) / time, 1 GB = 1e9 bytes"}};
      out["timing"] = {{"warmup_runs", gpu->timing.warmup_runs},
                       {"timed_runs", gpu->timing.timed_runs},
                       {"statistic", "median"},
                       {"l2_flush_bytes", gpu->timing.l2_flush_bytes},
                       {"method", "CUDA events around each call; before each call a kernel reads l2_flush_bytes of scratch "
                                  "so that the call reads its weights from HBM; a fresh random BF16 activation set per call"}};
      out["batches"] = args.batches;
    }
    json tensors = json::array();
    for (size_t i = 0; i < report.tensors.size(); ++i) {
      const auto& t = report.tensors[i];
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
      // verify_cpu and verify_gpu both walk the file's tensors in order.
      const GpuTensorCheck* g = gpu_ran && i < gpu->tensors.size() && gpu->tensors[i].name == t.name ? &gpu->tensors[i] : nullptr;
      if (g) add_gpu_tensor_json(*g, j);
      const std::string error = !t.error.empty() ? t.error : g ? g->error : std::string();
      j["ok"] = error.empty();
      if (!error.empty()) j["error"] = error;
      tensors.push_back(j);
    }
    out["tensors"] = tensors;
    if (gpu_ran) out["totals"] = gpu_totals_json(*gpu);
    out["errors"] = report.errors;
    out["tiles_checked"] = report.tiles_checked;
    out["cpu_ok"] = report.ok();
    if (gpu_ran) out["gpu_ok"] = gpu->ok();
    else if (!gpu_setup_error.empty()) out["gpu_ok"] = false;
    out["ok"] = ok;
    print_json(out);
  } else {
    if (global.verbose)
      for (const auto& t : report.tensors)
        std::cout << "  " << (t.error.empty() ? "ok  " : "FAIL") << "  " << t.name << "\n";
    if (gpu_ran && !global.quiet) print_gpu_table(*gpu, std::cout);
    if (!global.quiet || !ok) {
      size_t bad = 0;
      for (const auto& t : report.tensors) bad += !t.decoded;
      std::cout << args.input << ": " << (report.ok() ? "OK" : "FAILED") << ": " << report.tensors.size()
                << " tensors, " << report.tiles_checked << " tiles, checksums and decode "
                << (bad ? std::to_string(bad) + " bad" : "ok");
      size_t lossy = 0;
      for (const auto& t : report.tensors) lossy += t.lossy;
      if (against && lossy == 0) std::cout << ", " << (report.ok() ? "bit-exact against " : "compared with ") << args.against;
      if (lossy > 0 && (against || args.max_error >= 0)) {  // without a source: the recorded rel_error
        if (against) std::cout << ", compared with " << args.against;
        size_t failed = 0;
        for (const auto& t : report.tensors) failed += !t.error.empty();
        if (!report.ok())
          std::cout << " (" << failed << " of " << report.tensors.size() << " tensors failed)";
        else if (against)
          std::cout << " (lossless bit-exact, " << lossy << " lossy within their recorded rel_error"
                    << (args.max_error >= 0 ? " and --max-error" : "") << ")";
        else
          std::cout << ", " << lossy << " lossy within --max-error (their recorded rel_error)";
      }
      std::cout << "\n";
      if (gpu_ran) {
        size_t checked = 0, skipped = 0, failed = 0;
        for (const auto& t : gpu->tensors) {
          checked += t.gpu_checked && t.error.empty();
          skipped += !t.skipped.empty();
          failed += !t.error.empty();
        }
        std::cout << args.input << ": GPU " << (gpu->ok() ? "OK" : "FAILED") << ": " << checked
                  << " tensors decoded bit-exact on " << gpu->device.name << " with matmul_rel_error <= "
                  << sci(kMatmulRelTolerance, 0) << ", " << skipped << " not GPU-decodable (see note), " << failed
                  << " failed\n";
      }
    }
  }
  return ok ? 0 : 1;
}

}  // namespace

int run_verify(const VerifyArgs& args, const GlobalOptions& global) {
  try {
    return verify_file(args, global);
  } catch (const Error& e) {
    // --json: a report even when the file (or --against) cannot be checked at all, so that a
    // script reading it finds "ok": false and why; the error line and exit code as without --json.
    if (args.json && e.code() != ErrorCode::kInvalidArgument)
      print_json(json{{"file", args.input}, {"device", args.device}, {"ok", false}, {"errors", json::array({e.what()})}});
    throw;
  }
}

}  // namespace wpack::cli
