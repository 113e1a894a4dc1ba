"""Routing traces: the recorded expert choices are transformers' own."""
import json

import numpy as np
import pytest

import edgemoe
from edgemoe.trace import read_trace
from conftest import reference


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "olmoe"])
def test_trace_records_the_reference_routing(converted, tmp_path, name):
    ref = reference(name)
    model = edgemoe.load(converted(name, "f32"), threads=1, kv_cache="f32")  # routing exactly as the reference
    path = tmp_path / "t.jsonl"
    ids = ref["input_ids"].tolist()
    assert model.generate(ids, max_tokens=0, trace=str(path)) == []
    header, records = read_trace(str(path))
    assert header["n_layers"] == len(ref["topk_ids"]) and header["prompt_tokens"] == len(ids)
    assert [r["token"] for r in records] == ids and [r["pos"] for r in records] == list(range(len(ids)))
    experts = np.array([r["experts"] for r in records])       # [T, L, k]
    weights = np.array([r["weights"] for r in records])
    np.testing.assert_array_equal(experts, ref["topk_ids"].transpose(1, 0, 2))
    np.testing.assert_allclose(weights, ref["topk_weights"].transpose(1, 0, 2), atol=1e-5)


def test_trace_of_a_generation_covers_prompt_and_fed_back_tokens(converted, tmp_path):
    model = edgemoe.load(converted("qwen3_moe", "8"), threads=1)
    path = tmp_path / "g.jsonl"
    new = model.generate([5, 6, 7], max_tokens=4, stop_at_eos=False, trace=str(path))
    _, records = read_trace(str(path))
    assert [r["token"] for r in records] == [5, 6, 7] + new[:-1]
    assert all(len(r["experts"]) == 2 and all(len(e) == 2 for e in r["experts"]) for r in records)
    # recording stops with the generation
    model.generate([5, 6], max_tokens=2)
    with model.record_routing() as record:
        pass
    assert record.positions.size == 0


def test_not_a_trace_is_a_format_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"format": "other"}) + "\n")
    with pytest.raises(edgemoe.FormatError, match="not an edgemoe trace"):
        read_trace(str(p))


def test_trace_records_predictions_of_decode_tokens(converted, tmp_path):
    model = edgemoe.load(converted("mixtral_smooth", "8"), threads=1, predictor="gate", prefetch_depth=1, prefetch_min_confidence=0.0)
    path = tmp_path / "p.jsonl"
    model.generate([5, 6, 7], max_tokens=4, stop_at_eos=False, trace=str(path))
    _, records = read_trace(str(path))
    assert all("predicted" not in r for r in records[:3])  # the prompt is one prefill batch
    for r in records[3:]:
        # gate, depth 1: layer 0 is never predicted, each later layer gets top_k guesses
        assert r["predicted"][0] == [] and all(len(p) == 2 for p in r["predicted"][1:])
