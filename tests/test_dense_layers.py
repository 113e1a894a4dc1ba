"""Dense layers (GLM-4.5's and DeepSeek's first_k_dense_replace, Qwen-MoE's mlp_only_layers and
decoder_sparse_step): a resident MLP instead of a router and experts. Their f32 logits and greedy
continuations against transformers are in test_parity.py (glm4_moe has a dense first layer,
qwen3_moe_yarn a dense middle one); here, what the rest of the engine makes of them."""
import json
import shutil

import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, assert_conversion_refused, reference
from container_edit import replace_tables
from edgemoe.format.container import open_container
from edgemoe.offline.profile import profile_container, routing_statistics

DENSE = {"glm4_moe": [0], "qwen3_moe_yarn": [1]}


@pytest.mark.parametrize("name", sorted(DENSE))
def test_a_dense_layer_is_resident_and_holds_no_experts(converted, name):
    c = open_container(converted(name, "8"))
    cfg = c.config
    assert cfg["dense_layers"] == DENSE[name] and cfg["dense_intermediate"] > cfg["expert_intermediate"]
    for l in range(cfg["n_layers"]):
        dense = l in DENSE[name]
        assert len(c.experts[l]) == (0 if dense else cfg["n_experts"])
        assert (f"layers.{l}.router" in c.tensors) != dense
        assert (f"layers.{l}.dense_gate" in c.tensors) == dense
    model = edgemoe.load(converted(name, "8"), threads=1)
    kinds = [layer["kind"] for layer in model.info()["layers"]]
    assert [("dense MLP" in k) for k in kinds] == [l in DENSE[name] for l in range(cfg["n_layers"])]
    # the scratch is sized for the dense MLP, the widest of the model's MLPs, and the plan says so
    assert model._engine.allocated_bytes == model.plan.total_bytes


def test_routing_statistics_pair_each_moe_layer_with_the_next_one():
    # 3 layers, the middle one dense (-1): layer 0's successor is layer 2
    experts = np.array([[[0, 1], [-1, -1], [2, 3]],
                        [[0, 2], [-1, -1], [2, 1]]])
    s = routing_statistics(np.array([5, 6]), experts, n_experts=4, vocab=8, moe=[0, 2])
    assert not s["freq"][1].any() and s["freq"][0].tolist() == [1.0, 0.5, 0.5, 0.0]
    assert s["next_layer"].shape == (2, 4, 4) and not s["next_layer"][1].any()
    assert s["next_layer"][0][0].tolist() == [0.0, 0.5, 1.0, 0.5]  # P(b in layer 2 | 0 in layer 0)
    assert (s["token_experts"][:, 1] == -1).all()


def test_predictors_skip_dense_layers_and_keep_results(converted, tmp_path):
    path = str(tmp_path / "p.emoe")
    shutil.copyfile(converted("qwen3_moe_yarn", "8"), path)
    profile_container(path, " ".join(["the quick brown fox jumps over the lazy dog"] * 8), window=32)
    ids = reference("qwen3_moe_yarn")["input_ids"].tolist()[:24]
    base = edgemoe.load(path, predictor="none", cache_experts=2)
    expected = np.stack([base.eval([t]) for t in ids])
    for predictor in ("gate", "stats", "token", "auto"):
        model = edgemoe.load(path, predictor=predictor, cache_experts=2, prefetch_depth=2,
                             prefetch_min_confidence=0.0)
        with model.record_routing() as r:
            np.testing.assert_array_equal(np.stack([model.eval([t]) for t in ids]), expected)
        assert model.stats()["prefetch_issued"] > 0, predictor
        assert set(r.predicted[:, 1].tolist()) <= {0, 2}, predictor  # never the dense layer
        assert (r.experts[:, 1] == -1).all() and (r.experts[:, [0, 2]] >= 0).all()


def test_a_profile_naming_experts_of_a_dense_layer_is_refused(converted):
    # The token predictor would ask the store for them on every decode step (found in review).
    from edgemoe import _core

    c = open_container(converted("glm4_moe", "8"))
    L, E, K, V = (c.config[k] for k in ("n_layers", "n_experts", "top_k", "vocab"))
    tok = np.full((V, L, K), -1, np.int32)
    tok[5, 0, 0] = 3  # layer 0 is dense
    profile = (np.zeros((L, E), np.float32), np.zeros((L - 1, E, E), np.float32), tok, np.ones(tok.shape, np.float32))
    with pytest.raises(edgemoe.FormatError, match="names experts of dense layer 0"):
        _core.Engine(c.native, {"expert_slots": 4, "threads": 1, "ctx_size": 64, "max_batch": 8, "cache_policy": "lru",
                                "predictor": "token", "prefetch_min_confidence": 0.0}, profile)


def test_a_trace_lists_no_experts_for_a_dense_layer(converted, tmp_path):
    from edgemoe.trace import read_trace

    model = edgemoe.load(converted("glm4_moe", "8"))
    model.generate([1, 2, 3], max_tokens=2, stop_at_eos=False, trace=str(tmp_path / "t.jsonl"))
    header, records = read_trace(str(tmp_path / "t.jsonl"))
    assert header["dense_layers"] == [0]
    assert all(r["experts"][0] == [] and len(r["experts"][1]) == header["top_k"] for r in records)


def test_an_expert_table_with_entries_for_a_dense_layer_is_refused(converted, tmp_path):
    path = tmp_path / "c.emoe"
    shutil.copyfile(converted("glm4_moe", "8"), path)
    experts = open_container(str(path)).experts
    experts[0] = experts[1]
    replace_tables(path, experts=experts)
    with pytest.raises(edgemoe.FormatError, match="follow the expert table"):
        edgemoe.load(str(path))


@pytest.mark.parametrize("changes,dense", [
    ({"decoder_sparse_step": 2}, [0, 2]),        # transformers: MoE where (layer + 1) % step == 0
    ({"mlp_only_layers": [2]}, [2]),
    ({"mlp_only_layers": [0], "decoder_sparse_step": 3}, [0, 1]),
])
def test_qwen_dense_layer_rules(changes, dense):
    from edgemoe.convert.hf import pick_arch

    hf = dict(json.loads((FIXTURES / "qwen3_moe_yarn" / "config.json").read_text()), mlp_only_layers=[])
    hf.update(changes)
    assert pick_arch(hf).config(hf)["dense_layers"] == dense


@pytest.mark.parametrize("name,changes,message", [
    ("glm4_moe", {"first_k_dense_replace": 3}, "first_k_dense_replace = 3 is not a count of leading layers"),
    ("glm4_moe", {"first_k_dense_replace": "1"}, "first_k_dense_replace = '1'"),
    ("qwen3_moe_yarn", {"mlp_only_layers": [0, 1, 2]}, "every layer is dense"),
    ("qwen3_moe_yarn", {"mlp_only_layers": ["0"]}, "not layer numbers"),
])
def test_hostile_dense_layer_configs_are_refused(tmp_path, name, changes, message):
    assert_conversion_refused(tmp_path, name, changes, message)


def test_auto_bits_leaves_dense_layers_out(tmp_path):
    from edgemoe.convert.auto_bits import plan_expert_types
    from edgemoe.convert import convert_hf

    src = str(FIXTURES / "glm4_moe")
    calib = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)
    types, report = plan_expert_types(src, calib, max_loss_increase=1e9, window=32, progress=False)
    assert types[0] == [] and all(len(row) == 8 for row in types[1:])
    assert not np.asarray(report["sensitivity"])[0].any()
    convert_hf(src, str(tmp_path / "auto.emoe"), expert_types=types, progress=False)
    assert open_container(str(tmp_path / "auto.emoe")).experts[0] == []
