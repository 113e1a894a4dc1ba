"""Ctrl-C while the engine computes: the forward pass stops at the next layer (not after the
whole prefill), raises KeyboardInterrupt, and leaves the model consistent and usable."""
import json
import subprocess
import sys

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
    model._engine.set_tracing(True)
    before = model.stats()
    sender = threading.Thread(target=interrupt_once_reading, args=(before["cache_misses"],))
    sender.start()
    try:
        getattr(model, call)(ids)
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
    sender.join()
    after = model.stats()
    positions, experts = model._engine.take_trace(model.config["n_layers"], model.config["top_k"])[:2]
    model._engine.set_tracing(False)
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
