"""The routing profile as a container's manifest stores it (written by `edgemoe profile`, read
when a model loads): encode_profile() makes the record, profile_arrays() turns it back into the
arrays the engine's predictors and cache policies take."""
from __future__ import annotations

import base64
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import FormatError

# 2: the per-token tables packed as base64 little-endian arrays (version 1 kept them as JSON
# lists: parsing 200,000 tokens' worth made some 20 MB of Python objects that outlived the load,
# beyond the memory budget). Version 1 records still load.
PROFILE_VERSION = 2


def _pack(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)


def encode_profile(stats: Dict[str, np.ndarray], ids: Sequence[int], window: int, source: str) -> Dict[str, Any]:
    """The manifest record of profile.routing_statistics() over the calibration ids."""
    seen = np.unique(np.asarray(ids))
    return {
        "version": PROFILE_VERSION,
        "source": source,
        "tokens": len(ids),
        "window": window,
        "freq": np.round(stats["freq"], 6).tolist(),
        "next_layer": np.round(stats["next_layer"], 5).tolist(),
        # sparse: only tokens that occurred: their ids, then [seen, layers, top_k] of each table
        "token_ids": _pack(seen, "<i4"),
        "token_experts": _pack(stats["token_experts"][seen], "<i2"),
        "token_shares": _pack(stats["token_shares"][seen], "<f2"),
    }


def profile_arrays(manifest: Dict[str, Any], cfg: Dict[str, Any]
                   ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The stored profile as the engine's arrays (freq, next_layer, token_experts,
    token_shares) for a model of config `cfg`, or None; FormatError if it is malformed. A
    profile written before token shares were stored counts every token expert as certain."""
    p = manifest.get("profile")
    if p is None:
        return None
    L, E, K, V = cfg["n_layers"], cfg["n_experts"], cfg["top_k"], cfg["vocab"]
    try:
        if p.get("version") not in (1, PROFILE_VERSION):
            raise ValueError(f"profile version {p.get('version')}")
        freq = np.asarray(p["freq"], dtype=np.float32).reshape(L, E)
        next_layer = np.asarray(p["next_layer"], dtype=np.float32).reshape(max(L - 1, 0), E, E)
        tokens = np.full((V, L, K), -1, dtype=np.int32)
        if p["version"] == 1:
            for t, rows in p["token_experts"].items():
                tokens[int(t)] = np.asarray(rows, dtype=np.int32).reshape(L, K)
            shares = (tokens >= 0).astype(np.float32)
            for t, rows in p.get("token_shares", {}).items():
                shares[int(t)] = np.asarray(rows, dtype=np.float32).reshape(L, K)
        else:
            seen = _unpack(p["token_ids"], "<i4")
            if len(seen) and (seen.min() < 0 or seen.max() >= V):
                raise ValueError("a token id outside the vocabulary")
            tokens[seen] = _unpack(p["token_experts"], "<i2").reshape(len(seen), L, K)
            shares = (tokens >= 0).astype(np.float32)
            if "token_shares" in p:
                shares[seen] = _unpack(p["token_shares"], "<f2").reshape(len(seen), L, K)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, base64.binascii.Error) as e:
        raise FormatError(f"the container's routing profile is malformed ({e}); run `edgemoe profile` again") from None
    if (tokens.min() < -1 or tokens.max() >= E or not np.isfinite(freq).all() or not np.isfinite(next_layer).all()
            or not np.isfinite(shares).all() or (shares < 0).any() or (shares > 1).any() or (freq < 0).any()
            or (freq > K).any() or (next_layer < 0).any()):
        raise FormatError("the container's routing profile is malformed; run `edgemoe profile` again")
    return freq, next_layer, tokens, shares
