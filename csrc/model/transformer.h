// The forward pass shared by every supported MoE architecture.
//
// No I/O and no threads of its own: weights come in as pointers, routed
// experts through an ExpertSource, parallelism through the pool it is given.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "../common/thread_pool.h"
#include "config.h"
#include "expert_mask.h"
#include "kv_cache.h"
#include "observer.h"
#include "recurrent_state.h"
#include "rope.h"
#include "weights.h"

namespace edgemoe {

// What may stop a forward pass between layers: Ctrl-C (throws Interrupted)
// and the caller's cancel token (throws Cancelled). Either may be null.
struct StopFlags {
  const std::atomic<bool>* interrupt = nullptr;
  const std::atomic<bool>* cancel = nullptr;
};

// An image's features standing in for grid_h * grid_w consecutive image tokens of a forward() call:
// VisionTower::encode's rows (image_feature_width wide, raster over the merged grid). The tokens
// take multimodal rotary positions (config.h: mrope_sections) from the image's place in the grid.
struct ImageFeatures {
  int64_t first = 0;           // index of its first token among the call's tokens
  int grid_h = 0, grid_w = 0;  // the merged grid
  const float* rows = nullptr;
  int64_t count() const { return (int64_t)grid_h * grid_w; }
};

class Transformer {
 public:
  // kv_f16: keep the KV cache in fp16 (half the memory and the bytes long-
  // context attention reads; logits move by ~1e-3 relative) instead of f32.
  // state_checkpoints: copies of the linear-attention layers' state kept to go back to
  // (recurrent_state.h); none for a model without such layers.
  Transformer(const ModelConfig& cfg, const ModelWeights& w, ExpertSource& experts, ThreadPool& pool,
              int ctx_size, int max_batch, bool kv_f16 = false, int state_checkpoints = 0);

  // Runs tokens at positions [n_past, n_past + n) through the model and
  // appends them to the KV cache. Writes the logits of every position into
  // logits [n, vocab] when all_logits, else only the last position's [vocab].
  // The caller guarantees n_past + n <= ctx_size.
  // When a stop flag becomes true the pass throws at the next layer boundary
  // (no expert held); n_past then counts only the prefill batches that
  // completed, so the KV cache stays consistent with it (a model with linear-attention layers
  // stopped part way through a batch goes back to its newest state checkpoint, as truncate does).
  // images (ascending, not overlapping, inside the call; the caller checks) replace their tokens'
  // embeddings and add their DeepStack rows after the first layers.
  void forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits, StopFlags stop = {},
               const std::vector<ImageFeatures>& images = {});
  void set_observer(ForwardObserver* observer) { observer_ = observer; }
  void reset() { n_past_ = 0; }
  // Forget every position from n on (n <= n_past): the next forward() overwrites them.
  // Where a sliding-window layer has already overwritten keys position n needs (a
  // rewind by more than about one batch), everything is forgotten; a model with linear-attention
  // layers goes back to its newest state checkpoint at or before n (recurrent_state.h):
  // n_past says what was kept.
  void truncate(int64_t n);
  int64_t n_past() const { return n_past_; }
  int ctx_size() const { return ctx_size_; }
  // Lossy, off at 0: a routed expert that is not cached, and that every token of the batch
  // gives less than this share of its routing weight, is not read (a token's heaviest choice
  // always is); each such token's other experts are scaled up to its total weight.
  void set_skip_missed_below(float share) { skip_missed_below_ = share; }
  // Lossy, off at 0: a routed expert that is not cached, and that every token of the batch gives
  // less than this share of its routing weight (1: any), is acquired as expert id n_experts +
  // expert: the engine's low-bit copy of it (runtime/memory_plan.h, store_blob_table).
  void set_low_bit_missed_below(float share) { low_bit_missed_below_ = share; }
  // Lossy, off at 0: each token uses only its `k` (< top_k) heaviest routed choices, scaled up
  // to the total weight of all top_k.
  void set_active_experts(int k) { active_experts_ = k; }
  // Lossy, off when empty: experts the router never chooses (expert_mask.h).
  void set_expert_mask(ExpertMask mask) { mask_ = std::move(mask); }
  const ExpertMask& expert_mask() const { return mask_; }
  // For the passes that follow: compute only the chosen experts that are cached and read
  // nothing (a token with none cached gets no routed output). What drafting runs: its output
  // is checked by a normal pass, so what it leaves out is not counted as lossy.
  void set_cached_only(bool on) { cached_only_ = on; }
  bool cached_only() const { return cached_only_; }
  // (token, rank) choices left out so far by the lossy options.
  uint64_t skipped_choices() const { return skipped_choices_.load(std::memory_order_relaxed); }
  // (token, rank) choices computed from a low-bit copy so far.
  uint64_t low_bit_choices() const { return low_bit_choices_.load(std::memory_order_relaxed); }
  void reset_lossy_counts() { skipped_choices_ = 0, low_bit_choices_ = 0; }

  // Memory the forward pass allocates, for the memory plan (runtime/memory_plan.h);
  // allocated_bytes() is what this one holds, which tests compare with the two.
  // The context: the KV cache and the linear-attention layers' state with its checkpoints.
  static size_t kv_cache_bytes(const ModelConfig& cfg, int ctx_size, int max_batch, bool kv_f16, int state_checkpoints) {
    return KVCache::bytes(cfg, ctx_size, max_batch, kv_f16) + RecurrentState::bytes(cfg, state_checkpoints);
  }
  static size_t kv_layer_bytes(const ModelConfig& cfg, int layer, int ctx_size, int max_batch, bool kv_f16,
                               int state_checkpoints) {
    return KVCache::layer_bytes(cfg, layer, ctx_size, max_batch, kv_f16) +
           RecurrentState::layer_bytes(cfg, layer, state_checkpoints);
  }
  static size_t scratch_bytes(const ModelConfig& cfg, int ctx_size, int max_batch, int n_threads);
  size_t allocated_bytes() const;

 private:
  void forward_batch(const int32_t* tokens, int64_t n, float* logits, bool all_logits, StopFlags stop);
  void attention(int layer, int64_t n);
  // Gated DeltaNet (linear_attention.cpp), on the layers config.h's linear_layers names.
  void linear_attention(int layer, int64_t n);
  // outs[i] [n, rows] = xn_ [n, hidden] @ weights[i]^T, in one parallel loop where the types agree.
  void project(const Tensor* const* weights, float* const* outs, int count, int64_t n);
  // DeepSeek's multi-head latent attention, absorbed: each head's query is taken into the latent
  // space (wk_b), attends over the cached latents and rotated keys, and its latent context
  // comes out through wv_b (latent_attention.cpp).
  void latent_attention(int layer, int64_t n);
  // One query's causal attention at position pos over the layer's cached rows (within the
  // window on a sliding layer): q [dk] against the keys at column kcol, softmax (with a sink
  // logit if given), the values' dv columns from vcol summed into out [dv].
  void attend(int layer, int64_t pos, const float* q, int dk, int64_t kcol, int64_t vcol, int dv, const float* sink,
              float* scores, float* out) const;
  // The MLP block of a layer: its routed experts and shared expert (or its dense MLP) of the
  // n tokens, added into out [n, hidden] (x_, or ffn_out_ where the block's sum is normalised first).
  void moe(int layer, int64_t n, float* out);
  // Router logits of the n tokens in xn_ to top-k ids and weights (topk_idx_, topk_w_).
  void route(int layer, int64_t n);
  // Scratch of sigmoid and group-limited routing, sized once per batch.
  struct RoutingScratch {
    std::vector<float> choice, group;  // [n_experts], [n_group]
    std::vector<int> order, groups;    // [n_experts], [n_group]
  };
  // Sigmoid routing of one token (config.h): router logits p [n_experts] become scores in place;
  // the top-k ids and weights go to idx and w. mask: the layer's masked experts, or null.
  void route_sigmoid(const LayerWeights& L, float* p, const uint8_t* mask, RoutingScratch& s, int* idx, float* w) const;
  // Softmax and top-k-softmax routing of one token (config.h), likewise; order: [n_experts] scratch.
  void route_softmax(float* p, const uint8_t* mask, RoutingScratch& s, std::vector<int>& order, int* idx, float* w) const;
  // Merged experts: a token's router outputs idx [top_k] to the experts they reach (config.h),
  // a repeated expert folded into its first choice (the later one becomes -1, weight 0). With
  // low-rank corrections, delta [top_k] holds the outputs' corrections and only choices of one
  // expert with one correction fold.
  void reach_merged(const int64_t* map, int* idx, float* w, int* delta) const;
  // Keep the topk_group best groups of choice [n_experts] (by group_score); the others become -inf.
  void limit_to_groups(float* choice, RoutingScratch& s) const;
  // Leaves routed choice `slot` (token * top_k + rank) out: no weight, no output, expert -1.
  void drop_choice(int64_t slot);
  // Token t's routing weights summed (over the choices not dropped).
  float choice_total(int64_t t) const;
  // Scales token t's remaining routing weights up to `total`, their sum before choices were dropped.
  void rescale_choices(int64_t t, float total);
  // Leaves out every token's choices but its `active` heaviest.
  void keep_heaviest_choices(int64_t n, int active);
  // Takes out of `misses` the experts not to read (all under cached_only_, else those every user
  // gives less than skip_missed_below_ of its weight, never its heaviest), dropping their users'
  // choices and scaling up those tokens' other weights.
  void leave_out_misses(int64_t n, std::vector<int>& misses, std::vector<std::vector<int64_t>>& users);
  // Turns the misses every user gives less than low_bit_missed_below_ of its weight into their
  // low-bit copies' ids (n_experts + expert; users moves along), into `cached` where the copy is.
  void use_low_bit_copies(int layer, int64_t n, std::vector<int>& cached, std::vector<int>& misses,
                          std::vector<std::vector<int64_t>>& users);
  // Decode: the token's experts that are already cached (acquired: views), batched (moe.cpp).
  void moe_decode_cached(int layer, const std::vector<int>& experts, const std::vector<ExpertView>& views,
                         const std::vector<std::vector<int64_t>>& users);
  // One routed expert over the tokens that chose it (entries t * top_k + rank), acquired and released here.
  void routed_expert(int layer, int expert, const std::vector<int64_t>& users);
  // routed_out_ row `slot` (= token * top_k + rank) = an expert's output times its routing weight.
  void store_routed(int64_t slot, const float* out);
  void shared_expert(int layer, int64_t n, float* out);
  void dense_mlp(int layer, int64_t n, float* out);
  // A resident gated MLP (gate, up [width, hidden], down [hidden, width]; one type) of the n
  // tokens in xn_, into ex_out_.
  void resident_mlp(const Tensor& gate, const Tensor& up, const Tensor& down, int64_t n);
  // The batch's embeddings into x_: token rows, or an image's features where image_rows_ has one.
  void embed(const int32_t* tokens, int64_t n);
  // Multimodal positions only: each batch token's image row (image_rows_), its three rotary
  // positions (positions_) and the position a text token after it takes (next_pos_).
  void place_images(int64_t n);
  // cos and sin of the batch's positions ([n_past, n_past + n), or positions_ under mrope) into
  // rope_cos_, rope_sin_ (and the global layers' own into global_cos_, global_sin_).
  void rotary_angles(int64_t n);
  // to [n, H] = rms_norm(from) * w, row by row; to may be from.
  void norm_rows(const float* from, const Tensor& w, int64_t n, float* to) const;

  const ModelConfig& cfg_;
  const ModelWeights& w_;
  ExpertSource& experts_;
  ThreadPool& pool_;
  int ctx_size_;
  int max_batch_;
  int64_t n_past_ = 0;
  ForwardObserver* observer_ = nullptr;
  float skip_missed_below_ = 0.f;
  float low_bit_missed_below_ = 0.f;
  int active_experts_ = 0;
  ExpertMask mask_;
  bool cached_only_ = false;
  std::atomic<uint64_t> skipped_choices_{0};  // read by Engine::stats while a pass runs
  std::atomic<uint64_t> low_bit_choices_{0};

  KVCache kv_;
  RecurrentState state_;
  bool batch_moved_state_ = false;  // a linear layer has run in the batch under way
  bool last_pass_cached_only_ = false;  // the previous forward() was a drafting pass
  RopeFrequencies rope_;
  int64_t rope_len_ = 0;                    // the (effective) sequence length rope_ is for (dynamic NTK)
  std::vector<float> rope_cos_, rope_sin_;  // [token of the batch][rope_dims / 2]
  RopeFrequencies global_rope_;             // global layers with a rope of their own (config.h)
  std::vector<float> global_cos_, global_sin_;
  // Multimodal positions only. next_pos_ [ctx_size + 1]: the position a text token at each index
  // takes, one past the largest before it (an image's tokens span its grid's rows and columns, so
  // text after it resumes at the image's start plus its longer side, as transformers' get_rope_index).
  std::vector<int64_t> next_pos_;
  std::vector<int64_t> positions_;          // [token of the batch][time, height, width]
  std::vector<const float*> image_rows_;    // [token of the batch]: its image features, or null
  const std::vector<ImageFeatures>* images_ = nullptr;  // the running forward() call's
  int64_t call_start_ = 0;   // n_past when the running forward() call began
  int64_t batch_start_ = 0;  // the batch's first token, as an index into the call's tokens

  // Scratch, sized for max_batch tokens once at construction.
  std::vector<float> x_, xn_, q_, k_, v_, attn_out_, scores_;
  std::vector<float> ffn_out_;  // sandwich_norms only: the MLP block's output before its norm
  std::vector<float> gate_;     // attn_output_gate only: [token][q_dim]
  // Linear attention only (linear_attention.cpp): [token][conv_dim], [token][value_dim],
  // [token][value_heads] twice, [token][value_dim].
  std::vector<float> lin_mixed_, lin_z_, lin_b_, lin_a_, lin_o_;
  // Latent attention only: q's bottleneck [token][q_lora_rank], each (token, head)'s query in the
  // latent space [kv_lora_rank + qk_rope_head_dim], and the per-head matmuls' inputs
  // [head][token][max(nope, kv_lora_rank)] and outputs [head][token][max(kv_lora_rank, v_head_dim)].
  std::vector<float> q_a_, q_latent_, head_in_, head_out_;
  std::vector<float> router_, routed_out_;   // routed_out_: [token][rank][hidden]
  std::vector<float> ex_in_, ex_gate_, ex_up_, ex_out_;
  std::vector<BlockQ8A> xq_;
  std::vector<int> topk_idx_;
  std::vector<float> topk_w_;
  std::vector<int> topk_delta_;  // low_rank only: each choice's correction (-1: none), beside topk_idx_
};

}  // namespace edgemoe
