"""`edgemoe doctor`: the layout it predicts from a config alone is the converter's, to the byte,
and so is the memory plan; its storage probe and prediction reach `generate --stats`."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import edgemoe
from edgemoe import _core
from edgemoe.apps.doctor import diagnose, predict_decode, probe_storage, saved_storage_probe, skeleton
from edgemoe.format.container import open_container
from edgemoe.options import LoadOptions

from conftest import FIXTURES, hub_cache_entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _layout(c):
    tensors = {n: (t["type"], tuple(t["shape"]), t["nbytes"]) for n, t in c.tensors.items()}
    experts = [[(b["type"], b["size"], tuple((p, q["offset"], q["nbytes"]) for p, q in sorted(b["parts"].items())))
                for b in row] for row in c.experts]
    # the manifest is not compared: a skeleton carries no tokenizer
    r = c.sections["resident"]
    return tensors, experts, (r["offset"], r["size"]), c.sections["experts"]["size"]


def _plan(c):
    return _core.plan_memory(c.native, {"ctx_size": 512}, None, None)


@pytest.mark.parametrize("name,bits", [("qwen3_moe", "4k"), ("mixtral", "8"), ("gpt_oss", "8"), ("deepseek_v3", "4"),
                                       ("glm4_moe", "2"), ("gemma4", "8"), ("qwen2_moe", "4k")])
def test_the_skeleton_is_the_converted_layout(converted, tmp_path, name, bits):
    real = open_container(converted(name, bits))
    path = str(tmp_path / "skeleton.emoe")
    skeleton(str(FIXTURES / name), bits, path)
    guess = open_container(path)
    assert guess.manifest["skeleton"] is True
    assert _layout(guess) == _layout(real)
    assert {k: v for k, v in guess.config.items() if k != "eos_token_ids"} == \
        {k: v for k, v in real.config.items() if k != "eos_token_ids"}
    assert _plan(guess) == _plan(real)
    assert os.stat(path).st_blocks * 512 < real.file_size  # sparse: the weights' bytes are never written


def test_the_skeleton_of_a_gguf_is_its_conversion_s_layout(tmp_path):
    from edgemoe.convert.gguf import convert_gguf

    gguf = str(FIXTURES / "gguf" / "mixtral-f32.gguf")
    real = str(tmp_path / "real.emoe")
    convert_gguf(gguf, real, bits="4", progress=False)
    skeleton(gguf, "4", str(tmp_path / "skeleton.emoe"))
    assert _layout(open_container(str(tmp_path / "skeleton.emoe"))) == _layout(open_container(real))


def test_a_skeleton_cannot_be_loaded_as_a_model(tmp_path):
    path = str(tmp_path / "skeleton.emoe")
    skeleton(str(FIXTURES / "qwen3_moe"), "8", path)
    with pytest.raises(edgemoe.FormatError, match="skeleton laid out by `edgemoe doctor`"):
        edgemoe.load(path)


def test_diagnose_reports_each_width_with_the_plan_load_would_make(converted):
    report = diagnose(str(FIXTURES / "qwen3_moe"), ["8", "2"], LoadOptions(memory_budget="4MB"), probe=False,
                      progress=False)
    rows = {r["bits"]: r for r in report["widths"]}
    model = edgemoe.load(converted("qwen3_moe", "8"), memory_budget="4MB")
    assert rows["8"]["min_budget"] == model.plan.min_budget and rows["8"]["slots"] == model.plan.n_slots
    real = open_container(converted("qwen3_moe", "8"))
    assert rows["8"]["resident_bytes"] == real.sections["resident"]["size"]
    assert rows["8"]["expert_bytes"] == sum(b["size"] for row in real.experts for b in row)
    assert rows["2"]["expert_bytes"] < rows["8"]["expert_bytes"] and rows["2"]["min_budget"] < rows["8"]["min_budget"]
    too_small = diagnose(str(FIXTURES / "qwen3_moe"), ["8"], LoadOptions(memory_budget="100KB"), probe=False,
                         progress=False)
    assert "below this model's minimum" in too_small["widths"][0]["does_not_fit"]


def test_the_probe_and_the_prediction_reach_generate_stats(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = str(tmp_path / "m.emoe")
    shutil.copy(converted("qwen3_moe", "8"), path)
    probe = probe_storage(str(tmp_path), block=64 << 10, memory_gbs=10.0, total=8 << 20)
    assert probe["read_gbs"] > 0 and saved_storage_probe(path)["read_gbs"] == probe["read_gbs"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".edgemoe-probe")]  # its file is removed
    model = edgemoe.load(path, cache_experts=16)
    p = predict_decode(model.container, model.plan, probe["read_gbs"], 10.0)
    total = sum(len(row) for row in model.container.experts)
    assert p["hit_rate"] == 16 / total and p["tok_s"] > 0
    env = dict(os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "edgemoe", "generate", path, "-p", "hi", "-n", "3", "--cache-experts",
                        "16", "--stats"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"doctor   predicted at least {p['tok_s']:.1f} tok/s decode at this plan" in r.stderr


def test_doctor_from_a_repo_id_fetches_only_the_config(tmp_path):
    cache = tmp_path / "hub"
    hub_cache_entry(cache, "test-org/tiny", [FIXTURES / "qwen3_moe" / "config.json"])  # no weights cached at all
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "edgemoe", "doctor", "test-org/tiny", "--no-probe", "--json",
                        "--bits", "8", "--memory-budget", "4MB"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["widths"][0]["bits"] == "8" and report["widths"][0]["slots"] > 0
