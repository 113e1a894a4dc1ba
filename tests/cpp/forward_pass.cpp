// A whole forward pass without Python: reads a container's tables from a text
// file (written by tests/test_forward_cross.py from the manifest, the same
// tables edgemoe/api.py hands the engine), runs Engine::logits on the given
// token ids and writes the logits as raw float32. Built natively and, with
// Debian's aarch64 cross compiler, for qemu-aarch64, so the NEON build's
// logits can be checked against the x86-64 ones.
//
//   forward_pass LAYOUT.txt OUT.f32 [ISA]   (LAYOUT.txt: see layout_text.h; ISA: scalar,
//                                            avx2, avx512 or neon, default the best available)
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "layout_text.h"
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

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s LAYOUT.txt OUT.f32 [ISA]\n", argv[0]);
    return 2;
  }
  try {
    if (argc == 4) select_isa(argv[3]);
    std::ifstream in(argv[1]);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[1]);
    edgemoe_test::LayoutText text = edgemoe_test::parse_layout_text(in);
    const ModelConfig& c = text.config;
    const ContainerLayout& layout = text.layout;
    const std::vector<int32_t>& tokens = text.tokens;

    EngineOptions opt;
    opt.n_slots = 4;  // a small cache: the run reads, evicts and re-reads experts
    opt.threads = 2;
    opt.ctx_size = (int)tokens.size() + 8;
    opt.max_batch = 8;  // several prefill batches
    opt.kv_f16 = false;  // the f32 cache: the tests compare against the extension with kv_cache="f32"
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
