// The architecture-neutral model description: the one definition of its fields.
//
// Supported architectures differ only in these fields; there is one forward
// pass for all of them. The field list itself (names, bounds, which are
// required) is written once, in config.cpp; reading a config, checking it and
// describing it to Python all walk that list. Adding a field is one line there
// plus a member here (its default is what containers without it mean).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../common/values.h"

namespace edgemoe {

enum class QKNorm {
  None,  // Mixtral, Qwen2-MoE
  Head,  // Qwen3-MoE: RMSNorm over each head's head_dim values
  Full,  // OLMoE: RMSNorm over the whole q (or k) projection
};

// How rotary frequencies stretch past the trained context (transformers' rope_type).
enum class RopeScaling {
  None,     // transformers' "default"
  Linear,   // every frequency divided by rope_factor
  Dynamic,  // NTK: the base grows once the sequence passes rope_original_max_position
  Yarn,     // per-dimension blend of original and interpolated frequencies, cos/sin scaled
};

struct ModelConfig {
  std::string architecture;
  int n_layers = 0;
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  int n_experts = 0;
  int top_k = 0;
  int expert_intermediate = 0;
  int shared_intermediate = 0;   // 0: no shared expert
  bool shared_gate = false;      // shared expert output scaled by sigmoid(x . gate)
  bool qkv_bias = false;
  bool norm_topk_prob = false;   // renormalise the top-k routing weights to sum to 1
  bool tie_embeddings = false;   // output head = token embeddings
  QKNorm qk_norm = QKNorm::None;
  float rope_theta = 10000.f;
  RopeScaling rope_scaling = RopeScaling::None;
  float rope_factor = 1.f;
  int rope_original_max_position = 0;  // the trained context (yarn, dynamic)
  float rope_attention_factor = 1.f;   // multiplies cos and sin (YaRN's mscale, resolved by the converter)
  float yarn_beta_fast = 32.f;
  float yarn_beta_slow = 1.f;
  bool yarn_truncate = true;           // round the ramp's ends to whole dimensions
  float rms_norm_eps = 1e-6f;
  int max_position = 4096;
  std::vector<int64_t> eos_token_ids;  // generation stops at these (Python reads them)

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// The config the values describe. Throws FormatError naming the first missing,
// unknown, mistyped or out-of-range field: a hostile config must not size
// allocations or overflow the int products above.
ModelConfig config_from_values(const Values& values);
// The values of every field (what Python sees as the model's config).
Values config_to_values(const ModelConfig& c);
// Every field of `c`, read from `given`: the given values as they were (an integral rope_theta
// stays an integer, a double is not rounded to the struct's float), the rest at their defaults.
// What Python sees as a model's config.
Values config_with_defaults(const ModelConfig& c, const Values& given);
// The checks config_from_values makes, for a config built in C++ (tests).
void check_config(const ModelConfig& c);

}  // namespace edgemoe
