"""`edgemoe experts MODEL --text FILE [--baseline FILE]`: which experts a text engages more than a
baseline text does, per MoE layer (expert attribution, after UOE: the knowledge a family of
prompts relies on sits in the experts its tokens engage most), so a user can find them and mask
them with --disable-expert.

From one routing pass over each text, per layer and expert, with each token's routing weights taken
as shares of their sum (so routed_scaling_factor and per-expert scales drop out):

    share  = (1/T) * sum over the text's T tokens of the expert's share (0 where not chosen)
    count  = the tokens whose top-k holds the expert
    lift   = (share_text + eps) / (share_baseline + eps),  eps = 1 / (10 * T_baseline * top_k)
    excess = share_text - share_baseline

Without a baseline text the baseline is uniform routing (share 1/E). An expert is reported when its
count and lift reach the thresholds, most excess first: lift alone would rank experts that are rare
in both texts first. The formula is this project's (docs/EXPERT_PRUNING.md, part A §4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import EdgeMoEError
from ..format.model_config import moe_layers
from ..options import format_expert_pairs
from .profile import weight_shares


@dataclass
class Engagement:
    """How a text engages each expert: share and count [n_layers, n_experts] (zero in dense layers)."""
    share: np.ndarray
    count: np.ndarray
    tokens: int


def engagement(experts: np.ndarray, weights: np.ndarray, n_experts: int) -> Engagement:
    """From a routing record's experts and weights [T, L, K] (-1 where a layer has no experts)."""
    T, L, _ = experts.shape
    routed = experts >= 0
    shares = weight_shares(experts, weights)
    share = np.zeros((L, n_experts))
    count = np.zeros((L, n_experts), dtype=np.int64)
    for l in range(L):
        e, s = experts[:, l][routed[:, l]], shares[:, l][routed[:, l]]
        np.add.at(share[l], e, s)
        np.add.at(count[l], e, 1)
    return Engagement(share / max(T, 1), count, T)


def text_engagement(model, text: str, window: int = 256, max_tokens: Optional[int] = None) -> Engagement:
    ids = model.tokenize(text, add_special_tokens=False)[:max_tokens]
    if not ids:
        raise EdgeMoEError("the text has no tokens")
    record = model.route(ids, min(window, model.ctx_size))
    return engagement(record.experts, record.weights, model.config["n_experts"])


def attribute(text: Engagement, baseline: Optional[Engagement], cfg: Dict[str, Any], min_count: int = 8,
              min_lift: float = 2.0, top: int = 4) -> List[Dict[str, Any]]:
    """Per MoE layer: {layer, experts: [{expert, share, baseline, lift, excess, count}]} of the experts
    the text engages more than the baseline, most excess first, at most `top` of them."""
    E, K = cfg["n_experts"], cfg["top_k"]
    if baseline is None:
        base_share, base_tokens = np.full_like(text.share, 1.0 / E), text.tokens
    else:
        base_share, base_tokens = baseline.share, baseline.tokens
    eps = 1.0 / (10 * base_tokens * K)
    out = []
    for l in moe_layers(cfg):
        lift = (text.share[l] + eps) / (base_share[l] + eps)
        excess = text.share[l] - base_share[l]
        # at most n_experts - top_k: the mask the report offers must leave a token its top-k
        chosen = [e for e in np.argsort(-excess, kind="stable")
                  if text.count[l, e] >= min_count and lift[e] >= min_lift][:min(top, E - K)]
        out.append({"layer": l, "experts": [
            {"expert": int(e), "share": float(text.share[l, e]), "baseline": float(base_share[l, e]),
             "lift": float(lift[e]), "excess": float(excess[e]), "count": int(text.count[l, e])} for e in chosen]})
    return out


def disable_flag(report: Sequence[Dict[str, Any]]) -> str:
    """The --disable-expert value that masks every reported expert."""
    return format_expert_pairs([(row["layer"], x["expert"]) for row in report for x in row["experts"]])


def format_report(report: Sequence[Dict[str, Any]], baseline_name: str) -> str:
    lines = []
    for row in report:
        if not row["experts"]:
            lines.append(f"layer {row['layer']}: none")
            continue
        lines.append(f"layer {row['layer']}:  expert    share  {baseline_name:>8}    lift  tokens")
        for x in row["experts"]:
            lines.append(f"{'':>10}{x['expert']:>7}  {x['share']:7.4f}  {x['baseline']:8.4f}  "
                         f"{x['lift']:6.2f}  {x['count']:6d}")
    flag = disable_flag(report)
    lines.append(f"to mask them (LOSSY; grouped routers may refuse some, naming why): --disable-expert {flag}" if flag else
                 "no expert is engaged past the thresholds (--min-count, --min-lift)")
    return "\n".join(lines)
