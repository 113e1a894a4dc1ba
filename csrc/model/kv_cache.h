// The attention layers' keys and values, per layer, f32 or fp16.
//
// A full-attention layer keeps every position. A sliding-window layer keeps a
// ring of rows: its window plus one batch less one, because a batch's new
// keys are written before its queries attend and its first query still needs
// the whole window behind it. On gpt-oss at a long context that is half the
// layers at a few hundred rows instead of the context.
//
// A latent-attention layer (DeepSeek's MLA) caches one row of kv_lora_rank +
// qk_rope_head_dim values per position: its keys, whose first kv_lora_rank
// values are also its values (no V rows).
#pragma once
#include <cstdint>
#include <vector>

#include "config.h"

namespace edgemoe {

class KVCache {
 public:
  static int64_t rows(const ModelConfig& c, int layer, int ctx_size, int max_batch);
  static size_t layer_bytes(const ModelConfig& c, int layer, int ctx_size, int max_batch, bool f16);
  static size_t bytes(const ModelConfig& c, int ctx_size, int max_batch, bool f16);

  KVCache(const ModelConfig& c, int ctx_size, int max_batch, bool f16);

  // k: kv_k_width() values; v: kv_v_width() (none for a latent layer).
  void store(int layer, int64_t pos, const float* k, const float* v);

  // The keys of positions [first, last] lie in at most two runs of consecutive rows
  // (two when a ring wraps). Returns how many.
  struct Run {
    int64_t row, count;
  };
  int runs(int layer, int64_t first, int64_t last, Run out[2]) const;

  bool f16() const { return f16_; }
  // Row `row` of a layer, at its first element; rows are k_stride() / v_stride() values apart.
  // A latent layer's values are its keys' rows.
  const float* k32(int layer, int64_t row) const { return &k32_[at(layer, row) * k_width_]; }
  const float* v32(int layer, int64_t row) const { return v_width_ ? &v32_[at(layer, row) * v_width_] : k32(layer, row); }
  const uint16_t* k16(int layer, int64_t row) const { return &k16_[at(layer, row) * k_width_]; }
  const uint16_t* v16(int layer, int64_t row) const { return v_width_ ? &v16_[at(layer, row) * v_width_] : k16(layer, row); }
  int k_stride() const { return k_width_; }
  int v_stride() const { return v_width_ ? v_width_ : k_width_; }

  // Whether the positions [0, n) are all still usable after [0, n_past) were written:
  // a ring has overwritten the keys a position far back needs.
  bool can_keep(int64_t n_past, int64_t n) const;
  size_t allocated_bytes() const;

 private:
  size_t at(int layer, int64_t row) const { return (size_t)(offset_[layer] + row); }  // among all layers' rows

  const ModelConfig& cfg_;
  int k_width_, v_width_;
  bool f16_;
  std::vector<int64_t> rows_, offset_;  // per layer, in rows
  std::vector<float> k32_, v32_;
  std::vector<uint16_t> k16_, v16_;
};

}  // namespace edgemoe
