// IEEE half <-> single conversion in portable C++. The SIMD kernels use F16C
// where the CPU has it; this is the reference they must agree with, and the
// fallback everywhere else.
#include <cstring>

#include "kernels.h"

namespace edgemoe {

namespace {
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    const float v = (float)mant * 0x1p-24f;
    return float_of(bits_of(v) | sign);
  }
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));  // inf, nan (payload kept)
  return float_of(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = bits_of(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;

  // nan -> quiet nan keeping the payload's top 10 bits, as F16C and NEON convert it
  if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);
  // 65520 is halfway between the largest half (65504) and 2^16; ties go to
  // the even neighbour, which is infinity.
  if (ax >= 0x477ff000u) return sign | 0x7c00;

  const uint32_t e = ax >> 23;
  if (e < 113) {
    // Below the smallest normal half (2^-14): result is a subnormal (or 0)
    // counting units of 2^-24. Value = m * 2^(e - 150), so units = m >> (126 - e).
    const uint32_t shift = 126 - e;
    if (shift > 24) return sign;  // < 2^-25: rounds to zero
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1))) ++h;  // may carry into the smallest normal: correct
    return sign | (uint16_t)h;
  }
  // Normal: rebias exponent, keep top 10 mantissa bits, round the other 13.
  uint32_t h = ((e - 112) << 10) | ((ax >> 13) & 0x3ff);
  const uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // a carry bumps the exponent, as it should
  return sign | (uint16_t)h;
}

}  // namespace edgemoe
