"""Record transformers' apply_chat_template renderings for tests/test_chat_template.py.

    python tools/make_chat_references.py   # needs the dev extra (transformers)

For every fixture folder with a chat template, and for tests/fixtures/chat_templates/*.jinja
(rendered with the qwen3_moe fixture's tokenizer), the conversations of CONVERSATIONS with and
without the generation prompt; written to tests/fixtures/chat_templates/references.json.
"""
from __future__ import annotations

import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIXTURES, "chat_templates", "references.json")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Caf\u00e9 \u4e2d\u6587?"},
     {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "And \"quotes\"\nand lines, na\u00efve?"}],
    [{"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
     {"role": "assistant", "content": "done"}],
]


def main() -> None:
    from transformers import AutoTokenizer

    out = {}
    for name in sorted(os.listdir(FIXTURES)):
        folder = os.path.join(FIXTURES, name)
        config = os.path.join(folder, "tokenizer_config.json")
        if not os.path.isfile(config) or not json.load(open(config)).get("chat_template"):
            continue
        tok = AutoTokenizer.from_pretrained(folder)
        out[name] = [{"messages": m, "add_generation_prompt": g,
                      "text": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=g)}
                     for m in CONVERSATIONS[:2] for g in (True, False)]
    tok = AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "qwen3_moe"))
    templates = os.path.join(FIXTURES, "chat_templates")
    for f in sorted(os.listdir(templates)):
        if f.endswith(".jinja"):
            source = open(os.path.join(templates, f), encoding="utf-8").read()
            out[f] = [{"messages": m, "add_generation_prompt": g,
                       "text": tok.apply_chat_template(m, chat_template=source, tokenize=False,
                                                       add_generation_prompt=g)}
                      for m in CONVERSATIONS for g in (True, False)]
    with open(OUT, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: {sum(len(v) for v in out.values())} renderings of {len(out)} templates")


if __name__ == "__main__":
    main()
