#include "engine.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <stdexcept>

#include "../common/errors.h"
#include "memory_plan.h"

namespace edgemoe {

Engine::Engine(const Container& container, const EngineOptions& opt)
    : cfg_(container.config),
      opt_(opt),
      experts_(container.experts),
      low_bit_experts_(container.low_bit_experts),
      first_moe_layer_(cfg_.next_moe_layer(-1)) {
  if (opt.n_slots < 1) throw BudgetError("the expert cache needs at least one slot");
  if (opt.ctx_size < 1 || opt.max_batch < 1 || opt.threads < 1)
    throw std::invalid_argument("ctx_size, max_batch and threads must be positive");
  std::vector<std::vector<BlobRef>> blobs = store_blob_table(container, opt);
  const Section& r = container.resident;
  resident_ = std::make_unique<ResidentSection>(container.path, r.offset, r.size, resident_bytes(container, opt),
                                                r.crc32, opt.verify_checksums);
  bind_weights(container.tensors);
  store_ = std::make_unique<ExpertStore>(container.path, std::move(blobs), (size_t)opt.n_slots, store_options(opt));
  if (!opt_.profile.empty()) {
    const RoutingProfile& p = opt_.profile;
    // width is the top-k the profile recorded: the stats predictor reads that many of a token's
    // chosen experts, so it must be the model's top_k.
    if (p.n_layers != cfg_.n_layers || p.n_experts != cfg_.n_experts || p.vocab != cfg_.vocab || p.width != cfg_.top_k ||
        p.freq.size() != (size_t)p.n_layers * p.n_experts ||
        p.next_layer.size() != (size_t)(p.n_layers - 1) * p.n_experts * p.n_experts ||
        p.token_experts.size() != (size_t)p.vocab * p.n_layers * p.width ||
        p.token_shares.size() != p.token_experts.size())
      throw FormatError("the routing profile does not match the model; run `edgemoe profile` again");
    for (int32_t e : p.token_experts)
      if (e < -1 || e >= cfg_.n_experts) throw FormatError("the routing profile names an expert that does not exist");
    for (int64_t l : cfg_.dense_layers)  // a dense layer has no experts to prefetch
      for (int64_t t = 0; t < p.vocab; ++t)
        for (int r = 0; r < p.width; ++r)
          if (p.token_experts[((size_t)t * p.n_layers + l) * p.width + r] != -1)
            throw FormatError("the routing profile names experts of dense layer " + std::to_string(l));
    // The profile's activation shares count as if this many tokens had been seen already.
    constexpr double kProfilePriorTokens = 100.0;
    std::vector<std::vector<double>> shares(cfg_.n_layers, std::vector<double>(cfg_.n_experts));
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (int e = 0; e < cfg_.n_experts; ++e) shares[l][e] = p.freq[(size_t)l * cfg_.n_experts + e];
    store_->seed_frequencies(shares, kProfilePriorTokens);
  }
  predictor_ = make_predictor(opt_.predictor, cfg_, weights_, opt_.profile);
  // The cache policies were seeded above; unless the predictor reads it, the profile (per-token
  // tables of the vocabulary times the layers times top-k, memory outside the plan) goes.
  if (!predictor_reads_profile(opt_.predictor.kind)) opt_.profile = RoutingProfile{};
  pool_ = std::make_unique<ThreadPool>(opt.threads);
  transformer_ = std::make_unique<Transformer>(cfg_, weights_, *this, *pool_, opt.ctx_size, opt.max_batch,
                                               opt.kv_f16, opt.state_checkpoints);
  transformer_->set_observer(this);
  if (cfg_.has_vision() && opt_.vision) vision_ = std::make_unique<VisionTower>(cfg_, weights_.vision, *pool_);
  transformer_->set_skip_missed_below(opt_.skip_missed_below);
  transformer_->set_low_bit_missed_below(opt_.low_bit_missed_below);
  if (opt_.active_experts > cfg_.top_k)
    throw std::invalid_argument("active_experts must be at most the model's top_k (" + std::to_string(cfg_.top_k) + ")");
  transformer_->set_active_experts(opt_.active_experts);
  transformer_->set_expert_mask(ExpertMask(cfg_, opt_.disabled_experts));
}

void Engine::bind_weights(const std::vector<TensorEntry>& tensors) {
  std::map<std::string, const TensorEntry*> by_name;
  for (const TensorEntry& t : tensors) by_name[t.name] = &t;

  // Look up a tensor and check it has the shape this config uses (the container reader
  // has checked that its type, size and offset are consistent and inside the section).
  auto get = [&](const std::string& name, int64_t rows, int64_t cols, bool f32_only) -> Tensor {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw FormatError("container lacks resident tensor " + name);
    const TensorEntry& e = *it->second;
    const QType t = e.type;
    if (e.rows != rows || e.cols != cols)
      throw FormatError("resident tensor " + name + " has shape [" + std::to_string(e.rows) + ", " +
                        std::to_string(e.cols) + "], expected [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    if (f32_only && t != QType::F32) throw FormatError("resident tensor " + name + " must be f32");
    if (e.offset + e.nbytes > resident_->size())
      throw FormatError("resident tensor " + name + " lies in the part of the section not loaded");
    return Tensor{t, rows, cols, resident_->data() + e.offset};
  };

  const int H = cfg_.hidden, V = cfg_.vocab;
  // A resident gated MLP (a dense layer's, a shared expert's): gate, up and down of one type.
  auto gated_mlp = [&](const std::string& p, const std::array<const char*, 3>& names, int width, const char* what,
                       Tensor& gate, Tensor& up, Tensor& down) {
    gate = get(p + names[0], width, H, false);
    up = get(p + names[1], width, H, false);
    down = get(p + names[2], H, width, false);
    if (up.type != gate.type || down.type != gate.type)
      throw FormatError(std::string(what) + " projections of " + p.substr(0, p.size() - 1) + " must share one type");
  };
  weights_.tok_embeddings = get("tok_embeddings", V, H, false);
  weights_.norm = get("norm", 1, H, true);
  weights_.output = cfg_.tie_embeddings ? weights_.tok_embeddings : get("output", V, H, false);
  weights_.layers.resize(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    LayerWeights& L = weights_.layers[l];
    const int qd = cfg_.q_dim(l), kvd = cfg_.kv_dim(l), hd = cfg_.head_dim_of(l);
    L.attn_norm = get(p + "attn_norm", 1, H, true);
    if (cfg_.latent()) {
      const int heads = cfg_.n_heads, R = cfg_.kv_lora_rank;
      if (cfg_.q_lora_rank) {
        L.wq_a = get(p + "wq_a", cfg_.q_lora_rank, H, false);
        L.q_a_norm = get(p + "q_a_norm", 1, cfg_.q_lora_rank, true);
        L.wq_b = get(p + "wq_b", qd, cfg_.q_lora_rank, false);
      } else {
        L.wq = get(p + "wq", qd, H, false);
      }
      L.wkv_a = get(p + "wkv_a", cfg_.kv_k_width(l), H, false);
      L.kv_a_norm = get(p + "kv_a_norm", 1, R, true);
      L.wk_b = get(p + "wk_b", (int64_t)heads * R, cfg_.qk_nope_head_dim(), false);
      L.wv_b = get(p + "wv_b", (int64_t)heads * cfg_.v_head_dim, R, false);
    } else if (cfg_.is_linear(l)) {
      const int64_t Nv = cfg_.linear_value_heads, VD = cfg_.linear_value_dim();
      L.lin_qkv = get(p + "lin_qkv", cfg_.linear_conv_dim(), H, false);
      L.lin_z = get(p + "lin_z", VD, H, false);
      L.lin_b = get(p + "lin_b", Nv, H, false);
      L.lin_a = get(p + "lin_a", Nv, H, false);
      L.lin_conv = get(p + "lin_conv", cfg_.linear_conv_dim(), cfg_.linear_conv_kernel, true);
      L.lin_dt_bias = get(p + "lin_dt_bias", 1, Nv, true);
      L.lin_decay_rate = get(p + "lin_decay_rate", 1, Nv, true);
      L.lin_norm = get(p + "lin_norm", 1, cfg_.linear_value_head_dim, true);
      L.lin_out = get(p + "lin_out", H, VD, false);
    } else {
      L.wq = get(p + "wq", qd, H, false);
      L.wk = get(p + "wk", kvd, H, false);
      if (cfg_.has_wv(l)) L.wv = get(p + "wv", kvd, H, false);
      if (cfg_.attn_output_gate) L.wq_gate = get(p + "wq_gate", qd, H, false);
    }
    if (!cfg_.is_linear(l)) L.wo = get(p + "wo", H, cfg_.attn_out_dim(l), false);
    L.ffn_norm = get(p + "ffn_norm", 1, H, true);
    if (cfg_.sandwich_norms) {
      L.post_attn_norm = get(p + "post_attn_norm", 1, H, true);
      L.post_ffn_norm = get(p + "post_ffn_norm", 1, H, true);
    }
    if (cfg_.layer_output_scale) L.layer_scale = get(p + "layer_scale", 1, 1, true);
    if (cfg_.qkv_bias && !cfg_.is_linear(l)) {
      L.bq = get(p + "bq", 1, qd, true);
      L.bk = get(p + "bk", 1, kvd, true);
      if (cfg_.has_wv(l)) L.bv = get(p + "bv", 1, kvd, true);
    }
    if (cfg_.o_bias && !cfg_.is_linear(l)) L.bo = get(p + "bo", 1, H, true);
    if (cfg_.attention_sinks) L.sinks = get(p + "sinks", 1, cfg_.n_heads, true);
    if (cfg_.is_linear(l)) {  // no q/k norms: the linear layers l2-normalise theirs
    } else if (cfg_.qk_norm == QKNorm::Head) {
      L.q_norm = get(p + "q_norm", 1, hd, true);
      L.k_norm = get(p + "k_norm", 1, hd, true);
    } else if (cfg_.qk_norm == QKNorm::Full) {
      L.q_norm = get(p + "q_norm", 1, qd, true);
      L.k_norm = get(p + "k_norm", 1, kvd, true);
    }
    if (cfg_.is_dense(l)) {
      gated_mlp(p, {"dense_gate", "dense_up", "dense_down"}, cfg_.dense_intermediate, "dense MLP", L.dense_gate,
                L.dense_up, L.dense_down);
      continue;
    }
    const int R = cfg_.router_width();
    L.router = get(p + "router", R, H, true);
    if (cfg_.router_bias) L.router_bias = get(p + "router_bias", 1, R, true);
    if (cfg_.router_expert_scale) L.router_expert_scale = get(p + "router_expert_scale", 1, R, true);
    if (cfg_.expert_norms) {
      L.router_norm = get(p + "router_norm", 1, H, true);
      L.ffn_norm_2 = get(p + "ffn_norm_2", 1, H, true);
      L.post_ffn_norm_1 = get(p + "post_ffn_norm_1", 1, H, true);
      L.post_ffn_norm_2 = get(p + "post_ffn_norm_2", 1, H, true);
    }
    if (cfg_.router_correction_bias)
      L.router_correction_bias = get(p + "router_correction_bias", 1, R, true);
    if (cfg_.expert_bias) {
      const int E = cfg_.n_experts, I = cfg_.expert_intermediate;
      L.expert_gate_bias = get(p + "expert_gate_bias", E, I, true);
      L.expert_up_bias = get(p + "expert_up_bias", E, I, true);
      L.expert_down_bias = get(p + "expert_down_bias", E, H, true);
    }
    if (cfg_.low_rank) {
      // Correction d of a projection [out, in]: a rows [d * out, (d + 1) * out), b rows [d * R, (d + 1) * R).
      const int64_t n = cfg_.n_deltas(l), R = cfg_.low_rank, I = cfg_.expert_intermediate;
      auto factors = [&](const char* name, int64_t out, int64_t in) {
        LowRankFactors f{get(p + "delta_" + name + "_a", n * out, R, false),
                         get(p + "delta_" + name + "_b", n * R, in, false)};
        for (const Tensor* t : {&f.a, &f.b})
          if (t->type != QType::F32 && t->type != QType::F16)
            throw FormatError("resident tensor " + p + "delta_" + name + " factors must be f32 or f16");
        return f;
      };
      L.deltas = {factors("gate", I, H), factors("up", I, H), factors("down", H, I)};
    }
    if (cfg_.shared_intermediate) {
      gated_mlp(p, {"shared_gate_proj", "shared_up_proj", "shared_down_proj"}, cfg_.shared_intermediate,
                "shared expert", L.shared_gate_proj, L.shared_up_proj, L.shared_down_proj);
      if (cfg_.shared_gate) L.shared_expert_gate = get(p + "shared_expert_gate", 1, H, true);
    }
  }
  if (opt_.vision) weights_.vision = bind_vision_weights(cfg_, get);
}

ExpertView Engine::acquire(int layer, int expert) {
  const uint8_t* blob = store_->acquire(layer, expert);
  const int E = cfg_.n_experts;  // ids from E on are the low-bit copies (store_blob_table)
  const ExpertEntry& x = expert < E ? experts_[layer][expert] : low_bit_experts_[layer][expert - E];
  return ExpertView{x.type, blob + x.parts[0].offset, blob + x.parts[1].offset, blob + x.parts[2].offset};
}

void Engine::release(int layer, int expert) { store_->release(layer, expert); }

bool Engine::is_cached(int layer, int expert) const { return store_->is_cached(layer, expert); }

void Engine::read_ahead(int layer, const int* experts, size_t n) { store_->read_ahead(layer, experts, n); }

int Engine::read_lanes() const { return store_->io_workers(); }

void Engine::check_tokens(const int32_t* tokens, int64_t n, bool from_empty) const {
  if (n < 1) throw std::invalid_argument("no tokens to evaluate");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab)
      throw std::out_of_range("token id " + std::to_string(tokens[i]) + " is outside the vocabulary of " +
                              std::to_string(cfg_.vocab));
  const int64_t past = from_empty ? 0 : transformer_->n_past();
  if (past + n > transformer_->ctx_size())
    throw std::length_error(std::to_string(past + n) + " tokens exceed the context size of " +
                            std::to_string(transformer_->ctx_size()) + "; load the model with a larger ctx_size");
}

void Engine::check_images(const int32_t* tokens, int64_t n, const std::vector<ImageFeatures>& images) const {
  if (!images.empty()) require_vision();
  int64_t covered = 0;  // tokens before here are text or belong to an image already checked
  for (const ImageFeatures& image : images) {
    if (image.grid_h < 1 || image.grid_w < 1 || !image.rows || image.first < covered || image.first > n ||
        image.count() > n - image.first)
      throw std::invalid_argument("images must lie inside the tokens, in order and without overlapping");
    for (int64_t i = image.first; i < image.first + image.count(); ++i)
      if (tokens[i] != cfg_.image_token_id)
        throw std::invalid_argument("an image's features must stand in for image tokens (" +
                                    std::to_string(cfg_.image_token_id) + "); token " + std::to_string(i) + " is " +
                                    std::to_string(tokens[i]));
    covered = image.first + image.count();
  }
}

void Engine::require_vision() const {
  if (!vision_)
    throw std::invalid_argument(cfg_.has_vision() ? "this engine was loaded without its vision tower (vision off)"
                                                  : "this model has no vision tower: it takes no images");
}

void Engine::encode_image(const float* pixels, int grid_h, int grid_w, float* out, StopFlags stop) {
  require_vision();
  // (the memory plan counted one image of max_image_pixels: a larger one would break its promise)
  if ((int64_t)grid_h * grid_w > VisionTower::max_patches(cfg_, opt_.max_image_pixels))
    throw std::invalid_argument("an image of " + std::to_string(grid_h) + "x" + std::to_string(grid_w) +
                                " patches exceeds max_image_pixels (" + std::to_string(opt_.max_image_pixels) + ")");
  std::lock_guard<std::mutex> lock(run_mu_);  // the pool runs one pass at a time
  vision_->encode(pixels, grid_h, grid_w, out, stop);
}

void Engine::run(const int32_t* tokens, int64_t n, float* out, bool all_logits, StopFlags stop,
                 const std::vector<ImageFeatures>& images) {
  const auto t0 = std::chrono::steady_clock::now();
  if (tracing_) {
    trace_base_ = trace_.positions.size();
    const int64_t pos0 = transformer_->n_past();
    const size_t per_token = (size_t)cfg_.n_layers * cfg_.top_k;
    for (int64_t i = 0; i < n; ++i) trace_.positions.push_back(pos0 + i);
    trace_.experts.resize(trace_.positions.size() * per_token, -1);
    trace_.weights.resize(trace_.positions.size() * per_token, 0.f);
    if (trace_hidden_) trace_.hidden.resize(trace_.positions.size() * cfg_.n_layers * cfg_.hidden, 0.f);
    record_predictions(token_guesses_);
  }
  token_guesses_.clear();
  const StoreStats before = store_->stats();
  const int64_t pos0 = transformer_->n_past();
  try {
    transformer_->forward(tokens, n, out, all_logits, stop, images);
  } catch (...) {
    // Interrupted, or a read failed: the context keeps the batches that
    // completed, and so does the trace (rows of tokens that never ran would
    // read as routed to expert -1, and come back when the tokens are redone).
    // (a hybrid model may go back before pos0, to a state checkpoint: none of this call's rows stay)
    if (tracing_) trim_trace(trace_base_ + (size_t)std::max<int64_t>(0, transformer_->n_past() - pos0));
    throw;
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const StoreStats after = store_->stats();
  compute_s_ += wall - (after.io_wait_s - before.io_wait_s) - (after.cache_s - before.cache_s);
  tokens_ += (uint64_t)n;
}

void Engine::trim_trace(size_t rows) {
  if (rows >= trace_.positions.size()) return;
  const size_t per_token = (size_t)cfg_.n_layers * cfg_.top_k;
  trace_.positions.resize(rows);
  trace_.experts.resize(rows * per_token);
  trace_.weights.resize(rows * per_token);
  if (!trace_.hidden.empty()) trace_.hidden.resize(rows * cfg_.n_layers * cfg_.hidden);
  std::vector<int32_t> kept;
  for (size_t i = 0; i + 2 < trace_.predicted.size(); i += 3)
    if ((size_t)trace_.predicted[i] < rows) kept.insert(kept.end(), &trace_.predicted[i], &trace_.predicted[i] + 3);
  trace_.predicted.swap(kept);
}

void Engine::logits(const int32_t* tokens, int64_t n, float* out, StopFlags stop,
                    const std::vector<ImageFeatures>& images) {
  std::lock_guard<std::mutex> lock(run_mu_);
  check_tokens(tokens, n, true);
  check_images(tokens, n, images);
  transformer_->reset();
  run(tokens, n, out, true, stop, images);
}

void Engine::eval(const int32_t* tokens, int64_t n, float* out, StopFlags stop, bool all_logits, bool cached_only,
                  const std::vector<ImageFeatures>& images) {
  std::lock_guard<std::mutex> lock(run_mu_);
  check_tokens(tokens, n, false);
  check_images(tokens, n, images);
  // The pass's mode (the transformer holds it; on_routing reads it there), undone however it ends.
  struct CachedOnly {
    Transformer& t;
    CachedOnly(Transformer& transformer, bool on) : t(transformer) { t.set_cached_only(on); }
    ~CachedOnly() { t.set_cached_only(false); }
  } mode(*transformer_, cached_only);
  if (predictor_ && n == 1 && !cached_only) {  // a decode step: the token alone may already predict its experts
    token_guesses_.clear();
    predictor_->on_token(tokens[0], &token_guesses_);
    drop_masked(token_guesses_);
    const int64_t base = (step_ + 1) * cfg_.n_layers;  // the coming pass through the layers
    for (const auto& g : token_guesses_) store_->prefetch(g.first, g.second, base + g.first);
  }
  run(tokens, n, out, all_logits, stop, images);
}

void Engine::reset() {
  std::lock_guard<std::mutex> lock(run_mu_);
  transformer_->reset();
}

void Engine::on_routing(int layer, int64_t pos0, int64_t n, const int* ids, const float* weights,
                        const float* hidden) {
  if (layer == first_moe_layer_) ++step_;
  const int64_t base = step_ * cfg_.n_layers;
  store_->set_cursor(base + layer, layer);
  // Prefetch while this layer's experts compute. Decode only: a prefill batch
  // reads each expert it needs once anyway, grouped by expert.
  // (This layer's own misses are read side by side by the MoE block: read_ahead.)
  if (predictor_ && n == 1 && !transformer_->cached_only()) {
    guesses_.clear();
    predictor_->predict(layer, hidden, ids, &guesses_);
    drop_masked(guesses_);
    for (const auto& g : guesses_) store_->prefetch(g.first, g.second, base + g.first);
    if (tracing_)
      record_predictions(guesses_);
  }
  if (!tracing_) return;
  // pos0 is relative to the whole context; the trace rows of this forward call start at trace_base_.
  const int64_t first_pos = trace_.positions[trace_base_];
  const int K = cfg_.top_k;
  for (int64_t t = 0; t < n; ++t) {
    const size_t row = trace_base_ + (size_t)(pos0 - first_pos + t);
    const size_t at = (row * cfg_.n_layers + layer) * K;
    for (int r = 0; r < K; ++r) {
      trace_.experts[at + r] = ids[t * K + r];
      trace_.weights[at + r] = weights[t * K + r];
    }
    if (trace_hidden_)
      std::copy(hidden + t * cfg_.hidden, hidden + (t + 1) * cfg_.hidden,
                trace_.hidden.begin() + (row * cfg_.n_layers + layer) * cfg_.hidden);
  }
}

void Engine::drop_masked(std::vector<std::pair<int, int>>& guesses) const {
  const ExpertMask& mask = transformer_->expert_mask();
  if (mask.empty()) return;
  guesses.erase(std::remove_if(guesses.begin(), guesses.end(),
                               [&](const std::pair<int, int>& g) { return mask.masked(g.first, g.second); }),
                guesses.end());
}

void Engine::record_predictions(const std::vector<std::pair<int, int>>& guesses) {
  for (const auto& g : guesses) trace_.predicted.insert(trace_.predicted.end(), {(int32_t)trace_base_, g.first, g.second});
}

void Engine::set_tracing(bool on, bool with_hidden) {
  std::lock_guard<std::mutex> lock(run_mu_);
  tracing_ = on;
  trace_hidden_ = on && with_hidden;
}

RoutingTrace Engine::take_trace() {
  std::lock_guard<std::mutex> lock(run_mu_);
  RoutingTrace out = std::move(trace_);
  trace_ = RoutingTrace{};
  return out;
}

void Engine::truncate(int64_t n) {
  std::lock_guard<std::mutex> lock(run_mu_);
  transformer_->truncate(n);
}

uint64_t Engine::allocated_bytes() const {
  return ResidentSection::allocated_bytes_for(resident_->size()) + transformer_->allocated_bytes() +
         store_->allocated_bytes();
}

EngineStats Engine::stats() const {
  return EngineStats{store_->stats(), compute_s_, tokens_, transformer_->skipped_choices(),
                     transformer_->low_bit_choices()};
}

void Engine::reset_stats() {
  std::lock_guard<std::mutex> lock(run_mu_);
  store_->reset_stats();
  compute_s_ = 0.0;
  tokens_ = 0;
  transformer_->reset_lossy_counts();
}

}  // namespace edgemoe
