// Standalone test of the expert store, DirectFile and CRC-32 (no framework).
//
// Usage: test_store [--dir BASE]... [--crc FILE EXPECTED]...
//   --dir BASE   run the store tests in a fresh directory under BASE
//   --crc FILE EXPECTED
//                check crc32 of FILE's bytes equals EXPECTED (decimal), as
//                computed by Python's zlib.crc32 (tests/test_store_cpp.py)
// With no arguments the store tests run under /tmp (a disk) and /dev/shm (a
// tmpfs), if present. The built-in CRC checks always run.
// Prints every failed check and, last, "N passed, N failed"; exits 1 on failure.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/statfs.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "store/direct_file.h"
#include "store/expert_store.h"

using namespace edgemoe;

namespace {

std::atomic<int> g_pass{0}, g_fail{0};
std::string g_ctx;  // which directory / mode is under test, printed with failures

void report(bool ok, const char* file, int line, const std::string& what) {
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL %s:%d [%s]: %s\n", file, line, g_ctx.c_str(), what.c_str());
  }
}

#define CHECK(cond) report((cond), __FILE__, __LINE__, #cond)

// Checks that `expr` throws exactly `Exc` (or a subclass) whose message
// contains `substr`.
#define CHECK_THROWS(Exc, expr, substr)                                                      \
  do {                                                                                       \
    try {                                                                                    \
      (void)(expr);                                                                          \
      report(false, __FILE__, __LINE__, #expr " did not throw " #Exc);                       \
    } catch (const Exc& e_) {                                                                \
      const bool has_ = std::string(e_.what()).find(substr) != std::string::npos;            \
      report(has_, __FILE__, __LINE__,                                                       \
             std::string(#Exc " message lacks '") + (substr) + "': " + e_.what());           \
    } catch (const std::exception& e_) {                                                     \
      report(false, __FILE__, __LINE__, std::string(#expr " threw the wrong type: ") + e_.what()); \
    }                                                                                        \
  } while (0)

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// ---------------------------------------------------------------- containers

// A file laid out like the container's expert section: a junk header page,
// then each blob at a 4096-aligned offset, padded (unless pad_end is false for
// the last one, to test a rounded read that passes EOF).
struct Container {
  std::string path;
  std::vector<std::vector<BlobRef>> table;
  std::vector<std::vector<std::vector<uint8_t>>> payload;
  uint64_t file_size = 0;
};

Container make_container(const std::string& path, const std::vector<std::vector<size_t>>& sizes,
                         uint32_t seed, bool pad_end = true) {
  Container c;
  c.path = path;
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(kBlobAlign, 0xEE);
  for (size_t l = 0; l < sizes.size(); ++l) {
    c.table.emplace_back();
    c.payload.emplace_back();
    for (size_t e = 0; e < sizes[l].size(); ++e) {
      std::vector<uint8_t> p(sizes[l][e]);
      for (auto& b : p) b = uint8_t(rng());
      BlobRef r;
      r.offset = bytes.size();
      r.size = p.size();
      r.crc32 = crc32(p.data(), p.size());
      bytes.insert(bytes.end(), p.begin(), p.end());
      const bool last = l + 1 == sizes.size() && e + 1 == sizes[l].size();
      if (!last || pad_end) bytes.resize(round_up(bytes.size(), kBlobAlign), 0xAB);
      c.table.back().push_back(r);
      c.payload.back().push_back(std::move(p));
    }
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != ssize_t(bytes.size())) {
    std::perror(path.c_str());
    std::exit(2);
  }
  // Clean pages, so posix_fadvise(DONTNEED) can actually drop them.
  ::fsync(fd);
  ::close(fd);
  c.file_size = bytes.size();
  return c;
}

// Six experts in two layers: sizes straddle the alignment (1, 4096, 8191, ...).
const std::vector<std::vector<size_t>> kSizes = {{5000, 4096, 1}, {12000, 8191, 300}};

bool same(const uint8_t* p, const std::vector<uint8_t>& v) {
  return p && std::memcmp(p, v.data(), v.size()) == 0;
}

// Acquires, compares with the expected payload, releases.
bool touch(ExpertStore& s, const Container& c, int l, int e) {
  const uint8_t* p = s.acquire(l, e);
  const bool ok = same(p, c.payload[l][e]);
  s.release(l, e);
  return ok;
}

bool on_tmpfs(const std::string& path) {
#ifdef __linux__
  struct statfs fs;
  return ::statfs(path.c_str(), &fs) == 0 && fs.f_type == 0x01021994;  // TMPFS_MAGIC
#else
  (void)path;
  return false;
#endif
}

// Number of pages of [offset, offset+len) that are in the page cache.
size_t resident_pages(const std::string& path, uint64_t offset, uint64_t len) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const size_t map_len = round_up(offset + len, page) - start;
  void* m = ::mmap(nullptr, map_len, PROT_READ, MAP_SHARED, fd, off_t(start));
  ::close(fd);
  if (m == MAP_FAILED) return size_t(-1);
  std::vector<unsigned char> vec(map_len / page);
  size_t n = 0;
  if (::mincore(m, map_len, vec.data()) == 0)
    for (unsigned char v : vec) n += v & 1;
  else
    n = size_t(-1);
  ::munmap(m, map_len);
  return n;
}

// ----------------------------------------------------------- fault injection

enum class Fault { kNone, kEintr, kShort, kEinvalDirect, kEio, kEofEarly };
Fault g_fault = Fault::kNone;
int g_fault_calls = 0;

bool is_direct_fd(int fd) {
#ifdef O_DIRECT
  return (::fcntl(fd, F_GETFL) & O_DIRECT) != 0;
#else
  (void)fd;
  return false;
#endif
}

ssize_t faulty_pread(int fd, void* buf, size_t n, off_t off) {
  ++g_fault_calls;
  switch (g_fault) {
    case Fault::kNone: break;
    case Fault::kEintr:  // every other call is interrupted before any data
      if (g_fault_calls % 2 == 1) {
        errno = EINTR;
        return -1;
      }
      break;
    case Fault::kShort:  // direct reads stay block-sized, buffered ones get odd
      n = std::min<size_t>(n, is_direct_fd(fd) ? 4096 : 777);
      break;
    case Fault::kEinvalDirect:  // a filesystem that opens O_DIRECT but refuses reads
      if (is_direct_fd(fd)) {
        errno = EINVAL;
        return -1;
      }
      break;
    case Fault::kEio: errno = EIO; return -1;
    case Fault::kEofEarly: return 0;
  }
  return ::pread(fd, buf, n, off);
}

struct FaultScope {
  explicit FaultScope(Fault f) {
    g_fault = f;
    g_fault_calls = 0;
    DirectFile::set_pread_for_testing(faulty_pread);
  }
  ~FaultScope() {
    DirectFile::set_pread_for_testing(nullptr);
    g_fault = Fault::kNone;
  }
};

// --------------------------------------------------------------------- CRC

uint32_t crc32_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void test_crc() {
  g_ctx = "crc32";
  const char* s = "123456789";
  CHECK(crc32(s, 9) == 0xCBF43926u);
  CHECK(crc32(nullptr, 0) == 0u);
  CHECK(crc32("a", 1) == 0xE8B7BE43u);
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(300);
  for (auto& b : buf) b = uint8_t(rng());
  // Every length around the 8-byte step, at every misalignment.
  bool all_ok = true;
  for (size_t start = 0; start < 8; ++start)
    for (size_t n = 0; start + n <= 100; ++n)
      all_ok &= crc32(buf.data() + start, n) == crc32_bitwise(buf.data() + start, n);
  CHECK(all_ok);
  // Continuing from a previous value equals one pass.
  all_ok = true;
  for (size_t cut = 0; cut <= buf.size(); cut += 13)
    all_ok &= crc32_update(crc32(buf.data(), cut), buf.data() + cut, buf.size() - cut) ==
              crc32(buf.data(), buf.size());
  CHECK(all_ok);
}

void test_crc_file(const std::string& path, uint32_t expected) {
  g_ctx = "crc32 vs zlib: " + path;
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(in.good() || in.eof());
  CHECK(crc32(data.data(), data.size()) == expected);
  // Same bytes at a misaligned address.
  std::vector<uint8_t> shifted(data.size() + 3);
  std::copy(data.begin(), data.end(), shifted.begin() + 3);
  CHECK(crc32(shifted.data() + 3, data.size()) == expected);
  // In two pieces.
  const size_t cut = data.size() / 3;
  CHECK(crc32_update(crc32(data.data(), cut), data.data() + cut, data.size() - cut) == expected);
}

// ---------------------------------------------------------------- store tests

void test_counters_and_content(const std::string& dir) {
  const Container c = make_container(dir + "/counters.bin", kSizes, 1);
  ExpertStore s(c.path, c.table, 4);
  CHECK(s.n_slots() == 4);
  CHECK(s.slot_bytes() == 12288);  // 12000 rounded up to 4096
  const StoreStats zero = s.stats();
  CHECK(zero.hits == 0 && zero.misses == 0 && zero.bytes_read == 0 && zero.io_wait_s == 0.0);

  CHECK(!s.is_cached(1, 0));
  const uint8_t* p = s.acquire(1, 0);
  CHECK(same(p, c.payload[1][0]));
  CHECK(reinterpret_cast<uintptr_t>(p) % 4096 == 0);
  CHECK(s.is_cached(1, 0));
  s.release(1, 0);
  StoreStats st = s.stats();
  CHECK(st.misses == 1 && st.hits == 0);
  // Direct reads transfer whole blocks; buffered ones just the payload.
  CHECK(st.bytes_read == (s.direct_io() ? 12288u : 12000u));
  CHECK(st.io_wait_s > 0.0);

  CHECK(touch(s, c, 1, 0));  // hit: no new I/O
  st = s.stats();
  CHECK(st.misses == 1 && st.hits == 1);
  CHECK(st.bytes_read == (s.direct_io() ? 12288u : 12000u));

  for (int l = 0; l < 2; ++l)
    for (int e = 0; e < 3; ++e) CHECK(touch(s, c, l, e));
  st = s.stats();
  CHECK(st.hits + st.misses == 8);

  s.reset_stats();
  st = s.stats();
  CHECK(st.hits == 0 && st.misses == 0 && st.bytes_read == 0 && st.io_wait_s == 0.0);
  CHECK(s.is_cached(1, 0) || s.is_cached(0, 0));  // reset clears counters, not the cache
}

void test_lru_order(const std::string& dir) {
  const Container c = make_container(dir + "/lru.bin", kSizes, 2);
  ExpertStore s(c.path, c.table, 2);
  CHECK(touch(s, c, 0, 0));  // A
  CHECK(touch(s, c, 0, 1));  // B
  CHECK(touch(s, c, 0, 0));  // A again: B is now the least recently used
  CHECK(touch(s, c, 0, 2));  // C evicts B
  CHECK(s.is_cached(0, 0));
  CHECK(!s.is_cached(0, 1));
  CHECK(s.is_cached(0, 2));
  CHECK(touch(s, c, 1, 0));  // D evicts A (C was used after A)
  CHECK(!s.is_cached(0, 0));
  CHECK(s.is_cached(0, 2));
  CHECK(s.is_cached(1, 0));
  const StoreStats st = s.stats();
  CHECK(st.hits == 1 && st.misses == 4);
}

void test_pinned_not_evicted(const std::string& dir) {
  const Container c = make_container(dir + "/pinned.bin", kSizes, 3);
  ExpertStore s(c.path, c.table, 2);
  const uint8_t* a = s.acquire(0, 0);  // held for the whole test
  CHECK(touch(s, c, 0, 1));
  CHECK(touch(s, c, 0, 2));  // must evict (0,1), the only unpinned slot
  CHECK(touch(s, c, 1, 0));
  CHECK(touch(s, c, 1, 1));
  CHECK(s.is_cached(0, 0));
  CHECK(same(a, c.payload[0][0]));  // its bytes were never overwritten
  CHECK(s.acquire(0, 0) == a);      // pinned twice now, same slot
  s.release(0, 0);
  s.release(0, 0);
  CHECK(touch(s, c, 1, 2));
  CHECK(touch(s, c, 0, 1));  // both slots now free to go: (0,0) is the oldest
  CHECK(!s.is_cached(0, 0));
}

void test_all_pinned(const std::string& dir) {
  const Container c = make_container(dir + "/allpinned.bin", kSizes, 4);
  ExpertStore s(c.path, c.table, 2);
  s.acquire(0, 0);
  s.acquire(0, 1);
  CHECK_THROWS(BudgetError, s.acquire(0, 2), "pinned");
  CHECK(!s.is_cached(0, 2));
  // A hit on a pinned expert is still fine.
  CHECK(same(s.acquire(0, 1), c.payload[0][1]));
  s.release(0, 1);
  CHECK_THROWS(BudgetError, s.acquire(0, 2), "pinned");  // (0,1) still pinned once
  s.release(0, 1);
  CHECK(touch(s, c, 0, 2));  // evicts (0,1)
  CHECK(s.is_cached(0, 0) && !s.is_cached(0, 1));
  s.release(0, 0);

  // One slot, one expert acquired twice: needs two releases.
  ExpertStore one(c.path, c.table, 1);
  one.acquire(1, 1);
  one.acquire(1, 1);
  one.release(1, 1);
  CHECK_THROWS(BudgetError, one.acquire(1, 2), "pinned");
  one.release(1, 1);
  CHECK(touch(one, c, 1, 2));
  CHECK_THROWS(std::logic_error, one.release(1, 2), "not acquired");
  CHECK_THROWS(std::logic_error, one.release(0, 0), "not acquired");
}

void test_corrupt(const std::string& dir) {
  Container c = make_container(dir + "/corrupt.bin", kSizes, 5);
  // Flip one payload byte of expert 0/1 in the file.
  const int fd = ::open(c.path.c_str(), O_WRONLY);
  const uint8_t bad = uint8_t(c.payload[0][1][100] ^ 0x40);
  CHECK(::pwrite(fd, &bad, 1, off_t(c.table[0][1].offset + 100)) == 1);
  ::close(fd);

  ExpertStore s(c.path, c.table, 1);
  CHECK_THROWS(StorageError, s.acquire(0, 1), "checksum mismatch in expert 0/1");
  CHECK_THROWS(StorageError, s.acquire(0, 1), "re-convert the model");  // not cached: re-read
  CHECK(!s.is_cached(0, 1));
  StoreStats st = s.stats();
  CHECK(st.misses == 2 && st.hits == 0);
  CHECK(st.bytes_read > 0);  // the bytes did arrive
  // The single slot is usable again.
  CHECK(touch(s, c, 0, 0));
  CHECK(touch(s, c, 1, 0));
  CHECK(s.is_cached(1, 0));
  st = s.stats();
  CHECK(st.misses == 4);

  ExpertStore unchecked(c.path, c.table, 1, /*verify_checksums=*/false);
  const uint8_t* p = unchecked.acquire(0, 1);
  CHECK(p && p[100] == bad);
  unchecked.release(0, 1);
}

void test_construction_errors(const std::string& dir) {
  Container c = make_container(dir + "/errors.bin", kSizes, 6);
  CHECK_THROWS(StorageError, ExpertStore(dir + "/missing.bin", c.table, 2), "cannot open");
  CHECK_THROWS(StorageError, ExpertStore(dir, c.table, 2), "not a regular file");
  CHECK_THROWS(BudgetError, ExpertStore(c.path, c.table, 0), "at least one slot");

  auto misaligned = c.table;
  misaligned[1][1].offset += 8;
  CHECK_THROWS(FormatError, ExpertStore(c.path, misaligned, 2), "expert 1/1");
  CHECK_THROWS(FormatError, ExpertStore(c.path, misaligned, 2), "not aligned");

  auto huge = c.table;
  huge[0][2].size = ~uint64_t(0);  // offset + size overflows
  CHECK_THROWS(FormatError, ExpertStore(c.path, huge, 2), "expert 0/2");

  // Cut the file inside the last blob.
  CHECK(::truncate(c.path.c_str(), off_t(c.table[1][2].offset + 10)) == 0);
  CHECK_THROWS(FormatError, ExpertStore(c.path, c.table, 2), "expert 1/2");
  CHECK_THROWS(FormatError, ExpertStore(c.path, c.table, 2), "truncated");
  auto shorter = c.table;
  shorter[1].pop_back();
  ExpertStore s(c.path, shorter, 2);  // the other blobs are all inside the file
  CHECK(touch(s, c, 1, 1));

  CHECK_THROWS(FormatError, s.acquire(2, 0), "does not exist");
  CHECK_THROWS(FormatError, s.acquire(-1, 0), "does not exist");
  CHECK_THROWS(FormatError, s.acquire(1, 2), "layer 1 has 2 experts");
  CHECK_THROWS(FormatError, s.acquire(0, -1), "does not exist");
  CHECK_THROWS(FormatError, s.release(5, 0), "does not exist");

  ExpertStore empty(c.path, {}, 1);
  CHECK(empty.slot_bytes() == 4096);
  CHECK_THROWS(FormatError, empty.acquire(0, 0), "does not exist");
}

void test_truncated_after_open(const std::string& dir) {
  Container c = make_container(dir + "/shrink.bin", kSizes, 7);
  ExpertStore s(c.path, c.table, 2);
  const bool direct = s.direct_io();
  CHECK(::truncate(c.path.c_str(), off_t(c.table[1][0].offset + 100)) == 0);
  CHECK_THROWS(StorageError, s.acquire(1, 0), "expert 1/0");
  CHECK_THROWS(StorageError, s.acquire(1, 0), "offset " + std::to_string(c.table[1][0].offset));
  CHECK_THROWS(StorageError, s.acquire(1, 1), "unexpected end");
  CHECK(!s.is_cached(1, 0) && !s.is_cached(1, 1));
  CHECK(s.direct_io() == direct);  // a truncated file is no reason to drop direct I/O
  CHECK(touch(s, c, 0, 0));
  CHECK(touch(s, c, 0, 1));
  CHECK(touch(s, c, 0, 2));
}

void test_unpadded_end(const std::string& dir) {
  // The last blob ends 300 bytes into a block and the file ends with it: the
  // rounded direct read passes EOF and must still succeed.
  const Container c = make_container(dir + "/unpadded.bin", kSizes, 8, /*pad_end=*/false);
  CHECK(c.file_size % 4096 == 300);
  ExpertStore s(c.path, c.table, 1);
  CHECK(touch(s, c, 1, 2));
  CHECK(s.stats().bytes_read == 300);
}

void test_page_cache_dropped(const std::string& dir) {
  // Buffered fallback must not leave the experts in the page cache. (tmpfs
  // pages are the file itself and cannot be dropped: nothing to check there.)
  if (on_tmpfs(dir)) return;
  const Container c = make_container(dir + "/dropped.bin", kSizes, 9);
  ExpertStore s(c.path, c.table, 2);
  if (s.direct_io()) return;  // only the buffered path drops pages
  // Start from a cold cache. Writing the file left it cached in large folios,
  // which a DONTNEED of one blob's range cannot split and drop; pages the
  // store's own reads bring in are what this test is about.
  const int fd = ::open(c.path.c_str(), O_RDONLY);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (resident_pages(c.path, 0, c.file_size) != 0) {
    std::printf("note: %s cannot drop its page cache; page-cache check skipped\n", dir.c_str());
    return;
  }
  CHECK(touch(s, c, 0, 0));
  CHECK(touch(s, c, 1, 0));
  CHECK(touch(s, c, 0, 2));
  // Nothing cached: not the blobs read, nor neighbours pulled in by readahead.
  CHECK(resident_pages(c.path, 0, c.file_size) == 0);
}

void test_faults(const std::string& dir) {
  const Container c = make_container(dir + "/faults.bin", kSizes, 10);
  {
    ExpertStore s(c.path, c.table, 2);
    FaultScope f(Fault::kEintr);
    for (int e = 0; e < 3; ++e) CHECK(touch(s, c, 1, e));
    CHECK(g_fault_calls >= 6);
  }
  {
    ExpertStore s(c.path, c.table, 2);
    const bool direct = s.direct_io();
    FaultScope f(Fault::kShort);
    CHECK(touch(s, c, 1, 0));
    CHECK(s.direct_io() == direct);  // short reads are not a reason to fall back
    CHECK(s.stats().bytes_read == (direct ? 12288u : 12000u));
    CHECK(g_fault_calls == (direct ? 3 : 16));  // 12288/4096, ceil(12000/777)
  }
  {
    ExpertStore s(c.path, c.table, 2);
    FaultScope f(Fault::kEio);
    CHECK_THROWS(StorageError, s.acquire(0, 0), "expert 0/0");
    CHECK(!s.is_cached(0, 0));
  }
  {
    ExpertStore s(c.path, c.table, 1);
    {
      FaultScope f(Fault::kEofEarly);
      CHECK_THROWS(StorageError, s.acquire(1, 1), "unexpected end");
      CHECK_THROWS(StorageError, s.acquire(1, 1),
                   "offset " + std::to_string(c.table[1][1].offset));
    }
    CHECK(touch(s, c, 1, 1));  // the fault is gone, the store works
  }
  {
    ExpertStore s(c.path, c.table, 2);
    if (s.direct_io()) {
      FaultScope f(Fault::kEinvalDirect);
      CHECK(touch(s, c, 0, 0));
      CHECK(!s.direct_io());  // switched to buffered for good
      CHECK(touch(s, c, 1, 0));
    }
  }
}

void test_direct_file(const std::string& dir) {
  const Container c = make_container(dir + "/df.bin", kSizes, 11, /*pad_end=*/false);
  CHECK_THROWS(StorageError, DirectFile(dir + "/missing.bin"), "cannot open");
  DirectFile f(c.path, DirectFile::Mode::kDirect);
  CHECK(f.size() == c.file_size);
  const bool direct = f.direct();
  const std::vector<uint8_t>& big = c.payload[1][0];
  const uint64_t off = c.table[1][0].offset;

  // Arbitrary region through the page cache.
  std::vector<uint8_t> buf(big.size() + 8);
  f.read_buffered(off + 13, buf.data(), 5000);
  CHECK(std::memcmp(buf.data(), big.data() + 13, 5000) == 0);
  // Misaligned destination: served buffered, direct mode kept.
  CHECK(f.read_exact(off, buf.data() + 1, big.size()) == big.size());
  CHECK(std::memcmp(buf.data() + 1, big.data(), big.size()) == 0);
  CHECK(f.direct() == direct);
  // Past the end of the file.
  CHECK_THROWS(StorageError, f.read_buffered(c.file_size - 10, buf.data(), 20), "unexpected end");

  DirectFile b(c.path, DirectFile::Mode::kBuffered);
  CHECK(!b.direct());
  void* aligned = std::aligned_alloc(4096, 16384);
  CHECK(b.read_exact(off, aligned, big.size()) == big.size());
  CHECK(std::memcmp(aligned, big.data(), big.size()) == 0);
  std::free(aligned);
}

void test_threads(const std::string& dir) {
  const Container c = make_container(dir + "/threads.bin", kSizes, 12);
  ExpertStore s(c.path, c.table, 3);  // each thread pins at most one: never all pinned
  std::atomic<int> bad{0};
  auto worker = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < 1500; ++i) {
      const int l = int(rng() % 2), e = int(rng() % 3);
      try {
        if (!touch(s, c, l, e)) ++bad;
      } catch (const std::exception& ex) {
        std::printf("thread error: %s\n", ex.what());
        ++bad;
      }
    }
  };
  std::thread t1(worker, 1), t2(worker, 2);
  t1.join();
  t2.join();
  CHECK(bad == 0);
  const StoreStats st = s.stats();
  CHECK(st.hits + st.misses == 3000);
}

// A layer's misses claimed together: each read once, counted as the miss it
// was, never evicted before its acquire, with workers or without; a claim
// never takes a pinned slot; a corrupt blob read by a worker is reported by
// the acquire.
void test_read_ahead(const std::string& dir) {
  const Container c = make_container(dir + "/read_ahead.bin", kSizes, 13);
  for (int workers : {0, 3}) {
    StoreOptions o;
    o.io_threads = workers;
    o.async_io = workers > 0;
    ExpertStore s(c.path, c.table, 4, o);
    const int layer1[] = {0, 1, 2};
    CHECK(s.read_ahead(1, layer1, 3) == 3);
    CHECK(s.read_ahead(1, layer1, 3) == 0);  // already claimed: nothing read twice
    // Another layer's demand read must not take the three claimed slots: the fourth is free.
    CHECK(touch(s, c, 0, 0));
    for (int e = 0; e < 3; ++e) CHECK(touch(s, c, 1, e));
    StoreStats st = s.stats();
    CHECK(st.misses == 4 && st.hits == 0);
    CHECK(touch(s, c, 1, 1));  // cached now: a hit
    st = s.stats();
    CHECK(st.hits == 1 && st.misses == 4);
    CHECK(st.bytes_read >= 5000 + 12000 + 8191 + 300);  // each read once

    // With (1,0) pinned, the claims take the three other slots (least recent first), and
    // then there is none left to claim.
    const uint8_t* pinned = s.acquire(1, 0);
    const int two[] = {1, 2}, one[] = {2}, zero[] = {0};
    CHECK(s.read_ahead(0, two, 2) == 2);   // evict (0,0), then (1,2)
    CHECK(s.read_ahead(1, one, 1) == 1);   // (1,2) again: evicts (1,1)
    CHECK(s.read_ahead(0, zero, 1) == 0);  // pinned or claimed, every slot
    CHECK(same(pinned, c.payload[1][0]));
    s.release(1, 0);
    CHECK(touch(s, c, 0, 1) && touch(s, c, 0, 2) && touch(s, c, 1, 2));
    st = s.stats();
    CHECK(st.hits == 2 && st.misses == 7);

    // A claim never acquired (an error mid-layer) is held only until the cursor moves on.
    // The cache holds (1,0), (0,1), (0,2), (1,2), least recent first.
    s.set_cursor(7, 0);
    CHECK(s.read_ahead(0, zero, 1) == 1);  // takes (1,0)'s slot
    s.set_cursor(8, 1);
    const uint8_t* others[] = {s.acquire(0, 1), s.acquire(0, 2), s.acquire(1, 2)};
    const uint8_t* p = s.acquire(1, 0);  // the only slot it can have is the stale claim's
    CHECK(same(p, c.payload[1][0]) && same(others[0], c.payload[0][1]) && same(others[2], c.payload[1][2]));
    s.release(1, 0);
    s.release(0, 1);
    s.release(0, 2);
    s.release(1, 2);
  }

  // Claiming slots for the missing never evicts a named expert that is already cached.
  {
    ExpertStore s(c.path, c.table, 2);  // LRU
    CHECK(touch(s, c, 1, 0) && touch(s, c, 0, 0));  // (1,0) is the least recent
    const int named[] = {0, 1};
    CHECK(s.read_ahead(1, named, 2) == 1);  // claims (1,1) in (0,0)'s slot, not in (1,0)'s
    CHECK(s.is_cached(1, 0) && !s.is_cached(0, 0));
    CHECK(touch(s, c, 1, 0) && touch(s, c, 1, 1));
    const StoreStats st = s.stats();
    CHECK(st.hits == 1 && st.misses == 3);
  }

  // A profile seeds the Recent policy's rates: the expert it says is used most stays, though
  // least recent; unseeded, the two tie and the least recent goes.
  for (const bool seeded : {true, false}) {
    StoreOptions o;
    o.policy = CachePolicy::Recent;
    ExpertStore s(c.path, c.table, 2, o);
    if (seeded) s.seed_frequencies({{0.9, 0.0, 0.0}, {0.0, 0.0, 0.0}}, 100.0);
    CHECK(touch(s, c, 0, 0) && touch(s, c, 0, 1) && touch(s, c, 0, 2));
    CHECK(s.is_cached(0, 0) == seeded && s.is_cached(0, 1) == !seeded);
  }

  // A claim whose read fails: the acquire reads again and reports it; the slot is usable after.
  Container bad = make_container(dir + "/read_ahead_bad.bin", kSizes, 14);
  const int fd = ::open(bad.path.c_str(), O_WRONLY);
  const uint8_t flipped = uint8_t(bad.payload[1][0][10] ^ 0x01);
  CHECK(::pwrite(fd, &flipped, 1, off_t(bad.table[1][0].offset + 10)) == 1);
  ::close(fd);
  StoreOptions o;
  o.io_threads = 2;
  ExpertStore s(bad.path, bad.table, 2, o);
  const int both[] = {0, 1};
  CHECK(s.read_ahead(1, both, 2) == 2);
  CHECK_THROWS(StorageError, s.acquire(1, 0), "checksum mismatch in expert 1/0");
  CHECK(touch(s, bad, 1, 1));
  CHECK(touch(s, bad, 0, 0));
}

ssize_t slow_pread(int fd, void* buf, size_t n, off_t off) {
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  return ::pread(fd, buf, n, off);
}

// A demand read that finds every slot taken by prefetches still being read
// waits for one of them instead of failing as if every slot were pinned.
void test_demand_waits_for_prefetches(const std::string& dir) {
  const Container c = make_container(dir + "/wait.bin", kSizes, 15);
  StoreOptions o;
  o.io_threads = 2;
  ExpertStore s(c.path, c.table, 2, o);
  DirectFile::set_pread_for_testing(slow_pread);
  CHECK(s.prefetch(1, 0, 10) && s.prefetch(1, 1, 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // both workers are reading: no slot is free
  try {
    CHECK(touch(s, c, 0, 0));
  } catch (const BudgetError& e) {
    std::printf("demand read beside prefetches in flight: %s\n", e.what());
    CHECK(false);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the other prefetch is done
  DirectFile::set_pread_for_testing(nullptr);
}

void run_store_tests(const std::string& base, bool force_buffered) {
  std::string tmpl = base + "/edgemoe_store_test_XXXXXX";
  if (!::mkdtemp(&tmpl[0])) {
    std::printf("FAIL cannot create a directory under %s: %s\n", base.c_str(),
                std::strerror(errno));
    ++g_fail;
    return;
  }
  const std::string dir = tmpl;
  if (force_buffered) ::setenv("EDGEMOE_DIRECT_IO", "0", 1); else ::unsetenv("EDGEMOE_DIRECT_IO");

  // Report which path this filesystem actually takes.
  {
    const Container probe = make_container(dir + "/probe.bin", kSizes, 0);
    ExpertStore s(probe.path, probe.table, 1);
    g_ctx = base + (force_buffered ? " buffered(forced)"
                    : s.direct_io() ? " direct"
                                    : " buffered(fallback)");
    std::printf("store tests on %s (%s): %s\n", base.c_str(),
                on_tmpfs(base) ? "tmpfs" : "not tmpfs", g_ctx.c_str());
    if (force_buffered) CHECK(!s.direct_io());
  }

  test_counters_and_content(dir);
  test_lru_order(dir);
  test_pinned_not_evicted(dir);
  test_all_pinned(dir);
  test_corrupt(dir);
  test_construction_errors(dir);
  test_truncated_after_open(dir);
  test_unpadded_end(dir);
  test_page_cache_dropped(dir);
  test_faults(dir);
  test_direct_file(dir);
  test_threads(dir);
  test_read_ahead(dir);
  test_demand_waits_for_prefetches(dir);

  ::unsetenv("EDGEMOE_DIRECT_IO");
  const std::string rm = "rm -rf '" + dir + "'";
  if (std::system(rm.c_str()) != 0) std::printf("note: could not remove %s\n", dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  std::vector<std::pair<std::string, uint32_t>> crc_files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      dirs.push_back(argv[++i]);
    } else if (a == "--crc" && i + 2 < argc) {
      crc_files.emplace_back(argv[i + 1], uint32_t(std::stoul(argv[i + 2])));
      i += 2;
    } else {
      std::fprintf(stderr, "usage: %s [--dir BASE]... [--crc FILE EXPECTED]...\n", argv[0]);
      return 2;
    }
  }
  if (dirs.empty() && crc_files.empty()) {
    dirs.push_back("/tmp");
    struct stat st;
    if (::stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) {
      dirs.push_back("/dev/shm");
    } else {
      std::printf("note: no /dev/shm, tmpfs fallback not exercised\n");
    }
  }

  test_crc();
  for (const auto& cf : crc_files) test_crc_file(cf.first, cf.second);
  for (const auto& d : dirs) {
    run_store_tests(d, false);
    run_store_tests(d, true);
  }
  std::printf("%d passed, %d failed\n", g_pass.load(), g_fail.load());
  return g_fail == 0 ? 0 : 1;
}
