#include "memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "../common/errors.h"
#include "../model/transformer.h"
#include "../model/vision_tower.h"
#include "../store/resident_section.h"

namespace edgemoe {

std::string format_size(uint64_t n) {
  const std::pair<const char*, double> units[] = {{"GiB", double(1 << 30)}, {"MiB", double(1 << 20)}, {"KiB", 1024.0}};
  for (const auto& u : units)
    if ((double)n >= u.second) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f %s", (double)n / u.second, u.first);
      return buf;
    }
  return std::to_string(n) + " B";
}

std::vector<std::vector<BlobRef>> store_blob_table(const Container& container, const EngineOptions& opt) {
  std::vector<std::vector<BlobRef>> table = blob_table(container.experts);
  if (opt.low_bit_missed_below <= 0.f) return table;
  if (container.low_bit_experts.empty())
    throw std::invalid_argument("low_bit_missed_below needs low-bit copies of the experts, which " + container.path +
                                " does not carry: convert it with `edgemoe convert ... --low-bit-copy 2`");
  const std::vector<std::vector<BlobRef>> low = blob_table(container.low_bit_experts);
  for (size_t l = 0; l < table.size(); ++l) table[l].insert(table[l].end(), low[l].begin(), low[l].end());
  return table;
}

uint64_t resident_bytes(const Container& container, const EngineOptions& opt) {
  return opt.vision ? container.resident_loaded : container.resident_text;
}

MemoryPlan plan_memory(const Container& container, const EngineOptions& opt, std::optional<uint64_t> budget,
                       std::optional<int64_t> cache_experts) {
  const ModelConfig& cfg = container.config;
  const std::vector<std::vector<BlobRef>> experts = store_blob_table(container, opt);
  MemoryPlan plan;
  plan.resident_bytes = ResidentSection::allocated_bytes_for(resident_bytes(container, opt));
  plan.kv_cache_bytes = Transformer::kv_cache_bytes(cfg, opt.ctx_size, opt.max_batch, opt.kv_f16,
                                                     opt.state_checkpoints);
  for (int l = 0; l < cfg.n_layers; ++l)
    plan.kv_layer_bytes.push_back(
        Transformer::kv_layer_bytes(cfg, l, opt.ctx_size, opt.max_batch, opt.kv_f16, opt.state_checkpoints));
  plan.scratch_bytes = Transformer::scratch_bytes(cfg, opt.ctx_size, opt.max_batch, opt.threads);
  plan.vision_bytes = opt.vision ? VisionTower::encode_bytes(cfg, opt.max_image_pixels) : 0;
  const StoreSizes store = ExpertStore::sizes_for(experts, store_options(opt));
  plan.slot_bytes = store.slot_bytes;
  plan.staging_bytes = store.staging_bytes();
  for (const auto& row : container.experts) plan.total_experts += (int64_t)row.size();
  plan.min_slots = std::min<int64_t>(cfg.top_k, plan.total_experts);
  plan.n_slots = plan.total_experts;
  if (cache_experts) {
    if (*cache_experts < plan.min_slots)
      throw BudgetError("cache_experts=" + std::to_string(*cache_experts) + " is below the minimum of " +
                        std::to_string(plan.min_slots) + " (one layer's top-k experts)");
    plan.n_slots = std::min(*cache_experts, plan.total_experts);
  }
  if (budget) {
    if (*budget < plan.min_budget())
      throw BudgetError("memory budget " + format_size(*budget) + " is below this model's minimum of " +
                        format_size(plan.min_budget()) + " (" + std::to_string(plan.min_budget()) +
                        " bytes: resident weights " + format_size(plan.resident_bytes) + ", KV cache " +
                        format_size(plan.kv_cache_bytes) + ", scratch " +
                        format_size(plan.scratch_bytes + plan.staging_bytes) +
                        (plan.vision_bytes ? ", an image " + format_size(plan.vision_bytes) : std::string()) + ", " +
                        std::to_string(plan.min_slots) +
                        " expert slots of " + format_size(plan.slot_bytes) + "); raise the budget or lower ctx_size");
    plan.n_slots = std::min<int64_t>(plan.n_slots, (int64_t)((*budget - plan.fixed_bytes()) / plan.slot_bytes));
  }
  return plan;
}

}  // namespace edgemoe
