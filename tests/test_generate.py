"""The one generation loop (edgemoe/generate.py) that Model.generate, ChatSession, the CLI and the
server share: its stop rules, tested here once, and that each caller reports them."""
import pytest

import edgemoe
from edgemoe.generate import CANCELLED, CONTEXT, LENGTH, STOP, Generation
from edgemoe.sampling import Sampler, SamplingParams
from edgemoe.session import ChatSession

GREEDY = SamplingParams(temperature=0.0)


def greedy():
    return Sampler(GREEDY, seed=0)


@pytest.fixture(scope="module")
def demo():
    return edgemoe.load(edgemoe.default_model_path(), threads=1, ctx_size=64)


def run(generation: Generation) -> str:
    return "".join(generation)


def test_a_full_context_ends_the_generation_after_one_more_token(demo):
    prompt = demo.tokenize("It was a truth")
    generation = Generation(demo, prompt, 1000, greedy())
    run(generation)
    # every sampled token is kept; the one the context has no room to evaluate is the last
    assert generation.stats.stop_reason == CONTEXT
    assert len(generation.tokens) == demo.ctx_size - len(prompt) + 1
    assert demo.n_past == demo.ctx_size
    # Model.generate is this loop
    assert demo.generate(prompt, max_tokens=1000, stop_at_eos=False) == generation.tokens


def test_max_tokens_ends_it_before_the_context_does(demo):
    generation = Generation(demo, demo.tokenize("It was"), 5, greedy())
    run(generation)
    assert generation.stats.stop_reason == LENGTH and len(generation.tokens) == 5
    generation = Generation(demo, demo.tokenize("It was"), 0, greedy())
    assert run(generation) == "" and generation.tokens == [] and generation.stats.stop_reason == LENGTH
    with pytest.raises(ValueError):
        Generation(demo, [1, 2], -1, greedy())


def test_a_prompt_longer_than_the_context_is_refused(demo):
    with pytest.raises(edgemoe.ContextLengthError, match="exceed the context size of 64"):
        Generation(demo, [5] * 65, 4, greedy())


def test_stop_ids_end_it_and_are_not_output(demo):
    full = Generation(demo, demo.tokenize("It was a truth"), 12, greedy())
    run(full)
    stop_at = full.tokens[6]
    generation = Generation(demo, demo.tokenize("It was a truth"), 12, greedy(), stop_ids={stop_at})
    run(generation)
    assert generation.stats.stop_reason == STOP
    assert generation.tokens == full.tokens[:full.tokens.index(stop_at)]


def test_stop_strings_cut_the_text_and_are_never_streamed(demo):
    prompt = demo.tokenize("It was a truth")
    full = Generation(demo, prompt, 24, greedy())
    text = run(full)
    assert text == full.text and len(text) > 20
    stop = text[len(text) // 2: len(text) // 2 + 4]  # straddles tokens as often as not
    generation = Generation(demo, prompt, 24, greedy(), stop_strings=[stop, "never appears"])
    pieces = list(generation)
    assert "".join(pieces) == generation.text == text[:text.index(stop)]
    assert generation.stats.stop_reason == STOP
    assert not any(stop in p for p in pieces)


def test_reusing_the_context_evaluates_only_the_new_tokens_and_gives_the_same_reply(demo):
    first = Generation(demo, demo.tokenize("It was a truth"), 6, greedy())
    run(first)
    in_context = first.history[:demo.n_past]  # the last sampled token was never evaluated
    assert len(in_context) == len(first.history) - 1
    follow_up = first.history + demo.tokenize(" universally", add_special_tokens=False)
    reused = Generation(demo, follow_up, 6, greedy(), context=in_context)
    run(reused)
    assert reused.stats.evaluated_tokens == len(follow_up) - len(in_context)
    fresh = Generation(demo, follow_up, 6, greedy())
    run(fresh)
    assert reused.tokens == fresh.tokens
    assert fresh.stats.evaluated_tokens == len(follow_up)


def test_a_cancelled_token_raises_and_says_so(demo):
    token = edgemoe.CancelToken()
    token.cancel()
    generation = Generation(demo, demo.tokenize("It was"), 8, greedy(), cancel=token)
    with pytest.raises(edgemoe.Cancelled):
        run(generation)
    assert generation.stats.stop_reason == CANCELLED and generation.tokens == []


def test_each_caller_reports_a_full_context():
    small = edgemoe.load(edgemoe.default_model_path(), threads=1, ctx_size=48)
    session = ChatSession(small, params=GREEDY, max_tokens=1000)
    for _ in session.send("Tell me a story."):
        pass
    assert session.last.stop_reason == CONTEXT and small.n_past == small.ctx_size
    assert len(session.cached) == small.n_past  # the session knows what the context holds

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from edgemoe.apps.server import Server

    server = Server(small, "demo", defaults={"temperature": 0.0})
    request = server.completion_request({"prompt": "It was a truth", "max_tokens": 1000})
    out = list(server.generate(request, edgemoe.CancelToken(), {}))
    assert out[-1] == ("", "length")  # OpenAI's reason for a full context
    assert server.metrics.completion_tokens == small.ctx_size - len(request.prompt_ids) + 1
