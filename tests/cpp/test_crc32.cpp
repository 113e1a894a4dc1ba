// The CRC-32 this machine's build uses (PCLMULQDQ on x86-64, the CRC32
// instructions on AArch64, tables elsewhere) against the table version and a
// known check value, over every length up to 2 KiB at every alignment, large
// buffers, and updates split at random points. Run natively and, cross-built,
// under qemu-aarch64 by tests/test_crc32.py.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "store/expert_store.h"

using namespace edgemoe;

int main() {
  int failed = 0, checks = 0;
  auto expect = [&](bool ok, const char* what, size_t n, size_t offset) {
    ++checks;
    if (!ok && failed++ < 10) std::printf("FAIL %s: n=%zu offset=%zu\n", what, n, offset);
  };
  const char* nine = "123456789";
  expect(crc32(nine, 9) == 0xCBF43926u, "check value", 9, 0);
  expect(crc32_update_portable(0, nine, 9) == 0xCBF43926u, "portable check value", 9, 0);

  std::mt19937_64 rng(7);
  std::vector<uint8_t> buf((1 << 20) + 64);
  for (auto& b : buf) b = (uint8_t)rng();
  for (size_t offset = 0; offset < 16; ++offset)
    for (size_t n = 0; n <= 2048; ++n) {
      // A heap block that ends exactly where the input does: under ASan
      // (tests/test_sanitizers.py) a read past the end is reported.
      std::vector<uint8_t> exact(buf.begin(), buf.begin() + offset + n);
      const uint8_t* p = exact.data() + offset;
      expect(crc32(p, n) == crc32_update_portable(0, p, n), "short", n, offset);
    }
  for (size_t n : {size_t(1 << 16), size_t(1 << 20), size_t((1 << 20) + 13)})
    expect(crc32(buf.data() + 3, n) == crc32_update_portable(0, buf.data() + 3, n), "long", n, 3);
  for (int i = 0; i < 200; ++i) {  // continuing an update gives the same as one call
    const size_t n = rng() % 100000, cut = n ? rng() % n : 0;
    const uint32_t whole = crc32(buf.data(), n);
    expect(crc32_update(crc32(buf.data(), cut), buf.data() + cut, n - cut) == whole, "split", n, cut);
  }
  // Throughput, for information only (emulated or shared machines make it meaningless to assert).
  auto gbps = [&](uint32_t (*f)(uint32_t, const void*, size_t)) {
    const auto t0 = std::chrono::steady_clock::now();
    uint32_t c = 0;
    for (int i = 0; i < 32; ++i) c = f(c, buf.data(), 1 << 20);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return c == 1 ? 0.0 : 32.0 * (1 << 20) / s / 1e9;  // c is used so the loop is not removed
  };
  std::printf("implementation %s: %.2f GB/s, tables %.2f GB/s\n", crc32_implementation(), gbps(crc32_update),
              gbps(crc32_update_portable));
  std::printf("crc32: %d checks, %d failed\n", checks, failed);
  return failed ? 1 : 0;
}
