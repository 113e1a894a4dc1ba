// The only file that includes pybind11. No logic lives here: it converts
// between numpy/Python objects and the runtime's types, releases the GIL
// around compute, and maps runtime exceptions onto edgemoe.errors.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <csignal>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/sigint_watch.h"
#include "common/qtypes.h"
#include "kernels/kernels.h"
#include "format/container.h"
#include "runtime/engine.h"
#include "runtime/memory_plan.h"

namespace py = pybind11;
using namespace edgemoe;

#ifndef EDGEMOE_COMPILE_FLAGS
#define EDGEMOE_COMPILE_FLAGS ""  // built by something other than setup.py
#endif

namespace {

QType qtype_arg(int v) {
  QType t;
  if (!qtype_from_int(v, &t)) throw FormatError("unknown weight type code " + std::to_string(v));
  return t;
}

Isa isa_from_name(const std::string& name) {
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
    if (name == isa_name(isa)) return isa;
  throw std::invalid_argument("unknown ISA '" + name + "'");
}

// y = x @ W^T over all rows of W, single call into the active kernel variant.
py::array_t<float> py_matmul(int type_code, py::array_t<uint8_t, py::array::c_style> w, int64_t rows,
                             py::array_t<float, py::array::c_style | py::array::forcecast> x) {
  QType t = qtype_arg(type_code);
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D [n, k]");
  const int64_t n = x.shape(0), k = x.shape(1);
  if (!qtype_supports(t, k)) throw std::invalid_argument("row length not supported by this type");
  if ((size_t)w.size() != qtype_row_bytes(t, k) * (size_t)rows)
    throw std::invalid_argument("weight buffer size does not match rows x row_bytes");
  py::array_t<float> y({n, rows});
  const float* xp = x.data();
  const void* wp = w.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::vector<BlockQ8A> xq;
    if (qtype_is_quantized(t)) {
      xq.resize((size_t)(n * k / kGroup));
      quantize_activations(xp, n, k, xq.data());
    }
    matmul_rows(t, wp, k, 0, rows, xp, xq.empty() ? nullptr : xq.data(), n, yp, rows);
  }
  return y;
}

// The gated delta rule over n tokens of one head (kernels.h), from state S [dk, dv]: the new state
// and the outputs [n, dv]. q, k [n, dk]; v [n, dv]; decay, beta [n].
py::tuple py_gated_delta_rule(py::array_t<float, py::array::c_style | py::array::forcecast> S,
                              py::array_t<float, py::array::c_style | py::array::forcecast> q,
                              py::array_t<float, py::array::c_style | py::array::forcecast> k,
                              py::array_t<float, py::array::c_style | py::array::forcecast> v,
                              py::array_t<float, py::array::c_style | py::array::forcecast> decay,
                              py::array_t<float, py::array::c_style | py::array::forcecast> beta) {
  if (S.ndim() != 2 || q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2 || decay.ndim() != 1 || beta.ndim() != 1)
    throw std::invalid_argument("S, q, k, v must be 2-D; decay and beta 1-D");
  const int64_t dk = S.shape(0), dv = S.shape(1), n = q.shape(0);
  if (q.shape(1) != dk || k.shape(0) != n || k.shape(1) != dk || v.shape(0) != n || v.shape(1) != dv ||
      decay.shape(0) != n || beta.shape(0) != n)
    throw std::invalid_argument("shapes disagree: S [dk, dv], q and k [n, dk], v [n, dv], decay and beta [n]");
  py::array_t<float> state({dk, dv}), out({n, dv});
  std::copy(S.data(), S.data() + dk * dv, state.mutable_data());
  DeltaRuleTokens x;
  x.n = n, x.q = q.data(), x.k = k.data(), x.qk_stride = dk, x.v = v.data(), x.v_stride = dv;
  x.decay = decay.data(), x.beta = beta.data(), x.gate_stride = 1, x.out = out.mutable_data(), x.out_stride = dv;
  gated_delta_rule(state.mutable_data(), dk, dv, x);
  return py::make_tuple(state, out);
}

py::array_t<float> py_dequantize_row(int type_code, py::array_t<uint8_t, py::array::c_style> row, int64_t k) {
  QType t = qtype_arg(type_code);
  if (!qtype_supports(t, k) || (size_t)row.size() != qtype_row_bytes(t, k))
    throw std::invalid_argument("row buffer size does not match k");
  py::array_t<float> out(k);
  dequantize_row(t, row.data(), k, out.mutable_data());
  return out;
}

// --- engine ---

// A config dict as the generic values the one field list in csrc/model/config.cpp reads:
// no field is named here.
template <class Error>
Values values_from_dict(const py::dict& d, const std::string& what) {
  Values out;
  for (auto item : d) {
    if (!py::isinstance<py::str>(item.first)) throw Error(what + ": a key is not a string");
    const std::string key = item.first.cast<std::string>();
    py::handle v = item.second;
    Value cv;
    auto integer = [&](py::handle x) {
      if (py::isinstance<py::bool_>(x) || !py::isinstance<py::int_>(x))
        throw Error(what + ": " + key + " must hold integers");
      try {
        return x.cast<int64_t>();
      } catch (const py::cast_error&) {
        throw Error(what + ": " + key + " is out of range");
      }
    };
    if (py::isinstance<py::bool_>(v)) {
      cv.kind = Value::Kind::Bool;
      cv.b = v.cast<bool>();
    } else if (py::isinstance<py::int_>(v)) {
      cv.kind = Value::Kind::Int;
      cv.i = integer(v);
    } else if (py::isinstance<py::float_>(v)) {
      cv.kind = Value::Kind::Float;
      cv.f = v.cast<double>();
    } else if (py::isinstance<py::str>(v)) {
      cv.kind = Value::Kind::Text;
      cv.text = v.cast<std::string>();
    } else if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
      cv.kind = Value::Kind::IntList;
      for (py::handle x : v) cv.list.push_back(integer(x));
    } else {
      throw Error(what + ": " + key + " has an unsupported type");
    }
    out[key] = std::move(cv);
  }
  return out;
}

py::dict dict_from_values(const Values& values) {
  py::dict d;
  for (const auto& kv : values) {
    const Value& v = kv.second;
    const char* key = kv.first.c_str();
    switch (v.kind) {
      case Value::Kind::Int: d[key] = v.i; break;
      case Value::Kind::Float: d[key] = v.f; break;
      case Value::Kind::Bool: d[key] = v.b; break;
      case Value::Kind::Text: d[key] = v.text; break;
      case Value::Kind::IntList: d[key] = v.list; break;
    }
  }
  return d;
}

ModelConfig config_from_dict(const py::dict& d) {
  return config_from_values(values_from_dict<FormatError>(d, "invalid model config"));
}

EngineOptions options_from_dict(const py::dict& d) {
  return options_from_values(values_from_dict<std::invalid_argument>(d, "invalid option"));
}

RoutingProfile profile_from_arrays(const py::object& profile) {
  RoutingProfile p;
  if (profile.is_none()) return p;
  // (freq [L, E], next_layer [L-1, E, E], token_experts [V, L, W], token_shares [V, L, W]) from
  // edgemoe.format.profile_record
  auto t = profile.cast<py::tuple>();
  if (t.size() != 4) throw FormatError("malformed routing profile");
  auto freq = t[0].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
  auto next = t[1].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
  auto tok = t[2].cast<py::array_t<int32_t, py::array::c_style | py::array::forcecast>>();
  auto shares = t[3].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
  if (freq.ndim() != 2 || next.ndim() != 3 || tok.ndim() != 3 || shares.size() != tok.size())
    throw FormatError("malformed routing profile");
  p.n_layers = (int)freq.shape(0);
  p.n_experts = (int)freq.shape(1);
  p.vocab = (int)tok.shape(0);
  p.width = (int)tok.shape(2);
  p.freq.assign(freq.data(), freq.data() + freq.size());
  p.next_layer.assign(next.data(), next.data() + next.size());
  p.token_experts.assign(tok.data(), tok.data() + tok.size());
  p.token_shares.assign(shares.data(), shares.data() + shares.size());
  return p;
}

std::unique_ptr<Engine> make_engine(const Container& container, const py::dict& options, const py::object& profile) {
  EngineOptions opt = options_from_dict(options);
  opt.profile = profile_from_arrays(profile);
  py::gil_scoped_release nogil;
  return std::make_unique<Engine>(container, opt);
}

// --- the container's tables as Python sees them (display, tools, tests) ---

py::list shape_list(int64_t rows, int64_t cols, bool vector) {
  py::list shape;
  if (!vector) shape.append(rows);
  shape.append(cols);
  return shape;
}

py::dict section_dict(const Section& s) {
  py::dict d;
  d["offset"] = s.offset;
  d["size"] = s.size;
  d["crc32"] = s.crc32;
  return d;
}

py::dict tensor_table(const Container& c) {
  py::dict out;
  for (const TensorEntry& t : c.tensors) {
    py::dict d;
    d["type"] = qtype_name(t.type);
    d["shape"] = shape_list(t.rows, t.cols, t.ndim == 1);
    d["offset"] = t.offset;
    d["nbytes"] = t.nbytes;
    out[t.name.c_str()] = d;
  }
  return out;
}

py::list expert_table(const std::vector<std::vector<ExpertEntry>>& table) {
  py::list out;
  for (const auto& row : table) {
    py::list r;
    for (const ExpertEntry& x : row) {
      py::dict d, parts;
      d["type"] = qtype_name(x.type);
      d["offset"] = x.offset;
      d["size"] = x.size;
      d["stored"] = x.stored;
      d["crc32"] = x.crc32;
      d["compression"] = x.compression == Compression::Zstd ? "zstd" : "none";
      for (int p = 0; p < 3; ++p) {
        py::dict part;
        part["offset"] = x.parts[p].offset;
        part["nbytes"] = x.parts[p].nbytes;
        part["shape"] = shape_list(x.parts[p].rows, x.parts[p].cols, false);
        parts[kExpertPartNames[p]] = part;
      }
      d["parts"] = parts;
      r.append(d);
    }
    out.append(r);
  }
  return out;
}

py::dict config_dict(const Container& c) { return dict_from_values(config_with_defaults(c.config, c.config_values)); }

py::dict plan_dict(const MemoryPlan& p) {
  py::dict d;
  d["resident_bytes"] = p.resident_bytes;
  d["kv_cache_bytes"] = p.kv_cache_bytes;
  d["kv_layer_bytes"] = p.kv_layer_bytes;
  d["scratch_bytes"] = p.scratch_bytes;
  d["staging_bytes"] = p.staging_bytes;
  d["vision_bytes"] = p.vision_bytes;
  d["slot_bytes"] = p.slot_bytes;
  d["n_slots"] = p.n_slots;
  d["min_slots"] = p.min_slots;
  d["total_experts"] = p.total_experts;
  d["fixed_bytes"] = p.fixed_bytes();
  d["min_budget"] = p.min_budget();
  d["total_bytes"] = p.total_bytes();
  return d;
}

std::vector<int32_t> token_vector(const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& ids) {
  if (ids.ndim() != 1) throw std::invalid_argument("token ids must be a 1-D sequence");
  return std::vector<int32_t>(ids.data(), ids.data() + ids.size());
}

// True when Ctrl-C would raise KeyboardInterrupt in this thread: Python runs
// signal handlers on the main thread only, and a program may have its own.
bool sigint_raises_keyboard_interrupt() {
  py::module_ threading = py::module_::import("threading");
  if (!threading.attr("current_thread")().is(threading.attr("main_thread")())) return false;
  py::module_ signal = py::module_::import("signal");
  return signal.attr("getsignal")((int)SIGINT).is(signal.attr("default_int_handler"));
}

// Set from any thread to stop the forward pass it was passed to (edgemoe.CancelToken).
struct CancelFlag {
  std::atomic<bool> set{false};
};

// Runs compute(stop) without the GIL. Ctrl-C meanwhile stops the forward pass
// at the next layer and raises KeyboardInterrupt, instead of only after the
// whole (possibly minutes-long) prefill; so does the cancel flag, with
// edgemoe.Cancelled.
template <class Compute>
void run_interruptible(const CancelFlag* cancel, Compute&& compute) {
  std::optional<SigintWatch> watch;
  if (sigint_raises_keyboard_interrupt()) watch.emplace();
  try {
    py::gil_scoped_release nogil;
    compute(StopFlags{watch ? watch->flag() : nullptr, cancel ? &cancel->set : nullptr});
  } catch (const Interrupted&) {
    watch.reset();
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // Python's handler raised
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
}

using TokenIds = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

using FloatRows = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Python's images, [(first token, merged grid_h, grid_w, features [grid_h * grid_w, width])], as the
// engine takes them; `keep` holds the arrays the ImageFeatures point into.
std::vector<ImageFeatures> image_features(const py::list& images, int64_t width, std::vector<FloatRows>& keep) {
  std::vector<ImageFeatures> out;
  for (const py::handle& item : images) {
    const auto t = item.cast<std::tuple<int64_t, int, int, FloatRows>>();
    ImageFeatures f{std::get<0>(t), std::get<1>(t), std::get<2>(t), nullptr};
    keep.push_back(std::get<3>(t));
    const FloatRows& rows = keep.back();
    if (rows.ndim() != 2 || rows.shape(0) != f.count() || rows.shape(1) != width)
      throw std::invalid_argument("an image's features must be [grid_h * grid_w, " + std::to_string(width) + "]");
    f.rows = rows.data();
    out.push_back(f);
  }
  return out;
}

py::array_t<float> engine_logits(Engine& e, const TokenIds& ids, int vocab, const CancelFlag* cancel,
                                 const py::list& images) {
  std::vector<int32_t> tokens = token_vector(ids);
  std::vector<FloatRows> keep;
  const std::vector<ImageFeatures> features = image_features(images, e.config().image_feature_width(), keep);
  py::array_t<float> out({(int64_t)tokens.size(), (int64_t)vocab});
  float* p = out.mutable_data();
  run_interruptible(cancel, [&](StopFlags stop) { e.logits(tokens.data(), (int64_t)tokens.size(), p, stop, features); });
  return out;
}

py::array_t<float> engine_eval(Engine& e, const TokenIds& ids, int vocab, const CancelFlag* cancel, bool all_logits,
                              bool cached_only, const py::list& images) {
  std::vector<int32_t> tokens = token_vector(ids);
  std::vector<FloatRows> keep;
  const std::vector<ImageFeatures> features = image_features(images, e.config().image_feature_width(), keep);
  py::array_t<float> out = all_logits ? py::array_t<float>({(int64_t)tokens.size(), (int64_t)vocab}) : py::array_t<float>(vocab);
  float* p = out.mutable_data();
  run_interruptible(cancel, [&](StopFlags stop) {
    e.eval(tokens.data(), (int64_t)tokens.size(), p, stop, all_logits, cached_only, features);
  });
  return out;
}

// pixels [patches, patch values] of one image -> its image tokens' features (Engine::encode_image).
py::array_t<float> engine_encode_image(Engine& e, const FloatRows& pixels, int grid_h, int grid_w,
                                       const CancelFlag* cancel) {
  const ModelConfig& c = e.config();
  e.require_vision();  // (before the shapes, which a model without a tower does not have)
  if (pixels.ndim() != 2 || pixels.shape(0) != (int64_t)grid_h * grid_w || pixels.shape(1) != c.vision_patch_values())
    throw std::invalid_argument("pixels must be [grid_h * grid_w, " + std::to_string(c.vision_patch_values()) + "]");
  const int64_t m = c.vision_merge;
  py::array_t<float> out({(int64_t)grid_h * grid_w / (m * m), c.image_feature_width()});
  float* p = out.mutable_data();
  const float* x = pixels.data();
  run_interruptible(cancel, [&](StopFlags stop) { e.encode_image(x, grid_h, grid_w, p, stop); });
  return out;
}

py::tuple engine_take_trace(Engine& e, int n_layers, int top_k) {
  RoutingTrace t = e.take_trace();
  const int64_t n = (int64_t)t.positions.size();
  py::array_t<int64_t> pos(n);
  py::array_t<int32_t> experts({n, (int64_t)n_layers, (int64_t)top_k});
  py::array_t<float> weights({n, (int64_t)n_layers, (int64_t)top_k});
  std::copy(t.positions.begin(), t.positions.end(), pos.mutable_data());
  std::copy(t.experts.begin(), t.experts.end(), experts.mutable_data());
  std::copy(t.weights.begin(), t.weights.end(), weights.mutable_data());
  py::array_t<int32_t> predicted({(int64_t)t.predicted.size() / 3, (int64_t)3});
  std::copy(t.predicted.begin(), t.predicted.end(), predicted.mutable_data());
  const int64_t width = n && !t.hidden.empty() ? (int64_t)t.hidden.size() / (n * n_layers) : 0;
  py::array_t<float> hidden({width ? n : 0, (int64_t)n_layers, width});
  std::copy(t.hidden.begin(), t.hidden.end(), hidden.mutable_data());
  return py::make_tuple(pos, experts, weights, predicted, hidden);
}

py::dict engine_stats(const Engine& e) {
  EngineStats s = e.stats();
  py::dict d;
  d["cache_hits"] = s.store.hits;
  d["cache_misses"] = s.store.misses;
  d["bytes_read"] = s.store.bytes_read;
  d["io_wait_s"] = s.store.io_wait_s;
  d["cache_s"] = s.store.cache_s;
  d["compute_s"] = s.compute_s;
  d["tokens"] = s.tokens;
  d["skipped_choices"] = s.skipped_choices;
  d["low_bit_choices"] = s.low_bit_choices;
  d["prefetch_issued"] = s.store.prefetch_issued;
  d["prefetch_loaded"] = s.store.prefetch_loaded;
  d["prefetch_hits"] = s.store.prefetch_hits;
  d["prefetch_wasted"] = s.store.prefetch_wasted;
  d["prefetch_cancelled"] = s.store.prefetch_cancelled;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "EdgeMoE C++ runtime";

  py::module_ errors = py::module_::import("edgemoe.errors");
  static py::object py_format_error = errors.attr("FormatError");
  static py::object py_storage_error = errors.attr("StorageError");
  static py::object py_budget_error = errors.attr("BudgetError");
  static py::object py_cancelled = errors.attr("Cancelled");
  static py::object py_base_error = errors.attr("EdgeMoEError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FormatError& e) {
      PyErr_SetString(py_format_error.ptr(), e.what());
    } catch (const StorageError& e) {
      PyErr_SetString(py_storage_error.ptr(), e.what());
    } catch (const BudgetError& e) {
      PyErr_SetString(py_budget_error.ptr(), e.what());
    } catch (const Cancelled& e) {
      PyErr_SetString(py_cancelled.ptr(), e.what());
    } catch (const EdgeMoEError& e) {
      PyErr_SetString(py_base_error.ptr(), e.what());
    } catch (const Interrupted&) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
  });

  // --- kernels (exposed for tests and benchmarks) ---
  m.def("available_isas", [] {
    std::vector<std::string> names;
    for (Isa isa : available_isas()) names.push_back(isa_name(isa));
    return names;
  });
  m.def("set_isa", [](const std::string& name) {
    if (!set_isa(isa_from_name(name))) throw std::invalid_argument("ISA '" + name + "' not available here");
  });
  m.def("current_isa", [] { return std::string(isa_name(current_isa())); });
  m.def("zstd_supported", &zstd_supported, "True if this build reads zstd-compressed expert blobs");
  m.def("compile_flags", [] { return std::string(EDGEMOE_COMPILE_FLAGS); },
        "The C++ flags this extension was built with (set by setup.py)");
  m.def("matmul", &py_matmul, py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("x"),
        "y[n, rows] = x[n, k] @ W^T with W in the given weight encoding (raw bytes)");
  m.def("dequantize_row", &py_dequantize_row, py::arg("type"), py::arg("row"), py::arg("k"));
  m.attr("KEPT_FOR_LATER_PREFIX") = kKeptForLaterPrefix;
  m.def("gated_delta_rule", &py_gated_delta_rule, py::arg("S"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("decay"), py::arg("beta"), "(new state [dk, dv], outputs [n, dv]) of the gated delta rule kernel");
  m.def("check_config", [](const py::dict& cfg) {
    const Values given = values_from_dict<FormatError>(cfg, "invalid model config");
    return dict_from_values(config_with_defaults(config_from_values(given), given));
  }, "The model config checked against the one field list: every field, the given ones as given and "
     "the rest at their defaults (FormatError names the first bad one)");
  m.def("kv_cache_bytes", [](const py::dict& cfg, const py::dict& options) {
    const EngineOptions o = options_from_dict(options);
    return Transformer::kv_cache_bytes(config_from_dict(cfg), o.ctx_size, o.max_batch, o.kv_f16, o.state_checkpoints);
  }, py::arg("config"), py::arg("options"),
     "the context the engine allocates: KV cache and linear-attention state (options: ctx_size, kv_cache, "
     "state_checkpoints)");
  m.def("layer_kinds", [](const py::dict& cfg) {
    const ModelConfig c = config_from_dict(cfg);
    std::vector<std::string> kinds;
    for (int l = 0; l < c.n_layers; ++l) kinds.push_back(layer_kind(c, l));
    return kinds;
  }, "what each layer is, in words (edgemoe info)");
  m.def("plan_memory", [](const Container& container, const py::dict& options, std::optional<uint64_t> budget,
                          std::optional<int64_t> cache_experts) {
    return plan_dict(plan_memory(container, options_from_dict(options), budget, cache_experts));
  }, py::arg("container"), py::arg("options"), py::arg("budget") = py::none(),
     py::arg("cache_experts") = py::none(), "the memory plan of an engine (csrc/runtime/memory_plan.h)");
  m.def("engine_option_defaults", [] { return dict_from_values(options_to_values(EngineOptions{})); },
        "every engine option's default (csrc/runtime/options.h)");
  m.def("engine_option_choices", &option_choices, "the allowed names of each option that takes a name");

  py::class_<CancelFlag>(m, "CancelFlag")
      .def(py::init<>())
      .def("set", [](CancelFlag& f) { f.set.store(true); })
      .def("clear", [](CancelFlag& f) { f.set.store(false); })
      .def("is_set", [](const CancelFlag& f) { return f.set.load(); });

  py::class_<Container>(m, "Container", "An opened .emoe container, its header and tables checked (csrc/format)")
      .def_readonly("path", &Container::path)
      .def_readonly("version", &Container::version)
      .def_readonly("file_size", &Container::file_size)
      .def_property_readonly("config", &config_dict)
      .def_property_readonly("manifest_bytes", [](const Container& c) { return py::bytes(c.manifest_json); })
      // Python parses the manifest once; the runtime never reads it: its bytes need not stay twice.
      .def("release_manifest_bytes", [](Container& c) { std::string().swap(c.manifest_json); })
      .def_property_readonly("sections", [](const Container& c) {
        py::dict d;
        d["index"] = section_dict(c.index);
        d["manifest"] = section_dict(c.manifest);
        d["resident"] = section_dict(c.resident);
        d["experts"] = section_dict(c.experts_section);
        return d;
      })
      .def_readonly("resident_loaded", &Container::resident_loaded,
                    "the resident bytes an engine loads (the rest: tensors kept for later, mtp.*)")
      .def_property_readonly("tensors", &tensor_table)
      .def_property_readonly("experts", [](const Container& c) { return expert_table(c.experts); })
      .def_property_readonly("low_bit_experts",
                             [](const Container& c) -> py::object {
                               if (c.low_bit_experts.empty()) return py::none();
                               return expert_table(c.low_bit_experts);
                             });
  m.def("open_container", [](const std::string& path) {
    py::gil_scoped_release nogil;
    return open_container(path);
  }, py::arg("path"), "read and check a container's header, config and tables (FormatError says what is wrong)");

  py::class_<Engine>(m, "Engine")
      .def(py::init(&make_engine), py::arg("container"), py::arg("options"), py::arg("profile") = py::none())
      .def("logits", &engine_logits, py::arg("ids"), py::arg("vocab"), py::arg("cancel") = nullptr,
           py::arg("images") = py::list())
      .def("eval", &engine_eval, py::arg("ids"), py::arg("vocab"), py::arg("cancel") = nullptr,
           py::arg("all_logits") = false, py::arg("cached_only") = false, py::arg("images") = py::list())
      .def("encode_image", &engine_encode_image, py::arg("pixels"), py::arg("grid_h"), py::arg("grid_w"),
           py::arg("cancel") = nullptr)
      .def("reset", [](Engine& e) {
        py::gil_scoped_release nogil;
        e.reset();
      })
      .def("set_tracing", &Engine::set_tracing, py::arg("on"), py::arg("with_hidden") = false)
      .def("take_trace", &engine_take_trace, py::arg("n_layers"), py::arg("top_k"))
      .def("truncate", &Engine::truncate, py::arg("n"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("n_past", &Engine::n_past)
      .def_property_readonly("slot_bytes", &Engine::slot_bytes)
      .def_property_readonly("n_slots", &Engine::n_slots)
      .def_property_readonly("direct_io", &Engine::direct_io)
      .def_property_readonly("allocated_bytes", &Engine::allocated_bytes)
      .def("stats", &engine_stats)
      .def("reset_stats", &Engine::reset_stats, py::call_guard<py::gil_scoped_release>());

  m.def("row_bytes", [](int type_code, int64_t k) { return qtype_row_bytes(qtype_arg(type_code), k); });
}
