"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def expert_bytes(path: str) -> int:
    """A container's routed-expert bytes: the blobs and any low-rank corrections of merged members
    (resident tensors, but expert weights all the same)."""
    from edgemoe.format.container import open_container

    c = open_container(path)
    corrections = sum(t["nbytes"] for name, t in c.tensors.items() if ".delta_" in name)
    return sum(b["size"] for row in c.experts for b in row) + corrections


def drop_page_cache() -> bool:
    """Drop the page cache so the next reads come from storage (root only); False if not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


CGROUP = "/sys/fs/cgroup/memory/edgemoe_bench"


def set_cgroup_limit(limit: int) -> str:
    """A cgroup-v1 memory group limited to `limit` bytes (root only); a child joins it by writing
    its pid to cgroup.procs. Returns its path."""
    os.makedirs(CGROUP, exist_ok=True)
    with open(os.path.join(CGROUP, "memory.limit_in_bytes"), "w") as f:
        f.write(str(limit))
    return CGROUP


def section_key(argv=None) -> str:
    """The key of the running benchmark's section in bench/RESULTS.md: the script's stem and the
    basename of its first argument when that is a positional one (a model), as the file's
    `<!-- section: KEY -->` markers name them."""
    argv = sys.argv if argv is None else argv
    stem = os.path.splitext(os.path.basename(argv[0]))[0]
    first = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    return f"{stem} {os.path.basename(os.path.normpath(first))}" if first else stem


def replace_section(path: str, key: str, text: str) -> None:
    """Put `text` between `key`'s markers in the results file at `path`, replacing what was there
    (the benchmark's earlier run: history stays in git), or at the end for a new section. Written
    to a temporary file and renamed, so an interrupted run leaves the old file."""
    begin, end = f"<!-- section: {key} -->", f"<!-- end: {key} -->"
    block = f"{begin}\n{text.strip()}\n{end}\n"
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    i = old.find(begin)
    if i >= 0:
        j = old.find(end, i)
        if j < 0:
            raise SystemExit(f"{path}: section {key!r} has no end marker")
        new = old[:i] + block + old[j + len(end):].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def report(text: str, write: str | None, key: str | None = None) -> None:
    """Print a result section and, if asked, put it in a results file (bench/RESULTS.md) as the
    current figures of this benchmark: its section (key, default section_key()) replaced."""
    print(text)
    if write:
        replace_section(write, key or section_key(), text)


_DECODE = (
    "import json, sys, time, edgemoe\n"
    "a = json.loads(sys.argv[1])\n"
    "m = edgemoe.load(a['path'], **a['load'])\n"
    "m.eval(a['ids'][:1]); m.reset_stats()\n"
    "t0 = time.perf_counter()\n"
    "for t in a['ids'][1:]: m.eval([t])\n"
    "s = m.stats(); s['seconds'] = time.perf_counter() - t0; print(json.dumps(s))\n"
)


def decode_in_fresh_process(path: str, ids, **load_kwargs) -> dict:
    """Decode `ids` token by token in a fresh process (page cache dropped first), the model
    loaded with edgemoe.load(path, **load_kwargs). Returns the engine's stats() after the first
    token, plus "seconds" (decode wall time), "tok_s" and "mb_per_tok"."""
    drop_page_cache()
    arg = json.dumps({"path": path, "ids": [int(t) for t in ids], "load": load_kwargs})
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    out = subprocess.run([sys.executable, "-c", _DECODE, arg], capture_output=True, text=True, check=True, env=env)
    s = json.loads(out.stdout.strip().splitlines()[-1])
    n = len(ids) - 1
    s["tok_s"] = n / s["seconds"]
    s["mb_per_tok"] = s["bytes_read"] / 1e6 / n
    return s
