"""What the converters that measure a model on text before writing it share (`--bits auto`,
`--prune-experts`): the source's routed experts read back as float matrices with the norm in front
of them, and one calibration pass (the source converted at 8 bits in a temporary folder, loaded,
and the text's routing captured with the residual stream entering each MoE block)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import EdgeMoEError
from ..format.model_config import validate_config
from . import bitwidth

MIN_CALIBRATION_TOKENS = 64


@dataclass
class SourceExperts:
    """A source's routed experts as numpy replays them: read(l, e) -> {gate, up, down} f32; the norm
    weights the engine applies before them (input_norms[l]); their gate nonlinearity."""
    cfg: Dict[str, Any]
    read: Callable[[int, int], Dict[str, np.ndarray]]
    input_norms: List[np.ndarray]
    # router(l) -> (weights [E, H], bias [E] or None, input norm weights [H]): the router's f32 tensors
    router: Callable[[int], Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]]

    def kept(self, plan) -> "SourceExperts":
        """The experts an ExpertPlan keeps, in its slots (what the container it plans holds)."""
        return SourceExperts(plan.config(self.cfg), lambda l, e: plan.read(self.read, l, e), self.input_norms,
                             self.router)

    def normalised(self, l: int, hidden: np.ndarray) -> np.ndarray:
        """Residual-stream rows hidden [n, H] as layer l's experts (and, but for Gemma 4, router) read them."""
        return bitwidth.rms_norm(hidden.astype(np.float32), np.asarray(self.input_norms[l], np.float32),
                                 self.cfg["rms_norm_eps"])

    def router_logits(self, l: int, hidden: np.ndarray) -> np.ndarray:
        """Layer l's router logits [n, E] of residual-stream rows hidden [n, H] (float64)."""
        weight, bias, norm = self.router(l)
        x = bitwidth.rms_norm(hidden.astype(np.float32), norm, self.cfg["rms_norm_eps"]).astype(np.float64)
        z = x @ np.asarray(weight, np.float64).T
        return z if bias is None else z + np.asarray(bias, np.float64)

    def output(self, l: int, e: int, hidden: np.ndarray) -> np.ndarray:
        """Expert e of layer l on residual-stream rows hidden [n, H] (normalised here): [n, H]."""
        w = {k: np.asarray(v, np.float32) for k, v in self.read(l, e).items()}
        x = self.normalised(l, hidden)
        return bitwidth.expert_output(x, w["gate"], w["up"], w["down"],
                                      bitwidth.GATE_ACTIVATIONS[self.cfg["expert_activation"]])


def expert_input_norms(ckpt, arch, cfg: Dict[str, Any]) -> List[np.ndarray]:
    """Each layer's norm weights in front of its experts, as the multiplier the engine applies
    (1 + w where the architecture's norms multiply by that)."""
    take = arch.norm_take or (lambda w: w)
    return [take(ckpt.get(f"model.layers.{l}.{arch.expert_input_norm}.weight")) for l in range(cfg["n_layers"])]


def source_experts(src: str) -> SourceExperts:
    """The routed experts of a Hugging Face folder or a GGUF file."""
    from ..convert.gguf import GGUFCheckpoint, hf_config, is_gguf
    from ..convert.hf import ExpertReader, _read_json, moe_prefix, open_checkpoint, pick_arch, resident_plan

    if is_gguf(src):
        ckpt = GGUFCheckpoint(src)
        hf = hf_config(ckpt)
    else:
        hf = _read_json(os.path.join(src, "config.json"), required=True)
        ckpt = open_checkpoint(src, hf)
    arch = pick_arch(hf)
    cfg = validate_config(arch.config(hf), src)
    moe = moe_prefix(ckpt, arch, cfg)
    reader = ExpertReader(ckpt, cfg, arch, moe)

    # The router's tensors as the container stores them (the resident plan names them, takes included).
    plan = {r.name: r for r in resident_plan(cfg, arch, moe, ckpt, hf)}

    def resident(name: str) -> np.ndarray:
        return np.asarray(plan[name].read(ckpt), np.float32)

    def router(l: int):
        c = f"layers.{l}."
        return (resident(c + "router"), resident(c + "router_bias") if cfg["router_bias"] else None,
                resident(c + ("router_norm" if cfg["expert_norms"] else "ffn_norm")).reshape(-1))  # Gemma 4: its own

    return SourceExperts(cfg, reader.read, expert_input_norms(ckpt, arch, cfg), router)


@dataclass
class CalibrationRun:
    model: Any             # the 8-bit conversion, loaded
    ids: List[int]         # the calibration tokens
    window: int            # evaluated in windows of this many tokens, each from an empty context
    hidden: np.ndarray     # [T, L, H] residual stream entering each MoE block
    experts: np.ndarray    # [T, L, K] the routing (-1 in dense layers)
    weights: np.ndarray    # [T, L, K] its weights as the model applies them
    folder: str            # a temporary folder for the caller's own files, removed afterwards


@contextlib.contextmanager
def calibration_run(write_8bit: Callable[[str], Any], text: str, near: str, window: int = 256,
                    max_tokens: int = 8192, threads: Optional[int] = None) -> Iterator[CalibrationRun]:
    """write_8bit(path) converts the source at 8 bits to path; near: where the temporary folder goes
    (beside the source: the same disk, which has room for a copy of it)."""
    from ..api import load

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(near)) or ".") as tmp:
        base_path = os.path.join(tmp, "q8.emoe")
        write_8bit(base_path)
        model = load(base_path, threads=threads)
        ids = model.tokenize(text, add_special_tokens=False)[:max_tokens]
        if len(ids) < 2 * window and len(ids) < MIN_CALIBRATION_TOKENS:
            raise EdgeMoEError(f"the calibration text is too short ({len(ids)} tokens; at least "
                               f"{MIN_CALIBRATION_TOKENS})")
        window = min(window, model.ctx_size)
        hidden, experts, weights = bitwidth.capture(model, ids, window)
        yield CalibrationRun(model, ids, window, hidden, experts, weights, tmp)
