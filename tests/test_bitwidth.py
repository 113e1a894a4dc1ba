"""Expert-wise bit widths: the greedy allocator, the sensitivity measure, and convert --bits auto."""
import json

import numpy as np
import pytest

import edgemoe
from edgemoe.offline import bitwidth
from edgemoe.format import quant
from edgemoe.apps.cli import main
from edgemoe.format.container import open_container
from edgemoe.convert import convert_hf
from edgemoe.convert.auto_bits import _expert_sizes, plan_expert_types
from edgemoe.convert.hf import pick_arch
from edgemoe.errors import EdgeMoEError
from conftest import FIXTURES

CALIB = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
         "must be in want of a wife. However little known the feelings or views of such a man may be "
         "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
         "surrounding families, that he is considered the rightful property of some one or other of "
         "their daughters. ") * 4


def test_greedy_narrows_the_least_sensitive_expert_first():
    # two experts, three widths of 4/2/1 bytes; expert 1 barely cares, expert 0 cares a lot
    sizes = np.array([[[4, 2, 1], [4, 2, 1]]])
    sens = np.array([[[0.0, 10.0, 100.0], [0.0, 0.1, 0.2]]])
    assert bitwidth.choose_for_size(sens, sizes, 8).tolist() == [[0, 0]]
    assert bitwidth.choose_for_size(sens, sizes, 6).tolist() == [[0, 1]]
    assert bitwidth.choose_for_size(sens, sizes, 5).tolist() == [[0, 2]]
    assert bitwidth.choose_for_size(sens, sizes, 3).tolist() == [[1, 2]]
    assert bitwidth.choose_for_sensitivity(sens, sizes, 0.15).tolist() == [[0, 1]]
    assert bitwidth.choose_for_sensitivity(sens, sizes, 1000).tolist() == [[2, 2]]
    with pytest.raises(EdgeMoEError, match="below"):
        bitwidth.choose_for_size(sens, sizes, 1)


def test_loss_budget_is_met_by_measurement():
    sizes = np.array([[[4, 2, 1], [4, 2, 1]]])
    sens = np.array([[[0.0, 10.0, 100.0], [0.0, 0.1, 0.2]]])
    # a "measured" loss that is the total sensitivity / 100
    measure = lambda choice: float(np.take_along_axis(sens, choice[..., None], 2).sum()) / 100
    choice, inc = bitwidth.choose_for_loss(sens, sizes, 0.05, measure)
    assert inc <= 0.05 and choice.tolist() == [[0, 2]]


@pytest.fixture(scope="module")
def planned():
    src = str(FIXTURES / "mixtral_smooth")
    hf = json.loads((FIXTURES / "mixtral_smooth" / "config.json").read_text())
    cfg = pick_arch(hf).config(hf)
    sizes = _expert_sizes(cfg, bitwidth.CANDIDATES)
    target = int(sizes[:, :, 1].sum() * 0.8)  # 80 % of uniform 4-bit
    types, report = plan_expert_types(src, CALIB, target_size=target, window=64, progress=False)
    return src, cfg, target, types, report


def test_auto_bits_meet_the_size_target_with_mixed_widths(planned, tmp_path):
    src, cfg, target, types, report = planned
    sens = np.array(report["sensitivity"])
    assert sens.shape == (cfg["n_layers"], cfg["n_experts"], len(bitwidth.CANDIDATES))
    used = sens[:, :, 0] > 0
    # narrower never moves an expert's output less (up to float noise)
    assert np.all(np.diff(sens[used], axis=-1) >= -1e-9)
    assert len({t for row in types for t in row}) > 1 and report["expert_bytes"] <= target
    out = tmp_path / "auto.emoe"
    convert_hf(src, str(out), bits="8", progress=False, expert_types=types, extra_manifest={"bit_allocation": report})
    c = open_container(out)
    got = [[quant.CODES[b["type"]] for b in row] for row in c.experts]
    assert got == types and c.manifest["quantization"]["experts"] == "mixed"
    assert sum(b["size"] for row in c.experts for b in row) == report["expert_bytes"]
    info = edgemoe.load(str(out)).info()
    assert info["bit_allocation"]["expert_bytes"] == report["expert_bytes"]


def test_convert_auto_cli(tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text(CALIB)
    out = tmp_path / "a.emoe"
    src = str(FIXTURES / "mixtral_smooth")
    assert main(["convert", src, "-o", str(out), "--bits", "auto", "--calib", str(calib),
                 "--max-loss-increase", "0.05", "-q"]) == 0
    a = open_container(out).manifest["bit_allocation"]
    assert a["measured_loss_increase"] <= 0.05 and a["calibration_file"] == "calib.txt"
    assert main(["info", str(out)]) == 0
    assert "bit allocation" in capsys.readouterr().out
    # a KL budget: met as measured, and reported beside the loss
    assert main(["convert", src, "-o", str(tmp_path / "k.emoe"), "--bits", "auto", "--calib", str(calib),
                 "--max-kl", "0.02", "-q"]) == 0
    k = open_container(tmp_path / "k.emoe").manifest["bit_allocation"]
    assert 0 < k["measured_kl"] <= 0.02 and k["max_kl"] == 0.02 and 0 < k["top1_agreement"] <= 1
    assert a["measured_kl"] > 0 and "measured_kl_p99" in a
    # exactly one budget, and a calibration text, are required
    assert main(["convert", src, "-o", str(tmp_path / "b.emoe"), "--bits", "auto", "--calib", str(calib)]) == 1
    assert main(["convert", src, "-o", str(tmp_path / "c.emoe"), "--bits", "auto", "--target-size", "1MB"]) == 1
    assert main(["convert", src, "-o", str(tmp_path / "d.emoe"), "--bits", "auto", "--calib", str(calib),
                 "--max-kl", "0.02", "--max-loss-increase", "0.05"]) == 1
    assert not any((tmp_path / f"{x}.emoe").exists() for x in "bcd")


def test_candidates_use_q4k_where_every_expert_row_can():
    assert bitwidth.candidates_for({"hidden": 1024, "expert_intermediate": 512}) == (quant.Q8, quant.Q4K, quant.Q3,
                                                                                     quant.Q2)
    # Qwen1.5-MoE-like expert width: q4
    assert bitwidth.candidates_for({"hidden": 2048, "expert_intermediate": 1408}) == bitwidth.CANDIDATES
    # widest first, each narrower one smaller, as the greedy allocator needs
    sizes = [quant.row_bytes(q, 1024) for q in bitwidth.candidates_for({"hidden": 1024, "expert_intermediate": 512})]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
