"""The Python API: `edgemoe.load(path) -> Model`, a thin layer over the C++ engine."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .format import quant
from .budget import (DEFAULT_BUDGET_SHARE, MemoryPlan, available_memory, check_fits_in_memory, default_budget, default_ctx,
                     format_size, parse_size)
from .format.container import Container, open_container
from .format.model_config import moe_layers
from .draft import check_mode as check_draft_mode
from .errors import BudgetError, EdgeMoEError, FormatError, ImageError
from .generate import Generation, GenerationStats
from .options import LoadOptions, lossy_settings
from .format.profile_record import profile_arrays
from .sampling import Sampler, SamplingParams
from .tokenizer import Tokenizer
from .vision.image_input import load_image
from .vision.preprocess import ImageSettings, PreprocessedImage, preprocess
from .vision.prompt import EncodedImage, expand_placeholders, image_spans, pixels_digest


class ContextLengthError(EdgeMoEError, ValueError):
    """More tokens than the context size the model was loaded with."""


def _core():
    from . import _core

    return _core


class CancelToken:
    """Stops the calls it is passed to (logits, eval, generate) from another thread: cancel()
    ends the running forward pass at its next layer and the call raises edgemoe.Cancelled; the
    context then holds the prefill batches that completed (model.n_past; a hybrid model stopped part
    way through a batch goes back to its newest state checkpoint). A cancelled token
    stays cancelled: use a new one per request."""

    def __init__(self) -> None:
        self._flag = _core().CancelFlag()

    def cancel(self) -> None:
        self._flag.set()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()


def _flag(cancel: Optional[CancelToken]):
    if cancel is None:
        return None
    if not isinstance(cancel, CancelToken):
        raise TypeError("cancel must be an edgemoe.CancelToken")
    return cancel._flag


class RoutingRecord:
    """What Model.record_routing() recorded, one row per evaluated token, in evaluation order:
    positions [T]; experts and weights [T, n_layers, top_k] in rank order; predicted [P, 3]
    (row, layer, expert) prefetch guesses; hidden [T, n_layers, hidden] or empty."""

    def __init__(self, model: "Model") -> None:
        self._model: Optional[Model] = model
        self.positions = self.experts = self.weights = self.predicted = self.hidden = None

    def stop(self) -> None:
        """End the recording and take what it holds (once; later calls do nothing)."""
        if self._model is None:
            return
        model, self._model = self._model, None
        engine = model._engine
        try:
            (self.positions, self.experts, self.weights, self.predicted,
             self.hidden) = engine.take_trace(model.config["n_layers"], model.config["top_k"])
        finally:
            engine.set_tracing(False)


@dataclasses.dataclass
class EngineSetup:
    """What a model loaded with these options would be given: its engine's options and memory plan."""
    engine_options: Dict[str, Any]
    plan: MemoryPlan
    notices: List[str]       # what was chosen for the user that they should know (the CLI prints them)
    lossy: Dict[str, Any]  # the lossy options on, as the user would write them
    budget: Optional[int]    # the budget asked for, in bytes (None: none)
    available: int           # the machine's available memory when planned


def plan_engine(container: Container, options: LoadOptions) -> EngineSetup:
    """The engine options and memory plan `load` uses for this container: the default context
    shortened to fit a tight budget, the default budget from the machine's free memory. Also what
    `edgemoe doctor` predicts from before anything is converted (edgemoe/apps/doctor.py)."""
    core = _core()
    cfg = container.config
    engine_options = options.engine_options(cfg["max_position"])
    cache_experts = options.cache_experts
    if cache_experts is not None and (isinstance(cache_experts, bool) or not isinstance(cache_experts, int)):
        raise BudgetError(f"cache_experts must be an integer, got {cache_experts!r}")

    def at_ctx(ctx: int) -> Dict[str, Any]:
        return dict(engine_options, ctx_size=ctx, max_batch=min(engine_options["max_batch"], ctx))

    def plan(budget: Optional[int], opts: Optional[Dict[str, Any]] = None) -> MemoryPlan:
        return MemoryPlan(**core.plan_memory(container.native, opts or engine_options, budget, cache_experts))

    budget = parse_size(options.memory_budget) if options.memory_budget is not None else None
    avail = available_memory()  # read once: the default budget and the check must agree
    notices: List[str] = []
    if options.ctx_size is None:
        room = budget if budget is not None else int(avail * DEFAULT_BUDGET_SHARE)
        ctx = default_ctx(lambda c: plan(None, at_ctx(c)), engine_options["ctx_size"], room)
        if ctx < engine_options["ctx_size"]:
            notices.append(f"context reduced to {ctx} tokens (from {engine_options['ctx_size']}) to fit the memory "
                           f"budget of {format_size(room)}; pass ctx_size (--ctx-size) to choose")
            engine_options = at_ctx(ctx)
    lossy = lossy_settings(options, cfg["top_k"])
    if lossy:
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in lossy.items())
        notices.append(f"LOSSY: {settings} "
                       f"changes what the model computes (bench/RESULTS.md has the KL divergence)")
    chosen = plan(budget)
    if budget is None and cache_experts is None:  # no promise asked for: fit what is free
        chosen = plan(min(chosen.total_bytes, default_budget(chosen.min_budget, avail)))
    return EngineSetup(engine_options, chosen, notices, lossy, budget, avail)


class Model:
    """A loaded model. Not for use from several threads at once: calls are serialised by the engine."""

    def __init__(self, container: Container, options: Optional[LoadOptions] = None):
        core = _core()
        self.options = options = options or LoadOptions()
        self.container = container
        self.config: Dict[str, Any] = container.config
        cfg = self.config
        self.predictor, self.cache_policy = options.predictor, options.cache_policy
        self.draft = check_draft_mode(options.draft)
        if not 0.0 <= options.draft_min_p <= 1.0:
            raise ValueError("draft_min_p must be in [0, 1]")
        setup = plan_engine(container, options)
        engine_options, self.plan, self.notices, self.lossy = setup.engine_options, setup.plan, setup.notices, setup.lossy
        for notice in self.notices:
            warnings.warn("edgemoe: " + notice, stacklevel=3)
        self.threads, self.ctx_size = engine_options["threads"], engine_options["ctx_size"]
        self.max_batch, self.kv_cache = engine_options["max_batch"], options.kv_cache
        check_fits_in_memory(self.plan, explicit_budget=setup.budget is not None, avail=setup.available)
        profile = profile_arrays(container.manifest, cfg)
        if options.predictor in ("stats", "token") and profile is None:
            raise ValueError(f"predictor {options.predictor!r} needs routing statistics: run "
                             f"`edgemoe profile {container.path} --calib TEXTFILE` first")
        self._engine = core.Engine(container.native, dict(engine_options, expert_slots=self.plan.n_slots), profile)
        if profile is not None:  # the engine holds its own copy: keep only what info() shows of the record
            container.manifest["profile"] = {k: container.manifest["profile"].get(k) for k in ("source", "tokens")}
        del profile
        self._tokenizer: Optional[Tokenizer] = None
        self._image_settings: Optional[ImageSettings] = None
        self.last_generation: Optional[GenerationStats] = None
        self.eos_token_ids: List[int] = list(cfg.get("eos_token_ids", []))

    # ------------------------------------------------------------ tokens

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.container.manifest.get("tokenizer", {}), self.container.path)
        return self._tokenizer

    def tokenize(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    # ------------------------------------------------------------ evaluation

    def _ids(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("no token ids given")
        vocab = self.config["vocab"]
        if ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"token ids must be in [0, {vocab})")
        return ids.astype(np.int32)

    def check_room(self, n_new: int, from_empty: bool) -> None:
        """Raise ContextLengthError unless n_new more tokens fit the context (an empty one, or
        the current one)."""
        past = 0 if from_empty else self._engine.n_past
        if past + n_new > self.ctx_size:
            raise ContextLengthError(f"{past + n_new} tokens exceed the context size of {self.ctx_size}; "
                                     f"load the model with a larger ctx_size (at most {self.config['max_position']})")

    def logits(self, token_ids: Sequence[int], cancel: Optional[CancelToken] = None,
               images: Sequence[Any] = ()) -> np.ndarray:
        """Logits [len(token_ids), vocab] at every position, from an empty context. images: one per
        run of image tokens in token_ids, in order (paths, PIL images, arrays, or encode_image's)."""
        ids = self._ids(token_ids)
        self.check_room(len(ids), from_empty=True)
        return self._engine.logits(ids, self.config["vocab"], _flag(cancel), images=self._spans(ids, images, cancel))

    def reset(self) -> None:
        """Forget the context (the KV cache)."""
        self._engine.reset()

    def truncate(self, n: int) -> None:
        """Keep only the first n positions of the context (to reuse a shared prefix). A model with
        sliding-window layers keeps nothing when rewound by more than about one prefill batch
        (the window behind position n is overwritten by then): read n_past for what was kept."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._engine.truncate(int(n))

    @property
    def n_past(self) -> int:
        return self._engine.n_past

    def eval(self, token_ids: Sequence[int], cancel: Optional[CancelToken] = None,
             all_logits: bool = False, cached_only: bool = False, images: Sequence[Any] = ()) -> np.ndarray:
        """Append tokens to the context; returns the last position's logits [vocab], or with
        all_logits every new position's [len(token_ids), vocab] (what verifying drafts needs).
        cached_only computes only the chosen experts already cached and reads nothing: not the
        model's output, a cheap guess at it (the cache drafter's, edgemoe/draft.py). images: as
        logits takes them."""
        ids = self._ids(token_ids)
        self.check_room(len(ids), from_empty=False)
        return self._engine.eval(ids, self.config["vocab"], _flag(cancel), all_logits, cached_only,
                                 images=self._spans(ids, images, cancel))

    # ------------------------------------------------------------ images

    @property
    def takes_images(self) -> bool:
        return bool(self.config.get("vision_depth")) and bool(self.options.vision)

    @property
    def image_settings(self) -> ImageSettings:
        """How this model's images are prepared: its processor's settings, at most max_image_pixels."""
        self._require_images()
        if self._image_settings is None:
            stored = self.container.manifest.get("image_processor")
            if not isinstance(stored, dict):
                raise FormatError(f"{self.container.path}: a model with a vision tower lacks its image_processor settings")
            settings = ImageSettings.from_dict(stored)
            self._image_settings = settings.with_max_pixels(min(settings.max_pixels, self.options.max_image_pixels))
        return self._image_settings

    def _require_images(self) -> None:
        if not self.takes_images:
            name = os.path.basename(self.container.path)
            raise ImageError(f"{name} was loaded without its vision tower (vision=False, --no-vision)"
                             if self.config.get("vision_depth") else f"{name} takes no images: it has no vision tower")

    def prepare_image(self, image: Any) -> PreprocessedImage:
        """One image (a path, encoded bytes, a data: URL, a PIL image or an HxWx3 uint8 array) decoded
        and preprocessed as the model's processor does, within max_image_pixels (ImageError if it
        cannot be read)."""
        if isinstance(image, PreprocessedImage):
            return image
        self._require_images()
        pixels = preprocess(load_image(image), self.image_settings)
        _, grid_h, grid_w = pixels.grid
        P = self.config["vision_patch_size"]
        if grid_h * grid_w * P * P > self.options.max_image_pixels:  # (extreme aspect: its short side stays one window)
            raise ImageError(f"this image comes out at {grid_h * P}x{grid_w * P} pixels in the model's "
                             f"{self.image_settings.factor}-pixel windows, above max_image_pixels "
                             f"({self.options.max_image_pixels}); raise it (--max-image-pixels) or crop the image")
        return pixels

    def encode_image(self, image: Any, cancel: Optional[CancelToken] = None) -> EncodedImage:
        """One image (as prepare_image takes it, or prepared) through the vision tower: what stands
        in for its image tokens."""
        if isinstance(image, EncodedImage):
            return image
        pixels = self.prepare_image(image)
        _, grid_h, grid_w = pixels.grid
        features = self._engine.encode_image(pixels.pixel_values, grid_h, grid_w, _flag(cancel))
        m = self.config["vision_merge"]
        return EncodedImage(features, grid_h // m, grid_w // m, pixels_digest(pixels.pixel_values))

    def prompt_with_images(self, ids: Sequence[int], images: Sequence[Any],
                           cancel: Optional[CancelToken] = None) -> Tuple[List[int], List[EncodedImage]]:
        """ids with each image's placeholder expanded to its tokens (edgemoe.vision.prompt), and the
        images encoded."""
        if not images:
            return list(ids), []
        self._require_images()
        encoded = [self.encode_image(image, cancel) for image in images]
        return self.place_images(ids, encoded), encoded

    def place_images(self, ids: Sequence[int], images: Sequence[Any], place_missing: bool = True) -> List[int]:
        """ids with each image's placeholder made its image tokens (images: encoded or prepared, in
        order); without placeholders, the images go first, or with place_missing=False it is an
        ImageError (a chat template that does not place images)."""
        c = self.config
        return expand_placeholders(ids, images, c["image_token_id"], c["vision_start_token_id"],
                                   c["vision_end_token_id"], place_missing=place_missing)

    def _spans(self, ids: Sequence[int], images: Sequence[Any], cancel: Optional[CancelToken]) -> list:
        if not images:
            return []
        self._require_images()
        encoded = [self.encode_image(image, cancel) for image in images]
        return image_spans(ids, encoded, self.config["image_token_id"])

    # ------------------------------------------------------------ generation

    def generate(self, prompt_or_ids: Union[str, Sequence[int]], max_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0, repeat_penalty: float = 1.0,
                 seed: Optional[int] = None, stream: bool = False, stop_at_eos: bool = True,
                 stop: Sequence[str] = (), trace: Optional[str] = None, cancel: Optional[CancelToken] = None,
                 draft: Optional[str] = None, images: Sequence[Any] = ()):
        """Generate from a fresh context. Returns the text (or, for an id prompt, the new ids);
        with stream=True yields text pieces as they are decoded. `stop` lists strings that end
        the text (cut before them); `trace` names a file that receives every evaluated token's
        routing (docs/TRACE.md); `cancel` stops it from another thread. The loop itself, and
        what happens at a full context, is edgemoe.generate.Generation's. `draft` overrides the
        model's drafting (load's `draft`) for this call; the output is the same either way
        unless a lossy option is on. `images` (for a model with a vision tower): one per image
        placeholder of the prompt (<|image_pad|>, as its chat template writes it), or, where the
        prompt has none, placed before it; paths, PIL images, arrays or encode_image's."""
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty)
        text_prompt = isinstance(prompt_or_ids, str)
        ids = self.tokenize(prompt_or_ids) if text_prompt else list(self._ids(prompt_or_ids))
        ids, encoded = self.prompt_with_images(ids, images, cancel)
        generation = Generation(self, ids, max_tokens, Sampler(params, seed),
                                stop_ids=self.eos_token_ids if stop_at_eos else (), stop_strings=stop,
                                cancel=cancel, trace=trace, draft=self.draft if draft is None else draft,
                                images=encoded)
        self.last_generation = generation.stats  # filled in as it runs (the CLI's --stats reads it)
        if stream:
            return iter(generation)
        for _ in generation:
            pass
        return generation.text if text_prompt else list(generation.tokens)

    @contextlib.contextmanager
    def record_routing(self, with_hidden: bool = False) -> Iterator["RoutingRecord"]:
        """Record the routing of every token evaluated inside the `with` block (and, with
        with_hidden, the residual stream entering each MoE block): the record is filled when
        the block ends, or earlier by its stop()."""
        self._engine.take_trace(self.config["n_layers"], self.config["top_k"])  # drop anything stale
        self._engine.set_tracing(True, with_hidden)
        record = RoutingRecord(self)
        try:
            yield record
        finally:
            record.stop()

    def route(self, token_ids: Sequence[int], window: int, with_hidden: bool = False) -> RoutingRecord:
        """The routing of every token of `token_ids`, evaluated in windows of `window` tokens,
        each from an empty context (what offline tools measure on calibration text)."""
        ids = list(token_ids)
        with self.record_routing(with_hidden) as record:
            for start in range(0, len(ids), window):
                self.logits(ids[start:start + window])
        return record

    # ------------------------------------------------------------ introspection

    def stats(self) -> Dict[str, Any]:
        s = dict(self._engine.stats())
        lookups = s["cache_hits"] + s["cache_misses"]
        s["cache_hit_rate"] = s["cache_hits"] / lookups if lookups else 0.0
        try:
            import psutil

            s["rss_bytes"] = psutil.Process().memory_info().rss
        except Exception:
            pass
        return s

    def reset_stats(self) -> None:
        self._engine.reset_stats()

    def info(self) -> Dict[str, Any]:
        cfg, m, experts = self.config, self.container.manifest, self.container.experts
        per_expert = [sum(_elements(p["shape"]) for p in b["parts"].values()) for row in experts for b in row]
        kept = _core().KEPT_FOR_LATER_PREFIX  # a multi-token-prediction head: not the model's forward pass
        resident_params = sum(_elements(t["shape"]) for n, t in self.container.tensors.items() if not n.startswith(kept))
        return {
            "architecture": cfg["architecture"],
            "params_total": resident_params + sum(per_expert),
            # every resident weight (embeddings and dense layers included) plus top_k routed experts
            # per MoE layer
            "params_active": resident_params + len(moe_layers(cfg)) * cfg["top_k"] * max(per_expert),
            "n_layers": cfg["n_layers"],
            "n_experts": cfg["n_experts"],
            "top_k": cfg["top_k"],
            "hidden": cfg["hidden"],
            "vocab": cfg["vocab"],
            # kv_cache_bytes: a linear-attention layer's (recurrent) is its state and its checkpoints
            "layers": [{"kind": kind, "kv_cache_bytes": kv, "recurrent": l in cfg.get("linear_layers", ())}
                       for l, (kind, kv) in enumerate(zip(_core().layer_kinds(cfg), self.plan.kv_layer_bytes))],
            "resident_bytes": self.container.sections["resident"]["size"],
            # tensors the container keeps and no engine loads yet (a multi-token-prediction head)
            "kept_for_later_bytes": sum(t["nbytes"] for n, t in self.container.tensors.items() if n.startswith(kept)),
            # the vision tower's weights (resident when loaded with vision, the default), 0 without one
            "vision_tower_bytes": sum(t["nbytes"] for n, t in self.container.tensors.items() if n.startswith("vision.")),
            "expert_bytes": sum(b["size"] for row in experts for b in row),
            "expert_bits": [[quant.BITS[quant.CODES[b["type"]]] for b in row] for row in experts],
            "expert_types": [[b["type"] for b in row] for row in experts],  # q4 and q4k are both 4 bits
            # the experts' second, low-bit copies (convert --low-bit-copy), 0 without
            "low_bit_copy_bytes": sum(b["size"] for row in self.container.low_bit_experts or [] for b in row),
            "quantization": m.get("quantization", {}),
            "min_memory_budget": self.plan.min_budget,
            "memory_plan": {
                "resident_bytes": self.plan.resident_bytes,
                "kv_cache_bytes": self.plan.kv_cache_bytes,
                "scratch_bytes": self.plan.scratch_bytes,
                "vision_bytes": self.plan.vision_bytes,
                "staging_bytes": self.plan.staging_bytes,
                "slot_bytes": self.plan.slot_bytes,
                "expert_slots": self.plan.n_slots,
                "total_bytes": self.plan.total_bytes,
            },
            "profile": ({k: m["profile"].get(k) for k in ("source", "tokens")} if "profile" in m else None),
            "bit_allocation": ({k: v for k, v in m["bit_allocation"].items() if k != "sensitivity"}
                               if isinstance(m.get("bit_allocation"), dict) else None),
            # A pruned model (convert --prune-experts): how, not the per-expert tables.
            "expert_reduction": ({k: m["expert_reduction"].get(k) for k in
                                  ("method", "fraction", "original_n_experts", "calibration_tokens", "calibration_file",
                                   "low_rank")}
                                 if isinstance(m.get("expert_reduction"), dict) else None),
            "predictor": self.predictor,
            "cache_policy": self.cache_policy,
            "draft": self.draft,
            "lossy": self.lossy or None,
            "ctx_size": self.ctx_size,
            "kv_cache": self.kv_cache,
            "threads": self.threads,
            "direct_io": self._engine.direct_io,
            "file_bytes": self.container.file_size,
        }


def _elements(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


DEMO_MODEL = os.path.join(os.path.dirname(__file__), "models", "demo.emoe")


def default_model_path() -> str:
    """The small demo model that ships inside the package (what `edgemoe chat` runs by default)."""
    if not os.path.exists(DEMO_MODEL):
        raise EdgeMoEError(f"the embedded demo model is missing from this installation ({DEMO_MODEL}); "
                           f"pass a converted .emoe file instead")
    return DEMO_MODEL


def load(path: Union[str, os.PathLike], options: Optional[LoadOptions] = None, **kwargs) -> Model:
    """Open an .emoe container. Options (edgemoe.LoadOptions, or its fields as keywords; None
    means the default): `memory_budget` (bytes or "1.5GB") bounds resident weights + KV cache +
    scratch + expert cache; `cache_experts` sets the expert slot count directly. `predictor`
    chooses how experts of the next layers are prefetched during decoding (none [default], gate,
    stats, token, auto; stats and token need `edgemoe profile`) and `cache_policy` which cached
    expert is evicted (recent [default], edgemoe, lru, lfu). `prefetch_depth`/`prefetch_width` say how
    many layers ahead and how many experts per layer are guessed, `prefetch_min_confidence` drops
    guesses less likely than that. `draft` (none [default], ngram, cache, auto) drafts tokens to
    verify several per forward pass (edgemoe/draft.py). None of these changes results, only what
    is read and when. `kv_cache` "f16" (the default) keeps the attention cache in half precision
    (half its memory, faster long-context decode; logits move by ~1e-3); "f32" computes exactly
    like transformers' f32 forward pass. LOSSY, off by default, changing the output
    (bench/RESULTS.md has their KL divergence): `skip_missed_below` W leaves out a missed expert
    that every token gives less than the share W of its routing weight (no read; never a token's
    heaviest; the token's other experts make up its weight); `low_bit_missed_below` W reads such
    an expert (W 1: any missed expert) in its low-bit copy, which the container must carry (`edgemoe
    convert --low-bit-copy BITS`); `active_experts` K routes each token to its K heaviest choices
    only; `disable_experts` [(layer, expert), ...] (or "3:17,5:2") masks experts out of routing, the
    rest renormalised as the model normalises: the model as if they were pruned (`edgemoe experts`
    reports which experts a text engages)."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    options = dataclasses.replace(options, **given) if options is not None else LoadOptions(**given)
    container = open_container(path)
    if container.manifest.get("skeleton"):
        raise FormatError(f"{path} is a skeleton laid out by `edgemoe doctor`: it has no weights to run")
    return Model(container, options)
