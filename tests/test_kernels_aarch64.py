"""Builds and runs tests/cpp/test_kernels_cross.cpp: the kernel variants against the scalar reference.

Natively it checks the x86 variants (or whatever this machine has). With an
AArch64 cross compiler and qemu-aarch64 on PATH (Debian: apt-get install
g++-aarch64-linux-gnu qemu-user) it also checks the NEON kernels without ARM
hardware, statically linked and run under user-mode emulation:
  * built for armv8.2-a+dotprod on QEMU's "max" CPU: SDOT (vdotq_s32
    intrinsics) and the plain-NEON fallback;
  * built for plain armv8-a (the portable build): on "max" the SDOT path is
    found at run time (HWCAP_ASIMDDP); on a Cortex-A53, which lacks it (and
    where QEMU faults on any instruction the model lacks), only plain NEON.
Emulated timings mean nothing; this checks results, not speed.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["tests/cpp/test_kernels_cross.cpp", "csrc/common/qtypes.cpp"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "kernels").glob("*.cpp"))
FLAGS = ["-std=c++17", "-O2", "-Icsrc", "-Wall", "-Wextra"]

CXX = shutil.which(os.environ.get("CXX", "g++"))
CROSS_CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")
needs_cross = pytest.mark.skipif(
    not (CROSS_CXX and QEMU),
    reason="needs aarch64-linux-gnu-g++ and qemu-aarch64 on PATH "
    "(Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu qemu-user)")


def build(cxx, out, *flags):
    cmd = [cxx, *FLAGS, *flags, *SOURCES, "-o", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{proc.stderr}"
    return out


def run(cmd, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert output.strip().splitlines()[-1].endswith(" 0 failed"), output
    return output


@pytest.fixture(scope="module")
def native_binary(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    return build(CXX, tmp_path_factory.mktemp("kernels_native") / "test_kernels_cross")


def test_variants_match_scalar_natively(native_binary):
    out = run([str(native_binary)])
    assert "isas: scalar" in out


@pytest.fixture(scope="module")
def dotprod_binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels_a64") / "test_kernels_cross_dotprod"
    return build(CROSS_CXX, out, "-march=armv8.2-a+dotprod", "-static")


@pytest.fixture(scope="module")
def portable_binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels_a64") / "test_kernels_cross_v8"
    return build(CROSS_CXX, out, "-march=armv8-a", "-static")


@needs_cross
def test_neon_dotprod_build(dotprod_binary):
    out = run([QEMU, str(dotprod_binary)], env={"QEMU_CPU": "max"})
    assert "isas: scalar neon\n" in out
    assert "neon dot path: sdot" in out
    assert "neon: " in out and "neon/smull: " in out  # both integer paths were checked


@needs_cross
@pytest.mark.parametrize("cpu, path", [("max", "sdot"), ("cortex-a53", "smull")])
def test_neon_portable_build(portable_binary, cpu, path):
    # The same armv8-a binary picks its dot path from what the CPU reports.
    out = run([QEMU, str(portable_binary)], env={"QEMU_CPU": cpu})
    assert f"neon dot path: {path}" in out
    assert "neon: " in out
