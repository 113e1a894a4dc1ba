// The f16 KV cache's kernels: converting new K/V rows to fp16, and the two
// loops of one (token, head) attention over the stored rows - the q.k scores
// and the probability-weighted sum of the V rows. Stored as fp16, the cache
// takes half the memory and long-context decode reads half the bytes (at a
// few thousand tokens, attention reads as much as the weights do).
//
// Variants: scalar (the reference), AVX2 + F16C (also used by the AVX-512
// table: the loops are bound by memory, not by vector width) and NEON.
// Conversions round to nearest even everywhere, so every variant stores the
// same bits; the sums differ only in order.
#include "variants.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EDGEMOE_F16C __attribute__((target("avx2,fma,f16c")))
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include <algorithm>

namespace edgemoe {

// ---- scalar ----

void to_f16_scalar(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

void scores_f16_scalar(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                       float* scores) {
  for (int64_t j = 0; j < n_keys; ++j) {
    const uint16_t* row = k + j * stride;
    float s = 0.f;
    for (int64_t i = 0; i < d; ++i) s += q[i] * f16_to_f32(row[i]);
    scores[j] = s * scale;
  }
}

void weighted_sum_f16_scalar(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                             float* out) {
  std::fill(out, out + d, 0.f);
  for (int64_t j = 0; j < n_keys; ++j) {
    const uint16_t* row = v + j * stride;
    for (int64_t i = 0; i < d; ++i) out[i] += p[j] * f16_to_f32(row[i]);
  }
}

namespace {

// Columns [from, to) of the weighted sum, one at a time: the SIMD variants'
// tail when the head size is not a multiple of their vector width.
inline void weighted_sum_columns(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t from,
                                 int64_t to, float* out) {
  for (int64_t i = from; i < to; ++i) {
    float s = 0.f;
    for (int64_t j = 0; j < n_keys; ++j) s += p[j] * f16_to_f32(v[j * stride + i]);
    out[i] = s;
  }
}

}  // namespace

// ---- AVX2 + F16C ----
#if defined(__x86_64__) || defined(__i386__)

namespace {

EDGEMOE_F16C inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
}

EDGEMOE_F16C inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

}  // namespace

EDGEMOE_F16C void to_f16_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i*)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

EDGEMOE_F16C void scores_f16_avx2(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d,
                                  float scale, float* scores) {
  const int64_t d8 = d / 8 * 8;
  for (int64_t j = 0; j < n_keys; ++j) {
    const uint16_t* row = k + j * stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= d8; i += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(row + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8(row + i + 8), a1);
    }
    if (i < d8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(row + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (i = d8; i < d; ++i) s += q[i] * f16_to_f32(row[i]);
    scores[j] = s * scale;
  }
}

// Up to 64 output elements stay in 8 registers while every key streams by.
EDGEMOE_F16C void weighted_sum_f16_avx2(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d,
                                        float* out) {
  const int64_t d8 = d / 8 * 8;
  for (int64_t c = 0; c < d8; c += 64) {
    const int lanes = (int)std::min<int64_t>(8, (d8 - c) / 8);
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n_keys; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      const uint16_t* row = v + j * stride + c;
      if (lanes == 8) {  // the common case, with a constant trip count: acc stays in registers
        for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(pj, load8(row + 8 * u), acc[u]);
      } else {
        for (int u = 0; u < lanes; ++u) acc[u] = _mm256_fmadd_ps(pj, load8(row + 8 * u), acc[u]);
      }
    }
    for (int u = 0; u < lanes; ++u) _mm256_storeu_ps(out + c + 8 * u, acc[u]);
  }
  weighted_sum_columns(p, v, n_keys, stride, d8, d, out);
}

#endif  // x86

// ---- NEON ----
#if defined(__aarch64__)

namespace {

inline float32x4_t load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

}  // namespace

void to_f16_neon(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

void scores_f16_neon(const float* q, const uint16_t* k, int64_t n_keys, int64_t stride, int64_t d, float scale,
                     float* scores) {
  const int64_t d4 = d / 4 * 4;
  for (int64_t j = 0; j < n_keys; ++j) {
    const uint16_t* row = k + j * stride;
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = vdupq_n_f32(0.f);
    int64_t i = 0;
    for (; i + 8 <= d4; i += 8) {
      a0 = vfmaq_f32(a0, vld1q_f32(q + i), load4(row + i));
      a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), load4(row + i + 4));
    }
    if (i < d4) a0 = vfmaq_f32(a0, vld1q_f32(q + i), load4(row + i));
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (i = d4; i < d; ++i) s += q[i] * f16_to_f32(row[i]);
    scores[j] = s * scale;
  }
}

void weighted_sum_f16_neon(const float* p, const uint16_t* v, int64_t n_keys, int64_t stride, int64_t d, float* out) {
  const int64_t d4 = d / 4 * 4;
  for (int64_t c = 0; c < d4; c += 32) {
    const int lanes = (int)std::min<int64_t>(8, (d4 - c) / 4);
    float32x4_t acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = vdupq_n_f32(0.f);
    for (int64_t j = 0; j < n_keys; ++j) {
      const float32x4_t pj = vdupq_n_f32(p[j]);
      const uint16_t* row = v + j * stride + c;
      for (int u = 0; u < lanes; ++u) acc[u] = vfmaq_f32(acc[u], pj, load4(row + 4 * u));
    }
    for (int u = 0; u < lanes; ++u) vst1q_f32(out + c + 4 * u, acc[u]);
  }
  weighted_sum_columns(p, v, n_keys, stride, d4, d, out);
}

#endif  // aarch64

}  // namespace edgemoe
