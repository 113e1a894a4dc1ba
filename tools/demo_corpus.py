"""Build the English training corpus of the demo MoE model from Debian packages.

Every source is public-domain text shipped by a Debian package, so the corpus
can be rebuilt offline on any machine that reaches Debian's archive:

  austen  r-cran-janeaustenr  Jane Austen's six completed novels (public domain;
                              package: MIT, (c) 2016-2017 Julia Silge). Read
                              with Rscript (r-base-core, a dependency).
  kjv     bible-kjv-text      The King James Bible (public domain, translation of
          (+ bible-kjv)       1611); the `bible` reader of bible-kjv decodes it.
  devil   dict-devil          Ambrose Bierce, The Devil's Dictionary (1911;
                              public domain, copyright expired).

Install: apt-get install --no-install-recommends r-cran-janeaustenr bible-kjv dict-devil

Documents are chapters (Austen, KJV) or runs of 20 dictionary entries (Bierce).
Hard-wrapped lines are joined into paragraphs; Gutenberg italics markers (_x_)
are dropped. The held-out split takes every 50th document of each source
(index % 50 == 25): a deterministic, stratified 2%.

Usage: python tools/demo_corpus.py OUT_DIR   ->  OUT_DIR/{train,heldout}.jsonl, corpus_info.json
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

PACKAGES = {
    "austen": ["r-cran-janeaustenr", "r-base-core"],
    "kjv": ["bible-kjv-text", "bible-kjv"],
    "devil": ["dict-devil"],
}
LICENCES = {
    "austen": "Text: public domain (Jane Austen, 1811-1818). Package r-cran-janeaustenr: MIT licence, "
              "Copyright 2016-2017 Julia Silge (see /usr/share/doc/r-cran-janeaustenr/copyright).",
    "kjv": "Text: public domain (King James Version, 1611; copyright expired). Package bible-kjv-text: "
           "'unrestricted use' data file by Chip Chapin; reader bible-kjv: GPL-2+ (used as a tool only; "
           "see /usr/share/doc/bible-kjv-text/copyright).",
    "devil": "Text: public domain (Ambrose Bierce, The Devil's Dictionary, 1911; copyright expired; "
             "see /usr/share/doc/dict-devil/copyright).",
}
HELDOUT_EVERY, HELDOUT_AT = 50, 25


def _run(cmd: List[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True).stdout.decode("utf-8", "replace")


def package_version(pkg: str) -> str:
    try:
        return _run(["dpkg-query", "-W", "-f=${Version}", pkg]).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return ""


def require_packages() -> None:
    missing = [p for ps in PACKAGES.values() for p in ps if not package_version(p)]
    if missing:
        sys.exit("missing Debian packages: " + " ".join(missing) +
                 "\n  apt-get update && apt-get install -y --no-install-recommends r-cran-janeaustenr bible-kjv dict-devil")


def clean_line(s: str) -> str:
    s = s.replace("\u00a0", " ").replace("_", "").replace("{", "").replace("}", "")
    return re.sub(r"[ \t]+", " ", s).strip()


def join_wrapped(lines: List[str]) -> str:
    """Join hard-wrapped lines; a line ending in a single hyphen continues a compound word."""
    out = ""
    for line in lines:
        if out and not (out.endswith("-") and not out.endswith("--")):
            out += " "
        out += line
    return out


def paragraphs(lines: List[str]) -> List[str]:
    """Join hard-wrapped lines into paragraphs separated by blank lines."""
    out, cur = [], []
    for line in lines:
        line = clean_line(line)
        if not line:
            if cur:
                out.append(join_wrapped(cur))
                cur = []
        else:
            cur.append(line)
    if cur:
        out.append(join_wrapped(cur))
    return out


# ------------------------------------------------------------------ sources

def austen_docs() -> List[Tuple[str, str]]:
    tmp = tempfile.mkdtemp(prefix="austen")
    try:
        script = ("library(janeaustenr); b <- austen_books(); ks <- levels(b$book); "
                  f"writeLines(ks, file.path('{tmp}', 'books.txt'), useBytes=TRUE); "
                  f"for (i in seq_along(ks)) writeLines(b$text[b$book == ks[i]], file.path('{tmp}', paste0(i, '.txt')), useBytes=TRUE)")
        _run(["Rscript", "--vanilla", "-e", script])
        with open(os.path.join(tmp, "books.txt"), encoding="utf-8") as f:
            books = [b.strip() for b in f if b.strip()]
        docs = []
        heading = re.compile(r"^(CHAPTER|Chapter) ([IVXLC]+|[0-9]+)\.?$")
        for i, book in enumerate(books, 1):
            with open(os.path.join(tmp, f"{i}.txt"), encoding="utf-8") as f:
                lines = f.read().split("\n")
            chapters: List[Tuple[str, List[str]]] = []
            for line in lines:
                s = line.strip()
                if heading.match(s):
                    chapters.append((s, []))
                elif chapters and not re.match(r"^(VOLUME [IVX]+|THE END|FINIS)\.?$", s, re.I):
                    chapters[-1][1].append(line)
            for n, (title, body) in enumerate(chapters, 1):
                paras = paragraphs(body)
                if paras:
                    docs.append((f"austen/{book}/{n:03d}", f"{book}\n\n{title.title()}\n\n" + "\n\n".join(paras)))
        return docs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kjv_docs(min_para: int = 400) -> List[Tuple[str, str]]:
    text = _run(["bible", "-l", "100000", "Gen1:1-Rev22:21"])
    docs, title, verses = [], None, []

    def flush():
        if title and verses:
            paras, cur = [], []
            for v in verses:
                cur.append(v)
                if sum(len(x) + 1 for x in cur) >= min_para and v[-1:] in ".?!":
                    paras.append(" ".join(cur))
                    cur = []
            if cur:
                paras.append(" ".join(cur))
            docs.append((f"kjv/{title}", f"{title}\n\n" + "\n\n".join(paras)))

    for line in text.split("\n"):
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            verses.append(clean_line(m.group(2)))
        elif line.strip():
            flush()
            title, verses = line.strip(), []
    flush()
    return docs


def devil_docs(per_doc: int = 20) -> List[Tuple[str, str]]:
    with gzip.open("/usr/share/dictd/devil.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.index("ABASEMENT, n.")
    blocks = re.split(r"\n\s*\n", text[start:])
    entries: List[List[str]] = []
    for block in blocks:
        lines = [l.rstrip() for l in block.split("\n") if l.strip()]
        if not lines or re.fullmatch(r"\s*[a-z]{26}\s*", block):  # dictfmt's alphabet entry
            continue
        if re.match(r"^[A-Z][A-Z' -]+[,.]", lines[0]) and not lines[0].startswith(" "):
            entries.append([])
        if not entries:
            continue
        if all(l.startswith("    ") for l in lines):  # verse: keep its lines, drop the indentation
            entries[-1].append("\n".join(clean_line(l) for l in lines))
        else:  # prose (only a paragraph's first line is indented)
            entries[-1].append(join_wrapped([clean_line(l) for l in lines]))
    docs = []
    for i in range(0, len(entries), per_doc):
        chunk = entries[i:i + per_doc]
        body = "\n\n".join("\n\n".join(e) for e in chunk)
        docs.append((f"devil/{i // per_doc:03d}", "The Devil's Dictionary\n\n" + body))
    return docs


SOURCES = {"austen": austen_docs, "kjv": kjv_docs, "devil": devil_docs}


def build(out_dir: str) -> Dict:
    require_packages()
    os.makedirs(out_dir, exist_ok=True)
    splits: Dict[str, List[Dict]] = {"train": [], "heldout": []}
    info: Dict = {"sources": {}, "heldout_rule": f"document index % {HELDOUT_EVERY} == {HELDOUT_AT} within each source"}
    for name, fn in SOURCES.items():
        docs = fn()
        n_chars = {"train": 0, "heldout": 0}
        n_docs = {"train": 0, "heldout": 0}
        for i, (doc_id, text) in enumerate(docs):
            split = "heldout" if i % HELDOUT_EVERY == HELDOUT_AT else "train"
            splits[split].append({"id": doc_id, "source": name, "text": text})
            n_chars[split] += len(text)
            n_docs[split] += 1
        info["sources"][name] = {
            "packages": {p: package_version(p) for p in PACKAGES[name]},
            "licence": LICENCES[name],
            "documents": n_docs,
            "characters": n_chars,
        }
    for split, docs in splits.items():
        path = os.path.join(out_dir, f"{split}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        with open(path, "rb") as f:
            info[f"{split}_sha256"] = hashlib.sha256(f.read()).hexdigest()
        info[f"{split}_documents"] = len(docs)
        info[f"{split}_characters"] = sum(len(d["text"]) for d in docs)
    with open(os.path.join(out_dir, "corpus_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def load(out_dir: str, split: str) -> List[Dict]:
    with open(os.path.join(out_dir, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(l) for l in f]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    info = build(ap.parse_args().out_dir)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
