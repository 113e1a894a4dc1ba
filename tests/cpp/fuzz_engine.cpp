// libFuzzer target: the C++ loader and a short forward pass on hostile input,
// without Python's checks in front (the runtime must check for itself).
//
// Input: a layout in layout_text.h's format, a line "@@file", then the bytes
// of the container file the layout describes. A layout line "checksums off"
// turns CRC verification off (a user's speed option), so mutated weights reach
// the kernels, the router and the top-k choice instead of stopping at the CRC; a line "kv f16"
// runs the fp16 KV cache (edgemoe's default) instead of f32. Seeds are real fixture
// containers (tests/test_fuzz_cpp.py). Acceptable outcomes: logits, or one of
// the runtime's exceptions for bad input (FormatError, StorageError,
// BudgetError) or a token id outside the vocabulary; a crash, a sanitizer
// report, an unbounded allocation or any other exception is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/errors.h"
#include "layout_text.h"
#include "model/transformer.h"
#include "runtime/engine.h"

using namespace edgemoe;

namespace {

constexpr size_t kMaxTokens = 64;
// What edgemoe/budget.py would refuse before the engine is built: the fuzzer
// looks for crashes, not for configs that ask for more memory than a budget.
constexpr double kMaxPlanBytes = 256.0 * (1 << 20);

const std::string& scratch_path() {
  static const std::string path = "/tmp/edgemoe-fuzz-engine-" + std::to_string(getpid()) + ".emoe";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t mark = input.find("\n@@file\n");
  if (mark == std::string::npos) return 0;

  edgemoe_test::LayoutText text;
  try {
    std::istringstream layout_in(input.substr(0, mark));
    text = edgemoe_test::parse_layout_text(layout_in);
  } catch (const std::exception&) {
    return 0;  // not a layout: the harness's parser, not the runtime, refused it
  }
  {
    std::ofstream file(scratch_path(), std::ios::binary | std::ios::trunc);
    file.write(input.data() + mark + 8, (std::streamsize)(size - mark - 8));
  }
  text.layout.path = scratch_path();
  if (text.tokens.empty()) text.tokens.push_back(0);
  if (text.tokens.size() > kMaxTokens) text.tokens.resize(kMaxTokens);

  EngineOptions opt;
  opt.n_slots = 2;
  opt.threads = 1;
  opt.ctx_size = (int)text.tokens.size() + 4;
  opt.max_batch = 8;
  opt.predictor.kind = "none";
  const std::string layout_part = input.substr(0, mark + 1);
  opt.verify_checksums = layout_part.find("\nchecksums off\n") == std::string::npos;
  opt.kv_f16 = layout_part.find("\nkv f16\n") != std::string::npos;
  try {
    check_config(text.config);
    const ModelConfig& c = text.config;
    const double plan = (double)Transformer::kv_cache_bytes(c, opt.ctx_size, opt.kv_f16) +
                        (double)Transformer::scratch_bytes(c, opt.ctx_size, opt.max_batch, opt.threads) +
                        4.0 * text.tokens.size() * c.vocab;
    if (plan > kMaxPlanBytes) return 0;
    Engine engine(c, text.layout, opt);
    std::vector<float> logits(text.tokens.size() * (size_t)c.vocab);
    engine.logits(text.tokens.data(), (int64_t)text.tokens.size(), logits.data());
    engine.eval(text.tokens.data(), 1, &logits[0]);  // and one decode step on the same context
  } catch (const EdgeMoEError&) {
  } catch (const std::out_of_range&) {  // token id outside the vocabulary (Engine::check_tokens)
  }
  // Anything else - std::invalid_argument from a kernel's internal guard
  // included - escapes and is reported: the checks above must stop bad input first.
  return 0;
}
