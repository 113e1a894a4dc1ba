"""A generation's figures for a person, one line per phase as llama.cpp prints its timings: how
fast, where each token's time went (computing, or waiting for experts to arrive from storage),
how many experts the cache already held and how much was read; then the memory in use.
`--stats-json` (generate) and `/stats json` (chat) give the raw counters instead."""
from __future__ import annotations

import resource
from typing import Dict, List

from ..generate import GenerationStats, per_token

MiB = 1 << 20


def _phase(name: str, tokens: int, seconds: float, engine: Dict[str, float], per_generated: bool = False) -> str:
    rate = tokens / seconds if seconds else 0.0
    line = f"{name:<8} {tokens} tokens in {seconds:.2f} s, {rate:.1f} tok/s"
    if not engine.get("tokens") or (per_generated and not tokens):
        return line
    t = per_token(engine, tokens if per_generated else None)
    line += (f" | {t['compute_ms'] + t['cache_ms'] + t['io_wait_ms']:.1f} ms/token: compute {t['compute_ms']:.1f}, "
             f"expert cache {t['cache_ms']:.2f}, waiting for storage {t['io_wait_ms']:.1f}")
    if t["cache_hit_rate"] is not None:
        line += f" | experts {100 * t['cache_hit_rate']:.1f} % cached, {t['mb_read']:.2f} MB read/token"
    if engine.get("skipped_choices"):
        line += f" | LOSSY: {int(engine['skipped_choices'])} expert choices skipped"
    if engine.get("low_bit_choices"):
        line += f" | LOSSY: {int(engine['low_bit_choices'])} expert choices from low-bit copies"
    return line


def _draft_line(draft: Dict[str, int]) -> str:
    kept = 100 * draft["accepted"] / draft["drafted"] if draft["drafted"] else 0.0
    per_pass = (draft["accepted"] + draft["rounds"]) / draft["rounds"] if draft["rounds"] else 0.0
    return (f"{'draft':<8} {draft['drafted']} tokens drafted, {draft['accepted']} kept ({kept:.0f} %), "
            f"{draft['rounds']} verify passes giving {per_pass:.2f} tokens each")


def timing_lines(stats: GenerationStats, model) -> List[str]:
    """The prefill, decode and memory lines of one generation by `model`."""
    plan = model.plan
    rss = model.stats().get("rss_bytes", 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return [
        _phase("prefill", stats.evaluated_tokens, stats.prefill_s, stats.prefill_engine),
        # with drafting, per generated token: its passes also evaluate drafts that are not kept
        _phase("decode", stats.generated_tokens, stats.decode_s, stats.decode_engine, per_generated=bool(stats.draft)),
    ] + ([_draft_line(stats.draft)] if stats.draft else []) + [
        f"{'memory':<8} plan {plan.total_bytes / MiB:.0f} MiB ({plan.n_slots} expert slots of "
        f"{plan.slot_bytes / MiB:.2f} MiB), RSS {rss / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB",
    ] + _doctor_line(model)


def _doctor_line(model) -> List[str]:
    """`edgemoe doctor`'s prediction for this plan, beside the measured decode line, where the
    doctor has probed this model's storage."""
    from .doctor import predict_decode, saved_storage_probe

    probe = saved_storage_probe(model.container.path)
    if not probe or "memory_gbs" not in probe:
        return []
    p = predict_decode(model.container, model.plan, probe["read_gbs"], probe["memory_gbs"])
    return [f"{'doctor':<8} predicted at least {p['tok_s']:.1f} tok/s decode at this plan ({100 * p['hit_rate']:.0f} % "
            f"of experts cached, {p['mb_read']:.1f} MB read/token; storage probed at {probe['read_gbs']:.2f} GB/s)"]
