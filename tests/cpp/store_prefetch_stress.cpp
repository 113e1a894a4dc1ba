// Stress of the expert store's asynchronous prefetch (StoreOptions::async_io):
// one thread walks layers like decoding does, prefetching experts of the next
// layer while it acquires, checks and releases experts of the current one,
// with the I/O worker reading concurrently. Every acquired expert must match
// its CRC when acquired and still match just before release (nothing
// overwrote a pinned slot). Prints "N passed, N failed"; exits 1 on failure.
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "store/expert_store.h"

using namespace edgemoe;

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/tmp";
  const int kLayers = 3, kExperts = 8, kSteps = 60000;
  const uint64_t kSize = 3000;  // payload; blobs are one 4 KiB page each
  const std::string path = dir + "/store_prefetch_stress.bin";
  std::vector<std::vector<BlobRef>> table(kLayers);
  {
    std::ofstream f(path, std::ios::binary);
    std::mt19937 rng(1);
    std::vector<char> page(4096);
    uint64_t offset = 0;
    for (int l = 0; l < kLayers; ++l)
      for (int e = 0; e < kExperts; ++e) {
        for (auto& c : page) c = static_cast<char>(rng());
        f.write(page.data(), page.size());
        table[l].push_back({offset, kSize, crc32(page.data(), kSize)});
        offset += page.size();
      }
  }
  StoreOptions options;
  options.async_io = true;
  int passed = 0, failed = 0;
  for (CachePolicy policy : {CachePolicy::Lru, CachePolicy::EdgeMoE}) {
    options.policy = policy;
    ExpertStore store(path, table, 5, options);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> pick(0, kExperts - 1);
    for (int step = 0; step < kSteps; ++step) {
      const int layer = step % kLayers;
      const int64_t base = int64_t(step / kLayers) * kLayers;
      store.set_cursor(base + layer, layer);
      if (layer + 1 < kLayers)
        for (int k = 0; k < 2; ++k) store.prefetch(layer + 1, pick(rng), base + layer + 1);
      const int a = pick(rng), b = (a + 1 + pick(rng) % (kExperts - 1)) % kExperts;
      for (int e : {a, b}) {
        const uint8_t* p = store.acquire(layer, e);
        const bool ok_at_acquire = crc32(p, kSize) == table[layer][e].crc32;
        volatile int spin = 0;  // stand-in for computing with the expert
        for (int i = 0; i < 500; ++i) spin = spin + i;
        const bool ok_at_release = crc32(p, kSize) == table[layer][e].crc32;
        (ok_at_acquire && ok_at_release ? passed : failed)++;
        store.release(layer, e);
      }
    }
  }
  std::remove(path.c_str());
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
