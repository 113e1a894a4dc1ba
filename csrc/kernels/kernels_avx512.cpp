// AVX-512 (F, BW, VL, VNNI) kernels.
//
// Same tiling as kernels_avx2.cpp (R weight rows x T tokens per register
// tile, L2-sized token blocks for prefill); what changes is the inner step:
//  * one 512-bit register holds two 32-element groups, so every integer and
//    float instruction covers two groups;
//  * VNNI's vpdpbusd (u8 x s8, 4-way sums into int32) replaces the AVX2
//    maddubs + madd pair.
// Activation quantization is cheap next to the matmul; the AVX2 version is
// reused (every CPU with these extensions also has AVX2/FMA/F16C).
//
// Like the AVX2 file, every function carries its own target attribute so a
// portable build compiles it, and avx512_kernels() checks the running CPU.
#include "variants.h"

#if defined(__x86_64__) || defined(__i386__)

// GCC 12's AVX-512 intrinsics fill "don't care" lanes with a self-initialised
// variable (_mm512_undefined_*), which trips -Wuninitialized once inlined
// into target-attributed code. The warning is about the header, not us.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstring>

#define EDGEMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

namespace edgemoe {

namespace {

constexpr size_t kTokenBlockBytes = 256 * 1024;  // see kernels_avx2.cpp

struct Job {
  const uint8_t* W;
  size_t row_bytes;
  int64_t k;
  int64_t nb;
  const float* x;
  const BlockQ8A* xq;
  float* y;
  int64_t ldy;
};

// See kernels_avx2.cpp: the same byte of the next tile's rows.
// The address may lie past the end of the weights; a prefetch never faults.
EDGEMOE_AVX512 inline void prefetch(const void* p, size_t ahead) {
  _mm_prefetch((const char*)((uintptr_t)p + ahead), _MM_HINT_T0);
}

// Lanes [0, 8) get v[0] and lanes [8, 16) get v[hi]: two per-group scalars
// become the per-group halves of a zmm, matching the two-group data layout.
template <int hi>
EDGEMOE_AVX512 inline __m512 spread(__m128 v) {
  const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, hi, hi, hi, hi, hi, hi, hi, hi);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

EDGEMOE_AVX512 inline __m128i load32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm_cvtsi32_si128(v);
}

// Group g's 32 activation codes in the low half, group g + 1's in the high
// half (zeros when Two is false, for the odd last group).
template <bool Two>
EDGEMOE_AVX512 inline __m512i load_x_pair(const BlockQ8A* b) {
  const __m512i lo = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)b[0].qs));
  if constexpr (Two) return _mm512_inserti64x4(lo, _mm256_loadu_si256((const __m256i*)b[1].qs), 1);
  return lo;
}

// ---- symmetric blocks (Q8, MXFP4) x Q8A ----
// vpdpbusd wants one unsigned operand. Shift the activations to unsigned
// (x + 128, a free xor of the sign bit) and subtract the excess 128 * sum(w)
// by starting the accumulator at -128 * sum(w), computed once per weight
// group and shared by all tokens of the tile: one vpdpbusd per (row, token).
// The weight type supplies, for a pair of groups, the signed 8-bit weights
// (group g in the low half, g + 1 in the high half) and the two scales.
template <class Weights>
struct TileSymmetric {
  using Block = typename Weights::Block;

  template <bool Two, int R, int T>
  EDGEMOE_AVX512 static void step(const Block* const* w, const BlockQ8A* const* x, int64_t g, __m512 (&acc)[R][T],
                                  size_t ahead) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i qw[R], base[R];
    __m128 dw[R];  // [d0, d1, ...]
    for (int i = 0; i < R; ++i) {
      const Block* b = w[i] + g;
      prefetch(b, ahead);
      qw[i] = Weights::template pair<Two>(b);
      base[i] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, qw[i]));
      dw[i] = Weights::template scales<Two>(b);
    }
    for (int u = 0; u < T; ++u) {
      const BlockQ8A* a = x[u] + g;
      const __m512i xu = _mm512_xor_si512(load_x_pair<Two>(a), bias);
      const __m128 dx = _mm_unpacklo_ps(_mm_load_ss(&a[0].d), Two ? _mm_load_ss(&a[1].d) : _mm_setzero_ps());
      for (int i = 0; i < R; ++i) {
        const __m512i p = _mm512_dpbusd_epi32(base[i], xu, qw[i]);
        acc[i][u] = _mm512_fmadd_ps(spread<1>(_mm_mul_ps(dw[i], dx)), _mm512_cvtepi32_ps(p), acc[i][u]);
      }
    }
  }

  template <int R, int T>
  EDGEMOE_AVX512 static void run(const Job& j, int64_t r, int64_t t) {
    const Block* w[R];
    for (int i = 0; i < R; ++i) w[i] = (const Block*)(j.W + (size_t)(r + i) * j.row_bytes);
    const BlockQ8A* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    __m512 acc[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 2 <= j.nb; g += 2) step<true, R, T>(w, x, g, acc, R * j.row_bytes);
    if (g < j.nb) step<false, R, T>(w, x, g, acc, R * j.row_bytes);
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) j.y[(t + u) * j.ldy + r + i] = _mm512_reduce_add_ps(acc[i][u]);
  }
};

struct WeightsQ8 {
  using Block = BlockQ8;
  template <bool Two>
  EDGEMOE_AVX512 static __m512i pair(const BlockQ8* b) {
    const __m512i lo = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)b[0].qs));
    return Two ? _mm512_inserti64x4(lo, _mm256_loadu_si256((const __m256i*)b[1].qs), 1) : lo;
  }
  template <bool Two>  // the fp16 pair from the two block heads
  EDGEMOE_AVX512 static __m128 scales(const BlockQ8* b) {
    return _mm_cvtph_ps(_mm_unpacklo_epi16(load32(b), Two ? load32(b + 1) : _mm_setzero_si128()));
  }
};

// MXFP4: the weights looked up from the 4-bit codes (the doubled E2M1 values,
// within +-12: vpshufb on a 16-byte table), the scale half of 2^(e - 127).
struct WeightsMXFP4 {
  using Block = BlockMXFP4;
  // A block's 32 codes, one byte each in element order (low nibbles, then high).
  EDGEMOE_AVX512 static __m256i codes(const BlockMXFP4& b) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)b.qs));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
  }
  template <bool Two>
  EDGEMOE_AVX512 static __m512i pair(const BlockMXFP4* b) {
    const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)kMxfp4Doubled));
    const __m512i lo = _mm512_zextsi256_si512(codes(b[0]));
    return _mm512_shuffle_epi8(table, Two ? _mm512_inserti64x4(lo, codes(b[1]), 1) : lo);
  }
  template <bool Two>
  EDGEMOE_AVX512 static __m128 scales(const BlockMXFP4* b) {
    return _mm_setr_ps(e8m0_half(b[0].e), Two ? e8m0_half(b[1].e) : 0.f, 0.f, 0.f);
  }
};

using TileQ8 = TileSymmetric<WeightsQ8>;
using TileMXFP4 = TileSymmetric<WeightsMXFP4>;

// ---- Q4 and Q4K x Q8A ----
// The nibbles are unsigned, so vpdpbusd takes them as they are. Scales for
// the two groups travel in one 128-bit register, [d0, m0, d1, m1] times
// [dx0, dx0*sum0, dx1, dx1*sum1]: lanes 0 and 2 are the product scales,
// lanes 1 and 3 the offset terms m * dx * sum(qx), accumulated as they are.
struct TileQ4 {
  template <bool Two, int R, int T>
  EDGEMOE_AVX512 static void step(const BlockQ4* const* w, const BlockQ8A* const* x, int64_t g, __m512 (&acc)[R][T],
                                  __m128 (&offset)[R][T], size_t ahead) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    // Each group's 16 bytes in two adjacent 128-bit lanes, the second copy
    // shifted by 4: low nibbles (elements 0..15) then high (16..31).
    const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    const __m128 one = _mm_set1_ps(1.0f);
    __m512i qw[R];
    __m128 dm[R];
    for (int i = 0; i < R; ++i) {
      const BlockQ4* b = w[i] + g;
      prefetch(b, ahead);
      const __m256i q0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)b[0].qs));
      const __m256i q1 = Two ? _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)b[1].qs)) : _mm256_setzero_si256();
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
      qw[i] = _mm512_and_si512(_mm512_srlv_epi64(both, nibble_shift), low4);
      dm[i] = _mm_cvtph_ps(_mm_unpacklo_epi32(load32(b), Two ? load32(b + 1) : _mm_setzero_si128()));
    }
    for (int u = 0; u < T; ++u) {
      const BlockQ8A* a = x[u] + g;
      const __m512i qx = load_x_pair<Two>(a);
      // BlockQ8A starts with {float d, int32 sum}: gather both groups' pairs.
      const __m128i ds = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i*)a),
                                            Two ? _mm_loadl_epi64((const __m128i*)(a + 1)) : _mm_setzero_si128());
      const __m128 d = _mm_moveldup_ps(_mm_castsi128_ps(ds));                    // [dx0, dx0, dx1, dx1]
      const __m128 dsx = _mm_mul_ps(d, _mm_blend_ps(one, _mm_cvtepi32_ps(ds), 0xa));  // [dx0, dx0*s0, dx1, dx1*s1]
      for (int i = 0; i < R; ++i) {
        const __m128 s = _mm_mul_ps(dm[i], dsx);
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qw[i], qx);
        acc[i][u] = _mm512_fmadd_ps(spread<2>(s), _mm512_cvtepi32_ps(p), acc[i][u]);
        offset[i][u] = _mm_add_ps(offset[i][u], s);
      }
    }
  }

  template <int R, int T>
  EDGEMOE_AVX512 static void run(const Job& j, int64_t r, int64_t t) {
    const BlockQ4* w[R];
    for (int i = 0; i < R; ++i) w[i] = (const BlockQ4*)(j.W + (size_t)(r + i) * j.row_bytes);
    const BlockQ8A* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    __m512 acc[R][T];
    __m128 offset[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm512_setzero_ps(), offset[i][u] = _mm_setzero_ps();
    int64_t g = 0;
    for (; g + 2 <= j.nb; g += 2) step<true, R, T>(w, x, g, acc, offset, R * j.row_bytes);
    if (g < j.nb) step<false, R, T>(w, x, g, acc, offset, R * j.row_bytes);
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) {
        const __m128 o = _mm_movehdup_ps(offset[i][u]);  // offset terms (lanes 1, 3) to lanes 0, 2
        j.y[(t + u) * j.ldy + r + i] = _mm512_reduce_add_ps(acc[i][u]) + _mm_cvtss_f32(_mm_add_ss(o, _mm_movehl_ps(o, o)));
      }
  }
};

// Q4K: groups 2c and 2c + 1 of a super-block share 32 bytes (low nibbles,
// high nibbles), exactly one zmm of codes. A group's product scale is
// d * sc (the row's) times dx (the token's); its offset term is
// -dmin * mn * dx * sum(qx). Per super-block, each token's dx (spread over
// the lanes of its group pair) and dx * sum(qx) are set up once and shared by
// the tile's rows; each row then unpacks its eight scales once, adds its
// eight offset terms with one FMA, and per pair of groups spreads its two
// scales over the pair's lanes.
struct TileQ4K {
  // Lanes 0-7 take element 2c of an 8-float vector, lanes 8-15 element 2c + 1.
  EDGEMOE_AVX512 static __m512 spread_pair(__m512 v8, int c) {
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(2 * c),
                                         _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    return _mm512_permutexvar_ps(idx, v8);
  }

  // The eight 6-bit scales (or minimums) of a block as floats times `by`.
  EDGEMOE_AVX512 static __m256 scaled(uint64_t six_bit, float by) {
    const int64_t v = (int64_t)six_bit;
    return _mm256_mul_ps(_mm256_set1_ps(by), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v))));
  }

  template <int R, int T>
  EDGEMOE_AVX512 static void run(const Job& j, int64_t r, int64_t t) {
    const BlockQ4K* w[R];
    for (int i = 0; i < R; ++i) w[i] = (const BlockQ4K*)(j.W + (size_t)(r + i) * j.row_bytes);
    const BlockQ8A* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512 acc[R][T];
    __m256 offset[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm512_setzero_ps(), offset[i][u] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < j.nb / 8; ++sb) {
      __m512 dx[T][4];  // per token and group pair: dx of group 2c in lanes 0-7, of 2c + 1 in 8-15
      __m256 dx_sum[T];  // per token: dx * sum(qx) of the eight groups
      for (int u = 0; u < T; ++u) {
        const BlockQ8A* a = x[u] + sb * 8;
        float d8[8], s8[8];
        for (int g = 0; g < 8; ++g) d8[g] = a[g].d, s8[g] = (float)a[g].sum;
        const __m256 d = _mm256_loadu_ps(d8);
        dx_sum[u] = _mm256_mul_ps(d, _mm256_loadu_ps(s8));
        for (int c = 0; c < 4; ++c) dx[u][c] = spread_pair(_mm512_castps256_ps512(d), c);
      }
      for (int i = 0; i < R; ++i) {
        const BlockQ4K& b = w[i][sb];
        uint64_t sc, mn;
        q4k_unpack_scales(b.scales, &sc, &mn);
        const __m512 scale = _mm512_castps256_ps512(scaled(sc, _cvtsh_ss(b.d)));
        const __m256 minimum = scaled(mn, -_cvtsh_ss(b.dmin));
        for (int u = 0; u < T; ++u) offset[i][u] = _mm256_fmadd_ps(minimum, dx_sum[u], offset[i][u]);
        for (int c = 0; c < 4; ++c) {
          const uint8_t* q = b.qs + 32 * c;
          prefetch(q, R * j.row_bytes);
          const __m256i packed = _mm256_loadu_si256((const __m256i*)q);
          const __m512i qw = _mm512_and_si512(
              _mm512_inserti64x4(_mm512_castsi256_si512(packed), _mm256_srli_epi16(packed, 4), 1), low4);
          const __m512 sw = spread_pair(scale, c);
          for (int u = 0; u < T; ++u) {
            const __m512i qx = load_x_pair<true>(x[u] + sb * 8 + 2 * c);
            const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qw, qx);
            acc[i][u] = _mm512_fmadd_ps(_mm512_mul_ps(sw, dx[u][c]), _mm512_cvtepi32_ps(p), acc[i][u]);
          }
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) {
        const __m256 o = offset[i][u];
        const __m128 o4 = _mm_add_ps(_mm256_castps256_ps128(o), _mm256_extractf128_ps(o, 1));
        const __m128 o2 = _mm_add_ps(o4, _mm_movehl_ps(o4, o4));
        j.y[(t + u) * j.ldy + r + i] = _mm512_reduce_add_ps(acc[i][u]) + _mm_cvtss_f32(_mm_add_ss(o2, _mm_movehdup_ps(o2)));
      }
  }
};

// ---- F32 / F16 ----
// 16 elements per step; the ragged end uses masked loads (masked-off lanes
// read as zero and touch no memory), so any k works without a scalar tail.
template <bool Half>
struct TileFloat {
  EDGEMOE_AVX512 static __m512 load(const uint8_t* row, int64_t e, __mmask16 m) {
    if constexpr (Half)
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t*)row + e));
    else
      return _mm512_maskz_loadu_ps(m, (const float*)row + e);
  }

  template <int R, int T>
  EDGEMOE_AVX512 static void step(const uint8_t* const* w, const float* const* x, int64_t e, __mmask16 m,
                                  __m512 (&acc)[R][T], size_t ahead) {
    __m512 wv[R];
    if (!Half || e % 32 == 0)  // one prefetch per 64-byte line
      for (int i = 0; i < R; ++i) prefetch(w[i] + e * (Half ? 2 : 4), ahead);
    for (int i = 0; i < R; ++i) wv[i] = load(w[i], e, m);
    for (int u = 0; u < T; ++u) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x[u] + e);
      for (int i = 0; i < R; ++i) acc[i][u] = _mm512_fmadd_ps(wv[i], xv, acc[i][u]);
    }
  }

  template <int R, int T>
  EDGEMOE_AVX512 static void run(const Job& j, int64_t r, int64_t t) {
    const uint8_t* w[R];
    for (int i = 0; i < R; ++i) w[i] = j.W + (size_t)(r + i) * j.row_bytes;
    const float* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.x + (t + u) * j.k;
    __m512 acc[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm512_setzero_ps();
    int64_t e = 0;
    for (; e + 16 <= j.k; e += 16) step<R, T>(w, x, e, (__mmask16)0xffff, acc, R * j.row_bytes);
    if (e < j.k) step<R, T>(w, x, e, (__mmask16)((1u << (j.k - e)) - 1), acc, R * j.row_bytes);
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) j.y[(t + u) * j.ldy + r + i] = _mm512_reduce_add_ps(acc[i][u]);
  }
};

// ---- drivers (same shape as the AVX2 ones, bigger tiles: 32 registers) ----

template <class Tile, int R>
EDGEMOE_AVX512 void token_tiles(const Job& j, int64_t r, int64_t t0, int64_t t1) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) Tile::template run<R, 4>(j, r, t);
  for (; t < t1; ++t) Tile::template run<R, 1>(j, r, t);
}

template <class Tile>
EDGEMOE_AVX512 void run_tiles(const Job& j, int64_t r0, int64_t r1, int64_t n, size_t token_bytes) {
  if (n == 1) {
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8) Tile::template run<8, 1>(j, r, 0);
    for (; r < r1; ++r) Tile::template run<1, 1>(j, r, 0);
    return;
  }
  const int64_t block = std::max<int64_t>(4, (int64_t)(kTokenBlockBytes / token_bytes) / 4 * 4);
  for (int64_t t0 = 0; t0 < n; t0 += block) {
    const int64_t t1 = std::min(n, t0 + block);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) token_tiles<Tile, 4>(j, r, t0, t1);
    for (; r < r1; ++r) token_tiles<Tile, 1>(j, r, t0, t1);
  }
}

EDGEMOE_AVX512 void matmul_rows_avx512(QType type, const void* W, int64_t k, int64_t r0, int64_t r1,
                                       const float* x, const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
  const Job j{(const uint8_t*)W, qtype_row_bytes(type, k), k, k / kGroup, x, xq, y, ldy};
  const size_t qx_bytes = (size_t)j.nb * sizeof(BlockQ8A), fx_bytes = (size_t)k * sizeof(float);
  switch (type) {
    case QType::F32:
      return run_tiles<TileFloat<false>>(j, r0, r1, n, fx_bytes);
    case QType::F16:
      return run_tiles<TileFloat<true>>(j, r0, r1, n, fx_bytes);
    case QType::Q8:
      return run_tiles<TileQ8>(j, r0, r1, n, qx_bytes);
    case QType::Q4:
      return run_tiles<TileQ4>(j, r0, r1, n, qx_bytes);
    case QType::Q4K:
      return run_tiles<TileQ4K>(j, r0, r1, n, qx_bytes);
    case QType::MXFP4:
      return run_tiles<TileMXFP4>(j, r0, r1, n, qx_bytes);
    case QType::Q3:
    case QType::Q2:
      // Every AVX-512 CPU has AVX2: its tiles unpack these codes 32 at a time.
      return avx2_kernels()->matmul_rows(type, W, k, r0, r1, x, xq, n, y, ldy);
  }
}

}  // namespace

const KernelTable* avx512_kernels() {
  static const KernelTable* table = []() -> const KernelTable* {
    const KernelTable* avx2 = avx2_kernels();  // also checks avx2/fma/f16c
    if (!avx2) return nullptr;
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")))
      return nullptr;
    // The KV-cache loops are memory-bound: AVX2's serve (kv_f16.cpp).
    static const KernelTable t = {Isa::Avx512, avx2->quantize_activations, matmul_rows_avx512,
                                  avx2->to_f16, avx2->scores_f16, avx2->weighted_sum_f16,
                                  delta_rule_avx512};
    return &t;
  }();
  return table;
}

}  // namespace edgemoe

#else  // not x86

namespace edgemoe {
const KernelTable* avx512_kernels() { return nullptr; }
}  // namespace edgemoe

#endif
