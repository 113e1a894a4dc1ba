// Rotary position embeddings: each rope_scaling type's inverse frequencies and
// cos/sin scale, computed as transformers' modeling_rope_utils.py does (f32
// frequencies, the scalar parts in double) so positions rotate identically.
#pragma once
#include <cstdint>
#include <vector>

#include "config.h"

namespace edgemoe {

struct RopeFrequencies {
  std::vector<float> inv_freq;  // [rotary dims / 2]
  float attention_factor = 1.f; // multiplies cos and sin (YaRN's mscale)
};

// The frequencies for a sequence of seq_len positions. Only dynamic NTK
// depends on the length (past max_position it raises the base, recomputed as
// the sequence grows, as transformers does with a KV cache).
RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t seq_len);
// The frequencies of global layers with a rope of their own (config.h: global_rope()): base
// global_rope_theta (or rope_theta) over their head_dim, unscaled; past global_rope_angles pairs, 0
// (those dims do not turn: Gemma 4's proportional rope).
RopeFrequencies global_rope_frequencies(const ModelConfig& c);
// 1 / base^(2i / dim) for i < dim / 2, in f32 as torch computes it (the unscaled rope's frequencies).
std::vector<float> inverse_frequencies(double base, int dim);
inline bool rope_depends_on_length(const ModelConfig& c) { return c.rope_scaling == RopeScaling::Dynamic; }

}  // namespace edgemoe
