"""bench/RESULTS.md is a current report: a benchmark's run replaces its own section."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from bench_util import replace_section, section_key  # noqa: E402


def test_a_run_replaces_its_own_section_and_nothing_else(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    with open(path, "w") as f:
        f.write("# Results\n\nintro\n")
    replace_section(path, "compare olmoe8l", "### compare (day 1)\n\nold figures")
    replace_section(path, "kv_latent", "### kv (day 1)\n\nkv figures")
    replace_section(path, "compare olmoe8l", "### compare (day 2)\n\nnew figures")
    text = open(path).read()
    assert text.count("<!-- section: compare olmoe8l -->") == 1 and "old figures" not in text
    assert "new figures" in text and "kv figures" in text and text.startswith("# Results\n\nintro\n")
    assert text.index("compare (day 2)") < text.index("kv (day 1)")  # replaced in place


def test_a_section_is_named_by_the_script_and_its_model():
    assert section_key(["bench/compare.py", "/work/bench_models/olmoe8l", "--bits", "8"]) == "compare olmoe8l"
    assert section_key(["bench/streaming_peers.py", "/m/q-q4k.emoe", "/m/q.gguf"]) == "streaming_peers q-q4k.emoe"
    assert section_key(["bench/kv_latent.py", "--write", "bench/RESULTS.md"]) == "kv_latent"
