// The linear-attention layers' state: what a KV cache is to attention, for Gated DeltaNet.
//
// Each linear layer keeps its convolution's last inputs and one [key_head_dim,
// value_head_dim] matrix per value head (config.h). Unlike a KV cache, the
// state after n tokens cannot be cut back to fewer: it is a sum over all of
// them. So copies of it ("checkpoints") are kept at a few positions, and going
// back to position n means going back to the newest checkpoint at or before
// n (or to the empty state) and evaluating the tokens after it again.
// Transformer::forward takes a checkpoint before every call of more than one
// token and after those that want only the last position's logits: a prompt's
// start and end (a chat turn's boundaries), a verifying pass's start (where a
// rejected draft rolls back to), and before the cache drafter's passes. Each
// copy is the whole state (63 MiB on Qwen3.6-35B-A3B, ~8 ms to copy here).
#pragma once
#include <cstdint>
#include <vector>

#include "config.h"

namespace edgemoe {

class RecurrentState {
 public:
  // The live state's and `checkpoints` copies' bytes, in all and for one layer (0: attention).
  static size_t bytes(const ModelConfig& c, int checkpoints);
  static size_t layer_bytes(const ModelConfig& c, int layer, int checkpoints);

  RecurrentState(const ModelConfig& c, int checkpoints);

  // A linear layer's convolution inputs [conv_dim][conv_kernel - 1] (oldest first) and its
  // value heads' matrices [value_heads][key_head_dim][value_head_dim].
  float* conv(int layer) { return &live_[offset_[layer]]; }
  float* matrices(int layer) { return &live_[offset_[layer] + cfg_.linear_conv_state()]; }

  // The empty state (every sequence starts from it); no checkpoints.
  void clear();
  // Keeps a copy of the state as it is after `pos` tokens. Nothing to keep at 0 (the empty
  // state) or where one is kept at pos already; with every slot taken, the oldest gives way.
  void save(int64_t pos);
  // Returns to the newest copy at or before `pos` (the empty state where there is none) and
  // forgets the copies after it; returns its position.
  int64_t restore(int64_t pos);
  size_t allocated_bytes() const;

 private:
  struct Checkpoint {
    int64_t pos = -1;  // -1: free
    uint64_t saved_at = 0;
    std::vector<float> state;
  };
  const ModelConfig& cfg_;
  std::vector<size_t> offset_;  // per layer, into live_ (linear layers only)
  std::vector<float> live_;
  std::vector<Checkpoint> checkpoints_;
  uint64_t saves_ = 0;
};

}  // namespace edgemoe
