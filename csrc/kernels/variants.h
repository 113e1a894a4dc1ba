// Private to csrc/kernels/: how dispatch.cpp sees the instruction-set variants.
//
// Each variant file exports one getter returning its table, or nullptr when
// the variant is not compiled for this architecture or the running CPU lacks
// the instructions. The CPU check lives next to the code that needs the
// instructions, so the two cannot drift apart.
#pragma once
#include "kernels.h"

namespace edgemoe {

// Activation groups whose scale d = amax/127 falls below this are stored as
// all-zero: 1/d would overflow to infinity. Every variant must use the same
// cut-off so they quantize identically.
constexpr float kMinActivationScale = 1.17549435e-38f;  // FLT_MIN

struct KernelTable {
  Isa isa;
  void (*quantize_activations)(const float* x, int64_t n, int64_t k, BlockQ8A* out);
  void (*matmul_rows)(QType type, const void* W, int64_t k, int64_t r0, int64_t r1,
                      const float* x, const BlockQ8A* xq, int64_t n, float* y, int64_t ldy);
  // The f16 KV cache (kv_f16.cpp; see kernels.h for the contracts).
  void (*to_f16)(const float* x, uint16_t* y, int64_t n);
  void (*scores_f16)(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                     float* scores);
  void (*weighted_sum_f16)(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                           float* out);
  void (*delta_rule)(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x);  // delta_rule.cpp
};

// kv_f16.cpp's variants, for the tables.
void to_f16_scalar(const float* x, uint16_t* y, int64_t n);
void scores_f16_scalar(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                       float* scores);
void weighted_sum_f16_scalar(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                             float* out);
#if defined(__x86_64__) || defined(__i386__)
void to_f16_avx2(const float* x, uint16_t* y, int64_t n);
void scores_f16_avx2(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                     float* scores);
void weighted_sum_f16_avx2(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                           float* out);
#endif
#if defined(__aarch64__)
void to_f16_neon(const float* x, uint16_t* y, int64_t n);
void scores_f16_neon(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                     float* scores);
void weighted_sum_f16_neon(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                           float* out);
#endif

// delta_rule.cpp's variants, for the tables.
void delta_rule_scalar(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x);
#if defined(__x86_64__) || defined(__i386__)
void delta_rule_avx2(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x);
void delta_rule_avx512(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x);
#endif
#if defined(__aarch64__)
void delta_rule_neon(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x);
#endif

const KernelTable* scalar_kernels();  // never null
const KernelTable* avx2_kernels();
const KernelTable* avx512_kernels();
// AArch64: the NEON table, with the SDOT dot-product path when the build or
// the CPU (HWCAP_ASIMDDP) has it, else the plain-NEON one. isa_name() says
// "neon" either way; neon_dot_path() tells which: "sdot" or "smull" ("" off AArch64).
const KernelTable* neon_kernels();
const char* neon_dot_path();
// The plain-NEON table even where SDOT is used, so tests can check both paths.
const KernelTable* neon_fallback_kernels();

// The table of an ISA (nullptr if not compiled or unsupported here).
const KernelTable* kernel_table(Isa isa);

// Decoding a row is not hot (embedding lookups, tests): one scalar version.
void scalar_dequantize_row(QType type, const void* row, int64_t k, float* out);

}  // namespace edgemoe
