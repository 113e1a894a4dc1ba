"""`edgemoe convert SRC --bits auto --calib TEXT (--target-size BYTES | --max-loss-increase X | --max-kl X)`:
choose each routed expert's width from its measured sensitivity (edgemoe/offline/bitwidth.py).

Every candidate is measured against the all-8-bit conversion on the calibration text, in both
of the figures users judge a quantization by: the calibration loss increase and the mean KL
divergence from the 8-bit model's next-token distributions (llama.cpp's --kl-divergence). The
loss budget is blind where the loss barely moves: on a random-weight Mixtral checkpoint
`--max-loss-increase 0.05` chose 2 bits for every expert and kept 33 % top-1 agreement, because
the loss of a model that predicts nothing well does not get worse. The KL budget sees that."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..offline import bitwidth
from ..format import quant
from ..format.model_config import moe_layers
from ..errors import EdgeMoEError
from .expert_plan import ExpertPlan
from .hf import convert_hf


def _expert_sizes(cfg: Dict[str, Any], candidates) -> np.ndarray:
    """Payload bytes [L, E, C] of each expert (gate + up + down) at each candidate width; 0 in dense layers."""
    H, I = cfg["hidden"], cfg["expert_intermediate"]
    per = [2 * quant.row_bytes(q, H) * I + quant.row_bytes(q, I) * H for q in candidates]
    sizes = np.zeros((cfg["n_layers"], cfg["n_experts"], len(per)), dtype=np.int64)
    sizes[moe_layers(cfg)] = per
    return sizes


def check_budget(target_size, max_loss_increase, max_kl) -> None:
    if sum(b is not None for b in (target_size, max_loss_increase, max_kl)) != 1:
        raise EdgeMoEError("--bits auto needs exactly one of --target-size, --max-loss-increase and --max-kl")


def plan_expert_types(src: str, calib_text: str, target_size: Optional[int] = None,
                      max_loss_increase: Optional[float] = None, window: int = 256, max_tokens: int = 8192,
                      threads: Optional[int] = None, progress: bool = True,
                      max_kl: Optional[float] = None,
                      expert_plan: Optional[ExpertPlan] = None) -> Tuple[List[List[int]], Dict[str, Any]]:
    """Per-expert weight types [L][E] and a report (stored in the container's manifest); with an
    expert_plan, of the kept experts in their new slots, measured on the model that keeps them."""
    check_budget(target_size, max_loss_increase, max_kl)
    from ..api import load
    from ..offline.calibration import calibration_run, source_experts
    from ..offline.kl_divergence import SavedLogits, kl_divergence, save_logits

    source = source_experts(src)
    if expert_plan is not None:
        source = source.kept(expert_plan)
    cfg = source.cfg
    candidates = bitwidth.candidates_for(cfg)
    sizes = _expert_sizes(cfg, candidates)
    with calibration_run(lambda path: convert_hf(src, path, bits="8", progress=False, expert_plan=expert_plan),
                         calib_text, src, window, max_tokens, threads) as run:
        model, ids, window, tmp = run.model, run.ids, run.window, run.folder
        from tqdm import tqdm

        with tqdm(total=cfg["n_layers"] * cfg["n_experts"], desc="expert sensitivity", disable=not progress) as bar:
            sens = bitwidth.sensitivities(source.read, source.input_norms, cfg["rms_norm_eps"], run.hidden,
                                          run.experts, run.weights, cfg["n_experts"], candidates,
                                          progress=lambda: bar.update(1), activation=cfg["expert_activation"])
        stride = window - 1
        # The 8-bit model's log-probabilities, mapped from a file (2 bytes per vocabulary entry per
        # token): every trial is measured against them without the two models loaded at once.
        logits_path = os.path.join(tmp, "q8-logprobs.npy")
        save_logits(model, ids, window, stride, logits_path)
        base = SavedLogits(logits_path, ids, window, stride)
        run.model = model = None  # the trials load models of their own
        trials: Dict[bytes, Dict[str, float]] = {}  # each choice measured: its figures

        def figures(choice: np.ndarray) -> Dict[str, float]:
            if choice.tobytes() not in trials:
                path = os.path.join(tmp, "trial.emoe")
                convert_hf(src, path, bits="8", progress=False, expert_types=_types(choice, candidates, cfg),
                           expert_plan=expert_plan)
                r = kl_divergence(load(path, threads=threads), base, ids, window, stride)
                trials[choice.tobytes()] = {"loss": float(np.log(r["perplexity_ratio"])), "kl": r["kl_mean"],
                                            "kl_p99": r["kl_p99"], "top1": r["top1_agreement"]}
            return trials[choice.tobytes()]

        if target_size is not None:
            choice = bitwidth.choose_for_size(sens, sizes, int(target_size))
        else:
            budget, key = (max_kl, "kl") if max_kl is not None else (max_loss_increase, "loss")
            choice, _ = bitwidth.choose_for_loss(sens, sizes, float(budget), lambda c: figures(c)[key])
        measured = figures(choice)
    types = _types(choice, candidates, cfg)
    chosen_bytes = int(np.take_along_axis(sizes, choice[..., None], axis=2).sum())
    report = {
        "method": "sensitivity-greedy",
        "calibration_tokens": len(ids),
        "target_size": target_size,
        "max_loss_increase": max_loss_increase,
        "max_kl": max_kl,
        # against the all-8-bit conversion, on the calibration text
        "measured_loss_increase": round(measured["loss"], 6),  # nats/token
        "measured_kl": round(measured["kl"], 6),  # mean KL divergence, nats
        "measured_kl_p99": round(measured["kl_p99"], 6),
        "top1_agreement": round(measured["top1"], 6),
        "expert_bytes": chosen_bytes,
        "candidates": [quant.NAMES[q] for q in candidates],
        "sensitivity": np.round(sens, 9).tolist(),
    }
    return types, report


def _types(choice: np.ndarray, candidates, cfg: Dict[str, Any]) -> List[List[int]]:
    routed = set(moe_layers(cfg))
    return [[int(candidates[c]) for c in row] if l in routed else [] for l, row in enumerate(choice)]
