"""edgemoe serve, driven by the official `openai` client on a real loopback socket."""
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")
openai = pytest.importorskip("openai", reason="the openai client is not installed (test extra)")
import httpx  # noqa: E402

from edgemoe.apps.cli import build_parser, make_server  # noqa: E402
from edgemoe.apps.server import create_app  # noqa: E402

KEY = "secret-test-key"


@pytest.fixture(scope="module")
def base_url():
    args = build_parser().parse_args(["serve", "--api-key", KEY, "--threads", "1", "--ctx-size", "256",
                                      "--temp", "0"])
    server = make_server(args)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)


MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


def test_models_and_chat(client):
    assert [m.id for m in client.models.list().data] == ["demo"]
    r = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=12, seed=3)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content and c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    again = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=12, seed=3)
    assert again.choices[0].message.content == c.message.content  # greedy (--temp 0): reproducible


def test_streaming_matches_non_streaming(client):
    full = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=16, temperature=0.7,
                                          seed=11)
    pieces, finish, usage = [], None, None
    for chunk in client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=16, temperature=0.7,
                                                seed=11, stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason and usage.completion_tokens == full.usage.completion_tokens


def test_completions_and_stop(client):
    r = client.completions.create(model="demo", prompt="And the LORD said unto Moses,", max_tokens=20,
                                  temperature=0)
    text = r.choices[0].text
    assert text and r.object == "text_completion"
    word = text.strip().split()[0]
    stopped = client.completions.create(model="demo", prompt="And the LORD said unto Moses,", max_tokens=20,
                                        temperature=0, stop=[word])
    assert word not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    assert text.startswith(stopped.choices[0].text)


def test_errors(base_url, client):
    auth = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0).models.list()
    r = httpx.post(base_url + "/v1/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo", messages=MESSAGES, temperature=7)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo", messages=[{"role": "wizard", "content": "hi"}])
    r = httpx.post(base_url + "/v1/chat/completions", headers=auth,
                   json={"model": "demo", "messages": [{"role": "user", "content": "word " * 400}]})
    assert r.status_code == 413 and r.json()["error"]["type"] == "context_length_exceeded"
    assert httpx.get(base_url + "/health").json()["status"] == "ok"  # still serving


def test_disconnect_mid_stream_frees_the_engine(base_url, client):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 200, "stream": True, "temperature": 0.9}
    before = httpx.get(base_url + "/metrics").json()
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, headers=auth, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                json.loads(line[6:])
                break  # leave after the first chunk
    # the next request is served (the abandoned generation stopped and released the engine)
    r = client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=4)
    assert r.choices[0].message.content is not None
    after = httpx.get(base_url + "/metrics").json()
    assert after["requests"] >= before["requests"] + 1
    # where the last reply's decode time went, per token (a reply of one token has no decode step)
    if r.usage.completion_tokens >= 2:
        assert after["last_decode_compute_ms"] > 0 and after["last_decode_io_wait_ms"] >= 0
        assert 0 <= after["last_decode_cache_hit_rate"] <= 1 and after["last_decode_mb_read"] >= 0
    assert after["completion_tokens"] - before["completion_tokens"] < 200 + 4  # the long one was cut short
