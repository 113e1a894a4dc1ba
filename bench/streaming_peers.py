"""Decoding a model bigger than the memory it may use: this engine against llama.cpp (the kernel
pages its mapped file) and BigMoeOnEdge (expert streaming on llama.cpp), against the least time
the machine allows.

    python bench/streaming_peers.py MODEL.emoe MODEL.gguf [--bmoe /path/to/bmoe-cli]
        [--baseline-tree /tmp/old] [--fractions 0.5 0.25 0.125] [--prompt 64] [--decode 32]
        [--threads 2] [--repeats 3] [--text README.md] [--write bench/RESULTS.md]

MODEL.gguf holds the same weights for the two peers (tools/export_gguf.py). Every run is a fresh
process inside a cgroup-v1 memory limit of FRACTION x the container's size on the whole process,
with the page cache dropped first (cold storage); runs of the engines alternate. Root only.

The tokens: a --prompt-token prompt from --text, then --decode tokens this engine generates
greedily from it in RAM. This engine and llama.cpp are fed those tokens one by one (the greedy
path, teacher forced so both compute the same positions); BigMoeOnEdge's CLI takes text, so it
decodes greedily from the same prompt (the same path while its argmax agrees).

BigMoeOnEdge (`--bmoe`, its bmoe-cli binary; see bench/PEERS.md for a build against
the llama.cpp that llama-cpp-python vendors) streams experts with direct reads through an LRU
cache of --cache-mb MiB, beside its dense weights, KV cache and compute buffers. It is given the
largest cache its own memory leaves under the limit: the limit minus its peak anonymous memory
with no cache, measured first, minus --headroom-mb; if that run is killed, a run with no cache
(every expert read every token) is reported instead. Its other settings are its defaults (4 read lanes,
direct I/O, dense weights in its own memory) with --ubatch set to the prompt length, as this
engine batches its prefill.

--baseline-tree: another source tree of this engine, built in place (git worktree add /tmp/old
COMMIT && cd /tmp/old && python setup.py build_ext --inplace), run as "edgemoe (baseline)".

The bound per decoded token: the in-RAM compute time (this engine decoding the same tokens with
every expert cached) plus the expert reads Belady's cache would still need on this engine's
traced routing of those tokens (every byte of the limit beyond the resident weights holding
experts), at the best direct-read bandwidth of one expert's reads measured at queue depths
1-16 (bench/disk_curve.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from bench_util import drop_page_cache, set_cgroup_limit, replace_section, section_key
from compare import ROOT, least_decode_reads, model_bytes, run_child, steps_of_trace
from disk_curve import bandwidth

MiB = 1 << 20

# In RAM, in a child: the prompt's ids, the greedy continuation, this engine's warm decode speed on
# it (every expert cached) and its routing (prompt as one step per layer, then per token and layer).
PREPARE = r"""
import json, sys, time
import numpy as np
import edgemoe
a = json.loads(sys.argv[1])
m = edgemoe.load(a["path"], threads=a["threads"], ctx_size=a["prompt"] + a["decode"] + 8, cache_experts=None)
prompt = m.tokenize(open(a["text"], encoding="utf-8").read())[: a["prompt"]]
tok = int(np.argmax(m.eval(prompt)))
ids = []
for _ in range(a["decode"]):
    ids.append(tok)
    tok = int(np.argmax(m.eval([tok])))
m.reset()
with m.record_routing() as r:
    m.eval(prompt)
    for t in ids: m.eval([t])
m.reset()
m.eval(prompt)
t0 = time.perf_counter()
for t in ids: m.eval([t])
ms = (time.perf_counter() - t0) * 1e3 / len(ids)
print(json.dumps({"prompt": prompt, "ids": ids, "text": m.detokenize(prompt), "ram_ms": ms,
                  "experts": r.experts.tolist()}))
"""


def prepare(emoe: str, a) -> dict:
    args = {"path": emoe, "threads": a.threads, "prompt": a.prompt, "decode": a.decode, "text": a.text}
    out = subprocess.run([sys.executable, "-c", PREPARE, json.dumps(args)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_limited_run_args(p) -> None:
    """The flags of a decode run in a fresh process under a memory limit (io_threads.py, reduction_decode.py)."""
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md"))
    p.add_argument("--headroom-mb", type=int, default=16)
    p.add_argument("--write", default=None)


def limited_run(emoe: str, a) -> tuple:
    """(prepared prompt and ids, the limit: --fraction of emoe's file, the runs' common arguments)."""
    prep = prepare(emoe, a)
    limit = int(a.fraction * os.path.getsize(emoe))
    common = {"threads": a.threads, "prompt": prep["prompt"], "ctx": a.prompt + a.decode + 16,
              "headroom": a.headroom_mb * (1 << 20), "decode_ids": prep["ids"], "warm": False, "limit": limit}
    return prep, limit, common


def best_direct_read(emoe: str) -> tuple:
    """The best direct-read bandwidth (GB/s) of whole expert blobs of the container, chosen at
    random, over queue depths 1-16, and its depth."""
    sys.path.insert(0, ROOT)
    from edgemoe.format.container import open_container

    blobs = [b for row in open_container(emoe).experts for b in row]
    size = max(b["size"] for b in blobs)
    best = (0.0, 0)
    for depth in (1, 2, 4, 8, 16):
        drop_page_cache()
        best = max(best, (bandwidth(emoe, size, depth, 2.0, seed=depth, starts=[b["offset"] for b in blobs]) / 1e9,
                          depth))
    return best


def run_bmoe(binary: str, gguf: str, text: str, a, cache_mb: int, cgroup: str | None) -> dict:
    """One bmoe-cli run; peak RSS polled from /proc (VmHWM) until it exits."""
    cmd = [binary, "-m", gguf, "-p", text, "-n", str(a.decode), "-t", str(a.threads),
           "-c", str(a.prompt + a.decode + 16), "--ubatch", str(a.prompt), "--moe-stream",
           "--cache-mb", str(cache_mb)] + (["--force-cache"] if cache_mb else [])

    def join_cgroup():
        if cgroup:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:  # files: a full pipe would stall it
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, preexec_fn=join_cgroup)
        peak = anon = 0  # VmHWM counts the pages of its mapped model file too; RssAnon only its own memory
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    status = dict(line.split(":", 1) for line in f)
                peak = max(peak, int(status["VmHWM"].split()[0]))
                anon = max(anon, int(status["RssAnon"].split()[0]))
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.02)
        out_f.seek(0)
        err_f.seek(0)
        # a random-weight model's text is not always valid UTF-8
        out, err = (f.read().decode("utf-8", errors="replace") for f in (out_f, err_f))
    text_out = out + err
    gen = re.search(r"generation: (\d+) tokens, [\d.]+ s/token \(([\d.]+) tok/s\)", text_out)
    pre = re.search(r"prefill: \d+ tokens, [\d.]+ s \(([\d.]+) tok/s\)", text_out)
    read = re.search(r"moe-stream: read ([\d.]+) MiB \(([\d.]+) MiB/token\)", text_out)
    if proc.returncode != 0 or not gen:
        killed = proc.returncode in (-9, 137)
        tail = " | ".join(err.strip().splitlines()[-2:])
        return {"error": "killed (out of memory under the limit)" if killed else f"exit {proc.returncode}: {tail}"}
    return {"decode_tok_s": float(gen.group(2)), "decoded": int(gen.group(1)),
            "prefill_tok_s": float(pre.group(1)) if pre else float("nan"),
            "read_mb_per_tok": float(read.group(2)) * MiB / 1e6 if read else float("nan"),
            "peak_rss_mb": peak / 1024, "peak_anon_mb": anon / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("emoe")
    p.add_argument("gguf")
    p.add_argument("--bmoe", default="/work/peers/BigMoeOnEdge/build/cli/bmoe-cli")
    p.add_argument("--baseline-tree", default=None)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs per engine and limit, interleaved (median "
                   "reported); llama.cpp runs once")
    p.add_argument("--text", default=os.path.join(ROOT, "README.md"))
    p.add_argument("--headroom-mb", type=int, default=16, help="kept free under the limit by every engine")
    p.add_argument("--time-limit", type=float, default=600)
    p.add_argument("--write", default=None)
    a = p.parse_args()

    prep = prepare(a.emoe, a)
    mb = model_bytes(a.emoe)
    disk_gbs, depth = best_direct_read(a.emoe)
    prompt_steps, decode_steps = steps_of_trace(prep["experts"], len(prep["prompt"]))
    n_layers = len(prompt_steps)
    common = {"threads": a.threads, "prompt": prep["prompt"], "ctx": a.prompt + a.decode + 16,
              "headroom": a.headroom_mb * MiB, "decode_ids": prep["ids"], "warm": False}
    engines = ["edgemoe", "llama.cpp"]
    if a.baseline_tree:
        engines.insert(1, "edgemoe (baseline)")
    bmoe_base = None
    if a.bmoe and os.path.exists(a.bmoe):
        engines.append("BigMoeOnEdge")
        drop_page_cache()
        base = run_bmoe(a.bmoe, a.gguf, prep["text"], a, 0, None)  # no cache, no limit: its footprint
        bmoe_base = base.get("peak_anon_mb")

    lines = [f"\n### Decoding under a memory limit: edgemoe, llama.cpp and BigMoeOnEdge ({datetime.date.today()})\n",
             f"Command: `python bench/streaming_peers.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
             f"llama-cpp-python {__import__('llama_cpp').__version__}",
             f"Model: {os.path.basename(a.emoe)} ({os.path.getsize(a.emoe) / MiB:.0f} MiB; resident "
             f"{mb['resident'] / MiB:.0f} MiB, {mb['total']} experts of {mb['expert'] / MiB:.2f} MiB, "
             f"{mb['active']} per token) and {os.path.basename(a.gguf)} ({os.path.getsize(a.gguf) / MiB:.0f} MiB); "
             f"{len(prep['prompt'])}-token prompt from {os.path.basename(a.text)}, {a.decode} greedy tokens, "
             f"{a.threads} threads, cold storage, cgroup-v1 limit on the whole process; median of {a.repeats} "
             f"interleaved runs (llama.cpp: one).",
             f"Bound: in-RAM decode {prep['ram_ms']:.1f} ms/token (this engine, every expert cached) plus "
             f"Belady's expert reads at the storage bandwidth: the probe's {disk_gbs:.2f} GB/s (direct reads of whole "
             f"experts chosen at random, best at depth {depth}) or, if higher, the most an engine read per second "
             f"while decoding at that limit (GB/s read)."
             + (f" BigMoeOnEdge's own memory without an expert cache: {bmoe_base:.0f} MiB (peak RssAnon; its peak RSS below "
                f"also counts pages of the GGUF it maps, which the kernel reclaims under the limit)." if bmoe_base else ""),
             "",
             "| limit | engine | prefill tok/s | decode tok/s | vs edgemoe | MB read/token | GB/s read | "
             "peak RSS MiB | bound ms/token | ratio to it |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for frac in a.fractions:
        limit = int(frac * os.path.getsize(a.emoe))
        slots = max(1, (limit - mb["resident"]) // mb["expert"])
        reads = least_decode_reads(prompt_steps, decode_steps, n_layers, slots) / len(prep["ids"])
        runs = {eng: [] for eng in engines}
        for repeat in range(a.repeats):  # interleaved: drifting machine load spreads over every engine
            for eng in engines:
                if eng == "llama.cpp" and repeat:  # far slower than the others under any limit: once is enough
                    continue
                drop_page_cache()
                cg = set_cgroup_limit(limit)
                if eng == "BigMoeOnEdge":
                    # The largest cache its footprint leaves; if that does not fit after all, no cache
                    # (every expert read every token), which is its best left at that limit.
                    cache_mb = max(0, int((limit / MiB) - bmoe_base - a.headroom_mb)) if bmoe_base else 0
                    r = run_bmoe(a.bmoe, a.gguf, prep["text"], a, cache_mb, cg)
                    if "error" in r and cache_mb:
                        drop_page_cache()
                        r = run_bmoe(a.bmoe, a.gguf, prep["text"], a, 0, cg)
                        cache_mb = 0
                    r["engine"] = f"BigMoeOnEdge (cache {cache_mb} MiB)"
                else:
                    root = a.baseline_tree if eng == "edgemoe (baseline)" else ROOT
                    r = run_child("edgemoe" if eng.startswith("edgemoe") else eng,
                                  a.gguf if eng == "llama.cpp" else a.emoe,
                                  dict(common, limit=limit, cgroup=cg), a.time_limit, root=root)
                runs[eng].append(r)
        results = {}
        for eng, rs in runs.items():  # the run with the median decode speed, whole
            ok = sorted((r for r in rs if "error" not in r), key=lambda r: r["decode_tok_s"])
            results[eng] = ok[len(ok) // 2] if ok else rs[0]
        ours = results["edgemoe"].get("decode_tok_s", float("nan"))
        # Storage bandwidth: the probe's, or what an engine's decoding achieved if that was more
        # (bytes read per token x tokens/s, a floor on its rate since it computed meanwhile).
        achieved = {eng: r["read_mb_per_tok"] * r["decode_tok_s"] / 1e3 for eng, r in results.items() if "error" not in r}
        bw = max([disk_gbs] + [x for x in achieved.values() if x == x])
        bound_ms = prep["ram_ms"] + 1e3 * reads * mb["expert"] / (bw * 1e9)
        for eng in engines:
            r = results[eng]
            where = f"{frac:.1%} ({limit / MiB:.0f} MiB)"
            name = r.get("engine", eng)
            if "error" in r:
                row = f"| {where} | {name} | {r['error']} | | | | | | {bound_ms:.1f} | |"
            else:
                row = (f"| {where} | {name} | {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.2f} | "
                       f"{r['decode_tok_s'] / ours:.2f}x | {r['read_mb_per_tok']:.1f} | {achieved[eng]:.2f} | "
                       f"{r['peak_rss_mb']:.0f}{'' if r['peak_rss_mb'] * MiB <= limit else ' (over)'} | "
                       f"{bound_ms:.1f} | {1e3 / r['decode_tok_s'] / bound_ms:.2f}x |")
            lines.append(row)
            print(row, flush=True)
    if a.write:  # the lines were printed as they came
        replace_section(a.write, section_key(), "\n".join(lines))


if __name__ == "__main__":
    main()
