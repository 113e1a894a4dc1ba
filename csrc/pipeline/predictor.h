// Expert predictors: guesses of which experts later layers will route the
// current token to, so the I/O worker can read them while this layer computes.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../model/config.h"
#include "../model/weights.h"

namespace edgemoe {

struct PredictorOptions {
  std::string kind = "gate";  // "none" or "gate" ("stats", "token", "auto" with the profile)
  int depth = 1;              // how many layers ahead to predict
  int width = 0;              // experts per predicted layer; 0 means the model's top_k
};

class Predictor {
 public:
  virtual ~Predictor() = default;
  // Layer `layer` has routed one decode token whose residual stream entering
  // the MoE block is `hidden` and whose chosen experts are `chosen` [top_k].
  // Appends (layer, expert) guesses for later layers to `out`, most likely first.
  virtual void predict(int layer, const float* hidden, const int* chosen,
                       std::vector<std::pair<int, int>>* out) = 0;
};

// nullptr for kind "none". Throws std::invalid_argument for an unknown kind.
std::unique_ptr<Predictor> make_predictor(const PredictorOptions& opt, const ModelConfig& cfg,
                                          const ModelWeights& weights);

}  // namespace edgemoe
