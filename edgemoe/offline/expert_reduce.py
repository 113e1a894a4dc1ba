"""Shrinking a model by its routing: `edgemoe convert --prune-experts FRACTION --calib TEXT`, REAP's
router-weighted expert-activation pruning (Lasby et al., arXiv 2510.13999; docs/EXPERT_PRUNING.md), and
`--merge-experts FRACTION`, MC-SMoE's merging (below).

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

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..convert.expert_plan import ExpertPlan, experts_to_remove
from ..errors import EdgeMoEError
from ..format.model_config import moe_layers
from .calibration import CalibrationRun, SourceExperts

# Routed tokens replayed per expert: a random sample beyond (the mean is unbiased).
MAX_TOKENS_PER_EXPERT = 1024


def reap_saliency(source: SourceExperts, run: CalibrationRun, seed: int = 0,
                  progress: Optional[Callable[[], None]] = None) -> np.ndarray:
    """S [n_layers, n_experts] as in the module doc (0 in dense layers and for unrouted experts)."""
    cfg = source.cfg
    rng = np.random.default_rng(seed)
    S = np.zeros((cfg["n_layers"], cfg["n_experts"]))
    for l in moe_layers(cfg):
        w = run.weights[:, l].astype(np.float64)
        share = w / w.sum(axis=1, keepdims=True)
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
    freq = np.zeros((cfg["n_layers"], cfg["n_experts"]))
    for l in moe:
        freq[l] = np.bincount(run.experts[:, l].reshape(-1), minlength=cfg["n_experts"]) / len(run.ids)
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


# ---------------------------------------------------------------- merging (MC-SMoE)
#
# "Merge, then Compress" (Li et al., arXiv 2310.01334), as the authors' Mixtral code does it
# (docs/EXPERT_PRUNING.md, part A §2): per layer the most frequently routed experts are the
# dominant ones; every other expert joins the dominant expert whose router logits over the
# calibration tokens are most alike (cosine of the logit columns); each member's neurons are
# permuted to match its dominant expert's (weight matching: a linear assignment over gate, up and
# down together, which leaves the member's function unchanged); the group becomes their mean
# weighted by routing frequency. The router keeps every output: a token routed to a member reaches
# the merged expert. Every layer keeps the same number (the container has one expert count), where
# MC-SMoE spreads a global count over layers by frequency.


def merge_slots(cfg: Dict[str, Any], fraction: float) -> int:
    """Experts each MoE layer keeps when `fraction` of them merge into the others."""
    E = cfg["n_experts"]
    if not 0 < fraction < 1:
        raise EdgeMoEError(f"--merge-experts takes a fraction of each layer's experts between 0 and 1, got {fraction:g}")
    merged = int(round(E * fraction))
    if merged == 0:
        raise EdgeMoEError(f"--merge-experts {fraction:g} merges no expert of {E} (at least {1 / E:.3g} merges one)")
    if merged >= E:
        raise EdgeMoEError(f"--merge-experts {fraction:g} would merge all {E} experts of a layer")
    return E - merged


def check_mergeable(cfg: Dict[str, Any]) -> None:
    if cfg["expert_bias"]:
        raise EdgeMoEError(f"--merge-experts does not merge {cfg['architecture']}'s per-expert biases yet; "
                           "prune instead (--prune-experts)")
    if cfg["expert_norms"] or cfg["router_expert_scale"]:
        raise EdgeMoEError(f"--merge-experts does not replay {cfg['architecture']}'s router (its own norm and "
                           "per-expert scales); prune instead (--prune-experts)")


def logit_similarity(z: np.ndarray) -> np.ndarray:
    """MC-SMoE's router-logit similarity [E, E]: (cosine of the experts' logit columns of z [T, E] + 1) / 2."""
    unit = z / np.maximum(np.linalg.norm(z, axis=0, keepdims=True), 1e-30)
    return (unit.T @ unit + 1) / 2


def group_experts(freq: np.ndarray, similarity: np.ndarray, keep: int) -> Tuple[List[int], List[int]]:
    """(dominant experts ascending, slot of every expert): the `keep` most frequent experts (ties to
    the lower index) are the dominant ones; every other expert joins its most similar dominant one."""
    E = len(freq)
    dominant = np.lexsort((np.arange(E), -freq))[:keep]
    slots = sorted(dominant.tolist())
    slot_of = {d: i for i, d in enumerate(slots)}
    by_rank = dominant.tolist()  # most frequent first: a tie in similarity goes to the more frequent
    groups = []
    for e in range(E):
        if e in slot_of:
            groups.append(slot_of[e])
        else:
            sims = similarity[e, by_rank]
            groups.append(slot_of[by_rank[int(np.argmax(sims))]])
    return slots, groups


def align(dominant: Dict[str, np.ndarray], member: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """member's neurons permuted to match dominant's (gate and up rows, down columns together), by a
    linear assignment maximising the summed products of matched gate rows, up rows and down columns."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise EdgeMoEError("--merge-experts aligns neurons with scipy: pip install 'edgemoe[reduce]'") from None
    cost = (dominant["gate"].astype(np.float64) @ member["gate"].astype(np.float64).T
            + dominant["up"].astype(np.float64) @ member["up"].astype(np.float64).T
            + dominant["down"].astype(np.float64).T @ member["down"].astype(np.float64))
    rows, perm = linear_sum_assignment(cost, maximize=True)
    assert np.array_equal(rows, np.arange(len(rows)))
    return {"gate": member["gate"][perm], "up": member["up"][perm], "down": member["down"][:, perm]}


def merge_group(members: Dict[int, Dict[str, np.ndarray]], dominant: int, freq: np.ndarray) -> Dict[str, np.ndarray]:
    """The frequency-weighted mean of a group's aligned experts, written W_d + sum (f_e / F)(W_e - W_d)
    so that members equal to the dominant expert leave it exactly as it is (F: the group's total
    frequency; an unused group takes the plain mean)."""
    base = {k: np.asarray(v, np.float32) for k, v in members[dominant].items()}
    total = float(sum(freq[e] for e in members))
    out = {k: v.astype(np.float64) for k, v in base.items()}
    for e, w in members.items():
        if e == dominant:
            continue
        aligned = align(base, {k: np.asarray(v, np.float32) for k, v in w.items()})
        share = freq[e] / total if total > 0 else 1.0 / len(members)
        for k in out:
            out[k] += share * (aligned[k].astype(np.float64) - base[k])
    return {k: v.astype(np.float32) for k, v in out.items()}


def merge_plan(source: SourceExperts, run: CalibrationRun, fraction: float) -> ExpertPlan:
    """MC-SMoE's grouping on the calibration run, as an ExpertPlan whose merged slots compute their
    weights when the converter asks (one group in memory at a time)."""
    cfg = source.cfg
    check_mergeable(cfg)
    keep = merge_slots(cfg, fraction)
    E = cfg["n_experts"]
    kept, expert_map, merged = {}, {}, {}
    freq_all = np.zeros((cfg["n_layers"], E))
    dominants, groups_all = [[] for _ in range(cfg["n_layers"])], [[] for _ in range(cfg["n_layers"])]
    for l in moe_layers(cfg):
        freq = np.bincount(run.experts[:, l].reshape(-1), minlength=E) / len(run.ids)
        slots, groups = group_experts(freq, logit_similarity(source.router_logits(l, run.hidden[:, l])), keep)
        kept[l], expert_map[l] = slots, groups
        freq_all[l], dominants[l], groups_all[l] = freq, slots, groups
        for slot, d in enumerate(slots):
            members = [e for e in range(E) if groups[e] == slot]
            if len(members) > 1:
                merged[(l, slot)] = (lambda l=l, d=d, members=members, freq=freq:
                                     merge_group({e: source.read(l, e) for e in members}, d, freq))
    report = {
        "method": "mc-smoe",
        "fraction": fraction,
        "calibration_tokens": len(run.ids),
        "allocation": "per_layer",
        "original_n_experts": E,
        "kept": [kept.get(l, []) for l in range(cfg["n_layers"])],  # each slot's dominant expert
        "groups": groups_all,  # the slot each original expert was merged into
        "freq": [np.round(freq_all[l], 6).tolist() if l in kept else [] for l in range(cfg["n_layers"])],
    }
    return ExpertPlan(kept, report, expert_map, merged)


def plan_merging(src: str, write_8bit: Callable[[str], Any], calib_text: str, fraction: float,
                 window: int = 256, max_tokens: int = 8192, threads: Optional[int] = None) -> ExpertPlan:
    """The MC-SMoE merging of `src` at `fraction` on the calibration text (write_8bit as plan_pruning's)."""
    from .calibration import calibration_run, source_experts

    source = source_experts(src)
    check_mergeable(source.cfg)
    merge_slots(source.cfg, fraction)  # a bad fraction fails before the calibration pass
    with calibration_run(write_8bit, calib_text, src, window, max_tokens, threads) as run:
        return merge_plan(source, run, fraction)
