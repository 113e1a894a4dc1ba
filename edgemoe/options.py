"""LoadOptions: every run-time option of `edgemoe.load`, the CLI and the server, in one object.

The engine's options take their defaults and allowed names from the C++ runtime
(csrc/runtime/options.h), which also checks them (ValueError naming the option); the CLI builds
its flags' choices from CHOICES. Four options are Python's own: the memory budget and the expert
slot count (inputs of the memory plan), the automatic thread count and context size, and drafting
(edgemoe/draft.py, a matter of the generation loop).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from . import _core

_DEFAULTS: Dict[str, Any] = _core.engine_option_defaults()
# {option: [allowed names]} for the options that take a name (kv_cache, cache_policy, predictor)
CHOICES: Dict[str, list] = _core.engine_option_choices()
DEFAULT_CTX: int = _DEFAULTS["ctx_size"]  # or the model's max_position, whichever is less


@dataclass(frozen=True)
class LoadOptions:
    """How a model runs. None of these changes what it computes, except kv_cache ("f16", the
    default, moves logits by ~1e-3 relative; "f32" computes exactly like the reference)."""

    memory_budget: Optional[Union[int, str]] = None  # bytes or "1.5GB": resident + KV + scratch + expert slots
    cache_experts: Optional[int] = None  # expert slots, overriding the budget
    threads: Optional[int] = None        # None: the machine's physical cores
    ctx_size: Optional[int] = None       # None: DEFAULT_CTX or the model's max_position, whichever is less
    kv_cache: str = _DEFAULTS["kv_cache"]
    predictor: str = _DEFAULTS["predictor"]          # how experts of later layers are prefetched
    cache_policy: str = _DEFAULTS["cache_policy"]    # which cached expert is evicted
    prefetch_depth: int = _DEFAULTS["prefetch_depth"]  # layers ahead
    prefetch_width: int = _DEFAULTS["prefetch_width"]  # experts per layer; 0: the model's top_k
    prefetch_min_confidence: float = _DEFAULTS["prefetch_min_confidence"]
    io_threads: int = _DEFAULTS["io_threads"]  # threads reading misses side by side and prefetches; 0: in the compute thread
    verify_checksums: bool = _DEFAULTS["verify_checksums"]
    # Hybrid models (Qwen3.5-MoE, Qwen3-Next): copies of the linear-attention state kept to go back
    # to, each as large as that state (csrc/model/recurrent_state.h); 0 for other models.
    state_checkpoints: int = _DEFAULTS["state_checkpoints"]
    # Lossless speculative decoding (edgemoe/draft.py): "none", "ngram", "cache" or "auto".
    draft: str = "none"
    # The cache drafter stops at a draft it gives less than this probability (llama.cpp's --draft-p-min).
    draft_min_p: float = 0.75
    # Models that take images: the most pixels an image is resized to (as the model's processor
    # does with a lower max_pixels), bounding the vision tower's time and memory (the plan counts
    # its activations at this size).
    max_image_pixels: int = _DEFAULTS["max_image_pixels"]
    # Models that take images: False leaves the vision tower on storage (text only; less memory).
    vision: bool = _DEFAULTS["vision"]
    # LOSSY, off at 0: a missed expert every token gives less than this share of its routing weight
    # is not read (KL figures in bench/RESULTS.md).
    skip_missed_below: float = _DEFAULTS["skip_missed_below"]
    # LOSSY, off at 0: a missed expert every token gives less than this share of its routing weight
    # (1: every missed expert) is read and computed in its low-bit copy (`convert --low-bit-copy`).
    low_bit_missed_below: float = _DEFAULTS["low_bit_missed_below"]
    # LOSSY, off at 0: each token uses only its this many heaviest of the model's top-k experts.
    active_experts: int = _DEFAULTS["active_experts"]
    # LOSSY, off when empty: (layer, expert) pairs the router never chooses, renormalising over the
    # rest as the architecture does: the model as if those experts were pruned (`edgemoe experts`
    # finds the ones a text leans on). Also "LAYER:EXPERT,..." as the CLI takes it.
    disable_experts: Union[Sequence[Tuple[int, int]], str] = ()

    @classmethod
    def names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    def resolved_threads(self) -> int:
        return _physical_cores() if self.threads is None else self.threads

    def resolved_ctx_size(self, max_position: int) -> int:
        ctx = min(max_position, DEFAULT_CTX) if self.ctx_size is None else self.ctx_size
        if isinstance(ctx, int) and not 1 <= ctx <= max_position:
            raise ValueError(f"ctx_size must be in [1, {max_position}] for this model")
        return ctx

    def engine_options(self, max_position: int, expert_slots: Optional[int] = None,
                       max_batch: Optional[int] = None) -> Dict[str, Any]:
        """The options as the C++ engine takes them (csrc/runtime/options.h), automatic values resolved."""
        ctx = self.resolved_ctx_size(max_position)
        out = {"threads": self.resolved_threads(), "ctx_size": ctx,
               "max_batch": min(_DEFAULTS["max_batch"], ctx) if max_batch is None else max_batch,
               "kv_cache": self.kv_cache, "predictor": self.predictor, "cache_policy": self.cache_policy,
               "prefetch_depth": self.prefetch_depth, "prefetch_width": self.prefetch_width,
               "prefetch_min_confidence": float(self.prefetch_min_confidence),
               "io_threads": self.io_threads, "skip_missed_below": float(self.skip_missed_below),
               "low_bit_missed_below": float(self.low_bit_missed_below),
               "active_experts": self.active_experts,
               "disable_experts": [x for pair in parse_expert_pairs(self.disable_experts) for x in pair],
               "state_checkpoints": self.state_checkpoints,
               "max_image_pixels": self.max_image_pixels, "vision": bool(self.vision),
               "verify_checksums": bool(self.verify_checksums)}
        if expert_slots is not None:
            out["expert_slots"] = expert_slots
        return out


def _physical_cores() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:
        n = None
    return max(1, n or os.cpu_count() or 1)


def parse_expert_pairs(value: Union[Sequence[Tuple[int, int]], str]) -> Tuple[Tuple[int, int], ...]:
    """(layer, expert) pairs from a sequence of pairs or from "LAYER:EXPERT,LAYER:EXPERT" (the CLI's
    --disable-expert); ValueError naming what does not parse. The engine checks the ranges."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
        pairs = []
        for item in items:
            layer, sep, expert = item.partition(":")
            try:
                if not sep:
                    raise ValueError
                pairs.append((int(layer), int(expert)))
            except ValueError:
                raise ValueError(f"disable_experts: {item!r} is not LAYER:EXPERT (e.g. 3:17)") from None
        return tuple(pairs)
    pairs = []
    for pair in value:
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)):
            raise ValueError(f"disable_experts holds {pair!r}: each entry must be a (layer, expert) pair of integers")
        pairs.append((int(pair[0]), int(pair[1])))
    return tuple(pairs)


def format_expert_pairs(pairs: Sequence[Tuple[int, int]]) -> str:
    """The "LAYER:EXPERT,..." text --disable-expert takes."""
    return ",".join(f"{layer}:{expert}" for layer, expert in pairs)


LOSSY_OPTIONS = ("skip_missed_below", "low_bit_missed_below", "active_experts", "disable_experts")  # each off at 0 / empty


def lossy_settings(options: LoadOptions, top_k: int) -> Dict[str, Any]:
    """The options that change what the model computes and are on, by name, as the user would
    write them (active_experts of a model's whole top_k changes nothing)."""
    on = {name: getattr(options, name) for name in LOSSY_OPTIONS if getattr(options, name)}
    if on.get("active_experts", 0) >= top_k:
        del on["active_experts"]
    if "disable_experts" in on:
        on["disable_experts"] = format_expert_pairs(parse_expert_pairs(on["disable_experts"]))
    return on
