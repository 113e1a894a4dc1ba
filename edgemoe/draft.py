"""Lossless speculative decoding: guess the next few tokens cheaply, check them in one forward pass.

A drafter proposes tokens to follow the history; the model evaluates the last sampled token and
the drafts together (one batched pass, which reads the union of their experts once) and the
generation loop samples each position from the model's own logits as it always does: a draft is
kept only while it equals the token the model chose, and the context is cut back to the last
kept one. The output is therefore the one plain decoding gives, token for token and seed for
seed (the sampler draws once per token either way). With a drafted token d, sampling p and
keeping d when the draw equals it is standard speculative sampling for a draft distribution
that puts all its mass on d (keep d with probability min(1, p(d)/1) = p(d); otherwise draw from
p with d removed, which is what a draw from p that is not d is): the distribution is p.

Drafters:
- ngram: prompt lookup. The longest n-gram ending the history that occurred before proposes
  the tokens that followed its latest occurrence (free; wins on text that repeats its context:
  code edits, quotes, summaries, lists).
- cache: the model itself, each token routed only among the experts already cached, so drafting
  reads nothing (csrc Transformer::set_skip_missed_below(+inf)); its greedy choices are drafts.
- auto: ngram where it has a match, else cache; paused while drafting does not pay.

What pays is measured, not assumed: under auto, `DraftSwitch` compares the time per token of
drafting rounds with that of plain steps and stops drafting (for a while) when plain decoding is
faster. A drafter asked for by name drafts at every step.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence, Tuple

DRAFT_MODES = ("none", "ngram", "cache", "auto")
DEFAULT_DRAFT_TOKENS = 4  # drafts per round: llama.cpp's lookup decoding and HF's prompt lookup use 3-10


def check_mode(mode: str) -> str:
    if mode not in DRAFT_MODES:
        raise ValueError(f"draft must be one of {', '.join(DRAFT_MODES)}, not {mode!r}")
    return mode


class NgramDrafter:
    """Prompt lookup over an append-only history (one generation's prompt and output)."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 2):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self._follows: Dict[Tuple[int, ...], int] = {}  # n-gram -> where its latest earlier occurrence's successor is
        self._indexed = 0  # n-grams ending before this position are indexed

    def propose(self, history: Sequence[int], k: int) -> List[int]:
        # Index every n-gram that has a successor, i.e. ends before the last token, so the
        # history's own suffix never matches itself.
        while self._indexed < len(history) - 1:
            end = self._indexed
            for n in range(self.min_ngram, self.max_ngram + 1):
                if end - n + 1 >= 0:
                    self._follows[tuple(history[end - n + 1:end + 1])] = end + 1
            self._indexed += 1
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(history) < n:
                continue
            start = self._follows.get(tuple(history[-n:]))
            if start is not None:
                return [int(t) for t in history[start:start + k]]
        return []


class CacheDrafter:
    """The model's greedy continuation with every layer routed among its cached experts only."""

    def __init__(self, model):
        self.model = model

    def propose(self, token: int, k: int, cancel=None) -> List[int]:
        """Drafts after `token`, the last sampled one (not yet in the context). Leaves the drafted
        positions in the context: the caller's verification pass overwrites them."""
        engine = self.model._engine
        saved = engine.skip_missed_below
        engine.skip_missed_below = math.inf
        drafts: List[int] = []
        try:
            last = token
            for _ in range(k):
                last = int(self.model.eval([last], cancel=cancel).argmax())
                drafts.append(last)
        finally:
            engine.skip_missed_below = saved
        return drafts


class DraftSwitch:
    """Turns a drafter off while it does not pay, from measured times.

    Plain steps and drafting rounds each keep a running mean of seconds per generated token; a
    drafter whose rounds are slower per token than plain steps is paused for `pause` tokens, then
    tried again (what pays changes as the cache warms and the text changes). Until both are
    measured, drafting runs, and a plain step is timed at least every `pause` tokens."""

    def __init__(self, pause: int = 32, smoothing: float = 0.25):
        self.pause, self.smoothing = pause, smoothing
        self.plain_s: Optional[float] = None   # seconds per token, plain steps
        self.draft_s: Optional[float] = None   # seconds per kept token, drafting rounds
        self.paused_for = 0
        self.since_plain = 0

    def _mean(self, old: Optional[float], new: float) -> float:
        return new if old is None else old + self.smoothing * (new - old)

    def want_draft(self) -> bool:
        if self.paused_for > 0 or self.since_plain >= self.pause or self.plain_s is None:
            return False
        return True

    def plain_step(self, seconds: float) -> None:
        self.plain_s = self._mean(self.plain_s, seconds)
        self.since_plain = 0
        self.paused_for = max(0, self.paused_for - 1)

    def draft_round(self, seconds: float, tokens: int) -> None:
        self.draft_s = self._mean(self.draft_s, seconds / max(1, tokens))
        self.since_plain += tokens
        if self.plain_s is not None and self.draft_s > self.plain_s:
            self.paused_for = self.pause
            self.draft_s = None  # measured afresh when tried again


class Drafting:
    """One generation's drafting: which drafter proposes, how many, and whether it pays now."""

    def __init__(self, model, mode: str, max_tokens: int = DEFAULT_DRAFT_TOKENS):
        self.mode = check_mode(mode)
        self.model = model
        self.max_tokens = max_tokens
        self.ngram = NgramDrafter() if mode in ("ngram", "auto") else None
        self.cache = CacheDrafter(model) if mode in ("cache", "auto") and model.config["n_experts"] else None
        self.switch = DraftSwitch() if mode == "auto" else None  # asked for by name: always drafts
        self.drafted = 0    # tokens proposed
        self.accepted = 0   # of which kept
        self.rounds = 0     # verification passes
        self._clock = time.perf_counter

    def propose(self, history: Sequence[int], room: int, cancel=None) -> List[int]:
        """Drafts to follow history (its last token not yet evaluated), at most `room`."""
        k = min(self.max_tokens, room)
        if k <= 0 or (self.switch is not None and not self.switch.want_draft()):
            return []
        if self.ngram is not None:
            drafts = self.ngram.propose(history, k)
            if drafts or self.cache is None:
                return drafts
        return self.cache.propose(history[-1], k, cancel=cancel)

    def counts(self) -> Dict[str, int]:
        return {"drafted": self.drafted, "accepted": self.accepted, "rounds": self.rounds}
