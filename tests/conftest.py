"""Shared test fixtures: the committed tiny checkpoints, converted once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ARCH_FIXTURES = ["mixtral", "qwen2_moe", "qwen3_moe", "qwen3_moe_stacked", "olmoe"]


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """converted(name, bits) -> path of the fixture `name` converted with `--bits bits` (cached)."""
    from edgemoe.convert import convert_hf

    out_dir = tmp_path_factory.mktemp("converted")
    cache = {}

    def get(name: str, bits: str = "f32", resident_bits=None) -> str:
        key = (name, bits, resident_bits)
        if key not in cache:
            out = str(out_dir / f"{name}-{bits}-{resident_bits}.emoe")
            convert_hf(str(FIXTURES / name), out, bits=bits, resident_bits=resident_bits, progress=False)
            cache[key] = out
        return cache[key]

    return get


def reference(name: str):
    return np.load(FIXTURES / name / "reference.npz")
