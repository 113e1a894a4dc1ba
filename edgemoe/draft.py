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
- cache: the model itself, each layer computing only the chosen experts already cached, so drafting
  reads nothing (Model.eval(cached_only=True)); its greedy choices, while it is sure of them, are drafts.
- auto: ngram where it has a match, else cache; paused while drafting does not pay.

What pays is measured, not assumed: under auto, `DraftSwitch` compares the time per token of
drafting rounds with that of plain steps and stops drafting (for a while) when plain decoding is
faster. A drafter asked for by name drafts at every step.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

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
    """The model's greedy continuation with each layer computing only the chosen experts that are
    already cached (Model.eval(cached_only=True): nothing read, nothing prefetched), for as long
    as it is sure of it: a draft it gives less than `min_p` probability ends the drafts (as
    llama.cpp's --draft-p-min does), since every draft widens the verification pass's reads and
    unsure ones are seldom kept."""

    def __init__(self, model, min_p: float = 0.75):
        self.model, self.min_p = model, min_p

    def propose(self, token: int, k: int, cancel=None) -> List[int]:
        """Drafts after `token`, the last sampled one (not yet in the context). Leaves its passes
        in the context (one more than the drafts): the caller cuts them before verifying."""
        drafts: List[int] = []
        last = token
        for _ in range(k):
            logits = self.model.eval([last], cancel=cancel, cached_only=True)
            last = int(logits.argmax())
            if 1.0 / np.exp(logits - logits[last]).sum() < self.min_p:
                break
            drafts.append(last)
        return drafts


class DraftSwitch:
    """Pauses drafting while it does not pay, from measured times.

    Plain steps and drafting rounds each keep a running mean of seconds per generated token. A
    plain step is timed first; then drafting runs, and whenever its rounds are slower per token
    than plain steps it is paused for `pause` plain steps, then tried again (what pays changes
    as the cache warms and the text changes). While drafting runs, a plain step is still timed
    every `pause` tokens."""

    def __init__(self, pause: int = 32, smoothing: float = 0.25):
        self.pause, self.smoothing = pause, smoothing
        self.plain_s: Optional[float] = None   # seconds per token, plain steps
        self.draft_s: Optional[float] = None   # seconds per generated token, drafting rounds
        self.paused_for = 0
        self.since_plain = 0

    def _mean(self, old: Optional[float], new: float) -> float:
        return new if old is None else old + self.smoothing * (new - old)

    def want_draft(self) -> bool:
        return self.plain_s is not None and self.paused_for == 0 and self.since_plain < self.pause

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
    """One generation's drafting: which drafter proposes, how many, whether it pays now (auto),
    and what it did (counts())."""

    def __init__(self, model, mode: str, per_round: int = DEFAULT_DRAFT_TOKENS):
        """mode: one of DRAFT_MODES but none (Generation checks it)."""
        self.model = model
        self.per_round = per_round
        self.ngram = NgramDrafter() if mode in ("ngram", "auto") else None
        self.cache = CacheDrafter(model, model.options.draft_min_p) if mode in ("cache", "auto") else None
        # Under auto, each drafter is paused on its own measurements (a costly cache drafter must
        # not pause the free prompt lookup); a drafter asked for by name always drafts.
        self.switches = {"ngram": DraftSwitch(), "cache": DraftSwitch()} if mode == "auto" else None
        self.drafted = 0    # tokens proposed
        self.accepted = 0   # of which kept
        self.rounds = 0     # verification passes
        # The step being timed: when it started, which drafter worked in it, the kept count then.
        self._started: Optional[float] = None
        self._worked: Optional[str] = None
        self._accepted_before = 0

    def _may(self, name: str) -> bool:
        return getattr(self, name) is not None and (self.switches is None or self.switches[name].want_draft())

    def room(self, n_past: int, room: int) -> int:
        """How many drafts may follow the token at position n_past: at most `room` (context and
        max_tokens), one batch (a sliding-window model rewinds at most that far), and none past
        the trained length under dynamic NTK rope, whose frequencies then follow the length of
        the pass (a batch would not compute what token-by-token decoding does)."""
        k = min(self.per_round, room, self.model.max_batch - 1)
        cfg = self.model.config
        if cfg.get("rope_scaling") == "dynamic":
            k = min(k, cfg["rope_original_max_position"] - n_past - 1)
        return k

    def propose(self, history: Sequence[int], n_past: int, room: int, cancel=None) -> List[int]:
        """Drafts to follow history (its last token, at position n_past, not yet evaluated)."""
        k = self.room(n_past, room)
        if k <= 0:
            return []
        if self._may("ngram"):
            drafts = self.ngram.propose(history, k)
            if drafts:
                self._worked = "ngram"
                return drafts
        if self._may("cache"):
            self._worked = "cache"  # its pass costs the same whether or not it proposes anything
            return self.cache.propose(history[-1], k, cancel=cancel)
        return []

    def step_done(self) -> None:
        """Called as each step or drafting round ends (the next token is about to be evaluated):
        under auto, its time per generated token goes to the switch."""
        now = time.perf_counter()
        if self.switches is not None and self._started is not None:
            seconds, tokens = now - self._started, self.accepted - self._accepted_before + 1
            if self._worked:
                self.switches[self._worked].draft_round(seconds, tokens)
            else:
                for switch in self.switches.values():
                    switch.plain_step(seconds)
        self._started, self._worked, self._accepted_before = now, None, self.accepted

    def counts(self) -> Dict[str, int]:
        return {"drafted": self.drafted, "accepted": self.accepted, "rounds": self.rounds}
