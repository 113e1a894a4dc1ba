// A whole forward pass without Python: reads a container's tables from a text
// file (written by tests/test_forward_cross.py from the manifest, the same
// tables edgemoe/api.py hands the engine), runs Engine::logits on the given
// token ids and writes the logits as raw float32. Built natively and, with
// Debian's aarch64 cross compiler, for qemu-aarch64, so the NEON build's
// logits can be checked against the x86-64 ones.
//
//   forward_pass LAYOUT.txt OUT.f32
//
// LAYOUT.txt, one item per line:
//   config <key> <value>           (the keys of edgemoe/model_config.py)
//   path <container file>
//   resident <offset> <size> <crc32>
//   tensor <name> <type> <rows> <cols> <offset> <nbytes>
//   expert <layer> <expert> <offset> <size> <crc32> <type> <gate> <up> <down> <stored>
//   tokens <id> <id> ...
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/engine.h"

using namespace edgemoe;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s LAYOUT.txt OUT.f32\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream in(argv[1]);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[1]);
    std::map<std::string, std::string> conf;
    ContainerLayout layout;
    std::vector<int32_t> tokens;
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string kind;
      ls >> kind;
      if (kind == "config") {
        std::string key, value;
        ls >> key >> value;
        conf[key] = value;
      } else if (kind == "path") {
        ls >> layout.path;
      } else if (kind == "resident") {
        ls >> layout.resident_offset >> layout.resident_size >> layout.resident_crc;
      } else if (kind == "tensor") {
        TensorEntry t;
        ls >> t.name >> t.type >> t.rows >> t.cols >> t.offset >> t.nbytes;
        layout.tensors.push_back(t);
      } else if (kind == "expert") {
        size_t l, e;
        ExpertEntry x;
        ls >> l >> e >> x.offset >> x.size >> x.crc32 >> x.type >> x.gate >> x.up >> x.down >> x.stored;
        if (layout.experts.size() <= l) layout.experts.resize(l + 1);
        if (layout.experts[l].size() != e) throw std::runtime_error("experts out of order");
        layout.experts[l].push_back(x);
      } else if (kind == "tokens") {
        int32_t t;
        while (ls >> t) tokens.push_back(t);
      }
    }
    auto num = [&](const char* k) { return std::stod(conf.at(k)); };
    auto flag = [&](const char* k) { return conf.at(k) == "1"; };
    ModelConfig c;
    c.architecture = conf.at("architecture");
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
    const std::string qk = conf.at("qk_norm");
    c.qk_norm = qk == "head" ? QKNorm::Head : qk == "full" ? QKNorm::Full : QKNorm::None;
    c.rope_theta = (float)num("rope_theta");
    c.rms_norm_eps = (float)num("rms_norm_eps");
    c.max_position = (int)num("max_position");

    EngineOptions opt;
    opt.n_slots = 4;  // a small cache: the run reads, evicts and re-reads experts
    opt.threads = 2;
    opt.ctx_size = (int)tokens.size() + 8;
    opt.max_batch = 8;  // several prefill batches
    opt.policy = CachePolicy::EdgeMoE;
    opt.predictor.kind = "none";
    Engine engine(c, layout, opt);
    std::vector<float> logits(tokens.size() * (size_t)c.vocab);
    engine.logits(tokens.data(), (int64_t)tokens.size(), logits.data());
    std::ofstream out(argv[2], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data()), (std::streamsize)(logits.size() * sizeof(float)));
    std::printf("forward pass: %zu tokens x %d logits, isa %s\n", tokens.size(), c.vocab,
                isa_name(current_isa()));
    return out ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "forward_pass: %s\n", e.what());
    return 1;
  }
}
