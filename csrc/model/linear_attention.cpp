// Gated DeltaNet, the linear attention of Qwen3-Next and Qwen3.5-MoE (docs/HYBRID_MODELS.md
// sections 3 and 6), for a batch of n new tokens: the projections, the causal depthwise
// convolution over q, k and v, the gated delta rule per value head (kernels: gated_delta_rule),
// the gated RMSNorm, the output projection, the residual add. Reads xn_, adds into x_; carries
// the layer's state (state_) from the tokens before.
//
// The whole batch goes through each step at once: the projections are matmuls over the batch,
// and each value head runs its tokens in order with its state hot in cache. (The chunked "WY"
// form transformers uses for prefill computes the same recurrence as matrix products, which
// pays on a GPU; on a CPU the recurrence is a small share of a layer - see bench/RESULTS.md.)
#include <algorithm>
#include <cmath>

#include "ops.h"
#include "transformer.h"

namespace edgemoe {

namespace {
// transformers' l2norm: x / sqrt(sum of squares + 1e-6), a fixed epsilon (not rms_norm_eps).
constexpr float kL2NormEps = 1e-6f;

void l2_normalise(float* x, int64_t n, float scale) {
  float ss = 0.f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float r = scale / std::sqrt(ss + kL2NormEps);
  for (int64_t i = 0; i < n; ++i) x[i] *= r;
}

// torch.nn.functional.softplus (beta 1, threshold 20).
float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
}  // namespace

void Transformer::linear_attention(int layer, int64_t n) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, Kc = cfg_.linear_conv_kernel, dk = cfg_.linear_key_head_dim,
            dv = cfg_.linear_value_head_dim, Nv = cfg_.linear_value_heads;
  const int ratio = Nv / cfg_.linear_key_heads;  // value heads per key head
  const int64_t KD = cfg_.linear_key_dim(), VD = cfg_.linear_value_dim(), CD = cfg_.linear_conv_dim();
  float* mixed = lin_mixed_.data();  // [n, CD]: q, k, v before the convolution, then after
  float* z = lin_z_.data();          // [n, VD]
  float* beta = lin_b_.data();       // [n, Nv]: b, then sigmoid(b)
  float* decay = lin_a_.data();      // [n, Nv]: a, then exp(g)
  float* o = lin_o_.data();          // [n, VD]

  batch_moved_state_ = true;
  const Tensor* weights[4] = {&L.lin_qkv, &L.lin_z, &L.lin_b, &L.lin_a};
  float* outs[4] = {mixed, z, beta, decay};
  project(weights, outs, 4, n);

  // Causal depthwise convolution + SiLU. The window of token t is the channel's last Kc - 1
  // inputs before the batch (the state) and the batch's inputs up to t; tokens go newest first
  // so each overwrites only its own input, which no earlier token's window needs.
  float* conv = state_.conv(layer);
  const int keep = Kc - 1;
  pool_.parallel_for(CD, [&](int64_t c0, int64_t c1) {
    float window[64];  // Kc <= 64 (config.cpp)
    for (int64_t c = c0; c < c1; ++c) {
      const float* w = L.lin_conv.f32() + c * Kc;
      float* past = conv + c * keep;
      // the inputs in order: past[0, keep), then mixed[t * CD + c] for t in [0, n)
      auto input = [&](int64_t i) { return i < keep ? past[i] : mixed[(i - keep) * CD + c]; };
      for (int64_t i = 0; i < keep; ++i) window[i] = input(n + i);  // the next state: the last keep inputs
      for (int64_t t = n - 1; t >= 0; --t) {
        float s = 0.f;
        for (int j = 0; j < Kc; ++j) s += w[j] * input(t + j);
        mixed[t * CD + c] = silu(s);
      }
      std::copy(window, window + keep, past);
    }
  }, grain_for((int64_t)n * Kc));

  // Per token: q and k l2-normalised (q also by 1/sqrt(dk)), beta, and the decay exp(g) with
  // g = -exp(A_log) * softplus(a + dt_bias).
  const float q_scale = 1.f / std::sqrt((float)dk);
  for (int64_t t = 0; t < n; ++t) {
    float* row = mixed + t * CD;
    for (int64_t h = 0; h < cfg_.linear_key_heads; ++h) {
      l2_normalise(row + h * dk, dk, q_scale);
      l2_normalise(row + KD + h * dk, dk, 1.f);
    }
    for (int j = 0; j < Nv; ++j) {
      beta[t * Nv + j] = sigmoid(beta[t * Nv + j]);
      float& a = decay[t * Nv + j];
      a = std::exp(L.lin_decay_rate.f32()[j] * softplus(a + L.lin_dt_bias.f32()[j]));
    }
  }

  // The recurrence, one value head per work item, its tokens in order.
  float* matrices = state_.matrices(layer);
  pool_.parallel_for(Nv, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t key = j / ratio;
      DeltaRuleTokens x;
      x.n = n;
      x.q = mixed + key * dk;
      x.k = mixed + KD + key * dk;
      x.qk_stride = CD;
      x.v = mixed + 2 * KD + j * dv;
      x.v_stride = CD;
      x.decay = decay + j;
      x.beta = beta + j;
      x.gate_stride = Nv;
      x.out = o + j * dv;
      x.out_stride = VD;
      gated_delta_rule(matrices + j * (int64_t)dk * dv, dk, dv, x);
    }
  }, grain_for((int64_t)n * dk * dv * 4));

  // The gated RMSNorm of each head's output (a plain weight; the gate is silu(z)).
  for (int64_t t = 0; t < n; ++t)
    for (int j = 0; j < Nv; ++j) {
      float* y = o + t * VD + j * dv;
      const float* g = z + t * VD + j * dv;
      rms_norm(y, L.lin_norm.f32(), dv, cfg_.rms_norm_eps, y);
      for (int d = 0; d < dv; ++d) y[d] *= silu(g[d]);
    }

  const Activations a = prepare(pool_, L.lin_out.type, o, n, VD, xq_.data());
  matmul(pool_, L.lin_out, a, xn_.data());  // xn_ is free again: reuse it for the projection
  for (int64_t i = 0; i < n * H; ++i) x_[i] += xn_[i];
}

}  // namespace edgemoe
