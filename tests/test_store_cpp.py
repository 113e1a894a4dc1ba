"""Builds and runs the C++ expert-store test (tests/cpp/test_store.cpp).

The store is tested in C++ directly, not through the extension, so it can be
checked (fault injection, page-cache behaviour, threads) before and
independently of the bindings. Needs a system g++; skipped without one.
"""
import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CXX = shutil.which(os.environ.get("CXX", "g++"))


@pytest.fixture(scope="module")
def test_binary(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler (g++) on PATH to build tests/cpp/test_store.cpp")
    out = tmp_path_factory.mktemp("store_cpp") / "test_store"
    sources = ["tests/cpp/test_store.cpp"]
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "store").glob("*.cpp"))
    cmd = [CXX, "-std=c++17", "-O1", "-g", "-Icsrc", "-pthread", "-Wall", "-Wextra",
           *sources, "-o", str(out)]
    build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{build.stderr}"
    return out


def run(binary, *args):
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert output.strip().splitlines()[-1].endswith(" 0 failed"), output
    return output


def test_store_cpp(test_binary):
    run(test_binary)


def test_crc32_matches_zlib(test_binary, tmp_path):
    # Sizes around the 8-byte slicing step and a large buffer; zlib.crc32 is
    # what the Python converter writes into the container.
    rng = random.Random(1234)
    args = []
    for i, n in enumerate([0, 1, 3, 7, 8, 9, 15, 16, 17, 255, 4096, 4099, (1 << 20) + 5]):
        data = rng.randbytes(n)
        path = tmp_path / f"crc_{i}.bin"
        path.write_bytes(data)
        args += ["--crc", str(path), str(zlib.crc32(data))]
    out = run(test_binary, *args)
    assert "store tests" not in out  # with --crc alone, only the CRC checks run


def test_async_prefetch_never_changes_a_pinned_expert(tmp_path):
    if CXX is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    out = tmp_path / "store_prefetch_stress"
    sources = ["tests/cpp/store_prefetch_stress.cpp"]
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "store").glob("*.cpp"))
    build = subprocess.run([CXX, "-std=c++17", "-O1", "-g", "-Icsrc", "-pthread", *sources, "-o", str(out)],
                           cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run(out, str(tmp_path))
