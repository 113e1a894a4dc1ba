"""Convert a Hugging Face MoE model folder (safetensors) into an .emoe container.

Streams tensor by tensor: each tensor is read from a memory map, encoded and
written before the next is touched, so peak memory stays near the largest
single tensor (for stacked checkpoints: one expert's slice of it).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..format import quant
from ..format.container import ContainerWriter
from ..errors import FormatError, UnsupportedModelError
from ..format.model_config import moe_layers, validate_config
from .expert_plan import ExpertPlan
from .arch_base import DENSE, F32_ONLY, LOW_RANK, RESIDENT, SHARED, HFArch, Resident
from .arch_deepseek import DeepseekV2, DeepseekV3
from .arch_gemma4 import Gemma4
from .arch_glm4_moe import Glm4Moe
from .arch_gpt_oss import GptOss
from .arch_mixtral import Mixtral
from .arch_olmoe import Olmoe
from .arch_qwen2_moe import Qwen2Moe
from .arch_qwen3_moe import Qwen3Moe
from .arch_qwen3_next import Qwen35Moe, Qwen3Next
from .arch_qwen3_vl_moe import Qwen3VlMoe
from .safetensors_reader import Checkpoint
from ..vision.preprocess import ImageSettings

ARCHS: List[HFArch] = [Mixtral(), Qwen2Moe(), Qwen3Moe(), Olmoe(), GptOss(), Glm4Moe(), DeepseekV2(), DeepseekV3(),
                       Gemma4(), Qwen3Next(), Qwen35Moe(), Qwen3VlMoe()]


def _read_json(path: str, required: bool) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        if required:
            raise FormatError(f"{path} not found: a Hugging Face model folder needs it")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: expected a JSON object")
    return value


def pick_arch(hf: Dict[str, Any]) -> HFArch:
    classes = hf.get("architectures") or []
    for arch in ARCHS:
        if any(c in arch.hf_classes for c in classes) or hf.get("model_type") == arch.name:
            return arch
    named = ", ".join(classes) or hf.get("model_type") or "unknown"
    supported = ", ".join(c for a in ARCHS for c in a.hf_classes)
    raise UnsupportedModelError(f"architecture {named} is not supported (supported: {supported})")


def open_checkpoint(src: str, hf: Dict[str, Any]):
    """The folder's safetensors, named as its architecture's mapping expects."""
    return pick_arch(hf).checkpoint_view(Checkpoint(src))


def _tokenizer_section(src: str, hf: Dict[str, Any]) -> Dict[str, Any]:
    """Tokenizer and chat metadata, stored verbatim so the runtime needs only the container."""
    section: Dict[str, Any] = {}
    tok_path = os.path.join(src, "tokenizer.json")
    if os.path.exists(tok_path):
        with open(tok_path, encoding="utf-8") as f:
            section["tokenizer_json"] = f.read()
    tok_cfg = _read_json(os.path.join(src, "tokenizer_config.json"), required=False) or {}
    template_path = os.path.join(src, "chat_template.jinja")
    if "chat_template" not in tok_cfg and os.path.exists(template_path):
        with open(template_path, encoding="utf-8") as f:
            tok_cfg["chat_template"] = f.read()
    keep = ("chat_template", "bos_token", "eos_token", "pad_token", "add_bos_token", "add_eos_token")
    section["tokenizer_config"] = {k: tok_cfg[k] for k in keep if k in tok_cfg}
    section["generation_config"] = _read_json(os.path.join(src, "generation_config.json"), required=False) or {}
    return section


def _eos_ids(hf: Dict[str, Any], gen: Dict[str, Any], vocab: int) -> List[int]:
    ids = gen.get("eos_token_id", hf.get("eos_token_id"))
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    return [int(i) for i in ids if isinstance(i, int) and 0 <= i < vocab]


# ------------------------------------------------------------ tensor naming


def _layer(l: int) -> str:
    return f"model.layers.{l}"


def moe_prefix(ckpt: Checkpoint, arch: HFArch, cfg: Dict[str, Any]) -> str:
    """Which of the architecture's MoE block names this checkpoint uses (by its first MoE layer's router)."""
    first = moe_layers(cfg)[0]
    for prefix in arch.moe_prefixes:
        if f"{_layer(first)}.{prefix}.{arch.router_name}.weight" in ckpt:
            return prefix
    return arch.moe_prefixes[0]  # the missing-tensor check then names what was expected


def resident_plan(cfg: Dict[str, Any], arch: HFArch, moe: str, ckpt=None, hf=None) -> List[Resident]:
    """Every resident tensor of the container: its name, source tensor, expected shape and kind
    (hf, the source's config, where the architecture's tensors depend on it)."""
    H, V = cfg["hidden"], cfg["vocab"]
    q_dim = cfg["n_heads"] * cfg["head_dim"]
    kv_dim = cfg["n_kv_heads"] * cfg["head_dim"]
    dense = set(cfg["dense_layers"])
    plan = [("tok_embeddings", "model.embed_tokens.weight", (V, H), RESIDENT)]
    for l in range(cfg["n_layers"]):
        if arch.layer_plan is not None:
            plan += arch.layer_plan(cfg, l)
            continue
        p, c = _layer(l), f"layers.{l}"
        plan.append((f"{c}.attn_norm", f"{p}.input_layernorm.weight", (H,), F32_ONLY, arch.norm_take))
        if cfg["kv_lora_rank"] or arch.own_attention:  # the architecture's own tensors
            plan += arch.attention_residents(cfg, l, hf or {})
        else:
            plan += [
                (f"{c}.wq", f"{p}.self_attn.q_proj.weight", (q_dim, H), RESIDENT),
                (f"{c}.wk", f"{p}.self_attn.k_proj.weight", (kv_dim, H), RESIDENT),
                (f"{c}.wv", f"{p}.self_attn.v_proj.weight", (kv_dim, H), RESIDENT),
                (f"{c}.wo", f"{p}.self_attn.o_proj.weight", (H, q_dim), RESIDENT),
            ]
        plan.append((f"{c}.ffn_norm", f"{p}.post_attention_layernorm.weight", (H,), F32_ONLY, arch.norm_take))
        if cfg["qkv_bias"]:
            plan += [
                (f"{c}.bq", f"{p}.self_attn.q_proj.bias", (q_dim,), F32_ONLY),
                (f"{c}.bk", f"{p}.self_attn.k_proj.bias", (kv_dim,), F32_ONLY),
                (f"{c}.bv", f"{p}.self_attn.v_proj.bias", (kv_dim,), F32_ONLY),
            ]
        if cfg["qk_norm"] != "none" and not arch.own_attention:
            per_head = cfg["qk_norm"] == "head"
            plan += [
                (f"{c}.q_norm", f"{p}.self_attn.q_norm.weight", (cfg["head_dim"] if per_head else q_dim,), F32_ONLY,
                 arch.norm_take),
                (f"{c}.k_norm", f"{p}.self_attn.k_norm.weight", (cfg["head_dim"] if per_head else kv_dim,), F32_ONLY,
                 arch.norm_take),
            ]
        if l in dense:  # a resident MLP instead of the router and experts
            D = cfg["dense_intermediate"]
            plan += [
                (f"{c}.dense_gate", f"{p}.mlp.gate_proj.weight", (D, H), DENSE),
                (f"{c}.dense_up", f"{p}.mlp.up_proj.weight", (D, H), DENSE),
                (f"{c}.dense_down", f"{p}.mlp.down_proj.weight", (H, D), DENSE),
            ]
        else:
            # Routers stay f32: a flipped expert choice costs more accuracy than the bytes save.
            plan.append((f"{c}.router", f"{p}.{moe}.{arch.router_name}.weight", (cfg["n_experts"], H), F32_ONLY))
        if cfg["shared_intermediate"] and l not in dense:
            S, m = cfg["shared_intermediate"], f"{p}.{moe}"
            plan += [
                (f"{c}.shared_gate_proj", f"{m}.{arch.shared_expert_name}.gate_proj.weight", (S, H), SHARED),
                (f"{c}.shared_up_proj", f"{m}.{arch.shared_expert_name}.up_proj.weight", (S, H), SHARED),
                (f"{c}.shared_down_proj", f"{m}.{arch.shared_expert_name}.down_proj.weight", (H, S), SHARED),
            ]
            if cfg["shared_gate"]:
                plan.append((f"{c}.shared_expert_gate", f"{m}.shared_expert_gate.weight", (1, H), F32_ONLY))
        plan += arch.layer_residents(cfg, l, moe, ckpt)
    plan.append(("norm", "model.norm.weight", (H,), F32_ONLY, arch.norm_take))
    if not cfg["tie_embeddings"]:
        plan.append(("output", "lm_head.weight", (V, H), RESIDENT))
    plan += arch.tower_residents(cfg, hf or {})
    plan += arch.kept_for_later(cfg, ckpt) if ckpt is not None else []
    return [entry if isinstance(entry, Resident) else Resident(*entry) for entry in plan]


ARCH_OWN, STACKED, PER_EXPERT = "arch", "stacked", "per_expert"


class ExpertReader:
    """Reads one routed expert's (gate, up, down) from either checkpoint layout.

    Hub checkpoints keep a tensor per expert and projection; newer exports
    (transformers 5) stack them: experts.gate_up_proj [E, 2I, H] (gate rows
    first) and experts.down_proj [E, H, I].
    """

    def __init__(self, ckpt: Checkpoint, cfg: Dict[str, Any], arch: HFArch, moe: str):
        self.ckpt, self.cfg, self.arch, self.moe = ckpt, cfg, arch, moe
        E, H, I = cfg["n_experts"], cfg["hidden"], cfg["expert_intermediate"]
        self.shapes = {"gate": (I, H), "up": (I, H), "down": (H, I)}
        self.layout = {}  # per MoE layer: ARCH_OWN, STACKED or PER_EXPERT
        for l in moe_layers(cfg):
            base = f"{_layer(l)}.{moe}.experts"
            own = arch.expert_sources(ckpt, cfg, l, moe) if arch.expert_sources is not None else None
            if own is not None:  # the architecture's own layout, checked here
                for name, shape, dtype in own:
                    self._check(name, shape)
                    if dtype is not None and ckpt.dtype(name) != dtype:
                        raise FormatError(f"tensor {name} is {ckpt.dtype(name)}, expected {dtype}")
                self.layout[l] = ARCH_OWN
            elif f"{base}.gate_up_proj" in ckpt:
                self._check(f"{base}.gate_up_proj", (E, 2 * I, H))
                self._check(f"{base}.down_proj", (E, H, I))
                self.layout[l] = STACKED
            else:
                for e in range(E):
                    for part, hf_name in arch.expert_names.items():
                        self._check(f"{base}.{e}.{hf_name}.weight", self.shapes[part])
                self.layout[l] = PER_EXPERT

    def _check(self, name: str, shape: Tuple[int, ...]) -> None:
        if name not in self.ckpt:
            raise FormatError(f"checkpoint lacks tensor {name} required by {self.arch.name}")
        if tuple(self.ckpt.shape(name)) != tuple(shape):
            raise FormatError(f"tensor {name} has shape {tuple(self.ckpt.shape(name))}, expected {tuple(shape)}")

    def names(self, l: int, e: int) -> Optional[Dict[str, str]]:
        """Checkpoint names of the expert's parts (per-expert layout), or None (stacked)."""
        if self.layout[l] != PER_EXPERT:
            return None
        base = f"{_layer(l)}.{self.moe}.experts"
        return {part: f"{base}.{e}.{name}.weight" for part, name in self.arch.expert_names.items()}

    def native(self, l: int, e: int, qtype: int) -> Optional[Dict[str, np.ndarray]]:
        """The expert's parts exactly as stored, when the checkpoint holds them in `qtype`."""
        if self.layout[l] != ARCH_OWN or self.arch.native_expert is None:
            return None
        return self.arch.native_expert(self.ckpt, l, e, self.moe, qtype)

    def read(self, l: int, e: int) -> Dict[str, np.ndarray]:
        if self.layout[l] == ARCH_OWN:
            parts = self.arch.read_expert(self.ckpt, l, e, self.moe)
            for part, w in parts.items():
                if tuple(w.shape) != self.shapes[part]:
                    raise FormatError(f"layer {l} expert {e}: {part} has shape {tuple(w.shape)}, "
                                      f"expected {self.shapes[part]}")
            return parts
        base = f"{_layer(l)}.{self.moe}.experts"
        if self.layout[l] == STACKED:
            I = self.cfg["expert_intermediate"]
            gate_up = self.ckpt.get(f"{base}.gate_up_proj", e)
            return {"gate": gate_up[:I], "up": gate_up[I:], "down": self.ckpt.get(f"{base}.down_proj", e)}
        return {part: self.ckpt.get(f"{base}.{e}.{name}.weight") for part, name in self.arch.expert_names.items()}


# ------------------------------------------------------------ encoding


def _encode(w, qtype: int, blocks: bool = False) -> Tuple[Any, int]:
    """Encode a tensor (an array, or a checkpoint's RowReader); rows that cannot take the type
    fall back (quant.storable_type). blocks: the encoding as quant.quantize_blocks yields it."""
    w2 = w.reshape(1, -1) if w.ndim == 1 else w
    qtype = quant.storable_type(qtype, (w2.shape[1],))
    return (quant.quantize_blocks(w2, qtype) if blocks else quant.quantize(w2, qtype)), qtype


def parse_bits(bits: str) -> int:
    table = {"f32": quant.F32, "32": quant.F32, "f16": quant.F16, "16": quant.F16, "8": quant.Q8, "q8": quant.Q8,
             "4": quant.Q4, "q4": quant.Q4, "3": quant.Q3, "q3": quant.Q3, "2": quant.Q2, "q2": quant.Q2,
             "4k": quant.Q4K, "q4k": quant.Q4K, "mxfp4": quant.MXFP4}
    key = str(bits).lower()
    if key not in table:
        raise FormatError(f"unsupported bit width {bits!r}: choose one of f32, f16, 8, 4k, 4, 3, 2, mxfp4")
    return table[key]


LOW_BIT_COPY_WIDTHS = ("2", "3", "4")  # --low-bit-copy: each fewer bytes than any default expert width


def parse_low_bit_copy(bits: str) -> int:
    if str(bits) not in LOW_BIT_COPY_WIDTHS:
        raise FormatError(f"unsupported low-bit copy width {bits!r}: choose one of {', '.join(LOW_BIT_COPY_WIDTHS)}")
    return parse_bits(bits)


def write_low_bit_copy(writer: ContainerWriter, layer: int, expert: int, weights: Dict[str, np.ndarray], qtype: int,
                       compress: Optional[str]) -> None:
    """An expert's second, low-bit copy from its float weights {gate, up, down} (one type per blob,
    falling back whole as the expert itself does)."""
    qtype = quant.storable_type(qtype, [w.shape[1] for w in weights.values()])
    writer.add_expert(layer, expert, qtype, {p: (_encode(w, qtype)[0], w.shape) for p, w in weights.items()},
                      compress=compress, low_bit_copy=True)


def resident_kind_types(cfg: Dict[str, Any], resident_type: int) -> Dict[str, int]:
    """The type each kind of resident tensor (arch_base.Resident) is stored in; a tensor whose rows
    cannot take it falls back as _encode says."""
    def one_type(width: int) -> int:  # for an MLP's three projections (gate/up rows of hidden, down of width)
        return quant.storable_type(resident_type, (cfg["hidden"], width)) if width else resident_type

    return {F32_ONLY: quant.F32, RESIDENT: resident_type, SHARED: one_type(cfg["shared_intermediate"]),
            DENSE: one_type(cfg["dense_intermediate"]), LOW_RANK: quant.F32 if resident_type == quant.F32 else quant.F16}


def expert_blob_type(wanted: int, cfg: Dict[str, Any]) -> int:
    """A routed expert's type: one per blob, so if any projection's rows (hidden for gate and up,
    the expert width for down) cannot take `wanted`, the expert falls back whole."""
    return quant.storable_type(wanted, [cfg["hidden"], cfg["hidden"], cfg["expert_intermediate"]])


def default_resident_type(expert_type: int) -> int:
    """Resident weights default to 8-bit, or to the experts' type where that is wider."""
    return expert_type if expert_type in (quant.F32, quant.F16) else quant.Q8


def convert_hf(src: str, out: str, bits: str = "8", resident_bits: Optional[str] = None, progress: bool = True,
               expert_types: Optional[List[List[int]]] = None,
               extra_manifest: Optional[Dict[str, Any]] = None, compress: Optional[str] = None,
               low_bit_copy: Optional[str] = None, expert_plan: Optional[ExpertPlan] = None) -> Dict[str, Any]:
    """Convert the model folder `src` into the container `out`; returns its manifest config.
    expert_types[l][e], if given, sets each routed expert's type (`bits` then only picks the
    default resident type); extra_manifest adds top-level manifest entries; compress="zstd" stores
    expert blobs zstd-compressed where that makes them smaller; low_bit_copy (e.g. "2") adds a
    second copy of every routed expert in that width, for the lossy `low_bit_missed_below`;
    expert_plan keeps only some of the routed experts (expert_plan.py)."""
    if not os.path.isdir(src):
        raise FormatError(f"{src}: not a directory (expected a Hugging Face model folder)")
    hf = _read_json(os.path.join(src, "config.json"), required=True)
    tokenizer = _tokenizer_section(src, hf)
    if pick_arch(hf).takes_images(hf):  # how images are prepared for the tower: the model's own processor settings
        processor = _read_json(os.path.join(src, "preprocessor_config.json"), required=True)
        extra_manifest = dict(extra_manifest or {},
                              image_processor=ImageSettings.from_preprocessor_config(processor).to_dict())
    return convert_checkpoint(open_checkpoint(src, hf), hf, tokenizer, out, src, bits=bits, resident_bits=resident_bits,
                              progress=progress, expert_types=expert_types, extra_manifest=extra_manifest,
                              compress=compress, low_bit_copy=low_bit_copy, source_format="huggingface",
                              expert_plan=expert_plan)


def convert_checkpoint(ckpt, hf: Dict[str, Any], tokenizer: Dict[str, Any], out: str, where: str,
                       bits: str = "8", resident_bits: Optional[str] = None, progress: bool = True,
                       expert_types: Optional[List[List[int]]] = None,
                       extra_manifest: Optional[Dict[str, Any]] = None, compress: Optional[str] = None,
                       low_bit_copy: Optional[str] = None, source_format: str = "huggingface",
                       expert_plan: Optional[ExpertPlan] = None) -> Dict[str, Any]:
    """Write the container `out` from a checkpoint (Hugging Face names, as Checkpoint serves them),
    its transformers-style config `hf` and tokenizer section. A checkpoint may offer
    native(name, qtype) -> bytes for tensors it holds exactly in one of our encodings (a GGUF
    Q8_0 block is our q8 block): those are copied, not re-quantized. expert_plan: the routed
    experts kept (expert_types then describes the kept ones, in their new slots)."""
    if compress not in (None, "none", "zstd"):
        raise FormatError(f"unknown compression {compress!r} (available: none, zstd)")
    compress = None if compress == "none" else compress
    arch = pick_arch(hf)
    cfg = arch.config(hf)
    cfg["eos_token_ids"] = _eos_ids(hf, tokenizer["generation_config"], cfg["vocab"])
    cfg = validate_config(cfg, where)
    expert_type = parse_bits(bits)
    resident_type = parse_bits(resident_bits) if resident_bits is not None else default_resident_type(expert_type)
    low_bit_type = None if low_bit_copy is None else parse_low_bit_copy(low_bit_copy)

    if cfg.get("vision_depth"):
        if "image_processor" not in (extra_manifest or {}):
            raise FormatError(f"{where}: a model with a vision tower needs its image processor's settings "
                              "(preprocessor_config.json)")
        settings = ImageSettings.from_dict(extra_manifest["image_processor"])
        tower = (cfg["vision_patch_size"], cfg["vision_merge"], cfg["vision_temporal_patch"])
        if (settings.patch_size, settings.merge_size, settings.temporal_patch_size) != tower:
            raise FormatError(f"{where}: the image processor cuts {settings.patch_size}-pixel patches merged "
                              f"{settings.merge_size}x{settings.merge_size} over {settings.temporal_patch_size} "
                              f"frames, the vision tower takes {tower[0]}, {tower[1]}x{tower[1]}, {tower[2]}")
    moe = moe_prefix(ckpt, arch, cfg)
    plan = resident_plan(cfg, arch, moe, ckpt, hf)
    for r in plan:  # fail before writing anything
        if r.source not in ckpt:
            raise FormatError(f"checkpoint lacks tensor {r.source} required by {arch.name}")
        if tuple(ckpt.shape(r.source)) != r.shape:
            raise FormatError(f"tensor {r.source} has shape {tuple(ckpt.shape(r.source))}, expected {r.shape}")
    experts = ExpertReader(ckpt, cfg, arch, moe)
    routed = moe_layers(cfg)
    out_cfg = cfg  # the container's: the checkpoint's, or its kept experts'
    if expert_plan is not None:
        expert_plan.check(cfg)
        out_cfg = validate_config(expert_plan.config(cfg), where)
        plan = expert_plan.residents(plan)
    source = (lambda l, e: e) if expert_plan is None else (lambda l, e: expert_plan.kept[l][e])
    n_slots = out_cfg["n_experts"]
    if expert_types is not None and (len(expert_types) != cfg["n_layers"] or any(
            len(row) != (n_slots if l in routed else 0) for l, row in enumerate(expert_types))):
        raise FormatError(f"expert_types must be {cfg['n_layers']} rows of {n_slots} types "
                          f"(empty for the dense layers {cfg['dense_layers']})")
    native = getattr(ckpt, "native", None)

    def encode(name: str, w: Optional[np.ndarray], qtype: int, blocks: bool = False) -> Tuple[Any, int]:
        exact = native(name, qtype) if native else None
        if exact is not None:
            return exact, qtype
        if w is None:  # the tensor as stored: read a block of rows at a time where the checkpoint can
            w = ckpt.lazy(name) if hasattr(ckpt, "lazy") else ckpt.get(name)
        return _encode(w, qtype, blocks)

    n_steps = len(plan) + len(routed) * n_slots
    bar = _progress(n_steps, os.path.basename(out), progress)
    with ContainerWriter(out) as writer:
        kind_type = resident_kind_types(cfg, resident_type)
        for r in plan:
            if r.take is None and r.index is None:
                data, qtype = encode(r.source, None, kind_type[r.kind], blocks=True)
                shape = r.shape
            else:
                w = np.ascontiguousarray(r.read(ckpt))
                data, qtype = _encode(w, kind_type[r.kind])
                shape = w.shape
            writer.add_resident(r.name, qtype, data, shape)
            bar.update(1)
        for l in routed:
            for slot in range(n_slots):
                e = source(l, slot)  # the checkpoint's expert in this slot (a merged group's dominant)
                wanted = expert_type if expert_types is None else expert_types[l][slot]
                weights = expert_plan.merged_weights(l, slot) if expert_plan else None
                exact = experts.native(l, e, wanted) if weights is None else None
                if exact is not None:  # the source's own blocks, copied
                    writer.add_expert(l, slot, wanted, {p: (b, experts.shapes[p]) for p, b in exact.items()},
                                      compress=compress)
                else:
                    names = experts.names(l, e) if weights is None else None
                    weights = experts.read(l, e) if weights is None else weights
                    qtype = expert_blob_type(wanted, cfg)
                    parts = {p: (encode(names[p], w, qtype)[0] if names else _encode(w, qtype)[0], w.shape)
                             for p, w in weights.items()}
                    writer.add_expert(l, slot, qtype, parts, compress=compress)
                if low_bit_type is not None:
                    write_low_bit_copy(writer, l, slot, experts.read(l, e) if weights is None else weights,
                                       low_bit_type, compress)
                bar.update(1)
        writer.finish(out_cfg, {
            **(extra_manifest or {}),
            "tokenizer": tokenizer,
            "quantization": {"experts": quant.NAMES[expert_type] if expert_types is None else "mixed",
                             "resident": quant.NAMES[resident_type], "compression": compress or "none",
                             **({} if low_bit_type is None else {"low_bit_copy": quant.NAMES[low_bit_type]})},
            "source": {"format": source_format, "architecture": (hf.get("architectures") or [arch.name])[0]},
            **({} if expert_plan is None else {"expert_reduction": expert_plan.report}),
        })
    bar.close()
    return out_cfg


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=f"converting {desc}", unit="tensor")
