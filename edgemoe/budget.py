"""Memory budgets: parsing "1.5GB"-style sizes, the memory this machine has, and the default budget.

The plan itself (csrc/runtime/memory_plan.h) is the budget's promise: resident weights + KV
cache + scratch + expert slots <= budget. The Python interpreter and the tokenizer are outside
it (tens of MB, measured in bench/).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

from .errors import BudgetError

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}


def parse_size(value: Union[int, float, str]) -> int:
    """Bytes from an int or a string like "1.5GB" (decimal), "1.5GiB" or "1.5G" (binary)."""
    if isinstance(value, bool):
        raise BudgetError(f"invalid memory size {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise BudgetError(f"memory size must be positive, got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise BudgetError(f"invalid memory size {value!r}: use bytes or a number with a unit, e.g. 1.5GB, 800MiB")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise BudgetError(f"memory size must be positive, got {value!r}")
    return size


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class MemoryPlan:
    """The engine's memory plan, as the C++ runtime computes it (csrc/runtime/memory_plan.h)."""
    resident_bytes: int
    kv_cache_bytes: int
    kv_layer_bytes: List[int]  # per layer: a sliding-window layer holds only its window
    scratch_bytes: int
    staging_bytes: int   # buffers for compressed expert blobs
    vision_bytes: int    # one image through the vision tower at max_image_pixels (0: no tower)
    slot_bytes: int
    n_slots: int
    min_slots: int
    total_experts: int
    fixed_bytes: int     # all but the expert slots
    min_budget: int      # fixed_bytes + min_slots slots
    total_bytes: int     # fixed_bytes + n_slots slots


# Without a memory_budget the engine may use this share of the memory available at load time:
# the rest is headroom for the Python process, the page cache that streams experts, and others.
DEFAULT_BUDGET_SHARE = 0.8


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _cgroup_room(folder: str, limit_name: str, usage_name: str, inactive_key: str) -> Optional[int]:
    """limit - usage + reclaimable page cache of one cgroup folder, or None without a limit."""
    limit = _read_int(os.path.join(folder, limit_name))
    usage = _read_int(os.path.join(folder, usage_name))
    if limit is None or usage is None or limit >= 1 << 60:  # v1 reports "no limit" as a huge number
        return None
    inactive = 0
    try:
        with open(os.path.join(folder, "memory.stat")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, limit - usage + inactive)


def _cgroup_available(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> Optional[int]:
    """Room left under the memory limits of this process's cgroup and its ancestors (v1 or v2),
    or None without a limit. Page cache the kernel can reclaim (inactive file pages) counts as
    room, as it does in MemAvailable."""
    try:
        with open(proc_cgroup) as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    rooms = []
    for _, controllers, path in entries:
        if "memory" in controllers.split(","):  # v1: .../memory/<path>
            base, names = os.path.join(root, "memory"), ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                         "total_inactive_file")
        elif controllers == "" and os.path.exists(os.path.join(root, "cgroup.controllers")):  # v2 at the root
            base, names = root, ("memory.max", "memory.current", "inactive_file")
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):  # the cgroup itself, then each ancestor
            room = _cgroup_room(os.path.join(base, *parts[:depth]), *names)
            if room is not None:
                rooms.append(room)
    return min(rooms) if rooms else None


def available_memory() -> int:
    """Bytes this process can still allocate without swapping or meeting the OOM killer: the
    system's MemAvailable, or less under a cgroup memory limit (containers, systemd slices).
    EDGEMOE_AVAILABLE_MEMORY overrides it (tests, or to plan for another machine)."""
    forced = os.environ.get("EDGEMOE_AVAILABLE_MEMORY")
    if forced:
        return parse_size(forced)
    import psutil

    avail = psutil.virtual_memory().available
    cgroup = _cgroup_available() if os.name == "posix" else None
    return min(avail, cgroup) if cgroup is not None else avail


def check_fits_in_memory(plan: "MemoryPlan", explicit_budget: bool, avail: int) -> None:
    """Refuse at load, with the figures, a plan the machine cannot hold (`avail`: from
    available_memory()): the alternative is the OOM killer (or heavy swapping) some time into
    generation."""
    if plan.total_bytes <= avail:
        return
    if plan.min_budget > avail:
        raise BudgetError(f"this model needs at least {format_size(plan.min_budget)} of memory "
                          f"({format_size(plan.fixed_bytes)} resident weights, KV cache and scratch, plus one "
                          f"layer's experts) but only {format_size(avail)} is available; lower ctx_size, free "
                          f"memory, or convert with fewer bits")
    if explicit_budget:
        advice = f"pass a memory_budget of at most {format_size(avail)}"
    else:
        advice = f"at most {(avail - plan.fixed_bytes) // plan.slot_bytes} expert slots fit (cache_experts)"
    raise BudgetError(f"the memory plan ({format_size(plan.total_bytes)}) exceeds the {format_size(avail)} "
                      f"of memory available; {advice}")


# A default context (no ctx_size given) is halved, down to this many tokens, until the model's
# minimum fits the budget and the KV cache takes at most KV_SHARE of it: a tight budget gets a
# shorter context with a notice, not a refusal, and keeps most of itself for expert slots.
MIN_DEFAULT_CTX = 256
KV_SHARE = 0.25


def default_ctx(plan_at: Callable[[int], "MemoryPlan"], ctx: int, room: int) -> int:
    """The default context for `room` bytes of budget, starting from `ctx` (plan_at(c): the plan
    without a budget at context c)."""
    while ctx > MIN_DEFAULT_CTX:
        plan = plan_at(ctx)
        if plan.min_budget <= room and plan.kv_cache_bytes <= room * KV_SHARE:
            break
        ctx = max(MIN_DEFAULT_CTX, ctx // 2)
    return ctx


def default_budget(min_budget: int, avail: int) -> int:
    """The budget used when none is given: a share of the available memory `avail`, but never
    less than the model's minimum (check_fits_in_memory then decides whether even that fits)."""
    return max(min_budget, int(avail * DEFAULT_BUDGET_SHARE))
