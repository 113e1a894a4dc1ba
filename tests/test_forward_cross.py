"""A whole forward pass built without Python (tests/cpp/forward_pass.cpp), natively and for
AArch64 under qemu-aarch64: the NEON build's logits must match the x86-64 ones.

The cross build needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them);
without them those tests skip with the reason. Emulated, so only results are checked."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgemoe
from edgemoe.api import engine_tables
from edgemoe.container import open_container
from conftest import reference

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["tests/cpp/forward_pass.cpp"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp") if p.name != "bindings.cpp")
FLAGS = ["-std=c++17", "-O2", "-Icsrc", "-pthread"]
CXX = shutil.which(os.environ.get("CXX", "g++"))
CROSS_CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")
# x86 (AVX-512 or AVX2) and NEON sum the same integer products but accumulate floats in
# different orders (and the extension is built with other flags than this test binary).
REL_TOL = 1e-4
CASES = [("qwen3_moe", "8"), ("mixtral", "4"), ("olmoe", "f32"), ("qwen2_moe", "8")]


def write_layout(container_path: str, ids, out: Path) -> None:
    c = open_container(container_path)
    tensors, experts = engine_tables(c)
    lines = [f"config {k} {int(v) if isinstance(v, bool) else v}" for k, v in c.config.items()
             if not isinstance(v, (list, dict))]
    lines.append(f"path {c.path}")
    lines.append(f"resident {c.header.resident_offset} {c.header.resident_size} {c.header.resident_crc}")
    lines += ["tensor " + " ".join(map(str, t)) for t in tensors]
    lines += [f"expert {l} {e} " + " ".join(map(str, x)) for l, row in enumerate(experts) for e, x in enumerate(row)]
    lines.append("tokens " + " ".join(map(str, ids)))
    out.write_text("\n".join(lines) + "\n")


def build(cxx, out, *flags):
    cmd = [cxx, *FLAGS, *flags, *SOURCES, "-o", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    return out


def run_forward(cmd, layout: Path, vocab: int, n: int, env=None) -> np.ndarray:
    out = layout.with_suffix(".f32")
    proc = subprocess.run([*cmd, str(layout), str(out)], capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return np.fromfile(out, dtype=np.float32).reshape(n, vocab)


def reference_logits(path, ids, isa):
    """The extension's logits with the kernels of `isa` (None: the default, the best available)."""
    from edgemoe import _core

    default = _core.current_isa()
    try:
        if isa:
            _core.set_isa(isa)
        return edgemoe.load(path, threads=1, kv_cache="f32").logits(ids)  # the C++ harness's cache
    finally:
        _core.set_isa(default)


def check_all(cmd, converted, tmp_path, env=None, isa=None):
    for name, bits in CASES:
        path = converted(name, bits)
        ids = reference(name)["input_ids"].tolist()
        layout = tmp_path / f"{name}-{bits}.txt"
        write_layout(path, ids, layout)
        vocab = open_container(path).config["vocab"]
        got = run_forward(cmd, layout, vocab, len(ids), env)
        want = reference_logits(path, ids, isa)
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < REL_TOL, f"{name} {bits}: max relative difference {rel:.2e}"


@pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on PATH")
def test_native_forward_pass_matches_the_extension(converted, tmp_path):
    binary = build(CXX, tmp_path / "forward_pass")
    check_all([str(binary)], converted, tmp_path)


@pytest.mark.skipif(not (CROSS_CXX and QEMU), reason="needs aarch64-linux-gnu-g++ and qemu-aarch64 on PATH "
                    "(Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu qemu-user)")
def test_aarch64_forward_pass_matches_x86(converted, tmp_path):
    binary = build(CROSS_CXX, tmp_path / "forward_pass_a64", "-march=armv8.2-a+dotprod", "-static")
    # Against the x86 scalar reference: AVX2 and NEON sum each group's products in the same
    # float order as scalar and agree with it to ~2e-7 on every case. AVX-512 keeps 16 partial
    # sums per two groups: ~5e-7 apart in the residual stream, which on token 22 of the qwen2_moe
    # q8 fixture puts one layer-1 MoE input on the other side of a q8 rounding tie (x / d =
    # -20.499994 vs -20.500004), one activation code differs by 1 and the logits by 6.6e-3.
    # A legitimate rounding difference, not a kernel bug, but it rules AVX-512 out as reference.
    check_all([QEMU, str(binary)], converted, tmp_path, env={"QEMU_CPU": "max"}, isa="scalar")
