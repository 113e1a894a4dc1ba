"""Why q8 is symmetric and q4 asymmetric: measured reconstruction error of each choice.

    python bench/quant_error.py [--write bench/RESULTS.md]

For group size 32 with fp16 scales, compares symmetric (w = d*q) and
asymmetric (w = d*q + m) codes at 8 and 4 bits on weight matrices of three
kinds: Gaussian, heavy-tailed (Student t, df=4: LLM weights have outliers),
and the real expert weights of the committed test fixtures. The shipped
encodings come from edgemoe.format.quant; the alternatives are computed here the
same way (fp16-rounded parameters, round-to-nearest).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from edgemoe.format import quant  # noqa: E402
from edgemoe.convert.safetensors_reader import SafetensorsFile  # noqa: E402
from bench_util import report

G = quant.GROUP


def _f16(x):
    return x.astype(np.float16).astype(np.float32)


def symmetric(w: np.ndarray, bits: int) -> np.ndarray:
    levels = 2 ** (bits - 1) - 1  # 127 or 7: zero exactly representable, one code unused
    g = w.reshape(-1, G)
    d = _f16(np.abs(g).max(1, keepdims=True) / levels)
    q = np.clip(np.round(np.divide(g, d, out=np.zeros_like(g), where=d > 0)), -levels, levels)
    return (q * d).reshape(w.shape)


def asymmetric(w: np.ndarray, bits: int) -> np.ndarray:
    levels = 2 ** bits - 1
    g = w.reshape(-1, G)
    lo, hi = g.min(1, keepdims=True), g.max(1, keepdims=True)
    m, d = _f16(lo), _f16((hi - lo) / levels)
    q = np.clip(np.round(np.divide(g - m, d, out=np.zeros_like(g), where=d > 0)), 0, levels)
    return (q * d + m).reshape(w.shape)


def shipped(w: np.ndarray, code: int) -> np.ndarray:
    return quant.dequantize(quant.quantize(w, code), code, w.shape)


def rel_rmse(w, w_hat):
    return float(np.sqrt(np.mean((w - w_hat) ** 2)) / np.sqrt(np.mean(w ** 2)))


def fixture_experts() -> np.ndarray:
    here = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    mats = []
    for path in sorted(glob.glob(os.path.join(here, "*", "*.safetensors"))):
        f = SafetensorsFile(path)
        for name in f.tensors:
            if ".experts." in name and name.endswith(".weight"):
                mats.append(f.get(name).reshape(-1, G))
    return np.concatenate(mats).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--write", default=None)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    sets = {
        "gaussian 1024x1024": rng.standard_normal((1024, 1024)).astype(np.float32) * 0.02,
        "student-t(4) 1024x1024": rng.standard_t(4, (1024, 1024)).astype(np.float32) * 0.02,
        "fixture expert weights": fixture_experts(),
    }
    rows = []
    for label, w in sets.items():
        rows.append((label,
                     rel_rmse(w, shipped(w, quant.Q8)), rel_rmse(w, asymmetric(w, 8)),
                     rel_rmse(w, symmetric(w, 4)), rel_rmse(w, shipped(w, quant.Q4))))
    table = ("| weights | q8 symmetric (shipped) | q8 asymmetric | q4 symmetric | q4 asymmetric (shipped) |\n"
             "|---|---|---|---|---|\n")
    table += "".join(f"| {r[0]} | {r[1]:.4f} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} |\n" for r in rows)
    bytes_per = {"q8 sym": 34, "q8 asym": 36, "q4 sym": 18, "q4 asym": 20}
    note = ("Relative RMS reconstruction error (lower is better), group 32, fp16 scale (and offset). "
            f"Bytes per 32 weights: {bytes_per}.\n")
    if args.write:
        report(f"\n### Quantization error ({datetime.date.today()})\n\n"
               f"Command: `python bench/quant_error.py --write {args.write}`  \n"
               f"Machine: {platform.machine()}, {platform.platform()}\n\n{note}\n{table}", args.write)
    else:
        print(note + table)


if __name__ == "__main__":
    main()
