#include "store/direct_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/errors.h"

namespace edgemoe {
namespace {

std::atomic<DirectFile::PreadFn> g_pread{nullptr};

ssize_t do_pread(int fd, void* buf, size_t n, off_t offset) {
  const DirectFile::PreadFn fn = g_pread.load(std::memory_order_relaxed);
  return fn ? fn(fd, buf, n, offset) : ::pread(fd, buf, n, offset);
}

// Linux transfers at most ~2 GiB per pread; ask for less, a multiple of the
// direct-I/O alignment so every request of a direct read stays aligned.
constexpr uint64_t kMaxRequest = uint64_t(1) << 30;
// Buffered reads drop their pages every chunk, so the page cache never holds
// more than one chunk of a big region at a time.
constexpr uint64_t kBufferedChunk = uint64_t(64) << 20;

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

bool env_forbids_direct() {
  const char* v = std::getenv("EDGEMOE_DIRECT_IO");
  return v && std::strcmp(v, "0") == 0;
}

// Opens a second descriptor that bypasses the page cache, or returns -1 if the
// OS or filesystem will not do that (the caller then stays buffered).
int open_direct(const std::string& path) {
#if defined(O_DIRECT)
  // EINVAL here is the usual "this filesystem does not support O_DIRECT"
  // (FUSE, older tmpfs). Any other failure also just means no direct I/O:
  // the buffered open already succeeded, so the file itself is readable.
  return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
#elif defined(F_NOCACHE)
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0 && ::fcntl(fd, F_NOCACHE, 1) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
#else
  (void)path;
  return -1;
#endif
}

}  // namespace

void DirectFile::set_pread_for_testing(PreadFn fn) { g_pread.store(fn, std::memory_order_relaxed); }

DirectFile::DirectFile(const std::string& path, Mode mode) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    throw StorageError("cannot open '" + path + "': " + std::strerror(errno));
  }
  struct stat st;
  std::string why;
  if (::fstat(fd_, &st) != 0) {
    why = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";  // a directory opens fine but cannot be read
  }
  if (!why.empty()) {
    ::close(fd_);
    throw StorageError("cannot read '" + path + "': " + why);
  }
  size_ = static_cast<uint64_t>(st.st_size);
#if defined(POSIX_FADV_RANDOM)
  // No readahead on the buffered fd: a small expert read would otherwise pull
  // the neighbouring experts into the page cache, where the DONTNEED after the
  // read does not reach them. Large reads are unaffected (the kernel still
  // reads the whole requested range in big requests).
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_RANDOM);
#endif
  const bool want_direct =
      mode == Mode::kDirect || (mode == Mode::kFromEnv && !env_forbids_direct());
  if (want_direct) direct_fd_ = open_direct(path);
  direct_.store(direct_fd_ >= 0, std::memory_order_relaxed);
}

DirectFile::~DirectFile() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

int DirectFile::read_loop(int fd, uint64_t offset, uint8_t* dst, uint64_t want, uint64_t need,
                          uint64_t* got) {
  while (*got < need) {
    const uint64_t n = std::min(want - *got, kMaxRequest);
    const ssize_t r = do_pread(fd, dst + *got, static_cast<size_t>(n),
                               static_cast<off_t>(offset + *got));
    if (r < 0) {
      if (errno == EINTR) continue;  // a signal arrived before any data: retry
      return errno;
    }
    if (r == 0) break;  // end of file
    *got += static_cast<uint64_t>(r);
  }
  return 0;
}

void DirectFile::fail_io(int err, uint64_t offset, uint64_t size) const {
  throw StorageError("reading " + std::to_string(size) + " bytes at offset " +
                     std::to_string(offset) + " of '" + path_ + "' failed: " + std::strerror(err));
}

void DirectFile::fail_eof(uint64_t offset, uint64_t got, uint64_t size) const {
  throw StorageError("unexpected end of '" + path_ + "' reading " + std::to_string(size) +
                     " bytes at offset " + std::to_string(offset) + ": got " + std::to_string(got) +
                     " (was the file truncated or replaced?)");
}

void DirectFile::drop_cache(uint64_t offset, uint64_t len) const {
#if defined(POSIX_FADV_DONTNEED)
  // The kernel drops only whole pages inside the range; widen it to page
  // boundaries so the partial pages at either end go too. Dropping a
  // neighbour's page is harmless: it is re-read if anyone needs it.
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = offset / page * page;
  const uint64_t end = round_up(offset + len, page);
  ::posix_fadvise(fd_, static_cast<off_t>(start), static_cast<off_t>(end - start),
                  POSIX_FADV_DONTNEED);
#else
  // macOS has no fadvise; there the direct fd (F_NOCACHE) is essentially
  // always available, so this path is rare.
  (void)offset;
  (void)len;
#endif
}

void DirectFile::read_chunked(uint64_t offset, uint8_t* dst, uint64_t size) const {
  for (uint64_t done = 0; done < size;) {
    const uint64_t n = std::min(size - done, kBufferedChunk);
    uint64_t got = 0;
    const int err = read_loop(fd_, offset + done, dst + done, n, n, &got);
    if (err != 0) fail_io(err, offset + done, n);
    if (got < n) fail_eof(offset, done + got, size);
    drop_cache(offset + done, n);
    done += n;
  }
}

uint64_t DirectFile::read_exact(uint64_t offset, void* dst_v, uint64_t size) {
  auto* dst = static_cast<uint8_t*>(dst_v);
  uint64_t got = 0;
  const bool aligned =
      offset % kIoAlign == 0 && reinterpret_cast<uintptr_t>(dst) % kIoAlign == 0;
  if (direct() && aligned) {
    // The rounded request may pass the end of the file; the read then comes
    // back short, which is fine as long as the payload itself arrived.
    const int err = read_loop(direct_fd_, offset, dst, round_up(size, kIoAlign), size, &got);
    if (err == 0) {
      if (got < size) fail_eof(offset, got, size);
      return got;
    }
    if (err != EINVAL) fail_io(err, offset, size);
    if (got % kIoAlign == 0) {
      // A properly aligned direct read was refused: the filesystem accepted
      // O_DIRECT at open but not on reads (seen on some FUSE and network
      // filesystems). Switch to buffered reads for good.
      direct_.store(false, std::memory_order_relaxed);
    }
    // Otherwise a short read (the file now ends inside the blob) left an
    // unaligned position O_DIRECT cannot continue from; that is no reason to
    // give up direct I/O. Either way, finish this read buffered from where it
    // stopped (which reports the end of file if that is what happened).
  }
  read_chunked(offset + got, dst + got, size - got);
  return size;
}

void DirectFile::read_buffered(uint64_t offset, void* dst, uint64_t size) {
  read_chunked(offset, static_cast<uint8_t*>(dst), size);
}

}  // namespace edgemoe
