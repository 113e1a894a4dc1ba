// Plain structs of pointers into the resident weight buffer (llama2.c style).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../common/qtypes.h"

namespace edgemoe {

// A row-major matrix [rows, cols] (a vector is one row) in some encoding.
struct Tensor {
  QType type = QType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;

  bool empty() const { return data == nullptr; }
  const float* f32() const { return reinterpret_cast<const float*>(data); }
};

// One projection's rank-R corrections, stacked: correction d of a projection [out, in] is
// a rows [d * out, (d + 1) * out) times b rows [d * R, (d + 1) * R); a is [n * out, R], b [n * R, in].
struct LowRankFactors {
  Tensor a, b;
  int64_t rank() const { return a.cols; }
};

// A layer's corrections of merged experts (model/low_rank.h), one per projection; empty: none.
struct LowRankDeltas {
  LowRankFactors gate, up, down;
};

struct LayerWeights {
  Tensor attn_norm, wq, wk, wv, wo;  // latent attention: wq only without q_lora_rank, no wk, wv
  // Latent attention only: q's bottleneck (q_lora_rank only) and the latent's projections.
  // wk_b holds each head's kv_lora_rank rows of qk_nope values (the key up-projection,
  // transposed, so a query takes it into the latent space); wv_b each head's value rows.
  Tensor wq_a, q_a_norm, wq_b, wkv_a, kv_a_norm, wk_b, wv_b;
  Tensor wq_gate;           // attn_output_gate only: [q_dim, hidden], the output gate's projection
  // Gated DeltaNet (linear layers, config.h) instead of the attention projections: q, k and v of
  // every head in one projection [conv_dim, hidden] (all q heads, then k, then v), z (the output
  // gate's input) [value_dim, hidden], b (beta's) and a (the decay's) [value_heads, hidden]; the
  // depthwise convolution [conv_dim, conv_kernel] (f32, the last tap on the newest input);
  // dt_bias and decay_rate = -exp(A_log) [value_heads] (f32); the gated output norm
  // [value_head_dim] (f32, a plain weight); out [hidden, value_dim].
  Tensor lin_qkv, lin_z, lin_b, lin_a, lin_conv, lin_dt_bias, lin_decay_rate, lin_norm, lin_out;
  Tensor bq, bk, bv;        // qkv_bias only
  Tensor bo;                // o_bias only
  Tensor sinks;             // attention_sinks only: [n_heads]
  Tensor router_bias;       // router_bias only: [n_experts]
  Tensor router_correction_bias;  // router_correction_bias only: [n_experts], for the choice alone
  Tensor expert_gate_bias, expert_up_bias, expert_down_bias;  // expert_bias only: [n_experts, I or hidden]
  Tensor q_norm, k_norm;    // qk_norm != None only
  Tensor ffn_norm, router;  // router: [n_experts, hidden], f32
  Tensor shared_gate_proj, shared_up_proj, shared_down_proj, shared_expert_gate;  // shared expert only
  Tensor dense_gate, dense_up, dense_down;  // dense layers only, instead of the router and experts
  Tensor post_attn_norm, post_ffn_norm;     // sandwich_norms only
  Tensor ffn_norm_2, router_norm, post_ffn_norm_1, post_ffn_norm_2;  // expert_norms only (config.h)
  Tensor router_expert_scale;               // router_expert_scale only: [n_experts]
  Tensor layer_scale;                       // layer_output_scale only: [1]
  LowRankDeltas deltas;                     // low_rank only (config.h): merged experts' corrections

  // What the router reads the residual stream through (its own norm under expert_norms).
  const Tensor& router_input_norm() const { return router_norm.empty() ? ffn_norm : router_norm; }
};

// A patch merger of the vision tower: a LayerNorm (over one patch before the vision_merge^2
// patches are put side by side, or over all of them after: DeepStack's), then an MLP with exact
// GELU from vision_merged_width to the language model's hidden width. Every Tensor with a _bias
// partner is [out, in] weights, the biases f32 rows.
struct MergerWeights {
  Tensor norm, norm_bias, fc1, fc1_bias, fc2, fc2_bias;
};

// One pre-norm block of the vision tower: LayerNorms with biases, fused qkv (rows q, k, v, each
// head after head), the attention's output projection, and a gelu-tanh MLP.
struct VisionBlockWeights {
  Tensor norm1, norm1_bias, qkv, qkv_bias, proj, proj_bias, norm2, norm2_bias, fc1, fc1_bias, fc2, fc2_bias;
};

// The vision tower (config.h: vision_*); empty blocks when the model has none.
struct VisionWeights {
  Tensor patch_embed, patch_bias;  // [vision_hidden, patch values] (Conv3d as a matrix), [vision_hidden]
  Tensor position_table;           // [vision_position_side^2, vision_hidden] f32, row = y * side + x
  std::vector<VisionBlockWeights> blocks;
  MergerWeights merger;
  std::vector<MergerWeights> deepstack;  // one per vision_deepstack_layers entry
};

struct ModelWeights {
  Tensor tok_embeddings, norm, output;  // output == tok_embeddings when tied
  std::vector<LayerWeights> layers;
  VisionWeights vision;
};

// One routed expert's three projections, in the expert's own encoding.
struct ExpertView {
  QType type = QType::F32;
  const uint8_t* gate = nullptr;  // [expert_intermediate, hidden]
  const uint8_t* up = nullptr;    // [expert_intermediate, hidden]
  const uint8_t* down = nullptr;  // [hidden, expert_intermediate]
};

// Where routed experts come from. The model asks for an expert right before
// computing with it and releases it right after, so the source (the expert
// store) can keep as few as one expert in memory.
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  virtual ExpertView acquire(int layer, int expert) = 0;
  virtual void release(int layer, int expert) = 0;
  virtual bool is_cached(int layer, int expert) const = 0;
  // The model will acquire these experts of `layer` next, in this order: a
  // source may start reading the uncached ones now, side by side.
  virtual void read_ahead(int /*layer*/, const int* /*experts*/, size_t /*n*/) {}
  // How many reads the source keeps in flight: the window a long list of
  // misses (a prefill batch's) is read ahead in.
  virtual int read_lanes() const { return 1; }
};

}  // namespace edgemoe
