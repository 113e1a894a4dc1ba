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
         (c.kv_k_width(layer) + c.kv_v_width(layer));
}

size_t KVCache::bytes(const ModelConfig& c, int ctx_size, int max_batch, bool f16) {
  size_t total = 0;
  for (int l = 0; l < c.n_layers; ++l) total += layer_bytes(c, l, ctx_size, max_batch, f16);
  return total;
}

KVCache::KVCache(const ModelConfig& c, int ctx_size, int max_batch, bool f16)
    : cfg_(c), f16_(f16) {
  size_t k_total = 0, v_total = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer L{rows(c, l, ctx_size, max_batch), c.kv_k_width(l), c.kv_v_width(l), k_total, v_total};
    layers_.push_back(L);
    k_total += (size_t)L.rows * L.k_width;
    v_total += (size_t)L.rows * L.v_width;
  }
  if (f16) {
    k16_.assign(k_total, 0);
    v16_.assign(v_total, 0);
  } else {
    k32_.assign(k_total, 0.f);
    v32_.assign(v_total, 0.f);
  }
}

void KVCache::store(int layer, int64_t pos, const float* k, const float* v) {
  const Layer& L = layers_[layer];
  const int64_t row = pos % L.rows;
  const size_t ki = k_at(layer, row), vi = v_at(layer, row);
  if (f16_) {
    f32_to_f16_row(k, &k16_[ki], L.k_width);
    if (L.v_width) f32_to_f16_row(v, &v16_[vi], L.v_width);
  } else {
    std::copy(k, k + L.k_width, &k32_[ki]);
    if (L.v_width) std::copy(v, v + L.v_width, &v32_[vi]);
  }
}

int KVCache::runs(int layer, int64_t first, int64_t last, Run out[2]) const {
  const int64_t R = layers_[layer].rows, a = first % R, n = last - first + 1;
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
    const int64_t R = layers_[l].rows;
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
