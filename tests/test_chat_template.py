"""Chat templates render as transformers' apply_chat_template renders them: every fixture's own
template and tests/fixtures/chat_templates/*.jinja (the jinja features real templates use),
against renderings recorded by tools/make_chat_references.py."""
import json

import pytest

from edgemoe.chat_template import ChatTemplate, load_chat_template
from conftest import FIXTURES

TEMPLATES = FIXTURES / "chat_templates"
REFERENCES = json.loads((TEMPLATES / "references.json").read_text(encoding="utf-8"))


def _tokenizer_config(folder):
    return json.loads((FIXTURES / folder / "tokenizer_config.json").read_text(encoding="utf-8"))


def test_every_fixture_with_a_template_has_references():
    with_template = sorted(p.name for p in FIXTURES.iterdir()
                           if (p / "tokenizer_config.json").is_file() and _tokenizer_config(p.name).get("chat_template"))
    assert with_template and set(with_template) <= set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_rendering_equals_transformers(name):
    if name.endswith(".jinja"):
        template = ChatTemplate((TEMPLATES / name).read_text(encoding="utf-8"), _tokenizer_config("qwen3_moe"))
    else:
        template = load_chat_template(_tokenizer_config(name))
    for case in REFERENCES[name]:
        assert template.render(case["messages"], add_generation_prompt=case["add_generation_prompt"]) == case["text"]
