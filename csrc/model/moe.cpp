// The MoE block of one layer for a batch of n tokens: route, run each needed
// routed expert once over all the tokens that chose it, add the shared expert;
// or, in a dense layer, its resident MLP. Reads xn_ (and x_ under expert_norms), adds into `out`.
//
// Each (token, rank) result is written to its own row of routed_out_ and the
// rows are summed in rank order afterwards, so the result does not depend on
// the order experts were computed in (which follows what the cache holds).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "low_rank.h"
#include "ops.h"
#include "transformer.h"

namespace edgemoe {

namespace {

// What an expert's MLP computes besides its three matrices: the activation and any biases.
struct ExpertMath {
  ExpertActivation activation = ExpertActivation::SiLU;
  float alpha = 0.f, limit = 0.f;
  const float* gate_bias = nullptr;  // [I], with up_bias [I] and down_bias [H]; null: none
  const float* up_bias = nullptr;
  const float* down_bias = nullptr;
};

// `expert` may be an id of a low-bit copy (n_experts + expert): the copy shares the expert's biases.
ExpertMath routed_math(const ModelConfig& c, const LayerWeights& L, int expert) {
  ExpertMath m{c.expert_activation, c.swiglu_alpha, c.swiglu_limit};
  expert %= c.n_experts;
  if (c.expert_bias) {
    m.gate_bias = L.expert_gate_bias.f32() + (size_t)expert * c.expert_intermediate;
    m.up_bias = L.expert_up_bias.f32() + (size_t)expert * c.expert_intermediate;
    m.down_bias = L.expert_down_bias.f32() + (size_t)expert * c.hidden;
  }
  return m;
}

// g = act(g, u) over rows of I values; the gate and up biases are added first.
void activate(const ExpertMath& m, float* g, float* u, int64_t rows, int64_t I) {
  if (m.gate_bias) {
    add_bias(g, m.gate_bias, rows, I);
    add_bias(u, m.up_bias, rows, I);
  }
  const int64_t count = rows * I;
  if (m.activation == ExpertActivation::SiLU) {
    for (int64_t i = 0; i < count; ++i) g[i] = silu(g[i]) * u[i];
    return;
  }
  if (m.activation == ExpertActivation::GeluTanh) {
    for (int64_t i = 0; i < count; ++i) g[i] = gelu_tanh(g[i]) * u[i];
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    const float gate = std::min(g[i], m.limit);
    const float up = std::clamp(u[i], -m.limit, m.limit);
    g[i] = gate / (1.f + std::exp(-gate * m.alpha)) * (up + 1.f);
  }
}

// Merged experts' low-rank corrections of the rows of a batch (low_rank.h): the layer's factors
// and each row's correction (-1: none); null rows: no corrections.
struct RowCorrections {
  const LowRankDeltas* deltas = nullptr;
  const int* rows = nullptr;
};

// y[m, H] = down(act(gate(x), up(x))) for m tokens x[m, H], with weights in type t (each row's
// projections corrected where `c` says).
void gated_mlp(ThreadPool& pool, QType t, const uint8_t* gate, const uint8_t* up, const uint8_t* down, int64_t I,
               int64_t H, const float* x, int64_t m, float* g, float* u, BlockQ8A* xq, float* y,
               const ExpertMath& math, RowCorrections c = {}) {
  Activations a = prepare(pool, t, x, m, H, xq);
  const MatmulPart gate_up[2] = {{gate, I, g}, {up, I, u}};
  matmul_many(pool, t, gate_up, 2, a);
  if (c.rows) {
    add_low_rank(pool, c.deltas->gate, I, c.rows, x, H, m, g);
    add_low_rank(pool, c.deltas->up, I, c.rows, x, H, m, u);
  }
  activate(math, g, u, m, I);
  Activations h = prepare(pool, t, g, m, I, xq);
  matmul(pool, t, down, H, h, y);
  if (c.rows) add_low_rank(pool, c.deltas->down, H, c.rows, g, I, m, y);
  if (math.down_bias) add_bias(y, math.down_bias, m, H);
}

// Experts pinned in the cache for as long as it lives.
struct PinnedExperts {
  ExpertSource& source;
  int layer;
  std::vector<int> ids;
  std::vector<ExpertView> views;
  PinnedExperts(ExpertSource& s, int l, const std::vector<int>& experts) : source(s), layer(l) {
    ids.reserve(experts.size());
    views.reserve(experts.size());
    try {
      for (int e : experts) {
        views.push_back(source.acquire(layer, e));
        ids.push_back(e);
      }
    } catch (...) {  // a read failed: no destructor runs for a half-built object, so unpin here
      for (int e : ids) source.release(layer, e);
      throw;
    }
  }
  ~PinnedExperts() {
    for (int e : ids) source.release(layer, e);
  }
};

}  // namespace

void Transformer::limit_to_groups(float* choice, RoutingScratch& s) const {
  const int G = cfg_.n_group, per = cfg_.router_width() / G;
  std::vector<float>& group = s.group;
  std::vector<int>& groups = s.groups;
  for (int g = 0; g < G; ++g) {
    float a = -INFINITY, b = -INFINITY;  // the group's best two
    for (int e = g * per; e < (g + 1) * per; ++e) {
      if (choice[e] > a) b = a, a = choice[e];
      else if (choice[e] > b) b = choice[e];
    }
    group[g] = cfg_.group_score == GroupScore::Max ? a : a + (per > 1 ? b : 0.f);
  }
  top_k(group.data(), cfg_.topk_group, groups);
  // The groups left out: -inf as transformers masks sigmoid scores (its 0 for V2's softmax
  // probabilities, all positive, picks the same experts).
  for (int r = cfg_.topk_group; r < G; ++r) std::fill(&choice[groups[r] * per], &choice[groups[r] * per] + per, -INFINITY);
}

void Transformer::route_sigmoid(const LayerWeights& L, float* p, const uint8_t* mask, RoutingScratch& s, int* idx,
                                float* w) const {
  const int E = cfg_.router_width(), K = cfg_.top_k;
  std::vector<float>& choice = s.choice;
  std::vector<int>& order = s.order;
  for (int e = 0; e < E; ++e) {
    p[e] = sigmoid(p[e]);
    choice[e] = p[e] + (cfg_.router_correction_bias ? L.router_correction_bias.f32()[e] : 0.f);
  }
  // A masked expert's choice, not its logit: sigmoid(-inf) = 0 plus a correction bias could still be chosen.
  if (mask)
    for (int e = 0; e < E; ++e)
      if (mask[e]) choice[e] = -INFINITY;
  if (cfg_.n_group > 1) limit_to_groups(choice.data(), s);
  top_k(choice.data(), K, order);
  float sum = 0.f;
  for (int r = 0; r < K; ++r) {
    idx[r] = order[r];
    w[r] = p[order[r]];
    sum += w[r];
  }
  for (int r = 0; r < K; ++r) {
    if (cfg_.norm_topk_prob) w[r] /= sum + 1e-20f;
    w[r] *= cfg_.routed_scaling_factor;
  }
}

void Transformer::route(int layer, int64_t n) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, E = cfg_.router_width(), K = cfg_.top_k;

  // Routing: the top k experts (ties to the lower index) by softmax probability or,
  // for TopKSoftmax, by logit with a softmax over the k chosen.
  Activations a = prepare(pool_, L.router.type, xn_.data(), n, H, xq_.data());
  matmul(pool_, L.router, a, router_.data());
  if (cfg_.router_bias) add_bias(router_.data(), L.router_bias.f32(), n, E);
  std::vector<int> order(E);
  RoutingScratch scratch;
  const uint8_t* mask = mask_.layer(layer);
  if (cfg_.routing == Routing::Sigmoid || cfg_.n_group > 1 || mask)
    scratch = {std::vector<float>(E), std::vector<float>(cfg_.n_group), std::vector<int>(E),
               std::vector<int>(cfg_.n_group)};
  for (int64_t t = 0; t < n; ++t) {
    float* p = &router_[t * E];
    int* idx = &topk_idx_[t * K];
    float* w = &topk_w_[t * K];
    if (cfg_.routing == Routing::Sigmoid) {
      route_sigmoid(L, p, mask, scratch, idx, w);
    } else {
      if (mask)  // -inf logits: the softmax renormalises over the unmasked experts, as if pruned
        for (int e = 0; e < E; ++e)
          if (mask[e]) p[e] = -INFINITY;
      route_softmax(p, mask, scratch, order, idx, w);
    }
    if (cfg_.router_expert_scale)  // Gemma 4
      for (int r = 0; r < K; ++r) w[r] *= L.router_expert_scale.f32()[idx[r]];
    if (const int64_t* map = cfg_.expert_map_of(layer)) {
      int* delta = cfg_.low_rank ? &topk_delta_[t * K] : nullptr;
      if (delta)
        for (int r = 0; r < K; ++r) delta[r] = (int)cfg_.expert_delta_of(layer)[idx[r]];
      reach_merged(map, idx, w, delta);
      for (int r = 0; r < K; ++r)  // a folded choice adds nothing (its row may hold an earlier layer's output)
        if (idx[r] < 0) std::fill(&routed_out_[(t * K + r) * H], &routed_out_[(t * K + r + 1) * H], 0.f);
    }
  }
}

void Transformer::reach_merged(const int64_t* map, int* idx, float* w, int* delta) const {
  const int K = cfg_.top_k;
  for (int r = 0; r < K; ++r) idx[r] = (int)map[idx[r]];
  // Two choices of one merged expert: one computation with both weights (the same sum as
  // MC-SMoE's two calls of the shared module, up to rounding); the later rank is left out.
  // Choices with corrections of their own compute different functions and stay apart.
  for (int r = 1; r < K; ++r)
    for (int q = 0; q < r; ++q)
      if (idx[q] == idx[r] && (!delta || delta[q] == delta[r])) {
        w[q] += w[r];
        idx[r] = -1, w[r] = 0.f;
        if (delta) delta[r] = -1;
        break;
      }
}

void Transformer::route_softmax(float* p, const uint8_t* mask, RoutingScratch& scratch, std::vector<int>& order,
                                int* idx, float* w) const {
  const int E = cfg_.router_width(), K = cfg_.top_k;
  if (cfg_.routing == Routing::Softmax) softmax(p, E);
  const float* choice = p;  // what the top k are chosen by: the probabilities, within the best groups
  if (cfg_.n_group > 1 || mask) {
    std::copy(p, p + E, scratch.choice.begin());
    // A masked expert's probability is 0, which a kept expert's can also underflow to: -inf
    // keeps ties among kept experts resolved as in the pruned model.
    if (mask)
      for (int e = 0; e < E; ++e)
        if (mask[e]) scratch.choice[e] = -INFINITY;
    if (cfg_.n_group > 1) limit_to_groups(scratch.choice.data(), scratch);
    choice = scratch.choice.data();
  }
  top_k(choice, K, order);
  for (int r = 0; r < K; ++r) {
    idx[r] = order[r];
    w[r] = p[order[r]];
  }
  if (cfg_.routing == Routing::TopKSoftmax) {
    softmax(w, K);
  } else if (cfg_.norm_topk_prob) {
    float sum = 0.f;
    for (int r = 0; r < K; ++r) sum += w[r];
    for (int r = 0; r < K; ++r) w[r] /= sum;
  }
  if (cfg_.routed_scaling_factor != 1.f)  // DeepSeek-V2
    for (int r = 0; r < K; ++r) w[r] *= cfg_.routed_scaling_factor;
}

void Transformer::moe(int layer, int64_t n, float* out) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, E = cfg_.n_experts, K = cfg_.top_k;
  if (cfg_.expert_norms) {
    // Gemma 4: the shared MLP reads xn_ (ffn_norm); the router, then the experts, read norms of their own.
    shared_expert(layer, n, out);
    norm_rows(x_.data(), L.router_norm, n, xn_.data());
  }
  route(layer, n);
  if (cfg_.expert_norms) norm_rows(x_.data(), L.ffn_norm_2, n, xn_.data());

  if (observer_) observer_->on_routing(layer, n_past_, n, topk_idx_.data(), topk_w_.data(), x_.data());

  if (active_experts_ > 0 && active_experts_ < K) keep_heaviest_choices(n, active_experts_);
  // Group (token, rank) pairs by expert (choices left out above are marked -1).
  std::vector<std::vector<int64_t>> users(E);  // entries t * K + r
  for (int64_t i = 0; i < n * K; ++i)
    if (topk_idx_[i] >= 0) users[topk_idx_[i]].push_back(i);
  // Ask the cache once per expert: a background prefetch can finish at any moment,
  // and an expert seen as a miss by one question and as cached by a second
  // would fall between the two lists and never be computed.
  std::vector<int> cached, misses;
  for (int e = 0; e < E; ++e)
    if (!users[e].empty()) (experts_.is_cached(layer, e) ? cached : misses).push_back(e);
  if ((cached_only_ || skip_missed_below_ > 0.f) && !misses.empty()) leave_out_misses(n, misses, users);
  if (low_bit_missed_below_ > 0.f && !misses.empty()) use_low_bit_copies(layer, n, cached, misses, users);
  if (n == 1) {
    // Decode: the cached experts are pinned, the misses' reads start side by
    // side, and the cached experts run meanwhile, their gate/up and then their
    // down projections one parallel loop each (per weight type), instead of
    // two thread hand-offs per expert (results are bit-identical, every row
    // being computed by the same kernel either way). Pinned first, so that the
    // misses' slots are never taken from them.
    {
      PinnedExperts pinned(experts_, layer, cached);
      experts_.read_ahead(layer, misses.data(), misses.size());
      if (!cached.empty()) moe_decode_cached(layer, cached, pinned.views, users);
    }
    for (int e : misses) routed_expert(layer, e, users[e]);
  } else {
    // A batch: cached experts first (computing them before the misses keeps
    // them from being evicted by this layer's own reads when the cache is
    // small), then the misses, each with the next few being read meanwhile.
    for (int e : cached) routed_expert(layer, e, users[e]);
    const size_t lanes = (size_t)std::max(1, experts_.read_lanes());
    for (size_t i = 0; i < misses.size(); ++i) {
      experts_.read_ahead(layer, &misses[i], std::min(misses.size() - i, 1 + lanes));
      routed_expert(layer, misses[i], users[misses[i]]);
    }
  }
  // Under expert_norms the experts' sum is normalised before it joins `out`: it is gathered in
  // ex_in_, free once the experts have run.
  float* routed = cfg_.expert_norms ? ex_in_.data() : out;
  if (cfg_.expert_norms) std::fill(routed, routed + n * H, 0.f);
  for (int64_t t = 0; t < n; ++t)
    for (int r = 0; r < K; ++r) {
      const float* src = &routed_out_[(t * K + r) * H];
      float* dst = &routed[t * H];
      for (int i = 0; i < H; ++i) dst[i] += src[i];
    }
  if (cfg_.expert_norms) {
    norm_rows(routed, L.post_ffn_norm_2, n, routed);
    for (int64_t i = 0; i < n * H; ++i) out[i] += routed[i];
  } else if (cfg_.shared_intermediate) {
    shared_expert(layer, n, out);
  }
}

void Transformer::drop_choice(int64_t slot) {
  const int H = cfg_.hidden;
  topk_w_[slot] = 0.f;
  topk_idx_[slot] = -1;
  if (cfg_.low_rank) topk_delta_[slot] = -1;
  std::fill(&routed_out_[slot * H], &routed_out_[slot * H] + H, 0.f);
  if (!cached_only_) skipped_choices_.fetch_add(1, std::memory_order_relaxed);
}

float Transformer::choice_total(int64_t t) const {
  const int K = cfg_.top_k;
  float total = 0.f;
  for (int r = 0; r < K; ++r) total += topk_w_[t * K + r];
  return total;
}

void Transformer::rescale_choices(int64_t t, float total) {
  const int K = cfg_.top_k;
  const float kept = choice_total(t);
  if (kept > 0.f && kept < total)
    for (int r = 0; r < K; ++r) topk_w_[t * K + r] *= total / kept;
}

void Transformer::keep_heaviest_choices(int64_t n, int active) {
  const int K = cfg_.top_k;
  std::vector<int> ranks(K);
  for (int64_t t = 0; t < n; ++t) {
    const float total = choice_total(t);
    const float* w = &topk_w_[t * K];
    std::iota(ranks.begin(), ranks.end(), 0);
    // Heaviest first, ties to the lower rank: ranks follow the router's choice, which for
    // sigmoid routing with a correction bias is not the order of the weights.
    std::stable_sort(ranks.begin(), ranks.end(), [&](int a, int b) { return w[a] > w[b]; });
    for (int i = active; i < K; ++i)
      if (topk_idx_[t * K + ranks[i]] >= 0) drop_choice(t * K + ranks[i]);  // -1: folded already (merged)
    rescale_choices(t, total);
  }
}

void Transformer::leave_out_misses(int64_t n, std::vector<int>& misses, std::vector<std::vector<int64_t>>& users) {
  const int K = cfg_.top_k;
  std::vector<float> total(n);
  std::vector<int64_t> heaviest(n);
  for (int64_t t = 0; t < n; ++t) {
    total[t] = choice_total(t);
    heaviest[t] = t * K + (std::max_element(&topk_w_[t * K], &topk_w_[t * K] + K) - &topk_w_[t * K]);
  }
  // A share, not a weight: weights carry routed_scaling_factor and per-expert scales.
  auto light = [&](int64_t slot) {
    const int64_t t = slot / K;
    return slot != heaviest[t] && topk_w_[slot] < skip_missed_below_ * total[t];
  };
  std::vector<int> read;
  bool left_out = false;
  for (int e : misses) {
    if (!cached_only_ && !std::all_of(users[e].begin(), users[e].end(), light)) {
      read.push_back(e);  // read for some token anyway, so computed for all of them
      continue;
    }
    for (int64_t slot : users[e]) drop_choice(slot);
    users[e].clear();
    left_out = true;
  }
  misses.swap(read);
  if (left_out)
    for (int64_t t = 0; t < n; ++t) rescale_choices(t, total[t]);
}

void Transformer::use_low_bit_copies(int layer, int64_t n, std::vector<int>& cached, std::vector<int>& misses,
                                     std::vector<std::vector<int64_t>>& users) {
  const int K = cfg_.top_k, E = cfg_.n_experts;
  std::vector<float> total(n);
  for (int64_t t = 0; t < n; ++t) total[t] = choice_total(t);
  auto light = [&](int64_t slot) {
    return low_bit_missed_below_ >= 1.f || topk_w_[slot] < low_bit_missed_below_ * total[slot / K];
  };
  users.resize(2 * (size_t)E);
  std::vector<int> full;
  for (int e : misses) {
    if (!std::all_of(users[e].begin(), users[e].end(), light)) {
      full.push_back(e);
      continue;
    }
    low_bit_choices_.fetch_add(users[e].size(), std::memory_order_relaxed);
    users[E + e].swap(users[e]);
    (experts_.is_cached(layer, E + e) ? cached : full).push_back(E + e);
  }
  misses.swap(full);
}

void Transformer::routed_expert(int layer, int e, const std::vector<int64_t>& u) {
  const int H = cfg_.hidden, K = cfg_.top_k;
  // Rows per pass: what the scratch buffers hold (max_batch). Only low-rank corrections make an
  // expert's users outnumber the tokens: a token may choose two members of one merged group.
  const int64_t chunk = (int64_t)ex_in_.size() / H;
  std::vector<int> deltas(cfg_.low_rank ? std::min<int64_t>(chunk, (int64_t)u.size()) : 0);  // each row's correction
  ExpertView ev = experts_.acquire(layer, e);
  try {
    for (int64_t j0 = 0; j0 < (int64_t)u.size(); j0 += chunk) {
      const int64_t m = std::min<int64_t>(chunk, (int64_t)u.size() - j0);
      for (int64_t j = 0; j < m; ++j) {
        const float* src = &xn_[(u[j0 + j] / K) * H];
        std::copy(src, src + H, &ex_in_[j * H]);
        if (cfg_.low_rank) deltas[j] = topk_delta_[u[j0 + j]];
      }
      gated_mlp(pool_, ev.type, ev.gate, ev.up, ev.down, cfg_.expert_intermediate, H, ex_in_.data(), m,
                ex_gate_.data(), ex_up_.data(), xq_.data(), ex_out_.data(), routed_math(cfg_, w_.layers[layer], e),
                {&w_.layers[layer].deltas, cfg_.low_rank ? deltas.data() : nullptr});
      for (int64_t j = 0; j < m; ++j) store_routed(u[j0 + j], &ex_out_[j * H]);
    }
  } catch (...) {
    experts_.release(layer, e);
    throw;
  }
  experts_.release(layer, e);
}

void Transformer::moe_decode_cached(int layer, const std::vector<int>& experts, const std::vector<ExpertView>& views,
                                    const std::vector<std::vector<int64_t>>& users) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden, I = cfg_.expert_intermediate;
  const int64_t blocks_per_row = I / kGroup;  // of a quantized activation row
  // What is computed: each expert once or, with low-rank corrections, once per correction its
  // choices carry (the token may have chosen two members of one merged group).
  struct Entry {
    size_t view;  // the expert's index in `experts` and `views`
    int delta;
    std::vector<int64_t> slots;  // low_rank only: the choices it serves (else all of its expert's users)
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < experts.size(); ++i) {
    const std::vector<int64_t>& u = users[experts[i]];
    if (!cfg_.low_rank) {
      entries.push_back({i, -1, {}});
      continue;
    }
    for (int64_t slot : u) {
      const int d = topk_delta_[slot];
      auto same =
          std::find_if(entries.begin(), entries.end(), [&](const Entry& x) { return x.view == i && x.delta == d; });
      if (same != entries.end()) same->slots.push_back(slot);
      else entries.push_back({i, d, {slot}});
    }
  }
  // Entries per batch: the parts a matmul_many takes, and what the scratch
  // buffers (sized for max_batch tokens) hold.
  const int64_t cap = std::min<int64_t>({kMaxMatmulParts / 2, (int64_t)ex_gate_.size() / I,
                                         (int64_t)ex_out_.size() / H,
                                         (int64_t)xq_.size() / std::max<int64_t>(1, blocks_per_row)});
  std::stable_sort(entries.begin(), entries.end(),
                   [&](const Entry& a, const Entry& b) { return (int)views[a.view].type < (int)views[b.view].type; });
  MatmulPart parts[kMaxMatmulParts];
  Activations rows[kMaxMatmulParts];
  int deltas[kMaxMatmulParts];
  for (size_t s = 0; s < entries.size();) {
    const QType t = views[entries[s].view].type;
    int64_t m = 0;
    while (s + m < entries.size() && m < std::max<int64_t>(1, cap) && views[entries[s + m].view].type == t) ++m;
    Activations a = prepare(pool_, t, xn_.data(), 1, H, xq_.data());
    for (int64_t j = 0; j < m; ++j) {
      const ExpertView& v = views[entries[s + j].view];
      parts[2 * j] = {v.gate, I, &ex_gate_[j * I]};
      parts[2 * j + 1] = {v.up, I, &ex_up_[j * I]};
      deltas[j] = entries[s + j].delta;
    }
    matmul_many(pool_, t, parts, (int)(2 * m), a);
    if (cfg_.low_rank) {  // every entry reads the one token's row
      add_low_rank(pool_, L.deltas.gate, I, deltas, xn_.data(), 0, m, ex_gate_.data());
      add_low_rank(pool_, L.deltas.up, I, deltas, xn_.data(), 0, m, ex_up_.data());
    }
    for (int64_t j = 0; j < m; ++j)
      activate(routed_math(cfg_, L, experts[entries[s + j].view]), &ex_gate_[j * I], &ex_up_[j * I], 1, I);
    // Each entry's hidden vector is a row of its own: quantized together,
    // multiplied by its expert's down projection.
    Activations h = prepare(pool_, t, ex_gate_.data(), m, I, xq_.data());
    for (int64_t j = 0; j < m; ++j) {
      rows[j] = {h.x + j * I, h.xq ? h.xq + j * blocks_per_row : nullptr, 1, I};
      parts[j] = {views[entries[s + j].view].down, H, &ex_out_[j * H], &rows[j]};
    }
    matmul_many(pool_, t, parts, (int)m, h);
    if (cfg_.low_rank) add_low_rank(pool_, L.deltas.down, H, deltas, ex_gate_.data(), I, m, ex_out_.data());
    for (int64_t j = 0; j < m; ++j) {
      const int e = experts[entries[s + j].view];
      if (const float* b = routed_math(cfg_, L, e).down_bias) add_bias(&ex_out_[j * H], b, 1, H);
      for (int64_t slot : cfg_.low_rank ? entries[s + j].slots : users[e]) store_routed(slot, &ex_out_[j * H]);
    }
    s += m;
  }
}

void Transformer::store_routed(int64_t slot, const float* out) {
  const int H = cfg_.hidden;
  const float w = topk_w_[slot];
  float* dst = &routed_out_[slot * H];
  for (int i = 0; i < H; ++i) dst[i] = out[i] * w;
}

void Transformer::resident_mlp(const Tensor& gate, const Tensor& up, const Tensor& down, int64_t n) {
  // The three share one encoding: the engine refuses a container where they do not.
  gated_mlp(pool_, gate.type, gate.data, up.data, down.data, gate.rows, cfg_.hidden, xn_.data(), n, ex_gate_.data(),
            ex_up_.data(), xq_.data(), ex_out_.data(), ExpertMath{cfg_.resident_activation()});
}

void Transformer::dense_mlp(int layer, int64_t n, float* out) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden;
  resident_mlp(L.dense_gate, L.dense_up, L.dense_down, n);
  for (int64_t i = 0; i < n * H; ++i) out[i] += ex_out_[i];
}

void Transformer::shared_expert(int layer, int64_t n, float* out) {
  const LayerWeights& L = w_.layers[layer];
  const int H = cfg_.hidden;
  resident_mlp(L.shared_gate_proj, L.shared_up_proj, L.shared_down_proj, n);
  if (cfg_.expert_norms) norm_rows(ex_out_.data(), L.post_ffn_norm_1, n, ex_out_.data());
  for (int64_t t = 0; t < n; ++t) {
    float scale = 1.f;
    if (cfg_.shared_gate) {
      const float* g = L.shared_expert_gate.f32();
      float z = 0.f;
      for (int i = 0; i < H; ++i) z += g[i] * xn_[t * H + i];
      scale = sigmoid(z);
    }
    for (int i = 0; i < H; ++i) out[t * H + i] += scale * ex_out_[t * H + i];
  }
}

}  // namespace edgemoe
