"""The one generation loop: `Model.generate`, the chat session, the CLI and the server all run it.

A `Generation` evaluates a prompt (reusing whatever prefix of it the context already holds, when
asked), then samples a token at a time until a stop id, a stop string, `max_tokens`, a full
context, a cancel token or an interrupt ends it. Iterating it yields text pieces; afterwards it
holds the generated ids, the text, why it stopped and how fast it ran. A cancel token raises
edgemoe.Cancelled from the iteration (Ctrl-C: KeyboardInterrupt), with the stats still filled.

The rule for a full context, as llama.cpp applies it without context shifting: every sampled
token is kept, but a token the context has no room to evaluate is the last one. A prompt of P
tokens in a context of C gives at most C - P + 1 tokens, and the context then holds C.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .draft import Drafting, check_mode
from .errors import Cancelled
from .sampling import Sampler
from .tokenizer import StreamDecoder
from .vision.prompt import check_images, cut_before_images, images_from, prompt_keys

# Why a generation ended.
STOP = "stop"                # a stop id (end of sequence) or a stop string
LENGTH = "length"            # max_tokens reached
CONTEXT = "context"          # the context is full
CANCELLED = "cancelled"      # the cancel token was set
INTERRUPTED = "interrupted"  # Ctrl-C, or the caller stopped iterating


@dataclass
class GenerationStats:
    prompt_tokens: int = 0      # tokens of the prompt
    evaluated_tokens: int = 0   # of which not already in the context
    prefill_s: float = 0.0
    generated_tokens: int = 0
    decode_s: float = 0.0
    stop_reason: str = ""       # one of the reasons above
    # The engine's counters (Model.stats()) over each phase: where the time went, what was read.
    prefill_engine: Dict[str, float] = field(default_factory=dict)
    decode_engine: Dict[str, float] = field(default_factory=dict)
    # With drafting: tokens drafted, of which kept, and verification passes (edgemoe/draft.py).
    draft: Dict[str, int] = field(default_factory=dict)

    @property
    def prefill_tok_s(self) -> float:
        return self.evaluated_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tok_s(self) -> float:
        return self.generated_tokens / self.decode_s if self.decode_s else 0.0


# Model.stats() keys that count (the others are levels, like rss_bytes, or ratios).
ENGINE_COUNTERS = ("cache_hits", "cache_misses", "bytes_read", "io_wait_s", "cache_s", "compute_s", "tokens",
                   "skipped_choices",
                   "low_bit_choices")


def counter_change(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    """What the engine's counters added between two Model.stats() snapshots."""
    return {k: after[k] - before[k] for k in ENGINE_COUNTERS}


def per_token(phase: Dict[str, float], tokens: Optional[int] = None) -> Dict[str, Optional[float]]:
    """A phase's counters (counter_change) per token: milliseconds computing, in the expert
    cache's own work (lookups, evictions, its lock) and waiting for storage, MB read, and the share of expert lookups the cache answered. Per evaluated token,
    or per `tokens` (the tokens a drafting decode generated: its passes also evaluate drafts
    that are not kept). None where there is no token (or no expert lookup: a dense model)."""
    evals = phase.get("tokens", 0) if tokens is None else tokens
    lookups = phase.get("cache_hits", 0) + phase.get("cache_misses", 0)
    return {"compute_ms": 1e3 * phase["compute_s"] / evals if evals else None,
            "cache_ms": 1e3 * phase.get("cache_s", 0.0) / evals if evals else None,
            "io_wait_ms": 1e3 * phase["io_wait_s"] / evals if evals else None,
            "mb_read": phase["bytes_read"] / 1e6 / evals if evals else None,
            "cache_hit_rate": phase["cache_hits"] / lookups if lookups else None}


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Generation:
    """One generation by `model` (an edgemoe.Model) from `prompt_ids`. Iterate it for the text
    pieces as they become final.

    context: the token ids the model's context holds now (from an earlier generation), or None
        to start from an empty context. The shared prefix is kept and only the rest evaluated.
    stop_ids: token ids that end the generation (not part of the output).
    stop_strings: texts that end it; the output is cut before the first one, and text that may
        still turn into one is held back until it cannot.
    cancel: an edgemoe.CancelToken that stops it from another thread.
    trace: a file that receives the routing of every evaluated token (docs/TRACE.md).
    draft: "none", or how to draft tokens to verify several at once (edgemoe/draft.py; the
        output is the same either way). Off while tracing: a trace holds only kept tokens.
    """

    def __init__(self, model, prompt_ids: Sequence[int], max_tokens: int, sampler: Sampler,
                 stop_ids=(), stop_strings: Sequence[str] = (), context: Optional[Sequence[Any]] = None,
                 cancel=None, trace: Optional[str] = None, draft: str = "none", images: Sequence[Any] = ()):
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        self.model = model
        self.prompt = [int(t) for t in prompt_ids]
        if not self.prompt:
            raise ValueError("no prompt tokens given")
        # images: the edgemoe.vision.EncodedImage of each run of image tokens in the prompt, in order
        self.images = list(images)
        self.image_token = int(model.config.get("image_token_id", -1))
        if self.images:
            check_images(self.prompt, self.images, self.image_token)
        model.check_room(len(self.prompt), from_empty=True)
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.stop_ids = frozenset(stop_ids)
        self.stop_strings = [s for s in stop_strings if s]
        self.context = context
        self.cancel = cancel
        self.trace = trace
        self.tokens: List[int] = []   # generated ids (a stop string's tokens included)
        self.text = ""                # generated text, cut before a stop string
        self.stats = GenerationStats(prompt_tokens=len(self.prompt))
        self.drafting = Drafting(model, draft) if check_mode(draft) != "none" and trace is None else None
        self._in_context: Optional[int] = None  # history tokens the context holds (once decoding)

    @property
    def history(self) -> List[int]:
        """The prompt and the generated ids; the context holds its first model.n_past."""
        return self.prompt + self.tokens

    @property
    def history_keys(self) -> List[Any]:
        """history with each image token naming its image (edgemoe.vision.prompt_keys): what a
        later generation's `context` compares with, so a different image is not taken for this one."""
        return prompt_keys(self.prompt, self.images, self.image_token) + self.tokens

    def __iter__(self) -> Iterator[str]:
        if self.trace is None:
            yield from self._run()
            return
        with self.model.record_routing() as routing:
            try:
                yield from self._run()
            finally:
                routing.stop()
                _write_trace(self.model, self.trace, self.history, len(self.prompt), routing)

    def _run(self) -> Iterator[str]:
        model, stats = self.model, self.stats
        keep = 0
        if self.context is not None:
            # evaluate at least one token: its logits give the first sample
            keys = prompt_keys(self.prompt, self.images, self.image_token)
            keep = self._truncate(min(common_prefix(self.context, keys), len(self.prompt) - 1))
        else:
            model.reset()
        decoder = StreamDecoder(model.tokenizer)
        hold = max((len(s) for s in self.stop_strings), default=1) - 1  # may still become a stop string
        sent = 0
        counters = model.stats()
        try:
            t0 = time.perf_counter()
            logits = model.eval(self.prompt[keep:], cancel=self.cancel,
                                images=images_from(keep, self.prompt, self.images, self.image_token))
            stats.evaluated_tokens = len(self.prompt) - keep
            stats.prefill_s = time.perf_counter() - t0
            after = model.stats()
            stats.prefill_engine, counters = counter_change(counters, after), after
            t0 = time.perf_counter()
            stats.stop_reason = LENGTH
            rows = [logits]  # logits for the positions after history[-1], history[-1] + drafts[0], ...
            drafts: List[int] = []  # evaluated after history[-1], each kept while it is what is sampled
            self._in_context = len(self.prompt)  # history tokens the context holds, drafts aside
            for step in range(self.max_tokens):
                if self.cancel is not None and self.cancel.cancelled:
                    raise Cancelled("the generation was cancelled")
                token = self.sampler(rows.pop(0), self.history)
                if drafts:
                    if token == drafts.pop(0):
                        self.drafting.accepted += 1
                    else:
                        drafts, rows = [], []
                if token in self.stop_ids:
                    stats.stop_reason = STOP
                    break
                self.tokens.append(token)
                self.text += decoder.push(token)
                cut = self._stop_string_at(sent - hold)
                if cut >= 0:
                    self.text, stats.stop_reason = self.text[:cut], STOP
                    break
                if len(self.text) - hold > sent:
                    yield self.text[sent:len(self.text) - hold]
                    sent = len(self.text) - hold
                if step + 1 == self.max_tokens:
                    break
                if rows:  # this token was evaluated as a draft: the next position's logits are there
                    self._in_context += 1
                    continue
                if self.drafting is not None:
                    self.drafting.step_done()
                self._rewind(self._in_context)
                if model.n_past >= model.ctx_size:
                    stats.stop_reason = CONTEXT
                    break
                rows, drafts = self._evaluate(token, room=min(model.ctx_size - model.n_past - 1,
                                                              self.max_tokens - step - 2))
            stats.decode_s = time.perf_counter() - t0
            stats.decode_engine = counter_change(counters, model.stats())
            if len(self.text) > sent:
                yield self.text[sent:]
        except Cancelled:
            stats.stop_reason = CANCELLED
            raise
        except (KeyboardInterrupt, GeneratorExit):
            stats.stop_reason = INTERRUPTED
            raise
        finally:
            stats.generated_tokens = len(self.tokens)
            if self.drafting is not None:
                stats.draft = self.drafting.counts()
                # drafts nobody kept leave the context: callers read what it holds from n_past
                if self._in_context is not None and model.n_past > self._in_context:
                    model.truncate(self._in_context)

    def _evaluate(self, token: int, room: int):
        """Evaluate the sampled token, with drafts after it where drafting proposes any: the
        logits rows for the positions after it and the drafts, and the drafts."""
        drafts = (self.drafting.propose(self.history, self._in_context, room, cancel=self.cancel)
                  if self.drafting else [])
        self._rewind(self._in_context)  # the cache drafter leaves its own passes in the context
        if not drafts:
            rows = [self.model.eval([token], cancel=self.cancel)]
            self._in_context += 1
            return rows, []
        rows = self.model.eval([token] + drafts, cancel=self.cancel, all_logits=True)
        self._in_context += 1
        self.drafting.drafted += len(drafts)
        self.drafting.rounds += 1
        return list(rows), drafts

    def _truncate(self, n: int) -> int:
        """Keep at most the history's first n tokens, never part of an image (an image is evaluated
        whole); returns what the context kept (fewer where a sliding-window layer no longer holds
        what n needs, or a hybrid model went back to a state checkpoint)."""
        while True:
            n = cut_before_images(n, self.prompt, self.image_token)
            self.model.truncate(n)
            if self.model.n_past == n:
                return n
            n = self.model.n_past

    def _rewind(self, n: int) -> None:
        """Cut the context back to the history's first n tokens (a sliding-window model may
        forget more: what it forgot is evaluated again, its images with it)."""
        model = self.model
        if model.n_past <= n:
            return
        kept = self._truncate(n)
        if kept < n:
            model.eval(self.history[kept:n], cancel=self.cancel,
                       images=images_from(kept, self.prompt[:n], self.images, self.image_token))

    def _stop_string_at(self, start: int) -> int:
        found = [i for i in (self.text.find(s, max(0, start)) for s in self.stop_strings) if i >= 0]
        return min(found, default=-1)


def _write_trace(model, path: str, history: List[int], prompt_tokens: int, routing) -> None:
    from .trace import write_trace

    cfg = model.config
    header = {"model": os.path.basename(model.container.path), "n_layers": cfg["n_layers"],
              "n_experts": cfg["n_experts"], "top_k": cfg["top_k"], "dense_layers": cfg["dense_layers"],
              "prompt_tokens": prompt_tokens}
    tokens = [history[p] for p in routing.positions]
    write_trace(path, header, tokens, routing.positions, routing.experts, routing.weights, routing.predicted)
