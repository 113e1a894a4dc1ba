"""The architecture-neutral model description stored in a container.

Converters map each source format's config onto its fields; the runtime reads only these.
The fields themselves (names, bounds, defaults) are defined once, in the C++ runtime
(csrc/model/config.cpp); this module asks it to check a config.
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..errors import FormatError


def validate_config(cfg: Any, where: str = "model") -> Dict[str, Any]:
    """The config checked, with the fields it leaves out at their defaults; FormatError naming the
    first bad field. Numbers keep the precision they were given (the runtime computes in float32)."""
    from .. import _core

    if not isinstance(cfg, dict):
        raise FormatError(f"{where}: invalid model config: missing or not an object")
    try:
        return _core.check_config(cfg)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None


def moe_layers(cfg: Dict[str, Any]) -> List[int]:
    """The layers that route to experts, ascending: all but the config's dense_layers (those have
    a resident dense MLP and no experts)."""
    dense = set(cfg.get("dense_layers") or ())
    return [l for l in range(cfg["n_layers"]) if l not in dense]
