#include "recurrent_state.h"

#include <algorithm>

namespace edgemoe {

size_t RecurrentState::layer_bytes(const ModelConfig& c, int layer, int checkpoints) {
  return c.is_linear(layer) ? sizeof(float) * (size_t)c.linear_state_floats() * (1 + (size_t)checkpoints) : 0;
}

size_t RecurrentState::bytes(const ModelConfig& c, int checkpoints) {
  return sizeof(float) * (size_t)c.linear_state_floats() * c.linear_layers.size() * (1 + (size_t)checkpoints);
}

RecurrentState::RecurrentState(const ModelConfig& c, int checkpoints) : cfg_(c), offset_(c.n_layers, 0) {
  size_t total = 0;
  for (int64_t l : c.linear_layers) {
    offset_[l] = total;
    total += (size_t)c.linear_state_floats();
  }
  live_.assign(total, 0.f);
  checkpoints_.resize(total ? checkpoints : 0);
  for (Checkpoint& k : checkpoints_) k.state.assign(total, 0.f);
}

void RecurrentState::clear() {
  std::fill(live_.begin(), live_.end(), 0.f);
  for (Checkpoint& k : checkpoints_) k.pos = -1;
}

void RecurrentState::save(int64_t pos) {
  if (pos <= 0 || checkpoints_.empty()) return;
  for (const Checkpoint& k : checkpoints_)
    if (k.pos == pos) return;
  // a free slot, else the oldest copy
  auto slot = std::find_if(checkpoints_.begin(), checkpoints_.end(), [](const Checkpoint& k) { return k.pos < 0; });
  if (slot == checkpoints_.end())
    slot = std::min_element(checkpoints_.begin(), checkpoints_.end(),
                            [](const Checkpoint& a, const Checkpoint& b) { return a.saved_at < b.saved_at; });
  std::copy(live_.begin(), live_.end(), slot->state.begin());
  slot->pos = pos;
  slot->saved_at = ++saves_;
}

int64_t RecurrentState::restore(int64_t pos) {
  const Checkpoint* best = nullptr;
  for (Checkpoint& k : checkpoints_) {
    if (k.pos > pos) k.pos = -1;  // a future being discarded
    else if (k.pos > 0 && (!best || k.pos > best->pos)) best = &k;
  }
  if (!best) {
    std::fill(live_.begin(), live_.end(), 0.f);
    return 0;
  }
  std::copy(best->state.begin(), best->state.end(), live_.begin());
  return best->pos;
}

size_t RecurrentState::allocated_bytes() const {
  size_t floats = live_.size();
  for (const Checkpoint& k : checkpoints_) floats += k.state.size();
  return floats * sizeof(float);
}

}  // namespace edgemoe
