"""The C++ tests again, built with AddressSanitizer and UndefinedBehaviorSanitizer (a separate
build, every finding fatal): the expert store (fault injection, threads), the MoE block against
changing cache answers, and whole forward passes of fixture containers with a small cache."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import reference
from test_forward_cross import write_layout

ROOT = Path(__file__).resolve().parent.parent
CXX = shutil.which(os.environ.get("CXX", "g++"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]
ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}

pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on PATH")


def sources(*folders):
    return sorted(str(p.relative_to(ROOT)) for f in folders for p in (ROOT / "csrc" / f).glob("*.cpp"))


def build_and_run(tmp_path, name, srcs, *args):
    out = tmp_path / name
    cmd = [CXX, "-std=c++17", "-Icsrc", "-pthread", *SANITIZE, *srcs, "-o", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build failed:\n{proc.stderr[-3000:]}"
    proc = subprocess.run([str(out), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **ENV})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "runtime error" not in output and "ERROR: AddressSanitizer" not in output, \
        output[-4000:]
    return output


def test_store_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, "test_store", ["tests/cpp/test_store.cpp", *sources("store")])
    assert out.strip().splitlines()[-1].endswith(" 0 failed")


def test_moe_block_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, "test_moe", ["tests/cpp/test_moe_cache_answers.cpp",
                                               *sources("common", "kernels", "model")])
    assert out.strip().splitlines()[-1].endswith(" 0 failed")


def test_forward_passes_under_sanitizers(tmp_path, converted):
    srcs = ["tests/cpp/forward_pass.cpp"] + [s for s in sources("common", "kernels", "model", "pipeline", "runtime",
                                                                  "store")]
    binary = None
    for name, bits in (("qwen2_moe", "8"), ("mixtral", "4"), ("olmoe", "f32")):
        layout = tmp_path / f"{name}.txt"
        write_layout(converted(name, bits), reference(name)["input_ids"].tolist(), layout)
        if binary is None:
            build_and_run(tmp_path, "forward_pass", srcs, str(layout), str(tmp_path / "out.f32"))
            binary = tmp_path / "forward_pass"
        else:
            proc = subprocess.run([str(binary), str(layout), str(tmp_path / "out.f32")], capture_output=True,
                                  text=True, timeout=600, env={**os.environ, **ENV})
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
