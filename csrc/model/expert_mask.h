// Experts a user has switched off at load time (`disable_experts`, LOSSY).
//
// The router never chooses a masked expert: its choice score is -inf before the top-k (and
// before group scores) and, for softmax routers, its logit is -inf before the softmax, so the
// other experts' probabilities renormalise over the unmasked ones. That is exactly what the
// model computes with those experts pruned away (router rows removed, the rest in order), for
// every routing the engine has (docs/EXPERT_PRUNING.md, part A §3), which is what lets a user
// try a pruning at run time before converting it.
#pragma once
#include <cstdint>
#include <vector>

#include "config.h"

namespace edgemoe {

class ExpertMask {
 public:
  ExpertMask() = default;
  // pairs: layer, expert, layer, expert, ... Throws std::invalid_argument naming what is wrong:
  // an odd count, a layer out of range or dense, an expert out of range, a pair given twice, a
  // layer left with fewer unmasked experts than top_k, or, with grouped routing, groups that could
  // leave the top-k unfilled or (top-2-sum group scores) a group with fewer than two unmasked.
  ExpertMask(const ModelConfig& cfg, const std::vector<int64_t>& pairs);
  // Layer l's mask (1 = switched off) over its router outputs (config.h: router_width; with merged
  // experts, the outputs reaching a masked expert), or null when nothing of l is masked.
  const uint8_t* layer(int l) const { return (size_t)l < layers_.size() && !layers_[l].empty() ? layers_[l].data() : nullptr; }
  // Whether expert e of layer l is masked.
  bool masked(int l, int e) const { return (size_t)l < experts_.size() && !experts_[l].empty() && experts_[l][e]; }
  bool empty() const { return layers_.empty(); }

 private:
  std::vector<std::vector<uint8_t>> layers_;   // per layer: empty (nothing masked) or [router outputs]
  std::vector<std::vector<uint8_t>> experts_;  // per layer: empty or [n_experts]
};

}  // namespace edgemoe
