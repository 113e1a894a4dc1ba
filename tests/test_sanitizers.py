"""The C++ tests again, built with AddressSanitizer and UndefinedBehaviorSanitizer (a separate
build, every finding fatal): the expert store (fault injection, threads), the MoE block against
changing cache answers, and whole forward passes of fixture containers with a small cache. Then
the Python tests that drive the engine, against an extension built with both sanitizers."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import reference
from test_forward_cross import write_tokens

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


def test_crc32_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, "test_crc32", ["tests/cpp/test_crc32.cpp", "csrc/store/crc32.cpp"])
    assert out.strip().splitlines()[-1].endswith(" 0 failed")


def test_moe_block_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, "test_moe", ["tests/cpp/test_moe_cache_answers.cpp",
                                               *sources("common", "kernels", "model")])
    assert out.strip().splitlines()[-1].endswith(" 0 failed")


def test_forward_passes_under_sanitizers(tmp_path, converted):
    srcs = ["tests/cpp/forward_pass.cpp"] + [s for s in sources("common", "format", "kernels", "model", "prefetch",
                                                                  "runtime", "store")]
    binary = None
    for name, bits in (("qwen2_moe", "8"), ("mixtral", "4"), ("olmoe", "f32"), ("qwen3_5_moe", "8")):
        args = [converted(name, bits), str(write_tokens(reference(name)["input_ids"].tolist(), tmp_path / f"{name}.txt")),
                str(tmp_path / "out.f32")]
        if binary is None:
            build_and_run(tmp_path, "forward_pass", srcs, *args)
            binary = tmp_path / "forward_pass"
        else:
            proc = subprocess.run([str(binary), *args], capture_output=True,
                                  text=True, timeout=600, env={**os.environ, **ENV})
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


# The Python tests that drive the engine hardest, run again against an extension built with
# the sanitizers. Left out: the C++-only tests (built with sanitizers above), fuzzing, cross
# builds and llama.cpp/conversion suites that exercise other libraries' code; and the memory
# ceiling test, since ASan's shadow memory and quarantine inflate RSS by design. Also left out, for
# the suite's time: the CLI chat and perplexity tests, whose engine calls (Generation, logits over
# windows) the API, trace and server tests already make.
PYTHON_SUITE = ["test_errors.py", "test_interrupt.py", "test_storage_faults.py", "test_reliability.py",
                "test_cache_budget.py", "test_pipeline.py", "test_parity.py", "test_compress.py", "test_trace.py",
                "test_profile.py", "test_demo_model.py", "test_kernels.py", "test_server.py", "test_dense_layers.py",
                "test_latent_attention.py", "test_gemma4.py", "test_hybrid.py", "test_delta_rule.py",
                "test_expert_masks.py", "test_expert_merge.py", "test_expert_low_rank.py"]
# Also left out: the two interrupt tests that time a 480-token scalar forward pass of the demo
# model several times over (140 of the run's 185 s under ASan); test_interrupt.py's server test
# of a client leaving during prefill still unwinds a cancelled pass with the sanitizers.
# The inner run's passes, measured 2026-12-04: 363 (4 deselected), before test_expert_low_rank.py's 16.
# Far fewer means tests stopped running.
MIN_PASSED_UNDER_ASAN = 300
NOT_UNDER_ASAN = "not within_the_budget and not stops_a_long_forward_pass and not stops_a_call_from_another_thread"


def runtime_library(name):
    path = subprocess.run([CXX, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"{name} not found next to {CXX}")
    return path


def test_python_suite_under_sanitizers(tmp_path):
    # Build the extension with the sanitizers, next to a copy of the package (pure Python + data).
    build = tmp_path / "build"
    env = {**os.environ, "EDGEMOE_EXTRA_CFLAGS": " ".join(SANITIZE)}
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(build / "lib"),
                           "--build-temp", str(build / "tmp")], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "edgemoe", pkg / "edgemoe", ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    for so in (build / "lib" / "edgemoe").glob("_core*.so"):
        shutil.copy(so, pkg / "edgemoe")

    # Python is not built with ASan, so its runtime must be preloaded (and libstdc++ with it, or
    # ASan cannot find the real __cxa_throw). Python leaks by design: leak checking stays off.
    env = {**os.environ, **ENV, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
           "LD_PRELOAD": f"{runtime_library('libasan.so')} {runtime_library('libstdc++.so')}"}
    env.pop("PYTHONPATH", None)
    # cwd = the copy: `python -m` puts it first on sys.path, ahead of the installed package.
    where = subprocess.run([sys.executable, "-c", "import edgemoe._core as c; print(c.__file__)"], cwd=pkg,
                           capture_output=True, text=True, env=env)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(pkg)), where.stdout + where.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", NOT_UNDER_ASAN,
                           *(str(ROOT / "tests" / t) for t in PYTHON_SUITE)],
                          cwd=pkg, capture_output=True, text=True, timeout=1500, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "ERROR: AddressSanitizer" not in out and "runtime error:" not in out, out[-6000:]
    # pytest's summary is stdout's last line; stderr may end with interpreter-shutdown noise (llama_cpp
    # opens /dev/null at import and never closes it: a ResourceWarning, depending on teardown order).
    summary = proc.stdout.strip().splitlines()[-1]
    print(summary)
    # The inner suite ran: a run where everything skipped (or nothing was collected) also exits 0.
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= MIN_PASSED_UNDER_ASAN and "skipped" not in summary, summary
