"""`edgemoe doctor SOURCE [--memory-budget X] [--bits B ...]`: will a model fit, and how fast will
it decode here, before an hour goes into converting it.

SOURCE is a Hugging Face folder or repository id (only its config is fetched), a GGUF file, or a
container. From the config (or the GGUF's metadata) alone, the converter's own layout rules
(edgemoe/convert/hf.py) lay out a skeleton container per width: a sparse file with every tensor's
and expert's place but no weights, which the runtime opens and plans an engine for exactly as
`load` would (edgemoe/api.py, plan_engine). Beside the sizes it measures this machine: free
memory, memory bandwidth and the storage's direct-read speed in the folder the model will be
read from (SOURCE's, or --probe-dir), and predicts decode speed from them (predict_decode: a
model, stated with its assumptions). The storage figure is kept in the user's cache so that
`edgemoe generate --stats` prints the same prediction beside what it measured.
"""
from __future__ import annotations

import json
import mmap
import os
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..budget import format_size
from ..format import quant

# In RAM this engine decodes at 1.2-1.5x the time its weights take to stream from memory
# (bench/RESULTS.md, "least ms/token"): the prediction's compute is that floor times this.
COMPUTE_OVER_BANDWIDTH_FLOOR = 1.5
PROBE_BYTES = 256 << 20
PROBE_READERS = 4  # the engine's default io_threads


def probe_cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgemoe", "storage_probe.json")


def _device(path: str) -> str:
    return str(os.stat(path).st_dev)


def saved_storage_probe(path: str) -> Optional[Dict[str, float]]:
    """The last probe of the device `path` lies on, if `edgemoe doctor` measured one (and the
    cached record is one: positive speeds)."""
    try:
        with open(probe_cache_path(), encoding="utf-8") as f:
            probe = json.load(f).get(_device(path))
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(probe, dict) and all(isinstance(probe.get(k), (int, float)) and probe[k] > 0
                                         for k in ("read_gbs", "memory_gbs", "block_bytes", "readers"))
    return probe if ok else None


def probe_storage(folder: str, block: int, memory_gbs: float, total: int = PROBE_BYTES,
                  readers: int = PROBE_READERS) -> Dict[str, float]:
    """Direct-read speed (GB/s) of `folder`'s storage, reading a fresh file of `total` bytes in
    blocks of `block` (an expert's size) with `readers` reads in flight, as the expert store does.
    The file is removed afterwards; the result (with this machine's memory_gbs) is kept for
    `generate --stats`."""
    block = max(4096, block // 4096 * 4096)
    total = max(block * readers, total // block * block)
    fd, path = tempfile.mkstemp(prefix=".edgemoe-probe-", dir=folder)
    try:
        chunk = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8).tobytes()
        with os.fdopen(fd, "wb") as f:
            for _ in range(total // len(chunk) + 1):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        try:
            rfd = os.open(path, flags)
        except OSError:  # a filesystem without direct I/O: read through the page cache, dropped first
            rfd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_DONTNEED)
        offsets = list(range(0, total, block))
        np.random.default_rng(1).shuffle(offsets)
        lock = threading.Lock()
        failures: List[BaseException] = []

        def reader() -> None:
            buf = mmap.mmap(-1, block)  # page aligned, as direct reads need
            try:
                while True:
                    with lock:
                        if not offsets:
                            return
                        at = offsets.pop()
                    if os.preadv(rfd, [buf], at) != block:
                        raise OSError(f"short read at {at}")
            except OSError as e:
                failures.append(e)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=reader) for _ in range(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        os.close(rfd)
        if failures:
            raise failures[0]
    finally:
        os.unlink(path)
    result = {"read_gbs": total / seconds / 1e9, "block_bytes": block, "readers": readers, "memory_gbs": memory_gbs,
              "measured": time.time()}
    try:
        cache = probe_cache_path()
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        try:
            with open(cache, encoding="utf-8") as f:
                known = json.load(f)
        except (OSError, ValueError):
            known = {}
        known[_device(folder)] = result
        with open(cache + ".tmp", "w", encoding="utf-8") as f:
            json.dump(known, f)
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass  # the prediction is printed anyway; only generate --stats misses it
    return result


def memory_bandwidth_gbs(n_bytes: int = 256 << 20) -> float:
    """Copy bandwidth of this machine's RAM (one thread; the best of three), GB/s read + written."""
    a = np.ones(n_bytes // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best / 1e9


def expert_bytes_per_token(container) -> float:
    """Expert bytes a token computes with (and reads at most): top_k mean-sized experts per MoE layer."""
    blobs = [b["size"] for row in container.experts for b in row]
    moe = sum(1 for row in container.experts if row)
    return container.config["top_k"] * moe * sum(blobs) / len(blobs) if blobs else 0.0


def predict_decode(container, plan, storage_gbs: float, memory_gbs: float) -> Dict[str, float]:
    """Decode speed at a memory plan, a floor. Assumptions, stated: every token reads its top_k experts
    in every MoE layer, routing spreads evenly over a layer's experts (as load-balanced trained
    models' does), so a cache holding a share s of all experts hits s of them (the cache policy
    does better where tokens reuse their neighbours' experts: 34 % at a 12.5 % share on the
    realistic Qwen3-shaped benchmark model, bench/RESULTS.md "Cache policies"); misses are read
    at the probed speed, not overlapped with compute; compute streams the resident weights and
    the active experts from RAM at COMPUTE_OVER_BANDWIDTH_FLOOR times the memory-bandwidth floor."""
    active = expert_bytes_per_token(container)
    total = sum(len(row) for row in container.experts)
    hit = min(1.0, plan.n_slots / total) if total else 1.0
    read = active * (1 - hit)
    compute_s = COMPUTE_OVER_BANDWIDTH_FLOOR * (container.sections["resident"]["size"] + active) / (memory_gbs * 1e9)
    read_s = read / (storage_gbs * 1e9) if storage_gbs > 0 else 0.0
    return {"tok_s": 1.0 / (compute_s + read_s), "hit_rate": hit, "mb_read": read / 1e6,
            "active_mb": active / 1e6, "compute_ms": 1e3 * compute_s, "read_ms": 1e3 * read_s}


def skeleton(src: str, bits: str, out: str) -> None:
    """A sparse container with `src`'s layout at `bits` (no weights): see the module doc."""
    from ..convert.gguf import GGUFCheckpoint, hf_config, is_gguf
    from ..convert.hf import (_read_json, default_resident_type, expert_blob_type, moe_prefix, open_checkpoint,
                              parse_bits, pick_arch, resident_kind_types, resident_plan)
    from ..format.container import ContainerWriter
    from ..format.model_config import moe_layers, validate_config

    if is_gguf(src):
        ckpt = GGUFCheckpoint(src)
        hf = hf_config(ckpt)
    else:
        hf = _read_json(os.path.join(src, "config.json"), required=True)
        has_weights = any(f.endswith(".safetensors") for f in os.listdir(src))
        ckpt = open_checkpoint(src, hf) if has_weights else None  # headers only: which optional tensors exist
    arch = pick_arch(hf)
    cfg = validate_config(dict(arch.config(hf), eos_token_ids=[]), src)
    expert_type = parse_bits(bits)
    kind_type = resident_kind_types(cfg, default_resident_type(expert_type))
    moe = moe_prefix(ckpt, arch, cfg) if ckpt is not None else arch.moe_prefixes[0]
    with ContainerWriter(out) as w:
        for r in resident_plan(cfg, arch, moe, ckpt, hf):
            shape = r.shape if r.index is None else r.shape[1:]
            if r.take is not None:  # the stored tensor's shape, from a stand-in that holds no memory
                shape = r.take(np.broadcast_to(np.zeros((), np.float32), shape)).shape
            cols = shape[-1]
            w.reserve_resident(r.name, quant.storable_type(kind_type[r.kind], (cols,)), tuple(shape))
        qtype = expert_blob_type(expert_type, cfg)
        H, I = cfg["hidden"], cfg["expert_intermediate"]
        for l in moe_layers(cfg):
            for e in range(cfg["n_experts"]):
                w.reserve_expert(l, e, qtype, {"gate": (I, H), "up": (I, H), "down": (H, I)})
        w.finish(cfg, {"skeleton": True, "tokenizer": {},
                       "quantization": {"experts": quant.NAMES[expert_type], "resident": "as converted"}})


def diagnose(source: str, bits: List[str], options, probe_dir: Optional[str] = None, probe: bool = True,
             progress: bool = True) -> Dict[str, Any]:
    """Sizes, plan and predicted decode speed of `source` at each width, with this machine's figures."""
    from ..api import plan_engine
    from ..budget import available_memory
    from ..convert.hub import CONFIG_FILES, resolve_source
    from ..errors import BudgetError
    from ..format.container import open_container

    src = resolve_source(source, progress=progress, files=CONFIG_FILES)
    folder = probe_dir or (src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src)))
    report: Dict[str, Any] = {"source": source, "available_bytes": available_memory(), "widths": []}
    with tempfile.TemporaryDirectory(prefix="edgemoe-doctor-") as tmp:
        containers = []
        if src.endswith(".emoe"):
            containers.append(("as converted", open_container(src)))
        else:
            for b in bits:
                path = os.path.join(tmp, f"{b}.emoe")
                skeleton(src, b, path)
                containers.append((b, open_container(path)))
        block = max(b["size"] for row in containers[0][1].experts for b in row)
        report["memory_gbs"] = memory_bandwidth_gbs()
        report["storage"] = saved_storage_probe(folder)
        if probe:
            try:
                report["storage"] = probe_storage(folder, block, report["memory_gbs"])
            except OSError as e:  # a folder it cannot write or read: the sizes and plan stand without a speed
                report["storage_error"] = f"{folder}: {e.strerror or e}"
        for label, c in containers:
            blobs = [b["size"] for row in c.experts for b in row]
            row = {"bits": label, "file_bytes": c.file_size, "resident_bytes": c.sections["resident"]["size"],
                   "expert_bytes": sum(blobs), "expert_blob_bytes": max(blobs),
                   "expert_bytes_per_token": expert_bytes_per_token(c)}
            try:
                setup = plan_engine(c, options)
                row.update(min_budget=setup.plan.min_budget, plan_bytes=setup.plan.total_bytes,
                           slots=setup.plan.n_slots, total_experts=len(blobs), ctx_size=setup.engine_options["ctx_size"],
                           notices=setup.notices)
                if report["storage"]:
                    row["predicted"] = predict_decode(c, setup.plan, report["storage"]["read_gbs"], report["memory_gbs"])
            except BudgetError as e:
                row["does_not_fit"] = str(e)
            report["widths"].append(row)
    return report


def print_report(r: Dict[str, Any]) -> None:
    print(f"source            {r['source']}")
    print(f"this machine      {format_size(r['available_bytes'])} free, memory {r['memory_gbs']:.1f} GB/s"
          + (f", storage {r['storage']['read_gbs']:.2f} GB/s direct reads of {format_size(r['storage']['block_bytes'])}"
             f" ({r['storage']['readers']} in flight)" if r["storage"] else
             f", storage not probed ({r['storage_error']})" if r.get("storage_error") else ", storage not probed"))
    print("bits | file | resident | experts (each) | experts read per token at most | minimum budget | plan "
          "(expert slots) | predicted decode")
    for w in r["widths"]:
        head = (f"{w['bits']} | {format_size(w['file_bytes'])} | {format_size(w['resident_bytes'])} | "
                f"{format_size(w['expert_bytes'])} ({format_size(w['expert_blob_bytes'])}) | "
                f"{format_size(int(w['expert_bytes_per_token']))}")
        if "does_not_fit" in w:
            print(f"{head} | does not fit: {w['does_not_fit']}")
            continue
        p = w.get("predicted")
        pred = (f"at least {p['tok_s']:.1f} tok/s ({100 * p['hit_rate']:.0f} % of experts cached, {p['mb_read']:.0f} "
                f"MB read/token)" if p else "-")
        print(f"{head} | {format_size(w['min_budget'])} | {format_size(w['plan_bytes'])} ({w['slots']} of "
              f"{w['total_experts']}) | {pred}")
        for notice in w["notices"]:
            print(f"     note: {notice}")
    print("The prediction is a floor: a cache hitting only its share of the experts, reads not overlapped with "
          "compute (edgemoe/apps/doctor.py, predict_decode); `edgemoe generate --stats` prints it beside what it "
          "measures.")

