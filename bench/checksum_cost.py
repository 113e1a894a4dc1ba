"""What verifying every expert read's CRC-32 costs: decode with checksums on and off, interleaved.

    python bench/checksum_cost.py MODEL.emoe HELDOUT_TEXT [--cache 0.25] [--tokens 400] [--repeats 5]
        [--write bench/RESULTS.md]

Fresh process per run, page cache dropped, runs alternating on/off; medians reported.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import decode_in_fresh_process, report  # noqa: E402

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
    from edgemoe.offline.perplexity import read_text

    m = edgemoe.load(a.model)
    ids = m.tokenize(read_text(a.heldout), add_special_tokens=False)[: a.tokens + 1]
    slots = max(m.config["top_k"], int(a.cache * sum(len(row) for row in m.info()["expert_types"])))
    del m
    runs = {True: [], False: []}
    for _ in range(a.repeats):
        for verify in (True, False):
            runs[verify].append(decode_in_fresh_process(a.model, ids, cache_experts=slots, threads=2,
                                                        verify_checksums=verify))
    on = statistics.median(r["tok_s"] for r in runs[True])
    off = statistics.median(r["tok_s"] for r in runs[False])
    mb = runs[True][0]["mb_per_tok"]
    text = (f"\n### Checksum verification cost\n\nCommand: `python bench/checksum_cost.py {' '.join(sys.argv[1:])}`\n\n"
            f"Decode at a {a.cache:.0%} expert cache ({slots} slots, {mb:.2f} MB read per token, cold), median of "
            f"{a.repeats} interleaved runs: checksums on {on:.0f} tok/s, off {off:.0f} tok/s "
            f"(on = {on / off:.2f}x off; runs on: {[round(r['tok_s']) for r in runs[True]]}, "
            f"off: {[round(r['tok_s']) for r in runs[False]]}).\n")
    report(text, a.write)


if __name__ == "__main__":
    main()
