#include "config.h"

#include <algorithm>

#include "../common/errors.h"

namespace edgemoe {
namespace {

const char* const kArchitectures[] = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "glm4_moe", "deepseek_v2",
                                     "deepseek_v3", "gemma4", "qwen3_next", "qwen3_5_moe", "qwen3_vl_moe"};
const std::pair<const char*, QKNorm> kQKNorms[] = {{"none", QKNorm::None}, {"head", QKNorm::Head}, {"full", QKNorm::Full}};
const std::pair<const char*, RopeScaling> kRopeScalings[] = {
    {"none", RopeScaling::None}, {"linear", RopeScaling::Linear}, {"dynamic", RopeScaling::Dynamic}, {"yarn", RopeScaling::Yarn}};
const std::pair<const char*, Routing> kRoutings[] = {
    {"softmax", Routing::Softmax}, {"topk_softmax", Routing::TopKSoftmax}, {"sigmoid", Routing::Sigmoid}};
const std::pair<const char*, GroupScore> kGroupScores[] = {{"top2_sum", GroupScore::Top2Sum}, {"max", GroupScore::Max}};
const std::pair<const char*, ExpertActivation> kActivations[] = {{"silu", ExpertActivation::SiLU},
                                                                 {"swiglu_limited", ExpertActivation::SwiGLULimited},
                                                                 {"gelu_tanh", ExpertActivation::GeluTanh}};
const char* const kWhat = "invalid model config";

// The one list of fields (common/values.h): the bounds keep every int product
// of the forward pass in range.
template <class Config, class Visitor>
void visit_fields(Config& c, Visitor& v) {
  v.text("architecture", c.architecture, kArchitectures);
  v.integer("n_layers", c.n_layers, 1, 1024);
  v.integer("hidden", c.hidden, 1, 1 << 17);
  v.integer("n_heads", c.n_heads, 1, 1024);
  v.integer("n_kv_heads", c.n_kv_heads, 1, 1024);
  v.integer("head_dim", c.head_dim, 1, kMaxHeadDim);
  v.integer("vocab", c.vocab, 1, 1 << 22);
  v.integer("n_experts", c.n_experts, 1, 4096);
  v.integer("top_k", c.top_k, 1, 4096);
  v.integer("expert_intermediate", c.expert_intermediate, 1, 1 << 18);
  v.integer("shared_intermediate", c.shared_intermediate, 0, 1 << 18);
  v.flag("shared_gate", c.shared_gate);
  v.integers("dense_layers", c.dense_layers, 0, 1023, Optional);
  v.integer("dense_intermediate", c.dense_intermediate, 0, 1 << 18, Optional);
  v.flag("qkv_bias", c.qkv_bias);
  v.flag("o_bias", c.o_bias, Optional);
  v.flag("attention_sinks", c.attention_sinks, Optional);
  v.integer("sliding_window", c.sliding_window, 0, 1 << 24, Optional);
  v.integers("sliding_layers", c.sliding_layers, 0, 1023, Optional);
  v.flag("router_bias", c.router_bias, Optional);
  v.flag("expert_bias", c.expert_bias, Optional);
  v.choice("routing", c.routing, kRoutings, Optional);
  v.choice("expert_activation", c.expert_activation, kActivations, Optional);
  v.number("swiglu_alpha", c.swiglu_alpha, 1e-3, 1e3, Optional);
  v.number("swiglu_limit", c.swiglu_limit, 1e-3, 1e6, Optional);
  v.integer("n_group", c.n_group, 1, 4096, Optional);
  v.integer("topk_group", c.topk_group, 1, 4096, Optional);
  v.choice("group_score", c.group_score, kGroupScores, Optional);
  v.flag("router_correction_bias", c.router_correction_bias, Optional);
  v.number("routed_scaling_factor", c.routed_scaling_factor, 1e-6, 1e6, Optional);
  v.integer("router_experts", c.router_experts, 0, 4096, Optional);
  v.integers("expert_map", c.expert_map, -1, 4095, Optional, size_t(1) << 22);
  v.integer("low_rank", c.low_rank, 0, 4096, Optional);
  v.integers("expert_delta", c.expert_delta, -1, 4095, Optional, size_t(1) << 22);
  v.integer("rotary_dim", c.rotary_dim, 0, kMaxHeadDim, Optional);
  v.integer("kv_lora_rank", c.kv_lora_rank, 0, kMaxHeadDim, Optional);
  v.integer("q_lora_rank", c.q_lora_rank, 0, 1 << 16, Optional);
  v.integer("qk_rope_head_dim", c.qk_rope_head_dim, 0, kMaxHeadDim, Optional);
  v.integer("v_head_dim", c.v_head_dim, 0, kMaxHeadDim, Optional);
  v.number("attention_scale", c.attention_scale, 0.0, 1e3, Optional);
  v.number("latent_norm_eps", c.latent_norm_eps, 0.0, 1.0, Optional);
  v.integers("linear_layers", c.linear_layers, 0, 1023, Optional);
  v.integer("linear_conv_kernel", c.linear_conv_kernel, 0, 64, Optional);
  v.integer("linear_key_heads", c.linear_key_heads, 0, 1024, Optional);
  v.integer("linear_value_heads", c.linear_value_heads, 0, 1024, Optional);
  v.integer("linear_key_head_dim", c.linear_key_head_dim, 0, kMaxHeadDim, Optional);
  v.integer("linear_value_head_dim", c.linear_value_head_dim, 0, kMaxHeadDim, Optional);
  v.flag("attn_output_gate", c.attn_output_gate, Optional);
  v.integer("global_head_dim", c.global_head_dim, 0, kMaxHeadDim, Optional);
  v.integer("global_kv_heads", c.global_kv_heads, 0, 1024, Optional);
  v.number("global_rope_theta", c.global_rope_theta, 0.0, 1e12, Optional);
  v.integer("global_rope_angles", c.global_rope_angles, 0, kMaxHeadDim / 2, Optional);
  v.flag("global_k_eq_v", c.global_k_eq_v, Optional);
  v.flag("value_norm", c.value_norm, Optional);
  v.flag("sandwich_norms", c.sandwich_norms, Optional);
  v.flag("expert_norms", c.expert_norms, Optional);
  v.flag("router_expert_scale", c.router_expert_scale, Optional);
  v.flag("layer_output_scale", c.layer_output_scale, Optional);
  v.number("embedding_scale", c.embedding_scale, 1e-6, 1e6, Optional);
  v.number("final_logit_softcap", c.final_logit_softcap, 0.0, 1e6, Optional);
  v.integers("mrope_sections", c.mrope_sections, 0, kMaxHeadDim / 2, Optional);
  v.integer("vision_depth", c.vision_depth, 0, 256, Optional);
  v.integer("vision_hidden", c.vision_hidden, 0, 1 << 14, Optional);
  v.integer("vision_intermediate", c.vision_intermediate, 0, 1 << 16, Optional);
  v.integer("vision_heads", c.vision_heads, 0, 256, Optional);
  v.integer("vision_patch_size", c.vision_patch_size, 0, 64, Optional);
  v.integer("vision_temporal_patch", c.vision_temporal_patch, 0, 4, Optional);
  v.integer("vision_merge", c.vision_merge, 0, 8, Optional);
  v.integer("vision_position_side", c.vision_position_side, 0, 1024, Optional);
  v.integers("vision_deepstack_layers", c.vision_deepstack_layers, 0, 255, Optional);
  v.number("vision_norm_eps", c.vision_norm_eps, 0.0, 1.0, Optional);
  v.integer("image_token_id", c.image_token_id, -1, (1 << 22) - 1, Optional);
  v.integer("vision_start_token_id", c.vision_start_token_id, -1, (1 << 22) - 1, Optional);
  v.integer("vision_end_token_id", c.vision_end_token_id, -1, (1 << 22) - 1, Optional);
  v.flag("norm_topk_prob", c.norm_topk_prob);
  v.flag("tie_embeddings", c.tie_embeddings);
  v.choice("qk_norm", c.qk_norm, kQKNorms);
  v.number("rope_theta", c.rope_theta, 1e-3, 1e12);
  v.choice("rope_scaling", c.rope_scaling, kRopeScalings, Optional);
  v.number("rope_factor", c.rope_factor, 1.0, 1e6, Optional);
  v.integer("rope_original_max_position", c.rope_original_max_position, 0, 1 << 24, Optional);
  v.number("rope_attention_factor", c.rope_attention_factor, 1e-3, 1e3, Optional);
  v.number("yarn_beta_fast", c.yarn_beta_fast, 1e-3, 1e6, Optional);
  v.number("yarn_beta_slow", c.yarn_beta_slow, 1e-3, 1e6, Optional);
  v.flag("yarn_truncate", c.yarn_truncate, Optional);
  v.number("rms_norm_eps", c.rms_norm_eps, 0.0, 1.0);
  v.integer("max_position", c.max_position, 1, 1 << 24);
  v.integers("eos_token_ids", c.eos_token_ids, 0, (1 << 22) - 1, Optional);
}

FormatError bad(const std::string& what) { return FormatError(std::string(kWhat) + ": " + what); }

// A list of layer indices: each a layer of the model, ascending, none repeated.
void check_layer_list(const ModelConfig& c, const char* name, const std::vector<int64_t>& layers) {
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] >= c.n_layers)
      throw bad(std::string(name) + " holds layer " + std::to_string(layers[i]) + " of " + std::to_string(c.n_layers));
    if (i && layers[i] <= layers[i - 1]) throw bad(std::string(name) + " must be ascending, without repeats");
  }
}

// Latent attention's widths, and the features it does not combine with.
void check_latent(const ModelConfig& c) {
  if (!c.latent()) {
    if (c.q_lora_rank || c.qk_rope_head_dim || c.v_head_dim)
      throw bad("q_lora_rank, qk_rope_head_dim and v_head_dim belong to latent attention (kv_lora_rank > 0)");
    return;
  }
  if (!c.qk_rope_head_dim || c.qk_rope_head_dim % 2 || c.qk_rope_head_dim >= c.head_dim)
    throw bad("latent attention needs an even qk_rope_head_dim below head_dim");
  if (!c.v_head_dim) throw bad("latent attention needs a v_head_dim");
  if (c.kv_lora_rank + c.qk_rope_head_dim > kMaxHeadDim) throw bad("kv_lora_rank + qk_rope_head_dim exceeds " + std::to_string(kMaxHeadDim));
  if (c.qkv_bias || c.o_bias || c.qk_norm != QKNorm::None || c.rotary_dim || c.attention_sinks || c.sliding_window ||
      c.n_kv_heads != c.n_heads || c.value_norm || c.sandwich_norms)
    throw bad("latent attention does not combine with qkv_bias, o_bias, qk_norm, rotary_dim, sinks, sliding windows, "
              "value_norm, sandwich_norms or fewer key/value heads than query heads");
}

// The global layers' own widths and rope (Gemma 4), which need sliding layers to differ from.
void check_global(const ModelConfig& c) {
  const bool any = c.global_head_dim || c.global_kv_heads || c.global_rope_theta > 0 || c.global_rope_angles ||
                   c.global_k_eq_v;
  if (!any) return;
  if (c.sliding_layers.empty()) throw bad("global_* fields describe full-attention layers beside sliding ones: "
                                          "this model has no sliding layers");
  if ((int)c.sliding_layers.size() == c.n_layers)
    throw bad("global_* fields describe full-attention layers: every layer of this model is sliding");
  if (c.global_head_dim % 2) throw bad("global_head_dim must be even for rotary embeddings");
  if (c.global_kv_heads && c.n_heads % c.global_kv_heads) throw bad("n_heads is not a multiple of global_kv_heads");
  if (2 * c.global_rope_angles > c.global_rope_dims())
    throw bad("global_rope_angles exceeds half the global layers' head_dim");
  if (c.global_rope_theta > 0.f && c.global_rope_theta < 1e-3f) throw bad("global_rope_theta must be 0 or at least 1e-3");
  if (c.global_rope() && c.rope_scaling != RopeScaling::None)
    throw bad("global layers with a rope of their own (global_head_dim, global_rope_theta, global_rope_angles) "
              "do not combine with rope_scaling");
  if (c.rotary_dim) throw bad("rotary_dim does not combine with the global_* fields");
}

// Gated DeltaNet layers: every width given, heads that divide, a state that fits an int64 product
// and the runtime's scratch, and no feature the linear layers would silently skip.
void check_linear(const ModelConfig& c) {
  const bool widths = c.linear_conv_kernel || c.linear_key_heads || c.linear_value_heads || c.linear_key_head_dim ||
                      c.linear_value_head_dim;
  if (!c.has_linear()) {
    if (widths) throw bad("linear_* widths describe linear-attention layers: linear_layers names none");
    return;
  }
  check_layer_list(c, "linear_layers", c.linear_layers);
  if ((int)c.linear_layers.size() == c.n_layers) throw bad("every layer is linear attention: no layer attends");
  if (c.linear_conv_kernel < 1 || !c.linear_key_heads || !c.linear_value_heads || !c.linear_key_head_dim ||
      !c.linear_value_head_dim)
    throw bad("linear attention needs linear_conv_kernel, linear_key_heads, linear_value_heads, "
              "linear_key_head_dim and linear_value_head_dim");
  if (c.linear_value_heads % c.linear_key_heads) throw bad("linear_value_heads is not a multiple of linear_key_heads");
  // (each factor is at most 4096, so the products below are exact in int64)
  if (c.linear_conv_dim() > (1 << 20) || c.linear_recurrent_state() > (int64_t(1) << 28))
    throw bad("linear attention's widths are too large (" + std::to_string(c.linear_conv_dim()) + " convolved channels, " +
              std::to_string(c.linear_recurrent_state()) + " state values per layer)");
  if (c.latent() || c.sliding_window || c.attention_sinks || c.sandwich_norms)
    throw bad("linear attention does not combine with latent attention, sliding windows, sinks or sandwich norms");
}

// Multimodal positions and the vision tower: whole widths, sections that cover the rotary pairs,
// DeepStack layers the tower and the language model both have, token ids in the vocabulary.
void check_vision(const ModelConfig& c) {
  if (c.mrope()) {
    if (c.mrope_sections.size() != 3) throw bad("mrope_sections must give 3 sections (time, height, width)");
    if (c.mrope_sections[0] + c.mrope_sections[1] + c.mrope_sections[2] != c.rope_dims() / 2)
      throw bad("mrope_sections must sum to the rotary pairs of a head (" + std::to_string(c.rope_dims() / 2) + ")");
    if (c.latent() || c.global_rope() || c.rope_scaling != RopeScaling::None)
      throw bad("mrope_sections do not combine with latent attention, global layers' rope or rope_scaling");
  }
  for (int id : {c.image_token_id, c.vision_start_token_id, c.vision_end_token_id})
    if (id >= c.vocab) throw bad("an image token id (" + std::to_string(id) + ") is outside the vocabulary");
  const bool widths = c.vision_hidden || c.vision_intermediate || c.vision_heads || c.vision_patch_size ||
                      c.vision_temporal_patch || c.vision_merge || c.vision_position_side ||
                      !c.vision_deepstack_layers.empty();
  if (!c.has_vision()) {
    if (widths) throw bad("vision_* fields describe a vision tower: vision_depth is 0");
    return;
  }
  if (!c.vision_hidden || !c.vision_intermediate || !c.vision_heads || !c.vision_patch_size ||
      !c.vision_temporal_patch || !c.vision_merge || !c.vision_position_side)
    throw bad("a vision tower needs vision_hidden, vision_intermediate, vision_heads, vision_patch_size, "
              "vision_temporal_patch, vision_merge and vision_position_side");
  if (c.vision_hidden % c.vision_heads || c.vision_head_dim() % 4)
    throw bad("vision_hidden must split into vision_heads heads of a multiple of 4 (two rotary axes)");
  if (!c.mrope() || c.image_token_id < 0)
    throw bad("a vision tower needs mrope_sections and an image_token_id");
  for (size_t i = 0; i < c.vision_deepstack_layers.size(); ++i) {
    if (c.vision_deepstack_layers[i] >= c.vision_depth) throw bad("vision_deepstack_layers holds a block the tower lacks");
    if (i && c.vision_deepstack_layers[i] <= c.vision_deepstack_layers[i - 1])
      throw bad("vision_deepstack_layers must be ascending, without repeats");
  }
  if (c.n_deepstack() > c.n_layers) throw bad("more DeepStack layers than language layers to add them after");
  if (c.embedding_scale != 1.f) throw bad("a vision tower does not combine with embedding_scale");
}

// Merged experts: every router output of a MoE layer reaches an expert, every expert is reached.
void check_expert_map(const ModelConfig& c) {
  if (!c.router_experts) {
    if (!c.expert_map.empty()) throw bad("expert_map is given without router_experts");
    return;
  }
  if (c.router_experts < c.n_experts) throw bad("router_experts is less than n_experts");
  if (c.expert_map.size() != (size_t)c.n_layers * c.router_experts)
    throw bad("expert_map must hold n_layers x router_experts entries");
  for (int l = 0; l < c.n_layers; ++l) {
    const int64_t* map = c.expert_map_of(l);
    std::vector<bool> reached(c.n_experts, false);
    for (int j = 0; j < c.router_experts; ++j) {
      if (c.is_dense(l) != (map[j] < 0) || map[j] >= c.n_experts)
        throw bad("expert_map of layer " + std::to_string(l) + " must name experts 0-" +
                  std::to_string(c.n_experts - 1) + (c.is_dense(l) ? " (-1: a dense layer)" : ""));
      if (map[j] >= 0) reached[map[j]] = true;
    }
    if (!c.is_dense(l) && std::find(reached.begin(), reached.end(), false) != reached.end())
      throw bad("expert_map of layer " + std::to_string(l) + " leaves an expert no router output reaches");
  }
}

// Low-rank corrections: only of merged experts; every correction of a layer named by one router output.
void check_expert_delta(const ModelConfig& c) {
  if (!c.low_rank) {
    if (!c.expert_delta.empty()) throw bad("expert_delta is given without low_rank");
    return;
  }
  if (!c.router_experts) throw bad("low_rank corrections need merged experts (router_experts and expert_map)");
  if (c.low_rank >= std::min(c.hidden, c.expert_intermediate))
    throw bad("low_rank must be less than hidden and expert_intermediate");
  if (c.expert_delta.size() != (size_t)c.n_layers * c.router_experts)
    throw bad("expert_delta must hold n_layers x router_experts entries");
  for (int l = 0; l < c.n_layers; ++l) {
    const int64_t* delta = c.expert_delta_of(l);
    const int n = c.n_deltas(l);
    if (!c.is_dense(l) && n == 0)
      throw bad("expert_delta of layer " + std::to_string(l) +
                " names no correction (low_rank models correct every MoE layer)");
    std::vector<bool> named(n, false);
    for (int j = 0; j < c.router_experts; ++j) {
      if (delta[j] < 0) continue;
      if (c.is_dense(l) || delta[j] >= n || named[delta[j]])
        throw bad("expert_delta of layer " + std::to_string(l) + " must name each of its corrections 0-" +
                  std::to_string(n - 1) + " once" + (c.is_dense(l) ? " (-1: a dense layer)" : ""));
      named[delta[j]] = true;
    }
  }
}

}  // namespace

int ModelConfig::n_deltas(int l) const {
  const int64_t* delta = expert_delta_of(l);
  if (!delta) return 0;
  return (int)std::count_if(delta, delta + router_experts, [](int64_t d) { return d >= 0; });
}

namespace {

// What no single field's bounds can say.
void check_relations(const ModelConfig& c) {
  if (c.top_k > c.router_width())
    throw bad("top_k " + std::to_string(c.top_k) + " exceeds " + (c.router_experts ? "router_experts " : "n_experts ") +
              std::to_string(c.router_width()));
  check_expert_map(c);
  check_expert_delta(c);
  if (c.n_heads % c.n_kv_heads) throw bad("n_heads is not a multiple of n_kv_heads");
  if (c.head_dim % 2) throw bad("head_dim must be even for rotary embeddings");
  if (c.shared_gate && !c.shared_intermediate) throw bad("shared_gate is set without a shared expert");
  const bool stretched = c.rope_scaling == RopeScaling::Yarn || c.rope_scaling == RopeScaling::Dynamic;
  if (stretched && !c.rope_original_max_position)
    throw bad("rope_scaling " + std::string(c.rope_scaling == RopeScaling::Yarn ? "yarn" : "dynamic") +
              " needs rope_original_max_position");
  if (c.rope_scaling == RopeScaling::Dynamic && c.rope_dims() <= 2)
    throw bad("dynamic rope scaling needs more than 2 rotating dims per head");
  if (!c.sliding_layers.empty() && !c.sliding_window) throw bad("sliding_layers are given without a sliding_window");
  if (c.sliding_window && c.sliding_layers.empty()) throw bad("sliding_window is given without sliding_layers");
  if (c.sliding_window > c.max_position)
    throw bad("sliding_window " + std::to_string(c.sliding_window) + " exceeds max_position " +
              std::to_string(c.max_position));
  check_layer_list(c, "sliding_layers", c.sliding_layers);
  check_layer_list(c, "dense_layers", c.dense_layers);
  if (!c.dense_layers.empty() != (c.dense_intermediate > 0))
    throw bad("dense_layers and dense_intermediate must be given together");
  if (c.n_moe_layers() < 1) throw bad("every layer is dense: no layer has experts");
  if (c.router_width() % c.n_group)
    throw bad("n_group " + std::to_string(c.n_group) + " does not divide " +
              (c.router_experts ? "router_experts" : "n_experts"));
  if (c.topk_group > c.n_group) throw bad("topk_group exceeds n_group");
  if (c.n_group > 1 && c.routing == Routing::TopKSoftmax) throw bad("expert groups need softmax or sigmoid routing");
  if (c.n_group > 1 && (int64_t)c.topk_group * (c.router_width() / c.n_group) < c.top_k)
    throw bad("the topk_group best groups hold fewer than top_k experts");
  if (c.router_correction_bias && c.routing != Routing::Sigmoid)
    throw bad("router_correction_bias needs sigmoid routing");
  if (c.rotary_dim % 2 || c.rotary_dim > c.head_dim) throw bad("rotary_dim must be even and at most head_dim");
  check_latent(c);
  check_global(c);
  check_linear(c);
  check_vision(c);
  if (c.attn_output_gate && c.latent()) throw bad("attn_output_gate does not combine with latent attention");
  if (c.expert_norms && !c.shared_intermediate) throw bad("expert_norms needs a shared MLP (shared_intermediate)");
  // (the shared MLP's output must not reach the residual stream the router and experts read)
  if (c.expert_norms && !c.sandwich_norms) throw bad("expert_norms needs sandwich_norms");
  if (c.expert_norms && c.shared_gate) throw bad("expert_norms does not combine with shared_gate");
  for (int64_t id : c.eos_token_ids)
    if (id >= c.vocab) throw bad("eos_token_ids holds " + std::to_string(id) + ", outside the vocabulary");
}

}  // namespace

ModelConfig config_from_values(const Values& values) {
  ModelConfig c;
  ValuesReader<FormatError> reader(values, kWhat);
  visit_fields(c, reader);
  if (reader.used() != values.size())
    refuse_unknown<FormatError>(values, config_to_values(c), kWhat, " (a container from a newer edgemoe? upgrade edgemoe)");
  check_relations(c);
  return c;
}

Values config_to_values(const ModelConfig& c) {
  ValuesWriter writer;
  visit_fields(c, writer);
  return writer.values;
}

Values config_with_defaults(const ModelConfig& c, const Values& given) {
  Values all = config_to_values(c);
  for (const auto& kv : given) all[kv.first] = kv.second;
  return all;
}

std::string layer_kind(const ModelConfig& c, int layer) {
  std::string attention = c.is_linear(layer) ? "Gated DeltaNet linear attention"
                          : c.latent() ? "latent attention (" + std::to_string(c.kv_lora_rank) + " + " +
                                           std::to_string(c.qk_rope_head_dim) + " cached per position)"
                          : c.is_sliding(layer)
                              ? "sliding-window attention (" + std::to_string(c.sliding_window) + ")"
                              : "full attention";
  if (c.is_global(layer) && (c.global_head_dim || c.global_kv_heads))
    attention += " (" + std::to_string(c.kv_heads_of(layer)) + " KV heads of " + std::to_string(c.head_dim_of(layer)) +
                 (c.has_wv(layer) ? "" : ", values from keys") + ")";
  if (c.attention_sinks) attention += " with sinks";
  if (c.attn_output_gate && !c.is_linear(layer)) attention = "gated " + attention;
  const std::string shared = c.expert_norms ? " + MLP (" + std::to_string(c.shared_intermediate) + ")" : "";
  return attention + (c.is_dense(layer) ? " + dense MLP (" + std::to_string(c.dense_intermediate) + ")"
                                        : shared + " + MoE");
}

void check_config(const ModelConfig& c) { config_from_values(config_to_values(c)); }

}  // namespace edgemoe
