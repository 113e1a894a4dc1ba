// The engine: ties a container's resident weights, its expert store, a thread
// pool and the forward pass together. It is what edgemoe._core.Engine binds.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../common/thread_pool.h"
#include "../format/container.h"
#include "../model/config.h"
#include "../model/transformer.h"
#include "../model/vision_tower.h"
#include "../model/weights.h"
#include "../prefetch/predictor.h"
#include "options.h"
#include "../store/expert_store.h"
#include "../store/resident_section.h"

namespace edgemoe {

struct EngineStats {
  StoreStats store;
  double compute_s = 0.0;
  uint64_t tokens = 0;
  uint64_t skipped_choices = 0;  // (token, rank) choices left out by the lossy options
  uint64_t low_bit_choices = 0;  // (token, rank) choices computed from an expert's low-bit copy
};

// Routing decisions recorded while tracing is on: [token][layer][rank].
struct RoutingTrace {
  std::vector<int64_t> positions;  // one per traced token
  std::vector<int32_t> experts;    // positions.size() * n_layers * top_k
  std::vector<float> weights;
  // What the predictor asked to prefetch for a traced decode token:
  // (row, layer, expert) triples, row indexing `positions`.
  std::vector<int32_t> predicted;
  // With set_tracing(true, true): the residual stream entering each layer's
  // MoE block, [token][layer][hidden] (what offline tools need to replay an expert).
  std::vector<float> hidden;
};

class Engine final : public ExpertSource, public ForwardObserver {
 public:
  // An engine over an opened container (format/container.h has checked its tables).
  Engine(const Container& container, const EngineOptions& opt);
  Engine(const std::string& path, const EngineOptions& opt) : Engine(open_container(path), opt) {}

  // Logits of every position of `tokens` from an empty context: out [n, vocab].
  // Both calls stop at a layer boundary once a stop flag is set (see
  // Transformer::forward for what the context then holds).
  // images: features standing in for image tokens (Transformer::forward); checked here.
  void logits(const int32_t* tokens, int64_t n, float* out, StopFlags stop = {},
              const std::vector<ImageFeatures>& images = {});
  // Appends tokens to the context; writes the last position's logits [vocab],
  // or with all_logits every new position's [n, vocab] (to verify drafted tokens).
  // cached_only: compute only the chosen experts already cached, read and prefetch nothing
  // (drafting: Transformer::set_cached_only).
  void eval(const int32_t* tokens, int64_t n, float* out, StopFlags stop = {}, bool all_logits = false,
            bool cached_only = false, const std::vector<ImageFeatures>& images = {});
  // One image through the vision tower (VisionTower::encode): out [patches / merge^2,
  // image_feature_width]. Throws std::invalid_argument for a model without one or a bad grid.
  void encode_image(const float* pixels, int grid_h, int grid_w, float* out, StopFlags stop = {});
  // Throws std::invalid_argument unless this engine takes images (a tower, loaded).
  void require_vision() const;
  void reset();
  // Keep only the first n positions of the context (a shared prompt prefix).
  void truncate(int64_t n);
  int64_t n_past() const { return transformer_->n_past(); }
  const ModelConfig& config() const { return cfg_; }

  // Record every token's routing from now on (or stop); take_trace() hands
  // over what was recorded and starts a new record.
  void set_tracing(bool on, bool with_hidden = false);
  RoutingTrace take_trace();

  EngineStats stats() const;
  void reset_stats();
  size_t slot_bytes() const { return store_->slot_bytes(); }
  size_t n_slots() const { return store_->n_slots(); }
  bool direct_io() const { return store_->direct_io(); }
  // What the engine holds of what the memory plan counts (runtime/memory_plan.h).
  uint64_t allocated_bytes() const;

  // ExpertSource
  ExpertView acquire(int layer, int expert) override;
  void release(int layer, int expert) override;
  bool is_cached(int layer, int expert) const override;
  void read_ahead(int layer, const int* experts, size_t n) override;
  int read_lanes() const override;
  // ForwardObserver
  void on_routing(int layer, int64_t pos0, int64_t n, const int* ids, const float* weights,
                  const float* hidden) override;

 private:
  void bind_weights(const std::vector<TensorEntry>& tensors);
  void check_tokens(const int32_t* tokens, int64_t n, bool from_empty) const;
  // Images inside the call, in order, each over image tokens only. (An image token without an image
  // is a token like any other, as llama.cpp takes it: a model may sample one.)
  void check_images(const int32_t* tokens, int64_t n, const std::vector<ImageFeatures>& images) const;
  void run(const int32_t* tokens, int64_t n, float* out, bool all_logits, StopFlags stop,
           const std::vector<ImageFeatures>& images);
  // Drop traced rows from `rows` on (tokens whose forward pass did not complete).
  void trim_trace(size_t rows);
  // Take the experts disable_experts masks out of a predictor's guesses: the router never chooses them.
  void drop_masked(std::vector<std::pair<int, int>>& guesses) const;
  // Trace what the predictor asked for, against the current forward call's token.
  void record_predictions(const std::vector<std::pair<int, int>>& guesses);

  ModelConfig cfg_;
  EngineOptions opt_;
  std::vector<std::vector<ExpertEntry>> experts_;
  std::vector<std::vector<ExpertEntry>> low_bit_experts_;  // empty unless the container has them
  std::unique_ptr<ResidentSection> resident_;
  std::unique_ptr<ExpertStore> store_;
  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Transformer> transformer_;
  std::unique_ptr<VisionTower> vision_;  // null without a vision tower
  std::unique_ptr<Predictor> predictor_;
  const int first_moe_layer_;  // the first layer that routes (dense leading layers do not)
  int64_t step_ = 0;  // counts passes through the first MoE layer: with the layer, orders prefetch deadlines
  std::vector<std::pair<int, int>> guesses_;
  std::vector<std::pair<int, int>> token_guesses_;  // from on_token, traced once the token's row exists
  std::mutex run_mu_;  // one forward pass at a time per engine
  bool tracing_ = false;
  bool trace_hidden_ = false;
  RoutingTrace trace_;
  size_t trace_base_ = 0;  // index in trace_.positions of the current forward call's first token
  double compute_s_ = 0.0;  // forward passes' wall time besides waiting for reads and the cache's own work
  uint64_t tokens_ = 0;
};

}  // namespace edgemoe
