"""libFuzzer over the C++ container reader and engine (tests/cpp/fuzz_engine.cpp): hostile .emoe
bytes go to the runtime's own reader, without Python in front, then through a short forward pass;
built with AddressSanitizer and UndefinedBehaviorSanitizer. Seeded with real converted containers
(raw and zstd-compressed blobs). CI replays a fixed seed for a fixed number of executions
(tests/fuzz_session.py); EDGEMOE_FUZZ_SECONDS=600 explores instead. Inputs that once crashed it live
in tests/fixtures/fuzz/engine-* and are replayed by test_past_findings_no_longer_crash."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, reference
from fuzz_session import executions, expected_executions, finding_report, fuzz_limits

ROOT = Path(__file__).resolve().parent.parent
CLANG = shutil.which("clang++")
# About 30 s at this target's ~1,100 executions/s on a 2-core machine.
CI_RUNS = 30000
HAVE_ZSTD = Path("/usr/include/zstd.h").exists()

pytestmark = pytest.mark.skipif(CLANG is None, reason="clang++ (with libFuzzer) is not installed")


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz_engine") / "fuzz_engine"
    srcs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*/*.cpp"))  # not bindings.cpp
    cmd = [CLANG, "-std=c++17", "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
           "-Icsrc", "-pthread", "tests/cpp/fuzz_engine.cpp", *srcs, "-o", str(out)]
    if HAVE_ZSTD:
        cmd[1:1] = ["-DEDGEMOE_HAVE_ZSTD=1"]
        cmd.append("-lzstd")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build failed:\n{proc.stderr[-3000:]}"
    return out


def seed(path: str, ids, out: Path) -> None:
    """Two seeds per container: as converted, with checksums on and the f32 KV cache; and sealed
    (the harness re-seals the header's and index's CRCs, so mutated tables reach the checks) with
    checksums off (mutated weights then reach the kernels) and the fp16 cache."""
    tokens = ("tokens " + " ".join(map(str, ids)) + "\n").encode()
    body = Path(path).read_bytes()
    out.write_bytes(tokens + b"@@file\n" + body)
    out.with_name(out.name + "-sealed").write_bytes(tokens + b"seal\nchecksums off\nkv f16\n@@file\n" + body)


def run(fuzzer, *args, timeout):
    proc = subprocess.run([str(fuzzer), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"})
    return proc.returncode, proc.stdout + proc.stderr


def test_engine_loader_survives_fuzzing(fuzzer, converted, tmp_path):
    from edgemoe.convert import convert_hf

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, bits in (("qwen3_moe", "4"), ("qwen2_moe", "8"), ("mixtral", "3"), ("gpt_oss", "8"),
                       ("deepseek_v3", "4"), ("glm4_moe", "8")):
        seed(converted(name, bits), reference(name)["input_ids"][:6].tolist(), corpus / f"{name}-{bits}")
    if HAVE_ZSTD:
        packed = str(tmp_path / "zstd.emoe")
        convert_hf(str(FIXTURES / "olmoe"), packed, bits="8", progress=False, compress="zstd")
        seed(packed, reference("olmoe")["input_ids"][:6].tolist(), corpus / "olmoe-zstd")
    max_len = max(p.stat().st_size for p in corpus.iterdir()) + 4096
    limits, allowance = fuzz_limits(CI_RUNS)
    code, log = run(fuzzer, corpus, *limits, "-rss_limit_mb=2048", "-timeout=20",
                    f"-artifact_prefix={tmp_path}/", f"-max_len={max_len}", "-print_final_stats=1",
                    timeout=allowance)
    assert code == 0, finding_report(log)
    assert executions(log) >= expected_executions(CI_RUNS), log[-2000:]
    print(f"fuzz_engine: {executions(log)} executions ({' '.join(limits)}), no findings")


def test_past_findings_no_longer_crash(fuzzer):
    cases = sorted((FIXTURES / "fuzz").glob("engine-*"))
    if not cases:
        pytest.skip("no recorded findings")
    code, log = run(fuzzer, *cases, timeout=600)
    assert code == 0, finding_report(log)
