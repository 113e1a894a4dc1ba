"""Does the expert sensitivity proxy of `--bits auto` track the real loss increase?

    python bench/sensitivity_check.py HF_FOLDER CALIB_TEXT EVAL_TEXT [--experts 24] [--bits 2]
        [--eval-tokens 8192] [--write bench/RESULTS.md]

For a sample of experts spread over the proxy's range: the loss increase (nats/token on
EVAL_TEXT) when that expert alone is quantized to --bits and every other expert stays 8-bit,
against the proxy (edgemoe/offline/bitwidth.py) computed on CALIB_TEXT. Reports Spearman's rank
correlation and Pearson's on the raw values.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import edgemoe  # noqa: E402
from edgemoe.format import quant  # noqa: E402
from edgemoe.format.container import open_container  # noqa: E402
from edgemoe.format.model_config import moe_layers  # noqa: E402
from edgemoe.offline import bitwidth  # noqa: E402
from edgemoe.convert import convert_hf  # noqa: E402
from edgemoe.convert.auto_bits import plan_expert_types  # noqa: E402
from edgemoe.offline.perplexity import perplexity, read_text  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import report  # noqa: E402


def ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("calib")
    p.add_argument("eval")
    p.add_argument("--experts", type=int, default=24)
    p.add_argument("--bits", default="2")
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--write", default=None)
    a = p.parse_args()
    qtype = quant.CODES["q" + a.bits]
    column = list(bitwidth.CANDIDATES).index(qtype)
    # the proxy for every expert (any target: only its sensitivity table is used)
    _, allocation = plan_expert_types(a.src, read_text(a.calib), max_loss_increase=1e9, progress=False)
    sens = np.array(allocation["sensitivity"])[:, :, column]
    L, E = sens.shape
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base.emoe")
        convert_hf(a.src, base, bits="8", progress=False)
        routed = moe_layers(open_container(base).config)  # a dense layer has no experts to narrow
        flat = np.array([f for f in np.argsort(sens.ravel(), kind="stable") if f // E in routed])
        picks = flat[np.linspace(0, len(flat) - 1, a.experts).round().astype(int)]
        model = edgemoe.load(base)
        ids = model.tokenize(read_text(a.eval), add_special_tokens=False)[: a.eval_tokens]
        window = min(512, model.ctx_size)
        base_nll = perplexity(model, ids, window, window // 2)["nll"]
        true = []
        for f in picks:
            l, e = divmod(int(f), E)
            types = [[quant.Q8] * E if layer in routed else [] for layer in range(L)]
            types[l][e] = qtype
            path = os.path.join(tmp, "one.emoe")
            convert_hf(a.src, path, bits="8", progress=False, expert_types=types)
            true.append(perplexity(edgemoe.load(path), ids, window, window // 2)["nll"] - base_nll)
            print(f"expert {l}/{e}: proxy {sens[l, e]:.3e}, loss +{true[-1]:.2e}", flush=True)
    proxy = sens.ravel()[picks]
    true = np.array(true)
    spearman = float(np.corrcoef(ranks(proxy), ranks(true))[0, 1])
    pearson = float(np.corrcoef(proxy, true)[0, 1])
    third = max(1, len(true) // 3)  # picks are in increasing proxy order
    low, mid, high = true[:third].mean(), true[third:-third].mean(), true[-third:].mean()
    rows = "\n".join(f"| {l}/{e} | {s:.3g} | {t:+.2e} |" for (l, e), s, t in
                      zip((divmod(int(f), E) for f in picks), proxy, true))
    text = (f"\n### Sensitivity proxy vs measured loss ({datetime.date.today()})\n\n"
            f"Command: `python bench/sensitivity_check.py {' '.join(sys.argv[1:])}`\n\n"
            f"{a.experts} experts spread over the proxy's range, each alone at q{a.bits} (the rest 8-bit), "
            f"loss on {len(ids)} evaluation tokens: Spearman rank correlation {spearman:.2f}, Pearson "
            f"{pearson:.2f}. Mean measured increase by proxy third: lowest {low:+.1e}, middle {mid:+.1e}, "
            f"highest {high:+.1e} nats/token.\n\n| expert | proxy | measured loss change |\n|---|---|---|\n{rows}\n")
    report(text, a.write)


if __name__ == "__main__":
    main()
