"""What every Hugging Face MoE architecture mapping provides, and the config fields they share.

A mapping says how a transformers config becomes the canonical config of
edgemoe/format/model_config.py (checked by csrc/model/config.cpp) and where the routed experts live in the checkpoint.
Everything else (resident tensor names) follows the Llama naming that all
supported architectures share.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import UnsupportedModelError
from .rope import rope_config


F32_ONLY, RESIDENT, SHARED, DENSE, LOW_RANK = "f32", "resident", "shared", "dense", "low_rank"


class Resident(NamedTuple):
    """One resident tensor of the container and where it comes from.

    kind: F32_ONLY (norms, biases, routers), RESIDENT (the resident type), SHARED / DENSE (the
    resident type, but the shared expert's, or a dense layer's, three projections must share one
    type, as routed experts do), or LOW_RANK (merged experts' correction factors: f32 or f16, which
    the engine multiplies at any width). shape is the checkpoint tensor's; index, if set, reads only that
    entry of its first axis (one expert of a stacked tensor); take, if set, derives the stored tensor
    from what was read (a slice of a fused tensor). A tensor no checkpoint holds (a merged expert's
    correction factors) has source None and is take(None) alone."""
    name: str
    source: Optional[str]
    shape: Tuple[int, ...]
    kind: str
    take: Optional[Callable[[Any], Any]] = None
    index: Optional[int] = None

    def read(self, ckpt) -> Any:
        """The tensor as the container stores it, before encoding: the source (entry), through take."""
        if self.source is None:
            return self.take(None)
        w = ckpt.get(self.source) if self.index is None else ckpt.get(self.source, self.index)
        return w if self.take is None else self.take(w)


TEXT_PREFIX = "model.language_model."  # multimodal checkpoints keep their text model here


class TextModelView:
    """A multimodal checkpoint (Gemma4ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration)
    seen under the text model's own names (model.language_model.X as model.X); every other tensor
    under model. (the vision tower) stays hidden."""

    def __init__(self, ckpt):
        self.ckpt = ckpt

    def _name(self, name: str) -> str:
        if name.startswith("model.visual."):  # the vision tower, where the model has one converted
            return name
        return TEXT_PREFIX + name[len("model."):] if name.startswith("model.") else name

    def __contains__(self, name: str) -> bool:
        return self._name(name) in self.ckpt

    def names(self) -> List[str]:
        names = self.ckpt.names()
        return (["model." + n[len(TEXT_PREFIX):] for n in names if n.startswith(TEXT_PREFIX)] +
                [n for n in names if not n.startswith("model.")])  # lm_head, mtp.*: under their own names

    def get(self, name: str, index: Optional[int] = None) -> np.ndarray:
        return self.ckpt.get(self._name(name), index)

    def get_raw(self, name: str, index: Optional[int] = None) -> np.ndarray:
        return self.ckpt.get_raw(self._name(name), index)

    def lazy(self, name: str):
        return self.ckpt.lazy(self._name(name))

    def dtype(self, name: str) -> str:
        return self.ckpt.dtype(self._name(name))

    def shape(self, name: str) -> Tuple[int, ...]:
        return self.ckpt.shape(self._name(name))


def text_config(hf: Dict[str, Any]) -> Dict[str, Any]:
    """The language model's config: the whole config of a text model, text_config of a multimodal one."""
    text = hf.get("text_config")
    return text if isinstance(text, dict) else hf


def one_plus(w: np.ndarray) -> np.ndarray:
    """A zero-centred RMSNorm weight (the norm multiplies by 1 + w, in float32) as a plain one."""
    return w.astype(np.float32) + np.float32(1.0)


class HFArch:
    name = ""                       # canonical architecture name
    hf_classes: Tuple[str, ...] = ()
    # model.layers.{l}.<prefix>.{gate, experts...}: hub checkpoints first, then
    # transformers 5's native names where they differ.
    moe_prefixes: Tuple[str, ...] = ("mlp",)
    # canonical part -> per-expert tensor name in hub checkpoints
    expert_names = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    router_name = "gate"            # model.layers.{l}.<moe prefix>.<router_name>.weight
    shared_expert_name = "shared_expert"  # <moe prefix>.<shared_expert_name>.{gate,up,down}_proj

    # The norm whose output the routed experts read (the tensor model.layers.{l}.<name>.weight;
    # --bits auto recomputes expert inputs with it).
    expert_input_norm = "post_attention_layernorm"
    # Set where every attention layer's tensors are the architecture's own (attention_residents
    # gives them all, its q/k norms included), not the common q/k/v/o projections.
    own_attention = False
    # Applied to every RMSNorm weight of the common plan (attn_norm, ffn_norm, q/k norms, norm):
    # one_plus for architectures whose norms multiply by 1 + w.
    norm_take: Optional[Callable[[Any], Any]] = None
    # An architecture whose layers do not follow the Llama naming sets layer_plan to a function
    # (cfg, layer) -> [Resident] giving all of a layer's resident tensors (hf.resident_plan).
    layer_plan = None

    def config(self, hf: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def checkpoint_view(self, ckpt):
        """The checkpoint as the tensor names here expect it (a multimodal checkpoint's text model
        keeps its tensors under a prefix of its own)."""
        return ckpt

    def attention_residents(self, cfg: Dict[str, Any], l: int, hf: Dict[str, Any]) -> List[Resident]:
        """Layer l's attention tensors where they are not the common q/k/v/o projections
        (latent attention, cfg["kv_lora_rank"] > 0; own_attention); hf is the source's config."""
        raise NotImplementedError

    def takes_images(self, hf: Dict[str, Any]) -> bool:
        """Whether this checkpoint's model takes images (its vision tower is converted)."""
        return False

    def tower_residents(self, cfg: Dict[str, Any], hf: Dict[str, Any]) -> List[Resident]:
        """Resident tensors beside the language model's: a vision tower, where the config has one (hf:
        the source's config)."""
        return []

    def kept_for_later(self, cfg: Dict[str, Any], ckpt) -> List[Resident]:
        """Tensors the container keeps without an engine loading them (names under
        _core.KEPT_FOR_LATER_PREFIX, written last): a multi-token-prediction head, where the
        checkpoint has one."""
        return []

    def layer_residents(self, cfg: Dict[str, Any], l: int, moe: str, ckpt=None) -> List[Resident]:
        """Resident tensors of layer l beyond those every architecture has (hf.resident_plan),
        for every layer, a dense one (cfg["dense_layers"]) too; ckpt, when given, tells which of
        the source's namings it uses."""
        return []

    # An architecture whose experts are laid out otherwise than the two layouts hf.ExpertReader
    # knows sets read_expert to a function (ckpt, layer, expert, moe) -> {"gate", "up", "down"}
    # float arrays, and expert_sources to one (ckpt, cfg, layer, moe) -> [(tensor, shape, dtype
    # or None)] naming what it reads, checked before anything is written, or None where the
    # checkpoint uses one of the common layouts after all (a GGUF). native_expert, if set,
    # (ckpt, layer, expert, moe, qtype) -> the parts' stored blocks when the checkpoint holds
    # them in qtype, else None.
    read_expert = None
    expert_sources = None
    native_expert = None


def unsupported(arch: str, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{arch}: {what} is not supported by edgemoe yet")


def require(hf: Dict[str, Any], key: str, arch: str) -> Any:
    if key not in hf or hf[key] is None:
        raise UnsupportedModelError(f"{arch}: config.json lacks {key!r}")
    return hf[key]


def expert_count(hf: Dict[str, Any], arch: str) -> int:
    """Hub configs say num_experts or num_local_experts depending on the family and transformers version."""
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if hf.get(key):
            return hf[key]
    raise UnsupportedModelError(f"{arch}: config.json gives no expert count (num_experts / num_local_experts)")


def common_config(hf: Dict[str, Any], arch: str, sliding_window_supported: bool = False) -> Dict[str, Any]:
    """The fields every supported architecture reads the same way."""
    hidden = require(hf, "hidden_size", arch)
    n_heads = require(hf, "num_attention_heads", arch)
    head_dim = hf.get("head_dim") or hidden // n_heads
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise unsupported(arch, "partial rotary embeddings")
    if hf.get("hidden_act", "silu") != "silu":
        raise unsupported(arch, f"activation {hf.get('hidden_act')!r}")
    rope = rope_config(hf, arch, int(hf.get("max_position_embeddings", 4096)))
    max_position = rope.pop("max_position")
    window = hf.get("sliding_window")
    if not sliding_window_supported and hf.get("use_sliding_window", window is not None) and window:
        # Within the window, sliding-window attention equals full attention:
        # cap the context there instead of attending past it wrongly.
        max_position = min(max_position, int(window))
    return {
        "architecture": arch,
        "n_layers": require(hf, "num_hidden_layers", arch),
        "hidden": hidden,
        "n_heads": n_heads,
        "n_kv_heads": hf.get("num_key_value_heads") or n_heads,
        "head_dim": head_dim,
        "vocab": require(hf, "vocab_size", arch),
        "top_k": require(hf, "num_experts_per_tok", arch),
        "n_experts": expert_count(hf, arch),
        **rope,
        "rms_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "max_position": max_position,
        "shared_intermediate": 0,
        "shared_gate": False,
        "qkv_bias": False,
        "qk_norm": "none",
    }


def dense_config(hf: Dict[str, Any], arch: str, dense: List[int]) -> Dict[str, Any]:
    """The config fields of the dense layers `dense` (their MLP is intermediate_size wide)."""
    if not dense:
        return {}
    return {"dense_layers": dense, "dense_intermediate": require(hf, "intermediate_size", arch)}


def positive_field(hf: Dict[str, Any], key: str, arch: str, default: Optional[int] = None) -> int:
    """hf[key] (default where given, else required), which must be a positive integer (not a bool)."""
    value = hf.get(key, default) if default is not None else require(hf, key, arch)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UnsupportedModelError(f"{arch}: {key} = {value!r} is not a positive integer")
    return value


def layer_types(hf: Dict[str, Any], arch: str, kinds, every: int, other: str) -> List[str]:
    """Each layer's kind from hf's layer_types, each one of `kinds`; where it has none, layer i is
    `other` when i + 1 is a multiple of `every` and kinds[0] otherwise (the families' defaults)."""
    n = require(hf, "num_hidden_layers", arch)
    types = hf.get("layer_types")
    if types is None:
        types = [other if (i + 1) % every == 0 else kinds[0] for i in range(n)]
    if not isinstance(types, list) or len(types) != n or any(k not in kinds for k in types):
        raise UnsupportedModelError(f"{arch}: layer_types must name {n} layers, each one of {', '.join(kinds)}")
    return types


def leading_dense_layers(hf: Dict[str, Any], arch: str, key: str, default: int) -> List[int]:
    """The first hf[key] layers (DeepSeek's and GLM's first_k_dense_replace)."""
    k = hf.get(key, default)
    n = require(hf, "num_hidden_layers", arch)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < n:
        raise UnsupportedModelError(f"{arch}: {key} = {k!r} is not a count of leading layers below "
                                    f"num_hidden_layers ({n})")
    return list(range(k))


def qwen_dense_layers(hf: Dict[str, Any], arch: str) -> Dict[str, Any]:
    """Qwen-style configs make a layer dense when mlp_only_layers names it or its number (from
    1) is not a multiple of decoder_sparse_step (transformers' Qwen2/3-MoE decoder layers)."""
    step = hf.get("decoder_sparse_step") or 1
    only = hf.get("mlp_only_layers") or []
    if not isinstance(step, int) or step < 1 or not isinstance(only, list) or \
            not all(isinstance(l, int) for l in only):
        raise UnsupportedModelError(f"{arch}: decoder_sparse_step / mlp_only_layers are not layer numbers")
    n = require(hf, "num_hidden_layers", arch)
    return dense_config(hf, arch, [l for l in range(n) if l in only or (l + 1) % step])
