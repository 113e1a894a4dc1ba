"""`edgemoe perplexity MODEL FILE --kl-divergence REFERENCE`: how far a conversion's predictions
are from a reference's, token by token, as llama.cpp's `perplexity --kl-divergence` reports it.

The reference is a higher-precision container of the same model (evaluated window by window
beside MODEL), or the log-probabilities saved by `--save-logits FILE.npy` (with FILE.npy.json) from an earlier run over the same
text, window and stride (so the reference never has to be loaded at the same time). Both
models see the same windows (edgemoe/offline/perplexity.py), so every scored token gets:
KL(reference || model) over the whole vocabulary, whether the two agree on the most likely
token, and each one's -log p of the text's token.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import FormatError
from .perplexity import scored_windows

SAVED_FORMAT = 1
# Saved log-probabilities: 16-bit codes over [FLOOR, 0] nats (resolution 0.0004 nats, where float16
# would keep 0.008 at -10); below the floor (p < 4e-11) a probability adds next to nothing to a KL
# sum (over a 152k vocabulary, at most a few 1e-5 nats: a saved reference reads that much above a
# live one).
FLOOR = -24.0
_STEP = -FLOOR / 65535


def encode_logprobs(lp: np.ndarray) -> np.ndarray:
    return np.rint((np.clip(lp, FLOOR, 0.0) - FLOOR) / _STEP).astype(np.uint16)


def decode_logprobs(codes: np.ndarray) -> np.ndarray:
    return codes.astype(np.float64) * _STEP + FLOOR


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# Rows handled at a time: the float64 log-probabilities of a window of a 152k vocabulary would
# otherwise be several temporaries of 600 MB each.
ROW_BLOCK = 32


def _row_blocks(n: int):
    for r0 in range(0, n, ROW_BLOCK):
        yield r0, min(n, r0 + ROW_BLOCK)


def record_logits(model, ids: List[int], ctx: int, stride: int, rows: np.ndarray,
                  progress: Optional[Callable[[int, int], None]] = None) -> float:
    """Fill rows [len(ids) - 1, vocab] (uint16, e.g. a memory map) with `model`'s encoded
    log-probabilities of every scored token; returns its mean -log p of the text's tokens."""
    nll = 0.0
    for _, first, end, logits in scored_windows(model, ids, ctx, stride, progress):
        for r0, r1 in _row_blocks(end - first):
            lp = log_softmax(logits[r0:r1])
            rows[first - 1 + r0:first - 1 + r1] = encode_logprobs(lp)
            nll -= float(lp[np.arange(r1 - r0), ids[first + r0:first + r1]].sum())
    return nll / (len(ids) - 1)


def _meta_path(path: str) -> str:
    return path + ".json"


class SavedLogits:
    """A reference's log-probabilities saved by save_logits(): the .npy of 16-bit codes
    [tokens - 1, vocab], memory-mapped (a long text's are gigabytes), and its .json beside it (the
    tokens and windows they are for); served window by window."""

    def __init__(self, path: str, ids: List[int], ctx: int, stride: int):
        try:
            with open(_meta_path(path), encoding="utf-8") as f:
                meta = json.load(f)
            fmt, window, step, saved_ids = (meta["format"], meta["window"], meta["stride"], meta["ids"])
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
            raise FormatError(f"{path}: not logits saved by `edgemoe perplexity --save-logits` (with its "
                              f"{os.path.basename(_meta_path(path))}): {e}") from None
        if fmt != SAVED_FORMAT:
            raise FormatError(f"{path}: saved logits of format {fmt!r}, this edgemoe reads {SAVED_FORMAT}")
        if (window, step) != (ctx, stride) or saved_ids != list(ids):
            raise FormatError(f"{path}: saved over other tokens or windows (window {window}, stride {step}, "
                              f"{len(saved_ids) if isinstance(saved_ids, list) else '?'} tokens; this run: window "
                              f"{ctx}, stride {stride}, {len(ids)} tokens): use the same text, --max-tokens, "
                              f"--window and --stride")
        if rows.dtype != np.uint16 or rows.ndim != 2 or len(rows) != len(ids) - 1:
            raise FormatError(f"{path}: {rows.shape} log-probabilities for {len(ids)} tokens")
        self.rows, self.vocab = rows, rows.shape[1]

    def rows_for(self, first: int, end: int) -> np.ndarray:
        """Log-probabilities predicting tokens first .. end-1."""
        return decode_logprobs(self.rows[first - 1:end - 1])


def save_logits(model, ids: List[int], ctx: int, stride: int, path: str,
                progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """Write `model`'s log-probabilities for every scored token of `ids` to `path` (an .npy of
    16-bit codes, 2 bytes per vocabulary entry per token, filled through a memory map) and the
    tokens and windows they are for to `path`.json; both under temporary names, renamed when
    whole (the .json last: a reference without it is refused)."""
    tmp, tmp_meta = path + ".partial.npy", _meta_path(path) + ".partial"
    try:
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=(len(ids) - 1, model.config["vocab"]))
        t0 = time.perf_counter()
        nll = record_logits(model, ids, ctx, stride, rows, progress)
        rows.flush()
        del rows
        with open(tmp_meta, "w", encoding="utf-8") as f:
            json.dump({"format": SAVED_FORMAT, "window": ctx, "stride": stride, "ids": [int(t) for t in ids]}, f)
        os.replace(tmp, path)
        os.replace(tmp_meta, _meta_path(path))
    finally:
        for leftover in (tmp, tmp_meta):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return {"perplexity": math.exp(nll), "tokens": len(ids) - 1, "seconds": time.perf_counter() - t0}


def kl_divergence(model, reference, ids: List[int], ctx: int, stride: int,
                  progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """The figures llama.cpp's --kl-divergence prints, for `model` against `reference` (an
    edgemoe.Model of the same vocabulary, or SavedLogits)."""
    vocab = model.config["vocab"]
    ref_vocab = reference.vocab if isinstance(reference, SavedLogits) else reference.config["vocab"]
    if ref_vocab != vocab:
        raise FormatError(f"the reference has a vocabulary of {ref_vocab} tokens, the model {vocab}: "
                          f"not the same model")
    kl, agree, nll, ref_nll = [], 0, 0.0, 0.0
    t0 = time.perf_counter()
    for begin, first, end, logits in scored_windows(model, ids, ctx, stride, progress):
        if not isinstance(reference, SavedLogits):  # the same window through the reference
            ref_logits = reference.logits(ids[begin:end])[first - begin - 1:end - begin - 1]
        for r0, r1 in _row_blocks(end - first):
            q = log_softmax(logits[r0:r1])
            if isinstance(reference, SavedLogits):
                p = reference.rows_for(first + r0, first + r1)
            else:
                p = log_softmax(ref_logits[r0:r1])
            kl.append((np.exp(p) * (p - q)).sum(axis=-1))
            agree += int((p.argmax(-1) == q.argmax(-1)).sum())
            targets = np.arange(r1 - r0), ids[first + r0:first + r1]
            nll -= float(q[targets].sum())
            ref_nll -= float(p[targets].sum())
    kl_all = np.maximum(np.concatenate(kl), 0.0)  # float rounding can leave -1e-12 for identical rows
    n = len(kl_all)
    return {"tokens": n, "perplexity": math.exp(nll / n), "reference_perplexity": math.exp(ref_nll / n),
            "perplexity_ratio": math.exp((nll - ref_nll) / n), "kl_mean": float(kl_all.mean()),
            "kl_stderr": float(kl_all.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
            "kl_median": float(np.median(kl_all)), "kl_p99": float(np.percentile(kl_all, 99)),
            "kl_max": float(kl_all.max()), "top1_agreement": agree / n, "seconds": time.perf_counter() - t0}
