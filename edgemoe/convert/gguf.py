"""Convert a GGUF file (llama.cpp's format) into an .emoe container.

The GGUF is read with the `gguf` package and presented to the converter as a
checkpoint under Hugging Face tensor names, with a transformers-style config
made from its metadata, so the same architecture mappings and writer serve
both sources. Stacked `ffn_*_exps` tensors are served one expert at a time.
Quantized source tensors are dequantized (any type the `gguf` package can
decode) and re-encoded at the requested width, except where a GGUF block is
exactly one of ours: Q8_0 is our q8 byte for byte, and Q4_0 (w = d * (q - 8))
is our q4 with m = -8d; those are copied without loss.

Tokenizer: byte-level BPE (`tokenizer.ggml.model` = "gpt2") with GPT-2's
pre-tokenizer ("default" and its aliases) or Qwen2's ("qwen2") is rebuilt as a
`tokenizers` JSON; other tokenizer or pre-tokenizer types are refused by name.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..format import quant
from ..errors import FormatError, UnsupportedModelError
from .gguf_mmproj import with_tower
from .arch_base import HFArch
from .rope import yarn_mscale
from .gguf_gemma4 import gemma4_config, gemma4_tokenizer
from .gguf_qwen_hybrid import ARCHS as HYBRID_ARCHS, LAYER_TENSORS as HYBRID_LAYER_TENSORS, NEXTN_TENSORS, hybrid_config, \
    hybrid_tensors
from .spm_tokenizer import spm_tokenizer
from .hf import ARCHS, convert_checkpoint

# GGUF architecture -> the transformers class its config becomes
GGUF_ARCHS = {"olmoe": "OlmoeForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM", "qwen2moe": "Qwen2MoeForCausalLM",
              "llama": "MixtralForCausalLM", "gpt-oss": "GptOssForCausalLM", "glm4moe": "Glm4MoeForCausalLM",
              "deepseek2": "DeepseekV2ForCausalLM",  # deepseek2 with sigmoid gating: DeepseekV3ForCausalLM
              "gemma4": "Gemma4ForCausalLM", "qwen3next": "Qwen3NextForCausalLM",
              "qwen35moe": "Qwen3_5MoeForCausalLM", "qwen3vlmoe": "Qwen3VLMoeForConditionalGeneration"}
SIGMOID_GATING = 2  # llama.cpp's expert_gating_func (1: softmax)
GPT2_PRE_TOKENIZERS = ("default", "gpt2", "gpt-2", "olmo")
# Qwen2/2.5/3 (and their MoE models): llama.cpp's "qwen2" pre-tokenizer type is the split
# regex of their tokenizer.json (contractions matched case-insensitively, digits one by one),
# then byte-level mapping without GPT-2's own regex; the text is NFC-normalised first.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = GPT2_PRE_TOKENIZERS + ("qwen2",)


def _pre_tokenizer(pre: str) -> Dict[str, Any]:
    """The tokenizer.json normalizer and pre_tokenizer sections of a GGUF pre-tokenizer type."""
    if pre == "qwen2":
        return {"normalizer": {"type": "NFC"},
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}}
    return {"normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}}
# llama.cpp's per-layer names -> Hugging Face's (after "model.layers.{l}.")
LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight", "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate_inp.weight": "{moe}.{router}.weight", "ffn_gate_inp.bias": "{moe}.{router}.bias",
    "attn_output.bias": "self_attn.o_proj.bias", "attn_sinks.weight": "self_attn.sinks",
    "ffn_gate_exps.bias": "{moe}.experts.gate_proj_bias", "ffn_up_exps.bias": "{moe}.experts.up_proj_bias",
    "ffn_down_exps.bias": "{moe}.experts.down_proj_bias",
    "ffn_gate_shexp.weight": "{moe}.{shared}.gate_proj.weight",
    "ffn_up_shexp.weight": "{moe}.{shared}.up_proj.weight",
    "ffn_down_shexp.weight": "{moe}.{shared}.down_proj.weight",
    "ffn_gate_inp_shexp.weight": "{moe}.shared_expert_gate.weight",
    "exp_probs_b.bias": "{moe}.{router}.e_score_correction_bias",
    # dense layers
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    # latent attention (attn_k_b and attn_v_b make kv_b_proj: GGUFCheckpoint)
    "attn_q_a.weight": "self_attn.q_a_proj.weight", "attn_q_a_norm.weight": "self_attn.q_a_layernorm.weight",
    "attn_q_b.weight": "self_attn.q_b_proj.weight", "attn_kv_a_mqa.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attn_kv_a_norm.weight": "self_attn.kv_a_layernorm.weight",
}
# Where an architecture's llama.cpp names mean other Hugging Face tensors than LAYER_TENSORS says.
ARCH_LAYER_TENSORS = {"gemma4": {
    "ffn_norm.weight": "pre_feedforward_layernorm.weight", "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "post_ffw_norm_1.weight": "post_feedforward_layernorm_1.weight",
    "pre_ffw_norm_2.weight": "pre_feedforward_layernorm_2.weight",
    "post_ffw_norm_2.weight": "post_feedforward_layernorm_2.weight",
    "ffn_gate_inp.weight": "router.proj.weight", "ffn_gate_inp.scale": "router.scale",
    "ffn_down_exps.scale": "router.per_expert_scale", "layer_output_scale.weight": "layer_scalar"},
    **{a: HYBRID_LAYER_TENSORS for a in HYBRID_ARCHS}}
# Stacked expert tensors served whole under transformers' stacked names (one expert read at a time).
STACKED_EXPERTS = {"gemma4": {"ffn_gate_up_exps.weight": "experts.gate_up_proj",
                              "ffn_down_exps.weight": "experts.down_proj"}}
TOP_TENSORS = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
               "output.weight": "lm_head.weight"}
EXPERT_PARTS = {"gate": "ffn_gate_exps.weight", "up": "ffn_up_exps.weight", "down": "ffn_down_exps.weight"}


# GGUF value types: fixed sizes; 8 = string, 9 = array
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
SUPPORTED_VERSIONS = (2, 3)


def check_header(path: str) -> None:
    """Walk a GGUF header (metadata and tensor table) and check every count and length against
    the bytes that remain, before the gguf package reads it: a hostile count (an array of 2**60
    elements) must be a clear FormatError, not a reader that loops or allocates for minutes
    (found by tools/fuzz_parsers.py; tests/fixtures/fuzz)."""
    import mmap

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise FormatError(f"{path}: too short for a GGUF file ({size} bytes)")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # pages are read only as the walk reaches them
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e}") from None
    try:
        _walk_header(path, data, size)
    finally:
        data.close()


def _walk_header(path: str, data, size: int) -> None:
    """check_header's walk over the mapped bytes; raises FormatError at the first bad length."""
    import struct

    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or n > size - pos:
            raise FormatError(f"{path}: GGUF header claims {n} bytes at offset {pos}, past the end of the "
                              f"{size}-byte file (truncated or corrupt)")
        pos += n
        return data[pos - n:pos]

    def u32() -> int:
        return struct.unpack("<I", take(4))[0]

    def u64() -> int:
        return struct.unpack("<Q", take(8))[0]

    def skip_value(vtype: int, depth: int = 0) -> None:
        if vtype in _SCALAR_SIZES:
            take(_SCALAR_SIZES[vtype])
        elif vtype == _STRING:
            take(u64())
        elif vtype == _ARRAY and depth == 0:
            etype, count = u32(), u64()
            if etype in _SCALAR_SIZES:
                take(count * _SCALAR_SIZES[etype])
            elif etype == _STRING:
                if count > (size - pos) // 8:
                    raise FormatError(f"{path}: GGUF array of {count} strings cannot fit in the file")
                for _ in range(count):
                    take(u64())
            else:
                raise FormatError(f"{path}: GGUF array of unsupported element type {etype}")
        else:
            raise FormatError(f"{path}: GGUF metadata value of unknown type {vtype}")

    if take(4) != b"GGUF":
        raise FormatError(f"{path}: not a GGUF file (bad magic)")
    version = u32()
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{path}: GGUF version {version} is not supported (supported: 2, 3)")
    n_tensors, n_kv = u64(), u64()
    if n_kv > size // 13 or n_tensors > size // 24:  # the smallest possible entries
        raise FormatError(f"{path}: GGUF header claims {n_kv} metadata entries and {n_tensors} tensors, "
                          f"more than a {size}-byte file can hold")
    for _ in range(n_kv):
        take(u64())  # key
        skip_value(u32())
    for _ in range(n_tensors):
        take(u64())  # name
        n_dims = u32()
        if n_dims > 8:
            raise FormatError(f"{path}: GGUF tensor with {n_dims} dimensions")
        dims = [u64() for _ in range(n_dims)]
        if any(d > size * 8 for d in dims):
            raise FormatError(f"{path}: GGUF tensor dimension {max(dims)} is larger than the file allows")
        u32()  # type
        u64()  # offset (the gguf package checks it against the data section)


def _open(path: str):
    try:
        import gguf
    except ImportError:
        raise UnsupportedModelError("reading GGUF needs the gguf package: pip install gguf") from None
    check_header(path)
    try:
        return gguf, gguf.GGUFReader(path)
    except Exception as e:  # truncated or garbled: the reader raises all sorts
        raise FormatError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


_SPLIT_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def split_parts(path: str) -> List[str]:
    """The files of the GGUF model `path` names: itself, or every part of a split model (llama.cpp's
    gguf-split and the hub name them MODEL-00001-of-00003.gguf; the first part is given)."""
    m = _SPLIT_NAME.search(os.path.basename(path))
    if not m:
        return [path]
    no, count = int(m.group(1)), int(m.group(2))
    if not 1 <= no <= count:
        raise FormatError(f"{path}: a split GGUF's name says part {no} of {count}")
    first = path[:len(path) - len(m.group(0))] + f"-00001-of-{count:05d}.gguf"
    if no != 1:
        raise FormatError(f"{path} is part {no} of {count} of a split GGUF model: give its first part, {first}")
    parts = [path[:len(path) - len(m.group(0))] + f"-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [p for p in parts if not os.path.isfile(p)]
    if missing:
        raise FormatError(f"{path}: the split GGUF model lacks {len(missing)} of its {count} parts, "
                          f"e.g. {missing[0]}")
    return parts


class GGUFFile:
    """A GGUF file (or every part of a split one): its metadata and tensors by GGUF name."""

    def __init__(self, path: str):
        self.path = path
        parts = split_parts(path)
        self.gguf, self.reader = _open(parts[0])
        self.fields = self.reader.fields
        readers = [self.reader] + [_open(p)[1] for p in parts[1:]]
        self._check_split(parts, readers)
        self.tensors = {}
        for part, reader in zip(parts, readers):
            for t in reader.tensors:
                if t.name in self.tensors:
                    raise FormatError(f"{part}: tensor {t.name} is also in an earlier part of the model")
                self.tensors[t.name] = t

    def _check_split(self, parts: List[str], readers) -> None:
        """The parts' own split.* metadata (llama.cpp's) must agree with their names and order."""
        count = self.field("split.count", 1)
        if not isinstance(count, int) or isinstance(count, bool):
            raise FormatError(f"{self.path}: GGUF metadata split.count is not an integer: {count!r}")
        if count != len(parts):
            raise FormatError(f"{self.path}: the GGUF says it is split into {count} parts, its name into {len(parts)}"
                              + ("" if len(parts) > 1 else " (a split model's parts keep their -0000k-of-0000N names)"))
        for i, (part, reader) in enumerate(zip(parts, readers)):
            no = reader.fields.get("split.no")
            try:
                no = None if no is None else no.contents()
            except Exception:
                no = None
            if len(parts) > 1 and (not isinstance(no, int) or no != i):
                raise FormatError(f"{part}: its split.no metadata does not say part {i + 1} of {len(parts)}")

    def field(self, key: str, default: Any = None) -> Any:
        f = self.fields.get(key)
        if f is None:
            if default is None:
                raise FormatError(f"{self.path}: GGUF metadata lacks {key}")
            return default
        try:
            value = f.contents()
        except Exception as e:
            raise FormatError(f"{self.path}: GGUF metadata {key} is malformed ({e})") from None
        return value

    def _dims(self, gname: str) -> List[int]:
        return [int(d) for d in reversed(self.tensors[gname].shape.tolist())]  # GGUF lists the fastest dim first

    def _decode(self, t, data) -> np.ndarray:
        """GGUF tensor t's `data` (all of it, or one expert's slice) as f32, flat as the reader gives it."""
        try:
            return np.asarray(self.gguf.quants.dequantize(np.asarray(data), t.tensor_type), dtype=np.float32)
        except (NotImplementedError, ValueError, KeyError) as e:
            raise UnsupportedModelError(f"{self.path}: tensor {t.name} has type {t.tensor_type.name}, which "
                                        f"cannot be decoded ({e})") from None


class GGUFCheckpoint(GGUFFile):
    """A GGUF model file served under Hugging Face tensor names (what convert_checkpoint reads)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.arch_name = self.field("general.architecture")
        if self.arch_name not in GGUF_ARCHS:
            raise UnsupportedModelError(f"{path}: GGUF architecture {self.arch_name!r} is not supported "
                                        f"(supported: {', '.join(sorted(GGUF_ARCHS))})")
        self.hf_class = GGUF_ARCHS[self.arch_name]
        if self.arch_name == "deepseek2" and self.field("deepseek2.expert_gating_func", 1) == SIGMOID_GATING:
            self.hf_class = "DeepseekV3ForCausalLM"
        self.arch: HFArch = next(a for a in ARCHS if self.hf_class in a.hf_classes)
        # llama.cpp counts multi-token-prediction (NextN) blocks in block_count, after the model's
        # own layers; its forward pass never runs them, and neither does ours
        self.n_layers = int(self.field(f"{self.arch_name}.block_count")) - \
            int(self.field(f"{self.arch_name}.nextn_predict_layers", 0))
        if self.n_layers < 1:
            raise FormatError(f"{path}: block_count leaves no layers after the nextn_predict_layers")
        self.n_heads = int(self.field(f"{self.arch_name}.attention.head_count"))
        kv_heads = self.field(f"{self.arch_name}.attention.head_count_kv", self.n_heads)
        # gemma4 gives each layer its own count: the sliding layers' is read here, the rest by gemma4_config
        self.kv_heads_per_layer = [int(k) for k in kv_heads] if isinstance(kv_heads, list) else None
        self.n_kv_heads = self.kv_heads_per_layer[0] if self.kv_heads_per_layer else int(kv_heads)
        self.map: Dict[str, Tuple[str, Optional[int]]] = {}
        # kv_b_proj of latent attention: made from llama.cpp's attn_k_b and attn_v_b
        self.kv_b: Dict[str, Tuple[str, str]] = {}
        moe = self.arch.moe_prefixes[0]
        for gname in self.tensors:
            if gname in TOP_TENSORS:
                self.map[TOP_TENSORS[gname]] = (gname, None)
                continue
            parts = gname.split(".", 2)
            if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit():
                continue
            layer, short = int(parts[1]), parts[2]
            base = f"model.layers.{layer}"
            if layer >= self.n_layers:  # a NextN (multi-token-prediction) block: kept where the mapping keeps one
                if self.arch_name not in HYBRID_ARCHS:
                    continue
                base = f"mtp.layers.{layer - self.n_layers}"
                if short in NEXTN_TENSORS:
                    if layer == self.n_layers:  # (the head's own tensors: one set, as transformers has)
                        self.map[NEXTN_TENSORS[short]] = (gname, None)
                    continue
            own = ARCH_LAYER_TENSORS.get(self.arch_name, {})
            if short in own:
                self.map[f"{base}.{own[short]}"] = (gname, None)
                continue
            if short in STACKED_EXPERTS.get(self.arch_name, {}):
                self.map[f"{base}.{STACKED_EXPERTS[self.arch_name][short]}"] = (gname, None)
                continue
            if short in LAYER_TENSORS:
                hf_name = LAYER_TENSORS[short].format(moe=moe, router=self.arch.router_name,
                                                      shared=self.arch.shared_expert_name)
                self.map[f"{base}.{hf_name}"] = (gname, None)
            if short == "attn_k_b.weight" and f"blk.{layer}.attn_v_b.weight" in self.tensors:
                self.kv_b[f"{base}.self_attn.kv_b_proj.weight"] = (gname, f"blk.{layer}.attn_v_b.weight")
            for part, stacked in EXPERT_PARTS.items():
                if short == stacked:
                    t = self.tensors[gname]
                    n_experts = int(t.shape[-1]) if len(t.shape) == 3 else 0
                    for e in range(n_experts):
                        self.map[f"{base}.{moe}.experts.{e}.{self.arch.expert_names[part]}.weight"] = (gname, e)

        # tensors whose values llama.cpp's converter changed: {name: (GGUF tensor, transform, shape)}
        self.derived = hybrid_tensors(self) if self.arch_name in HYBRID_ARCHS else {}

    # --- the Checkpoint interface ---
    def __contains__(self, name: str) -> bool:
        return name in self.map or name in self.kv_b or name in self.derived

    def names(self) -> List[str]:
        return list(dict.fromkeys(list(self.map) + list(self.kv_b) + list(self.derived)))

    def shape(self, name: str) -> Tuple[int, ...]:
        if name in self.derived:
            return self.derived[name][2]
        if name in self.kv_b:  # k_b [heads, kv_lora, nope], v_b [heads, v, kv_lora]
            k_b, v_b = (self._dims(g) for g in self.kv_b[name])
            if len(k_b) != 3 or len(v_b) != 3 or k_b[0] != v_b[0] or k_b[1] != v_b[2]:
                raise FormatError(f"{self.path}: {self.kv_b[name][0]} {k_b} and {self.kv_b[name][1]} {v_b} are not "
                                  f"[heads, kv_lora, nope] and [heads, v, kv_lora]")
            (h, rank, nope), v = k_b, v_b[1]
            return (h * (nope + v), rank)
        gname, e = self.map[name]
        dims = self._dims(gname)
        dims = dims[1:] if e is not None else dims
        if name.endswith("shared_expert_gate.weight") and len(dims) == 1:
            dims = [1] + dims  # llama.cpp stores this [hidden]; transformers [1, hidden]
        return tuple(dims)

    def _raw(self, name: str, index: Optional[int] = None) -> Tuple[Any, np.ndarray]:
        """The tensor and its data: one expert's slice where the name is one expert's (or index picks
        one of a stacked tensor's), else all of it."""
        gname, e = self.map[name]
        t = self.tensors[gname]
        e = e if index is None else index
        data = t.data if e is None else t.data[e]
        return t, data

    def get(self, name: str, index: Optional[int] = None) -> np.ndarray:
        if name in self.derived:
            gname, transform, shape = self.derived[name]
            t = self.tensors[gname]
            w = np.ascontiguousarray(transform(self._decode(t, t.data).reshape(self._dims(gname)))).reshape(shape)
            return w if index is None else w[index]
        if name in self.kv_b:  # each head's key rows (k_b transposed back), then its value rows
            shape = self.shape(name)  # checks the two agree
            k_b, v_b = (self._decode(self.tensors[g], self.tensors[g].data).reshape(self._dims(g))
                        for g in self.kv_b[name])
            return np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1).reshape(shape)
        if index is not None and self.map[name][1] is None:  # one expert of a stacked tensor: decode only it
            return self._decode(*self._raw(name, index)).reshape(self.shape(name)[1:])
        w = self._decode(*self._raw(name)).reshape(self.shape(name))
        if self.arch_name == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute(w, self.n_heads if "q_proj" in name else self.n_kv_heads)
        return w if index is None else w[index]

    def native(self, name: str, qtype: int) -> Optional[np.ndarray]:
        """The tensor's bytes in our encoding `qtype` when its GGUF blocks are exactly that, else None."""
        if self.arch_name == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            return None  # rows are permuted on the way in
        if name in self.kv_b or name in self.derived:
            return None  # assembled from two tensors, or changed on the way in
        t, data = self._raw(name)
        Q = self.gguf.GGMLQuantizationType
        raw = np.ascontiguousarray(np.asarray(data)).view(np.uint8).reshape(-1)
        if t.tensor_type == Q.Q8_0 and qtype == quant.Q8:
            return raw.copy()  # fp16 d + 32 int8: our q8 block
        if t.tensor_type == Q.Q4_K and qtype == quant.Q4K:
            return raw.copy()  # our q4k is Q4_K's layout
        if t.tensor_type == Q.MXFP4 and qtype == quant.MXFP4:
            return raw.copy()  # our mxfp4 is block_mxfp4
        if t.tensor_type == Q.Q4_0 and qtype == quant.Q4:
            blocks = raw.reshape(-1, 18)
            out = np.empty((len(blocks), 20), dtype=np.uint8)
            d = blocks[:, :2].copy().view("<f2")
            out[:, :2] = blocks[:, :2]
            with np.errstate(over="ignore"):
                m = (d.astype(np.float32) * -8.0).astype("<f2")  # exact: a power-of-two multiple
            if not np.all(np.isfinite(m)):
                return None
            out[:, 2:4] = m.view(np.uint8).reshape(-1, 2)
            out[:, 4:] = blocks[:, 2:]  # same nibble order: element j low, j + 16 high
            return out.reshape(-1)
        return None


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order for its `llama` rotary layout (pairs -> halves)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_config(ck: GGUFCheckpoint) -> Dict[str, Any]:
    """The transformers-style config the architecture mappings read, from GGUF metadata."""
    a = ck.arch_name
    n_embd = int(ck.field(f"{a}.embedding_length"))
    tokens = ck.field("tokenizer.ggml.tokens", [])
    vocab = int(ck.shape("model.embed_tokens.weight")[0]) if "model.embed_tokens.weight" in ck else len(tokens)
    n_experts = int(ck.field(f"{a}.expert_count", 0))
    if not n_experts:
        raise UnsupportedModelError(f"{ck.path}: {a} model without experts (not a mixture of experts)")
    ff = int(ck.field(f"{a}.expert_feed_forward_length", 0) or ck.field(f"{a}.feed_forward_length"))
    cfg = {
        "architectures": [ck.hf_class],
        "hidden_size": n_embd,
        "num_hidden_layers": ck.n_layers,
        "num_attention_heads": ck.n_heads,
        "num_key_value_heads": ck.n_kv_heads,
        "head_dim": int(ck.field(f"{a}.attention.key_length", n_embd // ck.n_heads)),
        "vocab_size": vocab,
        "max_position_embeddings": int(ck.field(f"{a}.context_length", 4096)),
        "rms_norm_eps": float(ck.field(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(ck.field(f"{a}.rope.freq_base", 10000.0)),
        "num_experts": n_experts,
        "num_local_experts": n_experts,
        "num_experts_per_tok": int(ck.field(f"{a}.expert_used_count")),
        "intermediate_size": ff,
        "moe_intermediate_size": ff,
        "tie_word_embeddings": "lm_head.weight" not in ck,
        # llama.cpp renormalises the top-k weights for llama (Mixtral) and qwen3moe, not for the others
        "norm_topk_prob": bool(ck.field(f"{a}.expert_weights_norm", a in ("llama", "qwen3moe"))),
    }
    if a == "qwen3vlmoe":  # its multimodal rope's [time, height, width] pairs (a fourth, 0, is llama.cpp's own)
        sections = ck.field(f"{a}.rope.dimension_sections")
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_theta"],
                                  "mrope_section": [int(s) for s in list(sections)[:3]]}
    if a == "qwen2moe":
        cfg["shared_expert_intermediate_size"] = int(ck.field(f"{a}.expert_shared_feed_forward_length", 0))
    rope = rope_parameters(ck, cfg["rope_theta"], cfg["max_position_embeddings"])
    if rope is not None:
        cfg["rope_parameters"] = rope
    if a == "gpt-oss":
        cfg.update(gpt_oss_config(ck, cfg["num_hidden_layers"]))
    if a in ("glm4moe", "deepseek2"):
        cfg.update(grouped_moe_config(ck, cfg))
    if a == "deepseek2":
        cfg.update(latent_attention_config(ck, cfg))
    if a == "gemma4":
        cfg.update(gemma4_config(ck, cfg))
    if a in HYBRID_ARCHS:
        cfg.update(hybrid_config(ck, cfg))
    return cfg


def grouped_moe_config(ck: "GGUFCheckpoint", cfg: Dict[str, Any]) -> Dict[str, Any]:
    """GLM-4.5's and DeepSeek's MoE fields as llama.cpp reads them: dense leading layers (their
    MLP feed_forward_length wide), shared experts, routing weights' scale and norm, groups."""
    a = ck.arch_name
    out = {
        "n_routed_experts": cfg["num_experts"],
        "first_k_dense_replace": int(ck.field(f"{a}.leading_dense_block_count", 0)),
        "intermediate_size": int(ck.field(f"{a}.feed_forward_length", cfg["moe_intermediate_size"])),
        "n_shared_experts": int(ck.field(f"{a}.expert_shared_count")),
        "routed_scaling_factor": float(ck.field(f"{a}.expert_weights_scale", 0.0)) or 1.0,
        "norm_topk_prob": bool(ck.field(f"{a}.expert_weights_norm", False)),
        "n_group": int(ck.field(f"{a}.expert_group_count", 0)) or 1,
        "topk_group": int(ck.field(f"{a}.expert_group_used_count", 0)) or 1,
    }
    if a == "glm4moe":
        head_dim = cfg["head_dim"]
        if head_dim < 1:
            raise FormatError(f"{ck.path}: {a}.attention.key_length is {head_dim}")
        out.update(attention_bias="blk.0.attn_q.bias" in ck.tensors, use_qk_norm="blk.0.attn_q_norm.weight" in ck.tensors,
                   # half a dim over: the mapping's int(head_dim * factor) then gives the count back
                   # whatever the division rounds to (30 / 44 * 44 is 29.99...)
                   partial_rotary_factor=(int(ck.field(f"{a}.rope.dimension_count", head_dim)) + 0.5) / head_dim)
    return out


def latent_attention_config(ck: "GGUFCheckpoint", cfg: Dict[str, Any]) -> Dict[str, Any]:
    """deepseek2's latent attention and routing: llama.cpp writes its latent as one key/value head
    of key_length = kv_lora_rank + rope dims; the heads' own widths are the *_mla keys. Its
    rotary pairs are adjacent (the checkpoint's interleaved order), and its YaRN reads one
    mscale, 0.1 x mscale_all_dim, for both cos/sin and the softmax (llama.cpp's deepseek2)."""
    a = ck.arch_name
    if f"{a}.attention.key_length_mla" not in ck.fields or not ck.kv_b:
        raise UnsupportedModelError(f"{ck.path}: a deepseek2 GGUF from before llama.cpp split kv_b into attn_k_b "
                                    f"and attn_v_b (no attention.key_length_mla); convert the model again")
    rope = int(ck.field(f"{a}.rope.dimension_count"))
    out = {
        "kv_lora_rank": int(ck.field(f"{a}.attention.kv_lora_rank")),
        "q_lora_rank": int(ck.field(f"{a}.attention.q_lora_rank", 0)) or None,
        "qk_rope_head_dim": rope,
        "qk_nope_head_dim": int(ck.field(f"{a}.attention.key_length_mla")) - rope,
        "v_head_dim": int(ck.field(f"{a}.attention.value_length_mla")),
        "num_key_value_heads": ck.n_heads,
        "rope_interleave": True,
        "latent_norm_eps": cfg["rms_norm_eps"],  # llama.cpp's q_a / kv_a norms use the model's eps
        "topk_method": "noaux_tc" if ck.field(f"{a}.expert_gating_func", 1) == SIGMOID_GATING else "greedy",
    }
    for name, (k_b, v_b) in ck.kv_b.items():  # the split must be the one the *_mla keys say
        ck.shape(name)
        if (ck._dims(k_b)[2], ck._dims(v_b)[1]) != (out["qk_nope_head_dim"], out["v_head_dim"]):
            raise FormatError(f"{ck.path}: {k_b} and {v_b} do not split keys and values as "
                              f"attention.key_length_mla / value_length_mla say")
    if "rope_parameters" in cfg and cfg["rope_parameters"]["rope_type"] == "yarn":
        params = {k: v for k, v in cfg["rope_parameters"].items() if k != "attention_factor"}
        mscale = float(ck.field(f"{a}.rope.scaling.yarn_log_multiplier", 0.0)) / 0.1
        if not mscale:  # llama.cpp then scales the softmax by YaRN's own mscale, transformers does not
            raise UnsupportedModelError(f"{ck.path}: deepseek2 YaRN without rope.scaling.yarn_log_multiplier")
        params.update(mscale=mscale, mscale_all_dim=mscale)
        out["rope_parameters"] = params
    return out


def rope_parameters(ck: "GGUFCheckpoint", theta: float, context: int) -> Optional[Dict[str, Any]]:
    """The transformers rope_parameters llama.cpp's rope.scaling.* keys mean, or None (unscaled)."""
    a = ck.arch_name
    kind = ck.field(f"{a}.rope.scaling.type", "none")
    if kind in ("none", ""):
        return None
    if kind not in ("linear", "yarn"):
        raise UnsupportedModelError(f"{ck.path}: rope scaling {kind!r} is not supported (supported: linear, yarn)")
    factor = float(ck.field(f"{a}.rope.scaling.factor"))
    params: Dict[str, Any] = {"rope_type": kind, "rope_theta": theta, "factor": factor}
    if kind == "yarn":
        # llama.cpp always rounds the ramp's ends to whole dimensions, and scales cos and sin by
        # its attn_factor times YaRN's 0.1 ln(factor) + 1
        params.update(original_max_position_embeddings=int(ck.field(f"{a}.rope.scaling.original_context_length",
                                                                     context)),
                      beta_fast=float(ck.field(f"{a}.rope.scaling.yarn_beta_fast", 32.0)),
                      beta_slow=float(ck.field(f"{a}.rope.scaling.yarn_beta_slow", 1.0)), truncate=True,
                      attention_factor=float(ck.field(f"{a}.rope.scaling.attn_factor", 1.0)) * yarn_mscale(factor))
    return params


def gpt_oss_config(ck: "GGUFCheckpoint", n_layers: int) -> Dict[str, Any]:
    """gpt-oss's fields as llama.cpp reads them: sliding layers every other one from the first
    (or as sliding_window_pattern says), biases everywhere, its swiglu constants."""
    a = ck.arch_name
    pattern = ck.fields.get(f"{a}.attention.sliding_window_pattern")
    sliding = list(ck.field(f"{a}.attention.sliding_window_pattern")) if pattern is not None else \
        [l % 2 == 0 for l in range(n_layers)]
    if len(sliding) != n_layers:
        raise FormatError(f"{ck.path}: sliding_window_pattern names {len(sliding)} layers, not {n_layers}")
    return {"sliding_window": int(ck.field(f"{a}.attention.sliding_window")),
            "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
            "attention_bias": True, "swiglu_alpha": 1.702, "swiglu_limit": 7.0}


# Vocabulary types rebuilt as a tokenizers BPE that splits text as llama.cpp does -> the rebuilder.
REBUILT_VOCABULARIES = {"llama": spm_tokenizer, "gemma4": gemma4_tokenizer}


def tokenizer_section(ck: GGUFCheckpoint) -> Dict[str, Any]:
    """tokenizer.json and chat metadata rebuilt from the GGUF vocabulary: byte-level BPE
    ("gpt2") or SentencePiece ("llama", see spm_tokenizer.py)."""
    model = ck.field("tokenizer.ggml.model", "")
    if model in REBUILT_VOCABULARIES:
        return _section(ck, *REBUILT_VOCABULARIES[model](ck))
    if model != "gpt2":
        raise UnsupportedModelError(f"{ck.path}: tokenizer type {model!r} is not supported (supported: byte-level "
                                    f"BPE 'gpt2', SentencePiece 'llama', Gemma 4's 'gemma4')")
    pre = ck.field("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedModelError(f"{ck.path}: pre-tokenizer {pre!r} is not supported (supported: "
                                    f"{', '.join(PRE_TOKENIZERS)})")
    tokens = ck.field("tokenizer.ggml.tokens")
    types = list(ck.field("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = ck.field("tokenizer.ggml.merges", [])
    CONTROL, USER_DEFINED, UNUSED = 3, 4, 5
    vocab, added = {}, []
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind == UNUSED:
            continue
        vocab.setdefault(text, i)
        if kind in (CONTROL, USER_DEFINED):
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": kind == USER_DEFINED, "special": kind == CONTROL})
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, **_pre_tokenizer(pre),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    return _section(ck, tok, {})


def _section(ck: GGUFCheckpoint, tok: Dict[str, Any], tokenizer_config: Dict[str, Any]) -> Dict[str, Any]:
    """The container's tokenizer section: the tokenizer.json (checked loadable), eos and template."""
    text = json.dumps(tok, ensure_ascii=False)
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(text)
    except Exception as e:
        raise FormatError(f"{ck.path}: its vocabulary does not make a valid tokenizer ({e})") from None
    section: Dict[str, Any] = {"tokenizer_json": text, "tokenizer_config": dict(tokenizer_config),
                               "generation_config": {}}
    eos = ck.fields.get("tokenizer.ggml.eos_token_id")
    if eos is not None:
        section["generation_config"]["eos_token_id"] = int(ck.field("tokenizer.ggml.eos_token_id"))
    if "tokenizer.chat_template" in ck.fields:
        section["tokenizer_config"]["chat_template"] = ck.field("tokenizer.chat_template")
    return section


def convert_gguf(src: str, out: str, bits: str = "8", resident_bits: Optional[str] = None, progress: bool = True,
                 compress: Optional[str] = None, low_bit_copy: Optional[str] = None,
                 mmproj: Optional[str] = None, expert_plan=None,
                 extra_manifest: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Convert the GGUF file `src` into the container `out`; returns its manifest config. mmproj:
    llama.cpp's vision tower file of the model (Qwen3-VL-MoE), converted with it; expert_plan and
    extra_manifest as convert_hf takes them."""
    ck = GGUFCheckpoint(src)
    hf = hf_config(ck)
    tokenizer = tokenizer_section(ck)
    types = {ck.tensors[g].tensor_type.name for g, _ in ck.map.values()}
    ckpt, extra = ck, dict(extra_manifest or {})
    if mmproj is not None:
        ckpt, tower = with_tower(ck, hf, mmproj)
        extra.update(tower)
    return convert_checkpoint(ckpt, hf, tokenizer, out, src, bits=bits, resident_bits=resident_bits,
                              progress=progress, compress=compress, low_bit_copy=low_bit_copy, extra_manifest=extra,
                              expert_plan=expert_plan,
                              source_format=f"gguf ({ck.arch_name}; {', '.join(sorted(types))})" +
                              (" + mmproj" if mmproj else ""))


def is_gguf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False
