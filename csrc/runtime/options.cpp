#include "options.h"

#include <stdexcept>

namespace edgemoe {
namespace {

const std::pair<const char*, bool> kKvCaches[] = {{"f16", true}, {"f32", false}};
const std::pair<const char*, CachePolicy> kCachePolicies[] = {
    {"edgemoe", CachePolicy::EdgeMoE}, {"lru", CachePolicy::Lru}, {"lfu", CachePolicy::Lfu},
    {"recent", CachePolicy::Recent}};
// stats and token need a routing profile (`edgemoe profile`); auto picks the best the model has
const char* const kPredictors[] = {"none", "gate", "stats", "token", "auto"};
const char* const kWhat = "invalid option";

template <class Options, class Visitor>
void visit_options(Options& o, Visitor& v) {
  v.integer("expert_slots", o.n_slots, 1, int64_t(1) << 40, Optional);
  v.integer("threads", o.threads, 1, 1024, Optional);
  v.integer("ctx_size", o.ctx_size, 1, 1 << 24, Optional);
  v.integer("max_batch", o.max_batch, 1, 1 << 16, Optional);
  v.flag("verify_checksums", o.verify_checksums, Optional);
  v.choice("kv_cache", o.kv_f16, kKvCaches, Optional);
  v.choice("cache_policy", o.policy, kCachePolicies, Optional);
  v.text("predictor", o.predictor.kind, kPredictors, Optional);
  v.integer("prefetch_depth", o.predictor.depth, 1, 64, Optional);
  v.integer("prefetch_width", o.predictor.width, 0, 4096, Optional);
  v.number("prefetch_min_confidence", o.predictor.min_confidence, 0.0, 1.0, Optional);
  v.integer("io_threads", o.io_threads, 0, 16, Optional);
  v.number("skip_missed_below", o.skip_missed_below, 0.0, 1.0, Optional);
  v.number("low_bit_missed_below", o.low_bit_missed_below, 0.0, 1.0, Optional);
  v.integer("active_experts", o.active_experts, 0, 1 << 16, Optional);
  // Pairs: room for a quarter of the experts of a model of 64 layers of 1024.
  v.integers("disable_experts", o.disabled_experts, 0, 1 << 20, Optional, 1 << 15);
  v.integer("state_checkpoints", o.state_checkpoints, 0, 64, Optional);
  v.integer("max_image_pixels", o.max_image_pixels, 1024, int64_t(1) << 28, Optional);
  v.flag("vision", o.vision, Optional);
}

}  // namespace

EngineOptions options_from_values(const Values& values) {
  EngineOptions o;
  ValuesReader<std::invalid_argument> reader(values, kWhat);
  visit_options(o, reader);
  if (reader.used() != values.size())
    refuse_unknown<std::invalid_argument>(values, options_to_values(o), kWhat, "");
  return o;
}

Values options_to_values(const EngineOptions& o) {
  ValuesWriter writer;
  visit_options(o, writer);
  return writer.values;
}

StoreOptions store_options(const EngineOptions& o) {
  StoreOptions s;
  s.policy = o.policy;
  s.verify_checksums = o.verify_checksums;
  s.async_io = o.io_threads > 0;
  s.io_threads = o.io_threads;
  return s;
}

std::map<std::string, std::vector<std::string>> option_choices() {
  ChoicesCollector c;
  const EngineOptions o;
  visit_options(o, c);
  return c.choices;
}

}  // namespace edgemoe
