// The MoE block of one layer for a batch of n tokens: route, run each needed
// routed expert once over all the tokens that chose it, add the shared expert.
// Reads xn_, adds into x_.
//
// Each (token, rank) result is written to its own row of routed_out_ and the
// rows are summed in rank order afterwards, so the result does not depend on
// the order experts were computed in (which follows what the cache holds).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops.h"
#include "transformer.h"

namespace edgemoe {

namespace {

// y[m, H] = down(silu(gate(x)) * up(x)) for m tokens x[m, H], with weights in type t.
void gated_mlp(ThreadPool& pool, QType t, const uint8_t* gate, const uint8_t* up, const uint8_t* down, int64_t I,
               int64_t H, const float* x, int64_t m, float* g, float* u, BlockQ8A* xq, float* y) {
  Activations a = prepare(pool, t, x, m, H, xq);
  const MatmulPart gate_up[2] = {{gate, I, g}, {up, I, u}};
  matmul_many(pool, t, gate_up, 2, a);
  for (int64_t i = 0; i < m * I; ++i) g[i] = silu(g[i]) * u[i];
  Activations h = prepare(pool, t, g, m, I, xq);
  matmul(pool, t, down, H, h, y);
}

}  // namespace

void Transformer::moe(int layer, int64_t n) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, E = cfg_.n_experts, K = cfg_.top_k, I = cfg_.expert_intermediate;

  // Routing: softmax over all experts, keep the top k (ties to the lower index).
  Activations a = prepare(pool_, L.router.type, xn_.data(), n, H, xq_.data());
  matmul(pool_, L.router, a, router_.data());
  std::vector<int> order(E);
  for (int64_t t = 0; t < n; ++t) {
    float* p = &router_[t * E];
    softmax(p, E);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(),
                      [&](int x, int y) { return p[x] > p[y] || (p[x] == p[y] && x < y); });
    float sum = 0.f;
    for (int r = 0; r < K; ++r) sum += p[order[r]];
    for (int r = 0; r < K; ++r) {
      topk_idx_[t * K + r] = order[r];
      topk_w_[t * K + r] = cfg_.norm_topk_prob ? p[order[r]] / sum : p[order[r]];
    }
  }

  if (observer_) observer_->on_routing(layer, n_past_, n, topk_idx_.data(), topk_w_.data(), x_.data());

  // Group (token, rank) pairs by expert.
  std::vector<std::vector<int64_t>> users(E);  // entries t * K + r
  for (int64_t i = 0; i < n * K; ++i) users[topk_idx_[i]].push_back(i);
  // Cached experts first: computing them before the misses keeps them from
  // being evicted by this layer's own reads when the cache is small. Ask the
  // cache once per expert: a background prefetch can finish at any moment,
  // and an expert seen as a miss by one question and as cached by a second
  // would fall between the two lists and never be computed.
  std::vector<int> needed, misses;
  for (int e = 0; e < E; ++e)
    if (!users[e].empty()) (experts_.is_cached(layer, e) ? needed : misses).push_back(e);
  needed.insert(needed.end(), misses.begin(), misses.end());

  for (int e : needed) {
    const std::vector<int64_t>& u = users[e];
    const int64_t m = (int64_t)u.size();
    for (int64_t j = 0; j < m; ++j) {
      const float* src = &xn_[(u[j] / K) * H];
      std::copy(src, src + H, &ex_in_[j * H]);
    }
    ExpertView ev = experts_.acquire(layer, e);
    try {
      gated_mlp(pool_, ev.type, ev.gate, ev.up, ev.down, I, H, ex_in_.data(), m, ex_gate_.data(), ex_up_.data(),
                xq_.data(), ex_out_.data());
    } catch (...) {
      experts_.release(layer, e);
      throw;
    }
    experts_.release(layer, e);
    for (int64_t j = 0; j < m; ++j) {
      const float wgt = topk_w_[u[j]];
      const float* src = &ex_out_[j * H];
      float* dst = &routed_out_[u[j] * H];
      for (int i = 0; i < H; ++i) dst[i] = src[i] * wgt;
    }
  }
  for (int64_t t = 0; t < n; ++t)
    for (int r = 0; r < K; ++r) {
      const float* src = &routed_out_[(t * K + r) * H];
      float* dst = &x_[t * H];
      for (int i = 0; i < H; ++i) dst[i] += src[i];
    }
  if (cfg_.shared_intermediate) shared_expert(layer, n);
}

void Transformer::shared_expert(int layer, int64_t n) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, S = cfg_.shared_intermediate;
  // Gate and up share one encoding (the resident type); down may differ only
  // if a converter chose so, which gated_mlp does not allow: check.
  gated_mlp(pool_, L.shared_gate_proj.type, L.shared_gate_proj.data, L.shared_up_proj.data, L.shared_down_proj.data,
            S, H, xn_.data(), n, ex_gate_.data(), ex_up_.data(), xq_.data(), ex_out_.data());
  for (int64_t t = 0; t < n; ++t) {
    float scale = 1.f;
    if (cfg_.shared_gate) {
      const float* g = L.shared_expert_gate.f32();
      float z = 0.f;
      for (int i = 0; i < H; ++i) z += g[i] * xn_[t * H + i];
      scale = 1.f / (1.f + std::exp(-z));
    }
    for (int i = 0; i < H; ++i) x_[t * H + i] += scale * ex_out_[t * H + i];
  }
}

}  // namespace edgemoe
