#!/usr/bin/env python3
"""Write an edgemoe container as an ONNX model for ONNX Runtime: the all-resident peer that
on-device users of ORT know, on the same weights, for side-by-side benchmarks.

    python tools/export_onnx.py MODEL.emoe -o MODEL.onnx [--accuracy-level 4]

The graph is built by hand from the container (no torch export: transformers' MoE blocks route
with data-dependent Python control flow) out of ORT's own fused CPU operators:
SimplifiedLayerNormalization, MatMulNBits, GroupQueryAttention (rotary inside, a KV cache that
runs in place) and the MoE / QMoE expert operators, which route top-k themselves.

Weights, and how exactly ORT holds ours:
- q8 matrices (resident and experts): MatMulNBits / QMoE 8-bit, block 32, zero point 128: the
  same numbers (our code q -> q + 128, the fp16 scale widened to f32).
- q4 resident matrices: MatMulNBits 4-bit, block 32, float zero point -m/d: the same numbers
  (w = d*q + m = d*(q - (-m/d))), up to f32 rounding.
- f32 matrices and f32 experts: MatMul / MoE in f32.
- q4/q3/q2 experts: QMoE has uint8 zero points only, so it cannot hold our asymmetric codes.
  They are dequantized and re-quantized to ORT's symmetric 4-bit block-32 code (scale = the
  block's signed extreme / -8, the convention of its fast MLAS path) - the peer's own 4 bits of
  the same weights, a little less accurate than ours.
Embeddings are gathered from an f32 table; norms and routers are f32 as in the container.

`OnnxPeer` runs the exported model: prompt and single-token steps with the KV cache bound in
place (past and present share one buffer, as onnxruntime-genai does). Needs `onnx` and
`onnxruntime` (pip install -e ".[bench]").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edgemoe.format import quant  # noqa: E402
from edgemoe.format.container import open_container  # noqa: E402

BLOCK = quant.GROUP  # 32: our block, and the block we give ORT
# Rotary tables cover this many positions at most (GroupQueryAttention takes them precomputed;
# a config's max_position can be far larger than any context this peer is run with).
MAX_CONTEXT = 1 << 16
MS_DOMAIN = "com.microsoft"
# ORT reads this when it creates a QMoE kernel: the MLAS 4-bit expert GEMM, several times faster
# than its default block-wise path (see the module docstring for the code it expects).
MLAS_Q4_MOE_ENV = "ORT_USE_MLAS_Q4_GEMM_MOE"


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit codes [..., 2n] -> bytes [..., n], element 2i in the low nibble and 2i+1 in the high
    (MatMulNBits' and QMoE's packing)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def nbits_q8(raw: np.ndarray, shape):
    """Our q8 rows as MatMulNBits / QMoE 8-bit operands: codes + 128 and f32 scales."""
    b = quant.blocks(raw, quant.Q8, shape)
    codes = (b["qs"].astype(np.int16) + 128).astype(np.uint8)  # [rows, k/32, 32]
    return codes, b["d"].astype(np.float32), None


def nbits_q4(raw: np.ndarray, shape):
    """Our q4 rows as MatMulNBits 4-bit operands: packed codes, f32 scales, f32 zero points."""
    b = quant.blocks(raw, quant.Q4, shape)
    q = quant.codes(b, quant.Q4).astype(np.uint8)  # [rows, k/32, 32], element order
    d = b["d"].astype(np.float32)
    m = b["m"].astype(np.float32)
    flat = d == 0  # the whole block equals m: scale 1, code 0, zero point -m
    scale = np.where(flat, 1.0, d).astype(np.float32)
    zero = np.where(flat, -m, -m / np.where(flat, 1.0, d)).astype(np.float32)
    q = np.where(flat[..., None], 0, q).astype(np.uint8)
    return pack_nibbles(q), scale, zero


def ort_q4_symmetric(w: np.ndarray):
    """f32 [rows, k] -> ORT's symmetric 4-bit block-32 code: packed [rows, k/32, 16], scales."""
    rows, k = w.shape
    g = w.reshape(rows, k // BLOCK, BLOCK)
    extreme = np.take_along_axis(g, np.abs(g).argmax(-1)[..., None], -1)[..., 0]
    scale = (extreme / -8.0).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.rint(g / safe[..., None]) + 8, 0, 15).astype(np.uint8)
    return pack_nibbles(q), scale


class GraphBuilder:
    """Nodes and initializers of one ONNX graph, with unique names."""

    def __init__(self, helper, numpy_helper):
        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, array: np.ndarray) -> str:
        n = self.name(base)
        self.inits.append(self.nh.from_array(np.ascontiguousarray(array), n))
        return n

    def op(self, kind: str, inputs: List[str], base: str = "t", n_out: int = 1, domain: str = "",
           outputs: Optional[List[str]] = None, **attrs) -> List[str]:
        outs = outputs or [self.name(base) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(kind, inputs, outs, name=self.name(kind), domain=domain or None, **attrs))
        return outs

    def one(self, kind: str, inputs: List[str], **kw) -> str:
        return self.op(kind, inputs, **kw)[0]


class Exporter:
    def __init__(self, container, accuracy_level: int, dequantize: bool = False):
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.c, self.cfg = onnx, container, container.config
        self.g = GraphBuilder(helper, numpy_helper)
        self.level = accuracy_level
        self.dequantize = dequantize  # every matrix as f32 (MatMul, MoE): the reference the exact ops must equal
        self.max_context = min(self.cfg["max_position"], MAX_CONTEXT)
        self.resident = container.tensors
        self.data = open(container.path, "rb")

    def raw(self, offset: int, nbytes: int) -> np.ndarray:
        self.data.seek(offset)
        return np.frombuffer(self.data.read(nbytes), dtype=np.uint8)

    def resident_raw(self, name: str):
        t = self.resident[name]
        return self.raw(self.c.sections["resident"]["offset"] + t["offset"], t["nbytes"]), quant.CODES[t["type"]], t["shape"]

    def f32(self, name: str) -> np.ndarray:
        raw, qtype, shape = self.resident_raw(name)
        if len(shape) == 1:
            return quant.dequantize(raw, qtype, (1, shape[0]))[0]
        return quant.dequantize(raw, qtype, shape)

    def linear(self, x: str, name: str, bias: Optional[np.ndarray] = None) -> str:
        """x @ W.T (+ bias) for the resident matrix `name` ([out, in]), in the operator that holds
        its numbers exactly."""
        raw, qtype, (n, k) = self.resident_raw(name)
        g = self.g
        if qtype in (quant.Q8, quant.Q4) and k % BLOCK == 0 and not self.dequantize:
            codes, scales, zeros = (nbits_q8 if qtype == quant.Q8 else nbits_q4)(raw, (n, k))
            inputs = [x, g.const(name + ".q", codes), g.const(name + ".scales", scales),
                      g.const(name + ".zeros", zeros) if zeros is not None else "", "",
                      g.const(name + ".bias", bias.astype(np.float32)) if bias is not None else ""]
            while inputs[-1] == "":
                inputs.pop()
            return g.one("MatMulNBits", inputs, domain=MS_DOMAIN, K=k, N=n, bits=8 if qtype == quant.Q8 else 4,
                         block_size=BLOCK, accuracy_level=self.level)
        y = g.one("MatMul", [x, g.const(name + ".t", quant.dequantize(raw, qtype, (n, k)).T)])
        return g.one("Add", [y, g.const(name + ".bias", bias.astype(np.float32))]) if bias is not None else y

    def rms_norm(self, x: str, weight: np.ndarray) -> str:
        return self.g.one("SimplifiedLayerNormalization", [x, self.g.const("norm", weight.astype(np.float32))],
                          axis=-1, epsilon=float(self.cfg["rms_norm_eps"]), stash_type=1)

    def qk_norm(self, x: str, weight: np.ndarray, heads: int) -> str:
        cfg, g = self.cfg, self.g
        if cfg["qk_norm"] == "full":  # over the whole projection (OLMoE)
            return self.rms_norm(x, weight)
        split = g.one("Reshape", [x, g.const("shape", np.array([0, 0, heads, cfg["head_dim"]], np.int64))])
        return g.one("Reshape", [self.rms_norm(split, weight),
                                 g.const("shape", np.array([0, 0, heads * cfg["head_dim"]], np.int64))])

    def rotary_caches(self):
        cfg = self.cfg
        hd = cfg["head_dim"]
        inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        ang = np.arange(self.max_context, dtype=np.float64)[:, None] * inv[None, :]
        return self.g.const("cos_cache", np.cos(ang).astype(np.float32)), \
            self.g.const("sin_cache", np.sin(ang).astype(np.float32))

    def attention(self, l: int, x: str, caches, seqlens: str, total: str) -> str:
        cfg, g = self.cfg, self.g
        p = f"layers.{l}."
        bias = {b: self.f32(p + b) for b in ("bq", "bk", "bv")} if cfg["qkv_bias"] else {}
        q = self.linear(x, p + "wq", bias.get("bq"))
        k = self.linear(x, p + "wk", bias.get("bk"))
        v = self.linear(x, p + "wv", bias.get("bv"))
        if cfg["qk_norm"] != "none":
            q = self.qk_norm(q, self.f32(p + "q_norm"), cfg["n_heads"])
            k = self.qk_norm(k, self.f32(p + "k_norm"), cfg["n_kv_heads"])
        out = g.op("GroupQueryAttention", [q, k, v, f"past_key_{l}", f"past_value_{l}", seqlens, total, *caches],
                   domain=MS_DOMAIN, outputs=[g.name("attn"), f"present_key_{l}", f"present_value_{l}"],
                   num_heads=cfg["n_heads"], kv_num_heads=cfg["n_kv_heads"], do_rotary=1, rotary_interleaved=0)[0]
        return self.linear(out, p + "wo")

    def expert_matrices(self, l: int):
        """{gate, up, down: [(raw bytes, qtype, shape) of every expert of layer l]}, each blob read
        (and, if zstd-compressed, decompressed) once."""
        out = {part: [] for part in ("gate", "up", "down")}
        for blob in self.c.experts[l]:
            if blob.get("stored"):
                import zstandard

                whole = np.frombuffer(zstandard.ZstdDecompressor().decompress(
                    self.raw(blob["offset"], blob["stored"]).tobytes(), max_output_size=blob["size"]), np.uint8)
            else:
                whole = self.raw(blob["offset"], blob["size"])
            for part, rows in out.items():
                p = blob["parts"][part]
                rows.append((whole[p["offset"]:p["offset"] + p["nbytes"]], quant.CODES[blob["type"]], p["shape"]))
        return out

    def experts(self, l: int, x2d: str, router_logits: str) -> str:
        """The routed experts of layer l on x2d [tokens, hidden]: MoE (f32) or QMoE (q8 exact, or
        ORT's own 4-bit code), fc1 = gate and up rows interleaved, as ORT's CPU kernels require."""
        cfg, g = self.cfg, self.g
        parts = self.expert_matrices(l)
        gate, up, down = parts["gate"], parts["up"], parts["down"]
        types = {t for _, t, _ in gate + up + down}
        I, H, E = cfg["expert_intermediate"], cfg["hidden"], cfg["n_experts"]
        common = dict(k=cfg["top_k"], activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0,
                      activation_beta=0.0, normalize_routing_weights=int(cfg["norm_topk_prob"]))

        def interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [E, I, ...] x2 -> [E, 2I, ...]
            out = np.empty((a.shape[0], 2 * a.shape[1]) + a.shape[2:], a.dtype)
            out[:, 0::2], out[:, 1::2] = a, b
            return out

        if types == {quant.F32} or self.dequantize:
            deq = [np.stack([quant.dequantize(r, t, s) for r, t, s in m]) for m in (gate, up, down)]
            return g.one("MoE", [x2d, router_logits, g.const("fc1", interleave(deq[0], deq[1])), "",
                                 g.const("fc2", deq[2])], domain=MS_DOMAIN, **common)
        if types == {quant.Q8}:
            bits, encode = 8, lambda r, t, s: nbits_q8(r, s)[:2]
        else:  # q4/q3/q2 or a mix: ORT's symmetric 4-bit code of our dequantized weights
            bits, encode = 4, lambda r, t, s: ort_q4_symmetric(quant.dequantize(r, t, s))
        enc = [[encode(*matrix) for matrix in m] for m in (gate, up, down)]
        w = [np.stack([e[0].reshape(e[0].shape[0], -1) for e in m]) for m in enc]  # [E, rows, packed k]
        sc = [np.stack([e[1] for e in m]) for m in enc]  # [E, rows, k/32]
        assert w[0].shape[:2] == (E, I) and w[2].shape[:2] == (E, H)
        # router_weights (input 14) carry the softmax: without it QMoE always renormalises the top k
        probs = g.one("Softmax", [router_logits], axis=-1)
        inputs = [x2d, router_logits, g.const("fc1", interleave(w[0], w[1])), g.const("fc1_scales", interleave(sc[0], sc[1])),
                  "", g.const("fc2", w[2]), g.const("fc2_scales", sc[2]), "", "", "", "", "", "", "", probs]
        return g.one("QMoE", inputs, domain=MS_DOMAIN, expert_weight_bits=bits, block_size=BLOCK, **common)

    def shared_expert(self, l: int, x: str) -> str:
        g, p = self.g, f"layers.{l}."
        gate = self.linear(x, p + "shared_gate_proj")
        act = g.one("Mul", [g.one("Mul", [gate, g.one("Sigmoid", [gate])]), self.linear(x, p + "shared_up_proj")])
        out = self.linear(act, p + "shared_down_proj")
        if self.cfg["shared_gate"]:
            out = g.one("Mul", [out, g.one("Sigmoid", [self.linear(x, p + "shared_expert_gate")])])
        return out

    def build(self):
        onnx, h, cfg, g = self.onnx, self.g.h, self.cfg, self.g
        F = onnx.TensorProto.FLOAT
        H, kvh, hd = cfg["hidden"], cfg["n_kv_heads"], cfg["head_dim"]
        inputs = [h.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, "seq"]),
                  h.make_tensor_value_info("seqlens_k", onnx.TensorProto.INT32, [1]),
                  h.make_tensor_value_info("total_sequence_length", onnx.TensorProto.INT32, [])]
        outputs = [h.make_tensor_value_info("logits", F, [1, "seq", cfg["vocab"]])]
        for l in range(cfg["n_layers"]):
            for kind in ("key", "value"):
                inputs.append(h.make_tensor_value_info(f"past_{kind}_{l}", F, [1, kvh, "past", hd]))
                outputs.append(h.make_tensor_value_info(f"present_{kind}_{l}", F, [1, kvh, "total", hd]))

        x = g.one("Gather", [g.const("tok_embeddings", self.f32("tok_embeddings")), "input_ids"], axis=0)
        caches = self.rotary_caches()
        to_2d = g.const("shape", np.array([-1, H], np.int64))
        for l in range(cfg["n_layers"]):
            p = f"layers.{l}."
            x = g.one("Add", [x, self.attention(l, self.rms_norm(x, self.f32(p + "attn_norm")), caches,
                                                "seqlens_k", "total_sequence_length")])
            hn = self.rms_norm(x, self.f32(p + "ffn_norm"))
            h2 = g.one("Reshape", [hn, to_2d])
            logits = self.linear(h2, p + "router")
            moe = self.experts(l, h2, logits)
            if cfg["shared_intermediate"]:
                moe = g.one("Add", [moe, self.shared_expert(l, h2)])
            x = g.one("Add", [x, g.one("Reshape", [moe, g.one("Shape", [x])])])
        x = self.rms_norm(x, self.f32("norm"))
        out_name = "tok_embeddings" if cfg["tie_embeddings"] else "output"
        self.g.nodes.append(h.make_node("Identity", [self.linear(x, out_name)], ["logits"]))
        graph = h.make_graph(g.nodes, "edgemoe_peer", inputs, outputs, g.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21), h.make_opsetid(MS_DOMAIN, 1)],
                             producer_name="edgemoe tools/export_onnx.py")
        model.ir_version = 10
        return model


# The config fields the graph builder reads; any other field away from its default changes what
# the model computes in a way the graph would silently leave out.
EXPORTED_FIELDS = {"architecture", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "vocab", "n_experts",
                   "top_k", "expert_intermediate", "shared_intermediate", "shared_gate", "qkv_bias", "norm_topk_prob",
                   "tie_embeddings", "qk_norm", "rope_theta", "rms_norm_eps", "max_position", "eos_token_ids"}


def features_not_exported(cfg) -> List[str]:
    """The fields of `cfg` that the graph does not implement and that are not at their defaults."""
    from edgemoe.format.model_config import validate_config

    defaults = validate_config({k: v for k, v in cfg.items() if k in EXPORTED_FIELDS})
    return sorted(f"{k}={cfg[k]!r}" for k in cfg if k not in EXPORTED_FIELDS and cfg[k] != defaults.get(k))


def export_onnx(emoe: str, out: str, accuracy_level: int = 0, dequantize: bool = False) -> str:
    """Write the container at `emoe` as `out` (+ `out`.data, its weights). accuracy_level is
    MatMulNBits' (0: f32 activations; 4: int8 activations, ORT's fastest CPU path). dequantize:
    every matrix as f32 MatMul / MoE instead (a check of the quantized operators' packing)."""
    import onnx

    c = open_container(emoe)
    unsupported = features_not_exported(c.config)
    if unsupported:
        raise ValueError(f"{emoe}: {', '.join(unsupported)} not exported to ONNX yet (the graph computes "
                         f"Mixtral / Qwen-MoE / OLMoE layers only)")
    exporter = Exporter(c, accuracy_level, dequantize)
    model = exporter.build()
    exporter.data.close()
    data = os.path.basename(out) + ".data"
    if os.path.exists(out + ".data"):
        os.remove(out + ".data")  # save appends to it otherwise
    onnx.save_model(model, out, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    with open(out + ".json", "w") as f:  # what OnnxPeer needs without parsing the graph
        json.dump(dict({k: c.config[k] for k in ("n_layers", "n_kv_heads", "head_dim", "vocab")},
                       max_context=exporter.max_context), f)
    return out


class OnnxPeer:
    """An exported model in an ONNX Runtime session: eval(ids) appends ids to the context and
    returns their logits [len(ids), vocab], like edgemoe's Model.eval."""

    def __init__(self, path: str, threads: int = 2, ctx_size: int = 512):
        os.environ.setdefault(MLAS_Q4_MOE_ENV, "1")
        import onnxruntime as ort

        with open(path + ".json") as f:
            self.shape = json.load(f)
        if ctx_size > self.shape["max_context"]:
            raise ValueError(f"ctx_size {ctx_size} exceeds the {self.shape['max_context']} positions the model was exported for")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.ctx = ctx_size
        s = self.shape
        # past and present share one buffer per layer: GroupQueryAttention writes the new rows in place
        self.cache = [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, s["n_kv_heads"], ctx_size, s["head_dim"]),
                                                                np.float32)) for _ in range(2 * s["n_layers"])]
        self.n_past = 0

    def reset(self) -> None:
        self.n_past = 0

    def eval(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        total = self.n_past + ids.shape[1]
        if total > self.ctx:
            raise ValueError(f"{total} tokens exceed the context size {self.ctx}")
        b = self.session.io_binding()
        b.bind_output("logits", "cpu")  # first: get_outputs() lists outputs in binding order
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        for l in range(self.shape["n_layers"]):
            for j, kind in enumerate(("key", "value")):
                buf = self.cache[2 * l + j]
                b.bind_ortvalue_input(f"past_{kind}_{l}", buf)
                b.bind_ortvalue_output(f"present_{kind}_{l}", buf)
        self.session.run_with_iobinding(b)
        self.n_past = total
        return b.get_outputs()[0].numpy()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("emoe")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--accuracy-level", type=int, default=0, choices=[0, 1, 4],
                   help="MatMulNBits activations: 0/1 f32, 4 int8 (faster)")
    a = p.parse_args()
    export_onnx(a.emoe, a.output, a.accuracy_level)
    print(f"wrote {a.output} (+ {a.output}.data)")


if __name__ == "__main__":
    main()
