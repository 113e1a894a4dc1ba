"""Merging experts by their routing, `edgemoe convert --merge-experts FRACTION --calib TEXT`:
"Merge, then Compress" (MC-SMoE; Li et al., arXiv 2310.01334), as the authors' Mixtral code does it
(docs/EXPERT_PRUNING.md, part A §2).

Per layer the most frequently routed experts are the dominant ones; every other expert joins the
dominant expert whose router logits over the calibration tokens are most alike (cosine of the logit
columns); each member's neurons are permuted to match its dominant expert's (weight matching: a
linear assignment over gate, up and down together, which leaves the member's function unchanged);
the group becomes their mean weighted by routing frequency, per-expert biases included (gpt-oss's
gate and up biases permuted with their neurons). The router keeps every output: a token routed to a
member reaches the merged expert. Every layer keeps the same number (the container has one expert
count), where MC-SMoE spreads a global count over layers by frequency. LOSSY by construction.

With --low-rank R every member of a merged group gets back a function of its own: its aligned
projections minus the merged ones, truncated to rank R by SVD, are stored as resident factors the
engine adds to the merged expert for that router output (docs/EXPERT_PRUNING.md §2.6;
csrc/model/low_rank.h). A member whose difference has rank at most R is restored exactly.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..convert.expert_plan import ExpertPlan
from ..errors import EdgeMoEError
from ..format.model_config import moe_layers
from .calibration import CalibrationRun, SourceExperts
from .profile import expert_frequency

# Per-expert bias residents (csrc/model/config.h expert_bias): name, whether its rows follow the neurons.
BIASES = (("expert_gate_bias", True), ("expert_up_bias", True), ("expert_down_bias", False))


def merge_slots(cfg: Dict[str, Any], fraction: float) -> int:
    """Experts each MoE layer keeps when `fraction` of them merge into the others."""
    E = cfg["n_experts"]
    if not 0 < fraction < 1:
        raise EdgeMoEError(f"--merge-experts takes a fraction of each layer's experts between 0 and 1, got {fraction:g}")
    merged = int(round(E * fraction))
    if merged == 0:
        raise EdgeMoEError(f"--merge-experts {fraction:g} merges no expert of {E} (at least {1 / E:.3g} merges one)")
    if E - merged < cfg["top_k"]:
        raise EdgeMoEError(f"--merge-experts {fraction:g} leaves {E - merged} of {E} experts per layer, fewer than "
                           f"the {cfg['top_k']} each token is routed to (at most {(E - cfg['top_k']) / E:.3g})")
    return E - merged


def check_rank(cfg: Dict[str, Any], rank: int) -> None:
    """--low-rank R must be a positive rank that stores a correction in fewer values than the projection
    itself (R * (H + I) < H * I), of a model whose experts have no per-expert biases to correct."""
    H, I = cfg["hidden"], cfg["expert_intermediate"]
    if rank < 1:
        raise EdgeMoEError(f"--low-rank takes a rank of at least 1, got {rank}")
    if rank * (H + I) >= H * I:
        raise EdgeMoEError(f"--low-rank {rank} saves nothing: a rank-{rank} correction of a {I}x{H} projection holds "
                           f"{rank * (H + I)} values, the projection {H * I} (ranks up to {(H * I - 1) // (H + I)} save)")
    if cfg["expert_bias"]:
        raise EdgeMoEError("--low-rank corrects the merged experts' matrices, not the per-expert biases this model "
                           "has (gpt-oss): merge without it")


# The randomized SVD's extra sample columns and power iterations (Halko, Martinsson and Tropp, "Finding
# structure with randomness", 2011, §4.3-4.5; scikit-learn's randomized_svd defaults to 10 and 4-7).
OVERSAMPLE, POWER_ITERATIONS = 10, 4


def low_rank_factors(delta: np.ndarray, rank: int) -> Tuple[np.ndarray, np.ndarray]:
    """(A [out, R], B [R, in]) with A @ B the rank-R truncated SVD of delta [out, in] (A = U_R S_R,
    B = V_R^T), computed in the subspace a randomized range finder gives: exact for a delta of rank
    at most R + OVERSAMPLE; measured within 0.2 % of the best rank-R error on merged deltas of the
    demo model and on Gaussian 768 x 2048 matrices (the flattest spectrum, the hardest case) at
    R = 4 and 16, in 40 ms where a full SVD of such a projection takes 1.5-3 s, and Qwen3-30B-A3B
    has 18,000 of them. Seeded: the same factors on every run."""
    d = np.asarray(delta, np.float64)
    k = rank + OVERSAMPLE
    if k >= min(d.shape):  # the subspace would be the whole space: the plain SVD is as cheap
        u, sv, vt = np.linalg.svd(d, full_matrices=False)
    else:
        q = np.linalg.qr(d @ np.random.default_rng(0).standard_normal((d.shape[1], k)))[0]
        for _ in range(POWER_ITERATIONS):  # re-orthonormalised each way: the spectrum sharpens, rounding does not pile up
            q = np.linalg.qr(d @ np.linalg.qr(d.T @ q)[0])[0]
        u, sv, vt = np.linalg.svd(q.T @ d, full_matrices=False)
        u = q @ u
    return (u[:, :rank] * sv[:rank]).astype(np.float32), vt[:rank].astype(np.float32)


def number_corrections(groups: List[int], merged: Iterable[int]) -> List[int]:
    """Each expert's correction: 0, 1, ... in expert order for the members of the merged slots, -1 for
    an expert alone in its slot."""
    merged, out, n = set(merged), [], 0
    for slot in groups:
        out.append(n if slot in merged else -1)
        n += slot in merged
    return out


def layer_corrections(groups: Dict[int, "GroupMerge"], delta_of: List[int], rank: int) -> Dict[str, np.ndarray]:
    """A layer's correction factors, stacked in correction order (delta_of[e]: expert e's correction or
    -1) as the resident tensors gate_a [n*I, R], gate_b [n*R, H], up_a, up_b, down_a [n*H, R], down_b [n*R, I]."""
    factors: Dict[int, Dict[str, Tuple[np.ndarray, np.ndarray]]] = {}
    for group in groups.values():
        factors.update(group.corrections(rank))
    order = sorted((d, e) for e, d in enumerate(delta_of) if d >= 0)
    return {f"{part}_{ab}": np.concatenate([factors[e][part][i] for _, e in order])
            for part in ("gate", "up", "down") for i, ab in enumerate("ab")}


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


def alignment(dominant: Dict[str, np.ndarray], member: Dict[str, np.ndarray]) -> np.ndarray:
    """perm such that member's neuron perm[n] matches dominant's neuron n: the linear assignment
    maximising the summed products of matched gate rows, up rows and down columns."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise EdgeMoEError("--merge-experts aligns neurons with scipy: pip install 'edgemoe[reduce]'") from None
    cost = (np.asarray(dominant["gate"], np.float64) @ np.asarray(member["gate"], np.float64).T
            + np.asarray(dominant["up"], np.float64) @ np.asarray(member["up"], np.float64).T
            + np.asarray(dominant["down"], np.float64).T @ np.asarray(member["down"], np.float64))
    rows, perm = linear_sum_assignment(cost, maximize=True)
    assert np.array_equal(rows, np.arange(len(rows)))
    return perm


def permuted(w: Dict[str, np.ndarray], perm: np.ndarray) -> Dict[str, np.ndarray]:
    """An expert with its neurons reordered (gate and up rows, down columns): the same function."""
    return {"gate": w["gate"][perm], "up": w["up"][perm], "down": w["down"][:, perm]}


def align(dominant: Dict[str, np.ndarray], member: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """member's neurons permuted to match dominant's."""
    return permuted(member, alignment(dominant, member))


def weighted_merge(base: np.ndarray, others: List[Tuple[float, np.ndarray]]) -> np.ndarray:
    """base + sum share * (other - base) in float64: exactly base where every other equals it."""
    out = np.asarray(base, np.float64).copy()
    for share, other in others:
        out += share * (np.asarray(other, np.float64) - base)
    return out.astype(np.float32)


class GroupMerge:
    """One group of a layer: its dominant expert, its members (the dominant among them), their
    alignments to the dominant (computed once) and their shares of the merge (routing frequency
    over the group's; equal shares where the calibration text routed to none of them)."""

    def __init__(self, read: Callable[[int], Dict[str, np.ndarray]], dominant: int, members: List[int],
                 freq: np.ndarray):
        self.read, self.dominant, self.members = read, dominant, sorted(members)
        self.others = [e for e in members if e != dominant]
        total = float(sum(freq[e] for e in members))
        self.share = {e: (freq[e] / total if total > 0 else 1.0 / len(members)) for e in self.others}

    @functools.cached_property
    def perms(self) -> Dict[int, np.ndarray]:
        base = self.read(self.dominant)
        return {e: alignment(base, self.read(e)) for e in self.others}

    def aligned(self, e: int) -> Dict[str, np.ndarray]:
        """Member e as f32 matrices, its neurons permuted to match the dominant expert's."""
        w = {k: np.asarray(v, np.float32) for k, v in self.read(e).items()}
        return w if e == self.dominant else permuted(w, self.perms[e])

    def weights(self, aligned: Optional[Dict[int, Dict[str, np.ndarray]]] = None) -> Dict[str, np.ndarray]:
        """The merged expert, from the members as aligned() gives them (read here unless given)."""
        aligned = aligned or {e: self.aligned(e) for e in self.members}
        base = aligned[self.dominant]
        return {k: weighted_merge(base[k], [(self.share[e], aligned[e][k]) for e in self.others]) for k in base}

    def corrections(self, rank: int) -> Dict[int, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
        """Each member's rank-`rank` factors (A, B) of its aligned projections minus the merged ones."""
        aligned = {e: self.aligned(e) for e in self.members}  # each member read once
        merged = self.weights(aligned)
        return {e: {k: low_rank_factors(np.asarray(w, np.float64) - merged[k], rank) for k, w in aligned[e].items()}
                for e in self.members}

    def bias(self, rows: np.ndarray, follows_neurons: bool) -> np.ndarray:
        """The group's row of a per-expert bias rows [E, X] (permuted with the neurons where it follows them)."""
        base = np.asarray(rows[self.dominant], np.float32)
        return weighted_merge(base, [(self.share[e], rows[e][self.perms[e]] if follows_neurons else rows[e])
                                     for e in self.others])


def merge_group(members: Dict[int, Dict[str, np.ndarray]], dominant: int, freq: np.ndarray) -> Dict[str, np.ndarray]:
    """The frequency-weighted mean of a group's aligned experts, written W_d + sum (f_e / F)(W_e - W_d)
    so that members equal to the dominant expert leave it exactly as it is (F: the group's total
    frequency; an unused group takes the plain mean)."""
    return GroupMerge(members.__getitem__, dominant, list(members), freq).weights()


def merge_plan(source: SourceExperts, run: CalibrationRun, fraction: float, low_rank: int = 0) -> ExpertPlan:
    """MC-SMoE's grouping on the calibration run, as an ExpertPlan whose merged slots (and merged
    per-expert biases, and with low_rank every merged member's rank-low_rank correction) are computed
    when the converter asks (one group's experts in memory at a time)."""
    cfg = source.cfg
    keep = merge_slots(cfg, fraction)
    if low_rank:
        check_rank(cfg, low_rank)
    E, L = cfg["n_experts"], cfg["n_layers"]
    kept, expert_map, merged, resident_merge, expert_delta, corrections = {}, {}, {}, {}, {}, {}
    freq_all = expert_frequency(run.experts, E)
    groups_all: List[List[int]] = [[] for _ in range(L)]
    for l in moe_layers(cfg):
        freq = freq_all[l]
        slots, groups = group_experts(freq, logit_similarity(source.router_logits(l, run.hidden[:, l])), keep)
        kept[l], expert_map[l], groups_all[l] = slots, groups, groups
        layer_groups = {}
        for slot, d in enumerate(slots):
            members = [e for e in range(E) if groups[e] == slot]
            if len(members) > 1:
                layer_groups[slot] = GroupMerge(functools.partial(source.read, l), d, members, freq)
                merged[(l, slot)] = layer_groups[slot].weights
        if low_rank:  # corrections numbered in router-output order, for the members of merged groups
            expert_delta[l] = number_corrections(groups, layer_groups)
            corrections[l] = functools.partial(layer_corrections, layer_groups, expert_delta[l], low_rank)
        if cfg["expert_bias"]:
            for name, follows in BIASES:
                resident_merge[f"layers.{l}.{name}"] = (
                    lambda rows, slots=slots, layer_groups=layer_groups, follows=follows: np.stack(
                        [layer_groups[s].bias(rows, follows) if s in layer_groups else rows[d]
                         for s, d in enumerate(slots)]))
    report = {
        "method": "mc-smoe",
        "fraction": fraction,
        "calibration_tokens": len(run.ids),
        "allocation": "per_layer",
        "original_n_experts": E,
        "kept": [kept.get(l, []) for l in range(L)],  # each slot's dominant expert
        "groups": groups_all,  # the slot each original expert was merged into
        "freq": [np.round(freq_all[l], 6).tolist() if l in kept else [] for l in range(L)],
        "low_rank": low_rank or None,
    }
    return ExpertPlan(kept, report, expert_map, merged, resident_merge, low_rank, expert_delta or None, corrections)


def plan_merging(src: str, write_8bit: Callable[[str], Any], calib_text: str, fraction: float,
                 window: int = 256, max_tokens: int = 8192, threads: Optional[int] = None,
                 low_rank: Optional[int] = None) -> ExpertPlan:
    """The MC-SMoE merging of `src` at `fraction` on the calibration text (write_8bit as
    expert_reduce.plan_pruning's), each merged member with a rank-low_rank correction if given."""
    from .calibration import calibration_run, source_experts

    source = source_experts(src)
    merge_slots(source.cfg, fraction)  # a bad fraction or rank fails before the calibration pass
    if low_rank is not None:
        check_rank(source.cfg, low_rank)
    with calibration_run(write_8bit, calib_text, src, window, max_tokens, threads) as run:
        return merge_plan(source, run, fraction, low_rank or 0)
