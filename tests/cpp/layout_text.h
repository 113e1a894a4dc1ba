// The container tables as text, one item per line (written by
// tests/test_forward_cross.py write_layout from the manifest: the same tables
// edgemoe/api.py hands the engine). Read by forward_pass.cpp and the libFuzzer
// target fuzz_engine.cpp, which feeds it hostile text: every malformed or
// oversized item throws std::runtime_error instead of allocating.
//
//   config <key> <value>           (the keys of edgemoe/model_config.py)
//   path <container file>
//   resident <offset> <size> <crc32>
//   tensor <name> <type> <rows> <cols> <offset> <nbytes>
//   expert <layer> <expert> <offset> <size> <crc32> <type> <gate> <up> <down> <stored>
//   tokens <id> <id> ...
#pragma once
#include <cstdint>
#include <istream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/engine.h"

namespace edgemoe_test {

struct LayoutText {
  edgemoe::ModelConfig config;
  edgemoe::ContainerLayout layout;
  std::vector<int32_t> tokens;
};

inline LayoutText parse_layout_text(std::istream& in) {
  using edgemoe::QKNorm;
  constexpr size_t kMaxLayers = 1024, kMaxExperts = 4096, kMaxItems = 1 << 16;
  LayoutText r;
  std::map<std::string, std::string> conf;
  size_t items = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (++items > kMaxItems) throw std::runtime_error("too many lines");
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "config") {
      std::string key, value;
      ls >> key >> value;
      conf[key] = value;
    } else if (kind == "path") {
      ls >> r.layout.path;
    } else if (kind == "resident") {
      ls >> r.layout.resident_offset >> r.layout.resident_size >> r.layout.resident_crc;
    } else if (kind == "tensor") {
      edgemoe::TensorEntry t;
      ls >> t.name >> t.type >> t.rows >> t.cols >> t.offset >> t.nbytes;
      r.layout.tensors.push_back(t);
    } else if (kind == "expert") {
      size_t l = 0, e = 0;
      edgemoe::ExpertEntry x;
      ls >> l >> e >> x.offset >> x.size >> x.crc32 >> x.type >> x.gate >> x.up >> x.down >> x.stored;
      if (l >= kMaxLayers || e >= kMaxExperts) throw std::runtime_error("expert index out of range");
      auto& experts = r.layout.experts;
      if (experts.size() <= l) experts.resize(l + 1);
      if (experts[l].size() != e) throw std::runtime_error("experts out of order");
      experts[l].push_back(x);
    } else if (kind == "tokens") {
      int32_t t;
      while (ls >> t && r.tokens.size() < kMaxItems) r.tokens.push_back(t);
    }
    if (ls.bad()) throw std::runtime_error("unreadable line");
  }
  auto text = [&](const char* k) -> const std::string& {
    auto it = conf.find(k);
    if (it == conf.end()) throw std::runtime_error(std::string("config lacks ") + k);
    return it->second;
  };
  auto num = [&](const char* k) {
    const double v = std::stod(text(k));  // throws std::invalid_argument / std::out_of_range
    if (!(v >= -2e9 && v <= 2e9)) throw std::runtime_error(std::string("config value out of range: ") + k);
    return v;
  };
  auto flag = [&](const char* k) { return text(k) == "1"; };
  edgemoe::ModelConfig& c = r.config;
  c.architecture = text("architecture");
  c.n_layers = (int)num("n_layers");
  c.hidden = (int)num("hidden");
  c.n_heads = (int)num("n_heads");
  c.n_kv_heads = (int)num("n_kv_heads");
  c.head_dim = (int)num("head_dim");
  c.vocab = (int)num("vocab");
  c.n_experts = (int)num("n_experts");
  c.top_k = (int)num("top_k");
  c.expert_intermediate = (int)num("expert_intermediate");
  c.shared_intermediate = (int)num("shared_intermediate");
  c.shared_gate = flag("shared_gate");
  c.qkv_bias = flag("qkv_bias");
  c.norm_topk_prob = flag("norm_topk_prob");
  c.tie_embeddings = flag("tie_embeddings");
  const std::string& qk = text("qk_norm");
  c.qk_norm = qk == "head" ? QKNorm::Head : qk == "full" ? QKNorm::Full : QKNorm::None;
  c.rope_theta = (float)num("rope_theta");
  c.rms_norm_eps = (float)num("rms_norm_eps");
  c.max_position = (int)num("max_position");
  return r;
}

}  // namespace edgemoe_test
