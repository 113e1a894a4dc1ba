"""Replay routing traces against expert-cache policies and report hit rates.

    python tools/simulate_cache.py TRACE.jsonl [TRACE2.jsonl ...] --slots 16 32 64
        [--policies lru lfu edgemoe belady] [--decode-only]

Tokens are replayed one at a time, layer by layer, the way the engine decodes:
within a layer the experts already cached are used first (in index order),
then the misses (likewise), whose slots are never taken from the layer's own
experts: the engine pins the cached ones and claims slots for all the misses
before any of them is read, to read them side by side. Belady's policy (evict
the expert whose next use is farthest away) needs the future and is the upper
bound any real policy can reach.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Callable, Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from edgemoe.trace import read_trace  # noqa: E402

Key = Tuple[int, int]  # (layer, expert)


def access_sequence(records: Sequence[dict]) -> List[List[Key]]:
    """Per (token, layer) step, the experts chosen, as one list per step."""
    return [[(layer, e) for e in chosen] for rec in records for layer, chosen in enumerate(rec["experts"]) if chosen]


class Policy:
    """Chooses a victim among the cached experts. Subclasses keep what they need."""

    name = ""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.clock = 0

    def on_step(self, layer: int, step: int) -> None:
        """A step of `layer` begins (before any of its lookups, as the engine's cursor moves)."""

    def on_access(self, key: Key, step: int) -> None:
        self.clock += 1

    def victim(self, cached: Sequence[Key], current_layer: int, step: int) -> Key:
        raise NotImplementedError


class LRU(Policy):
    name = "lru"

    def __init__(self, n_layers: int):
        super().__init__(n_layers)
        self.last: Dict[Key, int] = {}

    def on_access(self, key, step):
        super().on_access(key, step)
        self.last[key] = self.clock

    def victim(self, cached, current_layer, step):
        return min(cached, key=lambda k: self.last[k])


class LFU(Policy):
    """Least frequently used over the whole history; ties go to the least recent."""

    name = "lfu"

    def __init__(self, n_layers: int):
        super().__init__(n_layers)
        self.count: Dict[Key, int] = defaultdict(int)
        self.last: Dict[Key, int] = {}

    def on_access(self, key, step):
        super().on_access(key, step)
        self.count[key] += 1
        self.last[key] = self.clock

    def victim(self, cached, current_layer, step):
        return min(cached, key=lambda k: (self.count[k], self.last[k]))


class EdgeMoE(LFU):
    """EdgeMoE's policy: an expert's activation frequency weighed against how soon its layer comes again.

    In token-by-token decoding, layer l is next needed after (l - current - 1) mod L + 1
    layers; an expert of a far layer is worth less now than an equally frequent
    one of the next layer. Priority = frequency / distance; the lowest is evicted.
    """

    name = "edgemoe"

    def distance(self, layer: int, current_layer: int) -> int:
        return (layer - current_layer - 1) % self.n_layers + 1

    def victim(self, cached, current_layer, step):
        return min(cached, key=lambda k: (self.count[k] / self.distance(k[0], current_layer), self.last[k]))


class Recent(EdgeMoE):
    """EdgeMoE's weighing by layer distance, over a usage rate that forgets: each visit of its
    layer multiplies an expert's rate by `decay` and adds 1 - decay if the expert was chosen (an
    exponential moving average of "chosen at this layer's step"), so routing that drifts (a topic
    that changes) moves the cache along, where lifetime counts hold on to the past."""

    name = "recent"
    decay = 0.99  # the engine's kRecentDecay (csrc/store/expert_store.h)

    def __init__(self, n_layers: int):
        super().__init__(n_layers)
        self.visits: Dict[int, int] = defaultdict(int)   # steps of each layer so far
        self.rate: Dict[Key, Tuple[float, int]] = {}      # (rate, visits of its layer when last updated)

    def current_rate(self, key: Key) -> float:
        r, at = self.rate.get(key, (0.0, 0))
        return r * self.decay ** (self.visits[key[0]] - at)

    def on_step(self, layer, step):
        self.visits[layer] += 1

    def on_access(self, key, step):
        super().on_access(key, step)
        self.rate[key] = (self.current_rate(key) + (1 - self.decay), self.visits[key[0]])

    def victim(self, cached, current_layer, step):
        return min(cached, key=lambda k: (self.current_rate(k) / self.distance(k[0], current_layer), self.last[k]))


class PerLayerRecent(Recent):
    """The `recent` weighing inside per-layer pools: each layer owns an equal share of the slots,
    and a miss evicts one of its own layer's experts once the layer holds its share (a global
    pool lets busy layers take slots from quiet ones; this measures what that is worth)."""

    name = "per-layer"

    def __init__(self, n_layers: int, slots: int):
        super().__init__(n_layers)
        self.share = max(1, slots // n_layers)

    def victim(self, cached, current_layer, step):
        own = [k for k in cached if k[0] == current_layer]
        if len(own) >= self.share:
            return min(own, key=lambda k: (self.current_rate(k), self.last[k]))
        return super().victim(cached, current_layer, step)


class RouterLookahead(Recent):
    """An upper bound for eviction that heeds the router's guess of the next layer(s): the `recent`
    policy, but an expert the next `horizon` layer steps will use (the trace's truth, which no
    router guess beats) is evicted only when nothing else can be. Measures what reading the
    router ahead could buy before anyone builds it (bench/RESULTS.md, "Cache policies")."""

    def __init__(self, n_layers: int, steps: List[List[Key]], horizon: int):
        super().__init__(n_layers)
        self.steps, self.horizon = steps, horizon
        self.name = f"lookahead{horizon}"

    def victim(self, cached, current_layer, step):
        soon = {k for s in self.steps[step + 1:step + 1 + self.horizon] for k in s}
        return min(cached, key=lambda k: (k in soon, self.current_rate(k) / self.distance(k[0], current_layer),
                                          self.last[k]))


class Belady(Policy):
    name = "belady"

    def __init__(self, n_layers: int, steps: List[List[Key]]):
        super().__init__(n_layers)
        # next_use[step][key]: the first step after `step` that uses key
        self.uses: Dict[Key, List[int]] = defaultdict(list)
        for i, step_keys in enumerate(steps):
            for k in step_keys:
                self.uses[k].append(i)
        self.cursor: Dict[Key, int] = defaultdict(int)

    def next_use(self, key: Key, step: int) -> float:
        uses, i = self.uses[key], self.cursor[key]
        while i < len(uses) and uses[i] <= step:
            i += 1
        self.cursor[key] = i
        return uses[i] if i < len(uses) else float("inf")

    def victim(self, cached, current_layer, step):
        return max(cached, key=lambda k: self.next_use(k, step))


def simulate(steps: List[List[Key]], n_layers: int, slots: int, make_policy: Callable[..., Policy]) -> Dict[str, float]:
    policy = make_policy(slots)
    cached: set = set()
    hits = misses = 0
    for i, keys in enumerate(steps):
        layer = keys[0][0]
        policy.on_step(layer, i)
        chosen = sorted(set(keys), key=lambda k: k[1])
        order = [k for k in chosen if k in cached] + [k for k in chosen if k not in cached]
        for key in order:
            if key in cached:
                hits += 1
            else:
                misses += 1
                if len(cached) >= slots:
                    # (a step wider than the cache, as a whole prompt's is, evicts its own as the engine's prefill does)
                    others = [k for k in cached if k not in chosen] or list(cached)
                    cached.remove(policy.victim(others, layer, i))
                cached.add(key)
            policy.on_access(key, i)
    total = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}


# name -> (n_layers, steps) -> (slots) -> a fresh policy
POLICIES = {
    "lru": lambda L, steps: lambda slots: LRU(L),
    "lfu": lambda L, steps: lambda slots: LFU(L),
    "edgemoe": lambda L, steps: lambda slots: EdgeMoE(L),
    "recent": lambda L, steps: lambda slots: Recent(L),
    "per-layer": lambda L, steps: lambda slots: PerLayerRecent(L, slots),
    "lookahead1": lambda L, steps: lambda slots: RouterLookahead(L, steps, 1),
    "lookahead3": lambda L, steps: lambda slots: RouterLookahead(L, steps, 3),
    "belady": lambda L, steps: lambda slots: Belady(L, steps),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+")
    p.add_argument("--slots", type=int, nargs="+", required=True)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--decode-only", action="store_true", help="skip each trace's prompt tokens")
    a = p.parse_args(argv)
    steps: List[List[Key]] = []
    n_layers = None
    for path in a.traces:
        header, records = read_trace(path)
        n_layers = header["n_layers"]
        if a.decode_only:
            records = records[header.get("prompt_tokens", 0):]
        steps += access_sequence(records)
    print(f"{len(steps)} layer steps from {len(a.traces)} trace(s)")
    print("| slots | " + " | ".join(a.policies) + " |")
    print("|---|" + "---|" * len(a.policies))
    for slots in a.slots:
        rates = [simulate(steps, n_layers, slots, POLICIES[name](n_layers, steps))["hit_rate"] for name in a.policies]
        print(f"| {slots} | " + " | ".join(f"{r:.1%}" for r in rates) + " |")


if __name__ == "__main__":
    main()
