"""A multi-turn conversation with a model that keeps its KV cache across turns.

Each turn renders the whole conversation with the model's chat template (or,
without one, continues the plain transcript), tokenizes it, and evaluates
only the tokens after the longest prefix already in the KV cache. When the
conversation outgrows the context, the oldest turns are dropped (the system
prompt is kept) and the shortened conversation is evaluated again: a sliding
window over whole turns.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence

from .api import ContextLengthError, Model
from .errors import ImageError
from .chat_template import load_chat_template, token_text
from .generate import Generation, GenerationStats
from .sampling import Sampler, SamplingParams


def chat_stop_ids(model: Model) -> set:
    """Token ids that end an assistant reply: the model's eos ids and the template's eos token."""
    ids = set(model.eos_token_ids)
    eos_id = model.tokenizer.token_to_id(token_text(model.tokenizer.config.get("eos_token")))
    if eos_id is not None:
        ids.add(eos_id)
    return ids


class ChatSession:
    def __init__(self, model: Model, params: Optional[SamplingParams] = None, seed: Optional[int] = None,
                 system: Optional[str] = None, max_tokens: int = 512):
        self.model = model
        self.sampler = Sampler(params or SamplingParams(), seed)
        self.max_tokens = max_tokens
        self.system = system
        self.template = load_chat_template(model.tokenizer.config)
        self.stop_ids = chat_stop_ids(model)
        # a user turn with images holds them (edgemoe.vision.EncodedImage) under "images", its
        # content then a list of parts: an image part per image, then the text
        self.messages: List[Dict[str, Any]] = []
        self.cached: List[Any] = []  # what the model's context holds: Generation.history_keys
        self.last = GenerationStats()
        self.dropped_turns = 0
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.cached = []
        self.model.reset()

    # ------------------------------------------------------------ prompt

    def _render(self, messages: List[Dict[str, Any]]) -> List[int]:
        if self.template is not None:
            text = self.template.render(messages, add_generation_prompt=True)
            ids = self.model.tokenize(text, add_special_tokens=False)
            images = self._images(messages)
            if not images:
                return ids
            return self.model.place_images(ids, images, place_missing=False)
        text = "\n".join(m["content"] for m in messages)
        return self.model.tokenize(text)

    @staticmethod
    def _images(messages: List[Dict[str, Any]]) -> list:
        return [image for m in messages for image in m.get("images", ())]

    def _fit(self) -> List[int]:
        """Render the conversation, dropping the oldest turns until it and a reply fit the context."""
        ctx = self.model.ctx_size
        room_for_reply = min(self.max_tokens, ctx // 4)
        while True:
            ids = self._render(self.messages)
            if len(ids) + room_for_reply <= ctx:
                return ids
            first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
            if len(self.messages) - first <= 1:
                raise ContextLengthError(
                    f"this message needs {len(ids)} tokens (plus up to {room_for_reply} for the reply) "
                    f"but the context holds {ctx}; shorten it or restart with a larger --ctx-size")
            del self.messages[first]
            self.dropped_turns += 1

    # ------------------------------------------------------------ turns

    def send(self, user_text: str, images: Sequence[Any] = ()) -> Iterator[str]:
        """Add a user turn and stream the reply's text pieces. images (a model with a vision tower):
        paths, PIL images or arrays shown before the text; each is encoded once and kept with its turn.

        Stopping the iteration early (or Ctrl-C while iterating) keeps the
        partial reply in the conversation and the KV cache consistent.
        """
        message: Dict[str, Any] = {"role": "user", "content": user_text}
        if images:
            if self.template is None:
                raise ImageError("this model has no chat template to place images with")
            encoded = [self.model.encode_image(image) for image in images]
            message = {"role": "user", "images": encoded,
                       "content": [{"type": "image"} for _ in encoded] + [{"type": "text", "text": user_text}]}
        self.messages.append(message)
        try:
            ids = self._fit()
        except (ContextLengthError, ImageError):
            self.messages.pop()
            raise
        return self._reply(ids)

    def _reply(self, ids: List[int]) -> Iterator[str]:
        generation = Generation(self.model, ids, self.max_tokens, self.sampler, stop_ids=self.stop_ids,
                                context=self.cached, draft=self.model.draft, images=self._images(self.messages))
        self.last = generation.stats
        try:
            yield from generation
        finally:
            # Whatever happened, the context holds exactly model.n_past tokens of the history.
            self.cached = generation.history_keys[: self.model.n_past]
            self.messages.append({"role": "assistant", "content": self.model.detokenize(generation.tokens)})
