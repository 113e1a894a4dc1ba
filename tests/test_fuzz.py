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
from fuzz_session import executions, finding_report, fuzz_limits

pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]')")
ROOT = Path(__file__).resolve().parent.parent
# About 30 s at these parsers' ~330 executions/s on a 2-core machine.
CI_RUNS = 10000


def test_parsers_survive_fuzzing(converted, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(converted("qwen3_moe", "4"), corpus / "container.emoe")
    shutil.copy(FIXTURES / "qwen3_moe" / "model.safetensors", corpus / "model.safetensors")
    for g in (FIXTURES / "gguf").glob("*.gguf"):
        shutil.copy(g, corpus / g.name)
    limits, allowance = fuzz_limits(CI_RUNS)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz_parsers.py"), str(corpus), *limits, "-rss_limit_mb=4096", "-timeout=20",
                           f"-artifact_prefix={tmp_path}/",  # a finding is saved there, named in the log
                           "-max_len=1200000", "-print_final_stats=1"],
                          capture_output=True, text=True, timeout=allowance, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, finding_report(log)
    assert executions(log) > 50, log[-2000:]
    print(f"fuzz: {executions(log)} executions ({' '.join(limits)}), no findings")
