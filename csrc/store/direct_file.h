// A read-only file that bypasses the OS page cache when it can.
//
// The expert store caches experts itself under a memory budget; if the kernel
// also cached every expert it read, the page cache would silently hold a second
// copy of the model and the budget would be a fiction (and, on a phone, the
// system would evict other apps for it). So reads go through O_DIRECT (Linux)
// or F_NOCACHE (macOS). Where direct I/O is refused (O_DIRECT on some FUSE
// filesystems and older tmpfs returns EINVAL), reads use an ordinary fd and
// drop the pages they read with posix_fadvise(DONTNEED) right after.
//
// Setting EDGEMOE_DIRECT_IO=0 in the environment forces the buffered path
// (Mode::kFromEnv), for filesystems where direct I/O is accepted but slow, and
// so tests can exercise the fallback.
//
// pread is thread-safe on one fd, so concurrent reads from several threads
// (demand reads and the expert store's I/O workers) are fine; the fallback switch
// is an atomic flag.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace edgemoe {

class DirectFile {
 public:
  // Alignment direct reads need for offset, length and destination address.
  static constexpr uint64_t kIoAlign = 4096;

  enum class Mode {
    kFromEnv,   // direct unless EDGEMOE_DIRECT_IO=0
    kDirect,    // direct if the OS allows it
    kBuffered,  // never direct (page cache still dropped after reads)
  };

  // Throws StorageError if the file cannot be opened or is not a regular file.
  explicit DirectFile(const std::string& path, Mode mode = Mode::kFromEnv);
  ~DirectFile();
  DirectFile(const DirectFile&) = delete;
  DirectFile& operator=(const DirectFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }  // at open time
  bool direct() const { return direct_.load(std::memory_order_relaxed); }

  // Reads at least `size` bytes at `offset` into `dst` and returns how many
  // bytes were transferred. In direct mode the request is rounded up to
  // kIoAlign, so `dst` must have room for round_up(size, kIoAlign) bytes; the
  // bytes past `size` are padding. If offset or dst is not kIoAlign-aligned the
  // call is served by the buffered fd instead. If the OS rejects a direct read
  // with EINVAL, the file switches to buffered reads for good. Throws
  // StorageError on I/O error or if the file ends before `size` bytes.
  uint64_t read_exact(uint64_t offset, void* dst, uint64_t size);

  // Reads exactly `size` bytes at `offset` through the page cache, with no
  // alignment requirement, dropping the cached pages as it goes. Meant for big
  // one-off regions (the resident weights). Throws StorageError like read_exact.
  void read_buffered(uint64_t offset, void* dst, uint64_t size);

  // Testing only: replace the pread the class calls (to inject EINTR, short
  // reads or EINVAL). nullptr restores ::pread. Not thread-safe.
  using PreadFn = ssize_t (*)(int fd, void* buf, size_t n, off_t offset);
  static void set_pread_for_testing(PreadFn fn);

 private:
  // Calls pread until `need` bytes arrived (asking for up to `want`) or the
  // file ended; *got counts the bytes read. Returns 0, or the errno of a
  // failure other than EINTR.
  static int read_loop(int fd, uint64_t offset, uint8_t* dst, uint64_t want, uint64_t need,
                       uint64_t* got);
  // Buffered read of exactly `size` bytes in chunks, dropping each chunk's pages.
  void read_chunked(uint64_t offset, uint8_t* dst, uint64_t size) const;
  [[noreturn]] void fail_io(int err, uint64_t offset, uint64_t size) const;
  [[noreturn]] void fail_eof(uint64_t offset, uint64_t got, uint64_t size) const;
  void drop_cache(uint64_t offset, uint64_t len) const;

  std::string path_;
  int fd_ = -1;         // buffered fd, always open
  int direct_fd_ = -1;  // O_DIRECT (Linux) / F_NOCACHE (macOS) fd; -1 if none
  uint64_t size_ = 0;
  std::atomic<bool> direct_{false};
};

}  // namespace edgemoe
