#include "rope.h"

#include <algorithm>
#include <cmath>

namespace edgemoe {

namespace {

// base ** (2i / dim) for i < dim / 2, in f32 as torch computes it.
std::vector<float> position_frequencies(double base, int dim) {
  std::vector<float> f(dim / 2);
  for (int i = 0; i < dim / 2; ++i) f[i] = (float)std::pow(base, (double)((float)(2 * i) / (float)dim));
  return f;
}

// YaRN: per dimension, a blend of the original frequency (high frequencies,
// extrapolated) and the frequency divided by factor (low ones, interpolated),
// with a linear ramp between the dimensions beta_fast and beta_slow rotations
// mark over the original context.
std::vector<float> yarn_inv_freq(const ModelConfig& c) {
  const int dim = c.rope_dims();
  const double base = c.rope_theta, factor = c.rope_factor;
  auto correction_dim = [&](double rotations) {
    return dim * std::log(c.rope_original_max_position / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = correction_dim(c.yarn_beta_fast), high = correction_dim(c.yarn_beta_slow);
  if (c.yarn_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, (double)(dim - 1));
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
  const std::vector<float> pos = position_frequencies(base, dim);
  std::vector<float> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    const float ramp = std::clamp((float)((i - (float)low) / (float)(high - low)), 0.f, 1.f);
    const float extrapolation = 1.f - ramp;
    const float inv_extra = 1.f / pos[i];
    const float inv_inter = 1.f / ((float)factor * pos[i]);
    inv[i] = inv_inter * (1.f - extrapolation) + inv_extra * extrapolation;
  }
  return inv;
}

}  // namespace

std::vector<float> inverse_frequencies(double base, int dim) {
  std::vector<float> f = position_frequencies(base, dim);
  for (float& x : f) x = 1.f / x;
  return f;
}

RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t seq_len) {
  RopeFrequencies r;
  r.attention_factor = c.rope_attention_factor;
  double base = c.rope_theta;
  if (c.rope_scaling == RopeScaling::Yarn) {
    r.inv_freq = yarn_inv_freq(c);
    return r;
  }
  if (c.rope_scaling == RopeScaling::Dynamic) {
    const double dim = c.rope_dims(), orig = c.rope_original_max_position;
    const double len = std::max<double>((double)seq_len, orig);
    base *= std::pow(c.rope_factor * len / orig - (c.rope_factor - 1), dim / (dim - 2));
  }
  const std::vector<float> pos = position_frequencies(base, c.rope_dims());
  r.inv_freq.resize(pos.size());
  for (size_t i = 0; i < pos.size(); ++i) {
    r.inv_freq[i] = 1.f / pos[i];
    if (c.rope_scaling == RopeScaling::Linear) r.inv_freq[i] /= c.rope_factor;
  }
  return r;
}

RopeFrequencies global_rope_frequencies(const ModelConfig& c) {
  const int dim = c.global_rope_dims();
  const double base = c.global_rope_theta > 0.f ? c.global_rope_theta : c.rope_theta;
  // (config checks keep global_rope_angles within dim / 2; min() keeps a C++-built config in bounds too)
  const int angles = c.global_rope_angles ? std::min(c.global_rope_angles, dim / 2) : dim / 2;
  const std::vector<float> pos = position_frequencies(base, dim);
  RopeFrequencies r;
  r.inv_freq.assign(dim / 2, 0.f);
  for (int i = 0; i < angles; ++i) r.inv_freq[i] = 1.f / pos[i];
  return r;
}

}  // namespace edgemoe
