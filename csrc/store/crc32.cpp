// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320, initial value
// and final xor 0xFFFFFFFF), so checksums written by the Python converter with
// zlib.crc32 verify here. Every expert read is checksummed, so this runs over
// gigabytes per session: slicing-by-8 consumes 8 bytes per step with eight
// independent table lookups instead of one dependent lookup per byte.
#include <array>
#include <cstddef>
#include <cstdint>

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

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  const auto& t = kTables;
  uint32_t c = ~crc;
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
  return ~c;
}

}  // namespace edgemoe
