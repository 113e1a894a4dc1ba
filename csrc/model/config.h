// The architecture-neutral model description: the one definition of its fields.
//
// Supported architectures differ only in these fields; there is one forward
// pass for all of them. The field list itself (names, bounds, which are
// required) is written once, in config.cpp; reading a config, checking it and
// describing it to Python all walk that list. Adding a field is one line there
// plus a member here (its default is what containers without it mean).
#pragma once
#include <algorithm>
#include <cmath>
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

// How the router's logits become the top-k experts and their weights.
enum class Routing {
  Softmax,      // softmax over all experts, keep the top k (within the best groups where n_group > 1;
                // renormalised if norm_topk_prob), times routed_scaling_factor (DeepSeek-V2)
  TopKSoftmax,  // the top k logits, softmax over those k (gpt-oss)
  Sigmoid,      // sigmoid scores; chosen by score + correction bias within the best groups
                // (GLM-4.5, DeepSeek-V3); weights are the scores, renormalised if norm_topk_prob,
                // times routed_scaling_factor
};

// How a group of experts scores when routing keeps only the topk_group best groups (n_group > 1).
enum class GroupScore {
  Top2Sum,  // the sum of its two best choice scores (DeepSeek-V3, GLM-4.5)
  Max,      // its best probability (DeepSeek-V2's group_limited_greedy)
};

// The routed experts' activation between the gate/up and the down projections.
enum class ExpertActivation {
  SiLU,           // silu(gate) * up
  SwiGLULimited,  // gpt-oss: gate clamped above at limit, up to [-limit, limit], gate * sigmoid(alpha * gate) * (up + 1)
  GeluTanh,       // Gemma: gelu(gate) (tanh approximation) * up; resident MLPs use it too
};

constexpr int kMaxHeadDim = 4096;

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
  std::vector<int64_t> dense_layers;  // layers with a resident dense MLP instead of experts (ascending)
  int dense_intermediate = 0;    // their MLP's width; 0 when there are none
  bool shared_gate = false;      // shared expert output scaled by sigmoid(x . gate)
  bool qkv_bias = false;
  bool o_bias = false;           // a bias on the attention output projection
  bool attention_sinks = false;  // a learned per-head logit joins each softmax (and takes its share)
  int sliding_window = 0;        // keys a sliding layer attends to, itself included; 0: no sliding layers
  std::vector<int64_t> sliding_layers;  // the layers that attend within the window (ascending)
  bool router_bias = false;
  bool expert_bias = false;      // biases on each routed expert's gate, up and down projections
  Routing routing = Routing::Softmax;
  ExpertActivation expert_activation = ExpertActivation::SiLU;
  float swiglu_alpha = 1.702f;
  float swiglu_limit = 7.f;
  int n_group = 1;                    // Sigmoid routing: experts in n_group groups...
  int topk_group = 1;                 // ...of which the topk_group best (by group_score) compete
  GroupScore group_score = GroupScore::Top2Sum;
  bool router_correction_bias = false;  // Sigmoid routing: a per-expert bias added for the choice only
  float routed_scaling_factor = 1.f;
  // Merged experts (convert --merge-experts): the router keeps router_experts outputs and output j
  // of layer l reaches the container's expert expert_map[l * router_experts + j] (-1 in dense
  // layers); a token whose choices reach one expert twice computes it once with their weights
  // summed. 0 and empty: one router output per expert.
  int router_experts = 0;
  std::vector<int64_t> expert_map;
  // Low-rank corrections of merged experts (convert --merge-experts F --low-rank R): router output j
  // of layer l computes its expert plus the rank-low_rank correction expert_delta[l * router_experts
  // + j] of that layer's stack (-1: none; model/low_rank.h). 0 and empty: no corrections.
  int low_rank = 0;
  std::vector<int64_t> expert_delta;
  int rotary_dim = 0;                 // dims of each head that rotate (the first ones); 0: all
  // Latent attention (DeepSeek's MLA), when kv_lora_rank > 0: each position caches one latent of
  // kv_lora_rank values and one rotated key of qk_rope_head_dim, shared by every head; a head's
  // q and k are head_dim = (head_dim - qk_rope_head_dim) latent-derived values then the
  // qk_rope_head_dim rotating ones, its value v_head_dim wide.
  int kv_lora_rank = 0;
  int q_lora_rank = 0;                // q through a bottleneck of this rank (0: one projection)
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  float attention_scale = 0.f;        // the softmax's scale; 0: 1 / sqrt(the layer's head_dim)
  // Gemma 4: where a model has sliding layers, its full-attention ("global") layers may differ from
  // them in head width, key/value heads and rotary embedding; the fields above then describe the
  // sliding layers. 0 means as the sliding layers.
  int global_head_dim = 0;
  int global_kv_heads = 0;
  float global_rope_theta = 0.f;
  int global_rope_angles = 0;         // only the first this many rotary pairs turn (0: all); Gemma's
                                      // "proportional" rope: base^(-2i / head_dim) for those, 0 beyond
  bool global_k_eq_v = false;         // a global layer's values come from its key projection (no wv)
  bool value_norm = false;            // values RMS-normalised per head, without a weight (Gemma 4)
  // Gemma's sandwich norms: the attention's output and the MLP block's output are RMS-normalised
  // (post_attn_norm, post_ffn_norm) before they join the residual stream.
  bool sandwich_norms = false;
  // Gemma 4's MoE block: the shared MLP reads ffn_norm's output and its result is normalised by
  // post_ffn_norm_1; the routed experts read their own norm (ffn_norm_2) and their sum is
  // normalised by post_ffn_norm_2; the router reads a third (router_norm, Gemma's scale / sqrt(hidden)).
  bool expert_norms = false;
  bool router_expert_scale = false;   // each expert's routing weight times its own scale (after renormalising)
  bool layer_output_scale = false;    // the residual stream times a per-layer scalar after each layer
  float embedding_scale = 1.f;        // token embeddings are multiplied by it (Gemma: sqrt(hidden))
  float final_logit_softcap = 0.f;    // logits = cap * tanh(logits / cap); 0: none
  float latent_norm_eps = 1e-6f;      // the q and kv latents' RMSNorms (transformers builds them with 1e-6)
  // Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5-MoE; docs/HYBRID_MODELS.md): the layers in
  // linear_layers mix tokens through a recurrent state instead of a KV cache. Each has
  // linear_key_heads query/key heads of linear_key_head_dim and linear_value_heads value heads of
  // linear_value_head_dim (value head j reads key head j / (value heads / key heads)), a causal
  // depthwise convolution of linear_conv_kernel taps over q, k and v, and per value head a
  // [key_head_dim, value_head_dim] state. The other layers are full attention.
  std::vector<int64_t> linear_layers;
  int linear_conv_kernel = 0;
  int linear_key_heads = 0;
  int linear_value_heads = 0;
  int linear_key_head_dim = 0;
  int linear_value_head_dim = 0;
  // Full attention's output gated per element by sigmoid of a second query projection (wq_gate).
  bool attn_output_gate = false;
  // Multimodal rotary positions (Qwen3-VL, Qwen3.5; docs/VISION_MODELS.md section 4): when given,
  // the rotary pairs take their positions from three streams (time, height, width), sections
  // [t, h, w] pairs of them, interleaved as transformers' apply_interleaved_mrope does (mrope_stream).
  // Text tokens have one position in all three, so only image tokens rotate otherwise.
  std::vector<int64_t> mrope_sections;
  // The vision tower (vision_depth > 0; csrc/model/vision_tower.h): vision_depth pre-norm blocks of
  // vision_hidden wide LayerNorm / attention (vision_heads) / gelu-tanh MLP (vision_intermediate)
  // over 3-channel patches of vision_patch_size^2 pixels times vision_temporal_patch frames, a
  // learned vision_position_side^2 position table, a merger of vision_merge^2 patches into one
  // hidden-wide token, and DeepStack mergers after the blocks vision_deepstack_layers names, whose
  // outputs join the residual stream after the first language layers.
  int vision_depth = 0;
  int vision_hidden = 0;
  int vision_intermediate = 0;
  int vision_heads = 0;
  int vision_patch_size = 0;
  int vision_temporal_patch = 0;
  int vision_merge = 0;
  int vision_position_side = 0;
  std::vector<int64_t> vision_deepstack_layers;
  float vision_norm_eps = 1e-6f;
  // The tokens an image's features stand in for, and those around an image (Python's prompts); -1: none.
  int image_token_id = -1;
  int vision_start_token_id = -1;
  int vision_end_token_id = -1;
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

  bool is_sliding(int layer) const {
    for (int64_t l : sliding_layers)
      if (l == layer) return true;
    return false;
  }
  bool is_dense(int layer) const {
    for (int64_t l : dense_layers)
      if (l == layer) return true;
    return false;
  }
  int n_moe_layers() const { return n_layers - (int)dense_layers.size(); }
  // The router's outputs per layer: what top-k, groups, masks and router tensors count.
  int router_width() const { return router_experts ? router_experts : n_experts; }
  // Layer l's router output -> expert map, or null where outputs are experts.
  const int64_t* expert_map_of(int l) const {
    return expert_map.empty() ? nullptr : &expert_map[(size_t)l * router_experts];
  }
  // Layer l's router output -> correction map, or null where outputs have none.
  const int64_t* expert_delta_of(int l) const {
    return expert_delta.empty() ? nullptr : &expert_delta[(size_t)l * router_experts];
  }
  // How many corrections layer l stacks (each is named by exactly one router output).
  int n_deltas(int l) const;
  // The first layer after `layer` that routes to experts; n_layers if none does.
  int next_moe_layer(int layer) const {
    do ++layer;
    while (layer < n_layers && is_dense(layer));
    return layer;
  }
  bool latent() const { return kv_lora_rank > 0; }
  bool is_linear(int layer) const {
    for (int64_t l : linear_layers)
      if (l == layer) return true;
    return false;
  }
  bool has_linear() const { return !linear_layers.empty(); }
  int64_t linear_key_dim() const { return (int64_t)linear_key_heads * linear_key_head_dim; }
  int64_t linear_value_dim() const { return (int64_t)linear_value_heads * linear_value_head_dim; }
  // The convolved channels: q, k and v of every head.
  int64_t linear_conv_dim() const { return 2 * linear_key_dim() + linear_value_dim(); }
  // One linear layer's state in floats: the last linear_conv_kernel - 1 inputs of each convolved
  // channel, then each value head's [key_head_dim, value_head_dim] matrix.
  int64_t linear_conv_state() const { return linear_conv_dim() * (linear_conv_kernel - 1); }
  int64_t linear_recurrent_state() const {
    return (int64_t)linear_value_heads * linear_key_head_dim * linear_value_head_dim;
  }
  int64_t linear_state_floats() const { return linear_conv_state() + linear_recurrent_state(); }
  bool mrope() const { return !mrope_sections.empty(); }
  // Which stream (0 time, 1 height, 2 width) rotary pair j takes its position from: transformers'
  // interleaved layout (t h w t h w ...), each stream while it has pairs left, the rest time.
  int mrope_stream(int j) const {
    if (j % 3 == 1 && j < 3 * mrope_sections[1]) return 1;
    if (j % 3 == 2 && j < 3 * mrope_sections[2]) return 2;
    return 0;
  }
  bool has_vision() const { return vision_depth > 0; }
  int vision_head_dim() const { return vision_heads ? vision_hidden / vision_heads : 0; }
  // One patch's input values: 3 channels of vision_temporal_patch frames of patch_size^2 pixels.
  int64_t vision_patch_values() const { return 3LL * vision_temporal_patch * vision_patch_size * vision_patch_size; }
  // The merger's input: vision_merge^2 patches side by side.
  int64_t vision_merged_width() const { return (int64_t)vision_hidden * vision_merge * vision_merge; }
  int n_deepstack() const { return (int)vision_deepstack_layers.size(); }
  // An image token's features: its embedding, then one row per DeepStack layer.
  int64_t image_feature_width() const { return (int64_t)hidden * (1 + n_deepstack()); }
  // A full-attention layer of a model with sliding ones, which the global_* fields describe.
  bool is_global(int layer) const { return !sliding_layers.empty() && !is_sliding(layer); }
  int head_dim_of(int layer) const { return is_global(layer) && global_head_dim ? global_head_dim : head_dim; }
  int kv_heads_of(int layer) const { return is_global(layer) && global_kv_heads ? global_kv_heads : n_kv_heads; }
  bool has_wv(int layer) const { return !(global_k_eq_v && is_global(layer)); }
  int rope_dims() const { return latent() ? qk_rope_head_dim : rotary_dim ? rotary_dim : head_dim; }
  // Global layers with rope of their own (global_rope_frequencies in rope.h) rotate all of their head.
  bool global_rope() const { return global_head_dim || global_rope_theta > 0.f || global_rope_angles; }
  bool own_rope(int layer) const { return is_global(layer) && global_rope(); }
  int rope_dims_of(int layer) const { return own_rope(layer) ? head_dim_of(layer) : rope_dims(); }
  // The head width the global layers' own rope turns (rope.h: global_rope_frequencies).
  int global_rope_dims() const { return global_head_dim ? global_head_dim : head_dim; }
  int q_dim(int layer) const { return n_heads * head_dim_of(layer); }
  int kv_dim(int layer) const { return kv_heads_of(layer) * head_dim_of(layer); }
  int qk_nope_head_dim() const { return head_dim - qk_rope_head_dim; }  // latent attention
  int attn_out_dim(int layer) const { return n_heads * (latent() ? v_head_dim : head_dim_of(layer)); }  // what wo takes
  // One cached position's keys and values (a latent layer's values are its latent: no V rows).
  // (none for a linear-attention layer: its state is not per position)
  int kv_k_width(int layer) const {
    return is_linear(layer) ? 0 : latent() ? kv_lora_rank + qk_rope_head_dim : kv_dim(layer);
  }
  int kv_v_width(int layer) const { return latent() || is_linear(layer) ? 0 : kv_dim(layer); }
  float softmax_scale(int layer) const {
    return attention_scale > 0.f ? attention_scale : 1.f / std::sqrt((float)head_dim_of(layer));
  }
  // The widest of each over the layers (scratch sizes).
  int max_q_dim() const { return widest([this](int l) { return q_dim(l); }); }
  int max_kv_k_width() const { return widest([this](int l) { return kv_k_width(l); }); }
  int max_kv_v_width() const { return widest([this](int l) { return kv_v_width(l); }); }
  int max_attn_out_dim() const { return widest([this](int l) { return attn_out_dim(l); }); }
  ExpertActivation resident_activation() const {
    return expert_activation == ExpertActivation::GeluTanh ? ExpertActivation::GeluTanh : ExpertActivation::SiLU;
  }

 private:
  template <class F>
  int widest(F f) const {
    int w = 0;
    for (int l = 0; l < n_layers; ++l) w = std::max(w, f(l));
    return w;
  }
};

// The config the values describe. Throws FormatError naming the first missing,
// unknown, mistyped or out-of-range field: a hostile config must not size
// allocations or overflow the int products above.
ModelConfig config_from_values(const Values& values);
// What layer `layer` is, in words ("sliding-window attention (128) + MoE"): edgemoe info.
std::string layer_kind(const ModelConfig& c, int layer);
// The values of every field (what Python sees as the model's config).
Values config_to_values(const ModelConfig& c);
// Every field of `c`, read from `given`: the given values as they were (an integral rope_theta
// stays an integer, a double is not rounded to the struct's float), the rest at their defaults.
// What Python sees as a model's config.
Values config_with_defaults(const ModelConfig& c, const Values& given);
// The checks config_from_values makes, for a config built in C++ (tests).
void check_config(const ModelConfig& c);

}  // namespace edgemoe
