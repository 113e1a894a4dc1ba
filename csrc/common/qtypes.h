// Weight encodings shared by the container, the kernels and the Python
// reference quantizer (edgemoe/quant.py). docs/FORMAT.md describes the same
// layouts byte by byte; change one and you must change all three.
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgemoe {

// Numeric values are stored in the container: never renumber.
enum class QType : uint8_t {
  F32 = 0,
  F16 = 1,
  Q8 = 2,  // group of 32, symmetric: w = d * q, q in [-127, 127]
  Q4 = 3,  // group of 32, asymmetric: w = d * q + m, q in [0, 15]
  Q3 = 4,  // group of 32, asymmetric: w = d * q + m, q in [0, 7]
  Q2 = 5,  // group of 32, asymmetric: w = d * q + m, q in [0, 3]
};

constexpr int kGroup = 32;

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
#pragma pack(pop)
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

// True for the group-quantized types, whose matmuls take Q8A activations.
inline bool qtype_is_quantized(QType t) { return t != QType::F32 && t != QType::F16; }
// The 32 codes of a low-bit asymmetric block (Q4, Q3, Q2), in element order.
void unpack_codes(QType t, const void* block, uint8_t codes[kGroup]);

// True if rows of length k can be stored in type t (quantized types need
// whole groups).
bool qtype_supports(QType t, int64_t k);
// Bytes of one row of k elements.
size_t qtype_row_bytes(QType t, int64_t k);
const char* qtype_name(QType t);
bool qtype_from_int(int v, QType* out);

}  // namespace edgemoe
