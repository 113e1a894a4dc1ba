// DeepSeek's multi-head latent attention (MLA) of one layer for a batch of n new tokens,
// computed in its absorbed form. Reads xn_, adds into x_.
//
// Each position caches one row: the normed latent c (kv_lora_rank values) and the rotated
// shared key k_pe (qk_rope_head_dim). transformers expands c into every head's keys and
// values (kv_b_proj); here each head's query is taken into the latent space instead
// (q_latent = [wk_b_h q_nope | q_pe]), attends over the cached rows themselves, and its latent
// context comes out through wv_b_h. The products are the same, only summed in another order,
// and the cache holds kv_lora_rank + qk_rope_head_dim values per position for all heads
// together instead of 2 x n_heads x head_dim.
#include <algorithm>

#include "ops.h"
#include "transformer.h"

namespace edgemoe {

namespace {

// For each head h: out[h] [n, rows] = in[h] [n, k] W_h^T, where W_h is rows [h rows, (h+1) rows)
// of W and in, out hold the heads one after another. One parallel loop per kMaxMatmulParts heads.
void per_head_matmul(ThreadPool& pool, const Tensor& W, int heads, const float* in, int64_t n, float* out,
                     BlockQ8A* xq) {
  const int64_t rows = W.rows / heads, k = W.cols;
  const size_t head_bytes = (size_t)rows * qtype_row_bytes(W.type, k);
  const Activations all = prepare(pool, W.type, in, heads * n, k, xq);
  MatmulPart parts[kMaxMatmulParts];
  Activations own[kMaxMatmulParts];
  for (int h0 = 0; h0 < heads; h0 += kMaxMatmulParts) {
    const int count = std::min(kMaxMatmulParts, heads - h0);
    for (int j = 0; j < count; ++j) {
      const int64_t h = h0 + j;
      own[j] = {all.x + h * n * k, all.xq ? all.xq + h * n * (k / kGroup) : nullptr, n, k};
      parts[j] = {W.data + h * head_bytes, rows, out + h * n * rows, &own[j]};
    }
    matmul_many(pool, W.type, parts, count, own[0]);
  }
}

}  // namespace

void Transformer::latent_attention(int layer, int64_t n) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, heads = cfg_.n_heads, hd = cfg_.head_dim, qd = cfg_.q_dim(layer);
  const int R = cfg_.kv_lora_rank, rd = cfg_.qk_rope_head_dim, nope = cfg_.qk_nope_head_dim();
  const int kw = cfg_.kv_k_width(layer), vd = cfg_.v_head_dim;
  const float eps = cfg_.latent_norm_eps;

  // The latent and the shared rotating key (k_), and the queries: straight from xn_, or
  // through the bottleneck q_a_ and its norm.
  const Tensor& first_q = cfg_.q_lora_rank ? L.wq_a : L.wq;
  float* first_q_out = cfg_.q_lora_rank ? q_a_.data() : q_.data();
  Activations a = prepare(pool_, L.wkv_a.type, xn_.data(), n, H, xq_.data());
  if (first_q.type == L.wkv_a.type) {
    const MatmulPart parts[2] = {{L.wkv_a.data, L.wkv_a.rows, k_.data()}, {first_q.data, first_q.rows, first_q_out}};
    matmul_many(pool_, L.wkv_a.type, parts, 2, a);
  } else {
    matmul(pool_, L.wkv_a, a, k_.data());
    a = prepare(pool_, first_q.type, xn_.data(), n, H, xq_.data());
    matmul(pool_, first_q, a, first_q_out);
  }
  if (cfg_.q_lora_rank) {
    const int QR = cfg_.q_lora_rank;
    for (int64_t t = 0; t < n; ++t) rms_norm(&q_a_[t * QR], L.q_a_norm.f32(), QR, eps, &q_a_[t * QR]);
    a = prepare(pool_, L.wq_b.type, q_a_.data(), n, QR, xq_.data());
    matmul(pool_, L.wq_b, a, q_.data());
  }

  // Cache [c | k_pe]; rotate each head's q_pe; gather each head's q_nope for wk_b.
  const int half = rd / 2;
  for (int64_t t = 0; t < n; ++t) {
    const float* cs = &rope_cos_[t * half];
    const float* sn = &rope_sin_[t * half];
    float* kv = &k_[t * kw];
    rms_norm(kv, L.kv_a_norm.f32(), R, eps, kv);
    rope(kv + R, cs, sn, half);
    kv_.store(layer, n_past_ + t, kv, nullptr);
    for (int h = 0; h < heads; ++h) {
      float* q = &q_[t * qd + h * hd];
      rope(q + nope, cs, sn, half);
      std::copy(q, q + nope, &head_in_[((size_t)h * n + t) * nope]);
    }
  }

  // Each (token, head)'s query in the latent space: [wk_b_h q_nope | q_pe].
  per_head_matmul(pool_, L.wk_b, heads, head_in_.data(), n, head_out_.data(), xq_.data());
  for (int64_t t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      float* ql = &q_latent_[((size_t)t * heads + h) * kw];
      const float* absorbed = &head_out_[((size_t)h * n + t) * R];
      std::copy(absorbed, absorbed + R, ql);
      const float* q_pe = &q_[t * qd + h * hd + nope];
      std::copy(q_pe, q_pe + rd, ql + R);
    }

  // Causal attention over the cached rows (keys: all kw values; values: the latent's R).
  const int64_t items = n * heads;
  const int64_t grain = grain_for(2 * (n_past_ + n) * kw);
  pool_.parallel_for(items, [&](int64_t b, int64_t e) {
    float* scores = &scores_[(size_t)pool_.chunk_index(items, b, grain) * ctx_size_];
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / heads;
      const int h = (int)(item % heads);
      // the context goes straight to its head's place in head_in_ ([head][token][R]) for wv_b
      attend(layer, n_past_ + t, &q_latent_[(size_t)item * kw], kw, 0, 0, R, nullptr, scores,
             &head_in_[((size_t)h * n + t) * R]);
    }
  }, grain);

  // Each head's latent context out through wv_b_h, into attn_out_ [token][head][v_head_dim].
  per_head_matmul(pool_, L.wv_b, heads, head_in_.data(), n, head_out_.data(), xq_.data());
  for (int64_t t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const float* o = &head_out_[((size_t)h * n + t) * vd];
      std::copy(o, o + vd, &attn_out_[((size_t)t * heads + h) * vd]);
    }

  const int od = cfg_.attn_out_dim(layer);
  a = prepare(pool_, L.wo.type, attn_out_.data(), n, od, xq_.data());
  matmul(pool_, L.wo, a, xn_.data());
  for (int64_t i = 0; i < n * H; ++i) x_[i] += xn_[i];
}

}  // namespace edgemoe
