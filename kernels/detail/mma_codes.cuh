// Internal to kernels/: quantized codes -> BF16 MMA operands, and the m16n8k16 BF16 / FP16 MMAs
// (the PRMT/LOP3 tricks of FasterTransformer and Marlin, adapted to BF16 and to wpack's plain
// row-major LSB-first packing).
#pragma once

#include <cstdint>

namespace wpack::gpu::detail {

// Codes as BF16 MMA operands *plus a constant offset*: A holds (kBase + c) exactly, so that no
// subtraction is needed per code; the caller removes (kBase + zero) * sum(x) per row and group
// (int4/3/2: sum(x) from prepare_kernel, kernels/quant_gemv_tma.cu x_sums). kBase + c < 256 (int4) or
// < 2176 + 256 with 16-steps (int8 hi nibbles) is exact in BF16 (8 significant bits).
//   int4 word w = codes c0..c7 (nibble i = c_i, LSB first):
//     pair k (k = 0..3) = ((w >> 4k) & 0x000F000F) | 0x43004300 = bf16x2 (128 + c_k, 128 + c_{k+4})
//     (one LOP3 each, plus a shift): A k-slots hold columns (0,4) (1,5) (2,6) (3,7), so the x
//     fragment is permuted the same way (b_from_x).
//   int8 word = codes c0..c3 (bytes): lo = w & 0x0F0F0F0F, hi = (w >> 4) & 0x0F0F0F0F;
//     PRMT with 0x43 gives (128 + lo_i, 128 + lo_j), with 0x45 (2048 + 16 hi_i, 2048 + 16 hi_j);
//     a code's two parts sum to 2176 + c. A k-slots: lo (0,1) (2,3), hi (0,1) (2,3): B repeats x.
__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("sub.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// bf16x2 (v, v) of an integer v < 2^8, or 2176 (exact in BF16: 8 significant bits).
__device__ __forceinline__ uint32_t bf16x2_splat_int(float v) {
  const uint32_t b = __float_as_uint(v) >> 16;
  return b | (b << 16);
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// One LOP3 of the truth table kLut (a: 0xF0, b: 0xCC, c: 0xAA), for the functions of constant
// masks that the compiler would split into two instructions (a LOP3 takes one immediate).
template <uint32_t kLut>
__device__ __forceinline__ uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, %4;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"(kLut));
  return d;
}
// (a & b) | c: the compiler splits (a & imm) | imm; here b and c stay in registers across the loop.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) { return lop3<0xEA>(a, b, c); }
// (a & mask) | (b & ~mask): written as C with a constant mask, the compiler masks b first.
__device__ __forceinline__ uint32_t bit_select(uint32_t a, uint32_t b, uint32_t mask) { return lop3<0xE4>(a, b, mask); }

// w shifted left by kShift bits (right by -kShift when negative).
template <int kShift>
__device__ __forceinline__ uint32_t shifted(uint32_t w) {
  return kShift >= 0 ? w << kShift : w >> -kShift;
}

// Minifloat codes (fp8/6/5/4) at the same bit position of both halves of r as bf16x2 values: the
// magnitude bits (exponent, then mantissa) moved by kMagShift into `mag_mask`, just below the BF16
// exponent's top bits, and the sign bit moved by kSignShift to bit 15. That BF16 is the code's value
// times 2^-kValueExp of its type (a code of exponent 0 a BF16 subnormal with the same ratio, which
// the tensor cores take as it is: measured on the H200). No multiply per pair where a warp
// multiplies several row blocks: x is multiplied instead (scale_x, once per element in
// prepare_kernel), which serves all of them, and the partial sums by 2^(kValueExp - kXExp) where
// it applies the scales (minifloat_flush_exp); elsewhere one multiply per pair (minifloat_value).
template <int kMagShift, int kSignShift>
__device__ __forceinline__ uint32_t place_minifloat(uint32_t r, uint32_t mag_mask) {
  return and_or(shifted<kSignShift>(r), 0x80008000u, shifted<kMagShift>(r) & mag_mask);
}

// x as the B operand of minifloat A values: times 2^kXExp (exact: BF16 subnormals become normal),
// so that products of values near 2^-kValueExp stay in float32's normal range. The products and
// sums are then the plain ones times 2^(kXExp - kValueExp), exactly (powers of two), and y is bit
// for bit what a multiply per pair gave, for |x| < 2^64 (larger x overflow to infinity; BF16
// activations that large do not occur in a working model) and partial sums above 2^-64 or so.
constexpr int kXExp = 64;
constexpr uint32_t kXScale = 0x5F805F80u;  // bf16x2 (2^64, 2^64)
__device__ __forceinline__ uint32_t scale_x(uint32_t b) { return bf16x2_mul(b, kXScale); }
// The value itself from place_minifloat's value x 2^-kValueExp: one multiply (exact), for the
// callers whose A pairs outnumber their B registers (warps sharing a tile at batch > 16).
template <int kValueExp>
__device__ __forceinline__ uint32_t minifloat_value(uint32_t a) {
  constexpr uint32_t kBits = uint32_t{127 + kValueExp} << 7;  // BF16 2^kValueExp
  return kValueExp ? bf16x2_mul(a, kBits | (kBits << 16)) : a;
}
// The exponent of the factor that turns sums of (A of kValueExp) x (scale_x'd x) back into sums of
// values times x; 0 for A values that are the values themselves (kValueExp 0).
constexpr int minifloat_flush_exp(int value_exp) { return value_exp ? value_exp - kXExp : 0; }
// 2^e as a float, e >= 0, at compile time.
constexpr float pow2f(int e) {
  float f = 1.0f;
  for (int i = 0; i < e; ++i) f *= 2.0f;
  return f;
}

template <uint32_t kBits>
struct MmaCodes {
  static_assert(kBits == 4 || kBits == 8, "int4 and int8 codes");
  static constexpr uint32_t kPerWord = 32 / kBits;            // codes per 32-bit word: 8 or 4
  __device__ static __forceinline__ void pairs(uint32_t w, uint32_t (&a)[4]) {
    if constexpr (kBits == 4) {
      constexpr uint32_t kMask = 0x000F000Fu, kMagic = 0x43004300u;
      a[0] = and_or(w, kMask, kMagic);
      a[1] = and_or(w >> 4, kMask, kMagic);
      a[2] = and_or(w >> 8, kMask, kMagic);
      a[3] = and_or(w >> 12, kMask, kMagic);
    } else {
      const uint32_t lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
      a[0] = __byte_perm(lo, 0x43434343u, 0x4140);  // (lo c0, lo c1)
      a[1] = __byte_perm(lo, 0x43434343u, 0x4342);  // (lo c2, lo c3)
      a[2] = __byte_perm(hi, 0x45454545u, 0x4140);  // (hi c0, hi c1)
      a[3] = __byte_perm(hi, 0x45454545u, 0x4342);  // (hi c2, hi c3)
    }
  }
  // pairs() minus per-pair offsets (bf16x2, exact): off_lo from every int4 pair and int8 lo pair
  // (128 + zero for int4, 128 for int8), off_hi from int8 hi pairs (2176): the A values are then
  // the codes' values (c - zero), and no sum of x is needed.
  __device__ static __forceinline__ void pairs_sub(uint32_t w, uint32_t off_lo, uint32_t off_hi, uint32_t (&a)[4]) {
    pairs(w, a);
    a[0] = bf16x2_sub(a[0], off_lo);
    a[1] = bf16x2_sub(a[1], off_lo);
    a[2] = bf16x2_sub(a[2], kBits == 4 ? off_lo : off_hi);
    a[3] = bf16x2_sub(a[3], kBits == 4 ? off_lo : off_hi);
  }
  // The B fragment of a word from x's BF16 values of its columns, as bf16x2 pairs in column order:
  // x01, x23, x45, x67 (int4: 8 columns) or x01, x23 (int8: 4 columns; x45, x67 unused).
  __device__ static __forceinline__ void b_from_x(uint32_t x01, uint32_t x23, uint32_t x45, uint32_t x67,
                                                  uint32_t (&b)[4]) {
    if constexpr (kBits == 4) {
      b[0] = __byte_perm(x01, x45, 0x5410);  // (x0, x4)
      b[1] = __byte_perm(x01, x45, 0x7632);  // (x1, x5)
      b[2] = __byte_perm(x23, x67, 0x5410);  // (x2, x6)
      b[3] = __byte_perm(x23, x67, 0x7632);  // (x3, x7)
    } else {
      b[0] = b[2] = x01;
      b[1] = b[3] = x23;
    }
  }
};

// FP8 E4M3 codes (sign bit 7, magnitude bits 0..6 = eeeemmm, bias 7) as BF16 MMA operands: the
// magnitude is placed at BF16 bits 4..10 and the sign at bit 15, which is the code's value times
// 2^-120 (normal codes: exponent e - 127 instead of e - 7; subnormal codes (e = 0) become BF16
// subnormals with the same ratio; no multiply: x is scaled instead, place_minifloat). Word w = codes c0..c3 (bytes) -> pairs (c0, c2) and (c1, c3), so the
// x fragment pairs (x0, x2) and (x1, x3).
struct MmaFp8 {
  static constexpr uint32_t kPerWord = 4;
  static constexpr int kValueExp = 120;  // A = value x 2^-120 (place_minifloat)
  __device__ static __forceinline__ void pairs(uint32_t w, uint32_t (&a)[2]) {
    constexpr uint32_t kMag = 0x07F007F0u;
    a[0] = place_minifloat<4, 8>(w, kMag);   // (c0, c2)
    a[1] = place_minifloat<-4, 0>(w, kMag);  // (c1, c3)
  }
  __device__ static __forceinline__ void b_from_x(uint32_t x01, uint32_t x23, uint32_t (&b)[2]) {
    b[0] = __byte_perm(x01, x23, 0x5410);  // (x0, x2)
    b[1] = __byte_perm(x01, x23, 0x7632);  // (x1, x3)
  }
};

// int8 codes (stored as value + 128, a byte each) as FP16 MMA operands: FP16 has 11 significant
// bits, so 1024 + byte is exact, and one PRMT per pair places a code byte under the exponent byte
// 0x64 (1024): A holds 1152 + value, the caller removes 1152 * sum(x) per row and tile (sum(x) from
// an MMA with A = kF16x2Ones). Word w = codes c0..c3 -> pairs (c0, c1) and (c2, c3): x's FP16
// values in column order are the B fragment as they are. One MMA per word, against MmaCodes<8>'s
// two BF16 MMAs (BF16's 8 significant bits hold 128 + 7 bits only); x must be FP16 (prepare_kernel
// writes it, times a power of two per tile column).
struct MmaInt8Half {
  static constexpr float kBase = 1152.0f;  // 1024 + 128
  __device__ static __forceinline__ void pairs(uint32_t w, uint32_t (&a)[2]) {
    a[0] = __byte_perm(w, 0x64646464u, 0x4140);  // (c0, c1)
    a[1] = __byte_perm(w, 0x64646464u, 0x4342);  // (c2, c3)
  }
};
constexpr uint32_t kF16x2Ones = 0x3C003C00u;  // f16x2 (1.0, 1.0)

// (a & mask) | (b & ~mask) in one LOP3 (mask in a register, kept across the loop).
__device__ __forceinline__ uint32_t select_bits(uint32_t a, uint32_t b, uint32_t mask) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xE4;\n" : "=r"(d) : "r"(a), "r"(b), "r"(mask));
  return d;
}

// Lossless BF16 tiles of codec exp4 (docs/FORMAT.md "Codec 3, exp4") as BF16 MMA operands, exactly
// the source weights: floatplanes plane 1 byte m = mantissa << 1 | sign, exponent = base + code
// (4-bit code). Word w = the plane-1 bytes of 4 consecutive columns c0..c3 and x = their codes'
// two bytes spread to bytes 0 and 2 of a register (PRMT; bytes 1 and 3 zero): pairs (c0, c2) and
// (c1, c3), as MmaFp8's, so the x fragment is MmaFp8::b_from_x's. Per pair: a PRMT places the two
// plane-1 bytes at bytes 0 and 2 and base (base4: base in every byte) at bytes 1 and 3; shifted
// right by one that is mantissa | base << 7 in each half, and shifted left by 15 it has the signs
// at bits 15 and 31 (one LOP3 selects them); then the codes, masked (LOP), are added at the
// exponent's low bits by one LEA. base + code <= 255: the sum never carries into the sign.
struct MmaExp4 {
  static constexpr uint32_t kSelect = 0x7FFF7FFFu;  // from the right shift; the sign bits from the left one
  __device__ static __forceinline__ void pairs(uint32_t w, uint32_t x, uint32_t base4, uint32_t select,
                                               uint32_t (&a)[2]) {
    const uint32_t p02 = __byte_perm(w, base4, 0x4240), p13 = __byte_perm(w, base4, 0x4341);
    a[0] = select_bits(p02 >> 1, p02 << 15, select) + ((x & 0x000F000Fu) << 7);  // (c0, c2)
    a[1] = select_bits(p13 >> 1, p13 << 15, select) + ((x & 0x00F000F0u) << 3);  // (c1, c3)
  }
};

// FP6 E3M2 codes (sign bit 5, magnitude bits 0..4 = eeemm, bias 3), packed LSB first: a chunk of
// 16 codes is 3 words. Same placement as MmaFp8 (magnitude at BF16 bits 5..9, sign at 15: the value
// times 2^-124). Every 4 codes are 3 bytes; G0..G3 = the chunk's 3-byte
// groups (codes 4k..4k+3 at bits 0, 6, 12, 18 of G_k). PRMT of two groups puts the same code of
// both in the two halves of a register at the same bit position p; then two shifts place the
// magnitude (p -> 5) and the sign (p + 5 -> 15) of both at once. Pairs, in order: codes (0,4)
// (1,5) (2,6) (3,7) (8,12) (9,13) (10,14) (11,15): the x fragment pairs are MmaCodes<4>::b_from_x's
// of columns 0..7 and of 8..15.
struct MmaFp6 {
  static constexpr uint32_t kMag = 0x03E003E0u, kSign = 0x80008000u;
  static constexpr int kValueExp = 124;  // A = value x 2^-124 (place_minifloat)
  // place_minifloat<5 - kP, 10 - kP>(r, kMag), written out in the order that was measured: the
  // helper's order (sign shift first) schedules fp6's kernels differently and ran its batch-1 GEMV
  // 1% slower on the H200 (28672x8192, 55.3-55.4 against 54.8 us, two alternations; then with a
  // multiply per pair)
  // kValue: the values themselves (minifloat_value), else the values times 2^-kValueExp
  template <int kP, bool kValue>  // kP: a code's first bit in each half
  __device__ static __forceinline__ uint32_t place(uint32_t r) {
    const uint32_t mag = shifted<5 - kP>(r), sign = shifted<10 - kP>(r);
    return minifloat_value<kValue ? kValueExp : 0>(and_or(sign, kSign, mag & kMag));
  }
  template <bool kValue>
  __device__ static __forceinline__ void pairs_of(uint32_t ga, uint32_t gb, uint32_t* a) {
    const uint32_t lo = __byte_perm(ga, gb, 0x5410);  // bits 0..15 of each group: codes at 0 and 6
    const uint32_t hi = __byte_perm(ga, gb, 0x6521);  // bits 8..23: codes at 4 and 10
    a[0] = place<0, kValue>(lo);
    a[1] = place<6, kValue>(lo);
    a[2] = place<4, kValue>(hi);
    a[3] = place<10, kValue>(hi);
  }
  template <bool kValue>
  __device__ static __forceinline__ void chunk(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t (&a)[8]) {
    pairs_of<kValue>(w0, __funnelshift_r(w0, w1, 24), a);
    pairs_of<kValue>(__funnelshift_r(w1, w2, 16), w2 >> 8, a + 4);
  }
};

// ---- the lane-codes types: the schemes below 8 bits but fp6 (int4/3/2, fp5/4, nf4, lut4) for the
// bulk-copy GEMV ----
// One lane's share of a k-step: kCols consecutive columns of a tile row (kWords code words of the
// LSB-first packing) as kPairs bf16x2 A pairs (fp16x2: kHalf), 4 at a time (pairs4: the pairs of
// two MMAs; part is a constant after unrolling), and x's fragment pairs of one part in the same column order (x_part4;
// kXSpan: the order prepare_kernel writes x in). A pairs 2m, 2m + 1 of a row pair go into
// one MMA with B pairs 2m, 2m + 1 (the MMA's k-slots of a lane are its own: any column order works
// when A and B agree). kOffset: A holds kBase + code (int codes), and the caller removes
// (kBase + zero) * sum(x) per row and group; else A holds the code's value. kScaled: plane A holds
// an fp16 scale per row and group (else no plane A, no scale). kTableBytes: the codes index a LaneTable
// that the kernel fills in shared memory.

// kWords B registers of one batch column from prepare_kernel's x (FP16, or BF16 in the B pairs'
// order) at column `col` (zeros when `valid` is false: nothing is read).
template <uint32_t kWords>
__device__ __forceinline__ void prepared_x_words(const uint8_t* xrow, uint32_t col, bool valid, uint32_t* b) {
  static_assert(kWords == 2 || kWords % 4 == 0, "whole 8- or 16-byte loads");
  if constexpr (kWords == 2) {
    const uint2 v = valid ? *reinterpret_cast<const uint2*>(xrow + 2 * col) : make_uint2(0, 0);
    b[0] = v.x, b[1] = v.y;
  } else {
#pragma unroll
    for (uint32_t i = 0; i < kWords; i += 4) {
      const uint4 v = valid ? *reinterpret_cast<const uint4*>(xrow + 2 * col + 4 * i) : make_uint4(0, 0, 0, 0);
      b[i] = v.x, b[i + 1] = v.y, b[i + 2] = v.z, b[i + 3] = v.w;
    }
  }
}

// The B pairs of one part's two MMAs (warps sharing a tile; a warp per part of a tile takes
// prepare_kernel's x in this order, PreparedX), for a lane's columns from `col`: by4, 8 columns
// ((x_c, x_{c+4}) pairs: MmaCodes<4>'s order, for codes (c_k, c_{k+4})); by8, 4 + 4 columns 8
// apart.
__device__ __forceinline__ void x_part4_by4(const uint8_t* xrow, uint32_t col, uint32_t part, bool valid,
                                            uint32_t (&b)[4]) {
  b[0] = b[1] = b[2] = b[3] = 0;
  if (valid) {
    const uint4 x4 = *reinterpret_cast<const uint4*>(xrow + 2 * (col + 8 * part));
    MmaCodes<4>::b_from_x(x4.x, x4.y, x4.z, x4.w, b);
  }
}
__device__ __forceinline__ void x_part4_by8(const uint8_t* xrow, uint32_t col, uint32_t part, bool valid,
                                            uint32_t (&b)[4]) {
  b[0] = b[1] = b[2] = b[3] = 0;
  if (valid) {
    const uint8_t* at = xrow + 2 * (col + 16 * (part / 2) + 4 * (part % 2));
    const uint2 lo = *reinterpret_cast<const uint2*>(at), hi = *reinterpret_cast<const uint2*>(at + 16);
    b[0] = __byte_perm(lo.x, hi.x, 0x5410);
    b[1] = __byte_perm(lo.x, hi.x, 0x7632);
    b[2] = __byte_perm(lo.y, hi.y, 0x5410);
    b[3] = __byte_perm(lo.y, hi.y, 0x7632);
  }
}

// LanePairTable4's code table in shared memory, one copy per bank: entry b for lane l at byte
// 128 b + 4 l of `base` (a warp's 32 lookups never conflict); lane4: 4 * the lane. 256 entries
// (32 KiB): entry b is the FP16 pair (v(b & 15), v(b >> 4)) of a code byte b. The other lane-codes
// types take it and ignore it. (The base's 32-bit shared address is formed where it is used:
// computed once at the kernel's start and held in a register instead, it made the batch-1 nf4
// instance spill 16 bytes.)
struct LaneTable {
  const uint8_t* base = nullptr;
  uint32_t lane4 = 0;
};
constexpr uint32_t kPairTableBytes = 256 * 32 * 4;

// The x side of the lane-codes types: x_part4 for codes paired 4 apart (int4
// packing: (c_k, c_{k+4})) or 8 apart (int2, int3, fp5: (c_i, c_{i+8})).
template <uint32_t kApart>
struct XPairs {
  // 0: A holds the code's value (or kBase + code); else A holds the value times 2^-kValueExp and x
  // is taken times 2^kXExp (scale_x: the minifloat types)
  static constexpr int kValueExp = 0;
  static constexpr bool kHalf = false;  // BF16 A pairs and x (LanePairTable4: FP16)
  static constexpr uint32_t kTableBytes = 0;  // the code table's shared memory (LanePairTable4)
  // x's column order in the B pairs: pair i of each 2 kApart columns is (x_i, x_{i + kApart})
  static constexpr uint32_t kXSpan = 2 * kApart;
  __device__ static __forceinline__ void x_part4(const uint8_t* xrow, uint32_t col, uint32_t part, bool valid,
                                                 uint32_t (&b)[4]) {
    if constexpr (kApart == 4) x_part4_by4(xrow, col, part, valid, b);
    else x_part4_by8(xrow, col, part, valid, b);
  }
};

// int4: two words, pairs (c_k, c_{k+4}) of each (MmaCodes<4>).
struct LaneInt4 : XPairs<4> {
  static constexpr uint32_t kBits = 4, kCols = 16, kWords = 2, kPairs = 8;
  static constexpr bool kOffset = true, kScaled = true;
  static constexpr float kBase = 128.0f;
  __device__ static __forceinline__ void pairs4(const uint32_t (&w)[kWords], uint32_t part, uint32_t (&a)[4],
                                                 const LaneTable&) {
    MmaCodes<4>::pairs(w[part], a);
  }
};

// fp4 E2M1 (sign bit 3, magnitude eem, bias 1), the int4 packing: pair (c_k, c_{k+4}) with the
// magnitude placed at BF16 bits 6..8 and the sign at 15, the code's value times 2^-126 (e = 0:
// a BF16 subnormal with the same ratio).
struct LaneFp4 : XPairs<4> {
  static constexpr uint32_t kBits = 4, kCols = 16, kWords = 2, kPairs = 8;
  static constexpr bool kOffset = false, kScaled = true;
  static constexpr int kValueExp = 126;
  template <int kK>  // pair (c_kK, c_{kK+4}) of a word
  __device__ static __forceinline__ uint32_t pair(uint32_t w) {
    return place_minifloat<6 - 4 * kK, 12 - 4 * kK>(w, 0x01C001C0u);  // value x 2^-126
  }
  __device__ static __forceinline__ void pairs4(const uint32_t (&w)[kWords], uint32_t part, uint32_t (&a)[4],
                                                 const LaneTable&) {
    a[0] = pair<0>(w[part]);
    a[1] = pair<1>(w[part]);
    a[2] = pair<2>(w[part]);
    a[3] = pair<3>(w[part]);
  }
};

// 4-bit codes that index a 16-entry table (nf4: kScaled; lut4 with one table: no scales) as FP16
// values, for FP16 MMAs with FP16 x: each code byte (two adjacent columns) is one A pair, read
// from the 256-entry LaneTable by one shared load whose 32-bit address is a PRMT (the byte) and an
// IMAD (times 128, plus the lane's copy) away from the code word (through the generic pointer,
// each load also added the shared window's base, not a compile-time constant on sm_90); one MMA
// per 4 pairs. The batch-1 nf4 loop of 16 code words is 231 SASS instructions; a 16-entry table
// of each value as two BF16s (high part and remainder, two BF16 MMAs per 4 pairs) took 704. A
// pair's x is (x_c, x_{c+1}): x in its own order. An FP16 holds a lut4 value (stored as FP16)
// exactly and an nf4 value to 2^-11 of itself (the BF16 pair: 2^-17).
template <bool kScaledCodes>
struct LanePairTable4 {
  static constexpr uint32_t kBits = 4, kCols = 16, kWords = 2, kPairs = 8;
  static constexpr bool kOffset = false, kScaled = kScaledCodes, kHalf = true;
  static constexpr uint32_t kTableBytes = kPairTableBytes;
  static constexpr int kValueExp = 0;
  static constexpr uint32_t kXSpan = 0;  // x as it is
  // the pair of code byte kByte of word v; at: the lane's copy of entry 0 (a shared-memory address)
  template <uint32_t kByte>
  __device__ static __forceinline__ uint32_t entry(uint32_t v, uint32_t at) {
    uint32_t pair;
    asm("ld.shared.u32 %0, [%1];\n" : "=r"(pair) : "r"(at + (__byte_perm(v, 0, 0x4440 + kByte) << 7)));
    return pair;
  }
  __device__ static __forceinline__ void pairs4(const uint32_t (&w)[kWords], uint32_t part, uint32_t (&a)[4],
                                                 const LaneTable& t) {
    const uint32_t at = static_cast<uint32_t>(__cvta_generic_to_shared(t.base)) + t.lane4;
    a[0] = entry<0>(w[part], at);  // (c0, c1)
    a[1] = entry<1>(w[part], at);  // (c2, c3)
    a[2] = entry<2>(w[part], at);  // (c4, c5)
    a[3] = entry<3>(w[part], at);  // (c6, c7)
  }
  // x's B pairs of part `part` of the lane's columns from `col` (warps sharing a tile: FP16 x as it
  // is, pairs of adjacent columns; zeros when `valid` is false)
  __device__ static __forceinline__ void x_part4(const uint8_t* xrow, uint32_t col, uint32_t part, bool valid,
                                                 uint32_t (&b)[4]) {
    prepared_x_words<4>(xrow, col + 8 * part, valid, b);
  }
};

// int2: one word of 16 codes, pairs (c_k, c_{k+8}): ((w >> 2k) & 0x00030003) | 0x43004300 is
// bf16x2 (128 + c_k, 128 + c_{k+8}), one LOP3 each.
struct LaneInt2 : XPairs<8> {
  static constexpr uint32_t kBits = 2, kCols = 16, kWords = 1, kPairs = 8;
  static constexpr bool kOffset = true, kScaled = true;
  static constexpr float kBase = 128.0f;
  __device__ static __forceinline__ void pairs4(const uint32_t (&w)[kWords], uint32_t part, uint32_t (&a)[4],
                                                 const LaneTable&) {
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) a[k] = and_or(w[0] >> (2 * (4 * part + k)), 0x00030003u, 0x43004300u);
  }
};

// int3: three words = 32 codes = four 3-byte groups G0..G3 of 8 codes (code i at bit 3i). As for
// fp6 (MmaFp6), PRMT of two groups puts the same code of both in the two halves of a register:
// lo = bits 0..15 of each (codes 0, 1, 2 at 0, 3, 6), hi = bits 8..23 (codes 3..7 at 1, 4, 7, 10,
// 13); then one shift and one LOP3 per pair: (128 + c_i of G0, of G1), then of G2, G3. So pairs
// 0..7 are columns (i, i + 8), pairs 8..15 columns (16 + i, 24 + i).
struct LaneInt3 : XPairs<8> {
  static constexpr uint32_t kBits = 3, kCols = 32, kWords = 3, kPairs = 16;
  static constexpr bool kOffset = true, kScaled = true;
  static constexpr float kBase = 128.0f;
  // pairs 4 half .. 4 half + 3 of groups ga, gb: codes 0..3 (half 0) or 4..7 (1)
  __device__ static __forceinline__ void pairs_of(uint32_t ga, uint32_t gb, uint32_t half, uint32_t (&a)[4]) {
    constexpr uint32_t kMask = 0x00070007u, kMagic = 0x43004300u;
    const uint32_t hi = __byte_perm(ga, gb, 0x6521);
    if (half == 0) {
      const uint32_t lo = __byte_perm(ga, gb, 0x5410);
      a[0] = and_or(lo, kMask, kMagic);
      a[1] = and_or(lo >> 3, kMask, kMagic);
      a[2] = and_or(lo >> 6, kMask, kMagic);
      a[3] = and_or(hi >> 1, kMask, kMagic);
    } else {
      a[0] = and_or(hi >> 4, kMask, kMagic);
      a[1] = and_or(hi >> 7, kMask, kMagic);
      a[2] = and_or(hi >> 10, kMask, kMagic);
      a[3] = and_or(hi >> 13, kMask, kMagic);
    }
  }
  // part 0, 1: groups G0, G1; 2, 3: G2, G3
  __device__ static __forceinline__ void pairs4(const uint32_t (&w)[kWords], uint32_t part, uint32_t (&a)[4],
                                                 const LaneTable&) {
    if (part < 2) pairs_of(w[0], __funnelshift_r(w[0], w[1], 24), part, a);
    else pairs_of(__funnelshift_r(w[1], w[2], 16), w[2] >> 8, part - 2, a);
  }
};

// fp5 E2M2 (sign bit 4, magnitude eemm, bias 1), per-row scales: five words = 32 codes = four
// 5-byte groups G0..G3 of 8 codes (code i at bit 5i). As for int3, PRMT of two groups puts the
// same code of both in the two halves of a register: bytes 0-1, 1-2, 2-3 of each group's first
// four bytes (A) hold codes 0, 1 (at bits 0, 5), 2, 3 (2, 7), 4, 5 (4, 9), bytes 2-3 of its bytes
// 1..4 (B) codes 6, 7 (6, 11); then the magnitude is placed at BF16 bits 5..8 and the sign at 15
// (the value times 2^-126, e = 0 a BF16 subnormal with the same ratio). Pairs 0..7: columns (i, i + 8), 8..15: (16 + i, 24 + i), as int3's.
struct LaneFp5 : XPairs<8> {
  static constexpr uint32_t kBits = 5, kCols = 32, kWords = 5, kPairs = 16;
  static constexpr bool kOffset = false, kScaled = false;  // per-row scales: at the flush
  static constexpr int kValueExp = 126;
  template <int kP>  // a code's first bit in each half
  __device__ static __forceinline__ uint32_t place(uint32_t r) {
    return place_minifloat<5 - kP, 11 - kP>(r, 0x01E001E0u);  // value x 2^-126
  }
  // pairs 4 half .. 4 half + 3 of groups a, b (a0/b0: their bytes 0..3, a1/b1: bytes 1..4)
  __device__ static __forceinline__ void pairs_of(uint32_t a0, uint32_t a1, uint32_t b0, uint32_t b1, uint32_t half,
                                                  uint32_t (&a)[4]) {
    if (half == 0) {
      const uint32_t r01 = __byte_perm(a0, b0, 0x5410), r23 = __byte_perm(a0, b0, 0x6521);
      a[0] = place<0>(r01);
      a[1] = place<5>(r01);
      a[2] = place<2>(r23);
      a[3] = place<7>(r23);
    } else {
      const uint32_t r45 = __byte_perm(a0, b0, 0x7632), r67 = __byte_perm(a1, b1, 0x7632);
      a[0] = place<4>(r45);
      a[1] = place<9>(r45);
      a[2] = place<6>(r67);
      a[3] = place<11>(r67);
    }
  }
  // part 0, 1: groups G0 (bytes 0..4), G1 (5..9); 2, 3: G2 (10..14), G3 (15..19)
  __device__ static __forceinline__ void pairs4(const uint32_t (&w)[kWords], uint32_t part, uint32_t (&a)[4],
                                                 const LaneTable&) {
    if (part < 2)
      pairs_of(w[0], __funnelshift_r(w[0], w[1], 8), __funnelshift_r(w[1], w[2], 8), __funnelshift_r(w[1], w[2], 16),
               part, a);
    else
      pairs_of(__funnelshift_r(w[2], w[3], 16), __funnelshift_r(w[2], w[3], 24), __funnelshift_r(w[3], w[4], 24), w[4],
               part - 2, a);
  }
};

// D = A B + D, m16n8k16, float32 accumulate, A and B of PTX type TYPE ("bf16" or "f16"). Lane
// (g = lane / 4, t = lane % 4) holds A rows g and g + 8 (k-slots 2t, 2t+1 in a0/a1 and 2t+8, 2t+9
// in a2/a3), B column g, and C rows g (c0, c1) and g + 8 (c2, c3) at columns 2t, 2t + 1.
#define WPACK_MMA_M16N8K16(TYPE)                                                                               \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                                      \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                                 \
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1))

// BF16 A and B.
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  WPACK_MMA_M16N8K16("bf16");
}
// FP16 A and B.
__device__ __forceinline__ void mma_f16_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1) {
  WPACK_MMA_M16N8K16("f16");
}
#undef WPACK_MMA_M16N8K16
// FP16 (kHalf) or BF16 A and B.
template <bool kHalf>
__device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  if constexpr (kHalf) mma_f16_16816(c, a0, a1, a2, a3, b0, b1);
  else mma_bf16_16816(c, a0, a1, a2, a3, b0, b1);
}

// Four 8x8 matrices of 16-bit elements from shared memory (ldmatrix .x4): lanes 8i .. 8i + 7 give
// the addresses of matrix i's rows (16 bytes each, 16-aligned); lane (g, t) receives row g,
// elements 2t and 2t + 1 of matrix i in r[i]: from an N x K row-major matrix, the B operand of a
// row.col MMA. The caller orders the rows' writes before it (__syncwarp).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

}  // namespace wpack::gpu::detail
