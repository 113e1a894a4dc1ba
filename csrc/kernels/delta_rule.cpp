// The gated delta rule: Gated DeltaNet's recurrence over one value head's state
// (docs/HYBRID_MODELS.md section 3), token after token.
//
// Per token the state S [dk, dv] is read and written twice: once to decay it
// and take S^T k, once to add the rank-one correction and take S^T q. A head's
// state (64 KiB at 128 x 128) stays in L2 across a batch's tokens, so a prefill
// batch costs two passes over it per token, not a trip to memory.
//
// Variants: scalar (the reference), AVX2 + FMA, AVX-512 and NEON, vectorised
// along dv. Every variant sums over the dk rows in the same order; they differ
// only in where a multiply and an add fuse.
#include "variants.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EDGEMOE_AVX2 __attribute__((target("avx2,fma")))
#define EDGEMOE_AVX512 __attribute__((target("avx512f")))
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace edgemoe {

namespace {

// What one variant supplies: over a row of S (dv values), `decay_dot` does row *= decay and
// acc += row * ki; `update_dot` does row += ki * delta and acc += row * qi.
template <class Row>
void run_tokens(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x) {
  alignas(64) float delta[kMaxDeltaRuleDim];
  for (int64_t t = 0; t < x.n; ++t) {
    const float* q = x.q + t * x.qk_stride;
    const float* k = x.k + t * x.qk_stride;
    const float* v = x.v + t * x.v_stride;
    float* out = x.out + t * x.out_stride;
    const float decay = x.decay[t * x.gate_stride], beta = x.beta[t * x.gate_stride];
    for (int64_t d = 0; d < dv; ++d) delta[d] = 0.f;
    for (int64_t i = 0; i < dk; ++i) Row::decay_dot(S + i * dv, dv, decay, k[i], delta);
    for (int64_t d = 0; d < dv; ++d) delta[d] = (v[d] - delta[d]) * beta;
    for (int64_t d = 0; d < dv; ++d) out[d] = 0.f;
    for (int64_t i = 0; i < dk; ++i) Row::update_dot(S + i * dv, dv, k[i], delta, q[i], out);
  }
}

struct ScalarRow {
  static void decay_dot(float* row, int64_t dv, float decay, float ki, float* acc) {
    for (int64_t d = 0; d < dv; ++d) {
      row[d] *= decay;
      acc[d] += row[d] * ki;
    }
  }
  static void update_dot(float* row, int64_t dv, float ki, const float* delta, float qi, float* acc) {
    for (int64_t d = 0; d < dv; ++d) {
      row[d] += ki * delta[d];
      acc[d] += row[d] * qi;
    }
  }
};

}  // namespace

void delta_rule_scalar(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x) {
  run_tokens<ScalarRow>(S, dk, dv, x);
}

// ---- x86 ----
#if defined(__x86_64__) || defined(__i386__)

namespace {

struct Avx2Row {
  EDGEMOE_AVX2 static void decay_dot(float* row, int64_t dv, float decay, float ki, float* acc) {
    const __m256 g = _mm256_set1_ps(decay), kk = _mm256_set1_ps(ki);
    int64_t d = 0;
    for (; d + 8 <= dv; d += 8) {
      const __m256 r = _mm256_mul_ps(_mm256_loadu_ps(row + d), g);
      _mm256_storeu_ps(row + d, r);
      _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(r, kk, _mm256_loadu_ps(acc + d)));
    }
    ScalarRow::decay_dot(row + d, dv - d, decay, ki, acc + d);
  }
  EDGEMOE_AVX2 static void update_dot(float* row, int64_t dv, float ki, const float* delta, float qi, float* acc) {
    const __m256 kk = _mm256_set1_ps(ki), qq = _mm256_set1_ps(qi);
    int64_t d = 0;
    for (; d + 8 <= dv; d += 8) {
      const __m256 r = _mm256_fmadd_ps(kk, _mm256_loadu_ps(delta + d), _mm256_loadu_ps(row + d));
      _mm256_storeu_ps(row + d, r);
      _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(r, qq, _mm256_loadu_ps(acc + d)));
    }
    ScalarRow::update_dot(row + d, dv - d, ki, delta + d, qi, acc + d);
  }
};

struct Avx512Row {
  EDGEMOE_AVX512 static void decay_dot(float* row, int64_t dv, float decay, float ki, float* acc) {
    const __m512 g = _mm512_set1_ps(decay), kk = _mm512_set1_ps(ki);
    int64_t d = 0;
    for (; d + 16 <= dv; d += 16) {
      const __m512 r = _mm512_mul_ps(_mm512_loadu_ps(row + d), g);
      _mm512_storeu_ps(row + d, r);
      _mm512_storeu_ps(acc + d, _mm512_fmadd_ps(r, kk, _mm512_loadu_ps(acc + d)));
    }
    ScalarRow::decay_dot(row + d, dv - d, decay, ki, acc + d);
  }
  EDGEMOE_AVX512 static void update_dot(float* row, int64_t dv, float ki, const float* delta, float qi, float* acc) {
    const __m512 kk = _mm512_set1_ps(ki), qq = _mm512_set1_ps(qi);
    int64_t d = 0;
    for (; d + 16 <= dv; d += 16) {
      const __m512 r = _mm512_fmadd_ps(kk, _mm512_loadu_ps(delta + d), _mm512_loadu_ps(row + d));
      _mm512_storeu_ps(row + d, r);
      _mm512_storeu_ps(acc + d, _mm512_fmadd_ps(r, qq, _mm512_loadu_ps(acc + d)));
    }
    ScalarRow::update_dot(row + d, dv - d, ki, delta + d, qi, acc + d);
  }
};

}  // namespace

void delta_rule_avx2(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x) { run_tokens<Avx2Row>(S, dk, dv, x); }
void delta_rule_avx512(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x) {
  run_tokens<Avx512Row>(S, dk, dv, x);
}

#endif  // x86

// ---- NEON ----
#if defined(__aarch64__)

namespace {

struct NeonRow {
  static void decay_dot(float* row, int64_t dv, float decay, float ki, float* acc) {
    int64_t d = 0;
    for (; d + 4 <= dv; d += 4) {
      const float32x4_t r = vmulq_n_f32(vld1q_f32(row + d), decay);
      vst1q_f32(row + d, r);
      vst1q_f32(acc + d, vfmaq_n_f32(vld1q_f32(acc + d), r, ki));
    }
    ScalarRow::decay_dot(row + d, dv - d, decay, ki, acc + d);
  }
  static void update_dot(float* row, int64_t dv, float ki, const float* delta, float qi, float* acc) {
    int64_t d = 0;
    for (; d + 4 <= dv; d += 4) {
      const float32x4_t r = vfmaq_n_f32(vld1q_f32(row + d), vld1q_f32(delta + d), ki);
      vst1q_f32(row + d, r);
      vst1q_f32(acc + d, vfmaq_n_f32(vld1q_f32(acc + d), r, qi));
    }
    ScalarRow::update_dot(row + d, dv - d, ki, delta + d, qi, acc + d);
  }
};

}  // namespace

void delta_rule_neon(float* S, int64_t dk, int64_t dv, const DeltaRuleTokens& x) { run_tokens<NeonRow>(S, dk, dv, x); }

#endif  // aarch64

}  // namespace edgemoe
