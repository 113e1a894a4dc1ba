#include "transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../common/errors.h"
#include "../kernels/kernels.h"
#include "ops.h"

namespace edgemoe {

namespace {
// The widest MLP: routed experts, the shared expert or a dense layer's MLP.
int64_t widest_mlp(const ModelConfig& c) {
  return std::max({c.expert_intermediate, c.shared_intermediate, c.dense_intermediate});
}
// Every row a matmul quantizes: its width bounds xq_.
int64_t widest_activation(const ModelConfig& c) {
  // (latent attention quantizes every head's rows of a per-head matmul at once)
  const int64_t per_head = c.latent() ? (int64_t)c.n_heads * std::max(c.qk_nope_head_dim(), c.kv_lora_rank) : 0;
  // (a linear-attention layer's output projection takes its value heads' outputs)
  return std::max<int64_t>({c.hidden, c.max_q_dim(), c.max_attn_out_dim(), widest_mlp(c), c.q_lora_rank, per_head,
                            c.linear_value_dim()});
}

// cos and sin (times f's attention factor) of n tokens' positions at each of f's frequencies, into
// cos / sin [token][frequency]; position(t, i): token t's position for frequency i.
template <class Position>
void rotary_table(const RopeFrequencies& f, int64_t n, Position position, float* cos, float* sin) {
  const int64_t half = (int64_t)f.inv_freq.size();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < half; ++i) {
      // one f32 product, as transformers forms the angle
      const float angle = (float)position(t, i) * f.inv_freq[i];
      cos[t * half + i] = std::cos(angle) * f.attention_factor;
      sin[t * half + i] = std::sin(angle) * f.attention_factor;
    }
}

// Latent attention's own buffers (transformer.h), in floats; all 0 for other attention.
struct LatentSizes {
  size_t q_a = 0, q_latent = 0, head_in = 0, head_out = 0;
  size_t total() const { return q_a + q_latent + head_in + head_out; }
};
LatentSizes latent_sizes(const ModelConfig& c, size_t B) {
  if (!c.latent()) return {};
  const size_t heads = c.n_heads;
  return {B * c.q_lora_rank, B * heads * c.max_kv_k_width(), B * heads * std::max(c.qk_nope_head_dim(), c.kv_lora_rank),
          B * heads * std::max(c.kv_lora_rank, c.v_head_dim)};
}
}  // namespace

size_t Transformer::scratch_bytes(const ModelConfig& c, int ctx, int B, int n_threads) {
  const size_t widest = widest_activation(c);
  const size_t ffn = widest_mlp(c);
  size_t floats = 0;
  floats += (size_t)B * c.hidden * 2;                       // x_, xn_
  floats += (size_t)B * (c.max_q_dim() + std::max(c.max_q_dim(), c.max_attn_out_dim()));  // q_, attn_out_
  floats += (size_t)B * (c.max_kv_k_width() + c.max_kv_v_width()); // k_, v_
  floats += c.sandwich_norms ? (size_t)B * c.hidden : 0;    // ffn_out_
  floats += c.attn_output_gate ? (size_t)B * c.max_q_dim() : 0;  // gate_
  if (c.has_linear())                                        // lin_mixed_, lin_z_, lin_b_, lin_a_, lin_o_
    floats += (size_t)B * (c.linear_conv_dim() + 2 * c.linear_value_dim() + 2 * c.linear_value_heads);
  floats += latent_sizes(c, B).total();
  floats += (size_t)n_threads * ctx;                        // scores_
  floats += (size_t)B * c.router_width();                   // router_
  floats += (size_t)B * c.top_k * c.hidden;                 // routed_out_
  floats += (size_t)B * (c.hidden * 2 + ffn * 2);           // ex_in_, ex_out_, ex_gate_, ex_up_
  floats += (size_t)B * c.top_k;                            // topk_w_
  floats += (size_t)B * (c.rope_dims() / 2) * 2;            // rope_cos_, rope_sin_
  floats += c.global_rope() ? (size_t)B * (c.global_rope_dims() / 2) * 2 : 0;  // global_cos_, global_sin_
  // topk_idx_, and topk_delta_ beside it with low-rank corrections
  size_t bytes = floats * sizeof(float) + (size_t)B * c.top_k * sizeof(int) * (c.low_rank ? 2 : 1);
  if (c.mrope())  // next_pos_, positions_, image_rows_
    bytes += ((size_t)ctx + 1 + (size_t)B * 3) * sizeof(int64_t) + (size_t)B * sizeof(const float*);
  bytes += (size_t)B * (widest / kGroup + 1) * sizeof(BlockQ8A);
  return bytes;
}

Transformer::Transformer(const ModelConfig& cfg, const ModelWeights& w, ExpertSource& experts, ThreadPool& pool,
                         int ctx_size, int max_batch, bool kv_f16, int state_checkpoints)
    : cfg_(cfg), w_(w), experts_(experts), pool_(pool), ctx_size_(ctx_size), max_batch_(max_batch),
      kv_(cfg, ctx_size, max_batch, kv_f16), state_(cfg, state_checkpoints) {
  const size_t B = max_batch;

  rope_ = rope_frequencies(cfg, 0);
  rope_len_ = cfg.rope_original_max_position;  // what length 0 means to dynamic NTK (see rotary_angles)
  rope_cos_.resize(B * (cfg.rope_dims() / 2));
  rope_sin_.resize(B * (cfg.rope_dims() / 2));
  if (cfg.global_rope()) {
    global_rope_ = global_rope_frequencies(cfg);
    global_cos_.resize(B * global_rope_.inv_freq.size());
    global_sin_.resize(B * global_rope_.inv_freq.size());
  }

  if (cfg.mrope()) {
    next_pos_.assign((size_t)ctx_size + 1, 0);
    positions_.resize(B * 3);
    image_rows_.resize(B);
  }
  const size_t ffn = widest_mlp(cfg);
  x_.resize(B * cfg.hidden);
  xn_.resize(B * cfg.hidden);
  q_.resize(B * cfg.max_q_dim());
  attn_out_.resize(B * std::max(cfg.max_q_dim(), cfg.max_attn_out_dim()));
  k_.resize(B * cfg.max_kv_k_width());
  v_.resize(B * cfg.max_kv_v_width());
  if (cfg.sandwich_norms) ffn_out_.resize(B * cfg.hidden);
  if (cfg.attn_output_gate) gate_.resize(B * cfg.max_q_dim());
  if (cfg.has_linear()) {
    lin_mixed_.resize(B * cfg.linear_conv_dim());
    lin_z_.resize(B * cfg.linear_value_dim());
    lin_b_.resize(B * cfg.linear_value_heads);
    lin_a_.resize(B * cfg.linear_value_heads);
    lin_o_.resize(B * cfg.linear_value_dim());
  }
  const LatentSizes latent = latent_sizes(cfg, B);
  q_a_.resize(latent.q_a);
  q_latent_.resize(latent.q_latent);
  head_in_.resize(latent.head_in);
  head_out_.resize(latent.head_out);
  scores_.resize((size_t)pool.size() * ctx_size);
  router_.resize(B * cfg.router_width());
  routed_out_.resize(B * cfg.top_k * cfg.hidden);
  ex_in_.resize(B * cfg.hidden);
  ex_out_.resize(B * cfg.hidden);
  ex_gate_.resize(B * ffn);
  ex_up_.resize(B * ffn);
  xq_.resize(B * (widest_activation(cfg) / kGroup + 1));
  topk_idx_.resize(B * cfg.top_k);
  topk_w_.resize(B * cfg.top_k);
  if (cfg.low_rank) topk_delta_.resize(B * cfg.top_k);
}

size_t Transformer::allocated_bytes() const {
  size_t floats = 0;
  for (const std::vector<float>* v : {&rope_cos_, &rope_sin_, &global_cos_, &global_sin_, &ffn_out_, &gate_, &lin_mixed_, &lin_z_, &lin_b_, &lin_a_, &lin_o_, &x_, &xn_, &q_, &k_, &v_, &q_a_, &q_latent_,
                                      &head_in_, &head_out_,
                                      &attn_out_, &scores_, &router_, &routed_out_, &ex_in_, &ex_gate_, &ex_up_,
                                      &ex_out_, &topk_w_})
    floats += v->size();
  return floats * sizeof(float) + kv_.allocated_bytes() + state_.allocated_bytes() +
         xq_.size() * sizeof(BlockQ8A) + (topk_idx_.size() + topk_delta_.size()) * sizeof(int) +
         (next_pos_.size() + positions_.size()) * sizeof(int64_t) + image_rows_.size() * sizeof(const float*);
}

void Transformer::truncate(int64_t n) {
  if (n >= n_past_) return;
  n_past_ = n > 0 && kv_.can_keep(n_past_, n) ? n : 0;
  if (cfg_.has_linear()) n_past_ = state_.restore(n_past_);
}

void Transformer::project(const Tensor* const* weights, float* const* outs, int count, int64_t n) {
  const int H = cfg_.hidden;
  bool same = true;
  for (int i = 1; i < count; ++i) same = same && weights[i]->type == weights[0]->type;
  if (same) {
    MatmulPart parts[kMaxMatmulParts];
    for (int i = 0; i < count; ++i) parts[i] = {weights[i]->data, weights[i]->rows, outs[i]};
    const Activations a = prepare(pool_, weights[0]->type, xn_.data(), n, H, xq_.data());
    matmul_many(pool_, weights[0]->type, parts, count, a);
    return;
  }
  for (int i = 0; i < count; ++i) {  // mixed types need their own activations
    const Activations a = prepare(pool_, weights[i]->type, xn_.data(), n, H, xq_.data());
    matmul(pool_, *weights[i], a, outs[i]);
  }
}

void Transformer::embed(const int32_t* tokens, int64_t n) {
  const Tensor& e = w_.tok_embeddings;
  const size_t row = qtype_row_bytes(e.type, e.cols);
  for (int64_t t = 0; t < n; ++t)
    if (image_rows_.empty() || !image_rows_[t])
      dequantize_row(e.type, e.data + (size_t)tokens[t] * row, e.cols, &x_[(size_t)t * cfg_.hidden]);
    else
      std::copy(image_rows_[t], image_rows_[t] + cfg_.hidden, &x_[(size_t)t * cfg_.hidden]);
  if (cfg_.embedding_scale != 1.f)  // (config.h: no model with images scales its embeddings)
    for (int64_t i = 0; i < n * cfg_.hidden; ++i) x_[i] *= cfg_.embedding_scale;
}

void Transformer::norm_rows(const float* from, const Tensor& w, int64_t n, float* to) const {
  const int H = cfg_.hidden;
  for (int64_t t = 0; t < n; ++t) rms_norm(&from[t * H], w.f32(), H, cfg_.rms_norm_eps, &to[t * H]);
}

void Transformer::place_images(int64_t n) {
  const std::vector<ImageFeatures> none;
  const std::vector<ImageFeatures>& images = images_ ? *images_ : none;
  const int64_t width = cfg_.image_feature_width();
  size_t next_image = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t index = batch_start_ + t, kv = n_past_ + t;  // in the call; in the context
    while (next_image < images.size() && images[next_image].first + images[next_image].count() <= index) ++next_image;
    int64_t* pos = &positions_[t * 3];
    image_rows_[t] = nullptr;
    if (next_image < images.size() && images[next_image].first <= index) {
      const ImageFeatures& image = images[next_image];
      const int64_t j = index - image.first;
      const int64_t start = next_pos_[call_start_ + image.first];  // where its first token went
      pos[0] = start, pos[1] = start + j / image.grid_w, pos[2] = start + j % image.grid_w;
      image_rows_[t] = image.rows + j * width;
    } else {
      pos[0] = pos[1] = pos[2] = next_pos_[kv];
    }
    next_pos_[kv + 1] = std::max({next_pos_[kv], pos[1] + 1, pos[2] + 1, pos[0] + 1});
  }
}

void Transformer::rotary_angles(int64_t n) {
  if (cfg_.mrope()) {  // each pair's angle from its stream's position (config.h: mrope_stream)
    const auto stream_position = [&](int64_t t, int64_t i) { return positions_[t * 3 + cfg_.mrope_stream((int)i)]; };
    rotary_table(rope_, n, stream_position, rope_cos_.data(), rope_sin_.data());
    return;
  }
  // Dynamic NTK's frequencies change only past the trained context: below it, every length
  // gives the trained ones, so they are not recomputed token by token there.
  const int64_t len = std::max<int64_t>(n_past_ + n, cfg_.rope_original_max_position);
  if (rope_depends_on_length(cfg_) && len != rope_len_) {
    rope_ = rope_frequencies(cfg_, len);
    rope_len_ = len;
  }
  const auto position = [&](int64_t t, int64_t) { return n_past_ + t; };
  rotary_table(rope_, n, position, rope_cos_.data(), rope_sin_.data());
  rotary_table(global_rope_, n, position, global_cos_.data(), global_sin_.data());  // none without global rope
}

void Transformer::forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits, StopFlags stop,
                          const std::vector<ImageFeatures>& images) {
  const bool recurrent = cfg_.has_linear();
  struct CallImages {  // the call's images, for place_images, until the call ends however it ends
    const std::vector<ImageFeatures>*& held;
    ~CallImages() { held = nullptr; }
  } call_images{images_ = &images};
  call_start_ = n_past_;
  if (recurrent && n_past_ == 0) state_.clear();
  // Where a model's state cannot be cut back, keep it at the start of a call of several tokens
  // (recurrent_state.h): a prompt's, a verifying pass's; and before the first of the cache
  // drafter's passes, which are thrown away after it.
  const bool drafting_starts = cached_only_ && !last_pass_cached_only_;
  last_pass_cached_only_ = cached_only_;
  if (recurrent && (n > 1 || drafting_starts)) state_.save(n_past_);
  try {
    for (int64_t done = 0; done < n; done += max_batch_) {
      const int64_t b = std::min<int64_t>(max_batch_, n - done);
      const bool last_batch = done + b == n;
      float* out = all_logits ? logits + (size_t)done * cfg_.vocab : logits;
      batch_start_ = done;
      // Intermediate batches of a last-logits-only call need no output head.
      forward_batch(tokens + done, b, (all_logits || last_batch) ? out : nullptr, all_logits, stop);
    }
  } catch (...) {
    // A batch stopped between layers may have advanced some layers' state and not the others':
    // go back to a state that matches a position.
    if (recurrent && batch_moved_state_) n_past_ = state_.restore(n_past_);
    throw;
  }
  // (not at the end of a call that asks for every position's logits: it scores text or verifies
  // drafts, and is not where a later call comes back to; each copy is the whole state)
  if (recurrent && n > 1 && !all_logits) state_.save(n_past_);
}

void Transformer::forward_batch(const int32_t* tokens, int64_t n, float* logits, bool all_logits,
                                StopFlags stop) {
  const int H = cfg_.hidden;
  batch_moved_state_ = false;
  if (cfg_.mrope()) place_images(n);
  embed(tokens, n);
  rotary_angles(n);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    if (stop.interrupt && stop.interrupt->load(std::memory_order_relaxed)) throw Interrupted("interrupted");
    if (stop.cancel && stop.cancel->load(std::memory_order_relaxed)) throw Cancelled("cancelled");
    const LayerWeights& L = w_.layers[l];
    norm_rows(x_.data(), L.attn_norm, n, xn_.data());
    attention(l, n);
    norm_rows(x_.data(), L.ffn_norm, n, xn_.data());
    // With sandwich norms the block's output is normalised before it joins the residual stream.
    float* out = cfg_.sandwich_norms ? ffn_out_.data() : x_.data();
    if (cfg_.sandwich_norms) std::fill(out, out + n * H, 0.f);
    if (cfg_.is_dense(l))
      dense_mlp(l, n, out);
    else
      moe(l, n, out);
    if (cfg_.sandwich_norms) {
      norm_rows(out, L.post_ffn_norm, n, out);
      for (int64_t i = 0; i < n * H; ++i) x_[i] += out[i];
    }
    if (cfg_.layer_output_scale) {
      const float s = L.layer_scale.f32()[0];
      for (int64_t i = 0; i < n * H; ++i) x_[i] *= s;
    }
    if (l < cfg_.n_deepstack() && !image_rows_.empty())  // DeepStack: image tokens take the tower's layer-l row
      for (int64_t t = 0; t < n; ++t)
        if (const float* row = image_rows_[t])
          for (int i = 0; i < H; ++i) x_[t * H + i] += row[(int64_t)(l + 1) * H + i];
  }
  n_past_ += n;
  if (!logits) return;
  const int64_t first = all_logits ? 0 : n - 1;
  const int64_t m = n - first;
  for (int64_t t = first; t < n; ++t)
    rms_norm(&x_[t * H], w_.norm.f32(), H, cfg_.rms_norm_eps, &xn_[(t - first) * H]);
  const Tensor& head = w_.output;
  Activations a = prepare(pool_, head.type, xn_.data(), m, H, xq_.data());
  matmul(pool_, head, a, logits);
  if (const float cap = cfg_.final_logit_softcap; cap > 0.f)
    for (int64_t i = 0; i < m * cfg_.vocab; ++i) logits[i] = std::tanh(logits[i] / cap) * cap;
}

}  // namespace edgemoe
