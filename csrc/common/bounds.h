// Range checks for offsets and sizes read from untrusted files. Written so no
// sum can wrap around: `offset + length > size` with a hostile offset near
// 2^64 wraps to a small number and passes, which is how a bounds check turns
// into an out-of-bounds read.
#pragma once
#include <cstdint>

namespace edgemoe {

// Whether [offset, offset + length) lies inside [0, size).
inline bool range_within(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

}  // namespace edgemoe
