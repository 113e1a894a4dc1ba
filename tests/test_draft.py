"""Speculative decoding (edgemoe/draft.py) changes how fast tokens come, never which tokens.

What makes that possible is checked first: a batch evaluated at once gives every position the
logits evaluating it token by token gives, bit for bit, on every kernel set of this machine. Then
the generation loop with each drafter against plain decoding, greedy and sampled (seed for seed:
the sampler draws once per token either way, so the distributions are the same), and the context
it leaves behind. Then the cache-only routing the cache drafter uses, and the lossy option built
on the same mechanism."""
import numpy as np
import pytest

import edgemoe
import edgemoe.format.container
from edgemoe import _core
from edgemoe.draft import DEFAULT_DRAFT_TOKENS, DraftSwitch, NgramDrafter
from edgemoe.format.model_config import moe_layers
from edgemoe.generate import Generation
from edgemoe.sampling import Sampler, SamplingParams
from edgemoe.session import ChatSession

MODES = ("ngram", "cache", "auto")
# sliding windows (gemma4, gpt_oss), latent attention (deepseek_v3), linear attention's recurrent state
# (qwen3_5_moe, qwen3_next: a rejected draft goes back to a checkpoint), q4k and mxfp4 experts
FIXTURE_WIDTHS = [("mixtral", "8"), ("gemma4", "4k"), ("deepseek_v3", "8"), ("gpt_oss_mxfp4", "mxfp4"),
                  ("qwen3_moe", "4k"), ("qwen3_5_moe", "8"), ("qwen3_next", "f16")]


def _top_k(path) -> int:
    return edgemoe.format.container.open_container(path).config["top_k"]


def _tight(path, **options):
    """The model with one layer's top-k + 1 expert slots: drafts from cached experts only are
    often wrong, and every verify pass reads. draft_min_p 0: the cache drafter drafts even where
    random weights leave it unsure."""
    return edgemoe.load(path, threads=2, cache_experts=_top_k(path) + 1, draft_min_p=0.0, **options)


def _roomy(path):
    """Every expert cached: the cache drafter computes what the model does, so every greedy draft
    is kept (the paths where drafts run to the end of a round, of max_tokens or of a stop)."""
    return edgemoe.load(path, threads=2, draft_min_p=0.0)


def _generate(model, ids, draft, n=40, temperature=0.0, seed=0, stop_ids=()):
    g = Generation(model, ids, n, Sampler(SamplingParams(temperature=temperature, top_k=0), seed), draft=draft,
                   stop_ids=stop_ids)
    list(g)
    return g


@pytest.fixture(params=_core.available_isas())
def isa(request):
    before = _core.current_isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.mark.parametrize("name,bits", FIXTURE_WIDTHS)
def test_a_batch_gives_each_position_the_logits_of_one_token_at_a_time(converted, name, bits, isa):
    model = _tight(converted(name, bits))
    ids = np.random.default_rng(1).integers(0, model.config["vocab"], 24).tolist()
    model.reset()
    model.eval(ids[:16])
    one_by_one = np.stack([model.eval([t]) for t in ids[16:]])
    model.truncate(16)
    together = model.eval(ids[16:], all_logits=True)
    assert together.shape == one_by_one.shape
    assert np.array_equal(together, one_by_one)  # measured: equal on every fixture and kernel set


@pytest.mark.parametrize("name,bits", FIXTURE_WIDTHS)
def test_greedy_output_and_context_are_those_of_plain_decoding(converted, name, bits):
    model = _tight(converted(name, bits))
    ids = np.random.default_rng(2).integers(0, model.config["vocab"], 12).tolist()
    ids = ids + ids  # a repeat gives prompt lookup something to draft
    plain = _generate(model, ids, "none")
    plain_past = model.n_past
    for mode in MODES:
        g = _generate(model, ids, mode)
        assert g.tokens == plain.tokens, mode
        assert g.stats.stop_reason == plain.stats.stop_reason
        assert model.n_past == plain_past  # rejected drafts are cut from the context
        assert g.stats.draft["rounds"] > 0 or mode == "ngram"


def test_sampled_output_is_that_of_plain_decoding_seed_for_seed(converted):
    model = _tight(converted("qwen3_moe", "8"))
    ids = np.random.default_rng(3).integers(0, model.config["vocab"], 10).tolist() * 2
    for seed in range(3):
        plain = _generate(model, ids, "none", temperature=1.0, seed=seed)
        for mode in MODES:
            assert _generate(model, ids, mode, temperature=1.0, seed=seed).tokens == plain.tokens


@pytest.fixture(scope="module")
def demo():
    return edgemoe.load(edgemoe.default_model_path(), threads=2, ctx_size=128)


def test_drafts_are_kept_on_text_that_repeats(demo):
    ids = demo.tokenize("The fox")  # the demo model, greedy, soon repeats "and the house of the LORD"
    g = _generate(demo, ids, "ngram", n=60)
    assert g.tokens == _generate(demo, ids, "none", n=60).tokens
    assert g.stats.draft["accepted"] > 0


def test_a_full_context_and_max_tokens_end_drafting_as_they_end_plain_decoding(converted):
    path = converted("mixtral", "8")
    for ctx, n in [(30, 64), (64, 9), (64, 1), (64, 0)]:
        model = edgemoe.load(path, threads=2, ctx_size=ctx, cache_experts=3, draft_min_p=0.0)
        ids = np.random.default_rng(4).integers(0, model.config["vocab"], 10).tolist() * 2
        plain = _generate(model, ids, "none", n=n)
        past = model.n_past
        for mode in MODES:
            g = _generate(model, ids, mode, n=n)
            assert (g.tokens, g.stats.stop_reason, model.n_past) == (plain.tokens, plain.stats.stop_reason, past)


def test_a_chat_with_drafting_reuses_its_context_like_one_without(converted):
    path = converted("qwen3_moe", "8")
    replies, contexts = {}, {}
    for mode in ("none", "ngram", "cache"):
        session = ChatSession(edgemoe.load(path, threads=2, cache_experts=9, draft=mode, draft_min_p=0.0),
                              max_tokens=12)
        replies[mode] = ["".join(session.send(text)) for text in ("hello there", "and again", "once more")]
        contexts[mode] = session.cached
        assert len(session.cached) == session.model.n_past
    assert replies["ngram"] == replies["cache"] == replies["none"]
    assert contexts["ngram"] == contexts["cache"] == contexts["none"]


def test_prompt_lookup_proposes_what_followed_the_latest_earlier_occurrence():
    d = NgramDrafter(max_ngram=3, min_ngram=2)
    assert d.propose([1, 2, 3, 4, 1, 2], 2) == [3, 4]
    assert d.propose([1, 2, 3, 4, 1, 2, 9, 1, 2], 3) == [9, 1, 2]  # the latest occurrence wins
    assert d.propose([5, 6, 7], 4) == []  # the history's own ending is no match
    assert NgramDrafter().propose([8, 8], 3) == []


def test_the_switch_pauses_drafting_that_is_slower_per_token_than_plain_steps():
    s = DraftSwitch(pause=8)
    assert not s.want_draft()  # plain steps are timed first
    s.plain_step(0.010)
    assert s.want_draft()
    s.draft_round(0.030, tokens=2)  # 15 ms per token: slower
    assert not s.want_draft()
    for _ in range(8):
        s.plain_step(0.010)
    assert s.want_draft()  # tried again
    s.draft_round(0.030, tokens=4)  # 7.5 ms per token: it pays
    assert s.want_draft()
    s.draft_round(0.030, tokens=4)
    assert not s.want_draft()  # a plain step is timed again every `pause` tokens


def test_unknown_draft_modes_are_refused(demo):
    with pytest.raises(ValueError, match="draft must be one of"):
        edgemoe.load(edgemoe.default_model_path(), draft="medusa")
    with pytest.raises(ValueError, match="draft must be one of"):
        demo.generate("hi", max_tokens=2, draft="medusa")


def test_the_cache_drafter_stops_where_it_is_unsure(converted):
    """Random weights give flat next-token distributions: at min_p 0.75 little is drafted (and
    where nothing is, the token is evaluated alone after the drafting pass is cut)."""
    from edgemoe.draft import CacheDrafter

    model = _tight(converted("qwen3_moe", "8"))
    model.eval(list(range(1, 9)))
    assert CacheDrafter(model, 0.75).propose(9, 4) == []
    ids = list(range(1, 9))
    sure = _generate(edgemoe.load(converted("qwen3_moe", "8"), threads=2, cache_experts=3), ids, "cache")
    unsure = _generate(model, ids, "cache")  # draft_min_p 0
    assert sure.stats.draft["drafted"] < unsure.stats.draft["drafted"] / 4
    assert sure.tokens == unsure.tokens == _generate(model, ids, "none").tokens


@pytest.mark.parametrize("predictor", ["none", "gate"])
def test_cache_drafting_reads_nothing(converted, predictor):
    from edgemoe.draft import CacheDrafter

    model = _tight(converted("qwen3_moe", "8"), predictor=predictor)
    model.eval(list(range(1, 9)))
    before = model.stats()
    drafts = CacheDrafter(model, 0.0).propose(9, 4)
    after = model.stats()
    assert len(drafts) == 4
    assert after["bytes_read"] == before["bytes_read"] and after["cache_misses"] == before["cache_misses"]
    assert after.get("prefetch_issued", 0) == before.get("prefetch_issued", 0)
    assert after["skipped_choices"] == before["skipped_choices"]  # drafting is verified, not lossy
    model.truncate(8)
    assert model.eval([9]).shape == (model.config["vocab"],) and model.stats()["bytes_read"] > after["bytes_read"]


def test_drafts_kept_to_the_end_stop_where_plain_decoding_stops(converted):
    """With every expert cached every greedy draft is kept, so rounds end at max_tokens, at a
    full context and at a stop id that was itself a kept draft."""
    path = converted("qwen3_moe", "8")
    model = _roomy(path)
    ids = list(range(3, 13))
    plain = _generate(model, ids, "none", n=30)
    # a stop id first sampled where a kept draft was (every round: the token, then its drafts)
    per_round = DEFAULT_DRAFT_TOKENS + 1
    at = next(i for i, t in enumerate(plain.tokens) if i % per_round and t not in plain.tokens[:i])
    stop = {plain.tokens[at]}
    for n, stop_ids in [(30, ()), (30, stop), (7, ())]:
        want = _generate(model, ids, "none", n=n, stop_ids=stop_ids)
        past = model.n_past
        g = _generate(model, ids, "cache", n=n, stop_ids=stop_ids)
        kept, drafted = g.stats.draft["accepted"], g.stats.draft["drafted"]
        assert 0 < kept and drafted - kept < per_round  # only drafts after where it stopped are not kept
        assert (g.tokens, g.stats.stop_reason, model.n_past) == (want.tokens, want.stats.stop_reason, past)
    small = edgemoe.load(path, threads=2, draft_min_p=0.0, ctx_size=len(ids) + 9)
    want = _generate(small, ids, "none", n=30)
    past = small.n_past
    g = _generate(small, ids, "cache", n=30)
    assert (g.tokens, g.stats.stop_reason, small.n_past) == (want.tokens, "context", past)


def test_dynamic_rope_models_draft_only_where_a_batch_computes_what_tokens_do(tmp_path):
    """Dynamic NTK rope changes its frequencies with the length of the pass past the trained
    length (16 tokens in this fixture): drafting stops there, and the output is plain decoding's."""
    from conftest import FIXTURES
    from edgemoe.convert import convert_hf

    path = str(tmp_path / "dynamic.emoe")
    convert_hf(str(FIXTURES / "mixtral_dynamic"), path, bits="f32", progress=False)
    model = edgemoe.load(path, threads=2, draft_min_p=0.0, kv_cache="f32")
    ids = [5, 9, 2, 7, 5, 9]
    plain = _generate(model, ids, "none", n=30)
    g = _generate(model, ids, "cache", n=30)
    assert g.tokens == plain.tokens
    assert 0 < g.stats.draft["drafted"] <= 16 - len(ids)


def test_skipping_light_missed_experts_is_lossy_and_labelled(converted):
    path = converted("qwen3_moe", "8")
    ids = np.random.default_rng(5).integers(0, 300, 16).tolist()
    exact = edgemoe.load(path, threads=2, cache_experts=9)
    zero = edgemoe.load(path, threads=2, cache_experts=9, skip_missed_below=0.0)
    assert np.array_equal(exact.logits(ids), zero.logits(ids))
    with pytest.warns(UserWarning, match="LOSSY"):
        lossy = edgemoe.load(path, threads=2, cache_experts=9, skip_missed_below=1.0)
    out = lossy.logits(ids)
    assert lossy.stats()["skipped_choices"] > 0
    assert lossy.stats()["bytes_read"] < exact.stats()["bytes_read"]
    assert not np.allclose(out, exact.logits(ids), atol=1e-3)
    assert lossy.info()["lossy"] == {"skip_missed_below": 1.0}
    with pytest.raises(ValueError, match="skip_missed_below"):
        edgemoe.load(path, skip_missed_below=1.5)


@pytest.mark.parametrize("name", ["qwen3_moe", "deepseek_v3"])
def test_skipped_experts_give_their_weight_to_the_token_s_other_experts(tmp_path, name):
    """With every expert of a layer computing the same function, leaving some out and scaling
    the others up to the token's total weight changes nothing (within f32 rounding; without the
    scaling the MoE output would shrink by the skipped share, and DeepSeek-V3's sigmoid weights
    times routed_scaling_factor 2.5 do not sum to 1, so scaling to 1 would be wrong too)."""
    import re
    from safetensors.numpy import load_file, save_file

    from conftest import fixture_folder
    from edgemoe.convert import convert_hf

    src = fixture_folder(tmp_path, name)
    weights = load_file(str(src / "model.safetensors"))
    for tensor in list(weights):
        m = re.match(r"(model\.layers\.\d+\.mlp\.experts\.)\d+(\..*)", tensor)
        if m:
            weights[tensor] = weights[m.group(1) + "0" + m.group(2)].copy()
    save_file(weights, str(src / "model.safetensors"))
    path = str(tmp_path / "same.emoe")
    convert_hf(str(src), path, bits="f32", progress=False)
    ids = np.random.default_rng(6).integers(0, 300, 8).tolist()
    slots = _top_k(path) + 1
    exact = edgemoe.load(path, threads=2, kv_cache="f32", cache_experts=slots).logits(ids)
    for lossy_option in ({"skip_missed_below": 1.0}, {"active_experts": 1}):
        with pytest.warns(UserWarning, match="LOSSY"):
            lossy = edgemoe.load(path, threads=2, kv_cache="f32", cache_experts=slots, **lossy_option)
        out = lossy.logits(ids)
        assert lossy.stats()["skipped_choices"] > 0
        np.testing.assert_allclose(out, exact, rtol=0, atol=1e-5)  # measured: 1.4e-6


def test_fewer_active_experts_is_lossy_labelled_and_bounded(converted):
    path = converted("qwen3_moe", "8")
    ids = np.random.default_rng(7).integers(0, 300, 12).tolist()
    exact = edgemoe.load(path, threads=2).logits(ids)
    top_k = _top_k(path)
    assert np.array_equal(edgemoe.load(path, threads=2, active_experts=top_k).logits(ids), exact)
    with pytest.warns(UserWarning, match="LOSSY: active_experts=1"):
        fewer = edgemoe.load(path, threads=2, active_experts=1)
    assert not np.allclose(fewer.logits(ids), exact, atol=1e-3)
    assert fewer.stats()["skipped_choices"] == len(ids) * (top_k - 1) * len(moe_layers(fewer.config))
    assert fewer.info()["lossy"] == {"active_experts": 1}
    with pytest.raises(ValueError, match="active_experts must be at most"):
        edgemoe.load(path, active_experts=top_k + 1)


def test_the_server_drafts_when_asked_and_counts_it():
    from edgemoe.apps.cli import build_parser, make_server
    from edgemoe.api import CancelToken

    replies, servers = {}, {}
    for mode in ("none", "ngram"):
        args = build_parser().parse_args(["serve", "--threads", "1", "--ctx-size", "256", "--temp", "0",
                                          "--draft", mode])
        server = servers[mode] = make_server(args)
        req = server.completion_request({"prompt": "The fox", "max_tokens": 60})
        replies[mode] = "".join(piece for piece, _ in server.generate(req, CancelToken(), {}))
    assert replies["ngram"] == replies["none"]
    metrics = servers["ngram"].metrics_dict()
    assert metrics["draft"] == "ngram" and metrics["draft_accepted"] > 0
    assert servers["none"].metrics_dict()["draft_drafted"] == 0


def test_auto_pauses_a_costly_drafter_and_keeps_the_one_that_pays(demo, monkeypatch):
    """Times from a fake clock: prompt lookup's rounds come out at 5 ms per token against plain
    steps' 10 ms, the cache drafter's at 50 ms; only the cache drafter is paused."""
    from edgemoe import draft

    clock = [0.0]
    monkeypatch.setattr(draft.time, "perf_counter", lambda: clock[0])
    d = draft.Drafting(demo, "auto")
    demo.reset()
    demo.eval([5, 6, 7])

    def step(ms: float, history, kept: int = 0):
        drafts = d.propose(history, n_past=demo.n_past, room=8)
        demo.truncate(3)
        d.accepted += min(kept, len(drafts))
        clock[0] += ms / 1e3
        d.step_done()
        return drafts

    d.step_done()  # the first decode pass starts the clock
    assert step(10, [5, 6, 7, 8]) == []  # nothing measured yet: a plain step
    assert step(20, [1, 2, 3, 9, 1, 2], kept=3) == [3, 9, 1, 2]  # lookup: 4 tokens in 20 ms
    assert d.switches["ngram"].want_draft() and d.switches["cache"].want_draft()
    step(50, [5, 6, 7, 8])  # no lookup match: the cache drafter's pass, nothing kept
    assert not d.switches["cache"].want_draft()
    assert d.switches["ngram"].want_draft()
