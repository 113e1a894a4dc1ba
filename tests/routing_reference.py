"""Routing in numpy, as transformers' routers compute it, from a container's f32 router tensors and
the hidden states the engine recorded: the independent reference the expert-mask and
expert-pruning tests hold the engine's routing (csrc/model/moe.cpp) to.

A masked expert's logit (softmax routers) or choice score (sigmoid routers) is -inf, which is what
removing its router row computes (docs/EXPERT_PRUNING.md, part A §3)."""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

# Where the k-th and (k+1)-th choice scores are closer than this, the engine's f32 router (another
# summation order) may pick either: such tokens are left out of comparisons.
TIE_GAP = 1e-4


def resident(container, name: str) -> np.ndarray:
    """An f32 resident tensor of a container, read from its file."""
    t = container.tensors[name]
    assert t["type"] == "f32", f"{name} is {t['type']}, not f32"
    with open(container.path, "rb") as f:
        f.seek(container.sections["resident"]["offset"] + t["offset"])
        data = np.frombuffer(f.read(t["nbytes"]), dtype="<f4")
    return data.reshape(t["shape"]).copy()


def router_logits(container, hidden: np.ndarray, layer: int) -> np.ndarray:
    """[T, E] router logits of the residual stream hidden [T, H] entering layer's MoE block."""
    cfg = container.config
    x = hidden.astype(np.float64)
    x = x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + cfg["rms_norm_eps"])
    x = x * resident(container, f"layers.{layer}.ffn_norm").reshape(-1)
    z = x @ resident(container, f"layers.{layer}.router").astype(np.float64).T
    if cfg["router_bias"]:
        z = z + resident(container, f"layers.{layer}.router_bias").reshape(-1)
    return z


def _limit_to_groups(choice: np.ndarray, cfg) -> np.ndarray:
    """DeepSeek's group-limited choice: groups outside the topk_group best get -inf."""
    T, E = choice.shape
    G = cfg["n_group"]
    grouped = choice.reshape(T, G, E // G)
    if cfg["group_score"] == "max":
        score = grouped.max(-1)
    else:
        score = np.sort(grouped, axis=-1)[..., -2:].sum(-1)
    keep = np.argsort(-score, axis=-1, kind="stable")[:, :cfg["topk_group"]]
    allowed = np.zeros((T, G), bool)
    np.put_along_axis(allowed, keep, True, axis=-1)
    return np.where(np.repeat(allowed, E // G, axis=1), choice, -np.inf)


def route(container, hidden: np.ndarray, layer: int, masked: Iterable[int] = ()) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(experts [T, K] ascending, their weights [T, K], decidable [T]): the routing of hidden [T, H]
    in `layer` with the experts `masked` left out; decidable is False where the choice is a near tie."""
    cfg = container.config
    K = cfg["top_k"]
    z = router_logits(container, hidden, layer)
    off = np.zeros(z.shape[1], bool)
    off[list(masked)] = True
    if cfg["routing"] == "sigmoid":
        score = 1.0 / (1.0 + np.exp(-z))
        choice = score + (resident(container, f"layers.{layer}.router_correction_bias").reshape(-1)
                          if cfg["router_correction_bias"] else 0.0)
        choice = np.where(off, -np.inf, choice)
    else:
        z = np.where(off, -np.inf, z)
        if cfg["routing"] == "softmax":
            score = np.exp(z - z.max(-1, keepdims=True))
            score /= score.sum(-1, keepdims=True)
        else:  # topk_softmax: the choice by logit, a softmax over the chosen
            score = z
        choice = np.where(off, -np.inf, score)
    if cfg["n_group"] > 1:
        choice = _limit_to_groups(choice, cfg)
    order = np.argsort(-choice, axis=-1, kind="stable")
    idx = order[:, :K]
    ranked = np.take_along_axis(choice, order[:, :K + 1], axis=-1)
    decidable = (ranked[:, K - 1] - ranked[:, K] > TIE_GAP) if ranked.shape[1] > K else np.ones(len(z), bool)
    w = np.take_along_axis(score, idx, axis=-1)
    if cfg["routing"] == "topk_softmax":
        w = np.exp(w - w.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
    elif cfg["norm_topk_prob"]:
        w = w / w.sum(-1, keepdims=True)
    w = w * cfg["routed_scaling_factor"]
    sort = np.argsort(idx, axis=-1)
    return np.take_along_axis(idx, sort, -1), np.take_along_axis(w, sort, -1), decidable


def by_expert(experts: np.ndarray, weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The engine's routing record [T, K] with each token's choices in ascending expert order."""
    sort = np.argsort(experts, axis=-1)
    return np.take_along_axis(experts, sort, -1), np.take_along_axis(weights, sort, -1)
