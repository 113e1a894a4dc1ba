"""DeepSeek-V2/V3 latent attention (fixtures deepseek_v2, deepseek_v3 from
tools/make_family_fixtures.py): what the match with transformers rests on, the latent KV cache's
size, rewinds, and hostile configs. The f32 logits and greedy continuations are in test_parity.py
(measured within 5.9e-6 relative of transformers)."""
import json
import shutil

import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, assert_conversion_refused, assert_rewind_resumes, reference, rel_error
from container_edit import replace_tables
from edgemoe.format.container import open_container

F32_REL_TOL = 1e-5  # as test_parity.py


def f32_logits(path, ids):
    return edgemoe.load(str(path), threads=2, kv_cache="f32").logits(ids)


@pytest.mark.parametrize("name,change", [
    ("deepseek_v2", dict(attention_scale=0.0)),           # YaRN's mscale_all_dim in the softmax scale
    ("deepseek_v2", dict(routed_scaling_factor=1.0)),     # softmax routing scaled
    ("deepseek_v3", dict(n_group=1, topk_group=1)),       # group-limited sigmoid routing
    ("deepseek_v2_groups", dict(n_group=1, topk_group=1)),  # V2's group-limited softmax routing
    ("deepseek_v2_groups", dict(group_score="top2_sum")),   # its groups scored by their best expert
    ("deepseek_v3", dict(latent_norm_eps=0.1)),           # the q_a / kv_a norms' own eps
])
def test_each_deepseek_feature_is_what_the_match_rests_on(converted, tmp_path, name, change):
    path = tmp_path / "changed.emoe"
    shutil.copy(converted(name, "f32"), path)
    replace_tables(path, config=dict(open_container(str(path)).config, **change))
    ref = reference(name)
    assert rel_error(f32_logits(path, ref["input_ids"].tolist()), ref["logits"]).max() > 100 * F32_REL_TOL


@pytest.mark.parametrize("name", ["deepseek_v2", "deepseek_v3"])
def test_interleaved_rotary_pairs_are_what_the_match_rests_on(tmp_path, monkeypatch, name):
    # Converted as if the checkpoint's rotary dims were already half-split: the match must break.
    from edgemoe.convert import convert_hf
    from edgemoe.convert.arch_deepseek import DeepseekV2, DeepseekV3

    monkeypatch.setattr({"deepseek_v2": DeepseekV2, "deepseek_v3": DeepseekV3}[name], "interleaved",
                        lambda self, hf: False)
    convert_hf(str(FIXTURES / name), str(tmp_path / "plain.emoe"), bits="f32", progress=False)
    ref = reference(name)
    assert rel_error(f32_logits(tmp_path / "plain.emoe", ref["input_ids"].tolist()), ref["logits"]).max() \
        > 100 * F32_REL_TOL


def test_the_latent_norms_keep_transformers_eps_whatever_rms_norm_eps_says():
    # transformers builds q_a_layernorm / kv_a_layernorm with their default 1e-6 (found in review)
    from edgemoe.convert.hf import pick_arch

    hf = dict(json.loads((FIXTURES / "deepseek_v3" / "config.json").read_text()), rms_norm_eps=1e-5)
    cfg = pick_arch(hf).config(hf)
    assert (cfg["rms_norm_eps"], cfg["latent_norm_eps"]) == (1e-5, 1e-6)


def test_the_cache_holds_one_latent_row_per_position(converted):
    # 3 layers x (kv_lora_rank 64 + rope 16) fp16 values per position, for all 4 heads together;
    # full K and V would be 2 x 4 heads x 48 (keys) or 32 (values) per layer.
    model = edgemoe.load(converted("deepseek_v3", "8"), threads=1, ctx_size=64)
    assert model.plan.kv_cache_bytes == 3 * 64 * (64 + 16) * 2
    assert model._engine.allocated_bytes == model.plan.total_bytes
    assert all(layer["kind"].startswith("latent attention (64 + 16") for layer in model.info()["layers"])


def test_the_fp16_latent_cache_stays_close(converted):
    # measured: 2.7e-3 (v2) and 3.5e-3 (v3) worst relative error with the fp16 cache
    for name in ("deepseek_v2", "deepseek_v3"):
        ref = reference(name)
        logits = edgemoe.load(converted(name, "f32"), threads=2).logits(ref["input_ids"].tolist())
        assert rel_error(logits, ref["logits"]).max() < 2e-2, name


def test_a_rewind_resumes_as_a_fresh_evaluation(converted):
    ids = reference("deepseek_v2")["input_ids"].tolist()
    assert_rewind_resumes(converted("deepseek_v2", "f32"), ids, written=30, kept=17, upto=40)


@pytest.mark.parametrize("name,changes,message", [
    ("deepseek_v2", {"kv_lora_rank": 0}, "latent ranks and head widths that are not positive integers"),
    ("deepseek_v2", {"qk_rope_head_dim": 15, "qk_nope_head_dim": 33}, "even qk_rope_head_dim"),
    ("deepseek_v2", {"topk_method": "noaux_tc"}, "topk_method 'noaux_tc' is not supported"),
    ("deepseek_v3", {"first_k_dense_replace": 3}, "first_k_dense_replace = 3"),
    ("deepseek_v3", {"n_group": 3}, "n_group 3 does not divide n_experts"),
])
def test_hostile_deepseek_configs_are_refused(tmp_path, name, changes, message):
    assert_conversion_refused(tmp_path, name, changes, message)


def test_group_limited_routing_never_picks_a_left_out_group(tmp_path):
    # A correction bias of about -10 makes every candidate's score for the choice negative; the
    # groups left out must still lose, as transformers masks them with -inf. The routing of every
    # token and layer equals a numpy reference computed from the residual stream the engine traced.
    from safetensors.numpy import load_file, save_file
    from edgemoe.convert import convert_hf
    from edgemoe.convert.safetensors_reader import Checkpoint

    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "deepseek_v3", src)
    tensors = load_file(src / "model.safetensors")
    for name in tensors:
        if name.endswith("e_score_correction_bias"):
            tensors[name] = (tensors[name] - 10.0).astype(np.float32)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    convert_hf(str(src), str(tmp_path / "m.emoe"), bits="f32", progress=False)
    model = edgemoe.load(str(tmp_path / "m.emoe"), threads=2, kv_cache="f32")
    cfg = model.config
    with model.record_routing(with_hidden=True) as r:
        model.logits(reference("deepseek_v3")["input_ids"][:24].tolist())
    ckpt = Checkpoint(str(src))
    E, G, K = cfg["n_experts"], cfg["n_group"], cfg["top_k"]
    for l in range(cfg["n_layers"]):
        if l in cfg["dense_layers"]:
            continue
        p = f"model.layers.{l}"
        x = r.hidden[:, l].astype(np.float64)
        xn = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + cfg["rms_norm_eps"])
        xn *= ckpt.get(f"{p}.post_attention_layernorm.weight")
        choice = 1 / (1 + np.exp(-(xn @ ckpt.get(f"{p}.mlp.gate.weight").T)))
        choice += ckpt.get(f"{p}.mlp.gate.e_score_correction_bias")
        assert (choice < 0).all()
        group = np.sort(choice.reshape(-1, G, E // G), axis=-1)[..., -2:].sum(-1)
        kept = np.argsort(-group, axis=-1)[:, :cfg["topk_group"]]
        masked = np.full_like(choice, -np.inf)
        for t, groups in enumerate(kept):
            for g in groups:
                masked[t, g * (E // G):(g + 1) * (E // G)] = choice[t, g * (E // G):(g + 1) * (E // G)]
        want = np.sort(np.argsort(-masked, axis=-1, kind="stable")[:, :K], axis=-1)
        np.testing.assert_array_equal(np.sort(r.experts[:, l], axis=-1), want)
