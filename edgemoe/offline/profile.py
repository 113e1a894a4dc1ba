"""`edgemoe profile`: routing statistics from calibration text, stored in the container.

They drive the statistical and token predictors and seed the frequency-based
cache policies:
- freq[l][e]: share of tokens whose top-k in layer l includes expert e;
- next_layer[l][a][b]: P(b in the next MoE layer's top-k | a in layer l's top-k) (the next
  MoE layer is l+1 unless dense layers lie between; a dense layer's rows are zero, as in freq);
- token_experts[t][l]: the experts token t most often chose in layer l
  (-1 where the calibration text never contained t);
- token_shares[t][l]: how often t chose each of those experts (the token
  predictor's confidence, which `prefetch_min_confidence` gates at load time).
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..api import load
from ..format.container import update_manifest
from ..format.model_config import moe_layers
from ..errors import FormatError
from ..format.profile_record import encode_profile


def weight_shares(experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A routing record's weights [..., K] as shares of each token's top-k total, in float64: what
    routed_scaling_factor and per-expert scales drop out of. 0 for a choice left out (-1) and where
    a token's weights sum to 0 (a sigmoid router's scores all underflowed)."""
    w = np.where(experts >= 0, weights, 0.0).astype(np.float64)
    total = w.sum(axis=-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def expert_frequency(experts: np.ndarray, n_experts: int) -> np.ndarray:
    """freq [L, E] of a routing record's experts [T, L, K]: the share of tokens whose top-k in layer l
    holds expert e (0 throughout a dense layer)."""
    T, L, _ = experts.shape
    freq = np.zeros((L, n_experts))
    for l in range(L):
        chosen = experts[:, l][experts[:, l] >= 0]
        freq[l] = np.bincount(chosen, minlength=n_experts) / max(T, 1)
    return freq


def gather_routing(model, ids, window: int) -> np.ndarray:
    """Route every calibration token (windows from an empty context): experts [T, L, K]."""
    return model.route(ids, window).experts


def routing_statistics(ids: np.ndarray, experts: np.ndarray, n_experts: int, vocab: int,
                       moe: Sequence[int]) -> Dict[str, Any]:
    """experts [T, L, K]: the routing of every token (-1 in dense layers); moe: the MoE layers."""
    T, L, K = experts.shape
    # A dense layer's -1 entries go to a column past the experts, then dropped.
    onehot = np.zeros((T, L, n_experts + 1), dtype=np.float32)
    np.put_along_axis(onehot, np.where(experts >= 0, experts, n_experts).astype(np.int64), 1.0, axis=2)
    onehot = np.ascontiguousarray(onehot[:, :, :n_experts])
    freq = onehot.mean(axis=0)                                          # [L, E]
    joint = np.zeros((max(L - 1, 0), n_experts, n_experts), dtype=np.float32)
    for l, nxt in zip(moe, moe[1:]):                                    # each MoE layer with the next one
        joint[l] = np.einsum("ta,tb->ab", onehot[:, l], onehot[:, nxt])
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
    stats = routing_statistics(np.asarray(ids), experts, cfg["n_experts"], cfg["vocab"], moe_layers(cfg))
    profile = encode_profile(stats, ids, window, source)
    del model
    update_manifest(path, {"profile": profile})
    return {"tokens": len(ids), "seconds": time.perf_counter() - t0,
            "distinct_tokens": len(np.unique(np.asarray(ids)))}
