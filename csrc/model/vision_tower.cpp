#include "vision_tower.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/errors.h"
#include "ops.h"
#include "rope.h"

namespace edgemoe {

namespace {

// Queries attended at once: bounds the score rows held ([chunk, patches] floats) for large images.
constexpr int64_t kQueryChunk = 256;

// Every buffer encode() holds, in floats, for an image of n patches (one formula for the
// allocation and the memory plan).
struct VisionSizes {
  size_t xn, qkv, attn, mlp, head, vt, scores, rope, quantized_rows_width;
  size_t floats() const { return xn + qkv + attn + mlp + 3 * head + vt + scores + 2 * rope; }
};
VisionSizes vision_sizes(const ModelConfig& c, int64_t n) {
  const size_t D = c.vision_hidden, hd = c.vision_head_dim(), chunk = std::min<int64_t>(n, kQueryChunk);
  // (the merger's rows are vision_merge^2 patches wide: n * D floats whichever way they are cut)
  const size_t widest = std::max<size_t>({(size_t)c.vision_patch_values(), (size_t)c.vision_intermediate,
                                          (size_t)c.vision_merged_width(), D});
  // (attn also takes the mergers' outputs: a token per merge window, hidden wide)
  const size_t attn = std::max<size_t>(n * D, n / (c.vision_merge * c.vision_merge) * c.hidden);
  return {n * D, n * 3 * D, attn, n * std::max<size_t>(c.vision_intermediate, D),
          n * hd /* q, k and a head's output */, hd * n, chunk * n, n * (hd / 2), widest};
}

// softmax(row * scale) in place, over n scores: the sum in 8 interleaved partial sums (as ops.h's dot),
// which unlike one running double sum do not wait on each other (an image's attention takes billions).
void scaled_softmax(float* row, int64_t n, float scale) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j] * scale);
  float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int64_t j = 0; j < n; ++j) {
    row[j] = __builtin_expf(row[j] * scale - mx);
    part[j % 8] += row[j];
  }
  const float inv = 1.f / (((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])));
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
}

// Patch i's (row, column) in the image, the processor's rows being in merge-window order: (block
// row, block column, row in the block, column in the block), m x m patches a block.
void patch_place(int64_t i, int grid_w, int m, int& row, int& col) {
  const int64_t window = i / (m * m), in = i % (m * m);
  row = (int)(window / (grid_w / m)) * m + (int)(in / m);
  col = (int)(window % (grid_w / m)) * m + (int)(in % m);
}

}  // namespace

struct VisionScratch {
  std::vector<float> xn, qkv, attn, mlp, qh, kh, oh, vt, scores, cos, sin;
  std::vector<BlockQ8A> xq;
  VisionScratch(const ModelConfig& c, int64_t n) {
    const VisionSizes s = vision_sizes(c, n);
    xn.resize(s.xn), qkv.resize(s.qkv), attn.resize(s.attn), mlp.resize(s.mlp);
    qh.resize(s.head), kh.resize(s.head), oh.resize(s.head), vt.resize(s.vt), scores.resize(s.scores);
    cos.resize(s.rope), sin.resize(s.rope);
    xq.resize(n * (s.quantized_rows_width / kGroup + 1));
  }
};

int64_t VisionTower::max_patches(const ModelConfig& c, int64_t max_pixels) {
  return c.has_vision() ? max_pixels / ((int64_t)c.vision_patch_size * c.vision_patch_size) : 0;
}

size_t VisionTower::encode_bytes(const ModelConfig& c, int64_t max_pixels) {
  if (!c.has_vision()) return 0;
  const int64_t n = max_patches(c, max_pixels), tokens = n / (c.vision_merge * c.vision_merge);
  const VisionSizes s = vision_sizes(c, n);
  const size_t x = (size_t)n * c.vision_hidden, pixels = (size_t)n * c.vision_patch_values();
  const size_t features = (size_t)tokens * c.image_feature_width();
  return (s.floats() + x + pixels + features) * sizeof(float) +
         n * (s.quantized_rows_width / kGroup + 1) * sizeof(BlockQ8A);
}

VisionWeights bind_vision_weights(const ModelConfig& c, const TensorLookup& get) {
  VisionWeights w;
  if (!c.has_vision()) return w;
  const int64_t D = c.vision_hidden, I = c.vision_intermediate, M = c.vision_merged_width(), H = c.hidden;
  w.patch_embed = get("vision.patch_embed", D, c.vision_patch_values(), false);
  w.patch_bias = get("vision.patch_bias", 1, D, true);
  w.position_table = get("vision.position_table", (int64_t)c.vision_position_side * c.vision_position_side, D, true);
  for (int b = 0; b < c.vision_depth; ++b) {
    const std::string p = "vision.blocks." + std::to_string(b) + ".";
    VisionBlockWeights B;
    B.norm1 = get(p + "norm1", 1, D, true), B.norm1_bias = get(p + "norm1_bias", 1, D, true);
    B.qkv = get(p + "qkv", 3 * D, D, false), B.qkv_bias = get(p + "qkv_bias", 1, 3 * D, true);
    B.proj = get(p + "proj", D, D, false), B.proj_bias = get(p + "proj_bias", 1, D, true);
    B.norm2 = get(p + "norm2", 1, D, true), B.norm2_bias = get(p + "norm2_bias", 1, D, true);
    B.fc1 = get(p + "fc1", I, D, false), B.fc1_bias = get(p + "fc1_bias", 1, I, true);
    B.fc2 = get(p + "fc2", D, I, false), B.fc2_bias = get(p + "fc2_bias", 1, D, true);
    w.blocks.push_back(B);
  }
  auto merger = [&](const std::string& p, int64_t norm_width) {
    MergerWeights m;
    m.norm = get(p + "norm", 1, norm_width, true), m.norm_bias = get(p + "norm_bias", 1, norm_width, true);
    m.fc1 = get(p + "fc1", M, M, false), m.fc1_bias = get(p + "fc1_bias", 1, M, true);
    m.fc2 = get(p + "fc2", H, M, false), m.fc2_bias = get(p + "fc2_bias", 1, H, true);
    return m;
  };
  w.merger = merger("vision.merger.", D);  // normalises each patch before they are put side by side
  for (int k = 0; k < c.n_deepstack(); ++k)  // normalise the side-by-side patches
    w.deepstack.push_back(merger("vision.deepstack." + std::to_string(k) + ".", M));
  return w;
}

void VisionTower::each_row(int64_t n, int64_t work_per_row, const std::function<void(int64_t)>& f) const {
  pool_.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  }, grain_for(work_per_row));
}

void VisionTower::linear(const Tensor& W, const Tensor& bias, const float* x, int64_t n, float* y,
                         VisionScratch& s) const {
  const Activations a = prepare(pool_, W.type, x, n, W.cols, s.xq.data());
  matmul(pool_, W, a, y);
  add_bias(y, bias.f32(), n, W.rows);
}

void VisionTower::add_positions(float* x, int grid_h, int grid_w) const {
  const int side = cfg_.vision_position_side, m = cfg_.vision_merge, D = cfg_.vision_hidden;
  const float* table = w_.position_table.f32();
  // Per axis: the two table rows a patch index falls between and their weights, as transformers'
  // _interpolation_axis_taps_weights computes them in float32 (align_corners: ends map to ends).
  auto taps = [side](int index, int size, int tap[2], float weight[2]) {
    const float src = (float)index * (float)(side - 1) / (float)std::max(size - 1, 1);
    const float floor = std::floor(src);
    for (int o = 0; o < 2; ++o) {
      tap[o] = std::clamp((int)floor + o, 0, side - 1);
      weight[o] = std::max(0.f, 1.f - std::fabs(src - floor - (float)o));
    }
  };
  const int64_t n = (int64_t)grid_h * grid_w;
  pool_.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      int r, col;
      patch_place(i, grid_w, m, r, col);
      int th[2], tw[2];
      float wh[2], ww[2];
      taps(r, grid_h, th, wh);
      taps(col, grid_w, tw, ww);
      float* row = x + i * D;
      for (int d = 0; d < D; ++d) {
        float sum = 0.f;
        for (int a = 0; a < 2; ++a)
          for (int c = 0; c < 2; ++c) sum += table[((int64_t)th[a] * side + tw[c]) * D + d] * (wh[a] * ww[c]);
        row[d] += sum;
      }
    }
  }, grain_for(8 * D));
}

void VisionTower::attention(const VisionBlockWeights& B, float* x, int64_t n, const float* cos, const float* sin,
                            VisionScratch& s) const {
  const int D = cfg_.vision_hidden, heads = cfg_.vision_heads, hd = cfg_.vision_head_dim();
  const float scale = 1.f / std::sqrt((float)hd);
  each_row(n, 8 * D, [&](int64_t t) {
    layer_norm(x + t * D, B.norm1.f32(), B.norm1_bias.f32(), D, cfg_.vision_norm_eps, &s.xn[t * D]);
  });
  linear(B.qkv, B.qkv_bias, s.xn.data(), n, s.qkv.data(), s);
  for (int h = 0; h < heads; ++h) {
    // This head's q and k (rotated by the patch's row and column) and v transposed, contiguous for the
    // matmul kernels: scores = q k^T, then out = softmax(scores) v.
    each_row(n, 8 * hd, [&](int64_t t) {
      const float* row = &s.qkv[t * 3 * D + (int64_t)h * hd];
      float* q = &s.qh[t * hd];
      float* k = &s.kh[t * hd];
      std::copy(row, row + hd, q);
      std::copy(row + D, row + D + hd, k);
      rope(q, cos + t * (hd / 2), sin + t * (hd / 2), hd / 2);
      rope(k, cos + t * (hd / 2), sin + t * (hd / 2), hd / 2);
      for (int d = 0; d < hd; ++d) s.vt[(int64_t)d * n + t] = row[2 * D + d];
    });
    for (int64_t q0 = 0; q0 < n; q0 += kQueryChunk) {
      const int64_t m = std::min(kQueryChunk, n - q0);
      matmul(pool_, QType::F32, reinterpret_cast<const uint8_t*>(s.kh.data()), n, {&s.qh[q0 * hd], nullptr, m, hd},
             s.scores.data());
      pool_.parallel_for(m, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          scaled_softmax(&s.scores[i * n], n, scale);
        }
      }, grain_for(4 * n));
      matmul(pool_, QType::F32, reinterpret_cast<const uint8_t*>(s.vt.data()), hd, {s.scores.data(), nullptr, m, n},
             s.oh.data());
      for (int64_t i = 0; i < m; ++i) std::copy(&s.oh[i * hd], &s.oh[i * hd] + hd, &s.attn[(q0 + i) * D + (int64_t)h * hd]);
    }
  }
  linear(B.proj, B.proj_bias, s.attn.data(), n, s.xn.data(), s);
  each_row(n, D, [&](int64_t t) {
    for (int64_t i = t * D; i < (t + 1) * D; ++i) x[i] += s.xn[i];
  });
}

void VisionTower::merge(const MergerWeights& w, const float* in, int64_t m, float* out, int64_t out_stride,
                        VisionScratch& s) const {
  const int64_t M = cfg_.vision_merged_width(), H = cfg_.hidden;
  linear(w.fc1, w.fc1_bias, in, m, s.mlp.data(), s);
  each_row(m, 16 * M, [&](int64_t t) {
    for (int64_t i = t * M; i < (t + 1) * M; ++i) s.mlp[i] = gelu_erf(s.mlp[i]);
  });
  linear(w.fc2, w.fc2_bias, s.mlp.data(), m, s.attn.data(), s);
  for (int64_t t = 0; t < m; ++t) std::copy(&s.attn[t * H], &s.attn[t * H] + H, out + t * out_stride);
}

void VisionTower::encode(const float* pixels, int grid_h, int grid_w, float* out, StopFlags stop) const {
  const int m = cfg_.vision_merge, D = cfg_.vision_hidden, hd = cfg_.vision_head_dim();
  if (grid_h < m || grid_w < m || grid_h % m || grid_w % m)
    throw std::invalid_argument("an image's patch grid must be whole merge windows (" + std::to_string(m) + " patches)");
  const int64_t n = (int64_t)grid_h * grid_w, M = cfg_.vision_merged_width(), tokens = n / (m * m);
  const int64_t width = cfg_.image_feature_width();
  VisionScratch s(cfg_, n);
  std::vector<float> x(n * D);
  linear(w_.patch_embed, w_.patch_bias, pixels, n, x.data(), s);
  add_positions(x.data(), grid_h, grid_w);

  // 2-D rotary angles: a head's first quarter of pairs turn with the patch's row, the second with
  // its column (transformers' axial rope; pairs (i, i + hd / 2)), base 10000.
  const int quarter = hd / 4;
  const std::vector<float> inv_freq = inverse_frequencies(10000.0, hd / 2);  // quarter of them
  for (int64_t i = 0; i < n; ++i) {
    int r, c;
    patch_place(i, grid_w, m, r, c);
    for (int j = 0; j < quarter; ++j) {
      const float ar = (float)r * inv_freq[j], ac = (float)c * inv_freq[j];
      s.cos[i * (hd / 2) + j] = std::cos(ar), s.sin[i * (hd / 2) + j] = std::sin(ar);
      s.cos[i * (hd / 2) + quarter + j] = std::cos(ac), s.sin[i * (hd / 2) + quarter + j] = std::sin(ac);
    }
  }

  int next_deepstack = 0;
  for (int b = 0; b < cfg_.vision_depth; ++b) {
    if (stop.interrupt && stop.interrupt->load(std::memory_order_relaxed)) throw Interrupted("interrupted");
    if (stop.cancel && stop.cancel->load(std::memory_order_relaxed)) throw Cancelled("cancelled");
    const VisionBlockWeights& B = w_.blocks[b];
    attention(B, x.data(), n, s.cos.data(), s.sin.data(), s);
    each_row(n, 8 * D, [&](int64_t t) {
      layer_norm(&x[t * D], B.norm2.f32(), B.norm2_bias.f32(), D, cfg_.vision_norm_eps, &s.xn[t * D]);
    });
    linear(B.fc1, B.fc1_bias, s.xn.data(), n, s.mlp.data(), s);
    const int64_t I = cfg_.vision_intermediate;
    each_row(n, 16 * I, [&](int64_t t) {
      for (int64_t i = t * I; i < (t + 1) * I; ++i) s.mlp[i] = gelu_tanh(s.mlp[i]);
    });
    linear(B.fc2, B.fc2_bias, s.mlp.data(), n, s.xn.data(), s);
    each_row(n, D, [&](int64_t t) {
      for (int64_t i = t * D; i < (t + 1) * D; ++i) x[i] += s.xn[i];
    });
    if (next_deepstack < cfg_.n_deepstack() && cfg_.vision_deepstack_layers[next_deepstack] == b) {
      // DeepStack: this block's output, a merge window's patches side by side, normalised together.
      const MergerWeights& w = w_.deepstack[next_deepstack];
      each_row(tokens, 8 * M, [&](int64_t t) {
        layer_norm(&x[t * M], w.norm.f32(), w.norm_bias.f32(), M, cfg_.vision_norm_eps, &s.xn[t * M]);
      });
      ++next_deepstack;
      merge(w, s.xn.data(), tokens, out + next_deepstack * cfg_.hidden, width, s);
    }
  }
  // The main merger normalises each patch, then puts a window's patches side by side.
  each_row(n, 8 * D, [&](int64_t t) {
    layer_norm(&x[t * D], w_.merger.norm.f32(), w_.merger.norm_bias.f32(), D, cfg_.vision_norm_eps, &s.xn[t * D]);
  });
  merge(w_.merger, s.xn.data(), tokens, out, width, s);
}

}  // namespace edgemoe
