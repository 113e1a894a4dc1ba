// The public kernel entry points: forward to the active variant's table.
//
// The active table is one atomic pointer, chosen on first use (best variant
// the build and CPU support) and switchable with set_isa() so tests and
// benchmarks can compare variants in one process.
#include <atomic>
#include <stdexcept>

#include "variants.h"

namespace edgemoe {

const KernelTable* kernel_table(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return scalar_kernels();
    case Isa::Avx2:
      return avx2_kernels();
    case Isa::Avx512:
      return avx512_kernels();
    case Isa::Neon:
      return neon_kernels();
  }
  return nullptr;
}

namespace {

std::atomic<const KernelTable*>& active() {
  static std::atomic<const KernelTable*> table{kernel_table(available_isas().back())};
  return table;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
    case Isa::Neon:
      return "neon";
  }
  return "unknown";
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
    if (kernel_table(isa)) out.push_back(isa);
  return out;
}

bool set_isa(Isa isa) {
  const KernelTable* t = kernel_table(isa);
  if (!t) return false;
  active().store(t, std::memory_order_relaxed);
  return true;
}

Isa current_isa() { return active().load(std::memory_order_relaxed)->isa; }

void quantize_activations(const float* x, int64_t n, int64_t k, BlockQ8A* out) {
  if (k % kGroup != 0) throw std::invalid_argument("quantize_activations: k must be a multiple of 32");
  active().load(std::memory_order_relaxed)->quantize_activations(x, n, k, out);
}

void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) {
  active().load(std::memory_order_relaxed)->to_f16(x, y, n);
}

void attention_scores_f16(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                          float* scores) {
  active().load(std::memory_order_relaxed)->scores_f16(q, k, n_keys, stride, d, scale, scores);
}

void attention_weighted_sum_f16(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                                float* out) {
  active().load(std::memory_order_relaxed)->weighted_sum_f16(p, v, n_keys, stride, d, out);
}

void gated_delta_rule(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x) {
  if (dv > kMaxDeltaRuleDim) throw std::invalid_argument("gated_delta_rule: dv exceeds kMaxDeltaRuleDim");
  active().load(std::memory_order_relaxed)->delta_rule(S, dk, dv, x);
}

void matmul_rows(QType type, const void* W, int64_t k, int64_t r0, int64_t r1, const float* x,
                 const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
  // Cheap guards against caller bugs that would otherwise read out of bounds.
  if (!qtype_supports(type, k)) throw std::invalid_argument("matmul_rows: row length not supported by the weight type");
  if (r0 >= r1 || n <= 0) return;  // nothing to read (activations may legitimately be null)
  if (qtype_is_quantized(type) ? xq == nullptr : x == nullptr)
    throw std::invalid_argument("matmul_rows: missing activations for this weight type");
  active().load(std::memory_order_relaxed)->matmul_rows(type, W, k, r0, r1, x, xq, n, y, ldy);
}

void dequantize_row(QType type, const void* row, int64_t k, float* out) {
  scalar_dequantize_row(type, row, k, out);
}

}  // namespace edgemoe
