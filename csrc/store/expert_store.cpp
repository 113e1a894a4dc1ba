// The expert store: a fixed pool of slots, a (layer, expert) -> slot map, LRU
// eviction of unpinned slots, and one direct read per miss.
//
// All memory is taken at construction (one aligned block for every slot, the
// map, the LRU links), so acquire never allocates on the hot path and the
// store's footprint is exactly what the memory budget granted.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "store/direct_file.h"
#include "store/expert_store.h"
#include "store/lru_list.h"

namespace edgemoe {
namespace {

// Empty: holds nothing. Loading: claimed for an expert whose bytes are being
// read. Ready: holds a verified expert. Today the read happens with the store
// lock held, so other threads only ever see Empty or Ready; an I/O worker that
// fills slots without the lock will make Loading visible (and acquirers of a
// Loading expert will wait for it instead of reading it twice).
enum class SlotState : uint8_t { kEmpty, kLoading, kReady };

struct Slot {
  uint8_t* data = nullptr;  // slot_bytes of the pool, fixed for the store's life
  SlotState state = SlotState::kEmpty;
  uint32_t pins = 0;   // acquires not yet released; > 0 means never evict
  int64_t owner = -1;  // flat index of the expert held, -1 if none
};

constexpr int32_t kNoSlot = -1;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

std::string expert_name(int layer, int expert) {
  return std::to_string(layer) + "/" + std::to_string(expert);
}

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Checked before anything is sized by it.
size_t checked_slot_count(size_t n_slots) {
  if (n_slots == 0) throw BudgetError("the expert store needs at least one slot");
  if (n_slots > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw BudgetError("too many expert slots: " + std::to_string(n_slots));
  }
  return n_slots;
}

// Cost of one blob read, accounted into the stats by whoever holds the lock.
struct IoCost {
  uint64_t bytes = 0;
  double seconds = 0.0;
};

}  // namespace

struct ExpertStore::Impl {
  Impl(const std::string& path, std::vector<std::vector<BlobRef>> table, size_t n_slots,
       bool verify);

  size_t flat_index(int layer, int expert) const;
  size_t claim_slot(int layer, int expert);
  void read_blob(const BlobRef& blob, uint8_t* dst, int layer, int expert, IoCost* cost);

  DirectFile file;
  bool verify;
  std::vector<BlobRef> blobs;       // every expert, layer by layer
  std::vector<size_t> layer_start;  // flat index of each layer's expert 0; one extra at the end
  std::vector<int32_t> slot_of;     // flat index -> slot, or kNoSlot
  size_t slot_bytes = 0;
  std::unique_ptr<uint8_t, FreeDeleter> pool;
  std::vector<Slot> slots;
  std::vector<int32_t> free_slots;  // Empty slots: used before evicting anything
  LruList lru;                      // Ready, unpinned slots; oldest is evicted first
  StoreStats stats;
  mutable std::mutex mu;
};

ExpertStore::Impl::Impl(const std::string& path, std::vector<std::vector<BlobRef>> table,
                        size_t n_slots, bool verify_checksums)
    : file(path), verify(verify_checksums), lru(checked_slot_count(n_slots)) {
  if (table.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw FormatError("expert table of '" + path + "' has too many layers");
  }

  // Validate every blob against the file now, so a truncated or garbled
  // container fails at load time with a clear message, not mid-generation.
  const uint64_t file_size = file.size();
  uint64_t max_size = 0;
  layer_start.reserve(table.size() + 1);
  for (size_t l = 0; l < table.size(); ++l) {
    layer_start.push_back(blobs.size());
    if (table[l].size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
      throw FormatError("expert table of '" + path + "' has too many experts in layer " +
                        std::to_string(l));
    }
    for (size_t e = 0; e < table[l].size(); ++e) {
      const BlobRef& b = table[l][e];
      const std::string where = "expert " + expert_name(int(l), int(e)) + " of '" + path +
                                "' (offset " + std::to_string(b.offset) + ", " +
                                std::to_string(b.size) + " bytes)";
      if (b.offset % kBlobAlign != 0) {
        throw FormatError(where + " is not aligned to " + std::to_string(kBlobAlign) +
                          " bytes: the container is malformed");
      }
      if (b.size > file_size || b.offset > file_size - b.size) {
        throw FormatError(where + " lies beyond the end of the file (" +
                          std::to_string(file_size) + " bytes): the container is truncated");
      }
      max_size = std::max(max_size, b.size);
      blobs.push_back(b);
    }
  }
  layer_start.push_back(blobs.size());
  slot_of.assign(blobs.size(), kNoSlot);

  // A slot must take a whole rounded direct read of the largest blob. At least
  // one alignment unit, so every slot has a distinct, non-null address.
  slot_bytes = std::max<uint64_t>(round_up(max_size, kBlobAlign), kBlobAlign);
  if (n_slots > std::numeric_limits<size_t>::max() / slot_bytes) {
    throw BudgetError("expert slots too large: " + std::to_string(n_slots) + " x " +
                      std::to_string(slot_bytes) + " bytes");
  }
  const size_t pool_bytes = n_slots * slot_bytes;
  // Direct I/O needs the destination aligned like the file offsets.
  pool.reset(static_cast<uint8_t*>(std::aligned_alloc(DirectFile::kIoAlign, pool_bytes)));
  if (!pool) {
    throw BudgetError("cannot allocate " + std::to_string(pool_bytes) + " bytes for " +
                      std::to_string(n_slots) + " expert slots");
  }
  slots.resize(n_slots);
  free_slots.reserve(n_slots);
  for (size_t s = 0; s < n_slots; ++s) {
    slots[s].data = pool.get() + s * slot_bytes;
    // Reversed so slot 0 is handed out first: makes behaviour easy to follow.
    free_slots.push_back(static_cast<int32_t>(n_slots - 1 - s));
  }
}

size_t ExpertStore::Impl::flat_index(int layer, int expert) const {
  const size_t n_layers = layer_start.size() - 1;
  if (layer < 0 || static_cast<size_t>(layer) >= n_layers) {
    throw FormatError("expert " + expert_name(layer, expert) + " does not exist: the model has " +
                      std::to_string(n_layers) + " layers with experts");
  }
  const size_t first = layer_start[size_t(layer)];
  const size_t count = layer_start[size_t(layer) + 1] - first;
  if (expert < 0 || static_cast<size_t>(expert) >= count) {
    throw FormatError("expert " + expert_name(layer, expert) + " does not exist: layer " +
                      std::to_string(layer) + " has " + std::to_string(count) + " experts");
  }
  return first + size_t(expert);
}

// An Empty slot if there is one, else the least recently used unpinned one
// (forgetting the expert it held). The slot returned is Empty.
size_t ExpertStore::Impl::claim_slot(int layer, int expert) {
  if (!free_slots.empty()) {
    const size_t s = size_t(free_slots.back());
    free_slots.pop_back();
    return s;
  }
  if (lru.empty()) {
    throw BudgetError("cannot load expert " + expert_name(layer, expert) + ": all " +
                      std::to_string(slots.size()) +
                      " expert slots are pinned (acquired and not released); the memory budget "
                      "is too small for the experts used at once");
  }
  const size_t s = lru.pop_oldest();
  slot_of[size_t(slots[s].owner)] = kNoSlot;
  slots[s].owner = -1;
  slots[s].state = SlotState::kEmpty;
  return s;
}

// Reads one blob into dst and checks it. Uses only state fixed at
// construction, so an I/O worker can later call it without the store lock.
// `cost` is filled in even when this throws (the wait happened regardless).
void ExpertStore::Impl::read_blob(const BlobRef& blob, uint8_t* dst, int layer, int expert,
                                  IoCost* cost) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    cost->bytes = file.read_exact(blob.offset, dst, blob.size);
  } catch (const StorageError& e) {
    cost->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    throw StorageError("cannot read expert " + expert_name(layer, expert) + " (offset " +
                       std::to_string(blob.offset) + ", " + std::to_string(blob.size) +
                       " bytes): " + e.what());
  }
  cost->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (verify) {
    const uint32_t got = crc32(dst, blob.size);
    if (got != blob.crc32) {
      throw StorageError("checksum mismatch in expert " + expert_name(layer, expert) +
                         " (offset " + std::to_string(blob.offset) + ", " +
                         std::to_string(blob.size) + " bytes: expected " + hex32(blob.crc32) +
                         ", read " + hex32(got) +
                         "): the container is corrupt; re-convert the model");
    }
  }
}

ExpertStore::ExpertStore(const std::string& path, std::vector<std::vector<BlobRef>> table,
                         size_t n_slots, bool verify_checksums)
    : impl_(std::make_unique<Impl>(path, std::move(table), n_slots, verify_checksums)) {}

ExpertStore::~ExpertStore() = default;

const uint8_t* ExpertStore::acquire(int layer, int expert) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  const size_t f = m.flat_index(layer, expert);

  if (m.slot_of[f] != kNoSlot) {
    // Mapped slots are Ready here (loads finish under the lock).
    const auto s = size_t(m.slot_of[f]);
    Slot& slot = m.slots[s];
    if (slot.pins++ == 0) m.lru.remove(s);
    ++m.stats.hits;
    return slot.data;
  }

  ++m.stats.misses;
  const size_t s = m.claim_slot(layer, expert);
  Slot& slot = m.slots[s];
  slot.state = SlotState::kLoading;
  slot.owner = int64_t(f);
  slot.pins = 1;
  m.slot_of[f] = int32_t(s);

  IoCost cost;
  try {
    m.read_blob(m.blobs[f], slot.data, layer, expert, &cost);
  } catch (...) {
    // Whatever arrived is not trusted: the slot goes back empty, the expert
    // stays uncached, and the next acquire of it reads it again.
    m.stats.bytes_read += cost.bytes;
    m.stats.io_wait_s += cost.seconds;
    m.slot_of[f] = kNoSlot;
    slot.owner = -1;
    slot.pins = 0;
    slot.state = SlotState::kEmpty;
    m.free_slots.push_back(int32_t(s));
    throw;
  }
  m.stats.bytes_read += cost.bytes;
  m.stats.io_wait_s += cost.seconds;
  slot.state = SlotState::kReady;
  return slot.data;
}

void ExpertStore::release(int layer, int expert) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  const size_t f = m.flat_index(layer, expert);
  const int32_t s = m.slot_of[f];
  if (s == kNoSlot || m.slots[size_t(s)].pins == 0) {
    // A caller bug (release without a matching acquire), not bad input.
    throw std::logic_error("release of expert " + expert_name(layer, expert) +
                           " which is not acquired");
  }
  // Unpinned now: evictable, and the most recently used.
  if (--m.slots[size_t(s)].pins == 0) m.lru.push_newest(size_t(s));
}

bool ExpertStore::is_cached(int layer, int expert) const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  const int32_t s = m.slot_of[m.flat_index(layer, expert)];
  return s != kNoSlot && m.slots[size_t(s)].state == SlotState::kReady;
}

size_t ExpertStore::n_slots() const { return impl_->slots.size(); }

size_t ExpertStore::slot_bytes() const { return impl_->slot_bytes; }

bool ExpertStore::direct_io() const { return impl_->file.direct(); }

StoreStats ExpertStore::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

void ExpertStore::reset_stats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stats = StoreStats{};
}

}  // namespace edgemoe
