// Expert store: reads routed-expert blobs from the container into a fixed pool
// of slots, with direct I/O, and keeps the most useful ones cached.
//
// It knows nothing of the model's architecture: an expert is (layer, index) ->
// a blob of bytes at an offset of the file. A background I/O worker fills
// slots ahead of need (prefetch); a demand miss is read at once by the
// thread that needs it, ahead of any queued prefetch; a layer's misses can be
// read side by side by the workers (read_ahead).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "direct_file.h"

namespace edgemoe {

// Where one expert blob lives in the container file.
struct BlobRef {
  uint64_t offset = 0;     // file offset, a multiple of kBlobAlign
  uint64_t size = 0;       // bytes of payload (what the checksum covers)
  uint32_t crc32 = 0;      // zlib-compatible CRC-32 of the bytes stored in the file
  uint64_t stored = 0;     // zstd-compressed: bytes in the file (decompressing gives `size`); 0: stored raw
};

// True if this build can read zstd-compressed blobs.
bool zstd_supported();

// Blobs start on, and are read in, whole direct-I/O units: the container's page.
constexpr uint64_t kBlobAlign = DirectFile::kIoAlign;

struct StoreStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t bytes_read = 0;   // bytes transferred from storage (padded reads count in full), prefetches included
  double io_wait_s = 0.0;    // wall time acquire() spent waiting for reads (demand reads and in-flight prefetches),
                             // their checksum and decompression included
  // Wall time the caller spent in the store's calls (acquire, release, is_cached, read_ahead,
  // set_cursor, prefetch) besides io_wait_s: the cache's own work (lookups, victims, the lock).
  double cache_s = 0.0;
  uint64_t prefetch_issued = 0;     // requests queued
  uint64_t prefetch_loaded = 0;     // of which read into a slot
  uint64_t prefetch_hits = 0;       // prefetched experts that were then used
  uint64_t prefetch_wasted = 0;     // prefetched experts evicted before any use
  uint64_t prefetch_cancelled = 0;  // dropped from the queue: stale, or no slot could be freed
};

// Which unpinned expert to evict when a slot is needed.
enum class CachePolicy {
  Lru,      // least recently used
  Lfu,      // least frequently used (ties: least recent)
  EdgeMoE,  // lowest frequency / distance to its layer (EdgeMoE's policy)
  Recent,   // lowest recent usage rate / distance: EdgeMoE's weighing over a rate that forgets
};

// The Recent policy's rate: at each step of its layer an expert's rate is multiplied by this and
// gains 1 - this if the expert is used (an exponential moving average of "used at this step").
constexpr double kRecentDecay = 0.99;  // tools/simulate_cache.py's Recent.decay: bench/RESULTS.md, "Cache policies"

struct StoreOptions {
  CachePolicy policy = CachePolicy::Lru;
  bool verify_checksums = true;
  // Read prefetches on the I/O worker thread, overlapping computation. Off:
  // prefetch() reads in the caller's thread (for tests and comparisons).
  bool async_io = true;
  // I/O worker threads: more keep more reads in flight (fast NVMe storage
  // serves two concurrent reads faster than one after the other).
  int io_threads = 1;
};

// What a store allocates besides its bookkeeping: the slots and the staging
// buffers for compressed blobs.
struct StoreSizes {
  uint64_t slot_bytes = 0;            // one slot: the largest blob, rounded to whole direct reads
  uint64_t staging_buffer_bytes = 0;  // one staging buffer (0: no blob is compressed)
  int staging_buffers = 0;            // one for demand reads, one per I/O worker
  uint64_t staging_bytes() const { return staging_buffer_bytes * (uint64_t)staging_buffers; }
};

class ExpertStore {
 public:
  // The sizes a store of `table` uses; the constructor allocates exactly these.
  // Throws FormatError for a blob size that cannot be rounded up.
  static StoreSizes sizes_for(const std::vector<std::vector<BlobRef>>& table, const StoreOptions& options);

  // table[layer][expert]. n_slots >= 1. Each slot holds the largest blob
  // (rounded up to kBlobAlign). Throws StorageError if the file cannot be
  // opened, FormatError if a blob lies outside the file or is misaligned.
  ExpertStore(const std::string& path, std::vector<std::vector<BlobRef>> table, size_t n_slots,
              bool verify_checksums = true);
  ExpertStore(const std::string& path, std::vector<std::vector<BlobRef>> table, size_t n_slots,
              const StoreOptions& options);
  ~ExpertStore();
  ExpertStore(const ExpertStore&) = delete;
  ExpertStore& operator=(const ExpertStore&) = delete;

  // Pointer to the expert's payload, valid until release(). Reads it on a
  // miss, evicting the least recently used unpinned slot. Pinned (acquired,
  // not yet released) slots are never evicted; if every slot is pinned this
  // throws BudgetError. Throws StorageError on I/O failure, short read or
  // checksum mismatch (the slot is then left empty, the store stays usable).
  // If the expert is being prefetched, waits for that read instead of reading twice.
  const uint8_t* acquire(int layer, int expert);
  void release(int layer, int expert);

  // --- the compute/I-O pipeline ---
  // The caller is about to acquire these experts of `layer` (a layer's
  // misses): claim a slot for each now, evicting as a demand read would, and
  // have the I/O workers read them side by side, ahead of any prefetch. A
  // claimed expert is not evicted before its acquire (while the cursor stays);
  // that acquire waits for its read, or does it itself if no worker has
  // started it, and counts it as a miss. Stops claiming when no slot can be
  // freed (acquire then reads the rest one at a time). Without I/O workers it
  // claims the slots and acquire reads. Returns how many were claimed.
  size_t read_ahead(int layer, const int* experts, size_t n);
  // Computation has reached `stamp` (a monotonic (token, layer) counter) in
  // layer `layer`: queued prefetches for earlier stamps are dropped, the
  // EdgeMoE and Recent policies measure layer distances from `layer`, and a
  // new stamp is a step of `layer` for the Recent policy's rates.
  void set_cursor(int64_t stamp, int layer);
  // Ask the I/O worker to read an expert that will be needed at `stamp`.
  // Returns false (and queues nothing) if it is cached, loading or queued.
  // A prefetch never evicts a pinned expert, an expert of the current layer
  // or a prefetched expert not yet used; without such a victim it is dropped.
  bool prefetch(int layer, int expert, int64_t stamp);
  // Start from an offline profile: shares[layer][expert] = activations per token. The
  // frequency counts start as if `prior_tokens` tokens had been seen, the Recent policy's
  // rates at the shares (what they average to).
  void seed_frequencies(const std::vector<std::vector<double>>& shares, double prior_tokens);

  bool is_cached(int layer, int expert) const;
  size_t n_slots() const;
  int io_workers() const;              // I/O worker threads (0: reads happen in the caller's thread)
  size_t slot_bytes() const;           // bytes reserved per slot
  uint64_t allocated_bytes() const;    // slots and staging buffers
  bool direct_io() const;              // true if O_DIRECT (or equivalent) is in use
  StoreStats stats() const;
  void reset_stats();
  CachePolicy policy() const;

  struct Impl;
 private:
  std::unique_ptr<Impl> impl_;
};

// zlib-compatible CRC-32 (polynomial 0xEDB88320), continuing from `crc`.
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);
// Which implementation crc32_update uses here: "pclmul", "arm-crc32" or "tables".
const char* crc32_implementation();
// The table-driven version the fast paths are checked against (tests).
uint32_t crc32_update_portable(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32(const void* data, size_t n) { return crc32_update(0, data, n); }

}  // namespace edgemoe
