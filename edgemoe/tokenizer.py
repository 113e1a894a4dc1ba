"""Text <-> token ids through the `tokenizers` library, from the tokenizer.json stored in the container."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from .errors import FormatError


class Tokenizer:
    def __init__(self, section: Dict[str, Any], where: str):
        text = section.get("tokenizer_json") if isinstance(section, dict) else None
        if not text:
            raise FormatError(f"{where}: the model carries no tokenizer (its source had no tokenizer.json); "
                              f"pass token ids instead of text")
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as e:  # the library raises its own exception types
            raise FormatError(f"{where}: tokenizer.json cannot be loaded: {e}") from None
        self.config = section.get("tokenizer_config") or {}

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)


class StreamDecoder:
    """Turns a growing list of ids into text pieces without splitting multi-byte characters."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: List[int] = []
        self.emitted = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        piece = text[len(self.emitted):] if text.startswith(self.emitted) else text
        self.emitted = text
        return piece
