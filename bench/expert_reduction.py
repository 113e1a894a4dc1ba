"""Expert pruning and merging against quantization at the same size: bytes of the routed experts
against held-out perplexity and KL divergence from the 8-bit model, then decode speed under a
memory limit for the best of each family.

    python bench/expert_reduction.py HF_FOLDER --calib CALIB.txt --heldout HELDOUT.jsonl
        [--max-tokens 20000] [--calib-tokens 16384] [--write bench/RESULTS.md]

Every variant keeps resident weights at 8 bits and is converted from HF_FOLDER: the 8-bit
reference; REAP pruning and MC-SMoE merging at 25 % and 50 % (experts 8-bit); uniform 4k, 3 and 2
bits; `--bits auto` at the sizes of the 25 % and 50 % reductions and of the combinations; pruning
or merging 25 % combined with 4k experts, and merging 25 % with `--bits auto` at that size; merging
50 % with rank-R corrections (--low-rank, at each of --ranks) and `--bits auto` at their sizes.
Pruning, merging and `--bits auto` are calibrated on CALIB.txt; scores are on HELDOUT (sliding
windows), KL against the 8-bit model's distributions on the same windows. A size counts the routed
experts' blobs and the merged members' corrections (resident, but expert weights all the same).
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
from edgemoe.convert import convert_hf  # noqa: E402
from edgemoe.convert.auto_bits import plan_expert_types  # noqa: E402
from edgemoe.offline.expert_merge import plan_merging  # noqa: E402
from edgemoe.offline.expert_reduce import plan_pruning  # noqa: E402
from edgemoe.offline.kl_divergence import SavedLogits, kl_divergence, save_logits  # noqa: E402
from edgemoe.offline.perplexity import read_text  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import decode_in_fresh_process, expert_bytes, report  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("--calib", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--max-tokens", type=int, default=20000, help="held-out tokens scored")
    p.add_argument("--calib-tokens", type=int, default=16384)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="decode runs per variant (the median is reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ranks", type=int, nargs="*", default=[4, 16], help="--low-rank ranks merged 50 % is tried with")
    p.add_argument("--write", default=None)
    a = p.parse_args()
    calib = read_text(a.calib)
    rows, paths = [], {}
    with tempfile.TemporaryDirectory(dir="/work") as tmp:
        def conv(name, bits="8", plan=None, types=None, extra=None):
            path = os.path.join(tmp, name.replace(" ", "_").replace("%", "") + ".emoe")
            convert_hf(a.src, path, bits=bits, resident_bits="8", progress=False, expert_plan=plan, expert_types=types,
                       extra_manifest=extra)
            paths[name] = path
            return path

        write8 = lambda path: convert_hf(a.src, path, bits="8", progress=False)  # noqa: E731
        base = conv("8-bit")
        model = edgemoe.load(base, threads=a.threads, kv_cache="f32")
        ids = model.tokenize(read_text(a.heldout), add_special_tokens=False)[:a.max_tokens]
        ref_path = os.path.join(tmp, "ref.npy")
        save_logits(model, ids, a.window, a.stride, ref_path)
        reference = SavedLogits(ref_path, ids, a.window, a.stride)
        del model
        full = expert_bytes(base)

        plans = {}
        for f in (0.25, 0.5):
            plans[f"prune {f:.0%}"] = plan_pruning(a.src, write8, calib, f, max_tokens=a.calib_tokens, progress=False)
            plans[f"merge {f:.0%}"] = plan_merging(a.src, write8, calib, f, max_tokens=a.calib_tokens)
        for rank in a.ranks:
            plans[f"merge 50% + rank {rank}"] = plan_merging(a.src, write8, calib, 0.5, max_tokens=a.calib_tokens,
                                                            low_rank=rank)
        variants = [("8-bit", "reference", lambda: base)]
        for name, plan in plans.items():
            family = "merge + low rank" if plan.low_rank else name.split()[0]
            variants.append((name, family, lambda name=name, plan=plan: conv(name, plan=plan)))
        for bits in ("4k", "3", "2"):
            variants.append((f"{bits}-bit", "quantize", lambda bits=bits: conv(f"{bits}-bit", bits=bits)))
        for f in (0.25, 0.5):
            target = int(full * (1 - f))
            name = f"auto at {1 - f:.0%} size"
            variants.append((name, "quantize", lambda name=name, target=target: conv(
                name, types=plan_expert_types(a.src, calib, target_size=target, progress=False,
                                              max_tokens=a.calib_tokens)[0])))
        for kind in ("prune", "merge"):
            name = f"{kind} 25% + 4k"
            variants.append((name, "combined", lambda name=name, kind=kind: conv(name, bits="4k",
                                                                               plan=plans[f"{kind} 25%"])))
        # The combinations' size, reached by widths alone, and by widths chosen over the merged experts.
        combined = int(full * 0.75 * 13.5 / 25.5)  # 4k experts: 4.5 of 8.5 bits
        variants.append(("auto at 40% size", "quantize", lambda: conv("auto at 40% size", types=plan_expert_types(
            a.src, calib, target_size=combined, progress=False, max_tokens=a.calib_tokens)[0])))
        variants.append(("merge 25% + auto at 40% size", "combined", lambda: conv(
            "merge 25% + auto at 40% size", plan=plans["merge 25%"], types=plan_expert_types(
                a.src, calib, target_size=combined, progress=False, max_tokens=a.calib_tokens,
                expert_plan=plans["merge 25%"])[0])))
        for rank in a.ranks:  # --bits auto at the corrected merges' sizes (they are converted before these run)
            name = f"auto at the size of rank {rank}"
            variants.append((name, "quantize", lambda name=name, rank=rank: conv(name, types=plan_expert_types(
                a.src, calib, target_size=expert_bytes(paths[f"merge 50% + rank {rank}"]), progress=False,
                max_tokens=a.calib_tokens)[0])))
        for name, family, make in variants:
            path = make()
            m = edgemoe.load(path, threads=a.threads, kv_cache="f32")
            r = kl_divergence(m, reference, ids, a.window, a.stride)
            rows.append({"name": name, "family": family, "bytes": expert_bytes(path), "ppl": r["perplexity"],
                         "kl": r["kl_mean"], "kl_p99": r["kl_p99"], "top1": r["top1_agreement"], "path": path})
            print(f"{name}: {rows[-1]['bytes'] / 2**20:.2f} MiB ppl {r['perplexity']:.2f} KL {r['kl_mean']:.4f}",
                  file=sys.stderr)

        # Decode under one memory limit for all: the 8-bit model's minimum budget plus a quarter of
        # its expert bytes; smaller models hold more of their experts in it.
        probe = edgemoe.load(base)
        budget = probe.info()["min_memory_budget"] + full // 4
        del probe
        best = {}
        for row in rows:
            if row["family"] == "reference":
                continue
            key = row["family"]
            if key not in best or row["kl"] < best[key]["kl"] or (
                    row["kl"] == best[key]["kl"] and row["bytes"] < best[key]["bytes"]):
                best[key] = row
        decode_ids = ids[:a.decode_tokens + 1]
        speeds = {}
        for row in [rows[0]] + list(best.values()):
            runs = sorted((decode_in_fresh_process(row["path"], decode_ids, memory_budget=budget, threads=a.threads)
                           for _ in range(a.repeats)), key=lambda s: s["tok_s"])
            speeds[row["name"]] = runs[len(runs) // 2]  # the median run

    lines = [f"### Expert pruning and merging against quantization at the same size ({datetime.date.today()})", "",
             f"`python bench/expert_reduction.py {' '.join(sys.argv[1:])}`", "",
             f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, {a.threads} threads. "
             f"Calibration: {a.calib_tokens} tokens of {os.path.basename(a.calib)}; scored: {len(ids)} held-out "
             f"tokens of {os.path.basename(a.heldout)} in windows of {a.window} (stride {a.stride}); KL divergence and "
             f"top-1 agreement against the 8-bit model on the same windows. Resident weights 8-bit throughout.", "",
             "| variant | family | expert MiB | of 8-bit | perplexity | KL mean | KL p99 | same top token |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['family']} | {r['bytes'] / 2**20:.2f} | {r['bytes'] / full:.0%} | "
                     f"{r['ppl']:.2f} | {r['kl']:.4f} | {r['kl_p99']:.3f} | {100 * r['top1']:.1f} % |")
    lines += ["", f"Decode, {a.decode_tokens} tokens from a cold page cache, median of {a.repeats} runs each in a fresh "
                  f"process, under one "
                  f"memory budget of {budget / 2**20:.1f} MiB (the 8-bit model's minimum plus a quarter of its expert "
                  f"bytes): the best (least KL) of each family. RSS is the process's after decoding, Python included.", "",
              "| variant | expert MiB | decode tok/s | MB read/token | cache hit rate | RSS MiB |", "|---|---|---|---|---|---|"]
    for name, s in speeds.items():
        row = next(r for r in rows if r["name"] == name)
        lines.append(f"| {name} | {row['bytes'] / 2**20:.2f} | {s['tok_s']:.1f} | {s['mb_per_tok']:.2f} | "
                     f"{s['cache_hit_rate']:.2f} | {s['rss_bytes'] / 2**20:.0f} |")
    report("\n".join(lines), a.write)


if __name__ == "__main__":
    main()
