"""Shrinking a model by its routing, `edgemoe convert --prune-experts FRACTION --calib TEXT`: REAP's
router-weighted expert-activation pruning (Lasby et al., arXiv 2510.13999; docs/EXPERT_PRUNING.md).
Merging (`--merge-experts`) is expert_merge.py.

For each MoE layer and routed expert j, over the calibration tokens X_j whose top-k holds j:

    S_j = (1/|X_j|) * sum over x in X_j of g_j(x) * ||f_j(x)||_2

f_j(x) the expert's output before its routing weight, g_j(x) the token's routing weight of j as a
share of its top-k weights (as the model applies them; the share drops routed_scaling_factor and
per-expert scales). A mean over the routed tokens, not a sum: an expert chosen rarely but strongly
keeps a high score. In every layer the same number of lowest-saliency experts goes (the container
has one expert count), within each group alike where the router picks groups first; an expert the
calibration text never routes to has saliency 0 and goes first. LOSSY by construction: the manifest
records the choice and every score, and bench/RESULTS.md the KL divergence it costs.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from ..convert.expert_plan import ExpertPlan, experts_to_remove
from ..format.model_config import moe_layers
from .calibration import CalibrationRun, SourceExperts
from .profile import expert_frequency, weight_shares

# Routed tokens replayed per expert: a random sample beyond (the mean is unbiased).
MAX_TOKENS_PER_EXPERT = 1024


def reap_saliency(source: SourceExperts, run: CalibrationRun, seed: int = 0,
                  progress: Optional[Callable[[], None]] = None) -> np.ndarray:
    """S [n_layers, n_experts] as in the module doc (0 in dense layers and for unrouted experts)."""
    cfg = source.cfg
    rng = np.random.default_rng(seed)
    S = np.zeros((cfg["n_layers"], cfg["n_experts"]))
    for l in moe_layers(cfg):
        share = weight_shares(run.experts[:, l], run.weights[:, l])
        for e in range(cfg["n_experts"]):
            if progress:
                progress()
            tok, rank = np.nonzero(run.experts[:, l] == e)
            if len(tok) == 0:
                continue
            if len(tok) > MAX_TOKENS_PER_EXPERT:
                keep = rng.choice(len(tok), MAX_TOKENS_PER_EXPERT, replace=False)
                tok, rank = tok[keep], rank[keep]
            norms = np.linalg.norm(source.output(l, e, run.hidden[tok, l]).astype(np.float64), axis=1)
            S[l, e] = float((share[tok, rank] * norms).mean())
    return S


def prune_plan(saliency: np.ndarray, cfg: Dict[str, Any], fraction: float) -> ExpertPlan:
    """Keep, in every MoE layer, all but the experts_to_remove(cfg, fraction) lowest-saliency experts
    (the same number from each group under grouped routing; ties keep the lower index)."""
    remove = experts_to_remove(cfg, fraction)
    E, G = cfg["n_experts"], cfg["n_group"]
    per = E // G
    kept = {}
    for l in moe_layers(cfg):
        keep = []
        for g in range(G):
            members = np.arange(g * per, (g + 1) * per)
            # highest saliency first, ties to the lower index; the group's last remove/G go
            order = members[np.lexsort((members, -saliency[l, members]))]
            keep += order[:per - remove // G].tolist()
        kept[l] = sorted(keep)
    return ExpertPlan(kept)


def pruning_report(plan: ExpertPlan, saliency: np.ndarray, run: CalibrationRun, cfg: Dict[str, Any],
                   fraction: float) -> Dict[str, Any]:
    """The manifest's "expert_reduction" entry: what was kept and why."""
    moe = set(moe_layers(cfg))
    freq = expert_frequency(run.experts, cfg["n_experts"])
    return {
        "method": "reap",
        "fraction": fraction,
        "calibration_tokens": len(run.ids),
        "allocation": "per_layer",
        "original_n_experts": cfg["n_experts"],
        "kept": [plan.kept.get(l, []) for l in range(cfg["n_layers"])],
        "saliency": [np.round(saliency[l], 9).tolist() if l in moe else [] for l in range(cfg["n_layers"])],
        "freq": [np.round(freq[l], 6).tolist() if l in moe else [] for l in range(cfg["n_layers"])],
    }


def plan_pruning(src: str, write_8bit: Callable[[str], Any], calib_text: str, fraction: float,
                 window: int = 256, max_tokens: int = 8192, threads: Optional[int] = None,
                 progress: bool = True) -> ExpertPlan:
    """The REAP pruning of `src` (a Hugging Face folder or a GGUF file) at `fraction` on the
    calibration text; write_8bit(path) converts src at 8 bits (the model that is calibrated)."""
    from tqdm import tqdm

    from .calibration import calibration_run, source_experts

    source = source_experts(src)
    cfg = source.cfg
    experts_to_remove(cfg, fraction)  # a bad fraction fails before the calibration pass
    with calibration_run(write_8bit, calib_text, src, window, max_tokens, threads) as run:
        with tqdm(total=len(moe_layers(cfg)) * cfg["n_experts"], desc="expert saliency", disable=not progress) as bar:
            saliency = reap_saliency(source, run, progress=lambda: bar.update(1))
        plan = prune_plan(saliency, cfg, fraction)
        return ExpertPlan(plan.kept, pruning_report(plan, saliency, run, cfg, fraction))

