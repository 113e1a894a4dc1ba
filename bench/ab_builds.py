"""Decode speed of two builds of edgemoe side by side: A/B of a runtime change.

    git worktree add /tmp/old HEAD~1 && (cd /tmp/old && python setup.py build_ext --inplace)
    python bench/ab_builds.py MODEL.emoe /tmp/old . [--runs 5] [--prompt 128] [--decode 128] [--threads 2]

Each run is a fresh process importing the package from one of the two source trees
(PYTHONPATH), alternating A and B; every expert is cached after a warm-up, so this measures
compute, not storage. Prints the median tokens/s of each and their ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

RUN = r"""
import json, sys, time
import numpy as np
import edgemoe
path, prompt, decode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = edgemoe.load(path, threads=threads, ctx_size=prompt + decode + 32)
ids = np.random.default_rng(0).integers(0, m.config["vocab"], prompt).tolist()
m.logits(ids)  # warm-up: the prompt's experts are read once
m.reset()
tok = int(np.argmax(m.eval(ids)))
for _ in range(16):
    tok = int(np.argmax(m.eval([tok])))
t0 = time.perf_counter()
for _ in range(decode):
    tok = int(np.argmax(m.eval([tok])))
print(json.dumps({"package": edgemoe.__file__, "tok_s": decode / (time.perf_counter() - t0)}))
"""


def run(tree: str, a) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", RUN, a.model, str(a.prompt), str(a.decode), str(a.threads)],
                         capture_output=True, text=True, env=env, check=True, cwd=os.path.abspath(tree))
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if not r["package"].startswith(os.path.abspath(tree)):
        sys.exit(f"{tree}: imported {r['package']} instead; build it in place first")
    return r["tok_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("a", help="source tree A (built in place)")
    p.add_argument("b", help="source tree B (built in place)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    results = {"A": [], "B": []}
    for _ in range(a.runs):
        results["A"].append(run(a.a, a))
        results["B"].append(run(a.b, a))
    ma, mb = statistics.median(results["A"]), statistics.median(results["B"])
    print(f"A {a.a}: {[round(x, 1) for x in results['A']]} median {ma:.1f} tok/s")
    print(f"B {a.b}: {[round(x, 1) for x in results['B']]} median {mb:.1f} tok/s")
    print(f"B / A = {mb / ma:.3f}")


if __name__ == "__main__":
    main()
