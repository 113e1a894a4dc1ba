// Rank-R corrections of merged experts (convert --merge-experts F --low-rank R; docs/EXPERT_PRUNING.md
// §2.6): router output j of a merged group computes the group's merged expert with each projection
// W replaced by W + A_d B_d, A_d [out, R] and B_d [R, in] the factors of its own correction d
// (config.h: expert_delta). The factors are resident (weights.h: LowRankDeltas), f32 or f16.
#pragma once
#include <cstdint>

#include "../common/thread_pool.h"
#include "weights.h"

namespace edgemoe {

// y [rows, out] += A_d (B_d x_r) for every row r whose correction d = deltas[r] is not -1 (other
// rows are left as they are), `out` the projection's output width. Row r reads x + r * x_stride
// (0: every row the same x) of the projection's input width (f.b.cols) in floats.
void add_low_rank(ThreadPool& pool, const LowRankFactors& f, int64_t out, const int* deltas, const float* x,
                  int64_t x_stride, int64_t rows, float* y);

}  // namespace edgemoe
