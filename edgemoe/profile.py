"""`edgemoe profile`: routing statistics from calibration text, stored in the container.

They drive the statistical and token predictors and seed the frequency-based
cache policies:
- freq[l][e]: share of tokens whose top-k in layer l includes expert e;
- next_layer[l][a][b]: P(b in layer l+1's top-k | a in layer l's top-k);
- token_experts[t][l]: the experts token t most often chose in layer l
  (-1 where the calibration text never contained t);
- token_shares[t][l]: how often t chose each of those experts (the token
  predictor's confidence, which `prefetch_min_confidence` gates at load time).
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .container import update_manifest
from .errors import FormatError

PROFILE_VERSION = 1


def gather_routing(model, ids, window: int) -> np.ndarray:
    """Route every calibration token (windows from an empty context): experts [T, L, K]."""
    cfg = model.config
    engine = model._engine
    engine.take_trace(cfg["n_layers"], cfg["top_k"])
    engine.set_tracing(True)
    try:
        for start in range(0, len(ids), window):
            chunk = ids[start:start + window]
            if chunk:
                model.logits(chunk)
        _, experts, _, _, _ = engine.take_trace(cfg["n_layers"], cfg["top_k"])
    finally:
        engine.set_tracing(False)
    return experts


def routing_statistics(ids: np.ndarray, experts: np.ndarray, n_experts: int, vocab: int) -> Dict[str, Any]:
    T, L, K = experts.shape
    onehot = np.zeros((T, L, n_experts), dtype=np.float32)
    np.put_along_axis(onehot, experts.astype(np.int64), 1.0, axis=2)
    freq = onehot.mean(axis=0)                                          # [L, E]
    joint = np.einsum("tla,tlb->lab", onehot[:, :-1], onehot[:, 1:])    # [L-1, E, E]
    seen = onehot[:, :-1].sum(axis=0)[:, :, None]
    next_layer = np.divide(joint, seen, out=np.zeros_like(joint), where=seen > 0)
    counts = np.zeros((vocab, L, n_experts), dtype=np.float32)
    np.add.at(counts, ids, onehot)
    order = np.argsort(-counts, axis=2, kind="stable")[:, :, :K]        # most frequent first
    occurrences = np.bincount(ids, minlength=vocab).astype(np.float32)[:, None, None]
    share = np.take_along_axis(counts, order, axis=2) / np.maximum(occurrences, 1)
    token_experts = np.where(share > 0, order, -1).astype(np.int32)
    return {"freq": freq, "next_layer": next_layer, "token_experts": token_experts,
            "token_shares": np.where(share > 0, share, 0.0).astype(np.float32)}


def profile_container(path: str, text: str, window: int = 256, max_tokens: Optional[int] = None,
                      source: str = "") -> Dict[str, Any]:
    """Profile the container at `path` on `text` and store the statistics in it; returns a summary."""
    from .api import load

    model = load(path, predictor="none")
    cfg = model.config
    ids = model.tokenize(text, add_special_tokens=False)
    if max_tokens:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise FormatError("the calibration text is too short to profile (fewer than 2 tokens)")
    window = min(window, model.ctx_size)
    t0 = time.perf_counter()
    experts = gather_routing(model, ids, window)
    stats = routing_statistics(np.asarray(ids), experts, cfg["n_experts"], cfg["vocab"])
    seen = np.unique(np.asarray(ids))
    profile = {
        "version": PROFILE_VERSION,
        "source": source,
        "tokens": len(ids),
        "window": window,
        "freq": np.round(stats["freq"], 6).tolist(),
        "next_layer": np.round(stats["next_layer"], 5).tolist(),
        # sparse: only tokens that occurred, {id: [[experts of layer 0], ...]}
        "token_experts": {str(t): stats["token_experts"][t].tolist() for t in seen},
        "token_shares": {str(t): np.round(stats["token_shares"][t], 3).tolist() for t in seen},
    }
    del model
    update_manifest(path, {"profile": profile})
    return {"tokens": len(ids), "seconds": time.perf_counter() - t0,
            "distinct_tokens": len(profile["token_experts"])}


def profile_arrays(manifest: Dict[str, Any]) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The stored profile as the engine's arrays (freq, next_layer, token_experts,
    token_shares), or None; FormatError if it is malformed. A profile written
    before token shares were stored counts every token expert as certain."""
    p = manifest.get("profile")
    if p is None:
        return None
    cfg = manifest["config"]
    L, E, K, V = cfg["n_layers"], cfg["n_experts"], cfg["top_k"], cfg["vocab"]
    try:
        if p.get("version") != PROFILE_VERSION:
            raise ValueError(f"profile version {p.get('version')}")
        freq = np.asarray(p["freq"], dtype=np.float32).reshape(L, E)
        next_layer = np.asarray(p["next_layer"], dtype=np.float32).reshape(max(L - 1, 0), E, E)
        tokens = np.full((V, L, K), -1, dtype=np.int32)
        for t, rows in p["token_experts"].items():
            tokens[int(t)] = np.asarray(rows, dtype=np.int32).reshape(L, K)
        shares = (tokens >= 0).astype(np.float32)
        for t, rows in p.get("token_shares", {}).items():
            shares[int(t)] = np.asarray(rows, dtype=np.float32).reshape(L, K)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise FormatError(f"the container's routing profile is malformed ({e}); run `edgemoe profile` again") from None
    if (tokens.min() < -1 or tokens.max() >= E or not np.isfinite(freq).all() or not np.isfinite(next_layer).all()
            or not np.isfinite(shares).all()):
        raise FormatError("the container's routing profile is malformed; run `edgemoe profile` again")
    return freq, next_layer, tokens, shares
