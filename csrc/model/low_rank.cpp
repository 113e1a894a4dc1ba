#include "low_rank.h"

#include <algorithm>
#include <vector>

#include "ops.h"

namespace edgemoe {

void add_low_rank(ThreadPool& pool, const LowRankFactors& f, int64_t out, const int* deltas, const float* x,
                  int64_t x_stride, int64_t rows, float* y) {
  if (std::all_of(deltas, deltas + rows, [](int d) { return d < 0; })) return;  // no row corrected
  const int64_t in = f.b.cols, rank = f.rank();
  const size_t a_bytes = qtype_row_bytes(f.a.type, rank) * (size_t)out;  // one correction's A
  const size_t b_bytes = qtype_row_bytes(f.b.type, in) * (size_t)rank;   // and its B
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> t(rank), c(out);
        for (int64_t r = r0; r < r1; ++r) {
          const int d = deltas[r];
          if (d < 0) continue;
          matmul_rows(f.b.type, f.b.data + d * b_bytes, in, 0, rank, &x[r * x_stride], nullptr, 1, t.data(), rank);
          matmul_rows(f.a.type, f.a.data + d * a_bytes, rank, 0, out, t.data(), nullptr, 1, c.data(), out);
          float* dst = &y[r * out];
          for (int64_t i = 0; i < out; ++i) dst[i] += c[i];
        }
      },
      grain_for((int64_t)rank * (in + out)));
}

}  // namespace edgemoe
