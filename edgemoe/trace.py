"""Routing traces: which experts every token chose in every layer (docs/TRACE.md).

A trace is JSON Lines: a header object, then one object per evaluated token.
Traces feed tools/simulate_cache.py and the predictor measurements.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import FormatError

TRACE_FORMAT = "edgemoe-trace"
TRACE_VERSION = 1


def write_trace(path: str, header: Dict[str, Any], token_ids: Sequence[int], positions: np.ndarray,
                experts: np.ndarray, weights: np.ndarray, predicted: Optional[np.ndarray] = None) -> None:
    """Write a trace atomically (temporary file, then rename).

    `predicted` holds (row, layer, expert) triples of what the predictor asked
    to prefetch; rows with any become a `predicted` field (one list per layer).
    """
    if not (len(token_ids) == len(positions) == len(experts) == len(weights)):
        raise ValueError("trace arrays disagree in length")
    n_layers = experts.shape[1] if len(experts) else 0
    guesses: Dict[int, List[List[int]]] = {}
    for row, layer, expert in (predicted if predicted is not None else []):
        lists = guesses.setdefault(int(row), [[] for _ in range(n_layers)])
        if expert not in lists[layer]:
            lists[layer].append(int(expert))
    tmp = f"{path}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(dict(header, format=TRACE_FORMAT, version=TRACE_VERSION)) + "\n")
        for row, (tok, pos, ex, w) in enumerate(zip(token_ids, positions, experts, weights)):
            # a dense layer routes nowhere: its lists are empty
            record = {"pos": int(pos), "token": int(tok), "experts": [[int(e) for e in r if e >= 0] for r in ex],
                      "weights": [[round(float(x), 6) for e, x in zip(re, rw) if e >= 0] for re, rw in zip(ex, w)]}
            if row in guesses:
                record["predicted"] = guesses[row]
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def read_trace(path: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The header and the per-token records; FormatError if it is not a trace."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: not a readable trace: {e}") from None
    if not lines or lines[0].get("format") != TRACE_FORMAT:
        raise FormatError(f"{path}: not an edgemoe trace")
    if lines[0].get("version") != TRACE_VERSION:
        raise FormatError(f"{path}: trace version {lines[0].get('version')} is not supported")
    return lines[0], lines[1:]

