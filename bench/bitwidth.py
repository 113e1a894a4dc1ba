"""Expert bit width against accuracy: held-out perplexity and size, uniform widths and adapted mixes.

    python bench/bitwidth.py HF_FOLDER HELDOUT_TEXT [--bits f32 8 4 3 2] [--calib TEXT --targets 15MiB 12MiB]
        [--window 512] [--stride 256] [--max-tokens 20000] [--write bench/RESULTS.md] [--plot bench/bitwidth.png]

Converts HF_FOLDER once per uniform width and once per adapted target (`edgemoe convert --bits auto
--target-size T` on the calibration text; resident weights 8-bit in every case) and scores the
held-out text with `edgemoe perplexity`'s sliding window.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import edgemoe  # noqa: E402
from edgemoe.format.container import open_container  # noqa: E402
from edgemoe.convert import convert_hf  # noqa: E402
from edgemoe.offline.perplexity import perplexity, read_text  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import report  # noqa: E402


def expert_bytes(path: str) -> int:
    return sum(b["size"] for row in open_container(path).experts for b in row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("heldout")
    p.add_argument("--bits", nargs="+", default=["f32", "8", "4", "3", "2"])
    p.add_argument("--calib", default=None, help="calibration text for the adapted (--bits auto) rows")
    p.add_argument("--targets", nargs="*", default=[], help="expert-byte targets for adapted mixes, e.g. 15MiB 12MiB")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=20000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args()
    text = read_text(a.heldout)
    rows = []
    from edgemoe.budget import parse_size
    from edgemoe.convert.auto_bits import plan_expert_types

    runs = [(b, None) for b in a.bits] + [("auto " + t, parse_size(t)) for t in a.targets]
    with tempfile.TemporaryDirectory() as tmp:
        for bits, target in runs:
            path = os.path.join(tmp, "m.emoe")
            if target is None:
                convert_hf(a.src, path, bits=bits, resident_bits="8", progress=False)
            else:
                types, _ = plan_expert_types(a.src, read_text(a.calib), target_size=target, progress=False)
                convert_hf(a.src, path, bits="8", resident_bits="8", progress=False, expert_types=types)
            model = edgemoe.load(path, threads=a.threads)
            ids = model.tokenize(text, add_special_tokens=False)[: a.max_tokens]
            window = min(a.window, model.ctx_size)
            r = perplexity(model, ids, window, a.stride)
            rows.append((bits, expert_bytes(path), os.path.getsize(path), r["perplexity"], r["tokens"]))
            print(f"{bits:>4}: experts {rows[-1][1] / 2**20:.2f} MiB, file {rows[-1][2] / 2**20:.2f} MiB, "
                  f"perplexity {r['perplexity']:.3f} ({r['tokens']} tokens)", flush=True)
    cmd = "python bench/bitwidth.py " + " ".join(sys.argv[1:])
    lines = [f"\n### Expert bit width vs perplexity ({datetime.date.today()})\n",
             f"Command: `{cmd}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPUs; held-out text "
             f"scored with a {a.window}-token window, stride {a.stride} (`edgemoe perplexity`); resident "
             f"weights 8-bit in every row.\n",
             "| experts | expert MiB | file MiB | perplexity |", "|---|---|---|---|"]
    lines += [f"| {b} | {eb / 2**20:.2f} | {fb / 2**20:.2f} | {ppl:.3f} |" for b, eb, fb, ppl, _ in rows]
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for label, pick, style in (("uniform", lambda r: not r[0].startswith("auto"), "o-"),
                                   ("adapted (--bits auto)", lambda r: r[0].startswith("auto"), "s--")):
            sel = sorted((r for r in rows if pick(r) and r[0] != "f32"), key=lambda r: r[1])
            if sel:
                ax.plot([r[1] / 2**20 for r in sel], [r[3] for r in sel], style, label=label)
                for b, eb, _, ppl, _ in sel:
                    ax.annotate(b.replace("auto ", ""), (eb / 2**20, ppl), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        ax.set_xlabel("routed expert bytes, MiB")
        ax.set_ylabel("held-out perplexity")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        lines.append(f"\n![size against perplexity]({os.path.basename(a.plot)})")
    report("\n".join(lines) + "\n", a.write)


if __name__ == "__main__":
    main()
