"""Storage faults under the real extension: every pread of the process goes through an
LD_PRELOAD shim (tests/cpp/fault_pread.c) that fails reads on command. A failed read must
surface as edgemoe.StorageError in the generating call, never as wrong logits or a crash,
and the same model must compute correctly once the storage behaves again. Reads that are
only interrupted (EINTR) or come back in pieces must give exactly the right logits."""
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgemoe
from conftest import reference

SHIM_SOURCE = Path(__file__).parent / "cpp" / "fault_pread.c"

CHILD = r"""
import ctypes, json, sys
import numpy as np
import edgemoe
from edgemoe.errors import StorageError

shim = ctypes.CDLL(None)  # LD_PRELOAD put fault_arm & co. into the global namespace
KINDS = {"eio": 1, "eintr": 2, "partial": 3, "eof": 4}
path = sys.argv[1]
report = []
for predictor in ("none", "gate"):  # gate: reads also happen on the prefetch I/O worker
    model = edgemoe.load(path, cache_experts=2, threads=2, predictor=predictor)
    ids = model.tokenize("It is a truth universally acknowledged, that a single man. " * 8,
                         add_special_tokens=False)[:48]
    assert len(ids) == 48

    def decode():  # prefill, then decode steps: faults land in both kinds of call
        model.reset()
        model.eval(ids[:40])
        for t in ids[40:]:
            last = model.eval([t])
        return last

    want, want_last = model.logits(ids), decode()
    for kind, count in (("eio", -1), ("eof", -1), ("eio", 1), ("partial", -1), ("eintr", 5)):
        shim.fault_arm(KINDS[kind], 3, count)
        r = {"predictor": predictor, "kind": kind, "count": count}
        try:
            last = decode()
            r["outcome"] = "ok"
            r["correct"] = bool(np.array_equal(last, want_last))
        except StorageError as e:
            r["outcome"] = "storage_error"
            r["message"] = str(e)
        r["injected"] = shim.fault_injected()
        shim.fault_disarm()
        r["n_past_consistent"] = model.n_past <= len(ids)
        r["recovered"] = bool(np.array_equal(model.logits(ids), want))
        report.append(r)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def fault_shim(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the fault-injection shim")
    out = tmp_path_factory.mktemp("shim") / "libfault_pread.so"
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"], check=True)
    return out


def test_read_faults_raise_storage_error_and_never_give_wrong_logits(fault_shim):
    # Appended: a sanitizer runtime already preloaded (tests/test_sanitizers.py) must stay first.
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), str(fault_shim)) if p)
    env = dict(os.environ, LD_PRELOAD=preload)
    out = subprocess.run([sys.executable, "-c", CHILD, edgemoe.default_model_path()], capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 10
    for r in report:
        assert r["injected"] > 0, r  # the fault was really hit
        assert r["recovered"] and r["n_past_consistent"], r
        if r["kind"] in ("eio", "eof"):
            # A failed read is an error in the call, whether a demand read or a prefetch hit it
            # (a failed prefetch is dropped and the expert read again when needed: with one
            # injected failure that second read succeeds and the logits are right).
            if r["outcome"] == "ok":
                assert r["count"] == 1 and r["correct"], r
            else:
                assert re.search("Input/output error|end of|truncated", r["message"]), r
        else:  # interrupted or piecewise reads are retried to completion
            assert r["outcome"] == "ok" and r["correct"], r
    # With every read failing, the call must fail.
    assert all(r["outcome"] == "storage_error" for r in report if r["count"] == -1 and r["kind"] in ("eio", "eof"))


def open_copy(converted, tmp_path):
    """A private copy of a fixture container, opened with a 2-slot cache (every step reads
    experts): (path, its bytes, token ids, model, the model's logits for them)."""
    path = tmp_path / "m.emoe"
    shutil.copyfile(converted("qwen3_moe", "8"), path)
    ids = reference("qwen3_moe")["input_ids"].tolist()
    model = edgemoe.load(str(path), cache_experts=2)
    return path, path.read_bytes(), ids, model, model.logits(ids)


def test_file_truncated_while_open_is_a_storage_error_and_the_model_recovers(converted, tmp_path):
    path, original, ids, model, want = open_copy(converted, tmp_path)
    with open(path, "r+b") as f:
        f.truncate(len(original) // 2)  # experts in the second half are gone
    with pytest.raises(edgemoe.StorageError, match="truncated|end of"):
        for _ in range(3):
            model.logits(ids)
    path.write_bytes(original)  # the file comes back: the same model object works again
    np.testing.assert_array_equal(model.logits(ids), want)


def test_file_overwritten_in_place_is_caught_by_checksums(converted, tmp_path):
    path, original, ids, model, want = open_copy(converted, tmp_path)
    half = len(original) // 2
    with open(path, "r+b") as f:  # same size, other bytes: only the checksums can tell
        f.seek(half)
        f.write(bytes(255 - b for b in original[half:]))
    with pytest.raises(edgemoe.StorageError, match="checksum"):
        for _ in range(3):
            model.logits(ids)
    path.write_bytes(original)
    np.testing.assert_array_equal(model.logits(ids), want)


def test_file_replaced_while_open_keeps_reading_the_file_that_was_opened(converted, tmp_path):
    # Replacing a file (rename over it, as package managers and `cp --remove-destination` do)
    # leaves the open model on the old file: the same logits, never a mix of two models.
    path, _, ids, model, want = open_copy(converted, tmp_path)
    other = tmp_path / "other.emoe"
    shutil.copyfile(converted("qwen3_moe", "4"), other)
    os.replace(other, path)
    np.testing.assert_array_equal(model.logits(ids), want)
    assert not np.array_equal(edgemoe.load(str(path), cache_experts=2).logits(ids), want)


def test_cli_checksums_on_by_default_and_off_on_request(converted, tmp_path):
    path = tmp_path / "m.emoe"
    shutil.copyfile(converted("qwen3_moe", "8"), path)
    from edgemoe.format.container import open_container

    data = bytearray(path.read_bytes())
    for row in open_container(str(path)).experts:  # every expert blob inverted; header, index, manifest
        for b in row:                              # and resident weights intact
            offset, size = b["offset"], b["size"]
            data[offset:offset + size] = bytes(255 - x for x in data[offset:offset + size])
    path.write_bytes(bytes(data))

    def generate(*flags):
        return subprocess.run([sys.executable, "-m", "edgemoe", "generate", str(path), "-p", "Hello there, how are you", "-n", "4",
                               "--temp", "0", "--cache-experts", "2", *flags], capture_output=True, text=True,
                              timeout=300)

    checked = generate()
    assert checked.returncode != 0 and "checksum" in checked.stderr, checked.stderr
    unchecked = generate("--no-verify-checksums")  # the user's choice: speed over detection
    assert unchecked.returncode == 0, unchecked.stderr
