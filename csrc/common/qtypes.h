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
#pragma pack(pop)
static_assert(sizeof(BlockQ8) == 34, "BlockQ8 layout");
static_assert(sizeof(BlockQ4) == 20, "BlockQ4 layout");

// Activations quantized on the fly for the integer dot products.
struct BlockQ8A {
  float d;      // scale: x ~= d * q
  int32_t sum;  // sum of qs, needed by asymmetric weight types
  int8_t qs[kGroup];
};

// True if rows of length k can be stored in type t (quantized types need
// whole groups).
bool qtype_supports(QType t, int64_t k);
// Bytes of one row of k elements.
size_t qtype_row_bytes(QType t, int64_t k);
const char* qtype_name(QType t);
bool qtype_from_int(int v, QType* out);

}  // namespace edgemoe
