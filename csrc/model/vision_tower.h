// The vision tower of Qwen3-VL-MoE and Qwen3.5-MoE (docs/VISION_MODELS.md section 3): one image's
// patches in, the language model's image-token features out. No I/O and no threads of its own, as
// the transformer; its weights are resident tensors like the language model's.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "../common/thread_pool.h"
#include "config.h"
#include "transformer.h"
#include "weights.h"

namespace edgemoe {

// Looks a resident tensor up by name, checking its shape (rows, cols) and, with f32_only, its type.
using TensorLookup = std::function<Tensor(const std::string& name, int64_t rows, int64_t cols, bool f32_only)>;
// The vision tower's tensors (names under "vision.", docs/FORMAT.md); none for a model without one.
VisionWeights bind_vision_weights(const ModelConfig& c, const TensorLookup& get);

class VisionTower {
 public:
  VisionTower(const ModelConfig& cfg, const VisionWeights& w, ThreadPool& pool) : cfg_(cfg), w_(w), pool_(pool) {}

  // One still image, grid_h x grid_w patches (each a multiple of vision_merge): pixels
  // [grid_h * grid_w, vision_patch_values] in merge-window order (the processor's rows) in,
  // out [grid_h * grid_w / vision_merge^2, image_feature_width] (raster over the merged grid: the
  // image tokens' order): each token's embedding, then its DeepStack features. Stops between
  // blocks when a stop flag is set (throws as Transformer::forward does).
  void encode(const float* pixels, int grid_h, int grid_w, float* out, StopFlags stop = {}) const;

  // The most patches an image of at most max_pixels pixels has.
  static int64_t max_patches(const ModelConfig& c, int64_t max_pixels);
  // What encoding one image of at most max_pixels holds: the activations encode allocates, and the
  // pixels it reads and the features it writes (the memory plan's vision_bytes); 0 without a tower.
  static size_t encode_bytes(const ModelConfig& c, int64_t max_pixels);

 private:
  // x [n, D] += the learned position table, bilinearly resampled (align_corners) to the grid.
  void add_positions(float* x, int grid_h, int grid_w) const;
  // Self-attention of block b over the whole image, into x (residual added).
  void attention(const VisionBlockWeights& b, float* x, int64_t n, const float* cos, const float* sin,
                 struct VisionScratch& s) const;
  // A merger's MLP over rows [m, vision_merged_width] of `in` (normalised already), into out
  // rows [m] at stride out_stride.
  void merge(const MergerWeights& w, const float* in, int64_t m, float* out, int64_t out_stride,
             struct VisionScratch& s) const;
  // f(row) for rows [0, n), split across the pool (rows of about work_per_row operations).
  void each_row(int64_t n, int64_t work_per_row, const std::function<void(int64_t)>& f) const;
  // y [n, W.rows] = x [n, W.cols] @ W^T + bias.
  void linear(const Tensor& W, const Tensor& bias, const float* x, int64_t n, float* y, struct VisionScratch& s) const;

  const ModelConfig& cfg_;
  const VisionWeights& w_;
  ThreadPool& pool_;
};

}  // namespace edgemoe
