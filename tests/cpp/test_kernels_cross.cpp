// Standalone check of the kernel variants against the scalar reference: no
// Python, no pybind11, so it can be cross-compiled and run under an emulator
// (tests/test_kernels_aarch64.py builds it natively and for AArch64 + qemu).
//
// Checked for every SIMD variant this build and CPU offer (avx2/avx512 on
// x86; neon on AArch64, plus its plain-NEON fallback when the dispatch chose
// SDOT):
//  * matmul_rows for f32/f16 (k = 1, 7, 33, 100) and q8/q4/q3/q2 (k = 32, 96, 256)
//    with rows and tokens in {1, 3, 17, 65}: |variant - scalar| <= 1e-5 of
//    sum_i |w_i x_i| (only the order of float additions may differ), output
//    entries outside the requested rows and tokens untouched;
//  * row sub-ranges (what the thread pool hands out) and long rows that make
//    prefill split the tokens into blocks;
//  * quantize_activations byte-identical to the scalar one, including ties,
//    zero, underflowing, huge and infinite groups;
//  * the f16 KV cache: to_f16 bit-identical to the scalar conversion (ties,
//    subnormals, overflow to infinity); attention scores and weighted sums for
//    head sizes 2..130 and 1..70 keys within 1e-5 of sum |terms|;
//  * the gated delta rule (Gated DeltaNet's recurrence) for head sizes 1..130 over 1..9 tokens:
//    states and outputs within 1e-5 of the scalar reference's magnitude (measured 1e-7 on x86),
//    nothing written past the state or an output row;
//  * set_isa() routes the public entry points to the variant's table.
// Prints failures and, last, "N passed, N failed"; exits 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/variants.h"

using namespace edgemoe;

namespace {

int g_passed = 0, g_failed = 0;

bool check(bool ok, const std::string& what) {
  if (ok)
    ++g_passed;
  else if (++g_failed <= 50)  // enough to diagnose, not a flood
    std::printf("FAIL %s\n", what.c_str());
  return ok;
}

struct Variant {
  std::string name;
  const KernelTable* table;
};

std::vector<Variant> simd_variants() {
  std::vector<Variant> out;
  for (Isa isa : available_isas())
    if (isa != Isa::Scalar) out.push_back({isa_name(isa), kernel_table(isa)});
  const KernelTable* fallback = neon_fallback_kernels();
  if (fallback && fallback != neon_kernels()) out.push_back({"neon/smull", fallback});
  return out;
}

// ---- test data ----

struct Weights {
  std::vector<uint8_t> bytes;  // rows stored back to back, as the kernels read them
  std::vector<float> values;   // the same weights decoded (for the tolerance)
};

// Random rows of type t. Quantized blocks get random codes over the whole
// range (q8 includes -128, which the quantizer never writes but a file may
// hold) and random fp16 scales, rather than going through a quantizer.
Weights make_weights(QType type, int64_t rows, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.5e-3f, 4e-3f), offset(-0.06f, 0.0f);
  const size_t rb = qtype_row_bytes(type, k);
  Weights w;
  w.bytes.resize(rb * rows);
  w.values.resize(rows * k);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = w.bytes.data() + rb * r;
    switch (type) {
      case QType::F32:
        for (int64_t e = 0; e < k; ++e) {
          const float v = normal(rng);
          std::memcpy(row + 4 * e, &v, 4);
        }
        break;
      case QType::F16:
        for (int64_t e = 0; e < k; ++e) {
          const uint16_t h = f32_to_f16(normal(rng));
          std::memcpy(row + 2 * e, &h, 2);
        }
        break;
      case QType::Q8:
        for (int64_t g = 0; g < k / kGroup; ++g) {
          BlockQ8 b;
          b.d = f32_to_f16(scale(rng));
          for (int i = 0; i < kGroup; ++i) b.qs[i] = (int8_t)(byte(rng) - 128);
          std::memcpy(row + g * sizeof b, &b, sizeof b);
        }
        break;
      case QType::Q4:
        for (int64_t g = 0; g < k / kGroup; ++g) {
          BlockQ4 b;
          b.d = f32_to_f16(scale(rng));
          b.m = f32_to_f16(offset(rng));
          for (int i = 0; i < kGroup / 2; ++i) b.qs[i] = (uint8_t)byte(rng);
          std::memcpy(row + g * sizeof b, &b, sizeof b);
        }
        break;
      case QType::Q3:
        for (int64_t g = 0; g < k / kGroup; ++g) {
          BlockQ3 b;
          b.d = f32_to_f16(scale(rng));
          b.m = f32_to_f16(offset(rng));
          for (auto& v : b.ql) v = (uint8_t)byte(rng);
          for (auto& v : b.qh) v = (uint8_t)byte(rng);
          std::memcpy(row + g * sizeof b, &b, sizeof b);
        }
        break;
      case QType::Q2:
        for (int64_t g = 0; g < k / kGroup; ++g) {
          BlockQ2 b;
          b.d = f32_to_f16(scale(rng));
          b.m = f32_to_f16(offset(rng));
          for (auto& v : b.qs) v = (uint8_t)byte(rng);
          std::memcpy(row + g * sizeof b, &b, sizeof b);
        }
        break;
      case QType::Q4K:
        // Every bit of the packed 6-bit scales and minimums random.
        for (int64_t s = 0; s < k / kSuperBlock; ++s) {
          BlockQ4K b;
          b.d = f32_to_f16(scale(rng) / 32.0f);
          b.dmin = f32_to_f16(-offset(rng) / 32.0f);
          for (auto& v : b.scales) v = (uint8_t)byte(rng);
          for (auto& v : b.qs) v = (uint8_t)byte(rng);
          std::memcpy(row + s * sizeof b, &b, sizeof b);
        }
        break;
      case QType::MXFP4:
        // Exponents around 2^-6 (the weights' scale), every code random.
        for (int64_t g = 0; g < k / kGroup; ++g) {
          BlockMXFP4 b;
          b.e = (uint8_t)(118 + byte(rng) % 6);
          for (auto& v : b.qs) v = (uint8_t)byte(rng);
          std::memcpy(row + g * sizeof b, &b, sizeof b);
        }
        break;
    }
    dequantize_row(type, row, k, w.values.data() + r * k);
  }
  return w;
}

// n x k activations, standard normal with a few large outliers per row (as
// real activations have; they set the quantization scale of their group).
std::vector<float> make_activations(int64_t n, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n * k);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < k; ++e) x[t * k + e] = normal(rng) * (e < 5 ? 20.0f : 1.0f);
  return x;
}

const char* type_name(QType t) { return qtype_name(t); }

bool quantized(QType t) { return qtype_is_quantized(t); }

// y = W[r0:r1] x^T through one table, into an ldy-strided buffer prefilled
// with a sentinel; activations quantized by the same table, as the runtime does.
std::vector<float> run_matmul(const KernelTable* table, QType type, const Weights& w, int64_t k, int64_t r0,
                              int64_t r1, const std::vector<float>& x, int64_t n, int64_t ldy, float sentinel) {
  std::vector<BlockQ8A> xq;
  if (quantized(type)) {
    xq.resize(n * (k / kGroup));
    table->quantize_activations(x.data(), n, k, xq.data());
  }
  std::vector<float> y(n * ldy, sentinel);
  table->matmul_rows(type, w.bytes.data(), k, r0, r1, x.data(), xq.empty() ? nullptr : xq.data(), n, y.data(),
                     ldy);
  return y;
}

// Compares variant output with the reference over rows [r0, r1) and checks
// that nothing else in y was written.
void compare_matmul(const Variant& v, QType type, int64_t rows, int64_t k, int64_t n, int64_t r0, int64_t r1,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  const Weights w = make_weights(type, rows, k, rng);
  const std::vector<float> x = make_activations(n, k, rng);
  const int64_t ldy = rows + 3;  // padding columns must stay untouched
  const float sentinel = -12345.0f;
  const std::vector<float> ref = run_matmul(scalar_kernels(), type, w, k, r0, r1, x, n, ldy, sentinel);
  const std::vector<float> got = run_matmul(v.table, type, w, k, r0, r1, x, n, ldy, sentinel);

  char where[160];
  std::snprintf(where, sizeof where, "%s %s rows=%lld [%lld, %lld) k=%lld n=%lld", v.name.c_str(), type_name(type),
                (long long)rows, (long long)r0, (long long)r1, (long long)k, (long long)n);
  double worst = 0.0;  // error / tolerance
  bool outside_ok = true;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < ldy; ++c) {
      const float g = got[t * ldy + c];
      if (c < r0 || c >= r1) {
        outside_ok &= std::memcmp(&g, &sentinel, sizeof g) == 0;
        continue;
      }
      // Same integer group sums, so only the float summation order differs:
      // allow 1e-5 of sum|terms| (tests/test_kernels.py uses the same bound).
      double terms = 0.0;
      for (int64_t e = 0; e < k; ++e) terms += std::fabs((double)w.values[c * k + e] * x[t * k + e]);
      const double err = std::fabs((double)g - (double)ref[t * ldy + c]);
      const double tol = 1e-5 * terms + 1e-30;
      worst = std::max(worst, std::isfinite(g) ? err / tol : std::numeric_limits<double>::infinity());
    }
  char msg[64];
  std::snprintf(msg, sizeof msg, ": error %.3g x tolerance", worst);
  check(worst <= 1.0, std::string(where) + msg);
  check(outside_ok, std::string(where) + ": wrote outside its rows");
}

const QType kAllTypes[] = {QType::F32, QType::F16, QType::Q8,  QType::Q4,
                           QType::Q3,  QType::Q2,  QType::Q4K, QType::MXFP4};

// The rows x tokens grid of tests/test_kernels.py: single-token decode, every
// tile shape and their remainders.
void test_matmul_grid(const Variant& v) {
  const int64_t counts[] = {1, 3, 17, 65};
  for (QType type : kAllTypes) {
    const std::vector<int64_t> ks = type == QType::Q4K ? std::vector<int64_t>{256, 768}
                                    : quantized(type)  ? std::vector<int64_t>{32, 96, 256}
                                                       : std::vector<int64_t>{1, 7, 8, 33, 100};
    for (int64_t k : ks)
      for (int64_t rows : counts)
        for (int64_t n : counts)
          compare_matmul(v, type, rows, k, n, 0, rows, (uint32_t)(k * 1000 + rows * 10 + n));
  }
}

// Row sub-ranges at odd offsets (a thread's share), and rows long enough
// that prefill splits the tokens into several blocks.
void test_matmul_ranges(const Variant& v) {
  for (QType type : kAllTypes) {
    const int64_t k = type == QType::Q4K ? 256 : 64;
    for (int64_t n : {1, 2, 5})
      for (auto range : {std::pair<int64_t, int64_t>{1, 2}, {1, 64}, {5, 14}, {9, 65}, {62, 65}})
        compare_matmul(v, type, 65, k, n, range.first, range.second, (uint32_t)(range.first * 7 + n));
    compare_matmul(v, type, 5, 4096, 70, 0, 5, 7);
    compare_matmul(v, type, 13, 4096, 1, 0, 13, 8);
  }
}

// Every product at 127 * 127 plus a stray -128 weight code per group: the
// 16-bit pair sums of the integer paths must not saturate.
void test_extreme_q8_codes(const Variant& v) {
  const int64_t rows = 9, k = 64, n = 2;
  Weights w;
  w.bytes.resize(qtype_row_bytes(QType::Q8, k) * rows);
  w.values.resize(rows * k);
  for (int64_t b = 0; b < rows * k / kGroup; ++b) {
    BlockQ8 blk;
    blk.d = f32_to_f16(1.0f);
    for (int i = 0; i < kGroup; ++i) blk.qs[i] = (int8_t)(b % 2 ? 127 : -127);
    blk.qs[b % kGroup] = -128;
    std::memcpy(w.bytes.data() + b * sizeof blk, &blk, sizeof blk);
  }
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(QType::Q8, w.bytes.data() + r * qtype_row_bytes(QType::Q8, k), k, w.values.data() + r * k);
  std::vector<float> x(n * k, -1.0f);  // quantizes to -127 (d = 1/127)
  std::fill(x.begin() + k, x.end(), 1.0f);
  const std::vector<float> ref = run_matmul(scalar_kernels(), QType::Q8, w, k, 0, rows, x, n, rows, 0.0f);
  const std::vector<float> got = run_matmul(v.table, QType::Q8, w, k, 0, rows, x, n, rows, 0.0f);
  double worst = 0.0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double terms = 0.0;
      for (int64_t e = 0; e < k; ++e) terms += std::fabs((double)w.values[r * k + e] * x[t * k + e]);
      worst = std::max(worst, std::fabs((double)got[t * rows + r] - ref[t * rows + r]) / (1e-5 * terms));
    }
  check(worst <= 1.0, v.name + " q8 extreme codes do not saturate: error " + std::to_string(worst) + " x tolerance");
}

// Activations that exercise every branch of the quantizer. Each 32-element
// group gets one treatment (by its index), on top of random normal values.
std::vector<float> special_activations(int64_t n, int64_t k, std::mt19937& rng, bool with_nan) {
  std::vector<float> x = make_activations(n, k, rng);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const int64_t nb = k / kGroup;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < nb; ++g) {
      float* v = x.data() + t * k + g * kGroup;
      switch ((t * nb + g) % 9) {
        case 0:  // amax 127 makes d = 1 exactly: halves are ties (round half to even)
          for (int i = 0; i < kGroup; ++i) v[i] = (float)(i - 16) + 0.5f;
          v[31] = 127.0f;
          break;
        case 1:  // all zero
          for (int i = 0; i < kGroup; ++i) v[i] = 0.0f;
          break;
        case 2:  // subnormal: d < FLT_MIN, stored as all-zero codes
          for (int i = 0; i < kGroup; ++i) v[i] = unit(rng) * 1e-39f;
          break;
        case 3:  // tiny but normal scale
          for (int i = 0; i < kGroup; ++i) v[i] = unit(rng) * 1e-30f;
          break;
        case 4:  // huge
          for (int i = 0; i < kGroup; ++i) v[i] = unit(rng) * 3e38f;
          break;
        case 5:  // an infinity: d = inf, 1/d = 0, inf * 0 = NaN -> -127
          v[7] = std::numeric_limits<float>::infinity();
          break;
        case 6:  // a negative zero and a lone value
          for (int i = 0; i < kGroup; ++i) v[i] = -0.0f;
          v[3] = -2.0f;
          break;
        case 7:  // NaNs: ignored by the amax (std::fmax), quantized to -127
          if (with_nan) v[0] = v[9] = v[31] = std::numeric_limits<float>::quiet_NaN();
          if (with_nan && t == 0) std::fill(v, v + kGroup, std::numeric_limits<float>::quiet_NaN());
          break;
        default:  // random normal as generated
          break;
      }
    }
  return x;
}

void test_quantize(const Variant& v) {
  std::mt19937 rng(99);
  for (int64_t k : {32, 96, 256, 4096}) {
    const int64_t n = 7;
    // NaN groups only for NEON: the x86 variants take amax with MAXPS, which
    // (unlike std::fmax) can return the NaN, so they differ there.
    const bool with_nan = v.name.compare(0, 4, "neon") == 0;
    const std::vector<float> x = special_activations(n, k, rng, with_nan);
    std::vector<BlockQ8A> ref(n * (k / kGroup)), got(ref.size());
    scalar_kernels()->quantize_activations(x.data(), n, k, ref.data());
    v.table->quantize_activations(x.data(), n, k, got.data());
    size_t first = ref.size();
    for (size_t b = 0; b < ref.size() && first == ref.size(); ++b)
      if (std::memcmp(&ref[b], &got[b], sizeof(BlockQ8A)) != 0) first = b;
    check(first == ref.size(), v.name + " quantize_activations k=" + std::to_string(k) +
                                   " byte-identical (first differing block " + std::to_string(first) + ")");
  }
}

// set_isa() installs the table we test directly: the public entry points
// must then give bit-identical results.
void test_dispatch() {
  const std::vector<Isa> isas = available_isas();
  check(!isas.empty() && isas.front() == Isa::Scalar, "available_isas starts with scalar");
  check(current_isa() == isas.back(), "the best variant is the default");
#if defined(__aarch64__)
  check(isas.back() == Isa::Neon, "neon is available on AArch64");
#endif
  std::mt19937 rng(5);
  const int64_t rows = 19, k = 96, n = 3;
  for (Isa isa : isas) {
    const std::string name = isa_name(isa);
    check(set_isa(isa) && current_isa() == isa, "set_isa(" + name + ")");
    for (QType type : {QType::F16, QType::Q4}) {
      const Weights w = make_weights(type, rows, k, rng);
      const std::vector<float> x = make_activations(n, k, rng);
      const std::vector<float> direct = run_matmul(kernel_table(isa), type, w, k, 0, rows, x, n, rows, 0.0f);
      std::vector<BlockQ8A> xq(n * (k / kGroup));
      quantize_activations(x.data(), n, k, xq.data());
      std::vector<float> y(n * rows, 0.0f);
      matmul_rows(type, w.bytes.data(), k, 0, rows, x.data(), xq.data(), n, y.data(), rows);
      check(std::memcmp(y.data(), direct.data(), y.size() * sizeof(float)) == 0,
            "public matmul_rows goes to " + name + " after set_isa (" + type_name(type) + ")");
    }
  }
  set_isa(isas.back());
}

}  // namespace

// ---- f16 KV cache ----

void test_kv_f16(const Variant& v) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  // Conversion: random values plus the awkward ones (ties at the f16 step, the
  // subnormal range, values beyond the f16 range).
  std::vector<float> x(1003);
  for (float& e : x) e = normal(rng) * 3.f;
  const float special[] = {0.f, -0.f, 1.f + 1.f / 2048, 1.f + 3.f / 2048, 6.0e-8f, 3.0e-5f, -2.5e-6f,
                           65504.f, 65520.f, 1e6f, -1e6f, 1e-10f};
  std::copy(std::begin(special), std::end(special), x.begin() + 100);
  // quiet, signalling and payload-carrying NaNs (bit patterns; memcpy keeps them intact)
  const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7fc02000u, 0x7f802000u, 0x7fa00000u, 0xffffe000u};
  for (size_t i = 0; i < sizeof nans / sizeof nans[0]; ++i) std::memcpy(&x[120 + i], &nans[i], sizeof(float));
  for (int64_t n : {1, 7, 8, 9, 1003}) {
    std::vector<uint16_t> a(n), b(n);
    scalar_kernels()->to_f16(x.data(), a.data(), n);
    v.table->to_f16(x.data(), b.data(), n);
    check(a == b, v.name + " to_f16 n=" + std::to_string(n) + " differs from the scalar conversion");
  }
  for (int64_t d : {2, 6, 8, 16, 24, 64, 72, 128, 130}) {
    for (int64_t keys : {1, 5, 70}) {
      const int64_t stride = d * 3 + 2;  // several heads per row, as in the cache
      std::vector<float> q(d), kf(keys * stride), p(keys);
      for (float& e : q) e = normal(rng);
      for (float& e : kf) e = normal(rng);
      for (float& e : p) e = std::abs(normal(rng));
      std::vector<uint16_t> kh(kf.size());
      scalar_kernels()->to_f16(kf.data(), kh.data(), (int64_t)kf.size());
      const std::string where = v.name + " d=" + std::to_string(d) + " keys=" + std::to_string(keys);
      std::vector<float> s_ref(keys), s_var(keys, -1.f);
      scalar_kernels()->scores_f16(q.data(), kh.data(), keys, stride, d, 0.5f, s_ref.data());
      v.table->scores_f16(q.data(), kh.data(), keys, stride, d, 0.5f, s_var.data());
      double worst = 0;
      for (int64_t j = 0; j < keys; ++j) {
        double mag = 0;
        for (int64_t i = 0; i < d; ++i) mag += std::abs(q[i] * f16_to_f32(kh[j * stride + i])) * 0.5;
        worst = std::max(worst, std::abs((double)s_var[j] - s_ref[j]) / (1e-5 * mag + 1e-30));
      }
      check(worst <= 1.0, where + " scores: error " + std::to_string(worst) + " x tolerance");
      std::vector<float> o_ref(d + 1, 7.f), o_var(d + 1, 7.f);  // one guard element past the end
      scalar_kernels()->weighted_sum_f16(p.data(), kh.data(), keys, stride, d, o_ref.data());
      v.table->weighted_sum_f16(p.data(), kh.data(), keys, stride, d, o_var.data());
      worst = 0;
      for (int64_t i = 0; i < d; ++i) {
        double mag = 0;
        for (int64_t j = 0; j < keys; ++j) mag += std::abs(p[j] * f16_to_f32(kh[j * stride + i]));
        worst = std::max(worst, std::abs((double)o_var[i] - o_ref[i]) / (1e-5 * mag + 1e-30));
      }
      check(worst <= 1.0, where + " weighted sum: error " + std::to_string(worst) + " x tolerance");
      check(o_var[d] == 7.f, where + " weighted sum wrote past its head");
    }
  }
}

// ---- gated delta rule ----

void test_delta_rule(const Variant& v) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unit(0.05f, 1.f);
  auto unit_rows = [&](std::vector<float>& x, int64_t n, int64_t d) {  // l2-normalised, as the model feeds it
    for (int64_t t = 0; t < n; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += x[t * d + i] * x[t * d + i];
      for (int64_t i = 0; i < d; ++i) x[t * d + i] /= (float)std::sqrt(ss + 1e-6);
    }
  };
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {3, 5}, {8, 8}, {16, 24}, {20, 130}, {128, 128}};
  for (const auto& shape : shapes) {
    const int64_t dk = shape.first, dv = shape.second;
    for (int64_t n : {1, 9}) {
      std::vector<float> S(dk * dv), q(n * dk), k(n * dk), vals(n * dv), decay(n), beta(n);
      for (float& e : S) e = normal(rng) * 0.3f;
      for (float& e : q) e = normal(rng);
      for (float& e : k) e = normal(rng);
      for (float& e : vals) e = normal(rng);
      for (float& e : decay) e = unit(rng);
      for (float& e : beta) e = unit(rng);
      unit_rows(q, n, dk);
      unit_rows(k, n, dk);
      std::vector<float> s_ref(S), s_var(S);
      s_ref.push_back(7.f), s_var.push_back(7.f);  // a guard past the state
      const int64_t stride = dv + 1;                // a guard after each output row
      std::vector<float> o_ref(n * stride, 7.f), o_var(n * stride, 7.f);
      DeltaRuleTokens x;
      x.n = n, x.q = q.data(), x.k = k.data(), x.qk_stride = dk, x.v = vals.data(), x.v_stride = dv;
      x.decay = decay.data(), x.beta = beta.data(), x.gate_stride = 1, x.out = o_ref.data(), x.out_stride = stride;
      scalar_kernels()->delta_rule(s_ref.data(), dk, dv, x);
      x.out = o_var.data();
      v.table->delta_rule(s_var.data(), dk, dv, x);
      double scale = 1e-30, worst = 0;
      for (float e : s_ref) scale = std::max(scale, (double)std::abs(e));
      for (float e : o_ref) scale = std::max(scale, (double)std::abs(e));
      for (int64_t i = 0; i < dk * dv; ++i) worst = std::max(worst, std::abs((double)s_var[i] - s_ref[i]));
      bool guards = s_var[dk * dv] == 7.f;
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t d = 0; d < dv; ++d)
          worst = std::max(worst, std::abs((double)o_var[t * stride + d] - o_ref[t * stride + d]));
        guards = guards && o_var[t * stride + dv] == 7.f;
      }
      const std::string where = v.name + " delta rule dk=" + std::to_string(dk) + " dv=" + std::to_string(dv) +
                                " n=" + std::to_string(n);
      check(worst <= 1e-5 * scale, where + ": error " + std::to_string(worst / scale) + " of the magnitude");
      check(guards, where + ": wrote past the state or an output row");
    }
  }
}

int main() {
  const std::vector<Variant> variants = simd_variants();
  std::printf("isas:");
  for (Isa isa : available_isas()) std::printf(" %s", isa_name(isa));
  std::printf("\n");
  if (neon_kernels()) std::printf("neon dot path: %s\n", neon_dot_path());
  if (variants.empty()) std::printf("no SIMD variant on this build/CPU: only the dispatch checks run\n");

  test_dispatch();
  for (const Variant& v : variants) {
    const int before = g_passed + g_failed, failed_before = g_failed;
    test_quantize(v);
    test_extreme_q8_codes(v);
    test_matmul_grid(v);
    test_matmul_ranges(v);
    test_kv_f16(v);
    test_delta_rule(v);
    std::printf("%s: %d checks, %d failed\n", v.name.c_str(), g_passed + g_failed - before, g_failed - failed_before);
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
