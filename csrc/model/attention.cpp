// Self-attention of one layer for a batch of n new tokens: projections,
// optional q/k norms, rotary embeddings, causal GQA over the KV cache (within
// the window on a sliding layer, with a sink logit per head where the model
// has them), output projection, residual add. Reads xn_, adds into x_.
#include <algorithm>
#include <cmath>

#include "ops.h"
#include "transformer.h"

namespace edgemoe {

void Transformer::attention(int layer, int64_t n) {
  if (cfg_.is_linear(layer)) return linear_attention(layer, n);
  if (cfg_.latent()) return latent_attention(layer, n);
  const LayerWeights& L = w_.layers[layer];
  // This layer's widths (Gemma 4's global layers have wider heads and fewer of them than its sliding ones).
  const int H = cfg_.hidden, hd = cfg_.head_dim_of(layer), kv_heads = cfg_.kv_heads_of(layer);
  const int qd = cfg_.q_dim(layer), kvd = cfg_.kv_dim(layer);
  const float eps = cfg_.rms_norm_eps;

  const Tensor* weights[4] = {&L.wq, &L.wk};
  float* outs[4] = {q_.data(), k_.data()};
  int count = 2;
  if (!L.wv.empty()) weights[count] = &L.wv, outs[count++] = v_.data();
  if (cfg_.attn_output_gate) weights[count] = &L.wq_gate, outs[count++] = gate_.data();
  project(weights, outs, count, n);
  if (cfg_.qkv_bias) {
    add_bias(q_.data(), L.bq.f32(), n, qd);
    add_bias(k_.data(), L.bk.f32(), n, kvd);
    if (!L.wv.empty()) add_bias(v_.data(), L.bv.f32(), n, kvd);
  }
  // Without wv (global_k_eq_v) a layer's values start as its key projection.
  if (L.wv.empty()) std::copy(k_.begin(), k_.begin() + n * kvd, v_.begin());

  // The first rope_dims_of(layer) of each head rotate, the rest pass.
  const bool own = cfg_.own_rope(layer);
  const int half = cfg_.rope_dims_of(layer) / 2;
  for (int64_t t = 0; t < n; ++t) {
    float* q = &q_[t * qd];
    float* k = &k_[t * kvd];
    float* v = &v_[t * kvd];
    if (cfg_.qk_norm == QKNorm::Full) {
      rms_norm(q, L.q_norm.f32(), qd, eps, q);
      rms_norm(k, L.k_norm.f32(), kvd, eps, k);
    } else if (cfg_.qk_norm == QKNorm::Head) {
      for (int h = 0; h < cfg_.n_heads; ++h) rms_norm(q + h * hd, L.q_norm.f32(), hd, eps, q + h * hd);
      for (int h = 0; h < kv_heads; ++h) rms_norm(k + h * hd, L.k_norm.f32(), hd, eps, k + h * hd);
    }
    if (cfg_.value_norm)
      for (int h = 0; h < kv_heads; ++h) rms_norm(v + h * hd, nullptr, hd, eps, v + h * hd);
    const float* cs = own ? &global_cos_[t * half] : &rope_cos_[t * half];
    const float* sn = own ? &global_sin_[t * half] : &rope_sin_[t * half];
    for (int h = 0; h < cfg_.n_heads; ++h) rope(q + h * hd, cs, sn, half);
    for (int h = 0; h < kv_heads; ++h) rope(k + h * hd, cs, sn, half);
    kv_.store(layer, n_past_ + t, k, v);
  }

  // Causal attention, one (token, head) pair per work item.
  const int64_t items = n * cfg_.n_heads;
  const int64_t grain = grain_for(2 * (n_past_ + n) * hd);
  pool_.parallel_for(items, [&](int64_t b, int64_t e) {
    float* scores = &scores_[(size_t)pool_.chunk_index(items, b, grain) * ctx_size_];
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / cfg_.n_heads;
      const int h = (int)(item % cfg_.n_heads);
      const float* q = &q_[t * qd + h * hd];
      // This head's columns: one KV head serves n_heads / kv_heads query heads (GQA).
      const int64_t col = (int64_t)(h / (cfg_.n_heads / kv_heads)) * hd;
      const float* sink = cfg_.attention_sinks ? &L.sinks.f32()[h] : nullptr;
      attend(layer, n_past_ + t, q, hd, col, col, hd, sink, scores, &attn_out_[t * qd + h * hd]);
    }
  }, grain);

  if (cfg_.attn_output_gate)
    for (int64_t i = 0; i < n * qd; ++i) attn_out_[i] *= sigmoid(gate_[i]);

  const Activations a = prepare(pool_, L.wo.type, attn_out_.data(), n, qd, xq_.data());
  matmul(pool_, L.wo, a, xn_.data());  // xn_ is free again: reuse it for the projection
  if (cfg_.o_bias) add_bias(xn_.data(), L.bo.f32(), n, H);
  if (cfg_.sandwich_norms) norm_rows(xn_.data(), L.post_attn_norm, n, xn_.data());
  for (int64_t i = 0; i < n * H; ++i) x_[i] += xn_[i];
}

void Transformer::attend(int layer, int64_t pos, const float* q, int dk, int64_t kcol, int64_t vcol, int dv,
                         const float* sink, float* scores, float* out) const {
  const float scale = cfg_.softmax_scale(layer);
  const int64_t first = cfg_.is_sliding(layer) ? std::max<int64_t>(0, pos - cfg_.sliding_window + 1) : 0;
  const int ks = kv_.k_stride(layer), vs = kv_.v_stride(layer);
  KVCache::Run runs[2];
  const int n_runs = kv_.runs(layer, first, pos, runs);

  for (int64_t r = 0, done = 0; r < n_runs; done += runs[r++].count) {
    float* s = scores + done;
    if (kv_.f16()) {
      attention_scores_f16(q, kv_.k16(layer, runs[r].row) + kcol, runs[r].count, ks, dk, scale, s);
    } else {
      const float* kc = kv_.k32(layer, runs[r].row) + kcol;
      for (int64_t j = 0; j < runs[r].count; ++j) s[j] = dot(q, kc + j * ks, dk) * scale;
    }
  }
  const int64_t n_keys = pos - first + 1;
  if (sink) softmax_with_sink(scores, n_keys, *sink);
  else softmax(scores, n_keys);

  std::fill(out, out + dv, 0.f);
  for (int64_t r = 0, done = 0; r < n_runs; done += runs[r++].count) {
    const float* p = scores + done;
    if (kv_.f16()) {
      float part[kMaxHeadDim];
      attention_weighted_sum_f16(p, kv_.v16(layer, runs[r].row) + vcol, runs[r].count, vs, dv, part);
      for (int i = 0; i < dv; ++i) out[i] += part[i];
      continue;
    }
    const float* vc = kv_.v32(layer, runs[r].row) + vcol;
    for (int64_t j = 0; j < runs[r].count; ++j) {
      const float* v = vc + j * vs;
      const float pj = p[j];
      for (int i = 0; i < dv; ++i) out[i] += pj * v[i];
    }
  }
}

}  // namespace edgemoe
