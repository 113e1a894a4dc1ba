// Matrix kernels over the weight encodings of common/qtypes.h.
//
// Every kernel has a scalar reference implementation (kernels_scalar.cpp) and
// SIMD variants (kernels_avx2.cpp, kernels_avx512.cpp, kernels_neon.cpp). One dispatch table
// picks the best variant the CPU (and the build) supports; tests switch the
// table to compare variants against the reference.
//
// The kernels know neither the model nor the storage: they see raw row bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/qtypes.h"

namespace edgemoe {

// Quantize n rows of k floats (row stride k) into n * k/32 activation blocks.
// k must be a multiple of kGroup.
void quantize_activations(const float* x, int64_t n, int64_t k, BlockQ8A* out);

// y[t * ldy + r] = dot(W row r, x row t) for rows r in [r0, r1) and tokens t in [0, n).
//   W: rows of type t stored back to back, each qtype_row_bytes(t, k) bytes.
//   x: n x k floats (used by F32/F16 weights).
//   xq: n x k/32 activation blocks (used by Q8/Q4 weights; may be null for F32/F16).
// Callers split [0, rows) across threads; the kernel itself is single-threaded.
void matmul_rows(QType type, const void* W, int64_t k, int64_t r0, int64_t r1,
                 const float* x, const BlockQ8A* xq, int64_t n, float* y, int64_t ldy);

// The f16 KV cache. Rows of d values, `stride` elements apart (one KV head of
// each cached position).
// y[i] = fp16(x[i]), round to nearest even (the same bits on every variant).
void f32_to_f16_row(const float* x, uint16_t* y, int64_t n);
// scores[j] = scale * dot(q, K row j) for j in [0, n_keys).
void attention_scores_f16(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                          float* scores);
// out[i] = sum over j of p[j] * (V row j)[i], for i in [0, d).
void attention_weighted_sum_f16(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                                float* out);

// Gated DeltaNet's recurrence (the gated delta rule) for one value head over x.n tokens, in order.
// S [dk, dv] (row-major) is the head's state, updated in place; dv <= kMaxDeltaRuleDim. Token t
// reads q and k (dk values: l2-normalised, q already scaled) at q/k + t * qk_stride, v (dv values)
// at v + t * v_stride, decay (exp of the gate) and beta at t * gate_stride, and writes out (dv
// values) at out + t * out_stride:
//   S = decay * S;   S += k (x) beta * (v - S^T k);   out = S^T q   (the updated S)
constexpr int64_t kMaxDeltaRuleDim = 4096;
struct DeltaRuleTokens {
  int64_t n = 0;
  const float* q = nullptr;
  const float* k = nullptr;
  int64_t qk_stride = 0;
  const float* v = nullptr;
  int64_t v_stride = 0;
  const float* decay = nullptr;
  const float* beta = nullptr;
  int64_t gate_stride = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
};
void gated_delta_rule(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x);

// Decode one row of k elements to floats (embedding lookups, tests).
void dequantize_row(QType type, const void* row, int64_t k, float* out);

// fp16 <-> fp32, round to nearest even.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Instruction-set variants of the kernels.
enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };
const char* isa_name(Isa isa);
// The variants compiled into this build AND supported by this CPU, best last.
std::vector<Isa> available_isas();
// Select the variant used from now on (process-wide). Returns false if unavailable.
bool set_isa(Isa isa);
Isa current_isa();

}  // namespace edgemoe
