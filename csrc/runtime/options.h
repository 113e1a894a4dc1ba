// Every run-time option of the engine, with the default a user gets.
//
// This is the one place for an option's name, default and allowed values:
// edgemoe/options.py takes its defaults and choices from here (through the
// bindings), the CLI and the server build on that, and Python hands every
// option back as named values. None of them changes what the model computes
// except kv_cache (f16 moves logits by ~1e-3).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../common/values.h"
#include "../prefetch/predictor.h"
#include "../prefetch/profile.h"
#include "../store/expert_store.h"

namespace edgemoe {

struct EngineOptions {
  int64_t n_slots = 0;  // expert cache slots: from the memory plan; the engine needs at least one
  int threads = 1;      // Python's default is the machine's physical cores
  int ctx_size = 4096;  // Python's default is this or the model's max_position, whichever is less
  int max_batch = 256;  // prefill is processed in batches of at most this many tokens
  bool verify_checksums = true;
  // fp16 like llama.cpp's default: half the memory, 1.2x decode at 0.5-2k tokens, perplexity
  // unchanged (bench/RESULTS.md, "KV cache: f32 vs f16").
  bool kv_f16 = true;
  // Recent: as many hits as EdgeMoE's policy or more on every routing replayed (skewed, balanced,
  // drifting between texts: +4 points there), which beat LRU on the demo model (bench/RESULTS.md,
  // "Cache policies on four routings"); LRU still wins where tokens repeat their experts most.
  CachePolicy policy = CachePolicy::Recent;
  // Prefetch is opt-in: on this 2-core machine's fast NVMe any predictor decodes within noise of
  // on-demand loading while reading 10-70 % more bytes; when on, guesses below 0.5 confidence cost
  // more than they hide (auto at 25 %: 0.86x of none ungated, 0.94-1.15x gated at 0.3-0.7).
  PredictorOptions predictor{"none", 1, 0, 0.5f};
  // Background threads that read a layer's misses side by side (and prefetched experts). Four:
  // ahead of one where a layer misses most of its experts (12.5 % limit) in both sweeps of
  // bench/RESULTS.md "Reads in flight" (this machine's storage is too noisy to rank them at 25 %),
  // and BigMoeOnEdge measured 2 to 4 lanes +15-20 % on a phone's flash. 0 reads everything in
  // the compute thread: no overlap, the same reads in the same order on every run.
  int io_threads = 4;
  // Lossy, off (0): a missed expert that every token choosing it gives less than this share of
  // its routing weight is not read (model/transformer.h); bench/RESULTS.md has its KL divergence.
  float skip_missed_below = 0.f;
  // Lossy, off (0): a missed expert that every token choosing it gives less than this share of its
  // routing weight (1: every missed expert) is read and computed in its low-bit copy, which the
  // container must carry (`edgemoe convert --low-bit-copy BITS`); bench/RESULTS.md has its KL.
  float low_bit_missed_below = 0.f;
  // Lossy, off (0): route each token to only its this many heaviest of the model's top-k experts.
  int active_experts = 0;
  // Lossy, off when empty: experts the router never chooses, as (layer, expert) pairs flattened
  // (model/expert_mask.h): the model as if they were pruned, to try a pruning before converting it.
  std::vector<int64_t> disabled_experts;
  // Copies of a hybrid model's linear-attention state kept to go back to (model/recurrent_state.h):
  // two, the ends of the last call of several tokens (a prompt; a drafting pass), which is where a
  // chat's next turn or a rejected draft goes back to. 0 for a model without such layers.
  int state_checkpoints = 2;
  // Models that take images: the most pixels an image may have once resized (Python's preprocessing
  // resizes to at most this, as the model's processor does with a lower max_pixels); the memory plan
  // counts the vision tower's activations at this size. 1 MiP: 1024 image tokens of Qwen3-VL's
  // 32-pixel windows, whose attention over 4096 patches already costs 2 cores seconds per image.
  int64_t max_image_pixels = 1 << 20;
  // Models that take images: load the vision tower (its weights are resident, as the language
  // model's). Off, an engine takes no images and leaves the tower's bytes on storage: what a
  // text-only use of such a model saves (the tower is ~0.6 GB at 8 bits for Qwen3-VL-30B-A3B).
  bool vision = true;
  RoutingProfile profile;  // data, not an option: the container's routing profile (may be empty)
};

// The options the values name; the rest keep their defaults. Throws
// std::invalid_argument naming an unknown option or a bad value.
EngineOptions options_from_values(const Values& values);
// Every option by name (the profile aside): what the defaults are, for Python.
Values options_to_values(const EngineOptions& o);
// The expert store's options for these engine options (the engine and the memory plan agree).
StoreOptions store_options(const EngineOptions& o);
// The allowed names of each option that takes a name.
std::map<std::string, std::vector<std::string>> option_choices();

}  // namespace edgemoe
