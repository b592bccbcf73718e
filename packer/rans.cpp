// Interleaved rANS plane codec: encoder, table quantisation and the scalar reference decoder.
// The format is specified in docs/FORMAT-rans.md; section names below refer to it.
#include "packer/rans.h"

#include <algorithm>  // std::min
#include <array>
#include <bit>        // std::bit_width, std::popcount
#include <cmath>      // std::log2 for the quantiser's cost model (encoder only)
#include <cstring>    // std::memcpy
#include <memory>     // std::make_unique_for_overwrite: the encoder's word buffer, not zeroed
#include <string>

#include "formats/error.h"  // Error, ErrorCode
#include "packer/detail/rans_decode.h"  // the decoder's scalar path, for tests
#include "packer/detail/rans_encode.h"  // the encoder's reference and scalar paths, for tests

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>  // the AVX2 main loop (code_main_avx2), compiled with target("avx2") and chosen at run time
#define WPACK_RANS_AVX2 1
#else
#define WPACK_RANS_AVX2 0
#endif

namespace wpack {
namespace {

// ---- format constants (docs/FORMAT-rans.md, "Constants") ----
constexpr uint32_t kStateLowerBits = 16;
constexpr uint32_t kStateLower = uint32_t{1} << kStateLowerBits;  // L: main-phase states live in [L, 2^32)
constexpr uint32_t kWordBits = 16;                                // renormalisation unit
constexpr uint32_t kPrecisionFieldBits = 3;                       // p - 8, values 0..4
constexpr uint32_t kDeltaFieldBits = 2;                           // D: bits of each lane's tail delta
constexpr uint32_t kMaxDeltaBits = (1u << kDeltaFieldBits) - 1;
constexpr uint32_t kTailFieldBits = 6;                            // K0
constexpr uint32_t kMaxTailSymbols = (1u << kTailFieldBits) - 1;  // the encoder's longest tail
constexpr uint32_t kMainLengthBits = 4;  // lane state length field, main-phase lane: bit length - 17
constexpr uint32_t kTailLengthBits = 6;  // lane state length field, all-tail lane: bit length (<= 32)
constexpr uint32_t kMaxUnary = 24;                   // longest zigzag length delta (|delta| <= 12)

enum Mode : uint8_t { kModeRaw = 0, kModeRans = 1, kModeConstant = 2, kModeRansShared = 3 };

[[noreturn]] void corrupt(const std::string& what) { throw Error(ErrorCode::kCorrupt, "rans stream: " + what); }
[[noreturn]] void invalid(const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "rans: " + what); }

void check_symbol_bits(uint32_t symbol_bits) {
  if (symbol_bits != 8 && symbol_bits != 4 && symbol_bits != 3 && symbol_bits != 2)
    invalid("symbol_bits must be 8, 4, 3 or 2, got " + std::to_string(symbol_bits));
}

// ---- packed bit streams ----
void unpack_symbols(std::span<const uint8_t> packed, uint64_t count, uint32_t bits, uint8_t* out) {
  if (bits == 8) {
    if (count) std::memcpy(out, packed.data(), count);
    return;
  }
  const uint32_t mask = (1u << bits) - 1;
  if (bits == 4) {  // two symbols per byte, low nibble first
    for (uint64_t i = 0; i < count / 2; ++i) {
      out[2 * i] = packed[i] & 0x0F;
      out[2 * i + 1] = packed[i] >> 4;
    }
    if (count % 2) out[count - 1] = packed[count / 2] & 0x0F;
    return;
  }
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t bit = i * bits;
    const uint64_t byte = bit >> 3;
    uint32_t v = packed[byte];
    if (byte + 1 < packed.size()) v |= uint32_t{packed[byte + 1]} << 8;
    out[i] = static_cast<uint8_t>((v >> (bit & 7)) & mask);
  }
}

void pack_symbols(const uint8_t* symbols, uint64_t count, uint32_t bits, std::span<uint8_t> out) {
  if (bits == 8) {
    if (count && out.data() != symbols) std::memcpy(out.data(), symbols, count);
    return;
  }
  std::fill(out.begin(), out.end(), uint8_t{0});
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t bit = i * bits;
    const uint64_t byte = bit >> 3;
    const uint32_t v = uint32_t{symbols[i]} << (bit & 7);
    out[byte] |= static_cast<uint8_t>(v);
    if ((bit & 7) + bits > 8) out[byte + 1] |= static_cast<uint8_t>(v >> 8);
  }
}

// ---- LSB-first bit I/O for the table (docs: "Bit packing") ----
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void put(uint32_t value, uint32_t count) {  // count <= 32, value < 2^count
    acc_ |= uint64_t{value} << fill_;
    fill_ += count;
    bits_ += count;
    while (fill_ >= 8) {
      out_.push_back(static_cast<uint8_t>(acc_));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  void gamma(uint32_t v) {  // v >= 1: z zero bits, a one bit, then the low z bits of v
    const uint32_t z = static_cast<uint32_t>(std::bit_width(v)) - 1;
    put(1u << z, z + 1);
    put(v & ((1u << z) - 1), z);
  }
  void finish() {  // pad with zero bits to a byte
    if (fill_) out_.push_back(static_cast<uint8_t>(acc_));
    acc_ = 0;
    fill_ = 0;
  }
  uint64_t bits() const { return bits_; }

 private:
  std::vector<uint8_t>& out_;
  uint64_t acc_ = 0;
  uint32_t fill_ = 0;
  uint64_t bits_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::span<const uint8_t> in) : in_(in) {}
  uint32_t get(uint32_t count) {  // count <= 32
    if (count > in_.size() * 8 - pos_) corrupt("header runs past the end of the stream");
    if (count == 0) return 0;
    // The (at most 5) bytes holding bits [pos, pos + count), inside the stream by the check above.
    const uint64_t first = pos_ >> 3, last = (pos_ + count - 1) >> 3;
    uint64_t window = 0;
    for (uint64_t b = last + 1; b-- > first;) window = (window << 8) | in_[b];
    pos_ += count;
    return static_cast<uint32_t>((window >> ((pos_ - count) & 7)) & ((uint64_t{1} << count) - 1));
  }
  uint32_t gamma() {
    uint32_t z = 0;
    while (get(1) == 0)
      if (++z > 24) corrupt("table: gamma code too long");
    return (1u << z) | get(z);
  }
  // Checks the zero padding to the next byte; returns the bytes consumed.
  size_t finish() {
    const size_t bytes = (pos_ + 7) / 8;
    if (pos_ < bytes * 8 && get(static_cast<uint32_t>(bytes * 8 - pos_)) != 0) corrupt("non-zero padding bits");
    return bytes;
  }

 private:
  std::span<const uint8_t> in_;
  uint64_t pos_ = 0;
};

// ---- the frequency table (docs: "Frequency table") ----
struct Model {
  uint32_t bits = 8;
  uint32_t precision = 12;
  std::array<uint32_t, 256> freq{};  // 0 = absent
  std::array<uint32_t, 256> cum{};
  void finish_cum() {
    uint32_t c = 0;
    for (uint32_t s = 0; s < (1u << bits); ++s) {
      cum[s] = c;
      c += freq[s];
    }
  }
};

// Counts the bits a BitWriter would write (the precision estimate needs only the table's size).
class BitCounter {
 public:
  void put(uint32_t, uint32_t count) { bits_ += count; }
  void gamma(uint32_t v) { bits_ += 2 * (static_cast<uint32_t>(std::bit_width(v)) - 1) + 1; }
  uint64_t bits() const { return bits_; }

 private:
  uint64_t bits_ = 0;
};

// Present symbols as runs: gap0+1, run, then (gap+1, run)* and 1 as the end marker (a real gap
// between runs is >= 1, so its code is >= 2). A run reaching the alphabet's end ends the list.
void write_present_symbols(const Model& m, BitWriter& w) {
  const uint32_t alphabet = 1u << m.bits;
  uint32_t pos = 0;
  while (true) {
    uint32_t gap = 0;
    while (pos + gap < alphabet && m.freq[pos + gap] == 0) ++gap;
    if (pos + gap == alphabet) {
      w.gamma(1);  // end (never first: a table has at least one symbol)
      break;
    }
    w.gamma(gap + 1);
    pos += gap;
    uint32_t run = 0;
    while (pos + run < alphabet && m.freq[pos + run] != 0) ++run;
    w.gamma(run);
    pos += run;
    if (pos == alphabet) break;
  }
}

// One present symbol's frequency but the last's (implied): f-1 as a bit length coded as a zigzag
// delta from the previous one in unary, then the bits below the leading one.
template <class Writer>  // BitWriter, or BitCounter for the size alone
void write_frequency(uint32_t freq, int& prev_len, Writer& w) {
  const uint32_t v = freq - 1;
  const int len = std::bit_width(v);
  const int delta = len - prev_len;
  const uint32_t zz = delta >= 0 ? 2u * delta : 2u * (-delta) - 1;
  w.put((1u << zz) - 1, zz + 1);  // zz ones, then a zero
  if (len >= 2) w.put(v & ((1u << (len - 1)) - 1), len - 1);
  prev_len = len;
}

void write_table(const Model& m, BitWriter& w) {
  write_present_symbols(m, w);
  const uint32_t alphabet = 1u << m.bits;
  uint32_t last = 0;
  for (uint32_t s = 0; s < alphabet; ++s)
    if (m.freq[s]) last = s;
  int prev_len = 0;
  for (uint32_t s = 0; s < last; ++s)
    if (m.freq[s]) write_frequency(m.freq[s], prev_len, w);
}

Model read_table(BitReader& r, uint32_t bits, uint32_t precision) {
  Model m;
  m.bits = bits;
  m.precision = precision;
  const uint32_t alphabet = 1u << bits;
  std::array<bool, 256> present{};
  uint32_t pos = 0;
  bool first = true;
  uint32_t present_count = 0;
  while (true) {
    const uint32_t code = r.gamma();
    if (code == 1 && !first) break;
    const uint32_t gap = code - 1;
    if (gap >= alphabet - pos) corrupt("table: symbol out of range");
    pos += gap;
    first = false;
    const uint32_t run = r.gamma();
    if (run > alphabet - pos) corrupt("table: symbol run out of range");
    for (uint32_t i = 0; i < run; ++i) present[pos + i] = true;
    present_count += run;
    pos += run;
    if (pos == alphabet) break;
  }
  if (present_count == 0) corrupt("table: no symbols");
  const uint32_t total = 1u << precision;
  uint32_t last = 0;
  for (uint32_t s = 0; s < alphabet; ++s)
    if (present[s]) last = s;
  uint64_t sum = 0;
  int prev_len = 0;
  for (uint32_t s = 0; s < last; ++s) {
    if (!present[s]) continue;
    uint32_t zz = 0;
    while (r.get(1) == 1)
      if (++zz > kMaxUnary) corrupt("table: frequency length code too long");
    const int delta = (zz & 1) ? -static_cast<int>((zz + 1) / 2) : static_cast<int>(zz / 2);
    const int len = prev_len + delta;
    if (len < 0 || len > static_cast<int>(precision)) corrupt("table: frequency out of range");
    uint32_t v = 0;
    if (len == 1) v = 1;
    if (len >= 2) v = (1u << (len - 1)) | r.get(len - 1);
    m.freq[s] = v + 1;
    sum += v + 1;
    if (sum >= total) corrupt("table: frequencies exceed 2^precision");
    prev_len = len;
  }
  m.freq[last] = total - static_cast<uint32_t>(sum);  // >= 1 by the check above
  m.finish_cum();
  return m;
}

// Frequencies for `counts` at `precision` minimising sum counts[s] * log2(2^precision / f[s])
// with every present symbol >= 1: rounding, then greedy unit moves, then pairwise exchanges until
// none gains (optimal for this separable convex cost). Ties go to the lowest symbol.
// The reference quantiser: what the encoder's tables are defined by. quantize_fast() below makes
// the same choices faster (tests compare the two through rans_encode's reference path).
Model quantize_ref(const std::array<uint64_t, 256>& counts, uint32_t bits, uint32_t precision) {
  Model m;
  m.bits = bits;
  m.precision = precision;
  const uint32_t alphabet = 1u << bits;
  const uint64_t total_slots = uint64_t{1} << precision;
  uint64_t total = 0;
  for (uint32_t s = 0; s < alphabet; ++s) total += counts[s];
  int64_t sum = 0;
  for (uint32_t s = 0; s < alphabet; ++s) {
    if (!counts[s]) continue;
    // round(counts * 2^p / total) in 128-bit integers: exact and deterministic.
    const unsigned __int128 scaled = static_cast<unsigned __int128>(counts[s]) * total_slots * 2 + total;
    uint64_t f = static_cast<uint64_t>(scaled / (static_cast<unsigned __int128>(total) * 2));
    m.freq[s] = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(f, total_slots)));
    sum += m.freq[s];
  }
  // Each symbol's gain from f+1 and loss from f-1 (f > 1), cached and recomputed only for the
  // symbols that change: the same values, so the same choices, as recomputing them every time.
  std::array<double, 256> gain{}, loss{};
  auto refresh = [&](uint32_t s) {
    gain[s] = counts[s] * std::log2((m.freq[s] + 1.0) / m.freq[s]);                      // bits saved by f+1
    loss[s] = m.freq[s] > 1 ? counts[s] * std::log2(m.freq[s] / (m.freq[s] - 1.0)) : 0;  // bits lost by f-1
  };
  for (uint32_t s = 0; s < alphabet; ++s)
    if (counts[s]) refresh(s);
  auto best_up = [&](uint32_t skip) {
    int best = -1;
    double g = -1;
    for (uint32_t s = 0; s < alphabet; ++s)
      if (counts[s] && s != skip && gain[s] > g) g = gain[s], best = static_cast<int>(s);
    return best;
  };
  auto best_down = [&](uint32_t skip) {
    int best = -1;
    double l = 0;
    for (uint32_t s = 0; s < alphabet; ++s)
      if (counts[s] && s != skip && m.freq[s] > 1 && (best < 0 || loss[s] < l)) l = loss[s], best = static_cast<int>(s);
    return best;
  };
  const int64_t target = static_cast<int64_t>(total_slots);
  while (sum > target) {
    const int s = best_down(256);
    --m.freq[s];
    --sum;
    refresh(s);
  }
  while (sum < target) {
    const int s = best_up(256);
    ++m.freq[s];
    ++sum;
    refresh(s);
  }
  for (uint32_t iter = 0; iter < 4 * total_slots; ++iter) {
    const int up = best_up(256);
    const int down = best_down(static_cast<uint32_t>(up));
    if (up < 0 || down < 0) break;
    const double g = gain[up], l = loss[down];
    if (!(g > l * (1 + 1e-12) + 1e-9)) break;
    ++m.freq[up];
    --m.freq[down];
    refresh(up);
    refresh(down);
  }
  m.finish_cum();
  return m;
}

// ---- the encoder's fast table quantiser and precision estimate ----
// quantize_fast() and the estimate in encode_stream() compute exactly what quantize_ref() and the
// reference estimate compute, the same doubles from the same expressions, with less work:
//  * log2 values come from tables filled once with the very expressions quantize_ref() evaluates
//    (log2((f + 1.0) / f) and log2(double(f)) for every f <= 2^12; f / (f - 1.0) is the same
//    division as ((f - 1) + 1.0) / (f - 1), so a loss is the gain table at f - 1);
//  * the rounding round(c * 2^p / total) of every precision comes from one division per symbol,
//    F = floor(c * 2^13 / total): floor(c * 2^(p+1) / total) = F >> (12 - p) (flooring twice by
//    integers is flooring once), and round(z) = floor(z + 1/2) = (floor(2z) + 1) >> 1;
//  * the unit moves and exchanges pick their symbols from two tournament trees instead of scanning
//    the alphabet: the winner of a node is its subtree's largest gain (resp. smallest loss among
//    f > 1), ties to the lowest symbol, which is the symbol the reference's first-wins scan finds.
constexpr uint32_t kMaxSlots = uint32_t{1} << kRansMaxPrecision;

struct Log2Tables {
  std::array<double, kMaxSlots + 1> up{};     // up[f] = log2((f + 1.0) / f), f >= 1
  std::array<double, kMaxSlots + 1> value{};  // value[f] = log2(double(f)), f >= 1
};

const Log2Tables& log2_tables() {
  static const Log2Tables tables = [] {
    Log2Tables t;
    for (uint32_t f = 1; f <= kMaxSlots; ++f) {
      t.up[f] = std::log2((f + 1.0) / f);
      t.value[f] = std::log2(static_cast<double>(f));
    }
    return t;
  }();
  return tables;
}

// What every precision's quantisation of one histogram shares.
struct QuantizeInput {
  uint32_t bits = 8;
  uint32_t present_count = 0;
  std::array<uint8_t, 256> present{};  // the present symbols, increasing
  std::array<uint64_t, 256> scaled{};  // floor(counts[s] * 2^13 / total)
};

QuantizeInput quantize_input(const std::array<uint64_t, 256>& counts, uint32_t bits) {
  QuantizeInput in;
  in.bits = bits;
  uint64_t total = 0;
  for (uint32_t s = 0; s < (1u << bits); ++s) total += counts[s];
  // floor(x / total) for x = counts << 13 < 2^64 by a multiplication: q = floor(x * r / 2^64) with
  // r = floor((2^64 - 1) / total) never exceeds x / total and falls short of it by less than
  // x / 2^64 + 1 (at most one here, where x <= total * 2^13 and total <= 2^32); the loop corrects it.
  constexpr uint32_t kScaleBits = kRansMaxPrecision + 1;
  const uint64_t reciprocal = ~uint64_t{0} / total;
  for (uint32_t s = 0; s < (1u << bits); ++s) {
    if (!counts[s]) continue;
    in.present[in.present_count++] = static_cast<uint8_t>(s);
    if (counts[s] < (uint64_t{1} << (64 - kScaleBits))) {
      const uint64_t x = counts[s] << kScaleBits;
      uint64_t q = static_cast<uint64_t>((static_cast<unsigned __int128>(x) * reciprocal) >> 64);
      while (x - q * total >= total) ++q;
      in.scaled[s] = q;
    } else {
      in.scaled[s] = static_cast<uint64_t>((static_cast<unsigned __int128>(counts[s]) << kScaleBits) / total);
    }
  }
  return in;
}

// A tournament tree over leaves 0 .. leaves - 1 (stored at leaves .. 2 * leaves - 1, root at 1;
// -1: no candidate). Better(a, b) must be a strict total order on candidates, so that any pairing
// finds the same winner.
template <class Better>
class Tournament {
 public:
  Tournament(uint32_t leaves, Better better) : leaves_(leaves), better_(better) {}
  template <class Eligible>
  void build(uint32_t count, Eligible eligible) {  // leaves >= count: the rest are empty
    for (uint32_t i = 0; i < leaves_; ++i) node_[leaves_ + i] = i < count && eligible(i) ? static_cast<int16_t>(i) : -1;
    for (uint32_t i = leaves_; i-- > 1;) node_[i] = pick(node_[2 * i], node_[2 * i + 1]);
  }
  void update(uint32_t leaf, bool eligible) {
    uint32_t i = leaves_ + leaf;
    node_[i] = eligible ? static_cast<int16_t>(leaf) : -1;
    for (i >>= 1; i >= 1; i >>= 1) node_[i] = pick(node_[2 * i], node_[2 * i + 1]);
  }
  int best() const { return node_[1]; }
  int best_except(uint32_t leaf) const {  // the winner among all leaves but this one
    int winner = -1;
    for (uint32_t i = leaves_ + leaf; i > 1; i >>= 1) winner = pick(winner, node_[i ^ 1]);
    return winner;
  }

 private:
  int16_t pick(int a, int b) const {
    if (a < 0) return static_cast<int16_t>(b);
    if (b < 0) return static_cast<int16_t>(a);
    return static_cast<int16_t>(better_(a, b) ? a : b);
  }
  uint32_t leaves_;
  Better better_;
  std::array<int16_t, 512> node_;
};

// quantize_ref(counts, in.bits, precision), faster (see above). The work runs over the present
// symbols' positions in in.present (increasing, so the lowest position is the lowest symbol).
Model quantize_fast(const std::array<uint64_t, 256>& counts, const QuantizeInput& in, uint32_t precision,
                    const Log2Tables& lg) {
  const uint32_t present = in.present_count;
  const uint64_t total_slots = uint64_t{1} << precision;
  std::array<uint32_t, 256> freq;
  std::array<double, 256> gain, loss;  // at positions < present
  int64_t sum = 0;
  for (uint32_t i = 0; i < present; ++i) {
    const uint64_t f = ((in.scaled[in.present[i]] >> (kRansMaxPrecision - precision)) + 1) >> 1;
    freq[i] = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(f, total_slots)));
    sum += freq[i];
  }
  auto refresh = [&](uint32_t i) {
    const uint64_t count = counts[in.present[i]];
    gain[i] = count * lg.up[freq[i]];
    loss[i] = freq[i] > 1 ? count * lg.up[freq[i] - 1] : 0;
  };
  for (uint32_t i = 0; i < present; ++i) refresh(i);
  // The trees are built only when they pay: a unit move needs one of them, and the exchange loop
  // usually stops at its first check (MiniLM: 0.02 exchanges per call), which linear scans answer
  // with the same symbols.
  auto more_gain = [&](int a, int b) { return gain[a] > gain[b] || (gain[a] == gain[b] && a < b); };
  auto less_loss = [&](int a, int b) { return loss[a] < loss[b] || (loss[a] == loss[b] && a < b); };
  const uint32_t leaves = std::bit_ceil(present);
  Tournament ups(leaves, more_gain);
  Tournament downs(leaves, less_loss);
  bool ups_built = false, downs_built = false;
  auto build_ups = [&] {
    if (!ups_built) ups.build(present, [](uint32_t) { return true; });
    ups_built = true;
  };
  auto build_downs = [&] {
    if (!downs_built) downs.build(present, [&](uint32_t i) { return freq[i] > 1; });
    downs_built = true;
  };
  auto best_up = [&] {
    if (ups_built) return ups.best();
    int best = -1;
    for (uint32_t i = 0; i < present; ++i)
      if (best < 0 || gain[i] > gain[best]) best = static_cast<int>(i);
    return best;
  };
  auto best_down_except = [&](uint32_t skip) {
    if (downs_built) return downs.best_except(skip);
    int best = -1;
    for (uint32_t i = 0; i < present; ++i)
      if (i != skip && freq[i] > 1 && (best < 0 || loss[i] < loss[best])) best = static_cast<int>(i);
    return best;
  };
  auto change = [&](uint32_t i, int step) {
    freq[i] += step;
    refresh(i);
    if (ups_built) ups.update(i, true);
    if (downs_built) downs.update(i, freq[i] > 1);
  };
  const int64_t target = static_cast<int64_t>(total_slots);
  if (sum > target) build_downs();
  for (; sum > target; --sum) change(static_cast<uint32_t>(downs.best()), -1);
  if (sum < target) build_ups();
  for (; sum < target; ++sum) change(static_cast<uint32_t>(ups.best()), +1);
  for (uint32_t iter = 0; iter < 4 * total_slots; ++iter) {
    const int up = best_up();
    if (up < 0) break;
    const int down = best_down_except(static_cast<uint32_t>(up));
    if (down < 0) break;
    const double g = gain[up], l = loss[down];
    if (!(g > l * (1 + 1e-12) + 1e-9)) break;
    build_ups();  // exchanges go on: every later check by the trees
    build_downs();
    change(static_cast<uint32_t>(up), +1);
    change(static_cast<uint32_t>(down), -1);
  }
  Model m;
  m.bits = in.bits;
  m.precision = precision;
  for (uint32_t i = 0; i < present; ++i) m.freq[in.present[i]] = freq[i];
  m.finish_cum();
  return m;
}

// What write_present_symbols writes, from the list of present symbols.
template <class Writer>
void write_present_symbols_fast(const QuantizeInput& in, Writer& w) {
  const uint32_t alphabet = 1u << in.bits;
  uint32_t pos = 0;  // the next symbol not yet covered
  uint32_t i = 0;
  while (i < in.present_count) {
    const uint32_t start = in.present[i];
    uint32_t run = 1;
    while (i + run < in.present_count && in.present[i + run] == start + run) ++run;
    w.gamma(start - pos + 1);
    w.gamma(run);
    pos = start + run;
    i += run;
  }
  if (pos != alphabet) w.gamma(1);  // end
}

uint64_t present_symbols_bits(const QuantizeInput& in) {
  BitCounter w;
  write_present_symbols_fast(in, w);
  return w.bits();
}

// What write_table writes after the present symbols, from the list of m's present symbols.
template <class Writer>
void write_frequencies_fast(const Model& m, const QuantizeInput& in, Writer& w) {
  int prev_len = 0;
  for (uint32_t i = 0; i + 1 < in.present_count; ++i) write_frequency(m.freq[in.present[i]], prev_len, w);
}

// write_table(m, w) from the list of m's present symbols.
void write_table_fast(const Model& m, const QuantizeInput& in, BitWriter& w) {
  write_present_symbols_fast(in, w);
  write_frequencies_fast(m, in, w);
}

// A lower bound of the precision estimate at every precision, so that the fast path can stop
// estimating once no higher precision can win (what it skips, the reference would not take).
// For any table at precision p, with c_s the counts, P present symbols, U lanes and NL the
// present symbols but the last:
//   estimate(p) = table_bits + U p + sum_s c_s (p - log2 f_s),
//   table_bits  = present_bits + sum_{s in NL} (zz_s + 1 + max(len_s - 1, 0))
//              >= present_bits + sum_{s in NL} log2 f_s,
// as zz_s >= 0 and max(len_s - 1, 0) = floor(log2(f_s - 1)) >= log2 f_s - 1 (f_s >= 2; 0 >= -1 for
// f_s = 1). With a_s = c_s - [s in NL] >= 0 and A = sum a_s = n - (P - 1):
//   estimate(p) >= present_bits + (U + n) p - sum_s a_s log2 f_s
//              >= present_bits + (U + P - 1) p + A log2 A - sum_s a_s log2 a_s
// (Gibbs: sum a_s log2 f_s with sum f_s = 2^p is largest at f_s = 2^p a_s / A). It grows with p, so
// once it passes the best estimate so far, every higher p is out. `margin` covers the rounding of
// both sides in double precision (a few ulps of values below 2^40) many times over.
struct EstimateBound {
  double constant = 0;  // present_bits + A log2 A - sum a_s log2 a_s
  double slope = 0;     // U + P - 1
  double at(uint32_t p) const { return constant + slope * p; }
  static double margin(double bits) { return 1.0 + 1e-9 * bits; }
};

EstimateBound estimate_bound(const std::array<uint64_t, 256>& counts, const QuantizeInput& in, uint64_t present_bits,
                             uint32_t used_lanes) {
  double weights = 0, weighted_log = 0;  // A, sum a_s log2 a_s
  for (uint32_t i = 0; i < in.present_count; ++i) {
    const uint64_t a = counts[in.present[i]] - (i + 1 < in.present_count ? 1 : 0);
    if (a == 0) continue;
    weights += static_cast<double>(a);
    weighted_log += static_cast<double>(a) * std::log2(static_cast<double>(a));
  }
  EstimateBound b;
  b.constant = static_cast<double>(present_bits) + (weights > 0 ? weights * std::log2(weights) : 0) - weighted_log;
  b.slope = static_cast<double>(used_lanes) + static_cast<double>(in.present_count) - 1;
  return b;
}

// The table's size in bits at this model's precision (what write_table writes): the present
// symbols' runs, the same at every precision (present_bits), then the frequencies.
uint64_t table_bits_fast(const Model& m, const QuantizeInput& in, uint64_t present_bits) {
  BitCounter w;
  write_frequencies_fast(m, in, w);
  return present_bits + w.bits();
}

// ---- lanes (docs: "Lanes and phases") ----
// Symbol i of n goes to lane i % 32: min(32, n) lanes have symbols, lane l < n has this many.
uint32_t lanes_used(uint64_t n) { return static_cast<uint32_t>(std::min<uint64_t>(n, kRansLanes)); }
uint64_t lane_symbol_count(uint64_t n, uint32_t l) { return (n - 1 - l) / kRansLanes + 1; }

struct Lanes {
  uint32_t used = 0;                            // lanes with at least one symbol: min(32, n)
  std::array<uint64_t, kRansLanes> count{};     // symbols of the lane
  std::array<uint32_t, kRansLanes> tail{};      // tail length k_l (0: the lane starts at L)
  std::array<uint64_t, kRansLanes> main_len{};  // symbols decoded with renormalisation
  bool has_main(uint32_t l) const { return main_len[l] > 0; }
};

Lanes lane_layout(uint64_t n, const std::array<uint32_t, kRansLanes>& tail) {
  Lanes lanes;
  lanes.used = lanes_used(n);
  for (uint32_t l = 0; l < lanes.used; ++l) {
    lanes.count[l] = lane_symbol_count(n, l);
    lanes.tail[l] = tail[l];
    lanes.main_len[l] = lanes.count[l] - std::min<uint64_t>(tail[l], lanes.count[l]);
  }
  return lanes;
}

// Tail lengths (docs: "Modes 1 and 3"): D (2 bits) and K0 (6 bits) in the header, then, when
// D > 0, a D-bit delta per lane: k_l = K0 + delta_l.
void write_tails(uint32_t base, uint32_t delta_bits, const Lanes& lanes, BitWriter& w) {
  w.put(delta_bits, kDeltaFieldBits);
  w.put(base, kTailFieldBits);
  if (delta_bits)
    for (uint32_t l = 0; l < lanes.used; ++l) w.put(lanes.tail[l] - base, delta_bits);
}

Lanes read_tails(uint64_t n, BitReader& r) {
  const uint32_t delta_bits = r.get(kDeltaFieldBits);
  const uint32_t base = r.get(kTailFieldBits);
  std::array<uint32_t, kRansLanes> tail{};
  const uint32_t used = static_cast<uint32_t>(std::min<uint64_t>(n, kRansLanes));
  for (uint32_t l = 0; l < used; ++l) tail[l] = base + (delta_bits ? r.get(delta_bits) : 0);
  return lane_layout(n, tail);
}

// Lane states (docs: "Modes 1 and 3"): a length field per lane, then the bits of each state below
// its leading one. A lane with a main phase ends (in the encoder) in [L, 2^32): field = bit length
// - 17 (4 bits), then bit length - 1 bits. An all-tail lane's state lies in [0, 2^32): field = bit
// length (6 bits, <= 32), then max(bit length - 1, 0) bits.
void write_lane_states(const std::array<uint32_t, kRansLanes>& state, const Lanes& lanes, BitWriter& w) {
  std::array<uint32_t, kRansLanes> width{};
  for (uint32_t l = 0; l < lanes.used; ++l) {
    width[l] = static_cast<uint32_t>(std::bit_width(state[l]));
    if (lanes.has_main(l)) w.put(width[l] - (kStateLowerBits + 1), kMainLengthBits);
    else w.put(width[l], kTailLengthBits);
  }
  for (uint32_t l = 0; l < lanes.used; ++l)
    if (width[l] > 1) w.put(state[l] & ((1u << (width[l] - 1)) - 1), width[l] - 1);
}

std::array<uint32_t, kRansLanes> read_lane_states(const Lanes& lanes, BitReader& r) {
  std::array<uint32_t, kRansLanes> width{};
  for (uint32_t l = 0; l < lanes.used; ++l) {
    if (lanes.has_main(l)) {
      width[l] = r.get(kMainLengthBits) + kStateLowerBits + 1;
    } else {
      width[l] = r.get(kTailLengthBits);
      if (width[l] > 32) corrupt("lane state length out of range");
    }
  }
  std::array<uint32_t, kRansLanes> x{};
  for (uint32_t l = 0; l < lanes.used; ++l)
    if (width[l] >= 1) x[l] = (uint32_t{1} << (width[l] - 1)) | r.get(width[l] - 1);
  return x;
}

// Symbol counts of `n` symbols (one per byte). Four tables, so that runs of one symbol do not
// serialise on a single counter's store-to-load chain.
std::array<uint64_t, 256> histogram(const uint8_t* syms, uint64_t n) {
  std::array<std::array<uint32_t, 256>, 4> partial{};
  std::array<uint64_t, 256> counts{};
  uint64_t i = 0;
  while (i < n) {
    // Blocks of at most 2^32 - 4 symbols keep each 32-bit counter from overflowing.
    const uint64_t block_end = i + std::min<uint64_t>(n - i, (uint64_t{1} << 32) - 4);
    for (; i + 4 <= block_end; i += 4) {
      ++partial[0][syms[i]];
      ++partial[1][syms[i + 1]];
      ++partial[2][syms[i + 2]];
      ++partial[3][syms[i + 3]];
    }
    for (; i < block_end; ++i) ++partial[0][syms[i]];
    for (uint32_t s = 0; s < 256; ++s) {
      counts[s] += uint64_t{partial[0][s]} + partial[1][s] + partial[2][s] + partial[3][s];
      partial[0][s] = partial[1][s] = partial[2][s] = partial[3][s] = 0;
    }
  }
  return counts;
}

// Symbol counts of `n` 4-bit symbols packed two per byte (low nibble first): the bytes' histogram
// (half as many increments as one per symbol), folded into nibbles.
std::array<uint64_t, 256> histogram_nibbles(const uint8_t* packed, uint64_t n) {
  const std::array<uint64_t, 256> pairs = histogram(packed, n / 2);
  std::array<uint64_t, 256> counts{};
  for (uint32_t b = 0; b < 256; ++b) {
    counts[b & 0x0F] += pairs[b];
    counts[b >> 4] += pairs[b];
  }
  if (n % 2) ++counts[packed[n / 2] & 0x0F];
  return counts;
}

// Exact division of any 32-bit x by f (1 <= f <= 2^12) as a multiply, an add and a shift
// (Granlund-Montgomery): shift = ceil(log2 f), and with M = ceil(2^(32 + shift) / f), which lies in
// [2^32, 2^33), q = floor(x * M / 2^(32 + shift)) = (x + floor(x * (M - 2^32) / 2^32)) >> shift: the
// 2^32 part of M contributes x exactly, so the product needs 64 bits, not 128.
struct Divisor {
  uint32_t low_multiplier;  // M - 2^32
  uint32_t shift;
  uint32_t f;
  Divisor() = default;  // uninitialised: the encoder's arrays of them are filled for present symbols only
  explicit Divisor(uint32_t divisor) : f(divisor) {
    shift = divisor > 1 ? static_cast<uint32_t>(std::bit_width(divisor - 1)) : 0;
    const uint64_t multiplier = ((uint64_t{1} << (32 + shift)) + divisor - 1) / divisor;  // < 2^45, fits
    low_multiplier = static_cast<uint32_t>(multiplier - (uint64_t{1} << 32));
  }
  uint32_t quotient(uint32_t x) const {
    return static_cast<uint32_t>((x + ((uint64_t{x} * low_multiplier) >> 32)) >> shift);
  }
};

// Divisor(f) for every frequency f <= 2^12, computed once (the encoder needs one per present
// symbol and stream: a 64-bit division each otherwise).
const std::array<Divisor, kMaxSlots + 1>& divisor_table() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<Divisor, kMaxSlots + 1>>();
    for (uint32_t f = 1; f <= kMaxSlots; ++f) (*t)[f] = Divisor(f);
    return t;
  }();
  return *table;
}

// One encoder step: the state that decodes to symbol (f, c) and then to x:
// (x / f) * 2^p + x % f + c = x + (x / f) * (2^p - f) + c. x is below 2^32 wherever the encoder
// calls it (the result may exceed 2^32 in a tail).
inline uint64_t rans_step(uint32_t x, const Divisor& f, uint32_t c, uint32_t precision) {
  const uint32_t quotient = f.quotient(x);
  return (uint64_t{quotient} << precision) + (x - quotient * f.f) + c;
}

// Main phase (docs: encoder). Per symbol: emit a word before coding s while x >= x_max
// (= 2^(32-p) * f), which keeps x in [L, 2^32); then one rANS step, x + q * (2^p - f) + c with
// q = x / f (rans_step's formula rearranged: one multiply fewer). Words are written downwards:
// every symbol stores its word one slot below `next` and moves `next` down only when it emits, so
// the words land in the order the decoder reads them (the last emitted first).
struct SymbolCoder {  // uninitialised by default, like Divisor
  uint64_t x_max;
  uint32_t low_multiplier;
  uint32_t shift;
  uint32_t complement;  // 2^p - f
  uint32_t cum;
};

// Steps where every lane is in its main phase: t < common_main.
uint64_t common_main_steps(const Lanes& lanes) {
  uint64_t common = lanes.used == kRansLanes ? lanes.main_len[0] : 0;
  for (uint32_t l = 1; l < lanes.used; ++l) common = std::min(common, lanes.main_len[l]);
  return common;
}

// One main-phase lane step (see SymbolCoder).
inline void code_main_symbol(uint32_t& state, const SymbolCoder& c, uint16_t*& next) {
  uint32_t x = state;
  const bool emit = x >= c.x_max;
  next[-1] = static_cast<uint16_t>(x);
  next -= emit;
  x >>= emit ? kWordBits : 0;
  const uint32_t quotient = static_cast<uint32_t>((x + ((uint64_t{x} * c.low_multiplier) >> 32)) >> c.shift);
  state = x + quotient * c.complement + c.cum;
}

// Codes the main phase's lane steps t = lanes.count[0] - 1 down to `common_main` (=
// common_main_steps(lanes)), where some lanes have no main-phase symbol (they skip the steps
// t >= main_len), lanes 31..0 within a step. Returns the new `next`.
uint16_t* code_main_ragged(const uint8_t* syms, const Lanes& lanes, uint64_t common_main,
                           const std::array<SymbolCoder, 256>& coder, std::array<uint32_t, kRansLanes>& state,
                           uint16_t* next) {
  for (uint64_t t = lanes.count[0]; t-- > common_main;)
    for (uint32_t l = kRansLanes; l-- > 0;)
      if (t < lanes.main_len[l]) code_main_symbol(state[l], coder[syms[t * kRansLanes + l]], next);
  return next;
}

// Steps t = steps - 1 .. 0, all 32 lanes in their main phase, lanes 31..0 within a step: the scalar
// reference of the main loop (code_main_avx2 and code_main_avx512 below). Returns the new `next`.
uint16_t* code_main_scalar(const uint8_t* syms, uint64_t steps, const std::array<SymbolCoder, 256>& coder,
                           std::array<uint32_t, kRansLanes>& state, uint16_t* next) {
  for (uint64_t t = steps; t-- > 0;) {
    const uint8_t* step = syms + t * kRansLanes;
    for (uint32_t l = kRansLanes; l-- > 0;) code_main_symbol(state[l], coder[step[l]], next);
  }
  return next;
}

#if WPACK_RANS_AVX2
// ---- the main loop over 32 lanes with AVX2 (x86-64, chosen at run time) ----
// Four vectors of 8 lanes' states, vector g = lanes 8g .. 8g+7; per step vectors 3, 2, 1, 0, the
// scalar loop's lane order 31..0 by groups. What differs from code_main_scalar and why the result
// is the same:
//  * the symbol constants are looked up per lane: two 8-entry permutes and a blend on bit 3 of the
//    symbol for alphabets of at most 16 symbols, a gather otherwise;
//  * the emitted words of a vector (the low 16 bits of the states that emit, lanes increasing) are
//    compacted to the top of 8 words by one byte shuffle (kCompactWords, by the emit mask) and
//    stored at next - 8 .. next - 1; next moves down by their count. The scalar loop puts lane 31's
//    word highest and lane 24's lowest, then lanes 23..16 below them: the same words in the same
//    places. The slots below the new `next` get garbage that later stores overwrite (the buffer
//    has 8 spare words at its bottom);
//  * q = x / f with 32-bit lanes: (x + t) >> shift with t = mulhi(x, low_multiplier) can exceed
//    2^32, so it is computed as (t + ((x - t) >> 1)) >> (shift - 1) (t <= x, so x - t >= 0 and
//    t + floor((x - t) / 2) = floor((x + t) / 2) exactly). f = 1 has shift 0: its constants are
//    low_multiplier = 2^32 - 1, shifted 0 and cum + 2^p - 1 instead, so that t = x - 1 (x >= 1 in
//    the main phase), q' = x - 1, and x + q' * (2^p - 1) + cum + 2^p - 1 = x * 2^p + cum, the
//    f = 1 step. Every product and sum is below 2^32 where it is kept (the new state is).
struct alignas(32) LaneCoder {
  std::array<uint32_t, 256> x_max;           // 2^(32-p) * f < 2^32 (f < 2^p: >= 2 symbols are present)
  std::array<uint32_t, 256> low_multiplier;  // Divisor's M - 2^32; 2^32 - 1 for f = 1
  std::array<uint32_t, 256> shift;           // Divisor's shift - 1; 0 for f = 1
  std::array<uint32_t, 256> complement;      // 2^p - f
  std::array<uint32_t, 256> cum;             // cum; cum + 2^p - 1 for f = 1
};

// kCompactWords[mask]: pshufb control moving the 16-bit words of the lanes set in `mask` (8 lanes)
// to the top of a 16-byte vector, lanes increasing; the other bytes are zeroed (0x80).
constexpr std::array<std::array<uint8_t, 16>, 256> make_compact_words() {
  std::array<std::array<uint8_t, 16>, 256> table{};
  for (uint32_t mask = 0; mask < 256; ++mask) {
    const uint32_t k = static_cast<uint32_t>(std::popcount(mask));
    for (auto& b : table[mask]) b = 0x80;
    uint32_t j = 8 - k;
    for (uint32_t lane = 0; lane < 8; ++lane)
      if (mask & (1u << lane)) {
        table[mask][2 * j] = static_cast<uint8_t>(2 * lane);
        table[mask][2 * j + 1] = static_cast<uint8_t>(2 * lane + 1);
        ++j;
      }
  }
  return table;
}
alignas(16) constexpr std::array<std::array<uint8_t, 16>, 256> kCompactWords = make_compact_words();

#define WPACK_TARGET_AVX2 __attribute__((target("avx2,popcnt")))

template <bool kSmallAlphabet>  // symbols < 16
WPACK_TARGET_AVX2 inline __m256i lookup_lanes(const std::array<uint32_t, 256>& table, __m256i symbols) {
  if constexpr (kSmallAlphabet) {
    const __m256i low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table.data()));
    const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table.data() + 8));
    const __m256 from_low = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(low, symbols));
    const __m256 from_high = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(high, symbols));
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(symbols, 28));  // blendv looks at bit 31
    return _mm256_castps_si256(_mm256_blendv_ps(from_low, from_high, bit3));
  } else {
    return _mm256_i32gather_epi32(reinterpret_cast<const int*>(table.data()), symbols, 4);
  }
}

// Steps t = steps - 1 .. 0, all 32 lanes in their main phase. Returns the new `next`.
template <bool kSmallAlphabet>
WPACK_TARGET_AVX2 uint16_t* code_main_avx2(const uint8_t* syms, uint64_t steps, const LaneCoder& c,
                                           std::array<uint32_t, kRansLanes>& state, uint16_t* next) {
  __m256i x[4];
  for (int g = 0; g < 4; ++g) x[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(state.data() + 8 * g));
  // Low 16 bits of each 32-bit lane to the low 8 bytes of its 128-bit half.
  const __m256i word_bytes = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                              0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
  for (uint64_t t = steps; t-- > 0;) {
    const uint8_t* step = syms + t * kRansLanes;
    for (int g = 3; g >= 0; --g) {
      const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(step + 8 * g)));
      __m256i v = x[g];
      // Renormalise: emit the low word of every lane with x >= x_max (unsigned), then x >>= 16 there.
      const __m256i x_max = lookup_lanes<kSmallAlphabet>(c.x_max, s);
      const __m256i emit = _mm256_cmpeq_epi32(_mm256_max_epu32(v, x_max), v);
      const uint32_t mask = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(emit)));
      const __m128i words = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, word_bytes), 0x08));
      const __m128i control = _mm_load_si128(reinterpret_cast<const __m128i*>(kCompactWords[mask].data()));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(next - 8), _mm_shuffle_epi8(words, control));
      next -= _mm_popcnt_u32(mask);
      v = _mm256_blendv_epi8(v, _mm256_srli_epi32(v, kWordBits), emit);
      // q = x / f, then x + q * (2^p - f) + cum.
      const __m256i multiplier = lookup_lanes<kSmallAlphabet>(c.low_multiplier, s);
      const __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(v, multiplier), 32);
      const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(v, 32), _mm256_srli_epi64(multiplier, 32));
      const __m256i high = _mm256_blend_epi32(even, odd, 0xAA);  // mulhi(x, low_multiplier) per lane
      const __m256i half = _mm256_add_epi32(high, _mm256_srli_epi32(_mm256_sub_epi32(v, high), 1));
      const __m256i q = _mm256_srlv_epi32(half, lookup_lanes<kSmallAlphabet>(c.shift, s));
      const __m256i scaled = _mm256_mullo_epi32(q, lookup_lanes<kSmallAlphabet>(c.complement, s));
      x[g] = _mm256_add_epi32(_mm256_add_epi32(v, scaled), lookup_lanes<kSmallAlphabet>(c.cum, s));
    }
  }
  for (int g = 0; g < 4; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(state.data() + 8 * g), x[g]);
  return next;
}

bool have_avx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  return avx2;
}

// The same loop with AVX-512F: two vectors of 16 lanes (vector 1 = lanes 16..31 first), a
// 16-entry lookup is one permute, and the emitted words are compacted in order by vpcompressd and
// stored by a masked narrowing store of exactly their count at next - count .. next - 1 (no spare
// slots written). The arithmetic is code_main_avx2's.
#define WPACK_TARGET_AVX512 __attribute__((target("avx512f,popcnt")))
// g++ 12 warns "may be used uninitialized" inside its own avx512fintrin.h (the _mm512_undefined_*
// placeholders of the unmasked intrinsics): a false positive, silenced for this loop only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

template <bool kSmallAlphabet>  // symbols < 16
WPACK_TARGET_AVX512 inline __m512i lookup_lanes16(const std::array<uint32_t, 256>& table, __m512i symbols) {
  if constexpr (kSmallAlphabet) {
    return _mm512_permutexvar_epi32(symbols, _mm512_loadu_si512(table.data()));
  } else {
    return _mm512_i32gather_epi32(symbols, table.data(), 4);
  }
}

template <bool kSmallAlphabet>
WPACK_TARGET_AVX512 uint16_t* code_main_avx512(const uint8_t* syms, uint64_t steps, const LaneCoder& c,
                                               std::array<uint32_t, kRansLanes>& state, uint16_t* next) {
  __m512i x[2];
  for (int g = 0; g < 2; ++g) x[g] = _mm512_loadu_si512(state.data() + 16 * g);
  for (uint64_t t = steps; t-- > 0;) {
    const uint8_t* step = syms + t * kRansLanes;
    for (int g = 1; g >= 0; --g) {
      const __m512i s = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(step + 16 * g)));
      __m512i v = x[g];
      const __mmask16 emit = _mm512_cmpge_epu32_mask(v, lookup_lanes16<kSmallAlphabet>(c.x_max, s));
      const uint32_t count = static_cast<uint32_t>(_mm_popcnt_u32(emit));
      next -= count;
      _mm512_mask_cvtepi32_storeu_epi16(next, static_cast<__mmask16>((1u << count) - 1),
                                        _mm512_maskz_compress_epi32(emit, v));
      v = _mm512_mask_srli_epi32(v, emit, v, kWordBits);
      const __m512i multiplier = lookup_lanes16<kSmallAlphabet>(c.low_multiplier, s);
      const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(v, multiplier), 32);
      const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(v, 32), _mm512_srli_epi64(multiplier, 32));
      const __m512i high = _mm512_mask_blend_epi32(0xAAAA, even, odd);  // mulhi(x, low_multiplier) per lane
      const __m512i half = _mm512_add_epi32(high, _mm512_srli_epi32(_mm512_sub_epi32(v, high), 1));
      const __m512i q = _mm512_srlv_epi32(half, lookup_lanes16<kSmallAlphabet>(c.shift, s));
      const __m512i scaled = _mm512_mullo_epi32(q, lookup_lanes16<kSmallAlphabet>(c.complement, s));
      x[g] = _mm512_add_epi32(_mm512_add_epi32(v, scaled), lookup_lanes16<kSmallAlphabet>(c.cum, s));
    }
  }
  for (int g = 0; g < 2; ++g) _mm512_storeu_si512(state.data() + 16 * g, x[g]);
  return next;
}

// The decoder's common main phase (all 32 lanes decode every step) with AVX-512F, from its first
// step on while the stream still holds a whole step's words (32): two vectors of 16 lanes, lanes
// 0..15 first as in decode_body; per vector, the decode table is gathered at x mod 2^p, the symbols
// stored by a narrowing store, the lanes whose state fell below L (mask `need`) take the next words
// in lane order by vpexpandd of 16 words loaded at `pos`. The arithmetic is decode_body's, so the
// symbols, states and word position are the same; returns the first step not decoded (the
// scalar loop goes on from there, with its overrun checks).
WPACK_TARGET_AVX512 uint64_t decode_common_avx512(std::array<uint32_t, kRansLanes>& state, const uint32_t* table,
                                                  uint32_t p, const uint8_t* word_bytes, uint64_t word_count,
                                                  uint64_t& pos, uint64_t steps, uint8_t* out) {
  const __m512i mask = _mm512_set1_epi32(static_cast<int>((1u << p) - 1));
  const __m512i lower = _mm512_set1_epi32(static_cast<int>(kStateLower));
  const __m512i one = _mm512_set1_epi32(1), offset_mask = _mm512_set1_epi32(0xFFF);
  const __m128i shift_p = _mm_cvtsi32_si128(static_cast<int>(p));
  __m512i x[2];
  for (int g = 0; g < 2; ++g) x[g] = _mm512_loadu_si512(state.data() + 16 * g);
  uint64_t t = 0;
  for (; t < steps && word_count - pos >= kRansLanes; ++t) {
    for (int g = 0; g < 2; ++g) {
      const __m512i e = _mm512_i32gather_epi32(_mm512_and_si512(x[g], mask), table, 4);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + t * kRansLanes + 16 * g), _mm512_cvtepi32_epi8(e));
      const __m512i freq = _mm512_add_epi32(_mm512_srli_epi32(e, 20), one);
      const __m512i v = _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srl_epi32(x[g], shift_p)),
                                         _mm512_and_si512(_mm512_srli_epi32(e, 8), offset_mask));
      const __mmask16 need = _mm512_cmplt_epu32_mask(v, lower);
      const __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(word_bytes + 2 * pos)));
      x[g] = _mm512_mask_or_epi32(v, need, _mm512_slli_epi32(v, kWordBits), _mm512_maskz_expand_epi32(need, words));
      pos += static_cast<uint32_t>(_mm_popcnt_u32(need));
    }
  }
  for (int g = 0; g < 2; ++g) _mm512_storeu_si512(state.data() + 16 * g, x[g]);
  return t;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// kExpandWords[mask]: pshufb control giving lane i (8 lanes of 16-bit words) the rank(i)-th word of
// the source when bit i of `mask` is set (rank: set bits below i), zero otherwise: the words of
// consecutive lanes that need one, in lane order.
constexpr std::array<std::array<uint8_t, 16>, 256> make_expand_words() {
  std::array<std::array<uint8_t, 16>, 256> table{};
  for (uint32_t mask = 0; mask < 256; ++mask) {
    uint32_t rank = 0;
    for (uint32_t lane = 0; lane < 8; ++lane) {
      const bool set = mask & (1u << lane);
      table[mask][2 * lane] = set ? static_cast<uint8_t>(2 * rank) : 0x80;
      table[mask][2 * lane + 1] = set ? static_cast<uint8_t>(2 * rank + 1) : 0x80;
      rank += set;
    }
  }
  return table;
}
alignas(16) constexpr std::array<std::array<uint8_t, 16>, 256> kExpandWords = make_expand_words();

// decode_common_avx512's loop with AVX2: four vectors of 8 lanes, lanes 0..7 first; a lane's
// "state below L" test is (v >> 16) == 0, the words are expanded by pshufb with kExpandWords, and
// the 32 symbols of a step are narrowed by two packs and one permute into one store.
WPACK_TARGET_AVX2 uint64_t decode_common_avx2(std::array<uint32_t, kRansLanes>& state, const uint32_t* table,
                                              uint32_t p, const uint8_t* word_bytes, uint64_t word_count,
                                              uint64_t& pos, uint64_t steps, uint8_t* out) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>((1u << p) - 1));
  const __m256i one = _mm256_set1_epi32(1), offset_mask = _mm256_set1_epi32(0xFFF);
  const __m256i byte_mask = _mm256_set1_epi32(0xFF), zero = _mm256_setzero_si256();
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the packs' lane interleave
  const __m128i shift_p = _mm_cvtsi32_si128(static_cast<int>(p));
  __m256i x[4];
  for (int g = 0; g < 4; ++g) x[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(state.data() + 8 * g));
  uint64_t t = 0;
  for (; t < steps && word_count - pos >= kRansLanes; ++t) {
    __m256i sym[4];
    for (int g = 0; g < 4; ++g) {
      const __m256i e =
          _mm256_i32gather_epi32(reinterpret_cast<const int*>(table), _mm256_and_si256(x[g], mask), 4);
      sym[g] = _mm256_and_si256(e, byte_mask);
      const __m256i freq = _mm256_add_epi32(_mm256_srli_epi32(e, 20), one);
      const __m256i v = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srl_epi32(x[g], shift_p)),
                                         _mm256_and_si256(_mm256_srli_epi32(e, 8), offset_mask));
      const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(v, kStateLowerBits), zero);
      const uint32_t bits = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(need)));
      const __m128i words = _mm_loadu_si128(reinterpret_cast<const __m128i*>(word_bytes + 2 * pos));
      const __m128i control = _mm_load_si128(reinterpret_cast<const __m128i*>(kExpandWords[bits].data()));
      const __m256i taken = _mm256_or_si256(_mm256_slli_epi32(v, kWordBits),
                                            _mm256_cvtepu16_epi32(_mm_shuffle_epi8(words, control)));
      x[g] = _mm256_blendv_epi8(v, taken, need);
      pos += static_cast<uint32_t>(_mm_popcnt_u32(bits));
    }
    const __m256i packed = _mm256_packus_epi16(_mm256_packus_epi32(sym[0], sym[1]), _mm256_packus_epi32(sym[2], sym[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + t * kRansLanes), _mm256_permutevar8x32_epi32(packed, order));
  }
  for (int g = 0; g < 4; ++g) _mm256_storeu_si256(reinterpret_cast<__m256i*>(state.data() + 8 * g), x[g]);
  return t;
}

bool have_avx512() {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt");
  return avx512;
}
#endif  // WPACK_RANS_AVX2

// How rans_encode works; every path gives the same bytes (tests/test_rans.cpp compares them).
enum class EncodePath {
  kReference,   // quantize_ref, libm log2 in the estimate, the original tail search, code_main_scalar
  kFastScalar,  // quantize_fast, the table estimate and its bound, choose_tails_fast, code_main_scalar
  kFastAvx2,    // kFastScalar with code_main_avx2 (code_main_scalar where the CPU has no AVX2)
  kFast,        // kFastScalar with code_main_avx512 or code_main_avx2, the best the CPU has
};

// Tails (docs: "Lanes and phases"): lane l's last min(k_l, count) symbols are coded first, from
// state 0 and without renormalisation, so that they fill the state bits that a fixed initial
// state would waste. k_l is valid when the tail state ends in [L, 2^32) (a valid main-phase
// state) in a lane with symbols left for the main phase, below 2^32 in an all-tail lane; k = 0
// (start at L) is always valid. Valid k >= 1 form an interval [first_valid, last_valid] per
// lane, as tail states never decrease with k.
// The tail lengths: the fewest delta bits D (0..3) for which some K0 gives every lane a valid
// k_l >= 1 in [K0, K0 + 2^D - 1] (the largest such K0, and per lane the largest valid k_l);
// when no D <= 3 does, every lane starts at L (D = 0, K0 = 0).
struct TailChoice {
  uint32_t base = 0, delta_bits = 0;
  std::array<uint32_t, kRansLanes> tail{};   // k_l
  std::array<uint32_t, kRansLanes> state{};  // lane l's state after its tail (k_l >= 1)
};

// The reference: every lane's state after k = 1 .. kMaxTailSymbols tail symbols, then every
// K0 from the largest down.
TailChoice choose_tails_ref(const uint8_t* syms, uint64_t n, const Model& m, const std::array<Divisor, 256>& divisor) {
  constexpr uint64_t kNoFit = ~uint64_t{0};
  std::array<std::array<uint64_t, kMaxTailSymbols + 1>, kRansLanes> tail_state{};  // after k tail symbols
  std::array<uint32_t, kRansLanes> first_valid{}, last_valid{};  // 0, 0: no valid k >= 1
  const uint32_t used = lanes_used(n);
  for (uint32_t l = 0; l < used; ++l) {
    const uint64_t count = lane_symbol_count(n, l);
    uint64_t x = 0;
    for (uint32_t k = 1; k <= kMaxTailSymbols; ++k) {
      if (k <= count && x != kNoFit) {
        const uint8_t s = syms[(count - k) * kRansLanes + l];
        x = rans_step(static_cast<uint32_t>(x), divisor[s], m.cum[s], m.precision);
        if (x > 0xFFFFFFFFull) x = kNoFit;
      }
      tail_state[l][k] = x;  // k > count: stays at the all-tail state
      if (x != kNoFit && (k >= count || x >= kStateLower)) {
        if (first_valid[l] == 0) first_valid[l] = k;
        last_valid[l] = k;
      }
    }
  }
  TailChoice c;
  for (uint32_t d = 0; d <= kMaxDeltaBits && c.base == 0; ++d) {
    const uint32_t window = (1u << d) - 1;
    for (uint32_t k0 = kMaxTailSymbols; k0 >= 1 && c.base == 0; --k0) {
      bool ok = true;
      for (uint32_t l = 0; l < used && ok; ++l)
        ok = first_valid[l] != 0 && first_valid[l] <= k0 + window && last_valid[l] >= k0;
      if (!ok) continue;
      c.base = k0;
      c.delta_bits = d;
      for (uint32_t l = 0; l < used; ++l) c.tail[l] = std::min(last_valid[l], k0 + window);
    }
  }
  for (uint32_t l = 0; l < used; ++l)
    if (c.tail[l]) c.state[l] = static_cast<uint32_t>(tail_state[l][c.tail[l]]);
  return c;
}

// choose_tails_ref's choice with less work: a lane's steps stop where its state passes 2^32 (no
// longer tail is valid) or its symbols run out (every longer tail is valid, with the same state),
// and the K0 search is closed-form: lane l accepts the K0 in [first_valid - (2^D - 1), last_valid],
// so the largest K0 for D is the smallest last_valid when that is >= every lane's lower end.
TailChoice choose_tails_fast(const uint8_t* syms, uint64_t n, const Model& m, const std::array<Divisor, 256>& divisor) {
  // tail_state[l][k], k = 1 .. min(count, kMaxTailSymbols) while below 2^32: only those are written.
  std::array<std::array<uint32_t, kMaxTailSymbols + 1>, kRansLanes> tail_state;
  std::array<uint32_t, kRansLanes> first_valid{}, last_valid{};  // 0, 0: no valid k >= 1
  std::array<uint64_t, kRansLanes> count{};
  const uint32_t used = lanes_used(n);
  for (uint32_t l = 0; l < used; ++l) {
    count[l] = lane_symbol_count(n, l);
    uint64_t x = 0;
    for (uint32_t k = 1; k <= kMaxTailSymbols; ++k) {
      if (k > count[l]) {  // an all-tail lane: k = count was valid, and so is every longer k
        last_valid[l] = kMaxTailSymbols;
        break;
      }
      const uint8_t s = syms[(count[l] - k) * kRansLanes + l];
      x = rans_step(static_cast<uint32_t>(x), divisor[s], m.cum[s], m.precision);
      if (x > 0xFFFFFFFFull) break;
      tail_state[l][k] = static_cast<uint32_t>(x);
      if (k >= count[l] || x >= kStateLower) {
        if (first_valid[l] == 0) first_valid[l] = k;
        last_valid[l] = k;
      }
    }
  }
  bool every_lane_fits = true;
  uint32_t highest_first = 0, lowest_last = kMaxTailSymbols;
  for (uint32_t l = 0; l < used; ++l) {
    every_lane_fits &= first_valid[l] != 0;
    highest_first = std::max(highest_first, first_valid[l]);
    lowest_last = std::min(lowest_last, last_valid[l]);
  }
  TailChoice c;
  for (uint32_t d = 0; d <= kMaxDeltaBits && every_lane_fits && c.base == 0; ++d) {
    const uint32_t window = (1u << d) - 1;
    if (lowest_last >= 1 && lowest_last + window >= highest_first) {
      c.base = lowest_last;
      c.delta_bits = d;
      for (uint32_t l = 0; l < used; ++l) c.tail[l] = std::min(last_valid[l], c.base + window);
    }
  }
  for (uint32_t l = 0; l < used; ++l)
    if (c.tail[l]) c.state[l] = tail_state[l][std::min<uint64_t>(c.tail[l], count[l])];
  return c;
}

// Encodes the symbols with model `m` as a rANS stream of `mode` (kModeRans with the table inline,
// kModeRansShared without).
// `present` (fast path only): the model's present symbols, from which the table is written.
std::vector<uint8_t> encode_with_model(const uint8_t* syms, uint64_t n, const Model& m, Mode mode, EncodePath path,
                                       const QuantizeInput* present = nullptr) {
  const uint32_t p = m.precision;
  std::array<Divisor, 256> divisor;
  const std::array<Divisor, kMaxSlots + 1>& divisors = divisor_table();
  for (uint32_t s = 0; s < (1u << m.bits); ++s)
    if (m.freq[s]) divisor[s] = divisors[m.freq[s]];
  const TailChoice tails = path == EncodePath::kReference ? choose_tails_ref(syms, n, m, divisor)
                                                           : choose_tails_fast(syms, n, m, divisor);
  const Lanes lanes = lane_layout(n, tails.tail);

  std::array<SymbolCoder, 256> coder;  // read only for present symbols
  for (uint32_t s = 0; s < (1u << m.bits); ++s)
    if (m.freq[s])
      coder[s] = {(uint64_t{kStateLower >> p} << kWordBits) * m.freq[s], divisor[s].low_multiplier,
                  divisor[s].shift, (1u << p) - m.freq[s], m.cum[s]};
  std::array<uint32_t, kRansLanes> state{};  // main-phase states stay below 2^32
  for (uint32_t l = 0; l < lanes.used; ++l)
    state[l] = lanes.tail[l] ? tails.state[l] : kStateLower;
  // One word per symbol at most, and 8 spare words below them for code_main_avx2's whole-vector stores.
  constexpr size_t kSpareWords = 8;
  const auto words = std::make_unique_for_overwrite<uint16_t[]>(kSpareWords + n + 1);
  uint16_t* const words_end = words.get() + kSpareWords + n + 1;
  uint16_t* next = words_end;
  const uint64_t common_main = common_main_steps(lanes);
  next = code_main_ragged(syms, lanes, common_main, coder, state, next);
#if WPACK_RANS_AVX2
  const bool avx512 = path == EncodePath::kFast && have_avx512();
  const bool avx2 = (path == EncodePath::kFast || path == EncodePath::kFastAvx2) && have_avx2();
  if ((avx512 || avx2) && common_main > 0) {
    LaneCoder lane_coder{};  // absent symbols' entries are never used (the permutes load them: zero)
    for (uint32_t s = 0; s < (1u << m.bits); ++s) {
      const uint32_t f = m.freq[s];
      if (!f) continue;
      lane_coder.x_max[s] = static_cast<uint32_t>(coder[s].x_max);
      lane_coder.low_multiplier[s] = f == 1 ? ~uint32_t{0} : divisor[s].low_multiplier;
      lane_coder.shift[s] = f == 1 ? 0 : divisor[s].shift - 1;
      lane_coder.complement[s] = (1u << p) - f;
      lane_coder.cum[s] = f == 1 ? m.cum[s] + (1u << p) - 1 : m.cum[s];
    }
    if (avx512)
      next = m.bits <= 4 ? code_main_avx512<true>(syms, common_main, lane_coder, state, next)
                         : code_main_avx512<false>(syms, common_main, lane_coder, state, next);
    else
      next = m.bits <= 4 ? code_main_avx2<true>(syms, common_main, lane_coder, state, next)
                         : code_main_avx2<false>(syms, common_main, lane_coder, state, next);
  } else {
    next = code_main_scalar(syms, common_main, coder, state, next);
  }
#else
  next = code_main_scalar(syms, common_main, coder, state, next);
#endif
  const size_t word_count = static_cast<size_t>(words_end - next);

  // Header bits, table, lane states (docs: "Modes 1 and 3"), then the words.
  std::vector<uint8_t> out;
  out.reserve(1 + 64 + 4 * kRansLanes + 2 * word_count);
  out.push_back(mode);
  BitWriter w(out);
  w.put(p - kRansMinPrecision, kPrecisionFieldBits);
  write_tails(tails.base, tails.delta_bits, lanes, w);
  if (mode == kModeRans) {
    if (present) write_table_fast(m, *present, w);
    else write_table(m, w);
  }
  write_lane_states(state, lanes, w);
  w.finish();
  const size_t header_bytes = out.size();
  out.resize(header_bytes + 2 * word_count);
  uint8_t* word_bytes = out.data() + header_bytes;
  if constexpr (std::endian::native == std::endian::little) {
    if (word_count) std::memcpy(word_bytes, next, 2 * word_count);
  } else {
    for (size_t i = 0; i < word_count; ++i) {
      word_bytes[2 * i] = static_cast<uint8_t>(next[i]);
      word_bytes[2 * i + 1] = static_cast<uint8_t>(next[i] >> 8);
    }
  }
  return out;
}

// How rans_decode runs its common main phase; every path gives the same symbols and errors.
enum class DecodePath {
  kReference,  // the scalar loop
  kFast,       // AVX-512F where the CPU has it, else AVX2 where it has that, else the scalar loop
  kAvx2,       // AVX2 even where AVX-512F is there (tests), else the scalar loop
};

// The reference decoder's core: `x` holds the lanes' initial states, `words` the renormalisation
// words (docs: "Lanes and phases").
void decode_body(std::array<uint32_t, kRansLanes> x, std::span<const uint8_t> words, const Lanes& lanes,
                 const Model& m, uint8_t* out, DecodePath path) {
  const uint32_t p = m.precision;
  const uint32_t mask = (1u << p) - 1;
  // Decode table: slot -> symbol (bits 0-7), slot - cum (bits 8-19), freq - 1 (bits 20-31). Not
  // cleared: the frequencies sum to 2^p (read_table, check_table), so every slot is written.
  std::array<uint32_t, size_t{1} << kRansMaxPrecision> table;
  for (uint32_t s = 0; s < (1u << m.bits); ++s)
    for (uint32_t i = 0; i < m.freq[s]; ++i) table[m.cum[s] + i] = s | (i << 8) | ((m.freq[s] - 1) << 20);

  if (words.size() % 2 != 0) corrupt("odd number of renormalisation bytes");
  const uint8_t* word_bytes = words.data();
  const uint64_t word_count = words.size() / 2;
  uint64_t pos = 0;
  bool overrun = false;
  // One lane, one main-phase symbol: decode, then read one word if the state fell below L.
  auto decode_main = [&](uint32_t l, uint64_t i) {
    const uint32_t e = table[x[l] & mask];
    out[i] = static_cast<uint8_t>(e);
    uint32_t v = ((e >> 20) + 1) * (x[l] >> p) + ((e >> 8) & 0xFFF);
    const bool need = v < kStateLower;
    const bool have = pos < word_count;
    const uint32_t word = have ? uint32_t{word_bytes[2 * pos]} | (uint32_t{word_bytes[2 * pos + 1]} << 8) : 0;
    overrun |= need & !have;
    x[l] = need ? (v << kWordBits) | word : v;
    pos += need;
  };

  // Steps where all 32 lanes are in their main phase: no per-lane bookkeeping (with AVX-512F or
  // AVX2, as vectors while the stream holds a whole step's words).
  const uint64_t common_main = common_main_steps(lanes);
  uint64_t t_first = 0;
#if WPACK_RANS_AVX2
  if (path == DecodePath::kFast && have_avx512())
    t_first = decode_common_avx512(x, table.data(), p, word_bytes, word_count, pos, common_main, out);
  else if (path != DecodePath::kReference && have_avx2())
    t_first = decode_common_avx2(x, table.data(), p, word_bytes, word_count, pos, common_main, out);
#else
  (void)path;
#endif
  for (uint64_t t = t_first; t < common_main; ++t) {
    for (uint32_t l = 0; l < kRansLanes; ++l) decode_main(l, t * kRansLanes + l);
    if (overrun) corrupt("renormalisation reads past the end of the stream");
  }
  const uint64_t steps = lanes.count[0];
  for (uint64_t t = common_main; t < steps; ++t) {
    for (uint32_t l = 0; l < lanes.used; ++l) {
      if (t >= lanes.count[l]) continue;
      const uint64_t i = t * kRansLanes + l;
      if (t < lanes.main_len[l]) {
        decode_main(l, i);
      } else {
        const uint32_t e = table[x[l] & mask];
        out[i] = static_cast<uint8_t>(e);
        x[l] = ((e >> 20) + 1) * (x[l] >> p) + ((e >> 8) & 0xFFF);
      }
    }
    if (overrun) corrupt("renormalisation reads past the end of the stream");
  }
  // Lanes end where the encoder started: 0 after a tail, L without one.
  for (uint32_t l = 0; l < lanes.used; ++l)
    if (x[l] != (lanes.tail[l] ? 0 : kStateLower)) corrupt("final lane state is not the initial state");
  if (pos != word_count) corrupt("unused bytes after the last renormalisation word");
}

Model model_from_table(const RansTable& table) {
  Model m;
  m.bits = table.symbol_bits;
  m.precision = table.precision;
  for (uint32_t s = 0; s < (1u << table.symbol_bits); ++s) m.freq[s] = table.freq[s];
  m.finish_cum();
  return m;
}

void check_table(const RansTable& table, uint32_t symbol_bits) {
  if (table.symbol_bits != symbol_bits) invalid("shared table symbol_bits does not match the stream");
  if (table.precision < kRansMinPrecision || table.precision > kRansMaxPrecision) invalid("shared table precision out of range");
  if (table.freq.size() != (size_t{1} << symbol_bits)) invalid("shared table has the wrong size");
  uint64_t sum = 0;
  for (uint32_t f : table.freq) sum += f;
  if (sum != (uint64_t{1} << table.precision)) invalid("shared table frequencies do not sum to 2^precision");
}

}  // namespace

uint64_t rans_packed_bytes(uint64_t symbol_count, uint32_t symbol_bits) {
  check_symbol_bits(symbol_bits);
  if (symbol_count > kRansMaxSymbols) invalid("too many symbols: " + std::to_string(symbol_count));
  return (symbol_count * symbol_bits + 7) / 8;
}

uint64_t rans_max_stream_bytes(uint64_t symbol_count, uint32_t symbol_bits) {
  return 1 + rans_packed_bytes(symbol_count, symbol_bits);
}

RansTable build_rans_table(std::span<const uint64_t> histogram, uint32_t symbol_bits) {
  check_symbol_bits(symbol_bits);
  if (histogram.size() != (size_t{1} << symbol_bits)) invalid("histogram size must be 2^symbol_bits");
  std::array<uint64_t, 256> counts{};
  uint64_t total = 0;
  for (size_t s = 0; s < histogram.size(); ++s) {
    counts[s] = histogram[s];
    total = checked_add(total, histogram[s], "rans histogram total");
  }
  if (total == 0) invalid("empty histogram");
  if (total > (uint64_t{1} << 60)) invalid("histogram total too large");
  // The same precision rule as per-stream tables: the cheapest coded size (table bytes excluded:
  // a shared table is paid once).
  RansTable best;
  double best_bits = 0;
  for (uint32_t p = kRansMinPrecision; p <= kRansMaxPrecision; ++p) {
    const Model m = quantize_ref(counts, symbol_bits, p);
    double bits = 0;
    for (uint32_t s = 0; s < (1u << symbol_bits); ++s)
      if (counts[s]) bits += counts[s] * (p - std::log2(double(m.freq[s])));
    if (p == kRansMinPrecision || bits < best_bits) {
      best_bits = bits;
      best.symbol_bits = symbol_bits;
      best.precision = p;
      best.freq.assign(m.freq.begin(), m.freq.begin() + (1u << symbol_bits));
    }
  }
  return best;
}

std::vector<uint8_t> serialize_rans_table(const RansTable& table) {
  check_symbol_bits(table.symbol_bits);
  check_table(table, table.symbol_bits);
  std::vector<uint8_t> out{static_cast<uint8_t>(table.symbol_bits), static_cast<uint8_t>(table.precision)};
  BitWriter w(out);
  write_table(model_from_table(table), w);
  w.finish();
  return out;
}

RansTable deserialize_rans_table(std::span<const uint8_t> bytes, uint32_t symbol_bits) {
  check_symbol_bits(symbol_bits);
  if (bytes.size() < 2) corrupt("shared table truncated");
  if (bytes[0] != symbol_bits) corrupt("shared table symbol_bits does not match");
  if (bytes[1] < kRansMinPrecision || bytes[1] > kRansMaxPrecision) corrupt("shared table precision out of range");
  BitReader r(bytes.subspan(2));
  const Model m = read_table(r, symbol_bits, bytes[1]);
  if (2 + r.finish() != bytes.size()) corrupt("shared table has trailing bytes");
  RansTable t;
  t.symbol_bits = symbol_bits;
  t.precision = bytes[1];
  t.freq.assign(m.freq.begin(), m.freq.begin() + (1u << symbol_bits));
  return t;
}

namespace {

std::vector<uint8_t> encode_stream(std::span<const uint8_t> packed, uint64_t symbol_count, uint32_t symbol_bits,
                                   const RansTable* shared, EncodePath path) {
  const uint64_t packed_bytes = rans_packed_bytes(symbol_count, symbol_bits);
  if (packed.size() != packed_bytes) invalid("packed input is " + std::to_string(packed.size()) + " bytes, expected " + std::to_string(packed_bytes));
  if (shared) check_table(*shared, symbol_bits);

  // Stored raw: the baseline every other mode must beat, built only if nothing beats it. Padding
  // bits are written as zero.
  const uint64_t raw_size = 1 + packed_bytes;
  auto stored = [&] {
    std::vector<uint8_t> out(raw_size);
    out[0] = kModeRaw;
    if (packed_bytes) {
      std::memcpy(out.data() + 1, packed.data(), packed_bytes);
      const uint32_t used_bits = static_cast<uint32_t>((symbol_count * symbol_bits) % 8);
      if (used_bits) out[packed_bytes] &= static_cast<uint8_t>((1u << used_bits) - 1);
    }
    return out;
  };
  if (symbol_count == 0) return stored();

  // One symbol per byte (8-bit symbols are read in place).
  std::unique_ptr<uint8_t[]> unpacked;
  const uint8_t* syms = packed.data();
  if (symbol_bits != 8) {
    unpacked = std::make_unique_for_overwrite<uint8_t[]>(symbol_count);
    unpack_symbols(packed, symbol_count, symbol_bits, unpacked.get());
    syms = unpacked.get();
  }
  const std::array<uint64_t, 256> counts = path != EncodePath::kReference && symbol_bits == 4
                                               ? histogram_nibbles(packed.data(), symbol_count)
                                               : histogram(syms, symbol_count);
  uint32_t distinct = 0;
  for (uint64_t c : counts) distinct += c != 0;
  if (distinct == 1) return raw_size > 2 ? std::vector<uint8_t>{kModeConstant, syms[0]} : stored();

  // Table precision: a coarser table costs fewer table bits and, in each lane's tail, about one bit
  // less per precision step (coding from state 0 wastes ~p - 5 bits); a finer one codes closer to
  // the counts. Only the best precision by that estimate is encoded (ties: the lower p): encoding
  // the two best as well and keeping the smaller stream saved 0.01 bytes per int4 stream and 0.3
  // bytes per BF16 exponent stream on MiniLM (16384-symbol tiles), for twice the encoding time.
  const uint32_t used_lanes = lanes_used(symbol_count);
  Model best_model;
  double best_bits = 0;
  QuantizeInput input;  // the fast path's
  if (path == EncodePath::kReference) {
    std::vector<uint8_t> table_bytes;
    for (uint32_t p = kRansMinPrecision; p <= kRansMaxPrecision; ++p) {
      Model model = quantize_ref(counts, symbol_bits, p);
      table_bytes.clear();
      BitWriter table_bits(table_bytes);
      write_table(model, table_bits);
      double bits = static_cast<double>(table_bits.bits()) + static_cast<double>(used_lanes) * p;
      for (uint32_t s = 0; s < (1u << symbol_bits); ++s)
        if (counts[s]) bits += counts[s] * (p - std::log2(static_cast<double>(model.freq[s])));
      if (p == kRansMinPrecision || bits < best_bits) {
        best_bits = bits;
        best_model = model;
      }
    }
  } else {  // the same doubles in the same order (see quantize_fast)
    const Log2Tables& lg = log2_tables();
    input = quantize_input(counts, symbol_bits);
    const uint64_t present_bits = present_symbols_bits(input);
    const EstimateBound bound = estimate_bound(counts, input, present_bits, used_lanes);
    for (uint32_t p = kRansMinPrecision; p <= kRansMaxPrecision; ++p) {
      // No precision from here on can have an estimate below best_bits, so none would be taken.
      if (p > kRansMinPrecision && bound.at(p) > best_bits + bound.margin(best_bits)) break;
      Model model = quantize_fast(counts, input, p, lg);
      const uint64_t table_bits = table_bits_fast(model, input, present_bits);
      double bits = static_cast<double>(table_bits) + static_cast<double>(used_lanes) * p;
      for (uint32_t i = 0; i < input.present_count; ++i) {
        const uint32_t s = input.present[i];
        bits += counts[s] * (p - lg.value[model.freq[s]]);
      }
      if (p == kRansMinPrecision || bits < best_bits) {
        best_bits = bits;
        best_model = model;
      }
    }
  }
  std::vector<uint8_t> best = encode_with_model(syms, symbol_count, best_model, kModeRans, path,
                                                path == EncodePath::kReference ? nullptr : &input);
  if (shared) {
    const Model m = model_from_table(*shared);
    bool covered = true;
    for (uint32_t s = 0; s < 256; ++s) covered &= counts[s] == 0 || m.freq[s] != 0;
    if (covered) {
      std::vector<uint8_t> candidate = encode_with_model(syms, symbol_count, m, kModeRansShared, path);
      if (candidate.size() < best.size()) best = std::move(candidate);
    }
  }
  return best.size() < raw_size ? best : stored();
}

}  // namespace

std::vector<uint8_t> rans_encode(std::span<const uint8_t> packed, uint64_t symbol_count, uint32_t symbol_bits,
                                 const RansTable* shared) {
  return encode_stream(packed, symbol_count, symbol_bits, shared, EncodePath::kFast);
}

namespace detail {

std::vector<uint8_t> rans_encode_reference(std::span<const uint8_t> packed, uint64_t symbol_count,
                                           uint32_t symbol_bits, const RansTable* shared) {
  return encode_stream(packed, symbol_count, symbol_bits, shared, EncodePath::kReference);
}

std::vector<uint8_t> rans_encode_fast_scalar(std::span<const uint8_t> packed, uint64_t symbol_count,
                                             uint32_t symbol_bits, const RansTable* shared) {
  return encode_stream(packed, symbol_count, symbol_bits, shared, EncodePath::kFastScalar);
}

std::vector<uint8_t> rans_encode_avx2(std::span<const uint8_t> packed, uint64_t symbol_count, uint32_t symbol_bits,
                                      const RansTable* shared) {
  return encode_stream(packed, symbol_count, symbol_bits, shared, EncodePath::kFastAvx2);
}

RansSimd rans_simd() {
#if WPACK_RANS_AVX2
  return have_avx512() ? RansSimd::kAvx512 : have_avx2() ? RansSimd::kAvx2 : RansSimd::kNone;
#else
  return RansSimd::kNone;
#endif
}

}  // namespace detail

namespace {

void decode_stream(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                   std::span<uint8_t> packed_out, const RansTable* shared, DecodePath path) {
  const uint64_t packed_bytes = rans_packed_bytes(symbol_count, symbol_bits);
  if (packed_out.size() != packed_bytes) invalid("output is " + std::to_string(packed_out.size()) + " bytes, expected " + std::to_string(packed_bytes));
  if (shared) check_table(*shared, symbol_bits);
  if (stream.empty()) corrupt("empty stream");
  const uint8_t mode = stream[0];
  const uint32_t alphabet = 1u << symbol_bits;

  if (mode == kModeRaw) {
    if (stream.size() != 1 + packed_bytes) corrupt("stored stream has the wrong size");
    if (packed_bytes) {
      std::memcpy(packed_out.data(), stream.data() + 1, packed_bytes);
      const uint32_t used_bits = static_cast<uint32_t>((symbol_count * symbol_bits) % 8);
      if (used_bits && (packed_out[packed_bytes - 1] >> used_bits) != 0) corrupt("stored stream has non-zero padding bits");
    }
    return;
  }
  if (symbol_count == 0) corrupt("coded stream for zero symbols");
  if (mode == kModeConstant) {
    if (stream.size() != 2) corrupt("constant stream has the wrong size");
    if (stream[1] >= alphabet) corrupt("constant symbol out of range");
    std::vector<uint8_t> syms(symbol_count, stream[1]);
    pack_symbols(syms.data(), symbol_count, symbol_bits, packed_out);
    return;
  }
  if (mode != kModeRans && mode != kModeRansShared) corrupt("unknown mode " + std::to_string(mode));
  BitReader r(stream.subspan(1));
  const uint32_t precision = kRansMinPrecision + r.get(kPrecisionFieldBits);
  if (precision > kRansMaxPrecision) corrupt("precision out of range");
  const Lanes lanes = read_tails(symbol_count, r);
  Model m;
  if (mode == kModeRans) {
    m = read_table(r, symbol_bits, precision);
  } else {
    if (!shared) corrupt("stream needs a shared table and none was given");
    if (shared->precision != precision) corrupt("stream precision does not match the shared table");
    m = model_from_table(*shared);
  }
  const std::array<uint32_t, kRansLanes> x = read_lane_states(lanes, r);
  const std::span<const uint8_t> words = stream.subspan(1 + r.finish());
  if (symbol_bits == 8) {
    decode_body(x, words, lanes, m, packed_out.data(), path);
  } else {
    std::vector<uint8_t> syms(symbol_count);
    decode_body(x, words, lanes, m, syms.data(), path);
    pack_symbols(syms.data(), symbol_count, symbol_bits, packed_out);
  }
}

}  // namespace

void rans_decode(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                 std::span<uint8_t> packed_out, const RansTable* shared) {
  decode_stream(stream, symbol_count, symbol_bits, packed_out, shared, DecodePath::kFast);
}

namespace detail {

void rans_decode_reference(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                           std::span<uint8_t> packed_out, const RansTable* shared) {
  decode_stream(stream, symbol_count, symbol_bits, packed_out, shared, DecodePath::kReference);
}

void rans_decode_avx2(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                      std::span<uint8_t> packed_out, const RansTable* shared) {
  decode_stream(stream, symbol_count, symbol_bits, packed_out, shared, DecodePath::kAvx2);
}

}  // namespace detail

uint32_t rans_stream_precision(std::span<const uint8_t> stream) {
  if (stream.size() < 2 || (stream[0] != kModeRans && stream[0] != kModeRansShared)) return 0;
  const uint32_t precision = kRansMinPrecision + (stream[1] & ((1u << kPrecisionFieldBits) - 1));
  return precision <= kRansMaxPrecision ? precision : 0;
}

}  // namespace wpack
