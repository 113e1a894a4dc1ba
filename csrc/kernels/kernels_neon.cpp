// ARM NEON kernels (AArch64 only; this file compiles to stubs elsewhere).
//
// Same plan as kernels_avx2.cpp: a matmul is cut into register tiles of
// weight rows x tokens, each weight group is loaded (and for Q4 unpacked)
// once per tile and reused for all its tokens, and prefill batches are cut
// into token blocks whose activations stay in L2.
//
// What is NEON-specific is the tile layout. Rows come in quads: the partial
// sums of four rows are folded with pairwise adds (ADDP) into one vector whose
// lane i belongs to row i, so the per-group scale multiply, the Q4 offset and
// the final store each handle four rows in one instruction. A quad at the
// end of the row range may be partial: its missing rows repeat the last real
// row (reads stay in bounds) and their lanes are never stored.
//
// Integer dot products (Q8/Q4 weights against Q8A activations) have two paths:
//  * SDOT (vdotq_s32, the ARMv8.2 dot-product extension, "asimddp" in
//    /proc/cpuinfo): four int8 products summed into each int32 lane, two
//    instructions per 32-element group;
//  * plain NEON: SMULL/SMLAL2 into int16 pairs, SADALP into int32 lanes, six
//    instructions per group. Runs on every AArch64 CPU.
// How SDOT gets in:
//  * the build targets it (__ARM_FEATURE_DOTPROD, e.g. `pip install .` with
//    -mcpu=native on a Cortex-A55/A76 board): plain intrinsics, always used;
//  * otherwise, with GCC: the SDOT entry point carries a target attribute and
//    `flatten` (so every template it calls is inlined into it and compiled
//    with the extension), and neon_kernels() picks it only if Linux reports
//    HWCAP_ASIMDDP;
//  * otherwise (clang, or no Linux): plain NEON only.
// The plain-NEON table stays reachable (neon_fallback_kernels) so the tests
// can check both paths on a CPU that has SDOT.
#include "variants.h"

#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)  // arch/arm64/include/uapi/asm/hwcap.h
#endif
#endif

#if defined(__ARM_FEATURE_DOTPROD)
#define EDGEMOE_HAVE_SDOT 1
#define EDGEMOE_SDOT_TARGET
#elif defined(__GNUC__) && !defined(__clang__)
#define EDGEMOE_HAVE_SDOT 1
// GCC 12 declares vdotq_s32 for "arch=armv8.2-a+dotprod" (and binutils 2.40
// rejects SDOT on a v8.0 base even with +dotprod), so that is the minimum.
// "+crypto" is there for native builds on older cores (-mcpu=cortex-a53/a72
// enable it): GCC only inlines a helper into a function whose feature set
// contains the helper's, i.e. the build's.
#define EDGEMOE_SDOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod+crypto")))
#else
#define EDGEMOE_HAVE_SDOT 0
#endif

// The tile loops run over template constants. Unrolling them early lets GCC
// turn the accumulator arrays into registers; left to its later unrolling
// pass, they stay on the stack (loaded and stored every group).
#define EDGEMOE_UNROLL _Pragma("GCC unroll 16")

namespace edgemoe {

namespace {

// Activation bytes per token block in prefill. Half the x86 value: ARM
// cores often have 128-512 KB of L2, sometimes shared. Not tuned on hardware.
constexpr size_t kTokenBlockBytes = 128 * 1024;

// Software prefetch distance for the weight streams. Mirrors the x86 value
// (measured there); not measured on ARM, where PRFM is cheap either way.
constexpr int kPrefetchBytes = 1024;

struct Job {
  const uint8_t* W;
  size_t row_bytes;
  int64_t k;
  int64_t nb;  // groups per row (quantized types)
  const float* x;
  const BlockQ8A* xq;
  float* y;
  int64_t ldy;
};

// The address may lie past the end of the weights; PRFM never faults.
inline void prefetch(const void* p) { __builtin_prefetch((const char*)p + kPrefetchBytes); }

// One fp16 value (any alignment) as a float: a single FCVT.
inline float half_at(const void* p) {
  float16_t h;
  std::memcpy(&h, p, sizeof h);
  return (float)h;
}

// fp16 values at four addresses, widened to floats: lane i from p[i].
inline float32x4_t halves_at(const uint8_t* const* p, size_t offset) {
  uint16_t h[4];
  EDGEMOE_UNROLL for (int i = 0; i < 4; ++i) std::memcpy(&h[i], p[i] + offset, sizeof h[i]);
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

// [sum(a), sum(b), sum(c), sum(d)]: four rows' partial sums into one vector.
inline int32x4_t fold4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
  return vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d));
}
inline float32x4_t fold4(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d) {
  return vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d));
}

// Store the first `valid` lanes (rows) of v: lanes past the caller's row
// range belong to another thread's rows and must not be written.
inline void store_rows(float* y, float32x4_t v, int valid) {
  if (valid >= 4) {
    vst1q_f32(y, v);
    return;
  }
  vst1q_lane_f32(y, v, 0);  // a tile has at least one real row
  if (valid > 1) vst1q_lane_f32(y + 1, v, 1);
  if (valid > 2) vst1q_lane_f32(y + 2, v, 2);
}

// Same arithmetic as the scalar reference, step by step, so the blocks are
// byte-identical: amax with FMAXNM (std::fmax: a NaN operand is ignored),
// d = amax / 127, q = round-half-even(x * (1/d)) clamped with FMAXNM/FMINNM
// (a NaN product becomes -127, as fmax(NaN, -127) does).
void quantize_activations_neon(const float* x, int64_t n, int64_t k, BlockQ8A* out) {
  const int64_t nb = k / kGroup;
  const float32x4_t lo = vdupq_n_f32(-127.0f), hi = vdupq_n_f32(127.0f);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < nb; ++g) {
      const float* v = x + t * k + g * kGroup;
      BlockQ8A& b = out[t * nb + g];
      float32x4_t f[8];
      float32x4_t m = vdupq_n_f32(0.0f);  // the reference starts from 0 too
      EDGEMOE_UNROLL for (int i = 0; i < 8; ++i) {
        f[i] = vld1q_f32(v + 4 * i);
        m = vmaxnmq_f32(m, vabsq_f32(f[i]));
      }
      const float d = vmaxnmvq_f32(m) / 127.0f;
      const float id = d >= kMinActivationScale ? 1.0f / d : 0.0f;
      int32x4_t q[8];
      EDGEMOE_UNROLL for (int i = 0; i < 8; ++i)
        q[i] = vcvtq_s32_f32(vminnmq_f32(vmaxnmq_f32(vrndnq_f32(vmulq_n_f32(f[i], id)), lo), hi));
      // Values are within [-127, 127]: plain narrowing is exact.
      int16x8_t h[4];
      EDGEMOE_UNROLL for (int i = 0; i < 4; ++i) h[i] = vmovn_high_s32(vmovn_s32(q[2 * i]), q[2 * i + 1]);
      vst1q_s8(b.qs, vmovn_high_s16(vmovn_s16(h[0]), h[1]));
      vst1q_s8(b.qs + 16, vmovn_high_s16(vmovn_s16(h[2]), h[3]));
      b.d = d;
      b.sum = vaddlvq_s16(vaddq_s16(vaddq_s16(h[0], h[1]), vaddq_s16(h[2], h[3])));
    }
  }
}

// ---- integer dot of one 32-element group: a = a0|a1, b = b0|b1 ----
// Both return the 32 products' sum spread over four int32 lanes.

struct DotSmull {
  static int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    // Each int16 lane adds two products. Activations are within +-127 and
    // weights within [-128, 127], so |sum| <= 2 * 128 * 127 = 32512: no overflow.
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)), a0, b0);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(a1), vget_low_s8(b1)), a1, b1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
  }
};

#if EDGEMOE_HAVE_SDOT
struct DotSdot {
  EDGEMOE_SDOT_TARGET static int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a0, b0), a1, b1);
  }
};
#endif

// ---- tiles: Q row quads (R = 4Q rows, `nrows` of them real) x T tokens ----
// Each run() writes y for its real rows and all T tokens.

// Pointers to R weight rows starting at r; rows past nrows repeat the last real one.
template <int R>
inline void row_pointers(const Job& j, int64_t r, int nrows, const uint8_t* (&w)[R]) {
  EDGEMOE_UNROLL for (int i = 0; i < R; ++i)
    w[i] = j.W + (size_t)(r + std::min(i, nrows - 1)) * j.row_bytes;
}

// Two-bit fields: byte j holds elements j, j+8, j+16, j+24 (BlockQ2 / BlockQ3 low bits).
inline void unpack_2bit(const uint8_t* qs, uint8x16_t& lo, uint8x16_t& hi) {
  const uint8x8_t b = vld1_u8(qs), three = vdup_n_u8(3);
  lo = vcombine_u8(vand_u8(b, three), vand_u8(vshr_n_u8(b, 2), three));
  hi = vcombine_u8(vand_u8(vshr_n_u8(b, 4), three), vshr_n_u8(b, 6));
}

// The third bits of BlockQ3: element i's is bit i%8 of qh[i/8]; 4 where set.
inline void unpack_3rd_bit(const uint8_t* qh, uint8x16_t& lo, uint8x16_t& hi) {
  static const uint8_t kBits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bits = vld1q_u8(kBits), four = vdupq_n_u8(4);
  lo = vandq_u8(vtstq_u8(vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1])), bits), four);
  hi = vandq_u8(vtstq_u8(vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3])), bits), four);
}

// Q8 and the low-bit asymmetric types (Q4, Q3, Q2) against Q8A activations:
// per (row, token, group) one dot32; per (quad, token, group) one fold, one
// int->float conversion and one FMA with the four rows' scales d * dx. The
// asymmetric types add their offset term m * dx * sum(qx) for the four rows
// with one more FMA.
template <class Dot, QType K>
struct TileInt {
  static constexpr bool kAsym = K != QType::Q8 && K != QType::MXFP4;
  template <int Q, int T>
  static void run(const Job& j, int64_t r, int nrows, int64_t t) {
    constexpr int R = 4 * Q;
    constexpr size_t kBlock = K == QType::Q8 ? sizeof(BlockQ8) : K == QType::Q4 ? sizeof(BlockQ4)
                              : K == QType::Q3 ? sizeof(BlockQ3) : K == QType::Q2 ? sizeof(BlockQ2)
                              : K == QType::MXFP4 ? sizeof(BlockMXFP4)
                              : 0;  // Q4K: groups live inside 256-element blocks
    // Q4K: the current super-block's group scales d * sc and offsets
    // -dmin * mn, rows side by side so a quad loads as one vector.
    [[maybe_unused]] float sd[8][R], sm[8][R];
    const uint8_t* w[R];
    row_pointers<R>(j, r, nrows, w);
    const BlockQ8A* x[T];
    EDGEMOE_UNROLL for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    float32x4_t acc[Q][T];
    EDGEMOE_UNROLL for (int q = 0; q < Q; ++q)
      EDGEMOE_UNROLL for (int u = 0; u < T; ++u) acc[q][u] = vdupq_n_f32(0.0f);

    for (int64_t g = 0; g < j.nb; ++g) {
      const size_t off = (size_t)g * kBlock;  // this group's block within a row
      if constexpr (K == QType::Q4K) {
        if (g % 8 == 0) {
          EDGEMOE_UNROLL for (int i = 0; i < R; ++i) {
            const BlockQ4K& b = *(const BlockQ4K*)(w[i] + (size_t)(g / 8) * sizeof(BlockQ4K));
            uint64_t sc, mn;
            q4k_unpack_scales(b.scales, &sc, &mn);
            const float d = half_at((const uint8_t*)&b.d), dmin = half_at((const uint8_t*)&b.dmin);
            for (int gj = 0; gj < 8; ++gj)
              sd[gj][i] = d * (float)((sc >> (8 * gj)) & 0xff), sm[gj][i] = -dmin * (float)((mn >> (8 * gj)) & 0xff);
          }
        }
      }
      int8x16_t w0[R], w1[R];                 // elements 0..15 and 16..31
      EDGEMOE_UNROLL for (int i = 0; i < R; ++i) {
        const uint8_t* b = w[i] + off;
        if constexpr (K != QType::Q4K) prefetch(b);
        if constexpr (K == QType::Q4K) {
          // 32 bytes per pair of groups: low nibbles the first, high the second.
          const uint8_t* q = w[i] + (size_t)(g / 8) * sizeof(BlockQ4K) + offsetof(BlockQ4K, qs) + (g % 8) / 2 * 32;
          if (g % 2 == 0) prefetch(q);
          const uint8x16_t p0 = vld1q_u8(q), p1 = vld1q_u8(q + 16);
          if (g % 2 == 0) {
            w0[i] = vreinterpretq_s8_u8(vandq_u8(p0, low4));
            w1[i] = vreinterpretq_s8_u8(vandq_u8(p1, low4));
          } else {
            w0[i] = vreinterpretq_s8_u8(vshrq_n_u8(p0, 4));
            w1[i] = vreinterpretq_s8_u8(vshrq_n_u8(p1, 4));
          }
        } else if constexpr (K == QType::Q4) {
          // Byte j: element j in the low nibble, element j + 16 in the high one.
          const uint8x16_t packed = vld1q_u8(b + offsetof(BlockQ4, qs));
          w0[i] = vreinterpretq_s8_u8(vandq_u8(packed, low4));
          w1[i] = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
        } else if constexpr (K == QType::MXFP4) {
          // Codes as in Q4, looked up in the doubled E2M1 values (signed, within +-12).
          const int8x16_t table = vld1q_s8(kMxfp4Doubled);
          const uint8x16_t packed = vld1q_u8(b + offsetof(BlockMXFP4, qs));
          w0[i] = vqtbl1q_s8(table, vandq_u8(packed, low4));
          w1[i] = vqtbl1q_s8(table, vshrq_n_u8(packed, 4));
        } else if constexpr (K == QType::Q2) {
          uint8x16_t lo, hi;
          unpack_2bit(b + offsetof(BlockQ2, qs), lo, hi);
          w0[i] = vreinterpretq_s8_u8(lo);
          w1[i] = vreinterpretq_s8_u8(hi);
        } else if constexpr (K == QType::Q3) {
          uint8x16_t lo, hi, lo3, hi3;
          unpack_2bit(b + offsetof(BlockQ3, ql), lo, hi);
          unpack_3rd_bit(b + offsetof(BlockQ3, qh), lo3, hi3);
          w0[i] = vreinterpretq_s8_u8(vorrq_u8(lo, lo3));
          w1[i] = vreinterpretq_s8_u8(vorrq_u8(hi, hi3));
        } else {
          w0[i] = vld1q_s8((const int8_t*)(b + offsetof(BlockQ8, qs)));
          w1[i] = vld1q_s8((const int8_t*)(b + offsetof(BlockQ8, qs) + 16));
        }
      }
      float32x4_t dw[Q], mw[Q];  // per quad: lane i = row i's d (and m)
      EDGEMOE_UNROLL for (int q = 0; q < Q; ++q) {
        if constexpr (K == QType::Q4K) {
          dw[q] = vld1q_f32(&sd[g % 8][4 * q]);
          mw[q] = vld1q_f32(&sm[g % 8][4 * q]);
        } else if constexpr (K == QType::MXFP4) {
          const float d[4] = {e8m0_half(w[4 * q][off]), e8m0_half(w[4 * q + 1][off]), e8m0_half(w[4 * q + 2][off]),
                              e8m0_half(w[4 * q + 3][off])};
          dw[q] = vld1q_f32(d);
        } else {
          dw[q] = halves_at(w + 4 * q, off);  // d is the first field of both block types
          if constexpr (kAsym) mw[q] = halves_at(w + 4 * q, off + offsetof(BlockQ4, m));  // same offset in Q3/Q2
        }
      }
      EDGEMOE_UNROLL for (int u = 0; u < T; ++u) {
        const BlockQ8A& a = x[u][g];
        const int8x16_t x0 = vld1q_s8(a.qs), x1 = vld1q_s8(a.qs + 16);
        EDGEMOE_UNROLL for (int q = 0; q < Q; ++q) {
          const int8x16_t* a0 = w0 + 4 * q;
          const int8x16_t* a1 = w1 + 4 * q;
          const int32x4_t s = fold4(Dot::dot32(a0[0], a1[0], x0, x1), Dot::dot32(a0[1], a1[1], x0, x1),
                                    Dot::dot32(a0[2], a1[2], x0, x1), Dot::dot32(a0[3], a1[3], x0, x1));
          acc[q][u] = vfmaq_f32(acc[q][u], vcvtq_f32_s32(s), vmulq_n_f32(dw[q], a.d));
          if constexpr (kAsym) acc[q][u] = vfmaq_n_f32(acc[q][u], mw[q], a.d * (float)a.sum);
        }
      }
    }
    EDGEMOE_UNROLL for (int q = 0; q < Q; ++q)
      EDGEMOE_UNROLL for (int u = 0; u < T; ++u)
        store_rows(j.y + (t + u) * j.ldy + r + 4 * q, acc[q][u], nrows - 4 * q);
  }
};

// F32 / F16 weights against float activations, 8 elements per step; any k
// (a 4-element step and then scalar code finish the row).
template <bool Half>
struct TileFloat {
  static void load8(const uint8_t* row, int64_t e, float32x4_t& lo, float32x4_t& hi) {
    if constexpr (Half) {
      const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t*)row + e));
      lo = vcvt_f32_f16(vget_low_f16(h));
      hi = vcvt_high_f32_f16(h);
    } else {
      lo = vld1q_f32((const float*)row + e);
      hi = vld1q_f32((const float*)row + e + 4);
    }
  }
  static float32x4_t load4(const uint8_t* row, int64_t e) {
    if constexpr (Half)
      return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)row + e)));
    else
      return vld1q_f32((const float*)row + e);
  }
  static float load1(const uint8_t* row, int64_t e) {
    if constexpr (Half)
      return half_at(row + 2 * e);
    else
      return ((const float*)row)[e];
  }

  template <int Q, int T>
  static void run(const Job& j, int64_t r, int nrows, int64_t t) {
    constexpr int R = 4 * Q;
    const uint8_t* w[R];
    row_pointers<R>(j, r, nrows, w);
    const float* x[T];
    EDGEMOE_UNROLL for (int u = 0; u < T; ++u) x[u] = j.x + (t + u) * j.k;
    float32x4_t acc[R][T];
    EDGEMOE_UNROLL for (int i = 0; i < R; ++i)
      EDGEMOE_UNROLL for (int u = 0; u < T; ++u) acc[i][u] = vdupq_n_f32(0.0f);

    int64_t e = 0;
    for (; e + 8 <= j.k; e += 8) {
      constexpr int64_t per_line = Half ? 32 : 16;  // elements per 64-byte line
      if (e % per_line == 0) {
        EDGEMOE_UNROLL for (int i = 0; i < R; ++i) prefetch(w[i] + e * (Half ? 2 : 4));
      }
      float32x4_t lo[R], hi[R];
      EDGEMOE_UNROLL for (int i = 0; i < R; ++i) load8(w[i], e, lo[i], hi[i]);
      EDGEMOE_UNROLL for (int u = 0; u < T; ++u) {
        const float32x4_t x0 = vld1q_f32(x[u] + e), x1 = vld1q_f32(x[u] + e + 4);
        EDGEMOE_UNROLL for (int i = 0; i < R; ++i)
          acc[i][u] = vfmaq_f32(vfmaq_f32(acc[i][u], lo[i], x0), hi[i], x1);
      }
    }
    if (e + 4 <= j.k) {
      EDGEMOE_UNROLL for (int i = 0; i < R; ++i) {
        const float32x4_t wv = load4(w[i], e);
        EDGEMOE_UNROLL for (int u = 0; u < T; ++u) acc[i][u] = vfmaq_f32(acc[i][u], wv, vld1q_f32(x[u] + e));
      }
      e += 4;
    }
    // The last k % 4 elements, in scalar code (kept apart from the vector
    // accumulators so those can stay in registers).
    float tail[R][T] = {};
    for (int64_t ee = e; ee < j.k; ++ee)
      EDGEMOE_UNROLL for (int i = 0; i < R; ++i)
        EDGEMOE_UNROLL for (int u = 0; u < T; ++u) tail[i][u] += load1(w[i], ee) * x[u][ee];
    EDGEMOE_UNROLL for (int q = 0; q < Q; ++q)
      EDGEMOE_UNROLL for (int u = 0; u < T; ++u) {
        const int i = 4 * q;
        const float32x4_t s = fold4(acc[i][u], acc[i + 1][u], acc[i + 2][u], acc[i + 3][u]);
        const float t4[4] = {tail[i][u], tail[i + 1][u], tail[i + 2][u], tail[i + 3][u]};
        store_rows(j.y + (t + u) * j.ldy + r + i, vaddq_f32(s, vld1q_f32(t4)), nrows - i);
      }
  }
};

// ---- drivers: cover [r0, r1) x [0, n) with tiles ----

template <class Tile>
void run_tiles(const Job& j, int64_t r0, int64_t r1, int64_t n, size_t token_bytes) {
  auto rows_left = [&](int64_t r, int64_t most) { return (int)std::min<int64_t>(most, r1 - r); };
  if (n == 1) {
    // Decode: a matvec bound by streaming the weights. Eight rows (two
    // quads) keep eight weight streams in flight, as on x86.
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8) Tile::template run<2, 1>(j, r, 8, 0);
    for (; r < r1; r += 4) Tile::template run<1, 1>(j, r, rows_left(r, 4), 0);
    return;
  }
  // Prefill: 4 rows x 4 tokens; a block's tokens stream past one quad of
  // rows, which stays in L1.
  const int64_t block = std::max<int64_t>(4, (int64_t)(kTokenBlockBytes / token_bytes) / 4 * 4);
  for (int64_t t0 = 0; t0 < n; t0 += block) {
    const int64_t t1 = std::min(n, t0 + block);
    for (int64_t r = r0; r < r1; r += 4) {
      const int nrows = rows_left(r, 4);
      int64_t t = t0;
      for (; t + 4 <= t1; t += 4) Tile::template run<1, 4>(j, r, nrows, t);
      for (; t < t1; ++t) Tile::template run<1, 1>(j, r, nrows, t);
    }
  }
}

template <class Dot>
inline void matmul_rows_with(QType type, const void* W, int64_t k, int64_t r0, int64_t r1, const float* x,
                             const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
  const Job j{(const uint8_t*)W, qtype_row_bytes(type, k), k, k / kGroup, x, xq, y, ldy};
  const size_t qx_bytes = (size_t)j.nb * sizeof(BlockQ8A), fx_bytes = (size_t)k * sizeof(float);
  switch (type) {
    case QType::F32:
      return run_tiles<TileFloat<false>>(j, r0, r1, n, fx_bytes);
    case QType::F16:
      return run_tiles<TileFloat<true>>(j, r0, r1, n, fx_bytes);
    case QType::Q8:
      return run_tiles<TileInt<Dot, QType::Q8>>(j, r0, r1, n, qx_bytes);
    case QType::Q4:
      return run_tiles<TileInt<Dot, QType::Q4>>(j, r0, r1, n, qx_bytes);
    case QType::Q3:
      return run_tiles<TileInt<Dot, QType::Q3>>(j, r0, r1, n, qx_bytes);
    case QType::Q2:
      return run_tiles<TileInt<Dot, QType::Q2>>(j, r0, r1, n, qx_bytes);
    case QType::Q4K:
      return run_tiles<TileInt<Dot, QType::Q4K>>(j, r0, r1, n, qx_bytes);
    case QType::MXFP4:
      return run_tiles<TileInt<Dot, QType::MXFP4>>(j, r0, r1, n, qx_bytes);
  }
}

void matmul_rows_neon(QType type, const void* W, int64_t k, int64_t r0, int64_t r1, const float* x,
                      const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
  matmul_rows_with<DotSmull>(type, W, k, r0, r1, x, xq, n, y, ldy);
}

const KernelTable kNeon = {Isa::Neon, quantize_activations_neon, matmul_rows_neon,
                           to_f16_neon, scores_f16_neon, weighted_sum_f16_neon, delta_rule_neon};

#if EDGEMOE_HAVE_SDOT
// flatten: inline the whole tile tree here, so it is compiled with the
// target attribute and DotSdot::dot32 inlines into it (see the top).
EDGEMOE_SDOT_TARGET __attribute__((flatten))
void matmul_rows_neon_sdot(QType type, const void* W, int64_t k, int64_t r0, int64_t r1, const float* x,
                           const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
  matmul_rows_with<DotSdot>(type, W, k, r0, r1, x, xq, n, y, ldy);
}

const KernelTable kNeonSdot = {Isa::Neon, quantize_activations_neon, matmul_rows_neon_sdot,
                               to_f16_neon, scores_f16_neon, weighted_sum_f16_neon, delta_rule_neon};

bool cpu_has_dotprod() {
#if defined(__ARM_FEATURE_DOTPROD)
  return true;  // the build requires it already
#elif defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
  return false;
#endif
}
#endif

}  // namespace

const KernelTable* neon_kernels() {
#if EDGEMOE_HAVE_SDOT
  static const KernelTable* table = cpu_has_dotprod() ? &kNeonSdot : &kNeon;
  return table;
#else
  return &kNeon;
#endif
}

const KernelTable* neon_fallback_kernels() { return &kNeon; }

const char* neon_dot_path() { return neon_kernels() == &kNeon ? "smull" : "sdot"; }

}  // namespace edgemoe

#else  // not AArch64

namespace edgemoe {
const KernelTable* neon_kernels() { return nullptr; }
const KernelTable* neon_fallback_kernels() { return nullptr; }
const char* neon_dot_path() { return ""; }
}  // namespace edgemoe

#endif
