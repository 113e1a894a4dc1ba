"""Expert prediction and prefetch: predictor accuracy, decode speed under expert-cache budgets, cache policies.

    python bench/bench_pipeline.py MODEL.emoe --calib TRAIN.txt --heldout HELDOUT.txt
        [--tokens 128] [--threads 2] [--write bench/RESULTS.md] [--plot bench/pipeline.png]

1. Profiles a copy of MODEL on the calibration text (`edgemoe profile`).
2. Predictor accuracy: decodes held-out text token by token (teacher forced) with each
   predictor and reports, per layer, the precision and recall of what it asked to
   prefetch against the experts the token then used.
3. Decode tokens/s, I/O-wait share and bytes read per token with the expert cache at
   100 %, 50 %, 25 % and 12.5 % of all experts, for every predictor with the LRU and
   the EdgeMoE policy. Each run is a fresh process; the page cache is dropped before it
   when running as root (the store reads with O_DIRECT anyway).
4. The simulator's hit rates for LRU, LFU, EdgeMoE and Belady on the recorded trace.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile

import numpy as np

from bench_util import decode_in_fresh_process, drop_page_cache, report

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

from edgemoe.options import CHOICES  # noqa: E402
from edgemoe.offline.perplexity import read_text  # noqa: E402

PREDICTORS = CHOICES["predictor"]
POLICIES = ["lru", "edgemoe"]
FRACTIONS = [1.0, 0.5, 0.25, 0.125]


def heldout_ids(model, path: str, n: int):
    return model.tokenize(read_text(path), add_special_tokens=False)[:n]


def predictor_accuracy(model_path: str, ids, predictor: str, threads: int):
    """Per-layer (precision, recall) of the predictor's prefetch requests over decode steps."""
    import edgemoe
    from edgemoe.trace import read_trace

    # ungated: the predictor's raw guesses (what a confidence gate then filters)
    model = edgemoe.load(model_path, predictor=predictor, threads=threads, prefetch_depth=2,
                         prefetch_min_confidence=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.jsonl")
        # every held-out token fed back one at a time, as if generated
        cfg = model.config
        with model.record_routing() as r:
            for i, t in enumerate(ids):
                if i % model.ctx_size == 0:  # a fresh context whenever the window is full
                    model.reset()
                model.eval([t])
        pos, experts, weights, predicted = r.positions, r.experts, r.weights, r.predicted
        from edgemoe.trace import write_trace

        write_trace(path, {"n_layers": cfg["n_layers"], "n_experts": cfg["n_experts"], "top_k": cfg["top_k"],
                           "dense_layers": cfg["dense_layers"], "prompt_tokens": 0}, ids, pos, experts, weights, predicted)
        _, records = read_trace(path)
    L = model.config["n_layers"]
    hit = np.zeros(L)
    guessed = np.zeros(L)
    actual = np.zeros(L)
    for rec in records:
        guesses = rec.get("predicted")
        if guesses is None:
            continue
        for l in range(L):
            g, a = set(guesses[l]), set(rec["experts"][l])
            hit[l] += len(g & a)
            guessed[l] += len(g)
            actual[l] += len(a)
    precision = np.divide(hit, guessed, out=np.full(L, np.nan), where=guessed > 0)
    recall = np.divide(hit, actual, out=np.zeros(L), where=actual > 0)
    return precision, recall, records


def decode_run(model_path: str, ids, predictor: str, policy: str, slots: int, threads: int,
               min_confidence: float) -> dict:
    """One configuration in a fresh process: decode `ids` token by token, report timing and I/O."""
    s = decode_in_fresh_process(model_path, ids, predictor=predictor, cache_policy=policy, cache_experts=slots,
                                threads=threads, prefetch_depth=2, prefetch_min_confidence=min_confidence)
    return {"tok_s": s["tok_s"], "io_share": s["io_wait_s"] / s["seconds"], "mb_per_tok": s["mb_per_tok"],
            "hit_rate": s["cache_hit_rate"], "prefetch_hits": s["prefetch_hits"],
            "prefetch_wasted": s["prefetch_wasted"], "io_wait_s": s["io_wait_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--calib", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--calib-tokens", type=int, default=60000)
    p.add_argument("--tokens", type=int, default=128, help="held-out tokens decoded per run")
    p.add_argument("--accuracy-tokens", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (interleaved; median reported)")
    p.add_argument("--min-confidence", type=float, default=0.5, help="prefetch_min_confidence of the decode runs")
    p.add_argument("--write", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args()

    import edgemoe
    from edgemoe.offline.profile import profile_container
    import simulate_cache as sim

    lines = []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.model))) as tmp:
        model_path = os.path.join(tmp, os.path.basename(a.model))
        shutil.copyfile(a.model, model_path)
        summary = profile_container(model_path, read_text(a.calib), max_tokens=a.calib_tokens,
                                    source=os.path.basename(a.calib))
        lines.append(f"Profile: {summary['tokens']} calibration tokens from `{os.path.basename(a.calib)}` "
                     f"in {summary['seconds']:.1f} s.\n")
        probe = edgemoe.load(model_path, predictor="none")
        info = probe.info()
        L, E = info["n_layers"], info["n_experts"]
        total = sum(len(row) for row in info["expert_types"])  # dense layers have none
        acc_ids = heldout_ids(probe, a.heldout, a.accuracy_tokens)
        ids = heldout_ids(probe, a.heldout, a.tokens + 1)
        del probe

        # 2. accuracy
        lines.append(f"#### Predictor accuracy ({len(acc_ids)} held-out tokens decoded one by one; "
                     "precision / recall of prefetch requests per layer; depth 2, no confidence gate)\n")
        lines.append("| predictor | " + " | ".join(f"L{l}" for l in range(L)) + " | mean P / R |")
        lines.append("|---|" + "---|" * (L + 1))
        trace_records = None
        for pred in ["gate", "stats", "token", "auto"]:
            precision, recall, records = predictor_accuracy(model_path, acc_ids, pred, a.threads)
            trace_records = trace_records or records
            cells = [("-" if np.isnan(pp) else f"{pp:.2f}") + f" / {rr:.2f}" for pp, rr in zip(precision, recall)]
            lines.append(f"| {pred} | " + " | ".join(cells) + f" | {np.nanmean(precision):.2f} / {recall.mean():.2f} |")
        lines.append("")

        # 3. decode under budgets
        lines.append(f"#### Decode under expert-cache budgets ({a.tokens} held-out tokens, teacher forced, "
                     f"{a.threads} threads, prefetch_min_confidence {a.min_confidence}, median of {a.repeats} "
                     f"interleaved runs (range in brackets), page cache dropped before each run: "
                     f"{drop_page_cache()})\n")
        lines.append("| cache | predictor | policy | tok/s | I/O wait share | MB read/token | hit rate | "
                     "prefetch hits / wasted |")
        lines.append("|---|---|---|---|---|---|---|---|")
        configs = [(frac, pred, pol) for frac in FRACTIONS for pred in PREDICTORS for pol in POLICIES]
        runs = {c: [] for c in configs}
        for _ in range(a.repeats):  # interleaved, so drifting machine load spreads over every configuration
            for frac, pred, pol in configs:
                slots = max(info["top_k"], int(round(frac * total)))
                runs[(frac, pred, pol)].append(decode_run(model_path, ids, pred, pol, slots, a.threads,
                                                          a.min_confidence))
        results = {}
        for (frac, pred, pol), rs in runs.items():
            slots = max(info["top_k"], int(round(frac * total)))
            r = rs[int(np.argsort([x["tok_s"] for x in rs])[len(rs) // 2])]  # the median run, whole
            results[(frac, pred, pol)] = r
            spread = f" ({min(x['tok_s'] for x in rs):.0f}-{max(x['tok_s'] for x in rs):.0f})" if len(rs) > 1 else ""
            lines.append(f"| {frac:.1%} ({slots}) | {pred} | {pol} | {r['tok_s']:.1f}{spread} | {r['io_share']:.1%} | "
                         f"{r['mb_per_tok']:.2f} | {r['hit_rate']:.1%} | "
                         f"{r['prefetch_hits']} / {r['prefetch_wasted']} |")
        lines.append("")
        q = results
        if (0.25, "auto", "lru") in q:
            best = max(POLICIES, key=lambda pol: q[(0.25, "auto", pol)]["tok_s"])
            none = max(POLICIES, key=lambda pol: q[(0.25, "none", pol)]["tok_s"])
            io_ratio = q[(0.25, "none", none)]["io_wait_s"] / max(q[(0.25, "auto", best)]["io_wait_s"], 1e-9)
            speed_ratio = q[(0.25, "auto", best)]["tok_s"] / q[(0.25, "none", none)]["tok_s"]
            lines.append(f"At 25 %: `auto` ({best}) waits {io_ratio:.2f}x less on I/O than `none` ({none}) and decodes "
                         f"{speed_ratio:.2f}x as fast (targets: 2x and 1.5x).\n")

        # 4. simulator on the accuracy run's trace (decode order)
        steps = sim.access_sequence(trace_records)
        lines.append("#### Simulated hit rates on the same held-out trace\n")
        lines.append("| slots | lru | lfu | edgemoe | belady |")
        lines.append("|---|---|---|---|---|")
        for frac in FRACTIONS[1:]:
            slots = max(info["top_k"], int(round(frac * total)))
            rates = [sim.simulate(steps, L, slots, sim.POLICIES[n](L, steps))["hit_rate"]
                     for n in ["lru", "lfu", "edgemoe", "belady"]]
            lines.append(f"| {frac:.1%} ({slots}) | " + " | ".join(f"{r:.1%}" for r in rates) + " |")
        lines.append("")

        if a.plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6, 3.8))
            for pred in PREDICTORS:
                ys = [max(q[(f, pred, pol)]["tok_s"] for pol in POLICIES) for f in FRACTIONS]
                ax.plot([f * 100 for f in FRACTIONS], ys, "o-", label=pred)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("expert cache, % of all experts")
            ax.set_ylabel("decode tokens/s (best policy)")
            ax.legend()
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(a.plot, dpi=110)
            lines.append(f"![decode tokens/s against expert-cache budget]({os.path.basename(a.plot)})\n")

    text = "\n".join(lines)
    if a.write:
        cmd = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
        report(f"\n### Expert prediction and prefetch ({datetime.date.today()})\n\nCommand: `{cmd}`  \n"
               f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}\n\n{text}\n", a.write)
    else:
        print(text)


if __name__ == "__main__":
    main()
