"""The chat: driven through a pipe and through a real pseudo-terminal, plus the session's KV reuse."""
import json
import os
import re
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

import edgemoe
from edgemoe.sampling import SamplingParams
from edgemoe.session import ChatSession

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "edgemoe", *args], capture_output=True, text=True, env=env,
                          timeout=120, **kw)


@pytest.fixture(scope="module")
def chat_model(converted):
    return converted("qwen3_moe", "8")


def test_chat_through_a_pipe(chat_model):
    r = cli("chat", chat_model, "-n", "8", "--seed", "1", "--ctx-size", "512",
            input="Hello there\n/stats\nHow are you?\n/stats json\n/reset\n/quit\n")
    assert r.returncode == 0, r.stderr
    replies = r.stdout.splitlines()
    assert len(replies) == 2 and all(replies), r.stdout  # one line per turn, nothing else on stdout
    assert re.search(r"decode +\d+ tokens in [\d.]+ s, [\d.]+ tok/s \| [\d.]+ ms/token: compute [\d.]+, expert cache [\d.]+, "
                     r"waiting for storage [\d.]+ \| experts [\d.]+ % cached", r.stderr), r.stderr
    assert re.search(r"memory +plan \d+ MiB \(\d+ expert slots of [\d.]+ MiB\), RSS \d+ MiB, peak \d+ MiB", r.stderr)
    raw = json.loads(next(line for line in r.stderr.splitlines() if line.startswith("{")))
    assert raw["decode"]["tokens"] > 0 and raw["cache_hits"] + raw["cache_misses"] > 0
    assert "[conversation cleared]" in r.stderr


def test_pipe_end_of_input_exits_cleanly(chat_model):
    # the input ends without /quit: the chat answers the last line and exits cleanly
    r = cli("chat", chat_model, "-n", "4", "--ctx-size", "512", "--seed", "2", input="hi\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "Traceback" not in r.stderr


def test_invalid_flags_are_refused(chat_model):
    for flags in (["--temp", "-1"], ["--top-p", "0"], ["--top-p", "1.5"], ["--top-k", "x"], ["--threads", "0"]):
        r = cli("chat", chat_model, *flags, input="")
        assert r.returncode == 2 and ("must be" in r.stderr or "not a valid" in r.stderr), (flags, r.stderr)


def test_missing_model_file_is_a_clear_error(tmp_path):
    r = cli("chat", str(tmp_path / "none.emoe"), input="")
    assert r.returncode == 1 and "no such model file" in r.stderr


def test_generate_command_and_stats(chat_model):
    r = cli("generate", chat_model, "-p", "It was the best of times", "-n", "6", "--temp", "0", "--stats")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()[-3:]
    assert lines[0].startswith("prefill ") and lines[1].startswith("decode   6 tokens") and lines[2].startswith("memory ")
    r = cli("generate", chat_model, "-p", "It was the best of times", "-n", "6", "--temp", "0", "--stats-json")
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    # the decode phase: up to 5 evaluations after the prompt's, each looking up top_k (2) experts in both layers
    decoded = stats["decode"]["tokens"]
    assert 1 <= decoded <= 5 and stats["prefill"]["tokens"] + decoded == stats["tokens"]
    assert stats["decode"]["cache_hits"] + stats["decode"]["cache_misses"] == decoded * 2 * 2


def test_python_dash_m_equals_script(chat_model):
    r = cli("info", chat_model)
    assert r.returncode == 0 and "parameters" in r.stdout and "M active per token" in r.stdout
    # the console script pip installed next to this interpreter
    script = os.path.join(os.path.dirname(sys.executable), "edgemoe")
    assert os.path.exists(script), f"no edgemoe console script next to {sys.executable}"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    s = subprocess.run([script, "info", chat_model], capture_output=True, text=True, env=env, timeout=120)
    assert s.returncode == 0 and s.stdout == r.stdout, s.stderr


def _read_until(fd, marker: bytes, timeout: float = 60.0) -> bytes:
    out = b""
    end = time.time() + timeout
    while marker not in out:
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {marker!r}; got {out[-500:]!r}")
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_chat_in_a_pseudo_terminal_with_ctrl_c():
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="dumb")
    pid, fd = pty.fork()
    if pid == 0:  # child: the chat on the demo model, whose greedy reply here runs to the end of
        # its 512-token context (~2 s with a 2-expert cache): long enough to interrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # not ignored, even if the suite runs as a background job
        os.execvpe(sys.executable, [sys.executable, "-m", "edgemoe", "chat", "-n", "100000", "--temp", "0",
                                    "--cache-experts", "2"], env)
    try:
        _read_until(fd, b">>> ")
        os.write(fd, b"Tell me a long story\r")
        _read_until(fd, b"story")  # our own echo; the reply follows
        time.sleep(0.05)
        os.write(fd, b"\x03")  # Ctrl-C: stops the reply, not the program
        out = _read_until(fd, b">>> ")
        assert b"[reply stopped]" in out, out
        os.write(fd, b"/stats\r")
        out = _read_until(fd, b">>> ")
        assert b"tok/s | " in out and b"waiting for storage" in out
        os.write(fd, b"\x04")  # Ctrl-D leaves
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_session_reuses_kv_cache_across_turns(chat_model):
    model = edgemoe.load(chat_model, threads=1, ctx_size=512)
    session = ChatSession(model, SamplingParams(temperature=0.0), max_tokens=6)
    "".join(session.send("Hello"))
    first = session.last
    "".join(session.send("And then?"))
    second = session.last
    assert first.evaluated_tokens == first.prompt_tokens
    # the second turn evaluates only what the cache does not already hold
    assert second.evaluated_tokens < second.prompt_tokens - first.prompt_tokens + 8


def test_session_matches_fresh_evaluation(chat_model):
    # Reusing the cache must not change the reply: compare with a session that starts over each turn.
    model = edgemoe.load(chat_model, threads=1, ctx_size=512)
    a = ChatSession(model, SamplingParams(temperature=0.0), max_tokens=6)
    replies_a = ["".join(a.send(t)) for t in ("Hello", "Tell me more")]
    model_b = edgemoe.load(chat_model, threads=1, ctx_size=512)
    b = ChatSession(model_b, SamplingParams(temperature=0.0), max_tokens=6)
    "".join(b.send("Hello"))
    b.cached = []  # forget the cache: the next turn re-evaluates everything
    replies_b = [replies_a[0], "".join(b.send("Tell me more"))]
    assert replies_a == replies_b


def test_context_overflow_drops_oldest_turns(chat_model):
    model = edgemoe.load(chat_model, threads=1, ctx_size=64)
    session = ChatSession(model, SamplingParams(temperature=0.0), max_tokens=8, system="Be brief.")
    for i in range(12):
        "".join(session.send(f"message number {i}"))
    assert session.dropped_turns > 0
    assert session.messages[0]["role"] == "system"
    assert model.n_past <= 64


def test_message_longer_than_context_is_refused(chat_model):
    model = edgemoe.load(chat_model, threads=1, ctx_size=32)
    session = ChatSession(model, max_tokens=8)
    with pytest.raises(edgemoe.ContextLengthError, match="context holds 32"):
        session.send("word " * 100)
    assert session.messages == []


def test_seeded_sampling_repeats_and_top_k_1_is_greedy(chat_model):
    model = edgemoe.load(chat_model, threads=1)
    prompt = "Once upon a time"
    kw = dict(max_tokens=12, temperature=0.9, top_p=0.95, stop_at_eos=False)
    assert model.generate(prompt, seed=5, **kw) == model.generate(prompt, seed=5, **kw)
    greedy = model.generate(prompt, max_tokens=12, temperature=0.0, stop_at_eos=False)
    assert model.generate(prompt, max_tokens=12, temperature=1.3, top_k=1, seed=9, stop_at_eos=False) == greedy
