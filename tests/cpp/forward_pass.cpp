// A whole forward pass without Python: opens a container with the runtime's own
// reader (csrc/format/container.h), runs Engine::logits on the token ids of a
// text file and writes the logits as raw float32. Built natively and, with
// Debian's aarch64 cross compiler, for qemu-aarch64, so the NEON build's logits
// can be checked against scalar ones (tests/test_forward_cross.py).
//
//   forward_pass MODEL.emoe TOKENS.txt OUT.f32 [ISA]   (TOKENS.txt: ids separated by spaces;
//                                                     ISA: scalar, avx2, avx512 or neon,
//                                                     default the best available)
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/engine.h"

using namespace edgemoe;

namespace {

void select_isa(const std::string& name) {
  for (Isa isa : available_isas())
    if (name == isa_name(isa)) {
      set_isa(isa);
      return;
    }
  throw std::runtime_error("kernel variant '" + name + "' is not available in this build on this CPU");
}

std::vector<int32_t> read_tokens(const char* path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(std::string("cannot open ") + path);
  std::vector<int32_t> tokens;
  for (int32_t t; in >> t;) tokens.push_back(t);
  if (!in.eof() || tokens.empty()) throw std::runtime_error(std::string(path) + ": expected token ids");
  return tokens;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL.emoe TOKENS.txt OUT.f32 [ISA]\n", argv[0]);
    return 2;
  }
  try {
    if (argc == 5) select_isa(argv[4]);
    const std::vector<int32_t> tokens = read_tokens(argv[2]);
    EngineOptions opt;
    opt.n_slots = 4;  // a small cache: the run reads, evicts and re-reads experts
    opt.threads = 2;
    opt.ctx_size = (int)tokens.size() + 8;
    opt.max_batch = 8;  // several prefill batches
    opt.kv_f16 = false;  // the f32 cache: the tests compare against the extension with kv_cache="f32"
    Engine engine(argv[1], opt);
    const int vocab = engine.config().vocab;
    std::vector<float> logits(tokens.size() * (size_t)vocab);
    engine.logits(tokens.data(), (int64_t)tokens.size(), logits.data());
    std::ofstream out(argv[3], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data()), (std::streamsize)(logits.size() * sizeof(float)));
    std::printf("forward pass: %zu tokens x %d logits, isa %s\n", tokens.size(), vocab, isa_name(current_isa()));
    return out ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "forward_pass: %s\n", e.what());
    return 1;
  }
}
