"""Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition penalty."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.0   # 0 means greedy
    top_k: int = 0             # 0 means no limit
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be > 0")


class Sampler:
    def __init__(self, params: SamplingParams, seed: Optional[int] = None):
        params.validate()
        self.params = params
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        logits = np.asarray(logits, dtype=np.float64)
        if p.repeat_penalty != 1.0 and len(history):
            logits = logits.copy()
            recent = np.unique(np.asarray(history[-p.repeat_last_n:], dtype=np.int64))
            vals = logits[recent]
            # llama.cpp's convention: shrink positive logits, push negative ones further down.
            logits[recent] = np.where(vals > 0, vals / p.repeat_penalty, vals * p.repeat_penalty)
        if p.temperature == 0:
            return int(np.argmax(logits))
        logits = logits / p.temperature
        order = np.argsort(-logits, kind="stable")
        if p.top_k:
            order = order[: p.top_k]
        probs = np.exp(logits[order] - logits[order[0]])
        probs /= probs.sum()
        keep = len(order)
        if p.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p) + 1))
        if p.min_p > 0:
            keep = min(keep, max(1, int(np.sum(probs >= p.min_p * probs[0]))))
        order, probs = order[:keep], probs[:keep]
        probs /= probs.sum()
        return int(order[self.rng.choice(len(order), p=probs)])
