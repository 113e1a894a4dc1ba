"""How a model routes over a text: the statistics that decide how well any expert cache can do.

    python bench/routing_stats.py [TRACE.jsonl ...] [--model M.emoe --text FILE [--tokens 500]]
        [--write bench/RESULTS.md]

A trace comes from `edgemoe generate MODEL --trace PATH` (docs/TRACE.md), or is recorded here:
--model traces the first --tokens tokens of --text (in windows of the model's context; by default
the demo model's held-out text, tests/fixtures/demo_reference.npz's windows decoded). Per trace:

- balance: each MoE layer's expert-usage entropy over the trace, as a share of uniform's
  (log n_experts); 1 = every expert used equally. Trained models with load-balancing losses sit
  near 1; a cache gains little from a balanced layer unless choices repeat.
- token reuse: the share of a token's experts (per layer) that the previous token also chose,
  against k / n_experts for choices independent of each other.
- layer coupling: the mutual information between an expert chosen in one MoE layer and one chosen
  in the next, over all k x k pairs per token, as a share of the next layer's entropy: how much
  one layer says about the next (what predictors and prefetch rest on). 0 for independent layers
  (a small positive bias remains from the finite sample: shown for a shuffled copy); a layer that
  repeats the last one's choice under a fixed permutation shows 0.26 at top-2 of 16 (of a
  token's k x k pairs only k match), not 1.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import report  # noqa: E402


def load_trace(path: str):
    """(header, experts [tokens, layers, k] with -1 for dense layers) of a trace file."""
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        rows = [json.loads(line)["experts"] for line in f if line.strip()]
    L, k = header["n_layers"], header["top_k"]
    experts = np.full((len(rows), L, k), -1, dtype=np.int64)
    for t, row in enumerate(rows):
        for l, chosen in enumerate(row):
            experts[t, l, :len(chosen)] = chosen
    return header, experts


def held_out_text() -> str:
    """The trained demo model's held-out windows (tests/fixtures/demo_reference.npz) as text."""
    import edgemoe

    windows = np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                                   "demo_reference.npz"))["windows"]
    demo = edgemoe.load(edgemoe.default_model_path())
    return "\n\n".join(demo.detokenize(w.tolist()) for w in windows)


def trace_model(path: str, text_file: Optional[str], n_tokens: int):
    """(header, experts) of the model at `path` over the first n_tokens tokens of text_file,
    evaluated in windows of its context, one trace."""
    import tempfile

    import edgemoe

    model = edgemoe.load(path)
    if text_file is None:
        text = held_out_text()
    else:
        with open(text_file, encoding="utf-8") as f:
            text = f.read()
    ids = model.tokenize(text, add_special_tokens=False)[:n_tokens]
    window = min(model.ctx_size - 1, 512)
    header, parts = None, []
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(ids), window):
            trace = os.path.join(tmp, f"{start}.jsonl")
            model.reset()
            model.generate(ids[start:start + window], max_tokens=1, trace=trace)
            header, experts = load_trace(trace)
            parts.append(experts)
    header["model"] = os.path.basename(path)
    return header, np.concatenate(parts)


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def coupling(a: np.ndarray, b: np.ndarray, E: int) -> float:
    """I(A; B) / H(B) over every (expert of layer A, expert of layer B) pair of each token."""
    joint = np.zeros((E, E))
    for ea in range(a.shape[1]):
        for eb in range(b.shape[1]):
            np.add.at(joint, (a[:, ea], b[:, eb]), 1)
    h_b = entropy(joint.sum(0))
    mutual = entropy(joint.sum(1)) + h_b - entropy(joint.ravel())
    return mutual / h_b if h_b > 0 else 0.0


def statistics(header: Dict, experts: np.ndarray, seed: int = 0) -> Dict[str, float]:
    E, k = header["n_experts"], header["top_k"]
    moe = [l for l in range(header["n_layers"]) if l not in set(header.get("dense_layers") or [])]
    balance = [entropy(np.bincount(experts[:, l].ravel(), minlength=E).astype(float)) / np.log(E) for l in moe]
    reuse = [np.mean([len(set(experts[t, l]) & set(experts[t - 1, l])) / k for t in range(1, len(experts))])
             for l in moe]
    pairs = list(zip(moe, moe[1:]))
    coupled = [coupling(experts[:, a], experts[:, b], E) for a, b in pairs]
    shuffled = np.random.default_rng(seed).permutation(len(experts))
    baseline = [coupling(experts[:, a], experts[shuffled, b], E) for a, b in pairs]
    return {"tokens": len(experts), "layers": len(moe), "experts": E, "top_k": k,
            "balance_min": min(balance), "balance_mean": float(np.mean(balance)),
            "reuse": float(np.mean(reuse)), "reuse_independent": k / E,
            "coupling": float(np.mean(coupled)) if coupled else 0.0,
            "coupling_shuffled": float(np.mean(baseline)) if baseline else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="*")
    p.add_argument("--model", action="append", default=[], help="trace this model over --text")
    p.add_argument("--text", default=None)
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    rows: List[str] = []
    loaded = [load_trace(path) for path in a.traces] + [trace_model(m, a.text, a.tokens) for m in a.model]
    for path, (header, experts) in zip(a.traces + a.model, loaded):
        s = statistics(header, experts)
        rows.append(f"| {header.get('model', os.path.basename(path))} | {s['tokens']} | {s['layers']} x "
                    f"{s['experts']}, top-{s['top_k']} | {s['balance_min']:.3f} / {s['balance_mean']:.3f} | "
                    f"{s['reuse']:.3f} ({s['reuse_independent']:.3f}) | {s['coupling']:.3f} "
                    f"({s['coupling_shuffled']:.3f}) |")
    text = (f"\n### Routing statistics ({datetime.date.today()})\n\n"
            f"Command: `python bench/routing_stats.py {' '.join(sys.argv[1:])}`. Balance: usage entropy as a share "
            f"of uniform's (min / mean over MoE layers). Token reuse: share of a token's experts the previous token "
            f"also chose (independent choices in brackets). Layer coupling: mutual information between neighbouring "
            f"MoE layers' choices as a share of the next layer's entropy (a shuffled copy in brackets).\n\n"
            f"| model | tokens | MoE layers x experts | balance | token reuse | layer coupling |\n"
            f"|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    report(text, a.write)


if __name__ == "__main__":
    main()
