// The memory plan: what an engine allocates, part by part, before it allocates it.
//
// Each part has one formula, and the parts that allocate use the same one
// (ExpertStore::sizes_for, Transformer::kv_cache_bytes / scratch_bytes);
// tests compare the plan with what a built engine holds (Engine::allocated_bytes).
// Python's load(), info, the CLI and the server all read this plan.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../format/container.h"
#include "options.h"

namespace edgemoe {

struct MemoryPlan {
  uint64_t resident_bytes = 0;  // dense weights, read once at load (aligned copy)
  uint64_t kv_cache_bytes = 0;  // the context: KV cache, and linear-attention state with its checkpoints
  std::vector<uint64_t> kv_layer_bytes;  // per layer (a sliding layer holds only its window, a linear one its state)
  uint64_t scratch_bytes = 0;   // the forward pass's activations, rope tables
  uint64_t staging_bytes = 0;   // the expert store's buffers for compressed blobs
  uint64_t vision_bytes = 0;    // one image through the vision tower at max_image_pixels (0: none)
  uint64_t slot_bytes = 0;      // one expert cache slot
  int64_t n_slots = 0;          // expert cache slots
  int64_t min_slots = 0;        // one layer's top-k experts
  int64_t total_experts = 0;

  uint64_t fixed_bytes() const { return resident_bytes + kv_cache_bytes + scratch_bytes + staging_bytes + vision_bytes; }
  uint64_t min_budget() const { return fixed_bytes() + (uint64_t)min_slots * slot_bytes; }
  uint64_t total_bytes() const { return fixed_bytes() + (uint64_t)n_slots * slot_bytes; }
};

// What the expert store of an engine of `opt` holds: [layer][id], the experts' blobs, then (when
// the engine may read low-bit copies) their low-bit copies at ids n_experts + expert. Throws
// std::invalid_argument when low-bit copies are asked for and the container has none.
std::vector<std::vector<BlobRef>> store_blob_table(const Container& container, const EngineOptions& opt);

// The resident section's bytes an engine of `opt` loads: without vision, up to the tower's.
uint64_t resident_bytes(const Container& container, const EngineOptions& opt);

// The plan of an engine of `opt` over this container. Slots: `cache_experts`
// if given (at least min_slots; at most every expert), else every expert, then
// as many as `budget` holds if one is given. Throws BudgetError with the
// figures when the budget or the slot count is below the minimum.
MemoryPlan plan_memory(const Container& container, const EngineOptions& opt, std::optional<uint64_t> budget,
                       std::optional<int64_t> cache_experts);

// "1.50 GiB", "12.00 MiB", "512 B": sizes in messages.
std::string format_size(uint64_t bytes);

}  // namespace edgemoe
