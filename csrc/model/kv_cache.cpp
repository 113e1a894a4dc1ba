#include "kv_cache.h"

#include <algorithm>

#include "../kernels/kernels.h"

namespace edgemoe {

int64_t KVCache::rows(const ModelConfig& c, int layer, int ctx_size, int max_batch) {
  if (!c.is_sliding(layer)) return ctx_size;
  return std::min<int64_t>(ctx_size, (int64_t)c.sliding_window + max_batch - 1);
}

size_t KVCache::layer_bytes(const ModelConfig& c, int layer, int ctx_size, int max_batch, bool f16) {
  return (f16 ? sizeof(uint16_t) : sizeof(float)) * (size_t)rows(c, layer, ctx_size, max_batch) *
         (c.kv_k_width() + c.kv_v_width());
}

size_t KVCache::bytes(const ModelConfig& c, int ctx_size, int max_batch, bool f16) {
  size_t total = 0;
  for (int l = 0; l < c.n_layers; ++l) total += layer_bytes(c, l, ctx_size, max_batch, f16);
  return total;
}

KVCache::KVCache(const ModelConfig& c, int ctx_size, int max_batch, bool f16)
    : cfg_(c), k_width_(c.kv_k_width()), v_width_(c.kv_v_width()), f16_(f16) {
  int64_t total = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    offset_.push_back(total);
    rows_.push_back(rows(c, l, ctx_size, max_batch));
    total += rows_.back();
  }
  if (f16) {
    k16_.assign((size_t)total * k_width_, 0);
    v16_.assign((size_t)total * v_width_, 0);
  } else {
    k32_.assign((size_t)total * k_width_, 0.f);
    v32_.assign((size_t)total * v_width_, 0.f);
  }
}

void KVCache::store(int layer, int64_t pos, const float* k, const float* v) {
  const size_t row = at(layer, pos % rows_[layer]), ki = row * k_width_, vi = row * v_width_;
  if (f16_) {
    f32_to_f16_row(k, &k16_[ki], k_width_);
    if (v_width_) f32_to_f16_row(v, &v16_[vi], v_width_);
  } else {
    std::copy(k, k + k_width_, &k32_[ki]);
    if (v_width_) std::copy(v, v + v_width_, &v32_[vi]);
  }
}

int KVCache::runs(int layer, int64_t first, int64_t last, Run out[2]) const {
  const int64_t R = rows_[layer], a = first % R, n = last - first + 1;
  if (a + n <= R) {
    out[0] = {a, n};
    return 1;
  }
  out[0] = {a, R - a};
  out[1] = {0, n - (R - a)};
  return 2;
}

bool KVCache::can_keep(int64_t n_past, int64_t n) const {
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const int64_t R = rows_[l];
    if (n_past <= R || !cfg_.is_sliding(l)) continue;
    // held: [n_past - R, n_past); the next position n needs [n - window + 1, n)
    if (n - cfg_.sliding_window + 1 < n_past - R) return false;
  }
  return true;
}

size_t KVCache::allocated_bytes() const {
  return (k32_.size() + v32_.size()) * sizeof(float) + (k16_.size() + v16_.size()) * sizeof(uint16_t);
}

}  // namespace edgemoe
