"""Images on a Qwen3-VL-30B-A3B-shaped model (bench/make_synthetic.py --arch qwen3_vl_moe): the vision
tower's encode time and peak memory at two image sizes, beside llama.cpp's mtmd on the same weights,
and decode speed after an image under a memory limit, cold.

    python bench/vision.py MODEL.emoe [--gguf TEXT.gguf --mmproj MMPROJ.gguf] [--sizes 448 896]
        [--repeats 3] [--expert-share 0.15] [--prompt 64] [--decode 32] [--threads 2]
        [--write bench/RESULTS.md]

Encoding: each engine in a fresh process, in RAM, encodes a SIZE x SIZE image (a multiple of 32
pixels: neither engine resizes it) --repeats times; the median time and the process's peak RSS over
what it held before the first encode (sampled every 2 ms) are reported. llama.cpp runs with its own
defaults (flash attention where supported) and the processor's pixel limits, so it makes as many
tokens as this engine.

Decode after an image: a fresh process in a cgroup-v1 limit (root), page cache dropped: the model
loaded with a budget of its minimum plus --expert-share of its expert bytes (0.15: about what a 25 %
limit leaves the experts of the full 48-layer model beside its resident weights; 10 % once a 4k-token
KV cache and one image's activations are counted too: bench/RESULTS.md "notes vision models"), the
image encoded, a prompt of
--prompt text tokens around it evaluated, then --decode tokens generated greedily. The limit is that
budget plus 96 MiB for the interpreter.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

from bench_util import drop_page_cache, report, set_cgroup_limit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MiB = 1 << 20

# What both children share: an image, and a sampler of this process's RSS.
COMMON = r"""
import json, sys, threading, time
import numpy as np, psutil
a = json.loads(sys.argv[1])
def image(size):  # smooth, deterministic
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x * 255 // (size - 1), y * 255 // (size - 1), ((x + y) * 7) % 256], -1).astype(np.uint8)
class Peak:
    def __init__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, False
        self.base = self.proc.memory_info().rss
        threading.Thread(target=self.run, daemon=True).start()
    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)
    def done(self):
        self.stop = True
        time.sleep(0.01)
        return (max(self.peak, self.proc.memory_info().rss) - self.base) / 2**20
"""

OURS_ENCODE = COMMON + r"""
import edgemoe
m = edgemoe.load(a["path"], threads=a["threads"], cache_experts=a.get("slots"))
img = image(a["size"])
peak, times = Peak(), []
for _ in range(a["repeats"]):
    t0 = time.perf_counter(); enc = m.encode_image(img); times.append(time.perf_counter() - t0)
print(json.dumps({"seconds": sorted(times)[len(times) // 2], "tokens": enc.n_tokens, "peak_mib": peak.done(),
                  "plan_vision_mib": m.plan.vision_bytes / 2**20}))
"""

LLAMA_ENCODE = COMMON + r"""
import ctypes, llama_cpp
from llama_cpp import mtmd_cpp as mtmd
llm = llama_cpp.Llama(model_path=a["gguf"], n_ctx=4096, n_batch=2048, n_ubatch=2048, n_threads=a["threads"], verbose=False)
p = mtmd.mtmd_context_params_default()
p.use_gpu, p.n_threads, p.print_timings, p.warmup = False, a["threads"], False, False
p.image_min_tokens, p.image_max_tokens = 64, 16384  # Qwen3-VL's processor's limits
ctx = mtmd.mtmd_init_from_file(a["mmproj"].encode(), llm.model, p)
img = image(a["size"])
bitmap = mtmd.mtmd_bitmap_init(a["size"], a["size"], (ctypes.c_uint8 * img.size).from_buffer_copy(img.tobytes()))
text = mtmd.mtmd_input_text(); text.text = b"<__media__>"; text.text_len = len(text.text)
text.add_special, text.parse_special = False, True
peak, times = Peak(), []
for _ in range(a["repeats"]):
    chunks = mtmd.mtmd_input_chunks_init()
    assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
    chunk = next(mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))
                 if mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, i)) != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT)
    t0 = time.perf_counter(); assert mtmd.mtmd_encode_chunk(ctx, chunk) == 0; times.append(time.perf_counter() - t0)
    tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
print(json.dumps({"seconds": sorted(times)[len(times) // 2], "tokens": tokens, "peak_mib": peak.done()}))
"""

OURS_DECODE = COMMON + r"""
import edgemoe
from edgemoe.api import CancelToken
m = edgemoe.load(a["path"], threads=a["threads"], memory_budget=a["budget"])
c = m.config
text = m.tokenize(open(a["text"]).read())[: a["prompt"]]
half = len(text) // 2
ids = text[:half] + [c["vision_start_token_id"], c["image_token_id"], c["vision_end_token_id"]] + text[half:]
t0 = time.perf_counter(); enc = m.encode_image(image(a["size"])); encode_s = time.perf_counter() - t0
ids, images = m.prompt_with_images(ids, [enc])
out = m.generate(ids, max_tokens=a["decode"], stop_at_eos=False, images=images)
g = m.last_generation
import resource
print(json.dumps({"encode_s": encode_s, "image_tokens": enc.n_tokens, "prompt": len(ids), "prefill_tok_s": g.prefill_tok_s,
                  "decode_tok_s": g.decode_tok_s, "decoded": len(out),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "plan_mib": m.plan.total_bytes / 2**20, "mb_per_tok": g.decode_engine.get("bytes_read", 0) / 1e6 / max(1, len(out))}))
"""


LLAMA_DECODE = COMMON + r"""
import ctypes, resource, llama_cpp
from llama_cpp import mtmd_cpp as mtmd
llm = llama_cpp.Llama(model_path=a["gguf"], n_ctx=2048, n_batch=512, n_threads=a["threads"], verbose=False)
p = mtmd.mtmd_context_params_default()
p.use_gpu, p.n_threads, p.print_timings, p.warmup = False, a["threads"], False, False
p.image_min_tokens, p.image_max_tokens = 64, 16384
ctx = mtmd.mtmd_init_from_file(a["mmproj"].encode(), llm.model, p)
words = open(a["text"]).read().encode()
ids = llm.tokenize(words, add_bos=False)[: a["prompt"]]
half = llm.detokenize(ids[: len(ids) // 2]) + b"<__media__>" + llm.detokenize(ids[len(ids) // 2:])
img = image(a["size"])
bitmap = mtmd.mtmd_bitmap_init(a["size"], a["size"], (ctypes.c_uint8 * img.size).from_buffer_copy(img.tobytes()))
text = mtmd.mtmd_input_text(); text.text = half; text.text_len = len(half); text.add_special, text.parse_special = False, True
chunks = mtmd.mtmd_input_chunks_init()
assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
t0 = time.perf_counter()
n_past = llama_cpp.llama_pos(0)
assert mtmd.mtmd_helper_eval_chunks(ctx, llm._ctx.ctx, chunks, 0, 0, llm.n_batch, True, ctypes.byref(n_past)) == 0
prefill_s = time.perf_counter() - t0
prompt = sum(mtmd.mtmd_input_chunk_get_n_tokens(mtmd.mtmd_input_chunks_get(chunks, i)) for i in range(mtmd.mtmd_input_chunks_size(chunks)))
llm.n_tokens = n_past.value  # (as llama-cpp-python's chat handlers do after mtmd)
t0 = time.perf_counter()
for _ in range(a["decode"]):
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    llm.eval([int(np.argmax(logits))])
decode_s = time.perf_counter() - t0
print(json.dumps({"encode_s": float("nan"), "prompt": prompt, "prefill_s": prefill_s, "prefill_tok_s": prompt / prefill_s,
                  "decode_tok_s": a["decode"] / decode_s, "mb_per_tok": float("nan"),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(code: str, args: dict, cgroup: str | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    pre = (lambda: open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))) if cgroup else None
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env,
                         preexec_fn=pre)
    if out.returncode != 0:
        killed = out.returncode in (-9, 137)
        return {"error": "killed (out of memory under the limit)" if killed else out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--gguf")
    p.add_argument("--mmproj")
    p.add_argument("--sizes", type=int, nargs="+", default=[448, 896])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--expert-share", type=float, default=0.15)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text", default=os.path.join(ROOT, "README.md"))
    p.add_argument("--write")
    a = p.parse_args()
    sys.path.insert(0, ROOT)
    import edgemoe

    model = edgemoe.load(a.model, threads=a.threads)
    info = model.info()
    experts, tower = info["expert_bytes"], info["vision_tower_bytes"]
    lines = [f"### Images: encode and decode after an image on the Qwen3-VL-30B-A3B shape ({datetime.date.today()})", "",
             f"`python bench/vision.py {' '.join(sys.argv[1:])}`", "",
             f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, {a.threads} threads. Random weights "
             f"of Qwen3-VL-30B-A3B's shape ({os.path.basename(a.model)}: the tower's {tower / MiB:.0f} MiB resident "
             f"at {info['quantization'].get('resident')}, {experts / MiB:.0f} MiB of experts).", "",
             "| image | tokens | engine | encode s (median of %d) | peak MiB over the loaded model | plan's vision_bytes MiB |"
             % a.repeats, "|---|---|---|---|---|---|"]
    del model
    for size in a.sizes:
        runs = [("edgemoe", child(OURS_ENCODE, {"path": a.model, "threads": a.threads, "size": size,
                                                "repeats": a.repeats, "slots": 8}))]
        if a.gguf and a.mmproj:
            runs.append(("llama.cpp (mtmd)", child(LLAMA_ENCODE, {"gguf": a.gguf, "mmproj": a.mmproj, "size": size,
                                                                  "threads": a.threads, "repeats": a.repeats})))
        for name, r in runs:
            if "error" in r:
                lines.append(f"| {size}x{size} | | {name} | {r['error']} | | |")
                continue
            plan = f"{r['plan_vision_mib']:.0f}" if "plan_vision_mib" in r else ""
            lines.append(f"| {size}x{size} | {r['tokens']} | {name} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {plan} |")
            print(lines[-1], flush=True)

    model = edgemoe.load(a.model, threads=a.threads, memory_budget=None)
    budget = model.plan.min_budget + int(a.expert_share * experts)
    del model
    limit = budget + 96 * MiB
    lines += ["", f"Decode after a {a.sizes[0]}x{a.sizes[0]} image, cold, in a {limit / MiB:.0f} MiB cgroup limit "
              f"(budget {budget / MiB:.0f} MiB: the minimum plus {a.expert_share:.0%} of the experts):", "",
              "| run | encode s (ours alone; llama.cpp's is in its prefill) | prompt tokens | prefill tok/s | "
              "decode tok/s | MB read/token | peak RSS MiB |",
              "|---|---|---|---|---|---|---|"]
    cgroup = set_cgroup_limit(limit)
    runs = [("edgemoe", OURS_DECODE)] + ([("llama.cpp (mtmd, mmap)", LLAMA_DECODE)] if a.gguf and a.mmproj else [])
    for i in range(a.repeats):  # the engines alternate
        for name, code in runs:
            drop_page_cache()
            r = child(code, {"path": a.model, "gguf": a.gguf, "mmproj": a.mmproj, "threads": a.threads,
                             "budget": budget, "size": a.sizes[0], "text": a.text, "prompt": a.prompt,
                             "decode": a.decode}, cgroup)
            if "error" in r:
                lines.append(f"| {name} {i + 1} | {r['error']} | | | | | |")
            else:
                encode = "" if r["encode_s"] != r["encode_s"] else f"{r['encode_s']:.2f}"
                read = "" if r["mb_per_tok"] != r["mb_per_tok"] else f"{r['mb_per_tok']:.1f}"
                lines.append(f"| {name} {i + 1} | {encode} | {r['prompt']} | {r['prefill_tok_s']:.1f} | "
                             f"{r['decode_tok_s']:.2f} | {read} | {r['peak_rss_mib']:.0f} |")
            print(lines[-1], flush=True)
    report("\n".join(lines), a.write)


if __name__ == "__main__":
    main()
