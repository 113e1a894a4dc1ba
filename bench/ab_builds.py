"""Decode and prefill speed of two builds of edgemoe side by side: A/B of a runtime change.

    git worktree add /tmp/old HEAD~1 && (cd /tmp/old && python setup.py build_ext --inplace)
    python bench/ab_builds.py MODEL.emoe /tmp/old . [--model-a OLD.emoe] [--runs 5] [--prompt 128]
        [--decode 128] [--threads 2] [--memory-fraction 0.25]

Each run is a fresh process importing the package from one of the two source trees
(PYTHONPATH), alternating A and B. --model-a gives A its own container when the two builds read
different container formats (convert the same checkpoint with each). In RAM (the default) every
expert is cached after a warm-up, so this measures compute, not storage. With
--memory-fraction F each run is limited to F x its container's size (cgroup v1, root) with the
page cache dropped, and loads with the memory budget that limit leaves after the interpreter's
own footprint, as bench/compare.py's memory-limited scenario does: experts stream from storage.
Prints the median decode and prefill tokens/s of each and their ratios (in RAM, prefill is the
--prompt tokens after the warm-up, one timing per run).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from bench_util import drop_page_cache, set_cgroup_limit

RUN = r"""
import json, os, sys, time
import numpy as np
a = json.loads(sys.argv[1])
if a["cgroup"]:
    with open(os.path.join(a["cgroup"], "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
with open("/proc/self/statm") as f:
    base_rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
import edgemoe
budget = None if a["limit"] is None else a["limit"] - base_rss - a["headroom"]
m = edgemoe.load(a["path"], threads=a["threads"], ctx_size=a["prompt"] + a["decode"] + 32, memory_budget=budget)
ids = np.random.default_rng(0).integers(0, m.config["vocab"], a["prompt"]).tolist()
if a["limit"] is None:
    m.logits(ids)  # warm-up: the prompt's experts are read once
    m.reset()
t0 = time.perf_counter()
tok = int(np.argmax(m.eval(ids)))
prefill_tok_s = len(ids) / (time.perf_counter() - t0)
for _ in range(16):
    tok = int(np.argmax(m.eval([tok])))
t0 = time.perf_counter()
for _ in range(a["decode"]):
    tok = int(np.argmax(m.eval([tok])))
print(json.dumps({"package": edgemoe.__file__, "tok_s": a["decode"] / (time.perf_counter() - t0),
                  "prefill_tok_s": prefill_tok_s}))
"""


def run(tree: str, model: str, a) -> dict:
    limit = None if a.memory_fraction is None else int(os.path.getsize(model) * a.memory_fraction)
    args = {"path": model, "prompt": a.prompt, "decode": a.decode, "threads": a.threads, "limit": limit,
            "headroom": a.headroom_mb << 20, "cgroup": None}
    if limit is not None:
        args["cgroup"] = set_cgroup_limit(limit)
        drop_page_cache()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True, text=True, env=env,
                         check=True, cwd=os.path.abspath(tree))
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if not r["package"].startswith(os.path.abspath(tree)):
        sys.exit(f"{tree}: imported {r['package']} instead; build it in place first")
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the container B runs (and A, unless --model-a)")
    p.add_argument("a", help="source tree A (built in place)")
    p.add_argument("b", help="source tree B (built in place)")
    p.add_argument("--model-a", default=None, help="A's container, when A reads another format")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-fraction", type=float, default=None,
                   help="limit each run to this fraction of its container's size, storage cold")
    p.add_argument("--headroom-mb", type=int, default=16, help="kept free under the limit")
    a = p.parse_args()
    results = {"A": [], "B": []}
    for _ in range(a.runs):
        results["A"].append(run(a.a, a.model_a or a.model, a))
        results["B"].append(run(a.b, a.model, a))
    for phase, key in (("decode", "tok_s"), ("prefill", "prefill_tok_s")):
        ra, rb = ([r[key] for r in results[x]] for x in ("A", "B"))
        ma, mb = statistics.median(ra), statistics.median(rb)
        print(f"{phase}: A {a.a}: {[round(x, 1) for x in ra]} median {ma:.1f} tok/s")
        print(f"{phase}: B {a.b}: {[round(x, 1) for x in rb]} median {mb:.1f} tok/s")
        print(f"{phase}: B / A = {mb / ma:.3f}")


if __name__ == "__main__":
    main()
