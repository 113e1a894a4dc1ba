"""A whole forward pass built without Python (tests/cpp/forward_pass.cpp), natively and for
AArch64 under qemu-aarch64.

Every comparison here is between runs whose result cannot depend on the machine that builds
and runs them. It has to be: an 8-bit activation code is round(x / d), and on these fixtures
some x / d lie within float noise of a rounding boundary (qwen2_moe q8, token 22, layer 1:
-20.499994 in one build, -20.500004 in another). Two builds that add in another order or fuse
a multiply-add where the other rounds twice may then legitimately differ by one code, which
moves the logits by ~5e-3; whether they do depends on the compiler flags of the build machine
(-march=native), not on the code under test. So:

1. The native harness against the extension: built with the extension's own flags
   (`_core.compile_flags()`), both run the same instructions: bit-identical.
2. AArch64 scalar against x86-64 scalar: both built with fixed portable flags and
   -ffp-contract=off (no fused multiply-add on either side), both run under qemu at a fixed
   CPU model (so neither the host's CPU nor the libm variant it selects enters). The scalar
   code then rounds alike on both architectures: bit-identical. This catches what differs
   between the architectures outside the SIMD kernels (char signedness, undefined behaviour).
3. NEON against scalar in that same AArch64 binary: the check on the NEON kernels. A fixed
   binary on a fixed emulated CPU gives the same result on every machine; a planted NEON bug
   makes it fail (test_planted_neon_bug_is_caught).

The cross build needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them);
without them those tests skip with the reason. Emulated, so only results are checked."""
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import edgemoe
from edgemoe.format.container import open_container
from conftest import reference

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["tests/cpp/forward_pass.cpp"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp") if p.name != "bindings.cpp")
BASE_FLAGS = ["-std=c++17", "-Icsrc", "-pthread"]
# Fixed, host-independent arithmetic for the cross-architecture pair (see 2. above).
PORTABLE_FLAGS = ["-O2", "-ffp-contract=off"]
CXX = shutil.which(os.environ.get("CXX", "g++"))
CROSS_CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")
QEMU_X86 = shutil.which("qemu-x86_64")
QEMU_CPU_A64 = "max"      # has SDOT: the NEON build takes its dot-product path
QEMU_CPU_X86 = "qemu64"   # plain x86-64: no FMA, so glibc's libm picks its generic code
# NEON and scalar sum each group's integer products in the same order; they differ in the float
# accumulation over groups and rows. Measured max relative difference over the cases: 5.9e-7
# (olmoe f32; the quantized cases 2.1e-7 to 2.6e-7).
NEON_REL_TOL = 5e-6
CASES = [("qwen3_moe", "8"), ("mixtral", "4"), ("olmoe", "f32"), ("qwen2_moe", "8")]
# A lane-order bug in the NEON activation quantizer (elements 16-23 and 24-31 swapped), the
# kind of slip a NEON port makes; every quantized case goes through it.
PLANTED_NEON_BUG = ("vst1q_s8(b.qs + 16, vmovn_high_s16(vmovn_s16(h[2]), h[3]));",
                    "vst1q_s8(b.qs + 16, vmovn_high_s16(vmovn_s16(h[3]), h[2]));")

needs_cross = pytest.mark.skipif(
    not (CROSS_CXX and QEMU and QEMU_X86),
    reason="needs aarch64-linux-gnu-g++, qemu-aarch64 and qemu-x86_64 on PATH "
    "(Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu qemu-user)")


def write_tokens(ids, out: Path) -> Path:
    """The token ids file tests/cpp/forward_pass.cpp reads."""
    out.write_text(" ".join(map(str, ids)) + "\n")
    return out


# ---------------------------------------------------------------- building


def _compile(cxx, flags, source, obj: Path) -> Path:
    cmd = [cxx, *BASE_FLAGS, *flags, "-c", str(source), "-o", str(obj)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    return obj


def compile_all(cxx, flags, out_dir: Path) -> dict:
    """{source: object file}, compiled one source per process, as many at a time as cores."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = {src: out_dir / (src.replace("/", "_") + ".o") for src in SOURCES}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for f in [pool.submit(_compile, cxx, flags, ROOT / src, obj) for src, obj in jobs.items()]:
            f.result()
    return jobs


def link(cxx, objects, out: Path, *flags) -> Path:
    cmd = [cxx, *BASE_FLAGS, *map(str, objects), *flags, "-o", str(out)]  # libraries after the objects
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"link failed:\n{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    return out


A64_FLAGS = [*PORTABLE_FLAGS, "-march=armv8.2-a+dotprod"]


@pytest.fixture(scope="module")
def a64_objects(tmp_path_factory):
    return compile_all(CROSS_CXX, A64_FLAGS, tmp_path_factory.mktemp("forward_a64"))


@pytest.fixture(scope="module")
def a64_binary(a64_objects, tmp_path_factory):
    return link(CROSS_CXX, a64_objects.values(), tmp_path_factory.mktemp("forward_a64_bin") / "forward_pass",
                "-static")


# ---------------------------------------------------------------- running


@pytest.fixture(scope="module")
def cases(converted, tmp_path_factory):
    """[(label, container, token ids file, vocab, token count)] for every case."""
    out = []
    folder = tmp_path_factory.mktemp("forward_tokens")
    for name, bits in CASES:
        path = converted(name, bits)
        ids = reference(name)["input_ids"].tolist()
        tokens = write_tokens(ids, folder / f"{name}-{bits}.txt")
        out.append((f"{name} {bits}", path, tokens, open_container(path).config["vocab"], len(ids)))
    return out


def run_forward(cmd, case, isa=None, env=None) -> np.ndarray:
    _, path, tokens, vocab, n = case
    out = tokens.with_name(f"{tokens.stem}-{abs(hash((tuple(cmd), isa)))}.f32")
    proc = subprocess.run([*cmd, str(path), str(tokens), str(out), *([isa] if isa else [])], capture_output=True, text=True,
                          timeout=300, env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return np.fromfile(out, dtype=np.float32).reshape(n, vocab)


def a64_cmd(binary):
    return [QEMU, "-cpu", QEMU_CPU_A64, str(binary)]


def assert_identical(label, got, want, what):
    if np.array_equal(got, want):
        return
    diff = np.abs(got - want)
    pos = int(np.argmax(diff.max(axis=1)))
    raise AssertionError(f"{label}: {what} differ, first at position {np.flatnonzero(diff.max(axis=1))[0]}, "
                         f"largest {diff.max():.3e} at position {pos} (they must be bit-identical)")


def neon_vs_scalar(binary, cases):
    """[(label, max relative difference)] of NEON against scalar in one AArch64 binary."""
    out = []
    for case in cases:
        neon = run_forward(a64_cmd(binary), case, "neon")
        scalar = run_forward(a64_cmd(binary), case, "scalar")
        out.append((case[0], float(np.abs(neon - scalar).max() / np.abs(scalar).max())))
    return out


# ---------------------------------------------------------------- tests


@pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) on PATH")
def test_native_forward_pass_equals_the_extension(cases, tmp_path):
    from edgemoe import _core

    flags = _core.compile_flags().split()
    if not flags:
        pytest.skip("the extension was not built by setup.py and does not report its compile flags")
    objects = compile_all(CXX, flags + (["-DEDGEMOE_HAVE_ZSTD=1"] if _core.zstd_supported() else []), tmp_path)
    binary = link(CXX, objects.values(), tmp_path / "forward_pass", *(["-lzstd"] if _core.zstd_supported() else []))
    for case in cases:
        label, path, _, _, n = case
        ids = reference(label.split()[0])["input_ids"].tolist()
        want = edgemoe.load(path, threads=1, kv_cache="f32").logits(ids)  # the harness's cache type
        assert_identical(label, run_forward([str(binary)], case), want, "harness and extension logits")


@needs_cross
def test_aarch64_scalar_forward_pass_equals_x86_scalar(a64_binary, cases, tmp_path):
    objects = compile_all(CXX, PORTABLE_FLAGS, tmp_path)
    x86 = link(CXX, objects.values(), tmp_path / "forward_pass")
    for case in cases:
        a64 = run_forward(a64_cmd(a64_binary), case, "scalar")
        ref = run_forward([QEMU_X86, "-cpu", QEMU_CPU_X86, str(x86)], case, "scalar")
        assert_identical(case[0], a64, ref, "AArch64 and x86-64 scalar logits")


@needs_cross
def test_aarch64_neon_forward_pass_matches_scalar(a64_binary, cases):
    for label, rel in neon_vs_scalar(a64_binary, cases):
        assert rel < NEON_REL_TOL, f"{label}: NEON differs from scalar by {rel:.2e} (max relative; bound {NEON_REL_TOL})"


@needs_cross
def test_planted_neon_bug_is_caught(a64_objects, cases, tmp_path):
    source = ROOT / "csrc" / "kernels" / "kernels_neon.cpp"
    text = source.read_text()
    right, wrong = PLANTED_NEON_BUG
    assert text.count(right) == 1, "the planted bug's target line moved: update PLANTED_NEON_BUG"
    mutant = tmp_path / "kernels_neon_mutant.cpp"
    mutant.write_text(text.replace(right, wrong))
    obj = _compile(CROSS_CXX, [*A64_FLAGS, "-iquote", str(source.parent)], mutant, tmp_path / "mutant.o")
    objects = [obj if src == "csrc/kernels/kernels_neon.cpp" else o for src, o in a64_objects.items()]
    binary = link(CROSS_CXX, objects, tmp_path / "forward_pass_mutant", "-static")
    caught = [(label, rel) for label, rel in neon_vs_scalar(binary, cases) if rel >= NEON_REL_TOL]
    assert caught, "a NEON lane-order bug went unnoticed by the NEON-vs-scalar forward pass"
