// Expert predictors: guesses of which experts later layers will route the
// current token to, so the I/O worker can read them while this layer computes.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../model/config.h"
#include "../model/weights.h"
#include "profile.h"

namespace edgemoe {

struct PredictorOptions {
  std::string kind = "gate";  // none, gate, stats, token, auto (stats and token need a profile)
  int depth = 1;              // how many layers ahead to predict
  int width = 0;              // experts per predicted layer; 0 means the model's top_k
  // Guesses less likely than this are not prefetched: the gate's router
  // probability, the statistical P(expert | previous layer's experts), or the
  // share of the token's profiled occurrences that chose the expert.
  float min_confidence = 0.f;
};

class Predictor {
 public:
  virtual ~Predictor() = default;
  // Layer `layer` has routed one decode token whose residual stream entering
  // the MoE block is `hidden` and whose chosen experts are `chosen` [top_k].
  // Appends (layer, expert) guesses for later layers to `out`, most likely first.
  virtual void predict(int layer, const float* hidden, const int* chosen,
                       std::vector<std::pair<int, int>>* out) = 0;
  // A decode token is about to enter layer 0: guesses for any layer may go to `out`.
  virtual void on_token(int32_t token, std::vector<std::pair<int, int>>* out) {}
};

// True if a predictor of this kind keeps reading the routing profile it was made with (the
// others never look at it: the engine may free it).
bool predictor_reads_profile(const std::string& kind);

// nullptr for kind "none". Throws std::invalid_argument for an unknown kind,
// or for "stats"/"token" without a profile.
std::unique_ptr<Predictor> make_predictor(const PredictorOptions& opt, const ModelConfig& cfg,
                                          const ModelWeights& weights, const RoutingProfile& profile);

}  // namespace edgemoe
