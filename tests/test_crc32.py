"""The expert checksum (tests/cpp/test_crc32.cpp): the accelerated CRC-32 (PCLMULQDQ on x86-64,
the CRC32 instructions on AArch64) equals the table version and zlib's check value at every
length and alignment; cross-built for AArch64 and run under qemu when the toolchain is there."""
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["tests/cpp/test_crc32.cpp", "csrc/store/crc32.cpp"]
FLAGS = ["-std=c++17", "-O2", "-Icsrc", "-Wall"]
CXX = shutil.which(os.environ.get("CXX", "g++"))
CROSS_CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")


def build_and_run(cxx, out, flags=(), runner=(), env=None):
    proc = subprocess.run([cxx, *FLAGS, *flags, *SOURCES, "-o", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*runner, str(out)], capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and out.strip().endswith(" 0 failed"), out
    return out


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_native_crc32_matches_tables(tmp_path):
    out = build_and_run(CXX, tmp_path / "test_crc32")
    if os.uname().machine == "x86_64" and "pclmulqdq" in Path("/proc/cpuinfo").read_text():
        assert "implementation pclmul" in out, out  # the fast path is the one being checked
    print(out.strip().splitlines()[-2])


@pytest.mark.skipif(not (CROSS_CXX and QEMU), reason="needs aarch64-linux-gnu-g++ and qemu-aarch64")
@pytest.mark.parametrize("march,cpu", [("armv8-a", "max"), ("armv8-a", "cortex-a53"), ("armv8-a+crc", "max")])
def test_aarch64_crc32_matches_tables(tmp_path, march, cpu):
    # armv8-a: the CRC32 instructions are found at run time (HWCAP_CRC32); +crc: compiled in.
    out = build_and_run(CROSS_CXX, tmp_path / "test_crc32_a64", [f"-march={march}", "-static"], [QEMU],
                        {"QEMU_CPU": cpu})
    assert "implementation arm-crc32" in out, out


def test_extension_checksums_agree_with_zlib(converted):
    # End to end: the converter writes zlib.crc32 values; the runtime (whichever implementation
    # it picked) verifies them on every expert read of a 2-slot cache.
    import edgemoe
    from edgemoe.format.container import open_container
    from conftest import reference

    path = converted("mixtral", "4")
    blob = open_container(path).experts[0][0]
    data = Path(path).read_bytes()
    offset, size, crc = blob["offset"], blob["size"], blob["crc32"]
    assert zlib.crc32(data[offset:offset + size]) == crc
    model = edgemoe.load(path, cache_experts=2)
    model.logits(reference("mixtral")["input_ids"].tolist())
    assert model.stats()["cache_misses"] > 0
