"""Which of a checkpoint's routed experts a container keeps, and in which slots: what expert pruning
and merging (`edgemoe convert --prune-experts / --merge-experts`, edgemoe/offline/expert_reduce.py)
hand the converter.

Pruning: slot i of layer l holds the checkpoint's expert kept[l][i] (ascending, so grouped routers
keep their groups in order); the tensors indexed by expert (the router's rows, its biases, Gemma 4's
per-expert scales) keep the same rows. The container is then exactly the original model with the
other experts masked (csrc/model/expert_mask.h; docs/EXPERT_PRUNING.md, part A §3).

Merging: the router keeps every output; expert_map[l][j] is the slot output j reaches (config
router_experts and expert_map, csrc/model/config.h); slot i holds the merge of its group, computed by
merged[(l, i)]() where the group has more than its dominant expert kept[l][i]. With low-rank
corrections (--low-rank R) each router output of a merged group also names its correction,
expert_delta[l][j] (-1: none), whose factors corrections[l]() computes for the whole layer as the
resident tensors layers.{l}.delta_{gate,up,down}_{a,b} (csrc/model/low_rank.h)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import _core
from ..errors import EdgeMoEError
from ..format.model_config import moe_layers
from .arch_base import LOW_RANK, Resident

# Resident tensors of a MoE layer with one row (or entry) per routed expert: layers.{l}.<name>.
# A merged layer's correction factors (csrc/model/weights.h LowRankFactors): layers.{l}.delta_<name>.
CORRECTION_RESIDENTS = ("gate_a", "gate_b", "up_a", "up_b", "down_a", "down_b")
PER_EXPERT_RESIDENTS = ("router", "router_bias", "router_correction_bias", "router_expert_scale",
                        "expert_gate_bias", "expert_up_bias", "expert_down_bias")


def experts_to_remove(cfg: Dict[str, Any], fraction: float, flag: str = "--prune-experts") -> int:
    """How many experts each MoE layer loses at `fraction` (rounded), or an EdgeMoEError naming why the
    fraction cannot be taken: it leaves fewer experts than a token is routed to, or, with grouped
    routing, it does not split evenly over the groups or leaves a group unable to route as before."""
    E, K, G = cfg["n_experts"], cfg["top_k"], cfg["n_group"]
    if not 0 < fraction < 1:
        raise EdgeMoEError(f"{flag} takes a fraction of each layer's experts between 0 and 1, got {fraction:g}")
    remove = int(round(E * fraction))
    if remove == 0:
        raise EdgeMoEError(f"{flag} {fraction:g} removes no expert of {E} (at least {1 / E:.3g} removes one)")
    if E - remove < K:
        raise EdgeMoEError(f"{flag} {fraction:g} leaves {E - remove} of {E} experts per layer, fewer than the {K} "
                           f"each token is routed to (at most {(E - K) / E:.3g})")
    if G > 1:
        per = E // G
        valid = [r / E for r in range(G, E, G) if _groups_can_route(cfg, per - r // G)]
        hint = f" (fractions that can: {', '.join(f'{v:.4g}' for v in valid)})" if valid else ""
        if remove % G:
            raise EdgeMoEError(f"{flag} {fraction:g} removes {remove} experts per layer, which the router's {G} "
                               f"groups cannot share evenly; pruned groups must shrink alike to route as "
                               f"before{hint}")
        if not _groups_can_route(cfg, per - remove // G):
            raise EdgeMoEError(f"{flag} {fraction:g} leaves groups of {per - remove // G}, too few for the "
                               f"router's choice of {K} experts in its {cfg['topk_group']} best groups"
                               f"{' scored by their best two' if cfg['group_score'] == 'top2_sum' else ''}{hint}")
    return remove


def _groups_can_route(cfg: Dict[str, Any], per: int) -> bool:
    """Groups of `per` experts route as the masked original does: the top-k fits in the kept groups,
    and top-2-sum group scores still have two members."""
    two = cfg["group_score"] == "top2_sum" and cfg["n_experts"] // cfg["n_group"] > 1
    return cfg["top_k"] <= cfg["topk_group"] * per and (per >= 2 or not two)


@dataclass(frozen=True)
class ExpertPlan:
    kept: Dict[int, List[int]]  # MoE layer -> the checkpoint's experts kept (merging: each slot's dominant), ascending
    report: Dict[str, Any] = field(default_factory=dict)  # the manifest's "expert_reduction"
    expert_map: Optional[Dict[int, List[int]]] = None  # merging: MoE layer -> the slot of each router output
    # merging: (layer, slot) -> the slot's merged {gate, up, down}, for groups of more than one expert
    merged: Dict[Tuple[int, int], Callable[[], Dict[str, np.ndarray]]] = field(default_factory=dict)
    # merging: per-expert resident (layers.{l}.expert_*_bias) -> its rows [E, X] made the slots' [E', X]
    resident_merge: Dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    # merging with --low-rank R: R, MoE layer -> each router output's correction (-1: none), and
    # MoE layer -> its stacked factors {gate_a, gate_b, up_a, ...} (CORRECTION_RESIDENTS)
    low_rank: int = 0
    expert_delta: Optional[Dict[int, List[int]]] = None
    corrections: Dict[int, Callable[[], Dict[str, np.ndarray]]] = field(default_factory=dict)

    def merged_weights(self, l: int, slot: int) -> Optional[Dict[str, np.ndarray]]:
        """The merged {gate, up, down} of slot `slot` of layer l, or None where it holds one checkpoint expert."""
        merge = self.merged.get((l, slot))
        return merge() if merge is not None else None

    def read(self, read_source: Callable[[int, int], Dict[str, np.ndarray]], l: int, slot: int) -> Dict[str, np.ndarray]:
        """Slot `slot` of layer l as float matrices, from read_source(l, checkpoint expert)."""
        merged = self.merged_weights(l, slot)
        return merged if merged is not None else read_source(l, self.kept[l][slot])

    @property
    def n_experts(self) -> int:
        return len(next(iter(self.kept.values())))

    def check(self, cfg: Dict[str, Any]) -> None:
        """The plan fits the checkpoint: every MoE layer, the same count, ascending ids in range."""
        if set(self.kept) != set(moe_layers(cfg)):
            raise EdgeMoEError("an expert plan must name the kept experts of every MoE layer")
        if self.low_rank and (self.expert_map is None or self.expert_delta is None
                              or set(self.corrections) != set(self.kept)):
            raise EdgeMoEError("low-rank corrections need merged experts and a correction map of every MoE layer")
        for l, kept in self.kept.items():
            if (len(kept) != self.n_experts or list(kept) != sorted(set(kept))
                    or not all(0 <= e < cfg["n_experts"] for e in kept)):
                raise EdgeMoEError(f"the expert plan of layer {l} must be {self.n_experts} distinct ascending "
                                   f"experts of 0-{cfg['n_experts'] - 1}")

    def config(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        """The container's config: the model with the kept (or merged) experts."""
        if self.expert_map is None:
            return dict(cfg, n_experts=self.n_experts)
        def flat(per_layer: Dict[int, List[int]]) -> List[int]:
            return [j for l in range(cfg["n_layers"]) for j in per_layer.get(l, [-1] * cfg["n_experts"])]

        out = dict(cfg, n_experts=self.n_experts, router_experts=cfg["n_experts"], expert_map=flat(self.expert_map))
        if self.low_rank:
            out.update(low_rank=self.low_rank, expert_delta=flat(self.expert_delta))
        return out

    def residents(self, plan: List[Resident]) -> List[Resident]:
        """The resident plan with each per-expert tensor cut to the kept rows (pruning) or merged (merging),
        and a merged layer's correction factors after its router (--low-rank). A multi-token-prediction
        head kept for later goes: its own layer routes over every original expert, which the pruned
        config no longer describes."""
        out = []
        last: Dict[int, Dict[str, np.ndarray]] = {}  # the layer whose factors were computed last

        def factors(l: int) -> Dict[str, np.ndarray]:
            if l not in last:
                last.clear()
                last[l] = self.corrections[l]()
            return last[l]

        for r in plan:
            if r.name.startswith(_core.KEPT_FOR_LATER_PREFIX):
                continue
            parts = r.name.split(".")
            if r.name in self.resident_merge:  # merged experts' own rows (gpt-oss's biases)
                r = _then(r, self.resident_merge[r.name])
            # merged experts keep the router whole (expert_map reaches them); pruned ones lose their rows
            elif self.expert_map is None and len(parts) == 3 and parts[0] == "layers" and parts[2] in PER_EXPERT_RESIDENTS:
                r = _then(r, lambda w, rows=np.asarray(self.kept[int(parts[1])]): w[rows])
            out.append(r)
            if len(parts) == 3 and parts[0] == "layers" and parts[2] == "router" and int(parts[1]) in self.corrections:
                l = int(parts[1])  # the layer's corrections follow its router, computed rather than read
                out += [Resident(f"layers.{l}.delta_{name}", None, (), LOW_RANK,
                                 lambda _, l=l, name=name: factors(l)[name]) for name in CORRECTION_RESIDENTS]
        return out


def _then(r: Resident, f: Callable[[np.ndarray], np.ndarray]) -> Resident:
    """r with f applied to what it stores (after r's own take, if any)."""
    return r._replace(take=lambda w, take=r.take: f(np.asarray(take(w) if take else w)))
