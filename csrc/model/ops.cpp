#include "ops.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace edgemoe {

bool needs_quantized(QType t) { return qtype_is_quantized(t); }

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(1, work_per_item));
}

Activations prepare(ThreadPool& pool, QType t, const float* x, int64_t n, int64_t k, BlockQ8A* xq_buf) {
  if (!needs_quantized(t)) return {x, nullptr, n, k};
  const int64_t blocks_per_row = k / kGroup;
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    quantize_activations(x + b * k, e - b, k, xq_buf + b * blocks_per_row);
  }, grain_for(4 * k));
  return {x, xq_buf, n, k};
}

void matmul(ThreadPool& pool, QType t, const uint8_t* W, int64_t rows, const Activations& a, float* y) {
  // Split by rows in multiples of 8 so threads do not share output cache lines
  // in the single-token case, and only when each thread gets enough work to
  // pay for waking it.
  const int64_t row_groups = (rows + 7) / 8;
  const int64_t work_per_group = 8 * a.k * a.n;
  pool.parallel_for(row_groups, [&](int64_t b, int64_t e) {
    const int64_t r0 = b * 8, r1 = std::min(rows, e * 8);
    matmul_rows(t, W, a.k, r0, r1, a.x, a.xq, a.n, y, rows);
  }, grain_for(work_per_group));
}

void matmul_many(ThreadPool& pool, QType t, const MatmulPart* parts, int count, const Activations& a) {
  // The parts' row groups (of 8, as in matmul) laid end to end; a chunk may span parts.
  if (count < 1 || count > kMaxMatmulParts) throw std::invalid_argument("matmul_many takes 1 to 64 parts");
  int64_t first[kMaxMatmulParts + 1] = {0};
  int64_t most_work = 0;
  for (int p = 0; p < count; ++p) {
    first[p + 1] = first[p] + (parts[p].rows + 7) / 8;
    const Activations& x = parts[p].own ? *parts[p].own : a;
    most_work = std::max(most_work, 8 * x.k * x.n);
  }
  pool.parallel_for(first[count], [&](int64_t b, int64_t e) {
    for (int p = 0; p < count; ++p) {
      const int64_t gb = std::max(b, first[p]), ge = std::min(e, first[p + 1]);
      if (gb >= ge) continue;
      const Activations& x = parts[p].own ? *parts[p].own : a;
      const int64_t r0 = (gb - first[p]) * 8, r1 = std::min(parts[p].rows, (ge - first[p]) * 8);
      matmul_rows(t, parts[p].W, x.k, r0, r1, x.x, x.xq, x.n, parts[p].y, parts[p].rows);
    }
  }, grain_for(most_work));
}

void rms_norm(const float* x, const float* w, int64_t k, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < k; ++i) ss += (double)x[i] * x[i];
  const float scale = 1.0f / std::sqrt((float)(ss / k) + eps);
  if (!w) {
    for (int64_t i = 0; i < k; ++i) out[i] = x[i] * scale;
    return;
  }
  for (int64_t i = 0; i < k; ++i) out[i] = x[i] * scale * w[i];
}

void layer_norm(const float* x, const float* w, const float* b, int64_t k, float eps, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += x[i];
  const double mean = sum / k;
  double ss = 0.0;
  for (int64_t i = 0; i < k; ++i) ss += (x[i] - mean) * (x[i] - mean);
  const float scale = (float)(1.0 / std::sqrt(ss / k + eps));
  const float m = (float)mean;
  for (int64_t i = 0; i < k; ++i) out[i] = (x[i] - m) * scale * w[i] + b[i];
}

void add_bias(float* y, const float* b, int64_t n, int64_t k) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < k; ++i) y[t * k + i] += b[i];
}

// A sink of -infinity takes no share (exp gives exactly 0): the plain softmax.
void softmax(float* x, int64_t n) { softmax_with_sink(x, n, -INFINITY); }

void softmax_with_sink(float* x, int64_t n, float sink) {
  float mx = sink;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = std::exp(sink - mx);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = (float)(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void top_k(const float* score, int k, std::vector<int>& order) {
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int a, int b) { return score[a] > score[b] || (score[a] == score[b] && a < b); });
}

void rope(float* head, const float* cos, const float* sin, int half) {
  for (int i = 0; i < half; ++i) {
    const float a = head[i], b = head[i + half];
    head[i] = a * cos[i] - b * sin[i];
    head[i + half] = b * cos[i] + a * sin[i];
  }
}

float dot(const float* a, const float* b, int64_t n) {
  float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) part[j] += a[i] * b[i];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

}  // namespace edgemoe
