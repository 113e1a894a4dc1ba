// Scalar reference kernels: the oracle every SIMD variant is tested against,
// and the fallback on CPUs without a SIMD variant. Written for clarity, not
// speed: one row, one token, one element at a time.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "variants.h"

namespace edgemoe {

namespace {

void quantize_activations_scalar(const float* x, int64_t n, int64_t k, BlockQ8A* out) {
  const int64_t nb = k / kGroup;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < nb; ++g) {
      const float* v = x + t * k + g * kGroup;
      BlockQ8A& b = out[t * nb + g];
      float amax = 0.0f;
      for (int i = 0; i < kGroup; ++i) amax = std::fmax(amax, std::fabs(v[i]));
      const float d = amax / 127.0f;
      // Multiply by the inverse rather than divide: the SIMD variants do the
      // same, so every variant produces identical blocks.
      const float id = d >= kMinActivationScale ? 1.0f / d : 0.0f;
      int32_t sum = 0;
      for (int i = 0; i < kGroup; ++i) {
        // Round half to even (the SIMD rounding mode). The clamp only matters
        // for NaN input (fmax maps it to -127), keeping the int cast defined.
        const int q = (int)std::fmin(std::fmax(std::nearbyint(v[i] * id), -127.0f), 127.0f);
        b.qs[i] = (int8_t)q;
        sum += q;
      }
      b.d = d;
      b.sum = sum;
    }
  }
}

float dot_f32(const float* w, const float* x, int64_t k) {
  float s = 0.0f;
  for (int64_t i = 0; i < k; ++i) s += w[i] * x[i];
  return s;
}

float dot_f16(const uint16_t* w, const float* x, int64_t k) {
  float s = 0.0f;
  for (int64_t i = 0; i < k; ++i) s += f16_to_f32(w[i]) * x[i];
  return s;
}

// Symmetric weights: w = dw * qw, x = dx * qx, so each group contributes
// dw * dx * sum(qw * qx), with the inner sum exact in integers.
float dot_q8(const BlockQ8* w, const BlockQ8A* x, int64_t nb) {
  float s = 0.0f;
  for (int64_t g = 0; g < nb; ++g) {
    int32_t isum = 0;
    for (int i = 0; i < kGroup; ++i) isum += (int32_t)w[g].qs[i] * (int32_t)x[g].qs[i];
    s += f16_to_f32(w[g].d) * x[g].d * (float)isum;
  }
  return s;
}

// Asymmetric weights: w = dw * qw + mw, so a group contributes
// dw * dx * sum(qw * qx) + mw * dx * sum(qx); the activation block carries sum(qx).
float dot_q4(const BlockQ4* w, const BlockQ8A* x, int64_t nb) {
  float s = 0.0f;
  for (int64_t g = 0; g < nb; ++g) {
    int32_t isum = 0;
    for (int j = 0; j < kGroup / 2; ++j) {
      isum += (int32_t)(w[g].qs[j] & 0x0f) * x[g].qs[j];
      isum += (int32_t)(w[g].qs[j] >> 4) * x[g].qs[j + kGroup / 2];
    }
    s += f16_to_f32(w[g].d) * x[g].d * (float)isum + f16_to_f32(w[g].m) * x[g].d * (float)x[g].sum;
  }
  return s;
}

// Q3 and Q2: the same asymmetric arithmetic as Q4, over their own codes.
float dot_low_bit(QType type, const uint8_t* w, size_t block_bytes, const BlockQ8A* x, int64_t nb) {
  float s = 0.0f;
  uint8_t q[kGroup];
  for (int64_t g = 0; g < nb; ++g) {
    const uint8_t* b = w + g * block_bytes;
    unpack_codes(type, b, q);
    int32_t isum = 0;
    for (int i = 0; i < kGroup; ++i) isum += (int32_t)q[i] * x[g].qs[i];
    uint16_t d, m;
    std::memcpy(&d, b, 2);
    std::memcpy(&m, b + 2, 2);
    s += f16_to_f32(d) * x[g].d * (float)isum + f16_to_f32(m) * x[g].d * (float)x[g].sum;
  }
  return s;
}

// Q4K: the Q4 arithmetic per group of 32, with the group's scale d * sc and
// offset -dmin * mn taken from the super-block head.
float dot_q4k(const BlockQ4K* w, const BlockQ8A* x, int64_t n_super) {
  float s = 0.0f;
  for (int64_t b = 0; b < n_super; ++b) {
    const float d = f16_to_f32(w[b].d), dmin = f16_to_f32(w[b].dmin);
    for (int j = 0; j < 8; ++j) {
      const BlockQ8A& a = x[b * 8 + j];
      const uint8_t* q = w[b].qs + (j / 2) * 32;
      const int shift = (j % 2) * 4;
      int32_t isum = 0;
      for (int i = 0; i < kGroup; ++i) isum += (int32_t)((q[i] >> shift) & 0x0f) * a.qs[i];
      int sc, mn;
      q4k_scale_min(w[b].scales, j, &sc, &mn);
      s += d * (float)sc * a.d * (float)isum - dmin * (float)mn * a.d * (float)a.sum;
    }
  }
  return s;
}

// MXFP4: symmetric like Q8, with the codes' doubled E2M1 values as the integer
// weights and half the block's power-of-two scale.
float dot_mxfp4(const BlockMXFP4* w, const BlockQ8A* x, int64_t nb) {
  float s = 0.0f;
  for (int64_t g = 0; g < nb; ++g) {
    int32_t isum = 0;
    for (int j = 0; j < kGroup / 2; ++j) {
      isum += (int32_t)kMxfp4Doubled[w[g].qs[j] & 0x0f] * x[g].qs[j];
      isum += (int32_t)kMxfp4Doubled[w[g].qs[j] >> 4] * x[g].qs[j + kGroup / 2];
    }
    s += e8m0_half(w[g].e) * x[g].d * (float)isum;
  }
  return s;
}

void matmul_rows_scalar(QType type, const void* W, int64_t k, int64_t r0, int64_t r1, const float* x,
                        const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
  const size_t rb = qtype_row_bytes(type, k);
  const int64_t nb = k / kGroup;
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = (const uint8_t*)W + (size_t)r * rb;
    for (int64_t t = 0; t < n; ++t) {
      float v = 0.0f;
      switch (type) {
        case QType::F32:
          v = dot_f32((const float*)row, x + t * k, k);
          break;
        case QType::F16:
          v = dot_f16((const uint16_t*)row, x + t * k, k);
          break;
        case QType::Q8:
          v = dot_q8((const BlockQ8*)row, xq + t * nb, nb);
          break;
        case QType::Q4:
          v = dot_q4((const BlockQ4*)row, xq + t * nb, nb);
          break;
        case QType::Q3:
        case QType::Q2:
          v = dot_low_bit(type, (const uint8_t*)row, rb / (size_t)nb, xq + t * nb, nb);
          break;
        case QType::Q4K:
          v = dot_q4k((const BlockQ4K*)row, xq + t * nb, k / kSuperBlock);
          break;
        case QType::MXFP4:
          v = dot_mxfp4((const BlockMXFP4*)row, xq + t * nb, nb);
          break;
      }
      y[t * ldy + r] = v;
    }
  }
}

const KernelTable kScalar = {Isa::Scalar, quantize_activations_scalar, matmul_rows_scalar,
                             to_f16_scalar, scores_f16_scalar, weighted_sum_f16_scalar, delta_rule_scalar};

}  // namespace

const KernelTable* scalar_kernels() { return &kScalar; }

void scalar_dequantize_row(QType type, const void* row, int64_t k, float* out) {
  switch (type) {
    case QType::F32: {
      const float* w = (const float*)row;
      for (int64_t i = 0; i < k; ++i) out[i] = w[i];
      return;
    }
    case QType::F16: {
      const uint16_t* w = (const uint16_t*)row;
      for (int64_t i = 0; i < k; ++i) out[i] = f16_to_f32(w[i]);
      return;
    }
    case QType::Q8: {
      const BlockQ8* b = (const BlockQ8*)row;
      for (int64_t g = 0; g < k / kGroup; ++g) {
        const float d = f16_to_f32(b[g].d);
        for (int i = 0; i < kGroup; ++i) out[g * kGroup + i] = d * (float)b[g].qs[i];
      }
      return;
    }
    case QType::Q3:
    case QType::Q2: {
      const size_t block = qtype_row_bytes(type, kGroup);
      uint8_t q[kGroup];
      for (int64_t g = 0; g < k / kGroup; ++g) {
        const uint8_t* b = (const uint8_t*)row + g * block;
        uint16_t d, m;
        std::memcpy(&d, b, 2);
        std::memcpy(&m, b + 2, 2);
        unpack_codes(type, b, q);
        for (int i = 0; i < kGroup; ++i) out[g * kGroup + i] = f16_to_f32(d) * (float)q[i] + f16_to_f32(m);
      }
      return;
    }
    case QType::Q4K: {
      const BlockQ4K* b = (const BlockQ4K*)row;
      for (int64_t s = 0; s < k / kSuperBlock; ++s) {
        const float d = f16_to_f32(b[s].d), dmin = f16_to_f32(b[s].dmin);
        for (int j = 0; j < 8; ++j) {
          int sc, mn;
          q4k_scale_min(b[s].scales, j, &sc, &mn);
          const uint8_t* q = b[s].qs + (j / 2) * 32;
          const int shift = (j % 2) * 4;
          float* o = out + s * kSuperBlock + j * kGroup;
          for (int i = 0; i < kGroup; ++i) o[i] = d * (float)sc * (float)((q[i] >> shift) & 0x0f) - dmin * (float)mn;
        }
      }
      return;
    }
    case QType::Q4: {
      const BlockQ4* b = (const BlockQ4*)row;
      for (int64_t g = 0; g < k / kGroup; ++g) {
        const float d = f16_to_f32(b[g].d), m = f16_to_f32(b[g].m);
        float* o = out + g * kGroup;
        for (int j = 0; j < kGroup / 2; ++j) {
          o[j] = d * (float)(b[g].qs[j] & 0x0f) + m;
          o[j + kGroup / 2] = d * (float)(b[g].qs[j] >> 4) + m;
        }
      }
      return;
    }
    case QType::MXFP4: {
      const BlockMXFP4* b = (const BlockMXFP4*)row;
      for (int64_t g = 0; g < k / kGroup; ++g) {
        const float d = e8m0_half(b[g].e);
        float* o = out + g * kGroup;
        for (int j = 0; j < kGroup / 2; ++j) {
          o[j] = d * (float)kMxfp4Doubled[b[g].qs[j] & 0x0f];
          o[j + kGroup / 2] = d * (float)kMxfp4Doubled[b[g].qs[j] >> 4];
        }
      }
      return;
    }
  }
}

}  // namespace edgemoe
