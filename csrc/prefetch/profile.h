// Routing statistics gathered offline by `edgemoe profile` and stored in the
// container: what the statistical predictors and frequency-based cache
// policies start from. Layers keep the model's numbering: a dense layer's rows
// are zero (freq, next_layer) or -1 (token_experts).
#pragma once
#include <cstdint>
#include <vector>

namespace edgemoe {

struct RoutingProfile {
  int n_layers = 0, n_experts = 0, width = 0, vocab = 0;
  // freq[l * E + e]: share of tokens whose top-k in layer l includes e.
  std::vector<float> freq;
  // next_layer[(l * E + a) * E + b]: P(b in the next MoE layer's top-k | a in layer l's top-k),
  // l < n_layers - 1 (the next MoE layer is l + 1 unless dense layers lie between).
  std::vector<float> next_layer;
  // token_experts[(t * n_layers + l) * width + r]: the experts token t most often chose in
  // layer l, most frequent first; -1 where the token was never seen.
  std::vector<int32_t> token_experts;
  // token_shares[same index]: how often token t chose that expert (the token predictor's confidence).
  std::vector<float> token_shares;

  bool empty() const { return freq.empty(); }
};

}  // namespace edgemoe
