"""What verifying every expert read's CRC-32 costs: decode with checksums on and off, interleaved.

    python bench/checksum_cost.py MODEL.emoe HELDOUT_TEXT [--cache 0.25] [--tokens 400] [--repeats 5]
        [--write bench/RESULTS.md]

Fresh process per run, page cache dropped, runs alternating on/off; medians reported.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import drop_page_cache, report  # noqa: E402

RUN = (
    "import json, sys, time, edgemoe\n"
    "a = json.loads(sys.argv[1])\n"
    "m = edgemoe.load(a['path'], cache_experts=a['slots'], threads=2, verify_checksums=a['verify'])\n"
    "m.eval(a['ids'][:1]); m.reset_stats(); t0 = time.perf_counter()\n"
    "for t in a['ids'][1:]: m.eval([t])\n"
    "s = m.stats(); print(json.dumps({'tok_s': (len(a['ids']) - 1) / (time.perf_counter() - t0),"
    " 'mb': s['bytes_read'] / 1e6 / (len(a['ids']) - 1)}))\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("heldout")
    p.add_argument("--cache", type=float, default=0.25)
    p.add_argument("--tokens", type=int, default=400)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    import edgemoe
    from edgemoe.perplexity import read_text

    m = edgemoe.load(a.model)
    ids = m.tokenize(read_text(a.heldout), add_special_tokens=False)[: a.tokens + 1]
    slots = max(m.config["top_k"], int(a.cache * m.config["n_layers"] * m.config["n_experts"]))
    del m
    runs = {True: [], False: []}
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    for _ in range(a.repeats):
        for verify in (True, False):
            drop_page_cache()
            out = subprocess.run([sys.executable, "-c", RUN, json.dumps({"path": a.model, "ids": ids, "slots": slots,
                                                                          "verify": verify})],
                                 capture_output=True, text=True, check=True, env=env)
            runs[verify].append(json.loads(out.stdout.strip().splitlines()[-1]))
    on = statistics.median(r["tok_s"] for r in runs[True])
    off = statistics.median(r["tok_s"] for r in runs[False])
    mb = runs[True][0]["mb"]
    text = (f"\n### Checksum verification cost\n\nCommand: `python bench/checksum_cost.py {' '.join(sys.argv[1:])}`\n\n"
            f"Decode at a {a.cache:.0%} expert cache ({slots} slots, {mb:.2f} MB read per token, cold), median of "
            f"{a.repeats} interleaved runs: checksums on {on:.0f} tok/s, off {off:.0f} tok/s "
            f"(on = {on / off:.2f}x off; runs on: {[round(r['tok_s']) for r in runs[True]]}, "
            f"off: {[round(r['tok_s']) for r in runs[False]]}).\n")
    report(text, a.write)


if __name__ == "__main__":
    main()
