// AVX2 + FMA + F16C kernels.
//
// Every function carries its own target attribute instead of relying on the
// build flags: a portable build (no -march) still compiles this file, and
// avx2_kernels() only hands the table out when the running CPU has the
// instructions.
//
// Structure: a matmul is cut into R x T tiles (R weight rows x T tokens) whose
// accumulators live in registers. Each weight group is loaded (and, for Q4,
// unpacked) once per tile and reused for all T tokens. For prefill batches the
// tokens are also cut into blocks whose activations fit in L2, so a weight row
// stays in L1 while the block's tokens stream past it.
#include "variants.h"

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#define EDGEMOE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace edgemoe {

namespace {

// Activation bytes per token block in prefill: about a quarter of a typical
// L2, leaving room for the weight rows and the output.
constexpr size_t kTokenBlockBytes = 256 * 1024;

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

EDGEMOE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

EDGEMOE_AVX2 inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

EDGEMOE_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Same arithmetic as the scalar reference (amax, d = amax/127, q = rne(x * 1/d)),
// so both produce identical blocks.
EDGEMOE_AVX2 void quantize_activations_avx2(const float* x, int64_t n, int64_t k, BlockQ8A* out) {
  const int64_t nb = k / kGroup;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  // packs_epi32 + packs_epi16 interleave the 128-bit lanes; this puts the
  // 4-byte chunks back in element order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < nb; ++g) {
      const float* v = x + t * k + g * kGroup;
      BlockQ8A& b = out[t * nb + g];
      __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
      __m256 v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
      const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                                     _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
      const float amax = hmax(m);
      const float d = amax / 127.0f;
      const float id = d >= kMinActivationScale ? 1.0f / d : 0.0f;
      const __m256 s = _mm256_set1_ps(id);
      constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
      // max(v, lo) returns lo for NaN, matching the scalar fmax clamp.
      v0 = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(v0, s), kRound), lo), hi);
      v1 = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(v1, s), kRound), lo), hi);
      v2 = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(v2, s), kRound), lo), hi);
      v3 = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(v3, s), kRound), lo), hi);
      const __m256i i0 = _mm256_cvtps_epi32(v0), i1 = _mm256_cvtps_epi32(v1);
      const __m256i i2 = _mm256_cvtps_epi32(v2), i3 = _mm256_cvtps_epi32(v3);
      const __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
      _mm256_storeu_si256((__m256i*)b.qs, _mm256_permutevar8x32_epi32(q, order));
      b.d = d;
      b.sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    }
  }
}

// ---- tiles: R weight rows x T tokens, y written for all R*T pairs ----

// Decode streams weights from DRAM while doing real work on every byte, and
// the hardware prefetcher alone then leaves bandwidth unused. A tile reads R
// rows side by side; the rows of a matrix are contiguous, so each read asks
// for the same byte of the next tile's rows, R rows further: one tile of data
// ahead, whatever the row length. Measured single-threaded on matrices far
// larger than the caches (bench note in bench/RESULTS.md, 2026-11-23): q4
// 17 -> 31 GB/s, q8 20 -> 29 with AVX-512 (a fixed 1024 bytes ahead, the
// previous rule, mostly landed in rows the tile was reading already).
// The address may lie past the end of the weights; a prefetch never faults.
EDGEMOE_AVX2 inline void prefetch(const void* p, size_t ahead) {
  _mm_prefetch((const char*)((uintptr_t)p + ahead), _MM_HINT_T0);
}

// The fp16 numbers at the start of a weight block, widened to floats in one
// instruction: lane 0 = d, lane 1 = the next half (m for Q4, junk for Q8).
EDGEMOE_AVX2 inline __m128 block_head(const void* block) {
  int32_t bits;
  std::memcpy(&bits, block, sizeof bits);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
}

// Symmetric blocks (Q8, MXFP4) x Q8A. maddubs multiplies unsigned by signed
// bytes, so move the weight's sign onto the activation: |w| * (x * sign(w)) =
// w * x. Pair sums stay below 2 * 128 * 127 < 32767, so the 16-bit stage
// cannot saturate (even for a stray -128 weight, whose "absolute value" 0x80
// reads as unsigned 128). The weight type supplies a group's 32 signed 8-bit
// weights and its scale (in lane 0).
template <class Weights>
struct TileSymmetric {
  using Block = typename Weights::Block;
  template <int R, int T>
  EDGEMOE_AVX2 static void run(const Job& j, int64_t r, int64_t t) {
    const Block* w[R];
    for (int i = 0; i < R; ++i) w[i] = (const Block*)(j.W + (size_t)(r + i) * j.row_bytes);
    const BlockQ8A* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm256_setzero_ps();

    for (int64_t g = 0; g < j.nb; ++g) {
      __m256i qw[R], aw[R];
      __m128 dw[R];
      for (int i = 0; i < R; ++i) {
        prefetch(w[i] + g, R * j.row_bytes);
        qw[i] = Weights::weights(w[i][g]);
        aw[i] = _mm256_sign_epi8(qw[i], qw[i]);
        dw[i] = Weights::scale(w[i][g]);
      }
      for (int u = 0; u < T; ++u) {
        const __m256i qx = _mm256_loadu_si256((const __m256i*)x[u][g].qs);
        const __m128 dx = _mm_load_ss(&x[u][g].d);
        for (int i = 0; i < R; ++i) {
          const __m256i p16 = _mm256_maddubs_epi16(aw[i], _mm256_sign_epi8(qx, qw[i]));
          const __m256i p32 = _mm256_madd_epi16(p16, ones);
          const __m256 scale = _mm256_broadcastss_ps(_mm_mul_ss(dw[i], dx));
          acc[i][u] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p32), acc[i][u]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) j.y[(t + u) * j.ldy + r + i] = hsum(acc[i][u]);
  }
};

struct WeightsQ8 {
  using Block = BlockQ8;
  EDGEMOE_AVX2 static __m256i weights(const BlockQ8& b) { return _mm256_loadu_si256((const __m256i*)b.qs); }
  EDGEMOE_AVX2 static __m128 scale(const BlockQ8& b) { return block_head(&b); }
};

// MXFP4: the weights looked up from the 4-bit codes (the doubled E2M1 values,
// within +-12), the scale half of the block's 2^(e - 127).
struct WeightsMXFP4 {
  using Block = BlockMXFP4;
  EDGEMOE_AVX2 static __m256i weights(const BlockMXFP4& b) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)kMxfp4Doubled));
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)b.qs));
    const __m256i codes = _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
    return _mm256_shuffle_epi8(table, codes);
  }
  EDGEMOE_AVX2 static __m128 scale(const BlockMXFP4& b) { return _mm_set_ss(e8m0_half(b.e)); }
};

using TileQ8 = TileSymmetric<WeightsQ8>;
using TileMXFP4 = TileSymmetric<WeightsMXFP4>;

// The 32 unsigned codes of a low-bit block, one per byte in element order.
struct CodesQ4 {
  using Block = BlockQ4;
  EDGEMOE_AVX2 static __m256i unpack(const BlockQ4& b) {
    // Low nibbles are elements 0..15, high nibbles 16..31: the same 16 bytes
    // in both lanes, the upper lane shifted by 4, give all 32 in order.
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)b.qs));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
  }
};

// Two-bit fields: the 8 bytes in every 64-bit lane, lane i shifted by 2i,
// give elements 8i .. 8i+7 in order.
EDGEMOE_AVX2 inline __m256i unpack_2bit(const uint8_t* qs) {
  int64_t bits;
  std::memcpy(&bits, qs, sizeof bits);
  const __m256i all = _mm256_set1_epi64x(bits);
  return _mm256_and_si256(_mm256_srlv_epi64(all, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3));
}

struct CodesQ2 {
  using Block = BlockQ2;
  EDGEMOE_AVX2 static __m256i unpack(const BlockQ2& b) { return unpack_2bit(b.qs); }
};

struct CodesQ3 {
  using Block = BlockQ3;
  EDGEMOE_AVX2 static __m256i unpack(const BlockQ3& b) {
    // Third bits: byte i takes qh byte i/8 and keeps bit i%8, then becomes 4 or 0.
    int32_t bits;
    std::memcpy(&bits, b.qh, sizeof bits);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits), _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                    0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(4));
    return _mm256_or_si256(unpack_2bit(b.ql), high);
  }
};

// Low-bit asymmetric blocks (Q4, Q3, Q2) x Q8A. The codes are unsigned, so
// maddubs takes them directly (no sign juggling). Scales are handled two at a
// time in one 128-bit register: [d, m] x [dx, dx * sum(qx)] gives the group's
// product scale in lane 0 and its offset term m * dx * sum(qx) in lane 1,
// which is accumulated as is.
template <class Codes>
struct TileLowBit {
  using Block = typename Codes::Block;
  template <int R, int T>
  EDGEMOE_AVX2 static void run(const Job& j, int64_t r, int64_t t) {
    const Block* w[R];
    for (int i = 0; i < R; ++i) w[i] = (const Block*)(j.W + (size_t)(r + i) * j.row_bytes);
    const BlockQ8A* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m128 one = _mm_set1_ps(1.0f);
    __m256 acc[R][T];
    __m128 offset[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm256_setzero_ps(), offset[i][u] = _mm_setzero_ps();

    for (int64_t g = 0; g < j.nb; ++g) {
      __m256i qw[R];
      __m128 dm[R];
      for (int i = 0; i < R; ++i) {
        prefetch(w[i] + g, R * j.row_bytes);
        qw[i] = Codes::unpack(w[i][g]);
        dm[i] = block_head(w[i] + g);  // [d, m, 0, 0]
      }
      for (int u = 0; u < T; ++u) {
        const BlockQ8A& a = x[u][g];
        const __m256i qx = _mm256_loadu_si256((const __m256i*)a.qs);
        const __m128 sum = _mm_cvtepi32_ps(_mm_set1_epi32(a.sum));
        const __m128 dsx = _mm_mul_ps(_mm_set1_ps(a.d), _mm_blend_ps(one, sum, 0x2));  // [dx, dx*sum, dx, dx]
        for (int i = 0; i < R; ++i) {
          const __m128 s = _mm_mul_ps(dm[i], dsx);  // [d*dx, m*dx*sum, 0, 0]
          const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(qw[i], qx), ones);
          acc[i][u] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), _mm256_cvtepi32_ps(p32), acc[i][u]);
          offset[i][u] = _mm_add_ps(offset[i][u], s);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u)
        j.y[(t + u) * j.ldy + r + i] = hsum(acc[i][u]) + _mm_cvtss_f32(_mm_movehdup_ps(offset[i][u]));
  }
};

// Q4K: each group is a Q4 group whose codes are the low or high nibbles of a
// 32-byte run. A group's product scale is d * sc (the row's) times dx (the
// token's), its offset term -dmin * mn * dx * sum(qx). Per super-block, each
// token's eight dx and dx * sum(qx) are loaded once and shared by the tile's
// rows; per row and token the eight product scales come from one multiply and
// the eight offset terms from one FMA.
struct TileQ4K {
  // The eight 6-bit scales (or minimums) of a block as floats times `by`.
  EDGEMOE_AVX2 static __m256 scaled(uint64_t six_bit, float by) {
    const int64_t v = (int64_t)six_bit;
    return _mm256_mul_ps(_mm256_set1_ps(by), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v))));
  }

  template <int R, int T>
  EDGEMOE_AVX2 static void run(const Job& j, int64_t r, int64_t t) {
    const BlockQ4K* w[R];
    for (int i = 0; i < R; ++i) w[i] = (const BlockQ4K*)(j.W + (size_t)(r + i) * j.row_bytes);
    const BlockQ8A* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.xq + (t + u) * j.nb;
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256 acc[R][T], offset[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm256_setzero_ps(), offset[i][u] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < j.nb / 8; ++sb) {
      __m256 dx[T], dx_sum[T];  // per token: the eight groups' dx and dx * sum(qx)
      for (int u = 0; u < T; ++u) {
        const BlockQ8A* a = x[u] + sb * 8;
        float d8[8], s8[8];
        for (int g = 0; g < 8; ++g) d8[g] = a[g].d, s8[g] = (float)a[g].sum;
        dx[u] = _mm256_loadu_ps(d8);
        dx_sum[u] = _mm256_mul_ps(dx[u], _mm256_loadu_ps(s8));
      }
      for (int i = 0; i < R; ++i) {
        const BlockQ4K& b = w[i][sb];
        uint64_t sc, mn;
        q4k_unpack_scales(b.scales, &sc, &mn);
        const __m256 scale = scaled(sc, _cvtsh_ss(b.d));
        const __m256 minimum = scaled(mn, -_cvtsh_ss(b.dmin));
        float product[T][8];  // d * sc * dx per token and group, broadcast from memory below
        for (int u = 0; u < T; ++u) {
          offset[i][u] = _mm256_fmadd_ps(minimum, dx_sum[u], offset[i][u]);
          _mm256_storeu_ps(product[u], _mm256_mul_ps(scale, dx[u]));
        }
        for (int c = 0; c < 4; ++c) {
          const uint8_t* q = b.qs + 32 * c;
          prefetch(q, R * j.row_bytes);
          const __m256i packed = _mm256_loadu_si256((const __m256i*)q);
          const __m256i qw[2] = {_mm256_and_si256(packed, low4), _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4)};
          for (int h = 0; h < 2; ++h)
            for (int u = 0; u < T; ++u) {
              const __m256i qx = _mm256_loadu_si256((const __m256i*)x[u][sb * 8 + 2 * c + h].qs);
              const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(qw[h], qx), ones);
              acc[i][u] = _mm256_fmadd_ps(_mm256_broadcast_ss(&product[u][2 * c + h]), _mm256_cvtepi32_ps(p32),
                                          acc[i][u]);
            }
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) j.y[(t + u) * j.ldy + r + i] = hsum(_mm256_add_ps(acc[i][u], offset[i][u]));
  }
};

// F32 / F16 weights against float activations; k need not be a multiple of 8
// (the tail is finished in scalar code).
template <bool Half>
struct TileFloat {
  EDGEMOE_AVX2 static __m256 load8(const uint8_t* row, int64_t i) {
    if constexpr (Half)
      return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((const uint16_t*)row + i)));
    else
      return _mm256_loadu_ps((const float*)row + i);
  }
  EDGEMOE_AVX2 static float load1(const uint8_t* row, int64_t i) {
    if constexpr (Half)
      return _cvtsh_ss(((const uint16_t*)row)[i]);
    else
      return ((const float*)row)[i];
  }

  template <int R, int T>
  EDGEMOE_AVX2 static void run(const Job& j, int64_t r, int64_t t) {
    const uint8_t* w[R];
    for (int i = 0; i < R; ++i) w[i] = j.W + (size_t)(r + i) * j.row_bytes;
    const float* x[T];
    for (int u = 0; u < T; ++u) x[u] = j.x + (t + u) * j.k;
    __m256 acc[R][T];
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) acc[i][u] = _mm256_setzero_ps();

    int64_t e = 0;
    for (; e + 8 <= j.k; e += 8) {
      __m256 wv[R];
      constexpr int64_t per_line = Half ? 32 : 16;  // elements per 64-byte line
      if (e % per_line == 0)
        for (int i = 0; i < R; ++i) prefetch(w[i] + e * (Half ? 2 : 4), R * j.row_bytes);
      for (int i = 0; i < R; ++i) wv[i] = load8(w[i], e);
      for (int u = 0; u < T; ++u) {
        const __m256 xv = _mm256_loadu_ps(x[u] + e);
        for (int i = 0; i < R; ++i) acc[i][u] = _mm256_fmadd_ps(wv[i], xv, acc[i][u]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int u = 0; u < T; ++u) {
        float s = hsum(acc[i][u]);
        for (int64_t ee = e; ee < j.k; ++ee) s += load1(w[i], ee) * x[u][ee];
        j.y[(t + u) * j.ldy + r + i] = s;
      }
  }
};

// ---- drivers: cover [r0, r1) x [0, n) with tiles ----

template <class Tile, int R>
EDGEMOE_AVX2 void token_tiles(const Job& j, int64_t r, int64_t t0, int64_t t1) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) Tile::template run<R, 4>(j, r, t);
  for (; t < t1; ++t) Tile::template run<R, 1>(j, r, t);
}

template <class Tile>
EDGEMOE_AVX2 void run_tiles(const Job& j, int64_t r0, int64_t r1, int64_t n, size_t token_bytes) {
  if (n == 1) {
    // Decode: pure matvec, bound by streaming the weights. Eight rows at
    // once keep eight independent accumulation chains and, more importantly,
    // eight weight streams in flight: measured ~1.3x the DRAM throughput of
    // four rows for q8 (the extra register pressure costs nothing measurable).
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8) Tile::template run<8, 1>(j, r, 0);
    for (; r < r1; ++r) Tile::template run<1, 1>(j, r, 0);
    return;
  }
  const int64_t block = std::max<int64_t>(4, (int64_t)(kTokenBlockBytes / token_bytes) / 4 * 4);
  for (int64_t t0 = 0; t0 < n; t0 += block) {
    const int64_t t1 = std::min(n, t0 + block);
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) token_tiles<Tile, 2>(j, r, t0, t1);
    for (; r < r1; ++r) token_tiles<Tile, 1>(j, r, t0, t1);
  }
}

EDGEMOE_AVX2 void matmul_rows_avx2(QType type, const void* W, int64_t k, int64_t r0, int64_t r1, const float* x,
                                   const BlockQ8A* xq, int64_t n, float* y, int64_t ldy) {
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
      return run_tiles<TileLowBit<CodesQ4>>(j, r0, r1, n, qx_bytes);
    case QType::Q3:
      return run_tiles<TileLowBit<CodesQ3>>(j, r0, r1, n, qx_bytes);
    case QType::Q2:
      return run_tiles<TileLowBit<CodesQ2>>(j, r0, r1, n, qx_bytes);
    case QType::Q4K:
      return run_tiles<TileQ4K>(j, r0, r1, n, qx_bytes);
    case QType::MXFP4:
      return run_tiles<TileMXFP4>(j, r0, r1, n, qx_bytes);
  }
}

const KernelTable kAvx2 = {Isa::Avx2, quantize_activations_avx2, matmul_rows_avx2,
                           to_f16_avx2, scores_f16_avx2, weighted_sum_f16_avx2, delta_rule_avx2};

}  // namespace

// F16C is CPUID leaf 1, ECX bit 29; asked directly because clang's
// __builtin_cpu_supports does not know the "f16c" feature name.
static bool cpu_has_f16c() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

const KernelTable* avx2_kernels() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  }();
  return ok ? &kAvx2 : nullptr;
}

}  // namespace edgemoe

#else  // not x86

namespace edgemoe {
const KernelTable* avx2_kernels() { return nullptr; }
}  // namespace edgemoe

#endif
