// The forward pass must not depend on what the expert cache says it holds.
//
// Transformer::moe asks ExpertSource::is_cached only to choose an order
// (cached experts first). With a background prefetch, an expert can become
// cached, or be evicted, between two questions. This test drives a tiny f32
// model through expert sources whose answers change from one question to the
// next and checks that every routed expert is computed exactly once per token
// and layer and that the logits are bit-identical to an honest source's.
//
// Built and run by tests/test_moe_cpp.py. Prints "N passed, M failed" last.
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "model/transformer.h"

using namespace edgemoe;

namespace {

int g_failed = 0, g_passed = 0;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// Random f32 weights for a tiny model, kept alive for the Tensors pointing into them.
struct TinyModel {
  ModelConfig cfg;
  std::vector<std::vector<float>> storage;
  ModelWeights w;
  std::vector<std::vector<ExpertView>> experts;  // [layer][expert]

  explicit TinyModel(unsigned seed) {
    cfg.architecture = "test";
    cfg.n_layers = 3;
    cfg.hidden = 64;
    cfg.n_heads = 4;
    cfg.n_kv_heads = 2;
    cfg.head_dim = 16;
    cfg.vocab = 50;
    cfg.n_experts = 6;
    cfg.top_k = 2;
    cfg.expert_intermediate = 32;
    cfg.max_position = 64;
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 0.2f);
    auto tensor = [&](int64_t rows, int64_t cols, bool ones = false) {
      storage.emplace_back((size_t)(rows * cols));
      for (float& v : storage.back()) v = ones ? 1.f : normal(rng);
      return Tensor{QType::F32, rows, cols, reinterpret_cast<const uint8_t*>(storage.back().data())};
    };
    const int H = cfg.hidden, I = cfg.expert_intermediate;
    w.tok_embeddings = tensor(cfg.vocab, H);
    w.norm = tensor(1, H, true);
    w.output = tensor(cfg.vocab, H);
    for (int l = 0; l < cfg.n_layers; ++l) {
      LayerWeights L;
      L.attn_norm = tensor(1, H, true);
      L.wq = tensor(cfg.q_dim(l), H);
      L.wk = tensor(cfg.kv_dim(l), H);
      L.wv = tensor(cfg.kv_dim(l), H);
      L.wo = tensor(H, cfg.q_dim(l));
      L.ffn_norm = tensor(1, H, true);
      L.router = tensor(cfg.n_experts, H);
      w.layers.push_back(L);
      experts.emplace_back();
      for (int e = 0; e < cfg.n_experts; ++e)
        experts.back().push_back(ExpertView{QType::F32, tensor(I, H).data, tensor(I, H).data, tensor(H, I).data});
    }
  }
};

// Hands out the model's experts; is_cached answers according to `mode`.
class ScriptedSource final : public ExpertSource {
 public:
  enum class Mode {
    kNeverCached,  // honest for an empty cache
    kAlternating,  // each question gets the opposite of the previous answer (any expert)
    kFlipsOnSecondQuestion,  // per expert: "no" the first time, "yes" from then on (a prefetch landed)
  };
  ScriptedSource(const TinyModel& m, Mode mode) : m_(m), mode_(mode), asked_(m.cfg.n_layers * m.cfg.n_experts) {}

  ExpertView acquire(int layer, int expert) override {
    ++acquired_[key(layer, expert)];
    return m_.experts[layer][expert];
  }
  void release(int, int) override {}
  bool is_cached(int layer, int expert) const override {
    switch (mode_) {
      case Mode::kNeverCached: return false;
      case Mode::kAlternating: return (toggles_++ % 2) == 1;
      case Mode::kFlipsOnSecondQuestion: return asked_[key(layer, expert)]++ > 0;
    }
    return false;
  }
  // Forget the counts (a new layer or token).
  void start_layer() {
    std::fill(acquired_.begin(), acquired_.end(), 0);
    std::fill(asked_.begin(), asked_.end(), 0);
  }
  std::vector<int> acquired_ = std::vector<int>(64, 0);

 private:
  size_t key(int layer, int expert) const { return (size_t)layer * m_.cfg.n_experts + expert; }
  const TinyModel& m_;
  Mode mode_;
  mutable std::vector<int> asked_;
  mutable int toggles_ = 0;
};

// Checks after each layer's routing (the observer runs before any acquire of
// the layer) that the previous layer acquired each chosen expert exactly once.
class AcquireAudit final : public ForwardObserver {
 public:
  AcquireAudit(ScriptedSource& src, const ModelConfig& cfg) : src_(src), cfg_(cfg) {}
  void on_routing(int layer, int64_t, int64_t n, const int* ids, const float*, const float*) override {
    finish();
    src_.start_layer();
    layer_ = layer;
    chosen_.assign(ids, ids + n * cfg_.top_k);
  }
  // Compare the acquires of the layer last routed with its choices.
  void finish() {
    if (layer_ < 0) return;
    std::vector<int> want(cfg_.n_experts, 0);
    for (int e : chosen_) want[e] = 1;  // one acquire per distinct expert of the batch
    for (int e = 0; e < cfg_.n_experts; ++e)
      if (src_.acquired_[(size_t)layer_ * cfg_.n_experts + e] != want[e]) ++mismatches;
    layer_ = -1;
  }
  int mismatches = 0;

 private:
  ScriptedSource& src_;
  const ModelConfig& cfg_;
  int layer_ = -1;
  std::vector<int> chosen_;
};

// Prefill 5 tokens, then decode 6 one at a time; returns every logit produced.
std::vector<float> run(const TinyModel& m, ScriptedSource::Mode mode, int* mismatches) {
  ThreadPool pool(2);
  ScriptedSource src(m, mode);
  AcquireAudit audit(src, m.cfg);
  Transformer t(m.cfg, m.w, src, pool, 32, 8);
  t.set_observer(&audit);
  const std::vector<int32_t> prompt = {1, 7, 3, 42, 9};
  std::vector<float> all(prompt.size() * m.cfg.vocab);
  t.forward(prompt.data(), (int64_t)prompt.size(), all.data(), true);
  audit.finish();
  for (int32_t tok : {5, 11, 0, 49, 23, 17}) {
    std::vector<float> last(m.cfg.vocab);
    t.forward(&tok, 1, last.data(), false);
    audit.finish();
    all.insert(all.end(), last.begin(), last.end());
  }
  *mismatches = audit.mismatches;
  return all;
}

}  // namespace

int main() {
  for (unsigned seed : {1u, 2u, 3u}) {
    const TinyModel m(seed);
    int bad = 0;
    const std::vector<float> ref = run(m, ScriptedSource::Mode::kNeverCached, &bad);
    check(bad == 0, "seed " + std::to_string(seed) + ": honest source: each chosen expert acquired once");
    for (auto mode : {ScriptedSource::Mode::kAlternating, ScriptedSource::Mode::kFlipsOnSecondQuestion}) {
      const std::string name = "seed " + std::to_string(seed) +
                               (mode == ScriptedSource::Mode::kAlternating ? " alternating" : " flips-on-second");
      const std::vector<float> got = run(m, mode, &bad);
      check(bad == 0, name + ": each chosen expert acquired exactly once per layer (" + std::to_string(bad) +
                          " layer/expert mismatches)");
      check(got.size() == ref.size() && std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) == 0,
            name + ": logits bit-identical to the honest source's");
    }
  }
  std::printf("moe cache-answer tests: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
