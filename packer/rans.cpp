// Interleaved rANS plane codec: encoder, table quantisation and the scalar reference decoder.
// The format is specified in docs/FORMAT-rans.md; section names below refer to it.
#include "packer/rans.h"

#include <algorithm>  // std::min, std::reverse
#include <array>
#include <bit>        // std::bit_width
#include <cmath>      // std::log2 for the quantiser's cost model (encoder only)
#include <cstring>    // std::memcpy
#include <string>

#include "formats/error.h"  // Error, ErrorCode

namespace wpack {
namespace {

// ---- format constants (docs/FORMAT-rans.md, "Constants") ----
constexpr uint32_t kStateLower = uint32_t{1} << 16;  // L: main-phase states live in [L, 2^32)
constexpr uint32_t kWordBits = 16;                   // renormalisation unit
constexpr uint32_t kMaxTailSymbols = 63;             // K, 6 bits in the header byte
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
  void put(uint32_t value, uint32_t count) {  // count <= 25
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
  uint32_t get(uint32_t count) {  // count <= 25
    if (count > in_.size() * 8 - pos_) corrupt("table runs past the end of the stream");
    uint32_t v = 0;
    for (uint32_t i = 0; i < count; ++i, ++pos_) v |= uint32_t{(in_[pos_ >> 3] >> (pos_ & 7)) & 1u} << i;
    return v;
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
    while (pos_ < bytes * 8)
      if (get(1) != 0) corrupt("table: non-zero padding bits");
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

void write_table(const Model& m, BitWriter& w) {
  const uint32_t alphabet = 1u << m.bits;
  // Present symbols as runs: gap0+1, run, then (gap+1, run)* and 1 as the end marker (a real gap
  // between runs is >= 1, so its code is >= 2). A run reaching the alphabet's end ends the list.
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
  // Frequencies of all present symbols but the last (implied): f-1 as a bit length coded as a
  // zigzag delta from the previous one in unary, then the bits below the leading one.
  uint32_t last = 0;
  for (uint32_t s = 0; s < alphabet; ++s)
    if (m.freq[s]) last = s;
  int prev_len = 0;
  for (uint32_t s = 0; s < last; ++s) {
    if (!m.freq[s]) continue;
    const uint32_t v = m.freq[s] - 1;
    const int len = std::bit_width(v);
    const int delta = len - prev_len;
    const uint32_t zz = delta >= 0 ? 2u * delta : 2u * (-delta) - 1;
    w.put((1u << zz) - 1, zz + 1);  // zz ones, then a zero
    if (len >= 2) w.put(v & ((1u << (len - 1)) - 1), len - 1);
    prev_len = len;
  }
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
Model quantize(const std::array<uint64_t, 256>& counts, uint32_t bits, uint32_t precision) {
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
  auto gain_up = [&](uint32_t s) {  // bits saved by f+1
    return counts[s] * std::log2((m.freq[s] + 1.0) / m.freq[s]);
  };
  auto loss_down = [&](uint32_t s) {  // bits lost by f-1 (f > 1)
    return counts[s] * std::log2(m.freq[s] / (m.freq[s] - 1.0));
  };
  auto best_up = [&](uint32_t skip) {
    int best = -1;
    double g = -1;
    for (uint32_t s = 0; s < alphabet; ++s)
      if (counts[s] && s != skip && gain_up(s) > g) g = gain_up(s), best = static_cast<int>(s);
    return best;
  };
  auto best_down = [&](uint32_t skip) {
    int best = -1;
    double l = 0;
    for (uint32_t s = 0; s < alphabet; ++s)
      if (counts[s] && s != skip && m.freq[s] > 1 && (best < 0 || loss_down(s) < l))
        l = loss_down(s), best = static_cast<int>(s);
    return best;
  };
  const int64_t target = static_cast<int64_t>(total_slots);
  while (sum > target) {
    const int s = best_down(256);
    --m.freq[s];
    --sum;
  }
  while (sum < target) {
    const int s = best_up(256);
    ++m.freq[s];
    ++sum;
  }
  for (uint32_t iter = 0; iter < 4 * total_slots; ++iter) {
    const int up = best_up(256);
    const int down = best_down(static_cast<uint32_t>(up));
    if (up < 0 || down < 0) break;
    const double g = gain_up(up), l = loss_down(down);
    if (!(g > l * (1 + 1e-12) + 1e-9)) break;
    ++m.freq[up];
    --m.freq[down];
  }
  m.finish_cum();
  return m;
}

// ---- lanes (docs: "Lanes and phases") ----
struct Lanes {
  uint32_t used = 0;                 // lanes with at least one symbol: min(32, n)
  std::array<uint64_t, kRansLanes> count{};     // symbols of the lane
  std::array<uint64_t, kRansLanes> main_len{};  // symbols decoded with renormalisation
};

Lanes lane_layout(uint64_t n, uint32_t tail) {
  Lanes lanes;
  lanes.used = static_cast<uint32_t>(std::min<uint64_t>(n, kRansLanes));
  for (uint32_t l = 0; l < kRansLanes; ++l) {
    lanes.count[l] = n > l ? (n - 1 - l) / kRansLanes + 1 : 0;
    lanes.main_len[l] = lanes.count[l] - std::min<uint64_t>(tail, lanes.count[l]);
  }
  return lanes;
}

inline uint64_t rans_step(uint64_t x, uint32_t f, uint32_t c, uint32_t precision) {
  return ((x / f) << precision) + (x % f) + c;
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Encodes the symbols with model `m` as a rANS stream of `mode` (kModeRans with the table inline,
// kModeRansShared without).
std::vector<uint8_t> encode_with_model(const uint8_t* syms, uint64_t n, const Model& m, Mode mode) {
  const uint32_t p = m.precision;
  // Tail length K (docs: "Lanes and phases"): each lane's last min(K, count) symbols are coded
  // first, from state 0 and without renormalisation, so that they fill the state's low bits that
  // a fixed initial state would waste. Valid K: in every lane with symbols left for the main
  // phase the tail state ends in [L, 2^32) (a valid main-phase state); in an all-tail lane it
  // ends below 2^32. The largest valid K <= 63 is used; none valid: K = 0, lanes start at L.
  constexpr uint64_t kNoFit = ~uint64_t{0};
  std::array<std::array<uint64_t, kMaxTailSymbols + 1>, kRansLanes> tail_state{};  // after k tail symbols
  const uint32_t used = static_cast<uint32_t>(std::min<uint64_t>(n, kRansLanes));
  for (uint32_t l = 0; l < used; ++l) {
    const uint64_t count = (n - 1 - l) / kRansLanes + 1;
    uint64_t x = 0;
    for (uint32_t k = 1; k <= kMaxTailSymbols; ++k) {
      if (k <= count && x != kNoFit) {
        const uint8_t s = syms[(count - k) * kRansLanes + l];
        x = rans_step(x, m.freq[s], m.cum[s], p);
        if (x > 0xFFFFFFFFull) x = kNoFit;
      }
      tail_state[l][k] = x;  // k > count: stays at the all-tail state
    }
  }
  uint32_t tail = 0;
  for (uint32_t k = kMaxTailSymbols; k >= 1 && tail == 0; --k) {
    bool ok = true;
    for (uint32_t l = 0; l < used && ok; ++l) {
      const uint64_t count = (n - 1 - l) / kRansLanes + 1;
      const uint64_t x = tail_state[l][k];
      ok = x != kNoFit && (k >= count || x >= kStateLower);
    }
    if (ok) tail = k;
  }
  const Lanes lanes = lane_layout(n, tail);

  std::array<uint64_t, 256> x_max{};  // emit a word before coding s while x >= x_max[s]
  for (uint32_t s = 0; s < 256; ++s) x_max[s] = (uint64_t{kStateLower >> p} << kWordBits) * m.freq[s];

  std::array<uint64_t, kRansLanes> state{};
  for (uint32_t l = 0; l < lanes.used; ++l) state[l] = tail ? tail_state[l][tail] : kStateLower;
  std::vector<uint16_t> words;
  words.reserve(n / 4 + 16);
  const uint64_t steps = lanes.count[0];
  for (uint64_t t = steps; t-- > 0;) {
    for (uint32_t l = kRansLanes; l-- > 0;) {
      if (t >= lanes.main_len[l]) continue;
      const uint8_t s = syms[t * kRansLanes + l];
      uint64_t x = state[l];
      if (x >= x_max[s]) {
        words.push_back(static_cast<uint16_t>(x));
        x >>= kWordBits;
      }
      state[l] = rans_step(x, m.freq[s], m.cum[s], p);
    }
  }
  std::reverse(words.begin(), words.end());

  std::vector<uint8_t> out;
  out.reserve(2 + 64 + 4 * kRansLanes + 2 * words.size());
  out.push_back(mode);
  out.push_back(static_cast<uint8_t>((p - kRansMinPrecision) | (tail << 2)));
  if (mode == kModeRans) {
    BitWriter w(out);
    write_table(m, w);
    w.finish();
  }
  for (uint32_t l = 0; l < lanes.used; ++l) put_u32(out, static_cast<uint32_t>(state[l]));
  for (uint16_t word : words) {
    out.push_back(static_cast<uint8_t>(word));
    out.push_back(static_cast<uint8_t>(word >> 8));
  }
  return out;
}

// The reference decoder's core: `body` starts at the lane states.
void decode_body(std::span<const uint8_t> body, uint64_t n, const Model& m, uint32_t tail, uint8_t* out) {
  const uint32_t p = m.precision;
  const uint32_t mask = (1u << p) - 1;
  // Decode table: slot -> symbol (bits 0-7), slot - cum (bits 8-19), freq - 1 (bits 20-31).
  std::vector<uint32_t> table(size_t{1} << p);
  for (uint32_t s = 0; s < (1u << m.bits); ++s)
    for (uint32_t i = 0; i < m.freq[s]; ++i) table[m.cum[s] + i] = s | (i << 8) | ((m.freq[s] - 1) << 20);

  const Lanes lanes = lane_layout(n, tail);
  const size_t state_bytes = size_t{4} * lanes.used;
  if (body.size() < state_bytes) corrupt("truncated lane states");
  if ((body.size() - state_bytes) % 2 != 0) corrupt("odd number of renormalisation bytes");
  const uint8_t* word_bytes = body.data() + state_bytes;
  const uint64_t word_count = (body.size() - state_bytes) / 2;

  std::array<uint32_t, kRansLanes> x{};
  for (uint32_t l = 0; l < lanes.used; ++l) {
    const uint8_t* b = body.data() + 4 * l;
    x[l] = uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24);
  }
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

  // Steps where all 32 lanes are in their main phase: no per-lane bookkeeping.
  uint64_t common_main = lanes.used == kRansLanes ? lanes.main_len[kRansLanes - 1] : 0;  // the minimum
  for (uint64_t t = 0; t < common_main; ++t) {
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
  const uint32_t initial_state = tail ? 0 : kStateLower;
  for (uint32_t l = 0; l < lanes.used; ++l)
    if (x[l] != initial_state) corrupt("final lane state is not the initial state");
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
    const Model m = quantize(counts, symbol_bits, p);
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

std::vector<uint8_t> rans_encode(std::span<const uint8_t> packed, uint64_t symbol_count, uint32_t symbol_bits,
                                 const RansTable* shared) {
  const uint64_t packed_bytes = rans_packed_bytes(symbol_count, symbol_bits);
  if (packed.size() != packed_bytes) invalid("packed input is " + std::to_string(packed.size()) + " bytes, expected " + std::to_string(packed_bytes));
  if (shared) check_table(*shared, symbol_bits);

  std::vector<uint8_t> syms(symbol_count);
  unpack_symbols(packed, symbol_count, symbol_bits, syms.data());

  // Stored raw: the baseline every other mode must beat. Padding bits are written as zero.
  std::vector<uint8_t> best{kModeRaw};
  best.resize(1 + packed_bytes);
  pack_symbols(syms.data(), symbol_count, symbol_bits, std::span<uint8_t>(best).subspan(1));
  if (symbol_count == 0) return best;

  std::array<uint64_t, 256> counts{};
  for (uint8_t s : syms) ++counts[s];
  uint32_t distinct = 0;
  for (uint64_t c : counts) distinct += c != 0;
  auto consider = [&](std::vector<uint8_t>&& candidate) {
    if (candidate.size() < best.size()) best = std::move(candidate);
  };
  if (distinct == 1) {
    consider(std::vector<uint8_t>{kModeConstant, syms[0]});
    return best;
  }
  for (uint32_t p = kRansMinPrecision; p <= kRansMaxPrecision; ++p)
    consider(encode_with_model(syms.data(), symbol_count, quantize(counts, symbol_bits, p), kModeRans));
  if (shared) {
    const Model m = model_from_table(*shared);
    bool covered = true;
    for (uint32_t s = 0; s < 256; ++s) covered &= counts[s] == 0 || m.freq[s] != 0;
    if (covered) consider(encode_with_model(syms.data(), symbol_count, m, kModeRansShared));
  }
  return best;
}

void rans_decode(std::span<const uint8_t> stream, uint64_t symbol_count, uint32_t symbol_bits,
                 std::span<uint8_t> packed_out, const RansTable* shared) {
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
  if (stream.size() < 2) corrupt("truncated header");
  const uint32_t precision = kRansMinPrecision + (stream[1] & 3);
  const uint32_t tail = stream[1] >> 2;
  if (precision > kRansMaxPrecision) corrupt("precision out of range");
  Model m;
  size_t body_start = 2;
  if (mode == kModeRans) {
    BitReader r(stream.subspan(2));
    m = read_table(r, symbol_bits, precision);
    body_start += r.finish();
  } else {
    if (!shared) corrupt("stream needs a shared table and none was given");
    if (shared->precision != precision) corrupt("stream precision does not match the shared table");
    m = model_from_table(*shared);
  }
  if (symbol_bits == 8) {
    decode_body(stream.subspan(body_start), symbol_count, m, tail, packed_out.data());
  } else {
    std::vector<uint8_t> syms(symbol_count);
    decode_body(stream.subspan(body_start), symbol_count, m, tail, syms.data());
    pack_symbols(syms.data(), symbol_count, symbol_bits, packed_out);
  }
}

}  // namespace wpack
