// The architecture-neutral model description (mirrors edgemoe/model_config.py).
// Supported architectures differ only in the flags below; there is one
// forward pass for all of them.
#pragma once
#include <string>

namespace edgemoe {

enum class QKNorm {
  None,  // Mixtral, Qwen2-MoE
  Head,  // Qwen3-MoE: RMSNorm over each head's head_dim values
  Full,  // OLMoE: RMSNorm over the whole q (or k) projection
};

struct ModelConfig {
  std::string architecture;
  int n_layers = 0;
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  int n_experts = 0;
  int top_k = 0;
  int expert_intermediate = 0;
  int shared_intermediate = 0;   // 0: no shared expert
  bool shared_gate = false;      // shared expert output scaled by sigmoid(x . gate)
  bool qkv_bias = false;
  bool norm_topk_prob = false;   // renormalise the top-k routing weights to sum to 1
  bool tie_embeddings = false;   // output head = token embeddings
  QKNorm qk_norm = QKNorm::None;
  float rope_theta = 10000.f;
  float rms_norm_eps = 1e-6f;
  int max_position = 4096;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Throws FormatError naming the first field out of range. The same bounds as
// edgemoe/model_config.py: the runtime checks for itself, since it is also
// driven without Python (tests/cpp, the libFuzzer target), and a hostile
// config must not size allocations or overflow the int products above.
void check_config(const ModelConfig& c);

}  // namespace edgemoe
