"""Memory budgets: parsing "1.5GB"-style sizes and planning how many expert slots fit.

The plan is the budget's promise: resident weights + KV cache + scratch +
expert slots <= budget. The Python interpreter and the tokenizer are outside
it (tens of MB, measured in bench/).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

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


@dataclass
class MemoryPlan:
    resident_bytes: int
    kv_cache_bytes: int
    scratch_bytes: int
    slot_bytes: int
    n_slots: int
    min_slots: int

    @property
    def fixed_bytes(self) -> int:
        return self.resident_bytes + self.kv_cache_bytes + self.scratch_bytes

    @property
    def min_budget(self) -> int:
        return self.fixed_bytes + self.min_slots * self.slot_bytes

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + self.n_slots * self.slot_bytes


def plan_memory(resident: int, kv: int, scratch: int, slot_bytes: int, total_experts: int, top_k: int,
                budget: Optional[Union[int, str]], cache_experts: Optional[int]) -> MemoryPlan:
    """Choose the number of expert slots. The minimum is one layer's top-k experts."""
    plan = MemoryPlan(resident, kv, scratch, slot_bytes, total_experts, top_k)
    if cache_experts is not None:
        if isinstance(cache_experts, bool) or not isinstance(cache_experts, int):
            raise BudgetError(f"cache_experts must be an integer, got {cache_experts!r}")
        if cache_experts < top_k:
            raise BudgetError(f"cache_experts={cache_experts} is below the minimum of {top_k} "
                              f"(one layer's top-k experts)")
        plan.n_slots = min(cache_experts, total_experts)
    if budget is not None:
        limit = parse_size(budget)
        if limit < plan.min_budget:
            raise BudgetError(
                f"memory budget {format_size(limit)} is below this model's minimum of {format_size(plan.min_budget)} "
                f"({plan.min_budget} bytes: resident weights {format_size(resident)}, KV cache {format_size(kv)}, "
                f"scratch {format_size(scratch)}, {top_k} expert slots of {format_size(slot_bytes)}); "
                f"raise the budget or lower ctx_size")
        fit = (limit - plan.fixed_bytes) // slot_bytes
        plan.n_slots = min(plan.n_slots, fit)
    return plan
