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

  // k: kv_k_width(layer) values; v: kv_v_width(layer) (none for a latent layer).
  void store(int layer, int64_t pos, const float* k, const float* v);

  // The keys of positions [first, last] lie in at most two runs of consecutive rows
  // (two when a ring wraps). Returns how many.
  struct Run {
    int64_t row, count;
  };
  int runs(int layer, int64_t first, int64_t last, Run out[2]) const;

  bool f16() const { return f16_; }
  // Row `row` of a layer, at its first element; rows are k_stride(layer) / v_stride(layer) values
  // apart (layers may differ: Gemma 4's global layers are wider). A latent layer's values are its keys' rows.
  const float* k32(int layer, int64_t row) const { return &k32_[k_at(layer, row)]; }
  const float* v32(int layer, int64_t row) const { return has_v(layer) ? &v32_[v_at(layer, row)] : k32(layer, row); }
  const uint16_t* k16(int layer, int64_t row) const { return &k16_[k_at(layer, row)]; }
  const uint16_t* v16(int layer, int64_t row) const { return has_v(layer) ? &v16_[v_at(layer, row)] : k16(layer, row); }
  int k_stride(int layer) const { return layers_[layer].k_width; }
  int v_stride(int layer) const { return has_v(layer) ? layers_[layer].v_width : layers_[layer].k_width; }

  // Whether the positions [0, n) are all still usable after [0, n_past) were written:
  // a ring has overwritten the keys a position far back needs.
  bool can_keep(int64_t n_past, int64_t n) const;
  size_t allocated_bytes() const;

 private:
  struct Layer {
    int64_t rows;
    int k_width, v_width;
    size_t k_offset, v_offset;  // of its first row, in values
  };
  bool has_v(int layer) const { return layers_[layer].v_width > 0; }
  size_t k_at(int layer, int64_t row) const { return layers_[layer].k_offset + (size_t)row * layers_[layer].k_width; }
  size_t v_at(int layer, int64_t row) const { return layers_[layer].v_offset + (size_t)row * layers_[layer].v_width; }

  const ModelConfig& cfg_;
  bool f16_;
  std::vector<Layer> layers_;
  std::vector<float> k32_, v32_;
  std::vector<uint16_t> k16_, v16_;
};

}  // namespace edgemoe
