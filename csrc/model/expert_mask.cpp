#include "expert_mask.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace edgemoe {
namespace {

std::string pair_text(int64_t l, int64_t e) { return std::to_string(l) + ":" + std::to_string(e); }

// Grouped routing keeps the topk_group best groups and picks the top_k within them: whichever
// groups win, they must still hold top_k unmasked experts; and a group scored by its best two
// must keep two, or its score becomes -inf where the pruned model's would be its single best.
void check_groups(const ModelConfig& cfg, int l, const std::vector<uint8_t>& m) {
  // m is over router outputs: with merged experts (config.h: expert_map) the groups are the router's.
  const int G = cfg.n_group, W = cfg.router_width(), per = W / G;
  const char* what = cfg.expert_map.empty() ? "experts" : "router outputs";
  std::vector<int> open(G, 0);
  for (int e = 0; e < W; ++e) open[e / per] += !m[e];
  if (cfg.group_score == GroupScore::Top2Sum && per > 1)
    for (int g = 0; g < G; ++g)
      if (open[g] < 2)
        throw std::invalid_argument("disable_experts leaves group " + std::to_string(g) + " of layer " +
                                    std::to_string(l) + " (" + what + " " + std::to_string(g * per) + "-" +
                                    std::to_string((g + 1) * per - 1) + ") with " + std::to_string(open[g]) +
                                    " unmasked " + what + "; groups are scored by their best two, so keep two in each");
  std::sort(open.begin(), open.end());
  int worst = 0;
  for (int g = 0; g < cfg.topk_group; ++g) worst += open[g];
  if (worst < cfg.top_k)
    throw std::invalid_argument("disable_experts leaves layer " + std::to_string(l) + "'s " +
                                std::to_string(cfg.topk_group) + " emptiest groups only " + std::to_string(worst) +
                                " unmasked " + what + ", fewer than the " + std::to_string(cfg.top_k) +
                                " the router chooses from the groups it keeps");
}

}  // namespace

ExpertMask::ExpertMask(const ModelConfig& cfg, const std::vector<int64_t>& pairs) {
  if (pairs.empty()) return;
  if (pairs.size() % 2) throw std::invalid_argument("disable_experts must be (layer, expert) pairs");
  layers_.assign(cfg.n_layers, {});
  experts_.assign(cfg.n_layers, {});
  for (size_t i = 0; i < pairs.size(); i += 2) {
    const int64_t l = pairs[i], e = pairs[i + 1];
    if (l < 0 || l >= cfg.n_layers)
      throw std::invalid_argument("disable_experts names layer " + std::to_string(l) + "; the model has layers 0-" +
                                  std::to_string(cfg.n_layers - 1));
    if (cfg.is_dense(l))
      throw std::invalid_argument("disable_experts names layer " + std::to_string(l) +
                                  ", a dense layer without routed experts");
    if (e < 0 || e >= cfg.n_experts)
      throw std::invalid_argument("disable_experts names expert " + pair_text(l, e) + "; layers have experts 0-" +
                                  std::to_string(cfg.n_experts - 1));
    std::vector<uint8_t>& m = layers_[l];
    if (m.empty()) m.assign(cfg.n_experts, 0);
    if (m[e]) throw std::invalid_argument("disable_experts names expert " + pair_text(l, e) + " twice");
    m[e] = 1;
  }
  for (int l = 0; l < cfg.n_layers; ++l) {
    std::vector<uint8_t>& m = layers_[l];
    if (m.empty()) continue;
    experts_[l] = m;
    if (const int64_t* map = cfg.expert_map_of(l)) {  // merged experts: mask every router output reaching one
      std::vector<uint8_t> outputs(cfg.router_width());
      for (int j = 0; j < cfg.router_width(); ++j) outputs[j] = experts_[l][map[j]];
      m.swap(outputs);
    }
    const int open = cfg.router_width() - (int)std::count(m.begin(), m.end(), 1);
    if (open < cfg.top_k)
      throw std::invalid_argument("disable_experts leaves layer " + std::to_string(l) + " " + std::to_string(open) +
                                  (cfg.expert_map.empty() ? " experts" : " router outputs") + ", fewer than the " +
                                  std::to_string(cfg.top_k) + " each token is routed to");
    if (cfg.n_group > 1) check_groups(cfg, l, m);
  }
}

}  // namespace edgemoe
