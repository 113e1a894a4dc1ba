// The expert store: a fixed pool of slots, a (layer, expert) -> slot map, a
// cache policy that picks victims among unpinned slots, one direct read per
// miss, and I/O worker threads that read a layer's misses side by side
// (read_ahead) and fill slots ahead of need (prefetch).
//
// All memory is taken at construction (one aligned block for every slot, the
// map, the queue), so acquire never allocates on the hot path and the
// store's footprint is exactly what the memory budget granted.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(EDGEMOE_HAVE_ZSTD)
#include <zstd.h>
#endif

#include "common/bounds.h"
#include "common/errors.h"
#include "store/direct_file.h"
#include "store/expert_store.h"

namespace edgemoe {
namespace {

// Empty: holds nothing. Loading: claimed for an expert whose bytes are being
// read without the lock (by a demand reader or an I/O worker), or are about
// to be (read_ahead, no reader yet): never evicted, never handed out;
// acquirers wait for it, or read it themselves if no reader has taken it.
// Ready: holds a verified expert.
enum class SlotState : uint8_t { kEmpty, kLoading, kReady };

struct Slot {
  uint8_t* data = nullptr;  // slot_bytes of the pool, fixed for the store's life
  SlotState state = SlotState::kEmpty;
  uint32_t pins = 0;        // acquires not yet released; > 0 means never evict
  int64_t owner = -1;       // flat index of the expert held, -1 if none
  uint64_t last_use = 0;    // store clock at the last acquire (or prefetch)
  bool prefetched = false;  // filled by a prefetch and not used since
  int64_t needed_at = 0;    // of a prefetched expert: the stamp it was predicted for
  // Named by read_ahead (claimed, or already there): about to be acquired, so not
  // evicted while the cursor stays at held_at.
  bool held = false;
  int64_t held_at = 0;
  // Claimed by read_ahead (so held_at is when): the caller's coming acquire
  // counts it as the miss it was, while the cursor has not moved.
  bool read_ahead = false;
  bool awaiting_reader = false;  // Loading, queued for a worker that has not taken it yet
};

// A queued prefetch: the earliest needed (smallest stamp) is read first.
struct Request {
  int64_t stamp;
  uint64_t order;
  size_t flat;
  bool operator<(const Request& o) const {  // priority_queue pops the "largest"
    return stamp != o.stamp ? stamp > o.stamp : order > o.order;
  }
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

// Times one call into the store from the caller's side, adding it to `total` (nanoseconds) when
// the call returns or throws; stats() subtracts the part that waited for reads.
class CallTimer {
 public:
  explicit CallTimer(std::atomic<uint64_t>& total) : total_(total), t0_(std::chrono::steady_clock::now()) {}
  ~CallTimer() {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_);
    total_.fetch_add(uint64_t(ns.count()), std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t>& total_;
  std::chrono::steady_clock::time_point t0_;
};

// Cost of one blob read, accounted into the stats by whoever holds the lock.
struct IoCost {
  uint64_t bytes = 0;
  double seconds = 0.0;
};

}  // namespace

struct ExpertStore::Impl {
  Impl(const std::string& path, std::vector<std::vector<BlobRef>> table, size_t n_slots,
       const StoreOptions& options);
  ~Impl();

  size_t flat_index(int layer, int expert) const;
  size_t claim_slot(std::unique_lock<std::mutex>& lock, int layer, int expert);
  int64_t pick_victim(int prefetch_layer) const;
  int distance(int layer) const;
  bool less_valuable(const Slot& a, const Slot& b) const;
  double priority(size_t flat) const;
  double current_rate(size_t flat) const;
  void count_use(size_t flat);
  void evict(size_t s);
  void read_blob(const BlobRef& blob, uint8_t* dst, uint8_t* staging, int layer, int expert, IoCost* cost);
  void read_claimed(std::unique_lock<std::mutex>& lock, size_t f, size_t s, int layer, int expert);
  void worker_loop(int index);
  void service(std::unique_lock<std::mutex>& lock, const Request& r, uint8_t* staging_buf);
  void service_read_ahead(std::unique_lock<std::mutex>& lock, size_t f, uint8_t* staging_buf);
  bool held_for_caller(const Slot& slot) const { return slot.held && slot.held_at == cursor; }
  bool counts_as_miss(const Slot& slot) const { return slot.read_ahead && slot.held_at == cursor; }
  // Ready and unpinned, or claimed by a read_ahead with no reader started: nothing lost but a read.
  bool unpinned_unread(const Slot& slot) const {
    return !slot.pins && (slot.state == SlotState::kReady || (slot.state == SlotState::kLoading && slot.awaiting_reader));
  }
  // What the policy may evict: that, unless held for the caller (an unread claim of a layer that
  // is over is not: nobody will read it, the caller moved on without acquiring it).
  bool evictable(const Slot& slot) const { return unpinned_unread(slot) && !held_for_caller(slot); }
  void discard_read(size_t s);
  int64_t take_slot(int prefetch_layer);

  DirectFile file;
  StoreOptions options;
  bool verify;
  std::vector<BlobRef> blobs;       // every expert, layer by layer
  std::vector<size_t> layer_start;  // flat index of each layer's expert 0; one extra at the end
  std::vector<int32_t> slot_of;     // flat index -> slot, or kNoSlot
  size_t slot_bytes = 0;
  std::unique_ptr<uint8_t, FreeDeleter> pool;
  // Compressed blobs are read into a staging buffer and decompressed into the
  // slot: one buffer for demand reads (demand_mu serialises them) and one per
  // I/O worker. Empty when no blob is compressed.
  size_t staging_bytes = 0;
  std::vector<std::unique_ptr<uint8_t, FreeDeleter>> staging;
  std::mutex demand_mu;
  std::vector<Slot> slots;
  std::vector<int32_t> free_slots;  // Empty slots: used before evicting anything
  std::vector<int32_t> layer_of;    // flat index -> layer
  std::vector<double> freq;         // flat index -> activations counted (plus any seeded profile)
  // The Recent policy: rate[f] as of the visit rate_at[f] of its layer; visits[l]: steps of layer l so far.
  std::vector<double> rate;
  std::vector<uint64_t> rate_at;
  std::vector<uint64_t> visits;
  uint64_t clock = 0;
  int current_layer = 0;
  int64_t cursor = std::numeric_limits<int64_t>::min();
  StoreStats stats;
  mutable std::atomic<uint64_t> call_ns{0};  // the caller's time in the store's calls (CallTimer)

  // Read-ahead queue (a layer's misses, served first, in order) and prefetch
  // queue, and their workers. queued[f] marks a live prefetch request; a
  // request whose flag was cleared (demanded meanwhile, or superseded) is
  // skipped. A read-ahead entry whose slot no longer awaits a reader is skipped.
  std::deque<size_t> read_aheads;
  std::priority_queue<Request> requests;
  std::vector<uint8_t> queued;
  uint64_t request_order = 0;
  bool stopping = false;
  std::condition_variable work_cv;   // the worker waits for requests
  std::condition_variable ready_cv;  // acquirers wait for Loading slots
  std::vector<std::thread> workers;
  mutable std::mutex mu;
};

ExpertStore::Impl::Impl(const std::string& path, std::vector<std::vector<BlobRef>> table,
                        size_t n_slots, const StoreOptions& opts)
    : file(path), options(opts), verify(opts.verify_checksums) {
  checked_slot_count(n_slots);
  if (table.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw FormatError("expert table of '" + path + "' has too many layers");
  }

  // Validate every blob against the file now, so a truncated or garbled
  // container fails at load time with a clear message, not mid-generation.
  const uint64_t file_size = file.size();
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
      if (b.size > std::numeric_limits<uint64_t>::max() - kBlobAlign) {  // its slot size would wrap around
        throw FormatError(where + " has an impossible size: the container is malformed");
      }
      const uint64_t on_disk = b.stored ? b.stored : b.size;
      if (!range_within(b.offset, on_disk, file_size)) {
        throw FormatError(where + " lies beyond the end of the file (" +
                          std::to_string(file_size) + " bytes): the container is truncated");
      }
      if (b.stored && !zstd_supported()) {
        throw FormatError(where + " is zstd-compressed, but this build of edgemoe has no zstd support: "
                          "install libzstd (Debian: apt-get install libzstd-dev) and reinstall edgemoe");
      }
      blobs.push_back(b);
      layer_of.push_back(int32_t(l));
    }
  }
  layer_start.push_back(blobs.size());
  slot_of.assign(blobs.size(), kNoSlot);
  freq.assign(blobs.size(), 0.0);
  rate.assign(blobs.size(), 0.0);
  rate_at.assign(blobs.size(), 0);
  visits.assign(table.size(), 0);
  queued.assign(blobs.size(), 0);

  const StoreSizes sizes = ExpertStore::sizes_for(table, options);
  slot_bytes = sizes.slot_bytes;
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
  if (sizes.staging_buffers) {
    staging_bytes = sizes.staging_buffer_bytes;
    for (int i = 0; i < sizes.staging_buffers; ++i) {
      staging.emplace_back(static_cast<uint8_t*>(std::aligned_alloc(DirectFile::kIoAlign, staging_bytes)));
      if (!staging.back()) throw BudgetError("cannot allocate a staging buffer for compressed experts");
    }
  }
  if (options.async_io)
    for (int i = 0; i < std::max(1, options.io_threads); ++i)
      workers.emplace_back([this, i] { worker_loop(i); });
}

ExpertStore::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  work_cv.notify_all();
  for (std::thread& w : workers) w.join();
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

// How much an expert is worth keeping, for the frequency-based policies.
double ExpertStore::Impl::priority(size_t f) const {
  if (options.policy == CachePolicy::Recent) return current_rate(f) / distance(layer_of[f]);
  if (options.policy != CachePolicy::EdgeMoE) return freq[f];
  return freq[f] / distance(layer_of[f]);
}

double ExpertStore::Impl::current_rate(size_t f) const {
  return rate[f] * std::pow(kRecentDecay, double(visits[size_t(layer_of[f])] - rate_at[f]));
}

// An acquire of expert f: its frequency count and its recent rate.
void ExpertStore::Impl::count_use(size_t f) {
  freq[f] += 1.0;
  rate[f] = current_rate(f) + (1.0 - kRecentDecay);
  rate_at[f] = visits[size_t(layer_of[f])];
}

// In token-by-token decoding, how many layers from now `layer` is computed
// next: 1 for the next layer, n_layers for the current one.
int ExpertStore::Impl::distance(int layer) const {
  const int n_layers = int(layer_start.size()) - 1;
  return ((layer - current_layer - 1) % n_layers + n_layers) % n_layers + 1;
}

// True if slot a should be evicted before slot b under the store's policy.
// A prefetched expert not used yet goes last until the step it was read for
// has passed: it is about to be needed, and its count of uses (none yet) says
// nothing of that. After that step it was a wrong guess, valued as it counts.
bool ExpertStore::Impl::less_valuable(const Slot& a, const Slot& b) const {
  const bool stale_a = a.state == SlotState::kLoading, stale_b = b.state == SlotState::kLoading;  // evictable(): unread claims
  if (stale_a != stale_b) return stale_a;
  const bool awaited_a = a.prefetched && a.needed_at >= cursor, awaited_b = b.prefetched && b.needed_at >= cursor;
  if (awaited_a != awaited_b) return awaited_b;
  if (options.policy != CachePolicy::Lru) {
    const double pa = priority(size_t(a.owner)), pb = priority(size_t(b.owner));
    if (pa != pb) return pa < pb;
  }
  return a.last_use < b.last_use;
}

// The Ready, unpinned slot to evict, or -1. For a demand read prefetch_layer
// is -1. A prefetch for a layer may only evict experts of layers computed
// after it (an expert of an earlier layer may be needed before the
// prefetched one: evicting it would trade a likely hit for a guess), never
// experts of the layer being computed (about to be acquired) nor prefetched
// experts not yet used (prefetches would thrash).
int64_t ExpertStore::Impl::pick_victim(int prefetch_layer) const {
  const int min_distance = prefetch_layer < 0 ? 0 : distance(prefetch_layer);
  int64_t best = -1;
  for (size_t s = 0; s < slots.size(); ++s) {
    const Slot& slot = slots[s];
    if (!evictable(slot)) continue;
    const int owner_layer = layer_of[size_t(slot.owner)];
    if (prefetch_layer >= 0 &&
        (slot.prefetched || owner_layer == current_layer || distance(owner_layer) <= min_distance))
      continue;
    if (best < 0 || less_valuable(slot, slots[size_t(best)])) best = int64_t(s);
  }
  return best;
}

void ExpertStore::Impl::evict(size_t s) {
  Slot& slot = slots[s];
  if (slot.prefetched) ++stats.prefetch_wasted;
  slot_of[size_t(slot.owner)] = kNoSlot;
  slot.owner = -1;
  slot.prefetched = false;
  slot.read_ahead = false;
  slot.awaiting_reader = false;
  slot.held = false;
  slot.state = SlotState::kEmpty;
}

// A read into slot s failed: what arrived is not trusted. Its expert is
// uncached again (its next acquire reads it and reports the error), the slot free.
void ExpertStore::Impl::discard_read(size_t s) {
  slots[s].pins = 0;
  evict(s);
  free_slots.push_back(int32_t(s));
}

// An Empty slot if there is one, else the policy's victim for a demand read
// (prefetch_layer -1) or a prefetch (pick_victim), forgotten; -1 if neither.
int64_t ExpertStore::Impl::take_slot(int prefetch_layer) {
  if (!free_slots.empty()) {
    const int32_t s = free_slots.back();
    free_slots.pop_back();
    return s;
  }
  const int64_t victim = pick_victim(prefetch_layer);
  if (victim >= 0) evict(size_t(victim));
  return victim;
}

// An Empty slot if there is one, else the policy's victim (forgetting the
// expert it held). The slot returned is Empty. When every slot is pinned,
// held or being read, waits for a read in flight to finish; with none in
// flight, takes a held slot nobody has pinned or started reading, and throws
// BudgetError only when every slot is pinned. Nothing can start reading
// expert f meanwhile: the caller has dequeued it.
size_t ExpertStore::Impl::claim_slot(std::unique_lock<std::mutex>& lock, int layer, int expert) {
  for (;;) {
    const int64_t taken = take_slot(-1);
    if (taken >= 0) return size_t(taken);
    const auto in_flight = [&] {
      for (const Slot& slot : slots)
        if (slot.state == SlotState::kLoading && !slot.awaiting_reader) return true;
      return false;
    };
    if (!in_flight()) {
      // Every slot is pinned or held for experts about to be acquired. A held one
      // that is not pinned (nor being read) gives way: its own acquire reads it again.
      for (size_t h = 0; h < slots.size(); ++h)
        if (unpinned_unread(slots[h])) {
          evict(h);
          return h;
        }
      throw BudgetError("cannot load expert " + expert_name(layer, expert) + ": all " +
                        std::to_string(slots.size()) +
                        " expert slots are pinned (acquired and not released); the memory budget "
                        "is too small for the experts used at once");
    }
    const auto t0 = std::chrono::steady_clock::now();
    ready_cv.wait(lock);  // every read that ends notifies
    stats.io_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

// Reads one blob into dst and checks it: a raw blob straight into dst, a
// compressed one into `staging` first (checksum over the stored bytes), then
// decompressed into dst. Uses only state fixed at construction, so an I/O
// worker can call it without the store lock. `cost` is filled in even when
// this throws (the wait happened regardless).
void ExpertStore::Impl::read_blob(const BlobRef& blob, uint8_t* dst, uint8_t* staging, int layer, int expert,
                                  IoCost* cost) {
  // The whole of it counts as the read's time, checksum and decompression included: a caller
  // waiting for an expert waits for all of it (and it is not the cache's own work, cache_s).
  struct Timed {
    IoCost* cost;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~Timed() { cost->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  } timed{cost};
  uint8_t* const target = blob.stored ? staging : dst;
  const uint64_t n = blob.stored ? blob.stored : blob.size;
  try {
    cost->bytes = file.read_exact(blob.offset, target, n);
  } catch (const StorageError& e) {
    throw StorageError("cannot read expert " + expert_name(layer, expert) + " (offset " +
                       std::to_string(blob.offset) + ", " + std::to_string(n) +
                       " bytes): " + e.what());
  }
  if (verify) {
    const uint32_t got = crc32(target, n);
    if (got != blob.crc32) {
      throw StorageError("checksum mismatch in expert " + expert_name(layer, expert) +
                         " (offset " + std::to_string(blob.offset) + ", " +
                         std::to_string(n) + " bytes: expected " + hex32(blob.crc32) +
                         ", read " + hex32(got) +
                         "): the container is corrupt; re-convert the model");
    }
  }
  if (!blob.stored) return;
#if defined(EDGEMOE_HAVE_ZSTD)
  // The converter writes one standard zstd frame that declares its size. Refuse
  // anything else before decoding: libzstd also decodes legacy (v0.5-v0.7) and
  // skippable frames, older and less hardened decoders that a hostile file
  // (or one read with checksums off) could otherwise reach.
  uint32_t magic = 0;  // little-endian in the frame
  if (blob.stored >= 4) magic = uint32_t(staging[0]) | uint32_t(staging[1]) << 8 | uint32_t(staging[2]) << 16 | uint32_t(staging[3]) << 24;
  const unsigned long long declared = ZSTD_getFrameContentSize(staging, blob.stored);
  if (magic != ZSTD_MAGICNUMBER || declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ||
      declared != blob.size ||
      ZSTD_findFrameCompressedSize(staging, blob.stored) != blob.stored) {
    throw StorageError("expert " + expert_name(layer, expert) + " is not a single zstd frame of " +
                       std::to_string(blob.size) + " bytes: the container is corrupt; re-convert the model");
  }
  const size_t out = ZSTD_decompress(dst, blob.size, staging, blob.stored);
  if (ZSTD_isError(out) || out != blob.size) {
    throw StorageError("expert " + expert_name(layer, expert) + " does not decompress to its " +
                       std::to_string(blob.size) + " bytes (" +
                       (ZSTD_isError(out) ? ZSTD_getErrorName(out) : "wrong size") +
                       "): the container is corrupt; re-convert the model");
  }
#else
  throw FormatError("this build of edgemoe has no zstd support");  // refused at construction already
#endif
}

void ExpertStore::Impl::worker_loop(int index) {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    work_cv.wait(lock, [&] { return stopping || !read_aheads.empty() || !requests.empty(); });
    if (stopping) return;
    uint8_t* const staging_buf = staging.empty() ? nullptr : staging[size_t(1 + index)].get();
    if (!read_aheads.empty()) {  // the layer being computed waits for these: before any prefetch
      const size_t f = read_aheads.front();
      read_aheads.pop_front();
      service_read_ahead(lock, f, staging_buf);
      continue;
    }
    const Request r = requests.top();
    requests.pop();
    if (!queued[r.flat]) continue;  // demanded or superseded meanwhile
    queued[r.flat] = 0;
    service(lock, r, staging_buf);
  }
}

// Read one prefetch request into a slot. Called with the lock held; drops it
// around the read itself.
void ExpertStore::Impl::service(std::unique_lock<std::mutex>& lock, const Request& r, uint8_t* staging_buf) {
  {
    if (r.stamp < cursor || slot_of[r.flat] != kNoSlot) {
      if (r.stamp < cursor) ++stats.prefetch_cancelled;  // its layer has been computed
      return;
    }
    const int64_t s = take_slot(layer_of[r.flat]);
    if (s < 0) {
      ++stats.prefetch_cancelled;
      return;
    }
    Slot& slot = slots[size_t(s)];
    slot.state = SlotState::kLoading;
    slot.owner = int64_t(r.flat);
    slot_of[r.flat] = int32_t(s);
    const int layer = layer_of[r.flat];
    const int expert = int(r.flat - layer_start[size_t(layer)]);

    IoCost cost;
    bool ok = true;
    lock.unlock();
    try {
      read_blob(blobs[r.flat], slot.data, staging_buf, layer, expert, &cost);
    } catch (...) {
      ok = false;  // the demand read of this expert will report the error
    }
    lock.lock();
    stats.bytes_read += cost.bytes;
    if (ok) {
      slot.state = SlotState::kReady;
      slot.prefetched = true;
      slot.needed_at = r.stamp;
      slot.last_use = ++clock;
      ++stats.prefetch_loaded;
    } else {
      discard_read(size_t(s));
    }
    ready_cv.notify_all();
  }
}

// Read one read-ahead claim into its slot, unless the caller took it over
// meanwhile. Called with the lock held; drops it around the read itself.
void ExpertStore::Impl::service_read_ahead(std::unique_lock<std::mutex>& lock, size_t f, uint8_t* staging_buf) {
  if (slot_of[f] == kNoSlot) return;
  const auto s = size_t(slot_of[f]);
  Slot& slot = slots[s];
  if (slot.state != SlotState::kLoading || !slot.awaiting_reader) return;
  slot.awaiting_reader = false;
  const int layer = layer_of[f];
  const int expert = int(f - layer_start[size_t(layer)]);
  IoCost cost;
  bool ok = true;
  lock.unlock();
  try {
    read_blob(blobs[f], slot.data, staging_buf, layer, expert, &cost);
  } catch (...) {
    ok = false;  // the caller's acquire reads it again and reports the error
  }
  lock.lock();
  stats.bytes_read += cost.bytes;
  if (ok)
    slot.state = SlotState::kReady;
  else
    discard_read(s);
  ready_cv.notify_all();
}

// Read expert f into slot s, claimed for it (Loading, owner f), in the calling
// thread, pinned for the caller. Called with the lock held; drops it around the
// read. On failure the slot goes back empty and the error is rethrown.
void ExpertStore::Impl::read_claimed(std::unique_lock<std::mutex>& lock, size_t f, size_t s, int layer, int expert) {
  Slot& slot = slots[s];
  slot.pins = 1;
  slot.read_ahead = false;
  slot.held = false;
  IoCost cost;
  lock.unlock();
  try {
    if (blobs[f].stored) {
      std::lock_guard<std::mutex> staging_lock(demand_mu);  // one demand staging buffer
      read_blob(blobs[f], slot.data, staging[0].get(), layer, expert, &cost);
    } else {
      read_blob(blobs[f], slot.data, nullptr, layer, expert, &cost);
    }
  } catch (...) {
    lock.lock();
    stats.bytes_read += cost.bytes;
    stats.io_wait_s += cost.seconds;
    discard_read(s);
    ready_cv.notify_all();
    throw;
  }
  lock.lock();
  stats.bytes_read += cost.bytes;
  stats.io_wait_s += cost.seconds;
  slot.state = SlotState::kReady;
  slot.last_use = ++clock;
  count_use(f);
  ready_cv.notify_all();
}

bool zstd_supported() {
#if defined(EDGEMOE_HAVE_ZSTD)
  return true;
#else
  return false;
#endif
}

StoreSizes ExpertStore::sizes_for(const std::vector<std::vector<BlobRef>>& table, const StoreOptions& options) {
  uint64_t max_size = 0, max_stored = 0;
  for (const auto& row : table)
    for (const BlobRef& b : row) {
      if (b.size > std::numeric_limits<uint64_t>::max() - kBlobAlign ||
          b.stored > std::numeric_limits<uint64_t>::max() - kBlobAlign)  // its rounded size would wrap around
        throw FormatError("an expert blob has an impossible size: the container is malformed");
      max_size = std::max(max_size, b.size);
      max_stored = std::max(max_stored, b.stored);
    }
  StoreSizes s;
  // A slot must take a whole rounded direct read of the largest blob. At least
  // one alignment unit, so every slot has a distinct, non-null address.
  s.slot_bytes = std::max<uint64_t>(round_up(max_size, kBlobAlign), kBlobAlign);
  if (max_stored) {
    s.staging_buffer_bytes = round_up(max_stored, kBlobAlign);
    s.staging_buffers = 1 + (options.async_io ? std::max(1, options.io_threads) : 0);
  }
  return s;
}

ExpertStore::ExpertStore(const std::string& path, std::vector<std::vector<BlobRef>> table,
                         size_t n_slots, bool verify_checksums)
    : ExpertStore(path, std::move(table), n_slots, StoreOptions{CachePolicy::Lru, verify_checksums}) {}


ExpertStore::ExpertStore(const std::string& path, std::vector<std::vector<BlobRef>> table,
                         size_t n_slots, const StoreOptions& options)
    : impl_(std::make_unique<Impl>(path, std::move(table), n_slots, options)) {}

ExpertStore::~ExpertStore() = default;

const uint8_t* ExpertStore::acquire(int layer, int expert) {
  Impl& m = *impl_;
  CallTimer timed(m.call_ns);
  std::unique_lock<std::mutex> lock(m.mu);
  const size_t f = m.flat_index(layer, expert);

  while (m.slot_of[f] != kNoSlot) {
    const auto s = size_t(m.slot_of[f]);
    Slot& slot = m.slots[s];
    if (slot.state == SlotState::kLoading) {
      if (slot.awaiting_reader) {  // claimed by read_ahead, and no worker has taken it yet: read it here
        slot.awaiting_reader = false;
        ++m.stats.misses;
        m.read_claimed(lock, f, s, layer, expert);
        return slot.data;
      }
      // A read of this expert is in flight: wait for it rather than read twice.
      const auto t0 = std::chrono::steady_clock::now();
      m.ready_cv.wait(lock, [&] { return m.slot_of[f] != int32_t(s) || slot.state != SlotState::kLoading; });
      m.stats.io_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      continue;  // Ready now, or the read failed and the expert is uncached again
    }
    ++slot.pins;
    slot.held = false;
    if (m.counts_as_miss(slot)) {
      ++m.stats.misses;  // read ahead of this acquire: the miss it was
    } else {
      ++m.stats.hits;
      if (slot.prefetched) {
        ++m.stats.prefetch_hits;
        slot.prefetched = false;
      }
    }
    slot.read_ahead = false;
    slot.last_use = ++m.clock;
    m.count_use(f);
    return slot.data;
  }

  ++m.stats.misses;
  m.queued[f] = 0;  // a queued prefetch of it is superseded by this demand read
  const size_t s = m.claim_slot(lock, layer, expert);
  Slot& slot = m.slots[s];
  slot.state = SlotState::kLoading;
  slot.owner = int64_t(f);
  m.slot_of[f] = int32_t(s);
  m.read_claimed(lock, f, s, layer, expert);
  return slot.data;
}

void ExpertStore::release(int layer, int expert) {
  Impl& m = *impl_;
  CallTimer timed(m.call_ns);
  std::lock_guard<std::mutex> lock(m.mu);
  const size_t f = m.flat_index(layer, expert);
  const int32_t s = m.slot_of[f];
  if (s == kNoSlot || m.slots[size_t(s)].pins == 0) {
    // A caller bug (release without a matching acquire), not bad input.
    throw std::logic_error("release of expert " + expert_name(layer, expert) +
                           " which is not acquired");
  }
  // Unpinned now: evictable. Recency was stamped at acquire.
  --m.slots[size_t(s)].pins;
}

void ExpertStore::set_cursor(int64_t stamp, int layer) {
  Impl& m = *impl_;
  CallTimer timed(m.call_ns);
  std::lock_guard<std::mutex> lock(m.mu);
  if (stamp != m.cursor && layer >= 0 && size_t(layer) < m.visits.size()) ++m.visits[size_t(layer)];  // a new step of it
  m.cursor = stamp;
  m.current_layer = layer;
}

size_t ExpertStore::read_ahead(int layer, const int* experts, size_t n) {
  Impl& m = *impl_;
  CallTimer timed(m.call_ns);
  size_t claimed = 0;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    // First hold the named experts that already have a slot, so that claiming
    // slots for the others never evicts them; a claim left unread by an
    // earlier, abandoned layer is the caller's again.
    for (size_t i = 0; i < n; ++i) {
      const size_t f = m.flat_index(layer, experts[i]);
      if (m.slot_of[f] == kNoSlot) continue;
      Slot& slot = m.slots[size_t(m.slot_of[f])];
      slot.held = true;
      slot.held_at = m.cursor;
      if (slot.state == SlotState::kLoading && slot.awaiting_reader) slot.read_ahead = true;  // still queued
    }
    for (size_t i = 0; i < n; ++i) {
      const size_t f = m.flat_index(layer, experts[i]);
      if (m.slot_of[f] != kNoSlot) continue;  // cached, or already being read
      const int64_t s = m.take_slot(-1);
      if (s < 0) break;  // every slot is pinned or held: acquire() reads the rest one by one
      Slot& slot = m.slots[size_t(s)];
      slot.state = SlotState::kLoading;
      slot.owner = int64_t(f);
      slot.read_ahead = true;
      slot.awaiting_reader = true;
      slot.held = true;
      slot.held_at = m.cursor;
      m.slot_of[f] = int32_t(s);
      m.queued[f] = 0;  // a queued prefetch of it is superseded
      if (!m.workers.empty()) m.read_aheads.push_back(f);
      ++claimed;
    }
  }
  if (claimed && !m.workers.empty()) m.work_cv.notify_all();
  return claimed;
}

bool ExpertStore::prefetch(int layer, int expert, int64_t stamp) {
  Impl& m = *impl_;
  CallTimer timed(m.call_ns);
  {
    std::unique_lock<std::mutex> lock(m.mu);
    const size_t f = m.flat_index(layer, expert);
    if (m.slot_of[f] != kNoSlot || m.queued[f] || stamp < m.cursor) return false;
    ++m.stats.prefetch_issued;
    if (!m.options.async_io) {  // read it now, in the caller's thread
      // The caller's thread reads, like a demand read: the demand staging buffer.
      if (m.blobs[f].stored) {
        std::lock_guard<std::mutex> staging_lock(m.demand_mu);
        m.service(lock, Request{stamp, m.request_order++, f}, m.staging[0].get());
      } else {
        m.service(lock, Request{stamp, m.request_order++, f}, nullptr);
      }
      return true;
    }
    m.queued[f] = 1;
    m.requests.push(Request{stamp, m.request_order++, f});
  }
  m.work_cv.notify_one();
  return true;
}

void ExpertStore::seed_frequencies(const std::vector<std::vector<double>>& shares, double prior_tokens) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  for (size_t l = 0; l < shares.size() && l + 1 < m.layer_start.size(); ++l)
    for (size_t e = 0; e < shares[l].size() && m.layer_start[l] + e < m.layer_start[l + 1]; ++e) {
      const size_t f = m.layer_start[l] + e;
      m.freq[f] += prior_tokens * shares[l][e];
      m.rate[f] = shares[l][e];
      m.rate_at[f] = m.visits[l];
    }
}

CachePolicy ExpertStore::policy() const { return impl_->options.policy; }

bool ExpertStore::is_cached(int layer, int expert) const {
  const Impl& m = *impl_;
  CallTimer timed(m.call_ns);
  std::lock_guard<std::mutex> lock(m.mu);
  const int32_t s = m.slot_of[m.flat_index(layer, expert)];
  return s != kNoSlot && m.slots[size_t(s)].state == SlotState::kReady;
}

size_t ExpertStore::n_slots() const { return impl_->slots.size(); }

int ExpertStore::io_workers() const { return int(impl_->workers.size()); }

size_t ExpertStore::slot_bytes() const { return impl_->slot_bytes; }

bool ExpertStore::direct_io() const { return impl_->file.direct(); }

uint64_t ExpertStore::allocated_bytes() const {
  return (uint64_t)impl_->slots.size() * impl_->slot_bytes + (uint64_t)impl_->staging.size() * impl_->staging_bytes;
}

StoreStats ExpertStore::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  StoreStats s = impl_->stats;
  // A call still running (another thread's) has not added its time yet: never below zero.
  s.cache_s = std::max(0.0, double(impl_->call_ns.load(std::memory_order_relaxed)) * 1e-9 - s.io_wait_s);
  return s;
}

void ExpertStore::reset_stats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stats = StoreStats{};
  impl_->call_ns = 0;
}

}  // namespace edgemoe
