// libFuzzer target: the runtime's container reader, the engine built on what it
// accepts and a short forward pass, on hostile .emoe bytes, with no Python in front.
//
// Input: one line of run settings, a line "@@file", then the bytes of a container
// file. Settings: "tokens ID ID ..." (the ids to evaluate), "checksums off" (a
// user's speed option: mutated weights then reach the kernels, the router and the
// top-k choice instead of stopping at the CRC), "kv f16" (edgemoe's default cache
// instead of f32) and "seal": the harness rewrites the header's, index's and
// manifest's CRCs to match the mutated bytes, so mutations of the index reach its
// parser and the table checks instead of stopping at a checksum. Seeds are real
// fixture containers (tests/test_fuzz_cpp.py). Acceptable outcomes: logits, or
// one of the runtime's exceptions for bad input (FormatError, StorageError,
// BudgetError) or a token id outside the vocabulary; a crash, a sanitizer
// report, an unbounded allocation or any other exception is a finding.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/bounds.h"
#include "common/errors.h"
#include "format/container.h"
#include "runtime/engine.h"
#include "runtime/memory_plan.h"

using namespace edgemoe;

namespace {

constexpr size_t kMaxTokens = 64;
// What edgemoe.load would refuse before the engine is built (no budget holds it): the
// fuzzer looks for crashes, not for configs that ask for more memory than a machine has.
constexpr uint64_t kMaxPlanBytes = 256ull << 20;

const std::string& scratch_path() {
  static const std::string path = "/tmp/edgemoe-fuzz-engine-" + std::to_string(getpid()) + ".emoe";
  return path;
}

uint64_t u64_at(const std::string& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

void put_crc(std::string& b, size_t at, uint32_t crc) { std::memcpy(&b[at], &crc, sizeof crc); }

// Make the header's section CRCs, then its own, match the bytes (where the sections lie in the file).
void seal(std::string& file) {
  if (file.size() < header::kBytes) return;
  const std::pair<size_t, size_t> sections[] = {{header::kIndexOffset, header::kIndexCrc},
                                                {header::kManifestOffset, header::kManifestCrc}};
  for (const auto& s : sections) {
    const uint64_t offset = u64_at(file, s.first), size = u64_at(file, s.first + 8);
    if (range_within(offset, size, file.size())) put_crc(file, s.second, crc32(file.data() + offset, size));
  }
  put_crc(file, header::kHeaderCrc, crc32(file.data(), header::kHeaderCrc));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t mark = input.find("\n@@file\n");
  if (mark == std::string::npos) return 0;
  const std::string settings = "\n" + input.substr(0, mark) + "\n";
  std::string file = input.substr(mark + 8);

  std::vector<int32_t> tokens;
  const size_t at = settings.find("\ntokens ");
  if (at != std::string::npos) {
    std::istringstream in(settings.substr(at + 8, settings.find('\n', at + 1) - at - 8));
    for (int32_t t; tokens.size() < kMaxTokens && in >> t;) tokens.push_back(t);
  }
  if (tokens.empty()) tokens.push_back(0);
  if (settings.find("\nseal\n") != std::string::npos) seal(file);
  {
    std::ofstream out(scratch_path(), std::ios::binary | std::ios::trunc);
    out.write(file.data(), (std::streamsize)file.size());
  }

  EngineOptions opt;
  opt.threads = 1;
  opt.ctx_size = (int)tokens.size() + 4;
  opt.max_batch = 8;
  opt.predictor.kind = "none";
  opt.verify_checksums = settings.find("\nchecksums off\n") == std::string::npos;
  opt.kv_f16 = settings.find("\nkv f16\n") != std::string::npos;
  try {
    const Container container = open_container(scratch_path());
    // a small cache (one layer's experts at least): the run reads, evicts and re-reads experts
    const MemoryPlan plan = plan_memory(container, opt, std::nullopt, std::max(2, container.config.top_k));
    const double logits_bytes = 4.0 * (double)tokens.size() * container.config.vocab;
    if ((double)plan.total_bytes() + logits_bytes > (double)kMaxPlanBytes) return 0;
    opt.n_slots = plan.n_slots;
    Engine engine(container, opt);
    std::vector<float> logits(tokens.size() * (size_t)container.config.vocab);
    engine.logits(tokens.data(), (int64_t)tokens.size(), logits.data());
    engine.eval(tokens.data(), 1, &logits[0]);  // and one decode step on the same context
  } catch (const EdgeMoEError&) {
  } catch (const std::out_of_range&) {  // token id outside the vocabulary (Engine::check_tokens)
  }
  // Anything else - std::invalid_argument from a kernel's internal guard
  // included - escapes and is reported: the checks above must stop bad input first.
  return 0;
}
