"""The demo model that ships inside the package: present, small, routed, and writing English."""
import os
import re
import subprocess
import sys


import edgemoe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON_WORDS = {"the", "and", "of", "to", "a", "in", "that", "he", "she", "it", "was", "his", "her", "i",
                "you", "not", "for", "with", "be", "is", "had", "unto", "all", "shall", "they", "my", "as"}


def test_default_model_is_shipped():
    path = edgemoe.default_model_path()
    assert os.path.exists(path) and os.path.getsize(path) <= 40e6
    info = edgemoe.load(path, threads=1).info()
    assert info["architecture"] == "qwen3_moe"
    assert info["n_layers"] >= 8 and info["n_experts"] >= 16 and info["top_k"] == 2
    card = os.path.join(os.path.dirname(path), "MODEL_CARD.md")
    assert "Perplexity" in open(card, encoding="utf-8").read()


def test_demo_model_writes_recognisable_english():
    model = edgemoe.load(edgemoe.default_model_path(), threads=2)
    text = model.generate("It was a fine morning, and", max_tokens=60, temperature=0.0, repeat_penalty=1.1)
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) >= 20, text
    printable = sum(c.isascii() and (c.isalnum() or c in " \n.,;:!?'\"-()") for c in text) / len(text)
    assert printable > 0.95, text
    common = sum(w.lower() in COMMON_WORDS for w in words) / len(words)
    assert common > 0.2, text  # English prose: about a third of the words are function words


def test_chat_without_a_model_argument_uses_the_demo_model():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "edgemoe", "chat", "-n", "12", "--seed", "1"], input="Hello\n",
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 0


def test_demo_model_ships_profiled_so_every_predictor_works():
    """Routing statistics of its training split are inside: the profile-based predictors run on it
    as shipped, prefetching only (the output is plain decoding's)."""
    path = edgemoe.default_model_path()
    profile = edgemoe.format.container.open_container(path).manifest.get("profile")
    assert profile and profile["tokens"] >= 100_000
    plain = edgemoe.load(path, threads=2, cache_experts=32).generate("And the LORD said", max_tokens=24,
                                                                     temperature=0.0)
    for predictor in ("stats", "token", "auto"):
        model = edgemoe.load(path, threads=2, cache_experts=32, predictor=predictor)
        assert model.generate("And the LORD said", max_tokens=24, temperature=0.0) == plain
        assert model.stats()["prefetch_issued"] > 0, predictor
