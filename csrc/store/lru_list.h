// Recency order over a fixed set of slots, identified by index 0..n-1.
//
// A doubly linked list threaded through two index arrays: insert, remove and
// take-oldest are O(1) and never allocate after construction (the store's
// acquire path must not allocate per read). A slot is either in the list or
// not; the store keeps only evictable slots (loaded and unpinned) in it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace edgemoe {

class LruList {
 public:
  explicit LruList(size_t n) : prev_(n, kNone), next_(n, kNone), in_(n, false) {}

  bool empty() const { return head_ == kNone; }
  bool contains(size_t i) const { return in_[i]; }

  // Marks slot i as the most recently used. It must not be in the list.
  void push_newest(size_t i) {
    const auto s = static_cast<int32_t>(i);
    prev_[i] = tail_;
    next_[i] = kNone;
    if (tail_ != kNone) next_[tail_] = s; else head_ = s;
    tail_ = s;
    in_[i] = true;
  }

  // Takes slot i out of the list. It must be in the list.
  void remove(size_t i) {
    const int32_t p = prev_[i], n = next_[i];
    if (p != kNone) next_[p] = n; else head_ = n;
    if (n != kNone) prev_[n] = p; else tail_ = p;
    prev_[i] = next_[i] = kNone;
    in_[i] = false;
  }

  // Removes and returns the least recently used slot. The list must not be empty.
  size_t pop_oldest() {
    const auto i = static_cast<size_t>(head_);
    remove(i);
    return i;
  }

 private:
  static constexpr int32_t kNone = -1;
  std::vector<int32_t> prev_, next_;
  std::vector<bool> in_;
  int32_t head_ = kNone, tail_ = kNone;
};

}  // namespace edgemoe
