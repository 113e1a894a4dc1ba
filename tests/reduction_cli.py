"""What the expert-pruning and expert-merging tests share: a calibration text, and the conversion of
the qwen3_moe fixture with a reduction at a fixed width and at --bits auto."""
from __future__ import annotations

from edgemoe.apps.cli import main
from edgemoe.format.container import open_container

from conftest import FIXTURES

CALIB = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
         "must be in want of a wife. However little known the feelings or views of such a man may be "
         "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
         "surrounding families, that he is considered the rightful property of some one or other of "
         "their daughters. ") * 4


def reduced_at_widths(tmp_path, flag: str):
    """(q4 container with 25 % reduced, --bits auto container with 50 % reduced) of the qwen3_moe fixture."""
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    src = str(FIXTURES / "qwen3_moe")
    assert main(["convert", src, "-o", str(tmp_path / "q4.emoe"), "--bits", "4", flag, "0.25",
                 "--calib", str(calib), "-q"]) == 0
    q4 = open_container(str(tmp_path / "q4.emoe"))
    assert q4.config["n_experts"] == 6 and all(x["type"] == "q4" for row in q4.experts for x in row)
    assert main(["convert", src, "-o", str(tmp_path / "auto.emoe"), "--bits", "auto", "--target-size", "60KB",
                 flag, "0.5", "--calib", str(calib), "-q"]) == 0
    auto = open_container(str(tmp_path / "auto.emoe"))
    assert auto.config["n_experts"] == 4 and auto.manifest["quantization"]["experts"] == "mixed"
    assert len(auto.manifest["bit_allocation"]["sensitivity"][0]) == 4  # measured on the reduced model
    return q4, auto
