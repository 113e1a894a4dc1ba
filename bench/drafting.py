"""Speculative decoding under a memory limit: decode speed with each drafter against none, and
the lossy options beside it (with their KL divergence from the lossless model).

    python bench/drafting.py MODEL.emoe [--fractions 0.25] [--modes none ngram cache auto]
        [--skip 0.05 0.1] [--active 1] [--low-bit 0.2 1] [--prompt 64] [--decode 48] [--repeats 3]
        [--threads 2] [--text README.md] [--write bench/RESULTS.md]

--low-bit needs a MODEL with low-bit copies of its experts (`edgemoe convert --low-bit-copy`);
the limits are then fractions of the file without the copies, the model the other settings run.

Every run is a fresh process inside a cgroup-v1 limit of FRACTION x the container's size on the
whole process, page cache dropped first, generating --decode tokens greedily (not teacher forced:
drafting needs the generation loop) from the first --prompt tokens of --text; runs alternate
between settings, the median of --repeats runs is reported. Drafting must give the tokens plain
decoding gives (the table says whether it did); a lossy setting's tokens differ, so its KL
divergence (mean over the positions of --text after the prompt, lossless logits as reference,
computed in RAM) is reported beside its speed. Root only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

import numpy as np

from bench_util import drop_page_cache, report, set_cgroup_limit
from compare import CHILD_COMMON, ROOT

MiB = 1 << 20

CHILD = CHILD_COMMON + r"""
import edgemoe
from edgemoe.generate import Generation
from edgemoe.sampling import Sampler, SamplingParams
budget = a["limit"] if a["engine_budget"] else a["limit"] - base_rss - a["headroom"]
m = edgemoe.load(a["path"], memory_budget=budget, threads=a["threads"], ctx_size=a["ctx"], **a["lossy"])
g = Generation(m, prompt, a["decode"], Sampler(SamplingParams(temperature=0.0)), draft=a["draft"])
list(g)
s = g.stats
with open("/proc/self/status") as f:
    peak = int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps({"tokens": g.tokens, "tok_s": s.decode_tok_s, "draft": s.draft, "peak_rss_mb": peak,
                  "slots": m.plan.n_slots,
                  "mb_per_token": s.decode_engine["bytes_read"] / 1e6 / max(1, s.generated_tokens)}))
"""


def run(path: str, args: dict) -> dict:
    drop_page_cache()
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(dict(args, path=path))], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=1200)
    if out.returncode:
        return {"error": " | ".join(out.stderr.strip().splitlines()[-2:]) or f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def decode_kl(path: str, ids, slots: int, lossy: dict, threads: int) -> float:
    """Mean KL(lossless || lossy) in nats over the positions of ids, evaluated one token at a
    time (as decoding does) with `slots` expert slots, the cache the limited runs had: what is
    skipped depends on what is cached. Lossless logits do not depend on the cache."""
    sys.path.insert(0, ROOT)
    import warnings

    import edgemoe

    warnings.simplefilter("ignore")  # the LOSSY notice: this run is about its cost

    def per_token(model) -> np.ndarray:
        return np.stack([model.eval([t]) for t in ids])

    ref = per_token(edgemoe.load(path, threads=threads, ctx_size=len(ids), cache_experts=slots))
    changed = per_token(edgemoe.load(path, threads=threads, ctx_size=len(ids), cache_experts=slots, **lossy))
    return float(kl_rows(ref, changed).mean())


def kl_rows(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) of each row of two logit arrays, in nats."""
    p = p_logits.astype(np.float64) - p_logits.max(-1, keepdims=True)
    q = q_logits.astype(np.float64) - q_logits.max(-1, keepdims=True)
    lp = p - np.log(np.exp(p).sum(-1, keepdims=True))
    lq = q - np.log(np.exp(q).sum(-1, keepdims=True))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("emoe")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25])
    p.add_argument("--modes", nargs="+", default=["none", "ngram", "cache", "auto"])
    p.add_argument("--skip", type=float, nargs="*", default=[0.05, 0.1], help="skip_missed_below values")
    p.add_argument("--active", type=int, nargs="*", default=[], help="active_experts values")
    p.add_argument("--low-bit", type=float, nargs="*", default=[], help="low_bit_missed_below values")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--decode", type=int, default=48)
    p.add_argument("--kl-tokens", type=int, default=256, help="held-out positions the KL divergence averages")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text", default=os.path.join(ROOT, "README.md"))
    p.add_argument("--headroom-mb", type=int, default=16)
    p.add_argument("--engine-budget", action="store_true",
                   help="the limit is the engine's memory budget, with no cgroup limit: for a model smaller "
                        "than the Python process (the demo model)")
    p.add_argument("--write", default=None)
    a = p.parse_args()

    sys.path.insert(0, ROOT)
    import edgemoe

    ids = edgemoe.load(a.emoe, threads=a.threads).tokenize(open(a.text, encoding="utf-8").read())
    prompt, held_out = ids[:a.prompt], ids[a.prompt:a.prompt + a.kl_tokens]
    settings = ([(f"draft {mode}", mode, {}) for mode in a.modes]
                + [(f"LOSSY skip_missed_below {s:g}", "none", {"skip_missed_below": s}) for s in a.skip]
                + [(f"LOSSY active_experts {k}", "none", {"active_experts": k}) for k in a.active]
                + [(f"LOSSY low_bit_missed_below {s:g}", "none", {"low_bit_missed_below": s}) for s in a.low_bit])
    from edgemoe.format.container import open_container

    container = open_container(a.emoe)
    copies = sum(b["size"] for row in container.low_bit_experts or [] for b in row)
    model_bytes = os.path.getsize(a.emoe) - copies  # the limit is a fraction of the model the lossless runs read
    lines = [f"\n### Drafting and skipping light missed experts under a memory limit ({datetime.date.today()})\n",
             f"Command: `python bench/drafting.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
             f"{os.path.basename(a.emoe)}"
             f"{f' (with {copies / MiB:.1f} MiB of low-bit copies, left out of the file size the limits are fractions of)' if copies else ''}, cold, "
             f"{'the limit as the engine memory budget' if a.engine_budget else 'a cgroup-v1 limit on the whole process'}; "
             f"{len(prompt)}-token prompt from {os.path.basename(a.text)}, {a.decode} tokens generated greedily, "
             f"{a.threads} compute threads; median of {a.repeats} interleaved runs (all runs in brackets). "
             f"KL: mean over {len(held_out)} held-out positions of the same text, decoded one token at a time "
             f"with the limited runs' expert slots, against the lossless logits.\n"]
    for fraction in a.fractions:
        limit = int(fraction * model_bytes)
        common = {"threads": a.threads, "prompt": prompt, "decode": a.decode, "ctx": a.prompt + a.decode + 16,
                  "headroom": a.headroom_mb * MiB, "limit": limit}
        runs = {label: [] for label, _, _ in settings}
        for _ in range(a.repeats):
            for label, mode, lossy in settings:
                cgroup = None if a.engine_budget else set_cgroup_limit(limit)
                r = run(a.emoe, dict(common, cgroup=cgroup, engine_budget=a.engine_budget, draft=mode, lossy=lossy))
                if "error" in r:
                    sys.exit(f"{label}: {r['error']}")
                runs[label].append(r)
        plain_runs = runs[settings[0][0]]  # the first mode, none by default, is the reference
        plain = plain_runs[0]["tokens"]
        base = statistics.median(r["tok_s"] for r in plain_runs)
        slots = plain_runs[0]["slots"]
        lines += [f"\nLimit {fraction:.1%} of the model ({limit / MiB:.0f} MiB):\n",
                  "| setting | decode tok/s | vs none | MB read/token | drafted / kept / passes | output | "
                  "KL (nats) | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
        for label, mode, lossy in settings:
            rs = runs[label]
            med = statistics.median(r["tok_s"] for r in rs)
            d = rs[0]["draft"]
            drafts = f"{d['drafted']} / {d['accepted']} / {d['rounds']}" if d else "-"
            same = all(r["tokens"] == plain for r in rs)
            kl = decode_kl(a.emoe, held_out, slots, lossy, a.threads) if lossy else 0.0
            speeds = ", ".join(f"{r['tok_s']:.1f}" for r in rs)
            lines.append(f"| {label} | {med:.2f} ({speeds}) | "
                         f"{med / base:.2f}x | {statistics.median(r['mb_per_token'] for r in rs):.1f} | {drafts} | "
                         f"{'identical' if same else 'differs'} | {kl:.4f} | {max(r['peak_rss_mb'] for r in rs):.0f} |")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
