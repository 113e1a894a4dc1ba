"""A bounded fuzzing run over the parsers of untrusted files (tools/fuzz_parsers.py, atheris), seeded
with real files: a converted container, a safetensors checkpoint and GGUF fixtures. Any exception
other than the package's own errors, a crash or a hang fails it; findings become regression tests
in test_errors.py / test_gguf_convert.py."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES
from fuzz_session import executions, expected_executions, finding_report, fuzz_limits

pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]')")
ROOT = Path(__file__).resolve().parent.parent
# About 75 s at these parsers' ~65 executions/s under atheris' instrumentation on a 2-core
# machine (measured 2026-12-04: 10000 runs took 142-156 s, the suite's largest single cost).
CI_RUNS = 5000
# Each execution parses a whole seed-sized input, so the seeds are one GGUF per tokenizer, weight
# type and MoE layout, not every fixture (the f32 gpt-oss and DeepSeek files are 1-1.3 MB each).
# deepseek2's latent-attention keys are left to test_gguf_convert.py.
SEED_GGUFS = ["mixtral-f32", "qwen3_moe-q4_0", "qwen3_moe-q8_0", "gpt_oss-mxfp4", "glm4_moe-f32"]


def test_parsers_survive_fuzzing(converted, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(converted("qwen3_moe", "4"), corpus / "container.emoe")
    # a container of each newer family: the config fields and resident tensors each one adds
    for family in ("gpt_oss", "glm4_moe", "deepseek_v3", "gemma4"):
        shutil.copy(converted(family, "8"), corpus / f"{family}.emoe")
    shutil.copy(FIXTURES / "qwen3_moe" / "model.safetensors", corpus / "model.safetensors")
    for name in SEED_GGUFS:
        shutil.copy(FIXTURES / "gguf" / f"{name}.gguf", corpus / f"{name}.gguf")
    limits, allowance = fuzz_limits(CI_RUNS)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz_parsers.py"), str(corpus), *limits, "-rss_limit_mb=4096", "-timeout=20",
                           f"-artifact_prefix={tmp_path}/",  # a finding is saved there, named in the log
                           "-max_len=1200000", "-print_final_stats=1"],
                          capture_output=True, text=True, timeout=allowance, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, finding_report(log)
    assert executions(log) >= expected_executions(CI_RUNS), log[-2000:]
    print(f"fuzz: {executions(log)} executions ({' '.join(limits)}), no findings")
