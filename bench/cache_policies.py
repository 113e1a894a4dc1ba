"""Expert-cache policies replayed on a model's routing: hit rates against Belady's optimum.

    python bench/cache_policies.py MODEL.emoe [--text FILE ...] [--tokens 511] --slots 96 192
        [--policies lru edgemoe recent belady]

Traces MODEL's routing over the first --tokens tokens of each --text (`held-out`, the default: the
demo model's held-out text), one text after the other (several texts: routing that drifts), as
bench/routing_stats.py does, then replays it one step per token and layer with
tools/simulate_cache.py's policies, whose counters equal the engine's
(tests/test_simulate_cache.py). Prints one markdown row per slot count.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from compare import steps_of_trace
from routing_stats import trace_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import simulate_cache as sim  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--text", action="append", default=None)
    p.add_argument("--tokens", type=int, default=511, help="per text")
    p.add_argument("--slots", type=int, nargs="+", required=True)
    p.add_argument("--policies", nargs="+", default=["lru", "edgemoe", "recent", "belady"], choices=list(sim.POLICIES))
    a = p.parse_args()
    texts = [None if t == "held-out" else t for t in (a.text or ["held-out"])]
    experts = np.concatenate([trace_model(a.model, text, a.tokens)[1] for text in texts])
    T, L, _ = experts.shape
    _, steps = steps_of_trace(experts, 0)  # every token one step per MoE layer, as decoding runs
    print(f"{os.path.basename(a.model)}: {T} tokens, {len(steps) // T} MoE layers")
    print("| slots | " + " | ".join(a.policies) + " |")
    print("|---|" + "---|" * len(a.policies))
    for slots in a.slots:
        rates = [sim.simulate(steps, L, slots, sim.POLICIES[name](L, steps))["hit_rate"] for name in a.policies]
        print(f"| {slots} | " + " | ".join(f"{r:.1%}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
