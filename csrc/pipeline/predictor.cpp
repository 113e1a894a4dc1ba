#include "predictor.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "../model/ops.h"

namespace edgemoe {

namespace {

// The mixtral-offloading guess: apply the next layers' (resident, cheap)
// post-attention norm and router to the hidden state we have now. The
// residual stream changes slowly from layer to layer, so the next router
// mostly agrees with what it will see.
class GatePredictor final : public Predictor {
 public:
  GatePredictor(const ModelConfig& cfg, const ModelWeights& w, int depth, int width)
      : cfg_(cfg), w_(w), depth_(depth), width_(width), xn_(cfg.hidden), logits_(cfg.n_experts),
        order_(cfg.n_experts) {}

  void predict(int layer, const float* hidden, const int*, std::vector<std::pair<int, int>>* out) override {
    const int H = cfg_.hidden, E = cfg_.n_experts;
    for (int d = 1; d <= depth_ && layer + d < cfg_.n_layers; ++d) {
      const LayerWeights& L = w_.layers[layer + d];
      rms_norm(hidden, L.ffn_norm.f32(), H, cfg_.rms_norm_eps, xn_.data());
      const float* router = L.router.f32();
      for (int e = 0; e < E; ++e) {
        float z = 0.f;
        for (int i = 0; i < H; ++i) z += router[(size_t)e * H + i] * xn_[i];
        logits_[e] = z;
      }
      std::iota(order_.begin(), order_.end(), 0);
      std::partial_sort(order_.begin(), order_.begin() + width_, order_.end(),
                        [&](int a, int b) { return logits_[a] > logits_[b] || (logits_[a] == logits_[b] && a < b); });
      for (int r = 0; r < width_; ++r) out->emplace_back(layer + d, order_[r]);
    }
  }

 private:
  const ModelConfig& cfg_;
  const ModelWeights& w_;
  int depth_, width_;
  std::vector<float> xn_, logits_;
  std::vector<int> order_;
};

}  // namespace

std::unique_ptr<Predictor> make_predictor(const PredictorOptions& opt, const ModelConfig& cfg,
                                          const ModelWeights& weights) {
  const int width = std::min(cfg.n_experts, opt.width > 0 ? opt.width : cfg.top_k);
  const int depth = std::max(1, opt.depth);
  if (opt.kind == "none") return nullptr;
  if (opt.kind == "gate" || opt.kind == "auto") return std::make_unique<GatePredictor>(cfg, weights, depth, width);
  throw std::invalid_argument("unknown predictor '" + opt.kind + "' (available: none, gate, auto)");
}

}  // namespace edgemoe
