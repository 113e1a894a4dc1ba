"""Ctrl-C while the engine computes: the forward pass stops at the next layer (not after the
whole prefill), raises KeyboardInterrupt, and leaves the model consistent and usable. The same
for an edgemoe.CancelToken set from another thread (edgemoe.Cancelled), which the server uses
when a client goes away."""
import json
import subprocess
import sys

import pytest

# Runs in a child process so the signal cannot reach pytest itself. A helper thread sends
# SIGINT once the call has demonstrably started (the engine has read an expert), so the
# outcome does not depend on timing: a pass that only noticed Ctrl-C after returning would
# have counted all its tokens and read every expert the full call reads.
CHILD = r"""
import json, os, signal, threading, time
import numpy as np
import edgemoe
from edgemoe import _core

# A shell's background job starts with SIGINT ignored, and so would this child: restore Python's
# usual handler so the test does not depend on how the suite was launched.
signal.signal(signal.SIGINT, signal.default_int_handler)
_core.set_isa("scalar")  # slow enough that the signal lands well inside the call
model = edgemoe.load(edgemoe.default_model_path(), cache_experts=2, threads=1)
ids = (model.tokenize("MARRIAGE, n. The state or condition of a community. " * 40,
                      add_special_tokens=False))[:480]
want = model.logits(ids)
s0 = model.stats()
model.logits(ids)
full_misses = model.stats()["cache_misses"] - s0["cache_misses"]

def interrupt_once_reading(misses_before):
    while model.stats()["cache_misses"] == misses_before:
        time.sleep(0.0005)
    os.kill(os.getpid(), signal.SIGINT)

report = {"full_misses": full_misses, "calls": {}}
for call in ("logits", "eval"):
    model.reset()
    before = model.stats()
    sender = threading.Thread(target=interrupt_once_reading, args=(before["cache_misses"],))
    sender.start()
    with model.record_routing() as record:
        try:
            getattr(model, call)(ids)
            outcome = "finished"
        except KeyboardInterrupt:
            outcome = "interrupted"
    sender.join()
    after = model.stats()
    positions, experts = record.positions, record.experts
    report["calls"][call] = {"outcome": outcome, "tokens": after["tokens"] - before["tokens"],
                             "misses": after["cache_misses"] - before["cache_misses"],
                             "n_past": model.n_past, "traced": len(positions),
                             "traced_unrouted": int((experts < 0).sum())}
report["threads"] = threading.active_count()
report["same_after"] = bool(np.array_equal(model.logits(ids), want))
model.reset()
model.eval(ids[:100])
report["eval_after"] = bool(np.array_equal(model.eval(ids[100:200]), want[199]))
print(json.dumps(report))
"""


def test_ctrl_c_stops_a_long_forward_pass_at_a_layer_boundary():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    for call, c in r["calls"].items():
        assert c["outcome"] == "interrupted", (call, c)
        assert c["tokens"] == 0, (call, c)  # the call did not run to its end
        assert c["misses"] < r["full_misses"] / 2, (call, c, r["full_misses"])
        assert c["n_past"] % 256 == 0 and c["n_past"] < 480, (call, c)  # whole prefill batches only
        # the routing trace holds exactly the tokens that ran, each fully routed
        assert c["traced"] == c["n_past"] and c["traced_unrouted"] == 0, (call, c)
    assert r["threads"] == 1  # no thread left behind (the sender has been joined)
    assert r["same_after"] and r["eval_after"]  # the interrupted model computes as before


def _slow_model():
    import edgemoe

    model = edgemoe.load(edgemoe.default_model_path(), cache_experts=2, threads=1)
    ids = model.tokenize("MARRIAGE, n. The state or condition of a community. " * 40, add_special_tokens=False)[:480]
    return model, ids


def test_cancel_token_stops_a_call_from_another_thread():
    import threading
    import time

    import numpy as np

    import edgemoe
    from edgemoe import _core

    default = _core.current_isa()
    _core.set_isa("scalar")  # a long call, so the token lands inside it
    try:
        model, ids = _slow_model()
        want = model.logits(ids)
        s0 = model.stats()
        model.logits(ids)
        full_misses = model.stats()["cache_misses"] - s0["cache_misses"]
        for call in ("logits", "eval"):
            model.reset()
            token = edgemoe.CancelToken()
            before = model.stats()

            def cancel_once_reading():
                while model.stats()["cache_misses"] == before["cache_misses"]:
                    time.sleep(0.0005)
                token.cancel()

            sender = threading.Thread(target=cancel_once_reading)
            sender.start()
            with pytest.raises(edgemoe.Cancelled):
                getattr(model, call)(ids, cancel=token)
            sender.join()
            after = model.stats()
            assert after["tokens"] == before["tokens"], call  # stopped inside the call
            assert after["cache_misses"] - before["cache_misses"] < full_misses / 2, call
            assert model.n_past % 256 == 0 and model.n_past < len(ids), call
        assert token.cancelled
        with pytest.raises(edgemoe.Cancelled):  # a cancelled token stays cancelled
            model.generate(ids[:8], max_tokens=4, cancel=token)
        np.testing.assert_array_equal(model.logits(ids), want)  # the model is unharmed
        with pytest.raises(TypeError):
            model.eval(ids[:2], cancel=threading.Event())
    finally:
        _core.set_isa(default)


def test_server_generation_ends_cancelled_when_the_client_left_during_prefill():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import edgemoe
    from edgemoe.apps.cli import build_parser, make_server

    server = make_server(build_parser().parse_args(["serve", "--threads", "1", "--ctx-size", "256"]))
    req = server.completion_request({"model": "demo", "prompt": "Once upon a time", "max_tokens": 50})
    token = edgemoe.CancelToken()
    token.cancel()  # what the HTTP handler does when the client goes away
    result = {}
    out = list(server.generate(req, token, result))
    assert out == [("", "cancelled")] and result["completion_tokens"] == 0
    assert server.model.n_past == 0  # the prefill stopped before its first layer
    token = edgemoe.CancelToken()
    out = list(server.generate(req, token, result))
    assert out[-1][1] in ("length", "stop") and result["completion_tokens"] > 0
