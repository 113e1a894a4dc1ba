// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, initial value
// and final xor 0xFFFFFFFF), so checksums written by the Python converter with
// zlib.crc32 verify here. Every expert read is checksummed, so this runs over
// gigabytes per session and its speed shows in decode speed when experts
// stream from storage (bench/checksum_cost.py). Three implementations, chosen
// once at run time:
//  - x86-64 with PCLMULQDQ: carry-less multiplication folds 64 bytes per step
//    (the method of Intel's "Fast CRC Computation for Generic Polynomials
//    Using PCLMULQDQ", reflected form), ~10x the table version;
//  - AArch64 with the CRC32 extension: the CRC32X instruction computes this
//    very polynomial 8 bytes at a time;
//  - anything else, and the tails: slicing-by-8 tables.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define EDGEMOE_CRC_PCLMUL 1
#elif defined(__aarch64__)
#include <arm_acle.h>
#if !defined(__ARM_FEATURE_CRC32) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif
#define EDGEMOE_CRC_ARM 1
#endif

#include "store/expert_store.h"

namespace edgemoe {
namespace {

using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

// tables[0] is the classic byte-at-a-time table. tables[k][b] is the CRC
// contribution of byte b followed by k zero bytes, which lets one step fold 8
// bytes at once: byte j of the 8-byte word is looked up in tables[7 - j].
constexpr CrcTables make_tables() {
  CrcTables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : (c >> 1);
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  return t;
}

// Built by the compiler: no static-initialisation order to worry about, and
// the tables live in read-only data.
constexpr CrcTables kTables = make_tables();

// Slicing-by-8 over the state c (already inverted).
uint32_t crc_tables(uint32_t c, const uint8_t* p, size_t n) {
  const auto& t = kTables;
  // Bytes are assembled explicitly (little-endian order) rather than loaded as
  // a uint32_t, so the code is independent of host byte order and of the
  // buffer's alignment; compilers turn this into a plain load on x86/ARM.
  while (n >= 8) {
    const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                             uint32_t(p[3]) << 24);
    c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
        t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFFu];
  return c;
}

#if defined(EDGEMOE_CRC_PCLMUL)

// Folding constants for the reflected polynomial: x^k mod P(x) for the fold
// distances (k1/k2: 512 bits, k3/k4: 128 bits, k5: 64 -> 32 bits), and the
// Barrett pair P'(x) = 0x1DB710641 and u' = floor(x^64 / P'(x)) (reflected).
#define EDGEMOE_PCLMUL __attribute__((target("pclmul,sse4.1")))

EDGEMOE_PCLMUL inline __m128i fold(__m128i x, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

// n >= 64 and a multiple of 16; c is the state (already inverted).
EDGEMOE_PCLMUL uint32_t crc_pclmul(uint32_t c, const uint8_t* p, size_t n) {
  const __m128i k1k2 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4);
  const __m128i k3k4 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);
  const __m128i k5 = _mm_set_epi64x(0, 0x163cd6124);
  const __m128i poly_mu = _mm_set_epi64x(0x1F7011641, 0x1DB710641);
  const __m128i low32 = _mm_set_epi32(0, 0, 0, -1);
  auto load = [](const uint8_t* q) { return _mm_loadu_si128((const __m128i*)q); };

  // Four independent 128-bit lanes, each folded forward by 512 bits per step.
  __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128((int)c));
  __m128i x1 = load(p + 16), x2 = load(p + 32), x3 = load(p + 48);
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    x0 = _mm_xor_si128(fold(x0, k1k2), load(p));
    x1 = _mm_xor_si128(fold(x1, k1k2), load(p + 16));
    x2 = _mm_xor_si128(fold(x2, k1k2), load(p + 32));
    x3 = _mm_xor_si128(fold(x3, k1k2), load(p + 48));
  }
  // The four lanes into one, then the remaining 16-byte blocks.
  x0 = _mm_xor_si128(fold(x0, k3k4), x1);
  x0 = _mm_xor_si128(fold(x0, k3k4), x2);
  x0 = _mm_xor_si128(fold(x0, k3k4), x3);
  for (; n >= 16; p += 16, n -= 16) x0 = _mm_xor_si128(fold(x0, k3k4), load(p));
  // 128 -> 64 bits (appending the 32 zero bits the CRC definition implies) -> 32.
  x0 = _mm_xor_si128(_mm_srli_si128(x0, 8), _mm_clmulepi64_si128(k3k4, x0, 0x01));
  x0 = _mm_xor_si128(_mm_srli_si128(x0, 4), _mm_clmulepi64_si128(_mm_and_si128(x0, low32), k5, 0x00));
  // Barrett reduction of the remaining 64 bits to the 32-bit remainder.
  __m128i t = _mm_clmulepi64_si128(_mm_and_si128(x0, low32), poly_mu, 0x10);
  t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), poly_mu, 0x00);
  return (uint32_t)_mm_extract_epi32(_mm_xor_si128(x0, t), 1);
}

bool cpu_has_pclmul() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_PCLMUL) && (c & bit_SSE4_1);
}

const char* crc_name() { return cpu_has_pclmul() ? "pclmul" : "tables"; }

uint32_t crc_fast(uint32_t c, const uint8_t* p, size_t n) {
  static const bool ok = cpu_has_pclmul();
  const size_t bulk = n & ~size_t(15);
  if (ok && bulk >= 64) {
    c = crc_pclmul(c, p, bulk);
    p += bulk;
    n -= bulk;
  }
  return crc_tables(c, p, n);
}

#elif defined(EDGEMOE_CRC_ARM)

#if defined(__ARM_FEATURE_CRC32)
#define EDGEMOE_CRC_TARGET
#elif defined(__clang__)
#define EDGEMOE_CRC_TARGET __attribute__((target("crc")))
#else
#define EDGEMOE_CRC_TARGET __attribute__((target("+crc")))
#endif

EDGEMOE_CRC_TARGET uint32_t crc_arm(uint32_t c, const uint8_t* p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);  // little-endian AArch64: the byte order the CRC consumes
    c = __crc32d(c, v);
  }
  for (; n; --n) c = __crc32b(c, *p++);
  return c;
}

bool cpu_has_crc32() {
#if defined(__ARM_FEATURE_CRC32)
  return true;
#elif defined(__linux__)
  return getauxval(AT_HWCAP) & HWCAP_CRC32;
#else
  return false;
#endif
}

const char* crc_name() { return cpu_has_crc32() ? "arm-crc32" : "tables"; }

uint32_t crc_fast(uint32_t c, const uint8_t* p, size_t n) {
  static const bool ok = cpu_has_crc32();
  return ok ? crc_arm(c, p, n) : crc_tables(c, p, n);
}

#else

const char* crc_name() { return "tables"; }
uint32_t crc_fast(uint32_t c, const uint8_t* p, size_t n) { return crc_tables(c, p, n); }

#endif

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  return ~crc_fast(~crc, static_cast<const uint8_t*>(data), n);
}

const char* crc32_implementation() { return crc_name(); }

uint32_t crc32_update_portable(uint32_t crc, const void* data, size_t n) {
  return ~crc_tables(~crc, static_cast<const uint8_t*>(data), n);
}

}  // namespace edgemoe
