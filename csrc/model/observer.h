// Hooks into the forward pass for code that must watch it without the model
// knowing why: the engine's routing traces, its predictors and its prefetch schedule.
#pragma once
#include <cstdint>

namespace edgemoe {

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // Layer `layer` has routed the n tokens at positions [pos0, pos0 + n):
  // ids and weights are [n, top_k], in the router's rank order; an id is -1 (weight 0) where a
  // merged model's token chose one expert twice (config.h: expert_map) and the later choice was folded;
  // hidden [n, hidden_size] is the residual stream entering the layer's MoE
  // block. Called before any of the layer's experts is acquired.
  virtual void on_routing(int layer, int64_t pos0, int64_t n, const int* ids, const float* weights,
                          const float* hidden) = 0;
};

}  // namespace edgemoe
