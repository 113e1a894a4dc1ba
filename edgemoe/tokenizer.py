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
    """Turns a growing list of ids into text pieces without splitting multi-byte characters.

    Decodes only a short window (the ids since the last emitted piece, plus the
    ones before it for context), so a long generation costs O(n), not O(n^2).
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: List[int] = []
        self.prefix_offset = 0  # start of the context window
        self.read_offset = 0    # ids before this have been emitted

    def push(self, token: int) -> str:
        self.ids.append(token)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset:])
        if text.endswith("\ufffd") or len(text) <= len(prefix):
            return ""  # an incomplete UTF-8 sequence (or nothing visible yet): wait for more ids
        piece = text[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return piece
