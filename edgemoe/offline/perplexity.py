"""`edgemoe perplexity MODEL FILE`: how well a converted model predicts a text.

Sliding window, as transformers' perplexity guide does it: each window holds
`ctx` tokens, is evaluated from an empty context, and scores only tokens no
earlier window scored: the first window its tokens 1 .. ctx-1, every later
window the next `stride` tokens (at most ctx - 1) with the ctx - stride tokens
before them as context. Every token after the first is scored exactly once.
A small stride gives more context per token at ctx / stride times the compute;
stride = ctx - 1 gives nearly disjoint windows (fast, short contexts).
"""
from __future__ import annotations

import json
import math
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import EdgeMoEError


def read_text(path: str) -> str:
    """A UTF-8 text file, or JSON Lines with a "text" field per line (documents joined by blank lines)."""
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                return "\n\n".join(json.loads(line)["text"] for line in f if line.strip())
            return f.read()
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise EdgeMoEError(f"cannot read {path}: {e}") from None


def token_nll(logits: np.ndarray, targets: List[int]) -> np.ndarray:
    """-log p(target) for each row of logits [n, vocab], computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return log_norm - z[np.arange(len(targets)), targets]


def scored_windows(model, ids: List[int], ctx: int, stride: Optional[int] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> Iterator[Tuple[int, int, int, np.ndarray]]:
    """The module doc's windows: (begin, first, end, rows) per window of ids[begin:end], rows being
    `model`'s logits predicting tokens first .. end - 1 (each token after the first exactly once)."""
    stride = min(stride or ctx - 1, ctx - 1)
    if ctx < 2 or stride < 1:
        raise ValueError(f"need ctx >= 2 and stride >= 1 (got ctx={ctx}, stride={stride})")
    if len(ids) < 2:
        raise ValueError("the text is too short to score (fewer than 2 tokens)")
    scored_until = 1  # token 0 has no context: never scored
    while scored_until < len(ids):
        end = min(len(ids), max(ctx, scored_until + stride))
        begin = max(0, end - ctx)
        logits = model.logits(ids[begin:end])  # row i predicts the window's token i + 1
        yield begin, scored_until, end, logits[scored_until - begin - 1:end - begin - 1]
        scored_until = end
        if progress:
            progress(end, len(ids))


def perplexity(model, ids: List[int], ctx: int, stride: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """Sliding-window perplexity of `ids` under `model` (an edgemoe.Model); see the module doc."""
    nll = 0.0
    t0 = time.perf_counter()
    for _, first, end, rows in scored_windows(model, ids, ctx, stride, progress):
        nll += float(token_nll(rows, ids[first:end]).sum())
    scored = len(ids) - 1
    return {"perplexity": math.exp(nll / scored), "nll": nll / scored, "tokens": scored,
            "seconds": time.perf_counter() - t0}
