"""Render a conversation with the model's own chat template (jinja2), the way transformers does.

Templates come from untrusted model files, so they run in jinja2's immutable
sandbox: a template can format strings, not touch Python objects or files.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Dict, List, Optional

from .errors import FormatError


class TemplateError(FormatError):
    """The model's chat template failed to render (or refused the conversation)."""


def _raise(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, indent: Optional[int] = None, **_: Any) -> str:
    # transformers' filter: keep non-ASCII as is (templates embed it into prompts)
    return json.dumps(value, ensure_ascii=False, indent=indent)


def token_text(value: Any) -> str:
    """tokenizer_config stores special tokens as strings or as {"content": ...} objects."""
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return "" if value is None else str(value)


class ChatTemplate:
    def __init__(self, source: str, tokenizer_config: Dict[str, Any]):
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise TemplateError(f"the model's chat template does not parse: {e}") from None
        self._specials = {key: token_text(tokenizer_config.get(key))
                          for key in ("bos_token", "eos_token", "pad_token", "unk_token")}

    def render(self, messages: List[Dict[str, str]], add_generation_prompt: bool = True) -> str:
        import jinja2

        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self._specials)
        except TemplateError:
            raise
        except jinja2.TemplateError as e:
            raise TemplateError(f"the model's chat template failed: {e}") from None


def load_chat_template(tokenizer_config: Dict[str, Any]) -> Optional[ChatTemplate]:
    """The model's template, or None when it has none (plain continuation then)."""
    source = tokenizer_config.get("chat_template")
    if isinstance(source, list):  # several named templates: take the default one
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if not isinstance(source, str) or not source.strip():
        return None
    return ChatTemplate(source, tokenizer_config)
