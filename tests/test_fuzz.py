"""A bounded fuzzing run over the parsers of untrusted files (tools/fuzz_parsers.py, atheris), seeded
with real files: a converted container, a safetensors checkpoint and GGUF fixtures. Any exception
other than the package's own errors, a crash or a hang fails it; findings become regression tests
in test_errors.py / test_gguf_convert.py."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES

pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]')")
ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("EDGEMOE_FUZZ_SECONDS", "30"))


def test_parsers_survive_fuzzing(converted, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(converted("qwen3_moe", "4"), corpus / "container.emoe")
    shutil.copy(FIXTURES / "qwen3_moe" / "model.safetensors", corpus / "model.safetensors")
    for g in (FIXTURES / "gguf").glob("*.gguf"):
        shutil.copy(g, corpus / g.name)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz_parsers.py"), str(corpus),
                           f"-max_total_time={SECONDS}", "-rss_limit_mb=4096", "-timeout=20",
                           f"-artifact_prefix={tmp_path}/",  # a finding is saved there, named in the log
                           "-max_len=1200000", "-print_final_stats=1"],
                          capture_output=True, text=True, timeout=SECONDS + 300, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    assert runs and int(runs.group(1)) > 50, log[-2000:]
    print(f"fuzz: {runs.group(1)} executions in {SECONDS} s, no findings")
