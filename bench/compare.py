"""This engine against llama.cpp (llama-cpp-python) and ONNX Runtime on the same weights, and
against the machine's limits.

    python bench/compare.py STEM [--bits 8 --bits 4] [--threads 2] [--prompt 128] [--decode 128]
        [--fractions 0.5 0.25 0.125] [--write bench/RESULTS.md] [--plot bench/compare.png]

STEM names a model prepared in every form, e.g. /work/bench_models/synth-olmoe-2g:
STEM-q8.emoe / STEM-q4.emoe / STEM-q4k.emoe (`edgemoe convert STEM --bits 8|4|4k`) and
STEM-q8_0.gguf / STEM-q4_0.gguf / STEM-q4_k_m.gguf (`tools/export_gguf.py STEM -o
STEM-f16.gguf --type f16 --quantize q8_0 --quantize q4_0 --quantize q4_k_m`). Optionally STEM-q8.onnx / STEM-q4.onnx (`tools/export_onnx.py STEM-q8.emoe
-o STEM-q8.onnx --accuracy-level 4`): ONNX Runtime then joins scenario 1.

1. Everything in RAM: prefill of a `--prompt`-token prompt and greedy decode of `--decode`
   tokens, same threads, same bits, after one warm-up pass (so no engine reads storage).
   ONNX Runtime holds every weight in its session, so it runs in this scenario only.
2. Memory-limited: each engine runs inside a cgroup-v1 memory limit of 50 / 25 / 12.5 % of
   its model file, storage cold (page cache dropped first). llama.cpp maps the file and the
   kernel pages experts in and out under the limit; this engine gets `memory_budget` = the
   limit minus the Python process's own footprint before loading. Reports tokens/s, bytes
   read from storage (/proc/PID/io read_bytes) and peak RSS.
3. Limits: memory read bandwidth and direct-read storage bandwidth, measured here; the least
   possible time per decoded token and each engine's ratio to it. In RAM: resident bytes (of the
   token embeddings, one row) + the token's active experts, read once at memory bandwidth. Under a limit: the expert reads
   Belady's optimal cache would still need on this very token sequence (routing traced by
   this engine), with every byte of the limit beyond the resident weights holding experts,
   at the storage bandwidth.

Needs root for the cgroup and the page-cache drop (scenario 2); every run is its own process.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from bench_util import drop_page_cache, set_cgroup_limit, replace_section, section_key

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MiB = 1 << 20

# Both children print one JSON line: the same measurement, two engines.
CHILD_COMMON = r"""
import json, os, resource, sys, time
import numpy as np
a = json.loads(sys.argv[1])
if a.get("cgroup"):
    with open(os.path.join(a["cgroup"], "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
def read_bytes():
    with open("/proc/self/io") as f:
        return int(next(l for l in f if l.startswith("read_bytes")).split()[1])
def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base_rss = rss_now()
prompt = a["prompt"]
"""

CHILD_OURS = CHILD_COMMON + r"""
import edgemoe
budget = None if a["limit"] is None else a["limit"] - base_rss - a["headroom"]
m = edgemoe.load(a["path"], memory_budget=budget, threads=a["threads"], ctx_size=a["ctx"], **a.get("load", {}))
def prefill():
    m.reset(); return m.eval(prompt)
def step(tok):
    return m.eval([tok])
"""

CHILD_LLAMA = CHILD_COMMON + r"""
import llama_cpp
if a["limit"] is not None:
    # Under a memory limit the weights must stay file-backed (mmap) so the kernel can page
    # them: llama.cpp's default repacking of quantized weights for SIMD copies them into
    # anonymous memory, which cannot be paged out without swap.
    _defaults = llama_cpp.llama_cpp.llama_model_default_params
    def _no_repack():
        p = _defaults()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_cpp.llama_model_default_params = _no_repack
llm = llama_cpp.Llama(model_path=a["path"], n_ctx=a["ctx"], n_batch=len(prompt), n_threads=a["threads"],
                      n_threads_batch=a["threads"], verbose=False)
n_vocab = llm.n_vocab()
def logits():
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).copy()
def prefill():
    llm.reset(); llm.eval(prompt); return logits()
def step(tok):
    llm.eval([tok]); return logits()
"""

CHILD_ORT = CHILD_COMMON + r"""
sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"], "tools"))
from export_onnx import OnnxPeer
peer = OnnxPeer(a["path"], threads=a["threads"], ctx_size=a["ctx"])
def prefill():
    peer.reset(); return peer.eval(prompt)
def step(tok):
    return peer.eval([tok])
"""

CHILD_RUN = r"""
def peak_rss_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1024
def emit(**kw):  # one line per step, so a run stopped at the time limit still reports what it did
    print(json.dumps(dict(kw, read_mb=(read_bytes() - r0) / 1e6, peak_rss_mb=peak_rss_mb())), flush=True)
if a["warm"]:  # the same prompt and tokens once: every expert they use is then in memory
    prefill()
    for tok in a["decode_ids"]:
        step(tok)
r0 = read_bytes()
t0 = time.perf_counter()
prefill()
t1 = time.perf_counter()
emit(phase="prefill", prefill_tok_s=len(prompt) / (t1 - t0))
for i, tok in enumerate(a["decode_ids"]):
    step(tok)
    emit(phase="decode", done=i + 1, decode_s=time.perf_counter() - t1)
"""


def run_child(engine: str, path: str, args: dict, time_limit: float, root: str = ROOT) -> dict:
    """One run in a fresh process; stopped after time_limit seconds, reporting the tokens done.
    root: the source tree edgemoe is imported from (another build, for A/B runs)."""
    code = {"edgemoe": CHILD_OURS, "llama.cpp": CHILD_LLAMA, "onnxruntime": CHILD_ORT}[engine] + CHILD_RUN
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(dict(args, path=path))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    stopped = False
    try:
        out, err = proc.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        stopped = True
    steps = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    prefill = next((x for x in steps if x["phase"] == "prefill"), None)
    decode = [x for x in steps if x["phase"] == "decode"]
    if prefill is None or not decode:
        if stopped:
            return {"error": f"{'prefill' if prefill is None else 'first token'} not done in {time_limit:.0f} s"}
        killed = proc.returncode in (-9, 137)
        tail = " | ".join(err.strip().splitlines()[-2:])
        return {"error": "killed (out of memory under the limit)" if killed else f"exit {proc.returncode}: {tail}"}
    last = decode[-1]
    n_prompt = len(args["prompt"])
    return {"prefill_tok_s": prefill["prefill_tok_s"], "decode_tok_s": last["done"] / last["decode_s"],
            "decoded": last["done"], "stopped": stopped,
            "read_mb_per_tok": (last["read_mb"] - prefill["read_mb"]) / last["done"],
            "prefill_read_mb": prefill["read_mb"] / n_prompt, "peak_rss_mb": last["peak_rss_mb"]}


# ---------------------------------------------------------------- limits

def memory_read_gbs() -> float:
    """Read bandwidth: two threads summing halves of a 1 GiB array (numpy drops the GIL); best of 5."""
    import threading

    a = np.ones(256 * MiB, dtype=np.float32)
    halves = np.array_split(a, 2)
    best = 0.0
    for _ in range(5):
        threads = [threading.Thread(target=np.sum, args=(h,)) for h in halves]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, a.nbytes / (time.perf_counter() - t0))
    return best / 1e9


def direct_read_gbs(path: str, block: int, seconds: float = 3.0) -> float:
    """O_DIRECT reads of `block` bytes at random aligned offsets of `path`, two in flight (two threads)."""
    import mmap
    import threading

    size = os.path.getsize(path)
    block = -(-block // 4096) * 4096  # direct reads are whole pages, as the engine's are
    done = [0, 0]

    def worker(k: int, stop: float) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, block)
        rng = np.random.default_rng(k)
        while time.perf_counter() < stop:
            off = int(rng.integers(0, (size - block) // 4096)) * 4096
            done[k] += os.preadv(fd, [buf], off)
        os.close(fd)

    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k, stop)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0) / 1e9


def model_bytes(emoe: str) -> dict:
    """Resident bytes, one expert's bytes, experts per token and in total, from the container."""
    sys.path.insert(0, ROOT)
    from edgemoe.format.container import open_container

    c = open_container(emoe)
    cfg = c.config
    experts = [b for row in c.experts for b in row]
    # A decoded token reads one row of the token embeddings (unless they are also the output head):
    # at a large vocabulary counting the whole table would put the bound above what engines reach.
    embed = c.tensors["tok_embeddings"]["nbytes"]
    unread = 0 if cfg["tie_embeddings"] else embed - embed // cfg["vocab"]
    return {"resident": c.sections["resident"]["size"], "read_resident": c.sections["resident"]["size"] - unread,
            "expert": int(np.mean([b["size"] for b in experts])),
            "active": sum(1 for row in c.experts if row) * cfg["top_k"], "total": len(experts)}


def routing_steps(emoe: str, prompt, decode_ids):
    """The experts each layer chooses on this token sequence (this engine's trace, f32 routers):
    the prompt as one step per layer (a prefill batch reads each expert it needs once), then
    one step per decoded token and layer."""
    code = (
        "import json, sys, edgemoe\n"
        "a = json.loads(sys.argv[1])\n"
        "m = edgemoe.load(a['path'], cache_experts=None, threads=2, ctx_size=len(a['prompt']) + len(a['ids']) + 8)\n"
        "with m.record_routing() as r:\n"
        "    m.eval(a['prompt'])\n"
        "    for t in a['ids']: m.eval([t])\n"
        "print(json.dumps(r.experts.tolist()))\n")
    out = subprocess.run([sys.executable, "-c", code, json.dumps({"path": emoe, "prompt": prompt, "ids": decode_ids})],
                         capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    return steps_of_trace(json.loads(out.stdout.strip().splitlines()[-1]), len(prompt))


def steps_of_trace(experts, n_prompt: int):
    """Cache steps of a routing trace (experts [tokens][layers][top_k], -1 in dense layers): the
    first n_prompt tokens as one step per layer, then one step per token and layer."""
    experts = np.asarray(experts)
    L = experts.shape[1]
    moe = [l for l in range(L) if (experts[:, l] >= 0).any()]  # dense layers route nowhere (-1)
    prompt_steps = [[(l, int(e)) for e in sorted(set(experts[:n_prompt, l].ravel().tolist()))] for l in moe]
    decode_steps = [[(l, int(e)) for e in experts[t, l]] for t in range(n_prompt, len(experts)) for l in moe]
    return prompt_steps, decode_steps


def least_decode_reads(prompt_steps, decode_steps, n_layers: int, slots: int) -> int:
    """Expert reads the decode steps need at the least: Belady's optimal cache (misses over the
    whole run minus those of the prompt alone) with `slots` experts in memory."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import simulate_cache as sim

    def misses(steps):
        return sim.simulate(steps, n_layers, slots, sim.POLICIES["belady"](n_layers, steps))["misses"]

    return max(0, misses(prompt_steps + decode_steps) - misses(prompt_steps))


def min_ms_per_token(mb: dict, mem_gbs: float, disk_gbs: float, reads_per_token: float = 0.0) -> float:
    """The least time per decoded token: every byte it touches read once from memory at the
    measured bandwidth, or, if longer, the expert reads it cannot avoid at the storage bandwidth."""
    touched = mb["read_resident"] + mb["active"] * mb["expert"]
    return 1e3 * max(touched / (mem_gbs * 1e9), reads_per_token * mb["expert"] / (disk_gbs * 1e9))


def plot(path: str, bits, fractions, ram: dict, limited: dict) -> None:
    """Decode tokens/s against memory (% of the model file), both engines, per bit width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    xs = [100.0] + [100 * f for f in fractions]
    for b in bits:
        for eng, style in (("edgemoe", "-o"), ("llama.cpp", "--s")):
            ys = [ram[(b, eng)].get("decode_tok_s", np.nan)]
            ys += [limited[(b, f, eng)].get("decode_tok_s", np.nan) for f in fractions]
            ax.plot(xs, ys, style, label=f"{eng} {b}" + ("" if b.endswith("k") else "-bit"))
    ax.set_xscale("log")
    ax.set_xticks(sorted(xs))
    ax.set_xticklabels([f"{x:g} %" if x < 100 else "no limit" for x in sorted(xs)])
    ax.minorticks_off()
    ax.set_xlabel("memory limit, % of the model file")
    ax.set_ylabel("decode tokens/s (log)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- main

# --bits: this engine's container STEM-q{bits}.emoe against llama.cpp's STEM-{type}.gguf
WIDTHS = {"8": "q8_0", "4": "q4_0", "4k": "q4_k_m", "mxfp4": "mxfp4_moe"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stem")
    p.add_argument("--bits", action="append", choices=list(WIDTHS), default=None,
                   help="8: q8 vs Q8_0; 4: q4 vs Q4_0; 4k: q4k vs Q4_K_M; mxfp4: mxfp4 experts vs "
                        "llama.cpp's MXFP4_MOE (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--limited-decode", type=int, default=32, help="decode tokens in the memory-limited runs")
    p.add_argument("--repeats", type=int, default=3, help="in-RAM runs per engine, interleaved (median reported)")
    p.add_argument("--fractions", type=float, nargs="*", default=[0.5, 0.25, 0.125])
    p.add_argument("--headroom-mb", type=int, default=16, help="kept free under the limit for this engine")
    p.add_argument("--time-limit", type=float, default=300, help="seconds per run; a slower run reports the "
                   "tokens it decoded by then")
    p.add_argument("--write", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args()
    bits = a.bits or ["8", "4"]
    files = {b: {"edgemoe": f"{a.stem}-q{b}.emoe", "llama.cpp": f"{a.stem}-{WIDTHS[b]}.gguf"} for b in bits}
    for b in bits:
        for f in files[b].values():
            if not os.path.exists(f):
                sys.exit(f"missing {f}: see this script's docstring for how to prepare it")
    onnx_files = {b: f"{a.stem}-q{b}.onnx" for b in bits if os.path.exists(f"{a.stem}-q{b}.onnx")}
    vocab = json.load(open(os.path.join(a.stem, "config.json")))["vocab_size"]
    # Random token ids, fed one by one after the prompt (teacher forced, the same for both engines):
    # greedy decoding of a random-weight model soon repeats one token, and its experts stay cached.
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, a.prompt).tolist()
    decode_ids = rng.integers(0, vocab, max(a.decode, a.limited_decode)).tolist()
    ctx = a.prompt + max(a.decode, a.limited_decode) + 8
    common = {"threads": a.threads, "prompt": prompt, "ctx": ctx, "headroom": a.headroom_mb * MiB}
    lines = []

    def out(line: str) -> None:  # printed as measured: a long run shows its rows as they come
        lines.append(line)
        print(line, flush=True)

    date = datetime.date.today()
    cmd = "python bench/compare.py " + " ".join(sys.argv[1:])
    peers = f"llama-cpp-python {__import__('llama_cpp').__version__}"
    if onnx_files:
        peers += f", onnxruntime {__import__('onnxruntime').__version__}"
    out(f"\n### edgemoe vs llama.cpp{' and ONNX Runtime' if onnx_files else ''} ({date})\n\nCommand: `{cmd}`  \n"
                 f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; {peers}\n")

    # 3 first: the limits frame the rest
    mem_gbs = memory_read_gbs()
    mb8 = model_bytes(files[bits[0]]["edgemoe"])
    disk_gbs = direct_read_gbs(files[bits[0]]["edgemoe"], mb8["expert"])
    out(f"Limits measured here: memory read bandwidth {mem_gbs:.1f} GB/s (2 threads), direct reads "
                 f"of one expert ({mb8['expert'] / MiB:.2f} MiB, two in flight) {disk_gbs:.2f} GB/s.\n")

    # 1. in RAM
    out(f"#### 1. Everything in RAM ({a.prompt}-token prompt, then {a.decode} tokens one by one, "
                 f"{a.threads} threads; the same run done once before, so nothing is read from storage; "
                 f"median of {a.repeats} interleaved runs)\n")
    out("| bits | engine | file MiB | prefill tok/s | decode tok/s | decode vs llama.cpp | "
                 "least ms/token | ratio to it | peak RSS MiB |")
    out("|---|---|---|---|---|---|---|---|---|")
    ram = {}
    for b in bits:
        mb = model_bytes(files[b]["edgemoe"])
        floor = min_ms_per_token(mb, mem_gbs, disk_gbs)
        runs = {"llama.cpp": [], "edgemoe": []}
        if b in onnx_files:
            runs["onnxruntime"] = []
        paths = dict(files[b], onnxruntime=onnx_files.get(b))
        for _ in range(a.repeats):  # interleaved: drifting machine load spreads over every engine
            for eng in runs:
                drop_page_cache()
                runs[eng].append(run_child(eng, paths[eng], dict(common, limit=None,
                                                                    decode_ids=decode_ids[:a.decode], warm=True),
                                           a.time_limit))
        for eng, rs in runs.items():
            ok = [r for r in rs if "error" not in r]
            # the run with the median decode speed, whole
            ram[(b, eng)] = sorted(ok, key=lambda r: r["decode_tok_s"])[len(ok) // 2] if ok else rs[0]
            if "error" in ram[(b, eng)]:
                out(f"| {b} | {eng} | | {ram[(b, eng)]['error']} | | | | | |")
        for eng in runs:
            r = ram[(b, eng)]
            if "error" in r:
                continue
            rel = r["decode_tok_s"] / ram[(b, "llama.cpp")].get("decode_tok_s", float("nan"))
            size = os.path.getsize(paths[eng]) + (os.path.getsize(paths[eng] + ".data") if eng == "onnxruntime" else 0)
            out(f"| {b} | {eng} | {size / MiB:.0f} | {r['prefill_tok_s']:.1f} | "
                         f"{r['decode_tok_s']:.2f} | {rel:.2f}x | {floor:.2f} | "
                         f"{1e3 / r['decode_tok_s'] / floor:.1f}x | {r['peak_rss_mb']:.0f} |")
    out("")

    # 2. memory-limited (skipped with an empty --fractions)
    if not a.fractions:
        a.plot = None
    out(f"#### 2. Memory-limited (cgroup-v1 limit on the whole process; {a.limited_decode} tokens "
                 f"one by one after the {a.prompt}-token prompt; page cache dropped before each run, cold)\n")
    out("| bits | limit | engine | prefill tok/s | decode tok/s | vs llama.cpp | MB read/decoded token | "
                 "least ms/token | ratio to it | peak RSS MiB |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    limited = {}
    prompt_steps, decode_steps = (routing_steps(files[bits[0]]["edgemoe"], prompt, decode_ids[:a.limited_decode])
                                  if a.fractions else ([], []))
    n_layers = len(prompt_steps)
    for b in bits:
        mb = model_bytes(files[b]["edgemoe"])
        for frac in a.fractions:
            limit = int(frac * os.path.getsize(files[b]["edgemoe"]))
            # generous: every byte of the limit beyond the resident weights holds experts
            slots = max(1, (limit - mb["resident"]) // mb["expert"])
            reads = least_decode_reads(prompt_steps, decode_steps, n_layers, slots) / a.limited_decode
            floor = min_ms_per_token(mb, mem_gbs, disk_gbs, reads)
            for eng in ("llama.cpp", "edgemoe"):
                drop_page_cache()
                cg = set_cgroup_limit(limit)
                limited[(b, frac, eng)] = run_child(eng, files[b][eng], dict(common, limit=limit, cgroup=cg,
                                                                             decode_ids=decode_ids[:a.limited_decode],
                                                                             warm=False), a.time_limit)
            for eng in ("llama.cpp", "edgemoe"):
                r = limited[(b, frac, eng)]
                if "error" in r:
                    out(f"| {b} | {frac:.1%} ({limit / MiB:.0f} MiB) | {eng} | {r['error']} | | | | | | |")
                    continue
                other = limited[(b, frac, "llama.cpp")]
                rel = r["decode_tok_s"] / other["decode_tok_s"] if "decode_tok_s" in other else float("nan")
                out(f"| {b} | {frac:.1%} ({limit / MiB:.0f} MiB) | {eng} | {r['prefill_tok_s']:.2f} | "
                             f"{r['decode_tok_s']:.2f} | {rel:.2f}x | {r['read_mb_per_tok']:.1f} | "
                             f"{floor:.1f} | {1e3 / r['decode_tok_s'] / floor:.1f}x | {r['peak_rss_mb']:.0f} |")
    out("")
    if a.plot:
        plot(a.plot, bits, a.fractions, ram, limited)
        out(f"![decode tokens/s against memory]({os.path.basename(a.plot)})\n")
    if a.write:  # the lines were printed as they came
        replace_section(a.write, section_key(), "\n".join(lines))


if __name__ == "__main__":
    main()
