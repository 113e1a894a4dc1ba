#include "config.h"

#include <string>

#include "../common/errors.h"

namespace edgemoe {
namespace {

void check_range(const char* name, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi))  // also false for NaN
    throw FormatError(std::string("invalid model config: ") + name + " = " + std::to_string(v) +
                      " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

}  // namespace

void check_config(const ModelConfig& c) {
  static const char* const kArchitectures[] = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"};
  bool known = false;
  for (const char* a : kArchitectures) known = known || c.architecture == a;
  if (!known) throw FormatError("invalid model config: unsupported architecture '" + c.architecture + "'");
  check_range("n_layers", c.n_layers, 1, 1024);
  check_range("hidden", c.hidden, 1, 1 << 17);
  check_range("n_heads", c.n_heads, 1, 1024);
  check_range("n_kv_heads", c.n_kv_heads, 1, 1024);
  check_range("head_dim", c.head_dim, 1, 4096);
  check_range("vocab", c.vocab, 1, 1 << 22);
  check_range("n_experts", c.n_experts, 1, 4096);
  check_range("top_k", c.top_k, 1, c.n_experts);
  check_range("expert_intermediate", c.expert_intermediate, 1, 1 << 18);
  check_range("shared_intermediate", c.shared_intermediate, 0, 1 << 18);
  check_range("max_position", c.max_position, 1, 1 << 24);
  check_range("rope_theta", c.rope_theta, 1e-3, 1e12);
  check_range("rms_norm_eps", c.rms_norm_eps, 0.0, 1.0);
  if (c.n_heads % c.n_kv_heads) throw FormatError("invalid model config: n_heads is not a multiple of n_kv_heads");
  if (c.head_dim % 2) throw FormatError("invalid model config: head_dim must be even for rotary embeddings");
  if (c.shared_gate && !c.shared_intermediate)
    throw FormatError("invalid model config: shared_gate set without a shared expert");
}

}  // namespace edgemoe
