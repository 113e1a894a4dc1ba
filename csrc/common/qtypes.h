// Weight encodings shared by the container, the kernels and the Python
// reference quantizer (edgemoe/format/quant.py). docs/FORMAT.md describes the same
// layouts byte by byte; change one and you must change all three.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace edgemoe {

// Numeric values are stored in the container: never renumber.
enum class QType : uint8_t {
  F32 = 0,
  F16 = 1,
  Q8 = 2,  // group of 32, symmetric: w = d * q, q in [-127, 127]
  Q4 = 3,  // group of 32, asymmetric: w = d * q + m, q in [0, 15]
  Q3 = 4,  // group of 32, asymmetric: w = d * q + m, q in [0, 7]
  Q2 = 5,  // group of 32, asymmetric: w = d * q + m, q in [0, 3]
  Q4K = 6,  // super-block of 256 = 8 groups of 32: w = d * sc * q - dmin * mn, q in [0, 15]
  MXFP4 = 7,  // group of 32: w = 2^(e - 127) * fp4(q), q an E2M1 code (OCP microscaling, gpt-oss)
};

constexpr int kGroup = 32;
constexpr int kSuperBlock = 256;  // elements per Q4K block

#pragma pack(push, 1)
struct BlockQ8 {
  uint16_t d;  // fp16 scale
  int8_t qs[kGroup];
};
struct BlockQ4 {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 offset (the group's minimum)
  // byte j holds element j in its low nibble and element j + 16 in its high
  // nibble, so one 16-byte load unpacks into two contiguous halves.
  uint8_t qs[kGroup / 2];
};
// 2-bit codes: byte j holds elements j, j + 8, j + 16, j + 24 in bits 0-1,
// 2-3, 4-5, 6-7, so shifting the 8 bytes by 0, 2, 4, 6 gives the elements in
// order, 8 at a time.
struct BlockQ2 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kGroup / 4];
};
// 3-bit codes: the low two bits as in BlockQ2, the third bit of element i in
// bit i of the little-endian 32-bit word qh.
struct BlockQ3 {
  uint16_t d;
  uint16_t m;
  uint8_t ql[kGroup / 4];
  uint8_t qh[kGroup / 8];
};
// llama.cpp's Q4_K, byte for byte (a GGUF's blocks are copied as they are):
// the asymmetric 4-bit code of BlockQ4 with each group's scale and offset
// stored as 6-bit fractions (sc, mn) of the block's d and dmin. Per 64
// elements, 32 bytes of qs: low nibbles are the first group of 32, high
// nibbles the second. scales[12]: see q4k_scale_min().
struct BlockQ4K {
  uint16_t d;     // fp16 scale of the 6-bit scales
  uint16_t dmin;  // fp16 scale of the 6-bit minimums
  uint8_t scales[12];
  uint8_t qs[kSuperBlock / 2];
};
// llama.cpp's MXFP4 (block_mxfp4), byte for byte: an E8M0 exponent and 32
// E2M1 codes, element j in the low nibble of byte j and element j + 16 in the
// high one (the Hugging Face checkpoints pair neighbours instead; the
// converter regroups their nibbles, keeping every bit).
struct BlockMXFP4 {
  uint8_t e;
  uint8_t qs[kGroup / 2];
};
#pragma pack(pop)
static_assert(sizeof(BlockMXFP4) == 17, "BlockMXFP4 layout");
static_assert(sizeof(BlockQ4K) == 144, "BlockQ4K layout");
static_assert(sizeof(BlockQ8) == 34, "BlockQ8 layout");
static_assert(sizeof(BlockQ4) == 20, "BlockQ4 layout");
static_assert(sizeof(BlockQ3) == 16, "BlockQ3 layout");
static_assert(sizeof(BlockQ2) == 12, "BlockQ2 layout");

// Activations quantized on the fly for the integer dot products.
struct BlockQ8A {
  float d;      // scale: x ~= d * q
  int32_t sum;  // sum of qs, needed by asymmetric weight types
  int8_t qs[kGroup];
};

// Group j's (0..7) 6-bit scale and minimum: groups 0-3 sit in the low 6 bits
// of bytes j (scale) and j + 4 (minimum); groups 4-7 keep their low 4 bits in
// byte j + 4 (scale low nibble, minimum high nibble) and their top 2 bits in
// the top bits of bytes j - 4 and j.
inline void q4k_scale_min(const uint8_t* scales, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *mn = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4);
    *mn = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

// All eight groups' scales and minimums at once (the same values as
// q4k_scale_min, by whole-word bit moves; little-endian byte order): byte j
// of *sc / *mn is group j's. Returned in registers rather than stored as bytes:
// SIMD code reads them back as one 64-bit value, and a load that spans two
// earlier stores stalls (no store-to-load forwarding).
inline void q4k_unpack_scales(const uint8_t* scales, uint64_t* sc, uint64_t* mn) {
  uint32_t w[3];
  std::memcpy(w, scales, sizeof w);
  const uint32_t six = 0x3f3f3f3f, four = 0x0f0f0f0f, top = 0x30303030;
  *sc = (w[0] & six) | (uint64_t)((w[2] & four) | ((w[0] >> 2) & top)) << 32;
  *mn = (w[1] & six) | (uint64_t)(((w[2] >> 4) & four) | ((w[1] >> 2) & top)) << 32;
}

// The E2M1 values times two, so they are integers: code c is worth
// kMxfp4Doubled[c] * e8m0_half(e). The integer dot products use these.
constexpr int8_t kMxfp4Doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
// 2^(e - 128): half the block's scale 2^(e - 127), built from the bits (exact for every e,
// subnormal for e < 2, finite for e = 255, which the format reserves for NaN).
inline float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// True for the group-quantized types, whose matmuls take Q8A activations.
inline bool qtype_is_quantized(QType t) { return t != QType::F32 && t != QType::F16; }
// The 32 codes of a low-bit asymmetric block (Q4, Q3, Q2), in element order.
void unpack_codes(QType t, const void* block, uint8_t codes[kGroup]);

// True if rows of length k can be stored in type t (quantized types need
// whole groups, Q4K whole super-blocks).
bool qtype_supports(QType t, int64_t k);
// Bytes of one row of k elements.
size_t qtype_row_bytes(QType t, int64_t k);
const char* qtype_name(QType t);
bool qtype_from_int(int v, QType* out);

}  // namespace edgemoe
