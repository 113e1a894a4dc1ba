// Self-attention of one layer for a batch of n new tokens: projections,
// optional q/k norms, rotary embeddings, causal GQA over the KV cache, output
// projection, residual add. Reads xn_, adds into x_.
#include <algorithm>
#include <cmath>

#include "ops.h"
#include "transformer.h"

namespace edgemoe {

namespace {

// Rotate pairs (i, i + half) of one head by the position's angles: the
// "rotate_half" convention of transformers' Llama-family models.
void rope(float* head, const float* cos, const float* sin, int half) {
  for (int i = 0; i < half; ++i) {
    const float a = head[i], b = head[i + half];
    head[i] = a * cos[i] - b * sin[i];
    head[i + half] = b * cos[i] + a * sin[i];
  }
}

}  // namespace

void Transformer::attention(int layer, int64_t n) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, hd = cfg_.head_dim, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  const float eps = cfg_.rms_norm_eps;

  Activations a = prepare(pool_, L.wq.type, xn_.data(), n, H, xq_.data());
  if (L.wk.type == L.wq.type && L.wv.type == L.wq.type) {
    const MatmulPart qkv[3] = {{L.wq.data, L.wq.rows, q_.data()}, {L.wk.data, L.wk.rows, k_.data()},
                               {L.wv.data, L.wv.rows, v_.data()}};
    matmul_many(pool_, L.wq.type, qkv, 3, a);
  } else {  // mixed types need their own activations
    matmul(pool_, L.wq, a, q_.data());
    if (L.wk.type != L.wq.type) a = prepare(pool_, L.wk.type, xn_.data(), n, H, xq_.data());
    matmul(pool_, L.wk, a, k_.data());
    if (L.wv.type != L.wk.type) a = prepare(pool_, L.wv.type, xn_.data(), n, H, xq_.data());
    matmul(pool_, L.wv, a, v_.data());
  }
  if (cfg_.qkv_bias) {
    add_bias(q_.data(), L.bq.f32(), n, qd);
    add_bias(k_.data(), L.bk.f32(), n, kvd);
    add_bias(v_.data(), L.bv.f32(), n, kvd);
  }

  const int half = hd / 2;
  for (int64_t t = 0; t < n; ++t) {
    float* q = &q_[t * qd];
    float* k = &k_[t * kvd];
    if (cfg_.qk_norm == QKNorm::Full) {
      rms_norm(q, L.q_norm.f32(), qd, eps, q);
      rms_norm(k, L.k_norm.f32(), kvd, eps, k);
    } else if (cfg_.qk_norm == QKNorm::Head) {
      for (int h = 0; h < cfg_.n_heads; ++h) rms_norm(q + h * hd, L.q_norm.f32(), hd, eps, q + h * hd);
      for (int h = 0; h < cfg_.n_kv_heads; ++h) rms_norm(k + h * hd, L.k_norm.f32(), hd, eps, k + h * hd);
    }
    const float* cs = &rope_cos_[t * half];
    const float* sn = &rope_sin_[t * half];
    for (int h = 0; h < cfg_.n_heads; ++h) rope(q + h * hd, cs, sn, half);
    for (int h = 0; h < cfg_.n_kv_heads; ++h) rope(k + h * hd, cs, sn, half);
    store_kv(layer, t, k, &v_[t * kvd]);
  }

  // Causal attention, one (token, head) pair per work item.
  const int64_t items = n * cfg_.n_heads;
  const int64_t grain = grain_for(2 * (n_past_ + n) * hd);
  pool_.parallel_for(items, [&](int64_t b, int64_t e) {
    float* scores = &scores_[(size_t)pool_.chunk_index(items, b, grain) * ctx_size_];
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / cfg_.n_heads;
      const int h = (int)(item % cfg_.n_heads);
      attend(layer, t, h, scores, &attn_out_[t * qd + h * hd]);
    }
  }, grain);

  a = prepare(pool_, L.wo.type, attn_out_.data(), n, qd, xq_.data());
  matmul(pool_, L.wo, a, xn_.data());  // xn_ is free again: reuse it for the projection
  for (int64_t i = 0; i < n * H; ++i) x_[i] += xn_[i];
}

void Transformer::store_kv(int layer, int64_t t, const float* k, const float* v) {
  const int kvd = cfg_.kv_dim();
  const size_t slot = ((size_t)layer * ctx_size_ + n_past_ + t) * kvd;
  if (kv_f16_) {
    f32_to_f16_row(k, &k_half_[slot], kvd);
    f32_to_f16_row(v, &v_half_[slot], kvd);
  } else {
    std::copy(k, k + kvd, &k_cache_[slot]);
    std::copy(v, v + kvd, &v_cache_[slot]);
  }
}

void Transformer::attend(int layer, int64_t t, int h, float* scores, float* out) const {
  const int hd = cfg_.head_dim, kvd = cfg_.kv_dim();
  const float scale = 1.0f / std::sqrt((float)hd);
  const int64_t n_keys = n_past_ + t + 1;
  const float* q = &q_[t * cfg_.q_dim() + h * hd];
  // This head's rows: one KV head serves n_heads / n_kv_heads query heads (GQA).
  const size_t first = (size_t)layer * ctx_size_ * kvd + (size_t)(h / (cfg_.n_heads / cfg_.n_kv_heads)) * hd;
  if (kv_f16_) {
    attention_scores_f16(q, &k_half_[first], n_keys, kvd, hd, scale, scores);
    softmax(scores, n_keys);
    attention_weighted_sum_f16(scores, &v_half_[first], n_keys, kvd, hd, out);
    return;
  }
  const float* kc = &k_cache_[first];
  const float* vc = &v_cache_[first];
  for (int64_t j = 0; j < n_keys; ++j) scores[j] = dot(q, kc + j * kvd, hd) * scale;
  softmax(scores, n_keys);
  std::fill(out, out + hd, 0.f);
  for (int64_t j = 0; j < n_keys; ++j) {
    const float* v = vc + j * kvd;
    const float p = scores[j];
    for (int i = 0; i < hd; ++i) out[i] += p * v[i];
  }
}

}  // namespace edgemoe
