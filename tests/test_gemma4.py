"""Gemma 4's MoE (fixture gemma4 from tools/make_family_fixtures.py: sliding layers of 2 KV heads of
16 beside global layers of 1 KV head of 48 whose values come from the key projection, proportional
rope, the dense MLP beside the experts, soft-capped logits). Its f32 logits and greedy continuation
against transformers are in test_parity.py; here: what that match rests on, the hub's multimodal
layout, the KV cache of layers of two widths, and the configs that are refused."""
import json
import shutil

import numpy as np
import pytest

import edgemoe
from conftest import (FIXTURES, assert_conversion_refused, assert_rewind_resumes, reference, rel_error,
                      small_batch_engine)
from container_edit import replace_tables
from edgemoe.format.container import open_container
from edgemoe.format.model_config import validate_config

F32_REL_TOL = 5e-5  # as test_parity.py holds this fixture to (measured 1.5e-5 and 2.2e-5; see there)
BROKEN = 1e-3  # each planted bug below moves the logits by more than this


def f32_logits(path, ids):
    return np.asarray(edgemoe.load(str(path), threads=2, kv_cache="f32").logits(ids))


@pytest.mark.parametrize("change", [
    dict(value_norm=False), dict(sandwich_norms=False, expert_norms=False), dict(expert_norms=False), dict(router_expert_scale=False),
    dict(layer_output_scale=False), dict(embedding_scale=1.0), dict(final_logit_softcap=0.0),
    dict(global_rope_angles=0), dict(global_rope_theta=10000.0), dict(attention_scale=0.0),
    dict(expert_activation="silu"), dict(sliding_layers=[0, 1, 3], sliding_window=48),
])
def test_each_gemma4_feature_is_what_the_match_rests_on(converted, change, tmp_path):
    # The same container with one feature dropped: the match with transformers must then fail.
    # (A window as long as the prompt: sliding layers attending to everything.)
    path = tmp_path / "changed.emoe"
    shutil.copy(converted("gemma4", "f32"), path)
    replace_tables(path, config=dict(open_container(str(path)).config, **change))
    ref = reference("gemma4")
    assert rel_error(f32_logits(path, ref["input_ids"].tolist()), ref["logits"]).max() > BROKEN


def hub_folder(tmp_path):
    """The fixture as the hub ships Gemma 4: Gemma4ForConditionalGeneration with the text model's
    config in text_config (global widths as global_head_dim and num_global_key_value_heads), its
    tensors under model.language_model., and a vision tower beside them."""
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "hub"
    shutil.copytree(FIXTURES / "gemma4", src)
    text = json.loads((src / "config.json").read_text())
    per_layer = text.pop("per_layer_config")
    widths = {(v["head_dim"], v["num_key_value_heads"]) for v in per_layer.values()}
    (head_dim, kv_heads), = widths
    text.update(model_type="gemma4_text", global_head_dim=head_dim, num_global_key_value_heads=kv_heads)
    del text["architectures"]
    (src / "config.json").write_text(json.dumps({
        "architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4", "text_config": text,
        "vision_config": {"model_type": "gemma4_vision", "hidden_size": 8}, "eos_token_id": text["eos_token_id"]}))
    tensors = load_file(str(src / "model.safetensors"))
    renamed = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
               for k, v in tensors.items()}
    renamed["model.vision_tower.patch_embedder.weight"] = np.ones((8, 4), np.float32)
    (src / "model.safetensors").unlink()
    save_file(renamed, str(src / "model.safetensors"))
    return src


def test_the_hubs_multimodal_layout_converts_to_the_same_model(tmp_path):
    from edgemoe.convert import convert_hf

    out = tmp_path / "hub.emoe"
    cfg = convert_hf(str(hub_folder(tmp_path)), str(out), bits="f32", progress=False)
    assert (cfg["global_head_dim"], cfg["global_kv_heads"], cfg["global_rope_angles"]) == (48, 1, 6)
    ref = reference("gemma4")
    err = rel_error(f32_logits(out, ref["input_ids"].tolist()), ref["logits"])
    assert err.max() < F32_REL_TOL, f"worst position {err.argmax()}: relative error {err.max():.2e}"


@pytest.mark.parametrize("max_batch", [1, 5])
def test_prefill_in_small_batches_wraps_the_sliding_ring_and_still_matches(converted, max_batch):
    engine, vocab = small_batch_engine(converted("gemma4", "f32"), max_batch)
    ref = reference("gemma4")
    err = rel_error(np.asarray(engine.logits(ref["input_ids"].tolist(), vocab)), ref["logits"])
    assert err.max() < F32_REL_TOL, f"worst position {err.argmax()}: relative error {err.max():.2e}"


def test_each_layer_caches_its_own_width_and_the_engine_holds_the_plan(converted):
    # fp16 K and V: sliding layers (0, 1, 3) 2 heads of 16 over 8 + 256 - 1 rows, global layers
    # (2, 4) 1 head of 48 over the whole context.
    model = edgemoe.load(converted("gemma4", "8"), threads=1, ctx_size=1024)
    layers = model.info()["layers"]
    assert [layer["kv_cache_bytes"] for layer in layers] == [2 * 2 * w * n for w, n in (
        (32, 263), (32, 263), (48, 1024), (32, 263), (48, 1024))]
    assert layers[2]["kind"] == "full attention (1 KV heads of 48, values from keys) + MLP (48) + MoE"
    assert layers[0]["kind"] == "sliding-window attention (8) + MLP (48) + MoE"
    assert model.plan.kv_cache_bytes == sum(layer["kv_cache_bytes"] for layer in layers)
    assert model._engine.allocated_bytes == model.plan.total_bytes


def test_a_rewind_then_resume_equals_a_fresh_evaluation(converted):
    ids = reference("gemma4")["input_ids"].tolist()
    assert_rewind_resumes(converted("gemma4", "f32"), ids, written=30, kept=27, upto=40)


@pytest.mark.parametrize("changes,message", [
    ({"enable_moe_block": False}, "no MoE block"),
    ({"hidden_size_per_layer_input": 256}, "per-layer input embeddings"),
    ({"num_kv_shared_layers": 2}, "num_kv_shared_layers"),
    ({"use_bidirectional_attention": "all"}, "bidirectional attention"),
    ({"hidden_activation": "silu"}, "activation 'silu'"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types must name 5 layers"),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                          "full_attention": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}},
     "supported rope types: default, proportional"),
    ({"per_layer_config": {"0": {"head_dim": 32}}}, "per_layer_config|per-layer widths on the sliding layer 0"),
    ({"per_layer_config": {"2": {"head_dim": 48, "num_key_value_heads": 1}, "4": {"head_dim": 64}}},
     "full-attention layers of different widths"),
    ({"per_layer_config": {"2": {"head_dim": 33, "num_key_value_heads": 1},
                           "4": {"head_dim": 33, "num_key_value_heads": 1}}}, "global_head_dim must be even"),
    ({"per_layer_config": {"2": {"head_dim": 48, "num_key_value_heads": 3},
                           "4": {"head_dim": 48, "num_key_value_heads": 3}}}, "multiple of global_kv_heads"),
])
def test_hostile_gemma4_configs_are_refused(tmp_path, changes, message):
    assert_conversion_refused(tmp_path, "gemma4", changes, message)


def fixture_config(**changes):
    return dict(json.loads((FIXTURES / "gemma4" / "config.json").read_text()), **changes)


def test_an_empty_per_layer_config_means_global_layers_as_wide_as_the_sliding_ones():
    from edgemoe.convert.arch_gemma4 import Gemma4

    cfg = Gemma4().config(fixture_config(per_layer_config={}))
    assert (cfg["global_head_dim"], cfg["global_kv_heads"]) == (16, 2)


@pytest.mark.parametrize("top,text,tied", [(False, True, False), (None, False, False), (None, None, True),
                                           (True, False, True)])
def test_a_multimodal_checkpoint_ties_its_output_head_by_its_top_level_flag(top, text, tied):
    from edgemoe.convert.arch_gemma4 import Gemma4

    inner = fixture_config()
    inner.pop("tie_word_embeddings")
    if text is not None:
        inner["tie_word_embeddings"] = text
    outer = {"architectures": ["Gemma4ForConditionalGeneration"], "text_config": inner}
    if top is not None:
        outer["tie_word_embeddings"] = top
    assert Gemma4().config(outer)["tie_embeddings"] is tied


@pytest.mark.parametrize("change,message", [
    (dict(sliding_layers=[], sliding_window=0), "this model has no sliding layers"),
    (dict(sliding_layers=[0, 1, 2, 3, 4], global_rope_angles=2048, head_dim=2), "every layer of this model is sliding"),
    (dict(global_rope_theta=1e-9), "global_rope_theta must be 0 or at least 1e-3"),
    (dict(sandwich_norms=False), "expert_norms needs sandwich_norms"),
    (dict(global_rope_angles=25), "global_rope_angles exceeds half the global layers' head_dim"),
    (dict(expert_norms=True, shared_intermediate=0), "expert_norms needs a shared MLP"),
    (dict(global_head_dim=4096 + 2), "global_head_dim"),
    (dict(rope_scaling="linear", rope_factor=2.0), "do not combine with rope_scaling"),
])
def test_hostile_container_configs_are_refused(converted, change, message):
    cfg = dict(open_container(converted("gemma4", "f32")).config, **change)
    with pytest.raises(edgemoe.FormatError, match=message):
        validate_config(cfg)


def test_latent_attention_refuses_sandwich_norms(converted):
    cfg = dict(open_container(converted("deepseek_v2", "f32")).config, sandwich_norms=True)
    with pytest.raises(edgemoe.FormatError, match="latent attention does not combine with .*sandwich_norms"):
        validate_config(cfg)


# ---------------------------------------------------------------- llama.cpp's gemma4 GGUF (tools/make_gguf_fixtures.py)

GGUF = FIXTURES / "gguf" / "gemma4-f32.gguf"


def test_the_gguf_converts_to_the_same_model_and_llama_cpp_agrees_within_its_gelu_table(tmp_path):
    # Ours from the GGUF against transformers: 1.5e-5, as from the Hugging Face folder (the same
    # tolerance). Against llama.cpp on the same file: median 1.1e-3, max 9.4e-3, because llama.cpp's
    # CPU gelu looks its input up in an fp16 table: transformers with that table emulated is within
    # 2.3e-4 of llama.cpp (median 5.9e-5). A misread tensor or key gives errors of order 1.
    from conftest import llama_logits
    from edgemoe.convert.gguf import convert_gguf

    out = tmp_path / "m.emoe"
    cfg = convert_gguf(str(GGUF), str(out), bits="f32", progress=False)
    assert (cfg["global_head_dim"], cfg["global_kv_heads"], cfg["global_rope_angles"], cfg["global_k_eq_v"],
            cfg["sliding_layers"], cfg["final_logit_softcap"]) == (48, 1, 6, True, [0, 1, 3], 8.0)
    ref = reference("gemma4")
    ids = ref["input_ids"].tolist()
    ours = f32_logits(out, ids)
    assert rel_error(ours, ref["logits"]).max() < F32_REL_TOL
    rel = rel_error(ours, llama_logits(GGUF, ids))
    assert np.median(rel) < 5e-3 and rel.max() < 3e-2, (np.median(rel), rel.max())


def gemma4_gguf_with(monkeypatch, **fields):
    """The fixture's GGUF with some metadata fields replaced (as gemma4_config reads them)."""
    from edgemoe.convert.gguf import GGUFCheckpoint

    ck = GGUFCheckpoint(str(GGUF))
    real = ck.field
    monkeypatch.setattr(ck, "field", lambda key, default=None: fields[key] if key in fields else real(key, default))
    return ck


@pytest.mark.parametrize("fields,error,message", [
    ({"gemma4.attention.sliding_window_pattern": [True, False]}, edgemoe.FormatError, "must name 5 layers"),
    ({"gemma4.attention.sliding_window_pattern": [True, True, False, False, True]}, edgemoe.FormatError,
     "the last layer of a gemma4 model is a full-attention layer"),
    ({"gemma4.feed_forward_length": [48, 48, 96, 48, 48]}, edgemoe.UnsupportedModelError,
     "MLPs of different widths"),
    ({"gemma4.attention.key_length": 0}, edgemoe.FormatError, "attention.key_length 0"),
])
def test_inconsistent_gguf_metadata_is_refused(monkeypatch, fields, error, message):
    from edgemoe.convert.gguf import hf_config

    with pytest.raises(error, match=message):
        hf_config(gemma4_gguf_with(monkeypatch, **fields))


def test_rope_frequency_factors_other_than_proportional_ropes_are_refused(monkeypatch):
    from edgemoe.convert.gguf import hf_config

    ck = gemma4_gguf_with(monkeypatch)
    decode = ck._decode
    monkeypatch.setattr(ck, "_decode", lambda t, data: np.full(12, 2.0, np.float32) if t.name == "rope_freqs.weight"
                        else decode(t, data))
    with pytest.raises(edgemoe.UnsupportedModelError, match="rope_freqs other than proportional rope's"):
        hf_config(ck)
