"""Shared test fixtures: the committed tiny checkpoints, converted once per session."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory):
    """Tests (and the processes they start) get a cache folder of their own: `edgemoe doctor`'s
    storage probe in the user's ~/.cache would otherwise add a line to every `--stats`."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before
ARCH_FIXTURES = ["mixtral", "qwen2_moe", "qwen3_moe", "qwen3_moe_stacked", "olmoe"]
# tools/make_family_fixtures.py: rope scaling types and the newer families (tests/test_families.py)
FAMILY_FIXTURES = ["qwen3_moe_yarn", "mixtral_dynamic", "olmoe_linear", "gpt_oss", "gpt_oss_mxfp4", "glm4_moe",
                   "deepseek_v2", "deepseek_v2_groups", "deepseek_v3", "gemma4", "qwen3_next", "qwen3_5_moe", "qwen3_next_wide_values"]


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """converted(name, bits) -> path of the fixture `name` converted with `--bits bits` (cached)."""
    from edgemoe.convert import convert_hf

    out_dir = tmp_path_factory.mktemp("converted")
    cache = {}

    def get(name: str, bits: str = "f32", resident_bits=None) -> str:
        key = (name, bits, resident_bits)
        if key not in cache:
            out = str(out_dir / f"{name}-{bits}-{resident_bits}.emoe")
            convert_hf(str(FIXTURES / name), out, bits=bits, resident_bits=resident_bits, progress=False)
            cache[key] = out
        return cache[key]

    return get


def fixture_folder(tmp_path, name: str, **config_changes):
    """A copy of the fixture folder `name` (tmp_path/src) with config.json's `config_changes` applied."""
    import json
    import shutil

    src = tmp_path / "src"
    shutil.copytree(FIXTURES / name, src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(cfg, **config_changes)))
    return src


def assert_conversion_refused(tmp_path, name: str, changes, message: str) -> None:
    """Converting fixture `name` with config.json's `changes` fails with the package's error
    matching `message`, and leaves no output file."""
    import pytest

    import edgemoe
    from edgemoe.convert import convert_hf

    src = fixture_folder(tmp_path, name, **changes)
    with pytest.raises((edgemoe.UnsupportedModelError, edgemoe.FormatError), match=message):
        convert_hf(str(src), str(tmp_path / "out.emoe"), progress=False)
    assert not (tmp_path / "out.emoe").exists()


def decode_logits(model, ids):
    """Logits of every position of ids from an empty context, one token at a time (the decode path)."""
    model.reset()
    return np.stack([model.eval([t]) for t in ids])


def small_batch_engine(path, max_batch: int, ctx_size: int = 64):
    """The engine over the container `path` (f32 KV cache, every expert cached) with prefill
    batches of max_batch tokens, and its vocabulary size."""
    from edgemoe import _core
    from edgemoe.format.container import open_container

    c = open_container(str(path))
    slots = c.config["n_layers"] * c.config["n_experts"]
    return _core.Engine(c.native, {"threads": 2, "ctx_size": ctx_size, "max_batch": max_batch, "kv_cache": "f32",
                                   "expert_slots": slots}, None), c.config["vocab"]


def assert_rewind_resumes(path, ids, written: int, kept: int, upto: int) -> None:
    """Evaluating ids[:written], rewinding to `kept` and evaluating ids[kept:upto] gives the last
    position's logits a fresh evaluation of ids[:upto] gives (f32 KV cache; measured bit-identical)."""
    import edgemoe

    model = edgemoe.load(str(path), threads=2, kv_cache="f32")
    model.logits(ids[:written])
    model.truncate(kept)
    resumed = model.eval(ids[kept:upto])
    fresh = edgemoe.load(str(path), threads=2, kv_cache="f32").logits(ids[:upto])[-1]
    np.testing.assert_array_equal(resumed, fresh)


def hub_cache_entry(root, repo: str, files) -> None:
    """A Hugging Face cache entry under `root` (what HF_HUB_CACHE names) as huggingface_hub lays it
    out: refs/main -> a snapshot folder holding copies of `files`."""
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    entry = Path(root) / ("models--" + repo.replace("/", "--"))
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision)
    for f in files:
        shutil.copy(f, snapshot / Path(f).name)


def reference(name: str):
    return np.load(FIXTURES / name / "reference.npz")


def rel_error(ours, ref):
    """Relative error of each position's logits: max |ours - ref| / max |ref|."""
    return np.max(np.abs(ours - ref), axis=-1) / np.max(np.abs(ref), axis=-1)


def llama_logits(path, ids) -> np.ndarray:
    """llama.cpp's logits (llama-cpp-python) for every position of `ids` on the GGUF at `path`;
    skips the calling test if llama-cpp-python is not installed."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[test]')")
    # No extra buffer types (weights repacked for AMX or SIMD): on a CPU with AMX whose kernel
    # does not grant the tiles to the process (this CI's VMs), llama.cpp's AMX matmul of
    # quantized weights segfaults; repacking changes speed, not what the reference computes.
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_cpp.llama_model_default_params = without_extra_buffers
    try:
        # f32 KV cache: llama.cpp's default f16 cache alone moves logits by ~1e-3
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(64, len(ids)), n_batch=len(ids), n_threads=2,
                              logits_all=True, verbose=False, type_k=llama_cpp.GGML_TYPE_F32,
                              type_v=llama_cpp.GGML_TYPE_F32)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = defaults
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


# Under CI=true (.ci/run) a skipped test fails the run unless its reason contains one of these:
# on the CI machine every tool is installed, so a skip means the run tested less than it claims
# (a failed package install once left the qemu, libFuzzer and zstd tests skipping in a green run).
EXPECTED_SKIPS_IN_CI: tuple = ()


def _skip_reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    unexpected = [r for r in skipped if not any(e in _skip_reason(r) for e in EXPECTED_SKIPS_IN_CI)]
    if unexpected:
        reporter.write_line(f"CI: {len(unexpected)} unexpected skip(s), failing the run:", red=True)
        for r in unexpected:
            reporter.write_line(f"  {r.nodeid}: {_skip_reason(r)}")
        if session.exitstatus == pytest.ExitCode.OK:  # an interrupted or failed run keeps its own status
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
