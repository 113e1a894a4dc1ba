"""`edgemoe perplexity MODEL FILE --kl-divergence REFERENCE`: how far a conversion's predictions
are from a reference's, token by token, as llama.cpp's `perplexity --kl-divergence` reports it.

The reference is a higher-precision container of the same model (evaluated window by window
beside MODEL), or the log-probabilities saved by `--save-logits` from an earlier run over the same
text, window and stride (so the reference never has to be loaded at the same time). Both
models see the same windows (edgemoe/offline/perplexity.py), so every scored token gets:
KL(reference || model) over the whole vocabulary, whether the two agree on the most likely
token, and each one's -log p of the text's token.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import FormatError
from .perplexity import scored_windows

SAVED_FORMAT = 1
# Saved log-probabilities: 16-bit codes over [FLOOR, 0] nats (resolution 0.0004 nats, where float16
# would keep 0.008 at -10); below the floor (p < 4e-11) a probability adds nothing to a KL sum.
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


class StoredLogits:
    """A reference's log-probabilities as 16-bit codes [tokens - 1, vocab] (encode_logprobs), in
    memory or mapped from a file, served window by window."""

    def __init__(self, rows: np.ndarray):
        self.rows, self.vocab = rows, rows.shape[1]

    def rows_for(self, first: int, end: int) -> np.ndarray:
        """Log-probabilities predicting tokens first .. end-1."""
        return decode_logprobs(self.rows[first - 1:end - 1])


def record_logits(model, ids: List[int], ctx: int, stride: int, rows: np.ndarray,
                  progress: Optional[Callable[[int, int], None]] = None) -> float:
    """Fill rows [len(ids) - 1, vocab] (uint16, e.g. a memory map) with `model`'s encoded
    log-probabilities of every scored token; returns its mean -log p of the text's tokens."""
    nll = 0.0
    for _, first, end, logits in scored_windows(model, ids, ctx, stride, progress):
        lp = log_softmax(logits)
        rows[first - 1:end - 1] = encode_logprobs(lp)
        nll -= float(lp[np.arange(end - first), ids[first:end]].sum())
    return nll / (len(ids) - 1)


class SavedLogits(StoredLogits):
    """A reference's log-probabilities saved by save_logits(), served window by window."""

    def __init__(self, path: str, ids: List[int], ctx: int, stride: int):
        try:
            data = np.load(path, allow_pickle=False)
            meta = {k: int(data[k]) for k in ("format", "window", "stride")}
            saved_ids, self.rows = data["ids"], data["logprobs"]
        except (OSError, ValueError, KeyError) as e:
            raise FormatError(f"{path}: not logits saved by `edgemoe perplexity --save-logits` ({e})") from None
        if meta["format"] != SAVED_FORMAT:
            raise FormatError(f"{path}: saved logits of format {meta['format']}, this edgemoe reads {SAVED_FORMAT}")
        if (meta["window"], meta["stride"]) != (ctx, stride) or saved_ids.tolist() != list(ids):
            raise FormatError(f"{path}: saved over other tokens or windows (window {meta['window']}, stride "
                              f"{meta['stride']}, {len(saved_ids)} tokens; this run: window {ctx}, stride {stride}, "
                              f"{len(ids)} tokens): use the same text, --max-tokens, --window and --stride")
        if self.rows.dtype != np.uint16 or self.rows.ndim != 2 or len(self.rows) != len(ids) - 1:
            raise FormatError(f"{path}: {self.rows.shape} log-probabilities for {len(ids)} tokens")
        self.vocab = self.rows.shape[1]


def save_logits(model, ids: List[int], ctx: int, stride: int, path: str,
                progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """Write `model`'s log-probabilities for every scored token of `ids` to `path` (.npz, 16-bit
    codes: 2 bytes per vocabulary entry per token), written to a temporary name and renamed when
    whole."""
    rows = np.empty((len(ids) - 1, model.config["vocab"]), np.uint16)
    t0 = time.perf_counter()
    nll = record_logits(model, ids, ctx, stride, rows, progress)
    tmp = path + ".partial.npz"
    try:
        np.savez(tmp, format=SAVED_FORMAT, window=ctx, stride=stride, ids=np.asarray(ids, np.int64), logprobs=rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"perplexity": math.exp(nll), "tokens": len(ids) - 1, "seconds": time.perf_counter() - t0}


def kl_divergence(model, reference, ids: List[int], ctx: int, stride: int,
                  progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, float]:
    """The figures llama.cpp's --kl-divergence prints, for `model` against `reference` (an
    edgemoe.Model of the same vocabulary, or StoredLogits)."""
    vocab = model.config["vocab"]
    ref_vocab = reference.vocab if isinstance(reference, StoredLogits) else reference.config["vocab"]
    if ref_vocab != vocab:
        raise FormatError(f"the reference has a vocabulary of {ref_vocab} tokens, the model {vocab}: "
                          f"not the same model")
    kl, agree, nll, ref_nll = [], 0, 0.0, 0.0
    t0 = time.perf_counter()
    for begin, first, end, logits in scored_windows(model, ids, ctx, stride, progress):
        q = log_softmax(logits)
        if isinstance(reference, StoredLogits):
            p = reference.rows_for(first, end)
        else:  # the same window through the reference
            p = log_softmax(reference.logits(ids[begin:end])[first - begin - 1:end - begin - 1])
        kl.append((np.exp(p) * (p - q)).sum(axis=-1))
        agree += int((p.argmax(-1) == q.argmax(-1)).sum())
        targets = np.arange(end - first), ids[first:end]
        nll -= float(q[targets].sum())
        ref_nll -= float(p[targets].sum())
    kl_all = np.maximum(np.concatenate(kl), 0.0)  # float rounding can leave -1e-12 for identical rows
    n = len(kl_all)
    return {"tokens": n, "perplexity": math.exp(nll / n), "reference_perplexity": math.exp(ref_nll / n),
            "perplexity_ratio": math.exp((nll - ref_nll) / n), "kl_mean": float(kl_all.mean()),
            "kl_stderr": float(kl_all.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
            "kl_median": float(np.median(kl_all)), "kl_p99": float(np.percentile(kl_all, 99)),
            "kl_max": float(kl_all.max()), "top1_agreement": agree / n, "seconds": time.perf_counter() - t0}
