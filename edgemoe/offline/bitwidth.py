"""Expert-wise bit widths (EdgeMoE's first technique): `edgemoe convert --bits auto`.

Experts differ in how much quantizing them hurts. For each routed expert this
module measures, on calibration text, how far its output moves when its
weights are quantized to each candidate width:

    sensitivity[l, e, b] = (1/T) * sum over the tokens routed to e in layer l of
                           g^2 * |expert_b(x) - expert_f32(x)|^2

where x is the token's input to the expert (the normalised residual stream,
replayed from the engine's trace), g its routing weight and T the number of
calibration tokens. That is the expected squared perturbation the expert adds
to the residual stream per token: it already weighs an expert by how often and
how strongly it is used. It is a proxy for the loss increase (a second-order
expansion of the loss in a small residual perturbation), so the choice is
checked against the measured calibration loss (see choose_for_loss).

Widths are then chosen greedily: start every expert at the widest candidate
and repeatedly narrow the expert whose next step down costs the least
sensitivity per byte saved, until the size target is met (choose_for_size), or
as far as the measured loss budget allows (choose_for_loss).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..format import quant
from ..errors import EdgeMoEError

CANDIDATES = (quant.Q8, quant.Q4, quant.Q3, quant.Q2)  # widest first


def candidates_for(cfg) -> Tuple[int, ...]:
    """The widths to choose from for a model's experts, widest first: q4k instead of q4 where
    every expert row can take it (the same accuracy as q4 in 10 % fewer bytes)."""
    rows = (cfg["hidden"], cfg["expert_intermediate"])
    four = quant.storable_type(quant.Q4K, rows)
    return tuple(four if q == quant.Q4 else q for q in CANDIDATES)
MAX_TOKENS_PER_EXPERT = 1024  # routed tokens replayed per expert (a random sample beyond)


def capture(model, ids: Sequence[int], window: int):
    """Every calibration token's MoE inputs and routing, windows from an empty context:
    hidden [T, L, H] (residual stream entering the MoE block), experts and weights [T, L, K]."""
    record = model.route(ids, window, with_hidden=True)
    return record.hidden, record.experts, record.weights


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    ss = (x.astype(np.float64) ** 2).mean(axis=-1, keepdims=True)
    return (x / np.sqrt(ss + eps).astype(np.float32)) * w


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


# The container's expert_activation -> the gate's nonlinearity here (gpt-oss's clamped SwiGLU is
# measured as SiLU: a proxy that ranks experts, the loss itself is measured afterwards).
GATE_ACTIVATIONS = {"silu": _silu, "swiglu_limited": _silu, "gelu_tanh": _gelu_tanh}


def expert_output(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray, act=_silu) -> np.ndarray:
    return (act(x @ gate.T) * (x @ up.T)) @ down.T


def _round_trip(w: np.ndarray, qtype: int) -> np.ndarray:
    return quant.dequantize(quant.quantize(w, qtype), qtype, w.shape)


def sensitivities(read_expert: Callable[[int, int], Dict[str, np.ndarray]], ffn_norms: Sequence[np.ndarray],
                  eps: float, hidden: np.ndarray, experts: np.ndarray, weights: np.ndarray, n_experts: int,
                  candidates: Sequence[int] = CANDIDATES, seed: int = 0,
                  progress: Optional[Callable[[], None]] = None, activation: str = "silu") -> np.ndarray:
    """sensitivity [L, E, len(candidates)] as in the module doc. read_expert(l, e) gives the f32
    {"gate", "up", "down"} matrices; ffn_norms[l] the layer's post-attention norm weights."""
    T, L, _ = experts.shape
    act = GATE_ACTIVATIONS[activation]
    rng = np.random.default_rng(seed)
    out = np.zeros((L, n_experts, len(candidates)))
    for l in range(L):
        xn = rms_norm(hidden[:, l].astype(np.float32), np.asarray(ffn_norms[l], np.float32), eps)
        for e in range(n_experts):
            tok, rank = np.nonzero(experts[:, l] == e)
            if len(tok) > MAX_TOKENS_PER_EXPERT:
                keep = rng.choice(len(tok), MAX_TOKENS_PER_EXPERT, replace=False)
                scale = len(tok) / MAX_TOKENS_PER_EXPERT  # the sample stands for all of them
                tok, rank = tok[keep], rank[keep]
            else:
                scale = 1.0
            if progress:
                progress()
            if len(tok) == 0:
                continue  # never used on the calibration text: costs nothing at any width
            w = {k: np.asarray(v, np.float32) for k, v in read_expert(l, e).items()}
            x = xn[tok]
            g2 = weights[tok, l, rank].astype(np.float64) ** 2
            ref = expert_output(x, w["gate"], w["up"], w["down"], act)
            for i, qtype in enumerate(candidates):
                q = {k: _round_trip(v, qtype) for k, v in w.items()}
                diff = (expert_output(x, q["gate"], q["up"], q["down"], act) - ref).astype(np.float64)
                out[l, e, i] = scale * float((g2 * (diff ** 2).sum(axis=1)).sum()) / T
    return out


def _greedy(sens: np.ndarray, sizes: np.ndarray, done: Callable[[int, float], bool],
            allowed: Callable[[int, float], bool] = lambda b, s: True) -> np.ndarray:
    """Narrow experts one step at a time, cheapest sensitivity per byte saved first, until
    done(total_bytes, total_sensitivity) or the next step is not allowed(bytes, sensitivity
    after it). sizes [L, E, C]: bytes of each expert at each candidate. Returns the chosen
    candidate index [L, E] (0: the widest)."""
    L, E, C = sens.shape
    choice = np.zeros((L, E), dtype=np.int64)
    total_bytes = int(sizes[:, :, 0].sum())
    total_sens = float(sens[:, :, 0].sum())

    def step_cost(l: int, e: int) -> float:
        c = choice[l, e]
        if c + 1 >= C or sizes[l, e, 0] == 0:  # the narrowest already, or a dense layer's empty row
            return math.inf
        saved = sizes[l, e, c] - sizes[l, e, c + 1]
        return (sens[l, e, c + 1] - sens[l, e, c]) / max(saved, 1)

    costs = np.array([[step_cost(l, e) for e in range(E)] for l in range(L)])
    while not done(total_bytes, total_sens):
        l, e = np.unravel_index(int(np.argmin(costs)), costs.shape)
        if not math.isfinite(costs[l, e]):
            break  # every expert is at the narrowest width
        c = choice[l, e]
        new_bytes = total_bytes - int(sizes[l, e, c] - sizes[l, e, c + 1])
        new_sens = total_sens + float(sens[l, e, c + 1] - sens[l, e, c])
        if not allowed(new_bytes, new_sens):
            break
        total_bytes, total_sens = new_bytes, new_sens
        choice[l, e] = c + 1
        costs[l, e] = step_cost(l, e)
    return choice


def choose_for_size(sens: np.ndarray, sizes: np.ndarray, target_bytes: int) -> np.ndarray:
    """Candidate indices [L, E] whose routed experts fit in target_bytes at the least sensitivity."""
    if target_bytes < sizes[:, :, -1].sum():
        raise EdgeMoEError(f"target size {target_bytes} bytes is below the experts' size at the narrowest "
                           f"width ({int(sizes[:, :, -1].sum())} bytes)")
    return _greedy(sens, sizes, done=lambda b, s: b <= target_bytes)


def choose_for_sensitivity(sens: np.ndarray, sizes: np.ndarray, budget: float) -> np.ndarray:
    """Candidate indices [L, E]: narrowed while the total sensitivity stays <= budget."""
    return _greedy(sens, sizes, done=lambda b, s: False, allowed=lambda b, s: s <= budget)


def choose_for_loss(sens: np.ndarray, sizes: np.ndarray, max_increase: float,
                    measure: Callable[[np.ndarray], float], iterations: int = 8) -> Tuple[np.ndarray, float]:
    """The narrowest greedy choice whose *measured* figure (measure(choice) against the all-widest
    choice: the calibration loss increase or the mean KL divergence, nats) is <= max_increase,
    found by bisecting the sensitivity budget. Returns (choice, measured figure)."""
    L, E, C = sens.shape
    widest = np.zeros((L, E), dtype=np.int64)
    lo, hi = float(sens[:, :, 0].sum()), float(sens[:, :, -1].sum())
    best, best_inc = widest, 0.0
    cand = choose_for_sensitivity(sens, sizes, hi)
    inc = measure(cand)
    if inc <= max_increase:
        return cand, inc
    for _ in range(iterations):
        mid = math.sqrt(max(lo, 1e-30) * hi) if lo > 0 else hi / 2  # budgets span decades: bisect in log
        cand = choose_for_sensitivity(sens, sizes, mid)
        inc = measure(cand)
        if inc <= max_increase:
            best, best_inc, lo = cand, inc, mid
        else:
            hi = mid
    return best, best_inc
