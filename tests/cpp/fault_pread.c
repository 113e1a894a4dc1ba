/* Storage faults for the real, unmodified extension: LD_PRELOAD this library and
 * every pread in the process goes through it. A test arms it through ctypes
 * (fault_arm) to let `after` reads pass and then fail `count` reads (-1: all)
 * in one way: EIO, EINTR, a partial read (half, kept 4096-aligned for
 * O_DIRECT), or an early end of file (0 bytes). fault_injected() counts the
 * reads it failed, so a test can tell the fault was actually hit. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <unistd.h>

enum { FAULT_OFF = 0, FAULT_EIO = 1, FAULT_EINTR = 2, FAULT_PARTIAL = 3, FAULT_EOF = 4 };

static atomic_int kind;
static atomic_long to_skip, to_fail, injected;

void fault_arm(int k, long after, long count) {
  atomic_store(&kind, FAULT_OFF);
  atomic_store(&to_skip, after);
  atomic_store(&to_fail, count);
  atomic_store(&injected, 0);
  atomic_store(&kind, k);
}

void fault_disarm(void) { atomic_store(&kind, FAULT_OFF); }

long fault_injected(void) { return atomic_load(&injected); }

typedef ssize_t (*pread_fn)(int, void*, size_t, off_t);

static ssize_t faulty(pread_fn real, int fd, void* buf, size_t n, off_t off) {
  const int k = atomic_load(&kind);
  if (k == FAULT_OFF || atomic_fetch_sub(&to_skip, 1) > 0) return real(fd, buf, n, off);
  const long left = atomic_load(&to_fail);
  if (left == 0) return real(fd, buf, n, off);
  if (left > 0) atomic_fetch_sub(&to_fail, 1);
  atomic_fetch_add(&injected, 1);
  switch (k) {
    case FAULT_EIO: errno = EIO; return -1;
    case FAULT_EINTR: errno = EINTR; return -1;
    case FAULT_EOF: return 0;
    case FAULT_PARTIAL: {
      size_t part = n >= 8192 ? (n / 2) & ~(size_t)4095 : n / 2;
      if (part == 0) part = n;
      return real(fd, buf, part, off);
    }
  }
  return real(fd, buf, n, off);
}

ssize_t pread(int fd, void* buf, size_t n, off_t off) {
  static pread_fn real;
  if (!real) real = (pread_fn)dlsym(RTLD_NEXT, "pread");
  return faulty(real, fd, buf, n, off);
}

ssize_t pread64(int fd, void* buf, size_t n, off_t off) {
  static pread_fn real;
  if (!real) real = (pread_fn)dlsym(RTLD_NEXT, "pread64");
  return faulty(real, fd, buf, n, off);
}
