// The small numeric building blocks of the forward pass.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../common/thread_pool.h"
#include "../kernels/kernels.h"
#include "weights.h"

namespace edgemoe {

// Activations of n tokens, with their 8-bit quantized copy when a quantized
// weight will consume them.
struct Activations {
  const float* x;
  const BlockQ8A* xq;  // null unless prepare() found the weight type quantized
  int64_t n;
  int64_t k;
};

// Multiply-adds below which a parallel_for chunk is not worth a thread wake-up
// (measured: a 256x256 q8 matvec takes ~10 us, a wake-up several).
constexpr int64_t kMinParallelWork = 1 << 18;
// The parallel_for grain that gives each chunk at least kMinParallelWork.
int64_t grain_for(int64_t work_per_item);

bool needs_quantized(QType t);
// Quantize x [n, k] into xq if `t` consumes quantized activations; returns the Activations view.
Activations prepare(ThreadPool& pool, QType t, const float* x, int64_t n, int64_t k, BlockQ8A* xq_buf);

// y [n, rows] = x [n, k] @ W^T, rows split across the pool.
void matmul(ThreadPool& pool, QType t, const uint8_t* W, int64_t rows, const Activations& a, float* y);
inline void matmul(ThreadPool& pool, const Tensor& W, const Activations& a, float* y) {
  matmul(pool, W.type, W.data, W.rows, a, y);
}

// One weight matrix of a matmul_many: y [n, rows] = x W^T, x being the
// call's shared activations or, when set, the part's own (same k).
struct MatmulPart {
  const uint8_t* W;
  int64_t rows;
  float* y;
  const Activations* own = nullptr;
};
// Several matmuls of the same type in one parallel loop (q/k/v; the gate/up,
// then the down projections of all of a decode step's experts): one thread
// hand-off instead of one per matrix, which matters in decode, where each
// matrix takes microseconds.
constexpr int kMaxMatmulParts = 64;
void matmul_many(ThreadPool& pool, QType t, const MatmulPart* parts, int count, const Activations& a);

// out = x / rms(x) * w (w null: no weight, Gemma 4's value norm); out may be x.
void rms_norm(const float* x, const float* w, int64_t k, float eps, float* out);
// gelu with the tanh approximation (transformers' gelu_pytorch_tanh).
inline float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}
void add_bias(float* y, const float* b, int64_t n, int64_t k);
// gelu with erf (transformers' nn.GELU(), the vision mergers').
inline float gelu_erf(float x) { return 0.5f * x * (1.f + std::erf(x * 0.7071067811865476f)); }
// out = (x - mean) / sqrt(var + eps) * w + b over k values (torch's LayerNorm); out may be x.
void layer_norm(const float* x, const float* w, const float* b, int64_t k, float eps, float* out);
inline float silu(float x) { return x / (1.f + __builtin_expf(-x)); }
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
void softmax(float* x, int64_t n);
// softmax over x and one more logit, the sink, whose share is dropped (gpt-oss's attention sinks).
void softmax_with_sink(float* x, int64_t n, float sink);
// dot(a, b) over n floats, summed in 8 interleaved partial sums (element i
// into sum i % 8, then the sums in order): independent chains the compiler
// turns into one SIMD register, where a single running sum must stay scalar
// to keep its order. Same order on every machine, so results do not depend
// on the instruction set.
float dot(const float* a, const float* b, int64_t n);
// order[0, k) = the indices of the k largest of score[0, order.size()), largest first, ties to
// the lower index (the same experts on every machine).
void top_k(const float* score, int k, std::vector<int>& order);
// Rotate pairs (i, i + half) of one head by a position's angles: the "rotate_half" convention of
// transformers' Llama-family models (interleaved checkpoints are permuted to it at conversion).
void rope(float* head, const float* cos, const float* sin, int half);

}  // namespace edgemoe
