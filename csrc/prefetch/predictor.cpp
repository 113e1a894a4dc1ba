#include "predictor.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "../model/ops.h"

namespace edgemoe {

namespace {

// The top `width` entries of probs (ties to the lower index) that are positive
// and at least min_confidence, appended as (layer, expert).
void append_top(const std::vector<float>& probs, int layer, int width, float min_confidence, std::vector<int>& order,
                std::vector<std::pair<int, int>>* out) {
  top_k(probs.data(), width, order);
  for (int r = 0; r < width; ++r)
    if (probs[order[r]] > 0.f && probs[order[r]] >= min_confidence) out->emplace_back(layer, order[r]);
}

// The mixtral-offloading guess: apply the next layers' (resident, cheap)
// post-attention norm and router to the hidden state we have now. The
// residual stream changes slowly from layer to layer, so the next router
// mostly agrees with what it will see.
class GatePredictor final : public Predictor {
 public:
  GatePredictor(const ModelConfig& cfg, const ModelWeights& w, int depth, int width, float min_confidence)
      : cfg_(cfg), w_(w), depth_(depth), width_(width), min_confidence_(min_confidence), xn_(cfg.hidden),
        outputs_(cfg.router_width()), probs_(cfg.n_experts), order_(cfg.n_experts) {}

  void predict(int layer, const float* hidden, const int*, std::vector<std::pair<int, int>>* out) override {
    const int H = cfg_.hidden, E = cfg_.router_width();
    int next = layer;
    for (int d = 1; d <= depth_ && (next = cfg_.next_moe_layer(next)) < cfg_.n_layers; ++d) {
      const LayerWeights& L = w_.layers[next];
      rms_norm(hidden, L.router_input_norm().f32(), H, cfg_.rms_norm_eps, xn_.data());
      const float* router = L.router.f32();
      for (int e = 0; e < E; ++e) {
        float z = 0.f;
        for (int i = 0; i < H; ++i) z += router[(size_t)e * H + i] * xn_[i];
        outputs_[e] = z + (cfg_.router_bias ? L.router_bias.f32()[e] : 0.f);
      }
      softmax(outputs_.data(), E);  // the router's own probabilities: the guess's confidence
      // A merged expert is as likely as its router outputs together.
      const int64_t* map = cfg_.expert_map_of(next);
      std::fill(probs_.begin(), probs_.end(), 0.f);
      for (int e = 0; e < E; ++e) probs_[map ? map[e] : e] += outputs_[e];
      append_top(probs_, next, width_, min_confidence_, order_, out);
    }
  }

 private:
  const ModelConfig& cfg_;
  const ModelWeights& w_;
  int depth_, width_;
  float min_confidence_;
  std::vector<float> xn_, outputs_, probs_;  // router outputs; experts
  std::vector<int> order_;
};

// EdgeMoE's statistical predictor: P(experts of layer l+1 | experts chosen in
// layer l), measured offline; deeper layers chain the conditional tables.
class StatsPredictor final : public Predictor {
 public:
  StatsPredictor(const ModelConfig& cfg, const RoutingProfile& p, int depth, int width, float min_confidence)
      : cfg_(cfg), p_(p), depth_(depth), width_(width), min_confidence_(min_confidence), dist_(p.n_experts),
        next_(p.n_experts), order_(p.n_experts) {}

  void predict(int layer, const float*, const int* chosen, std::vector<std::pair<int, int>>* out) override {
    const int E = p_.n_experts;
    std::fill(dist_.begin(), dist_.end(), 0.f);
    for (int r = 0; r < p_.width; ++r)  // this layer's choice is known (-1: a merged model's folded choice)
      if (chosen[r] >= 0) dist_[chosen[r]] = 1.f;
    // next_layer's row l holds P(experts of the MoE layer after l | experts of l).
    for (int d = 1, from = layer, to; d <= depth_ && (to = cfg_.next_moe_layer(from)) < cfg_.n_layers;
         ++d, from = to) {
      const float* table = &p_.next_layer[(size_t)from * E * E];
      std::fill(next_.begin(), next_.end(), 0.f);
      for (int a = 0; a < E; ++a)
        if (dist_[a] > 0.f)
          for (int b = 0; b < E; ++b) next_[b] += dist_[a] * table[(size_t)a * E + b];
      // dist_ sums to top_k (one per chosen expert, or as rescaled below), so
      // next_[b] / top_k is the mean of P(b | a) over the experts a: the
      // probability that b is among the next layer's choices.
      for (float& v : next_) v /= (float)p_.width;
      append_top(next_, to, width_, min_confidence_, order_, out);
      for (float& v : next_) v *= (float)p_.width;  // back to a distribution summing to top_k
      dist_.swap(next_);
    }
  }

 private:
  const ModelConfig& cfg_;
  const RoutingProfile& p_;
  int depth_, width_;
  float min_confidence_;
  std::vector<float> dist_, next_;
  std::vector<int> order_;
};

// Routing is largely decided by the token id (the OpenMoE study): as soon as
// a token is sampled, request the experts it usually picks in every layer.
class TokenPredictor final : public Predictor {
 public:
  TokenPredictor(const RoutingProfile& p, int width, float min_confidence)
      : p_(p), width_(std::min(width, p.width)), min_confidence_(min_confidence) {}

  void predict(int, const float*, const int*, std::vector<std::pair<int, int>>*) override {}
  void on_token(int32_t token, std::vector<std::pair<int, int>>* out) override {
    if (token < 0 || token >= p_.vocab) return;
    for (int l = 0; l < p_.n_layers; ++l)
      for (int r = 0; r < width_; ++r) {
        const size_t at = ((size_t)token * p_.n_layers + l) * p_.width + r;
        if (p_.token_experts[at] >= 0 && p_.token_shares[at] >= min_confidence_) out->emplace_back(l, p_.token_experts[at]);
      }
  }

 private:
  const RoutingProfile& p_;
  int width_;
  float min_confidence_;
};

// auto: the gate guess for the next layer (the most accurate one-layer-ahead
// signal) and, with a profile, the token's usual experts for every layer as
// soon as the token is known (the longest lead time); both gated by confidence.
class AutoPredictor final : public Predictor {
 public:
  AutoPredictor(std::unique_ptr<Predictor> gate, std::unique_ptr<Predictor> token)
      : gate_(std::move(gate)), token_(std::move(token)) {}

  void on_token(int32_t token, std::vector<std::pair<int, int>>* out) override {
    if (token_) token_->on_token(token, out);
  }
  void predict(int layer, const float* hidden, const int* chosen, std::vector<std::pair<int, int>>* out) override {
    gate_->predict(layer, hidden, chosen, out);
  }

 private:
  std::unique_ptr<Predictor> gate_, token_;
};

}  // namespace

bool predictor_reads_profile(const std::string& kind) { return kind == "stats" || kind == "token" || kind == "auto"; }

std::unique_ptr<Predictor> make_predictor(const PredictorOptions& opt, const ModelConfig& cfg,
                                          const ModelWeights& weights, const RoutingProfile& profile) {
  const int width = std::min(cfg.n_experts, opt.width > 0 ? opt.width : cfg.top_k);
  const int depth = std::max(1, opt.depth);
  const bool have_profile = !profile.empty();
  if (opt.kind == "none") return nullptr;
  const float conf = opt.min_confidence;
  if (opt.kind == "gate") return std::make_unique<GatePredictor>(cfg, weights, depth, width, conf);
  if ((opt.kind == "stats" || opt.kind == "token") && !have_profile)
    throw std::invalid_argument("predictor '" + opt.kind + "' needs routing statistics: run `edgemoe profile MODEL "
                                "--calib TEXTFILE` first");
  if (opt.kind == "stats") return std::make_unique<StatsPredictor>(cfg, profile, depth, width, conf);
  if (opt.kind == "token") return std::make_unique<TokenPredictor>(profile, width, conf);
  if (opt.kind == "auto")
    return std::make_unique<AutoPredictor>(std::make_unique<GatePredictor>(cfg, weights, 1, width, conf),
                                           have_profile ? std::make_unique<TokenPredictor>(profile, width, conf)
                                                        : nullptr);
  throw std::invalid_argument("unknown predictor '" + opt.kind + "' (available: none, gate, stats, token, auto)");
}

}  // namespace edgemoe
