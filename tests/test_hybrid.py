"""Hybrid linear-attention MoE models (Qwen3-Next, Qwen3.5-MoE; docs/HYBRID_MODELS.md): what the match
with transformers rests on, prefill in batches, the recurrent state as context (checkpoints,
truncation, chat turns, cancellation), the memory plan, and hostile configs. Their f32 logits and
greedy continuations against transformers are in test_parity.py, drafting in test_draft.py."""
import threading

import numpy as np
import pytest

import edgemoe
from conftest import FIXTURES, assert_conversion_refused, reference, rel_error, small_batch_engine
from edgemoe import _core
from edgemoe.convert import arch_qwen3_next, convert_hf
from edgemoe.generate import common_prefix
from edgemoe.sampling import SamplingParams
from edgemoe.session import ChatSession

HYBRIDS = ["qwen3_next", "qwen3_5_moe"]


def f32(path, **options):
    return edgemoe.load(str(path), threads=2, kv_cache="f32", **options)


def planted_error(tmp_path, monkeypatch, name, attribute, value):
    """The worst relative logit error against transformers after converting with one part of the
    mapping replaced (the features the match rests on)."""
    monkeypatch.setattr(getattr(arch_qwen3_next, attribute[0]), attribute[1], value)
    out = tmp_path / "planted.emoe"
    convert_hf(str(FIXTURES / name), str(out), bits="f32", progress=False)
    ref = reference(name)
    return rel_error(f32(out).logits(ref["input_ids"].tolist()), ref["logits"]).max()


_GATED_ATTENTION = arch_qwen3_next._HybridQwen._gated_attention


def _no_gate_split(cfg, p, c, H):
    """q_proj's rows taken as all queries, then all gates (not per head)."""
    plan = _GATED_ATTENTION(cfg, p, c, H)
    rows = cfg["n_heads"] * cfg["head_dim"]
    return [r._replace(take=(lambda w: w[:rows]) if r.name.endswith(".wq") else
                       (lambda w: w[rows:]) if r.name.endswith(".wq_gate") else r.take) for r in plan]


def _flat_qkvz(self, a, c, H, Nk, Nv, dk, dv, hf):
    """Qwen3-Next's in_proj_qkvz read as if it were laid out like Qwen3.5's (no regrouping)."""
    KD, VD = Nk * dk, Nv * dv
    w = f"{a}.in_proj_qkvz.weight"
    G = 2 * KD + 2 * VD
    return [(f"{c}.lin_qkv", w, (G, H), "resident", lambda x: x[:2 * KD + VD]),
            (f"{c}.lin_z", w, (G, H), "resident", lambda x: x[2 * KD + VD:]),
            (f"{c}.lin_b", f"{a}.in_proj_ba.weight", (2 * Nv, H), "resident", lambda x: x[:Nv]),
            (f"{c}.lin_a", f"{a}.in_proj_ba.weight", (2 * Nv, H), "resident", lambda x: x[Nv:])]


@pytest.mark.parametrize("name,attribute,value", [
    ("qwen3_5_moe", ("_HybridQwen", "norm_take"), None),                      # norms as plain weights
    ("qwen3_5_moe", ("_HybridQwen", "_gated_attention"), staticmethod(_no_gate_split)),
    ("qwen3_next", ("Qwen3Next", "linear_projections"), _flat_qkvz),
])
def test_each_hybrid_feature_is_what_the_match_rests_on(tmp_path, monkeypatch, name, attribute, value):
    # The match itself: below 1e-4 (test_parity.py). Measured 0.3-1.2 with each of these wrong.
    assert planted_error(tmp_path, monkeypatch, name, attribute, value) > 0.05


@pytest.mark.parametrize("name", HYBRIDS)
def test_prefill_in_small_batches_is_one_token_at_a_time(converted, name):
    # The 80-token prompt in batches of 7 and token by token: the linear layers carry their state
    # across batches exactly (each head runs its tokens in order either way).
    ids = reference(name)["input_ids"].tolist()
    whole = f32(converted(name)).logits(ids)
    engine, vocab = small_batch_engine(converted(name), max_batch=7, ctx_size=128)
    batched = np.asarray(engine.eval(ids, vocab, None, True)).reshape(len(ids), vocab)
    engine.reset()
    single = np.stack([np.asarray(engine.eval([t], vocab)) for t in ids])
    np.testing.assert_array_equal(batched, whole)
    np.testing.assert_array_equal(single, whole)


@pytest.mark.parametrize("name", HYBRIDS)
def test_truncation_goes_back_to_the_newest_checkpoint_and_resumes_exactly(converted, name):
    ids = reference(name)["input_ids"].tolist()
    whole = f32(converted(name)).logits(ids)
    model = f32(converted(name))
    model.logits(ids[:50])       # checkpoints at the ends of each call of several tokens: 50...
    model.eval(ids[50:60])       # ...and 60
    model.eval([ids[60]])        # (single tokens take none)
    model.truncate(58)
    assert model.n_past == 50
    np.testing.assert_array_equal(model.eval(ids[50:70]), whole[69])
    model.truncate(30)           # before every checkpoint: from the start
    assert model.n_past == 0
    np.testing.assert_array_equal(model.eval(ids[:40]), whole[39])


def test_the_cache_drafters_passes_go_back_to_where_they_started(converted):
    # The cache drafter runs one-token passes on cached experts only, then the context goes back to
    # where they began: a checkpoint there, so no real token is evaluated again.
    model = f32(converted("qwen3_next"))
    ids = reference("qwen3_next")["input_ids"].tolist()
    model.logits(ids[:10])
    for t in ids[10:13]:
        model.eval([t])
    engine, vocab = model._engine, model.config["vocab"]
    for t in ids[13:16]:
        engine.eval([t], vocab, None, False, True)  # cached_only
    model.truncate(13)
    assert model.n_past == 13


def test_without_checkpoints_truncation_starts_over(converted):
    model = f32(converted("qwen3_5_moe"), state_checkpoints=0)
    ids = reference("qwen3_5_moe")["input_ids"].tolist()
    model.logits(ids[:20])
    model.truncate(19)
    assert model.n_past == 0


def test_the_oldest_checkpoint_gives_way(converted):
    ids = reference("qwen3_next")["input_ids"].tolist()
    model = f32(converted("qwen3_next"), state_checkpoints=2)
    for end in (10, 20, 30, 40):   # checkpoints at 10, 20, 30, 40: two slots keep 30 and 40
        model.eval(ids[end - 10:end])
    model.truncate(25)
    assert model.n_past == 0


@pytest.mark.parametrize("name", HYBRIDS)
def test_a_chat_reuses_its_state_and_answers_as_a_fresh_evaluation(converted, name):
    # Several turns: each reply equals that of a session re-evaluating the whole conversation, and
    # from the second turn on only the new turn's tokens are evaluated.
    texts = ["hello there", "and again, please", "once more with feeling", "last one"]
    model = f32(converted(name), ctx_size=256)
    session = ChatSession(model, SamplingParams(temperature=0.0), max_tokens=6)
    fresh_model = f32(converted(name), ctx_size=256)
    fresh = ChatSession(fresh_model, SamplingParams(temperature=0.0), max_tokens=6)
    for i, text in enumerate(texts):
        before, previous_prompt = list(session.cached), session.last.prompt_tokens
        reply = "".join(session.send(text))
        fresh.cached = []  # re-evaluate everything
        assert reply == "".join(fresh.send(text))
        fresh.messages = list(session.messages)
        prompt = session._render(session.messages[:-1])
        kept = len(prompt) - session.last.evaluated_tokens
        # Back no further than the previous prompt's end (a checkpoint), where the previous reply
        # re-tokenizes differently (measured: 20 of a common prefix of 21, 56 of 57).
        assert (previous_prompt if i else 0) <= kept <= common_prefix(before, prompt)
        assert len(session.cached) == model.n_past


def test_cancelled_evaluation_leaves_a_consistent_context(converted):
    # Cancelled at any moment (between layers, part way through a batch), the context holds
    # n_past tokens whose state is exactly theirs: evaluating the rest gives the fresh logits.
    name = "qwen3_5_moe"
    ids = reference(name)["input_ids"].tolist()
    whole = f32(converted(name)).logits(ids)
    model = f32(converted(name), ctx_size=128)
    for delay in (0.0, 0.0005, 0.001, 0.002, 0.004):
        model.reset()
        model.eval(ids[:20])
        cancel = edgemoe.CancelToken()
        timer = threading.Timer(delay, cancel.cancel)
        timer.start()
        try:
            for t in ids[20:60]:
                model.eval([t], cancel=cancel)
        except edgemoe.Cancelled:
            pass
        timer.join()
        assert model.n_past <= 60
        np.testing.assert_array_equal(model.eval(ids[model.n_past:70]), whole[69])


@pytest.mark.parametrize("name", HYBRIDS)
def test_the_plan_counts_the_state_and_the_engine_holds_the_plan(converted, name):
    model = edgemoe.load(converted(name), threads=2, ctx_size=64)
    assert model._engine.allocated_bytes == model.plan.total_bytes
    cfg = model.config
    state = 4 * (cfg["linear_value_heads"] * cfg["linear_key_head_dim"] * cfg["linear_value_head_dim"] +
                 (2 * cfg["linear_key_heads"] * cfg["linear_key_head_dim"] +
                  cfg["linear_value_heads"] * cfg["linear_value_head_dim"]) * (cfg["linear_conv_kernel"] - 1))
    layers = model.info()["layers"]
    for l, layer in enumerate(layers):
        if l in cfg["linear_layers"]:
            assert "Gated DeltaNet" in layer["kind"]
            assert layer["kv_cache_bytes"] == state * (1 + 2)  # the live state and two checkpoints
        else:
            assert layer["kind"].startswith("gated full attention")
    fewer = edgemoe.load(converted(name), threads=2, ctx_size=64, state_checkpoints=0)
    assert model.plan.kv_cache_bytes - fewer.plan.kv_cache_bytes == 2 * state * len(cfg["linear_layers"])
    assert fewer._engine.allocated_bytes == fewer.plan.total_bytes


@pytest.mark.parametrize("changes,message", [
    ({"layer_types": ["linear_attention", "full_attention"]}, "layer_types must name 4 layers"),
    ({"layer_types": ["linear_attention", "sliding_attention", "linear_attention", "full_attention"]},
     "layer_types must name 4 layers, each one of"),
    ({"layer_types": ["linear_attention"] * 4}, "every layer is linear attention"),
    ({"linear_num_value_heads": 5}, "not a multiple of linear_num_key_heads"),
    ({"linear_num_key_heads": 0}, "linear_num_key_heads = 0 is not a positive integer"),
    ({"linear_conv_kernel_dim": 100}, "linear_conv_kernel"),
    ({"linear_key_head_dim": 5000}, "linear_key_head_dim"),
    ({"linear_value_heads": 4000, "linear_num_value_heads": 1024, "linear_num_key_heads": 1024,
      "linear_value_head_dim": 4096, "linear_key_head_dim": 4096}, "too large"),
    ({"attention_bias": True}, "attention_bias is not supported"),
    ({"full_attention_interval": 0, "layer_types": None}, "full_attention_interval"),
])
def test_hostile_hybrid_configs_are_refused_before_writing(tmp_path, changes, message):
    assert_conversion_refused(tmp_path, "qwen3_5_moe", changes, message)


@pytest.mark.parametrize("changes,message", [
    ({"linear_layers": [0]}, "linear attention needs"),
    ({"linear_key_heads": 2}, "linear_layers names none"),
    ({"linear_layers": [1, 0], "linear_conv_kernel": 4, "linear_key_heads": 1, "linear_value_heads": 1,
      "linear_key_head_dim": 8, "linear_value_head_dim": 8}, "ascending"),
    ({"linear_layers": [0, 9], "linear_conv_kernel": 4, "linear_key_heads": 1, "linear_value_heads": 1,
      "linear_key_head_dim": 8, "linear_value_head_dim": 8}, "holds layer 9"),
])
def test_a_container_config_with_bad_linear_fields_is_refused(converted, changes, message):
    cfg = dict(edgemoe.format.container.open_container(converted("qwen3_moe")).config, **changes)
    with pytest.raises(edgemoe.FormatError, match=message):
        _core.check_config(cfg)


def test_the_server_answers_a_hybrid_model_as_generate_does(converted):
    # Each request starts from the empty state; one cut short by its client leaves nothing behind.
    from edgemoe.api import CancelToken
    from edgemoe.apps.server import Server

    model = f32(converted("qwen3_5_moe"), ctx_size=256)
    server = Server(model, "hybrid", defaults={"temperature": 0.0})
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}

    def answer(cancel=None):
        text = "".join(piece for piece, _ in server.generate(server.chat_request(body), cancel or CancelToken(), {}))
        return text

    first = answer()
    cancelled = CancelToken()
    cancelled.cancel()
    assert answer(cancelled) == ""
    assert answer() == first
    ids = server.chat_request(body).prompt_ids
    assert model.detokenize(model.generate(ids, max_tokens=8, stop_at_eos=False)).startswith(first)


def test_auto_bits_measure_experts_behind_the_norm_the_engine_applies():
    # --bits auto replays each expert's input as the post-attention norm of the residual stream:
    # for these models that norm multiplies by 1 + w, as the container stores it.
    import json

    from safetensors.numpy import load_file

    from edgemoe.offline.calibration import expert_input_norms
    from edgemoe.convert.hf import open_checkpoint, pick_arch

    src = FIXTURES / "qwen3_5_moe"
    hf_cfg = json.loads((src / "config.json").read_text())
    arch = pick_arch(hf_cfg)
    norms = expert_input_norms(open_checkpoint(str(src), hf_cfg), arch, arch.config(hf_cfg))
    hf = load_file(str(src / "model.safetensors"))
    for l in range(4):
        np.testing.assert_array_equal(norms[l], hf[f"model.layers.{l}.post_attention_layernorm.weight"] + np.float32(1))


def test_value_heads_wider_than_every_other_activation(tmp_path):
    # A linear layer's output projection reads value_heads x value_head_dim values per token: here
    # 256, wider than hidden (64), the attention (48) and the MLPs (40), so the buffer its input is
    # quantized into must be sized for it (under the sanitizers, test_sanitizers.py, an undersized
    # one is a heap overflow). Random weights of the new widths; prefill equals token by token.
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    src = tmp_path / "wide"
    shutil.copytree(FIXTURES / "qwen3_5_moe", src)
    cfg = json.loads((src / "config.json").read_text())
    Nk, Nv, d, H, Kc = cfg["linear_num_key_heads"], 32, cfg["linear_value_head_dim"], cfg["hidden_size"], 4
    cfg["linear_num_value_heads"] = Nv
    (src / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(5)
    conv = 2 * Nk * d + Nv * d
    shapes = {"in_proj_qkv.weight": (conv, H), "in_proj_z.weight": (Nv * d, H), "in_proj_b.weight": (Nv, H),
              "in_proj_a.weight": (Nv, H), "conv1d.weight": (conv, 1, Kc), "dt_bias": (Nv,), "A_log": (Nv,),
              "out_proj.weight": (H, Nv * d)}
    for name in list(tensors):
        for suffix, shape in shapes.items():
            if name.endswith("linear_attn." + suffix):
                tensors[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    save_file(tensors, str(src / "model.safetensors"))
    out = tmp_path / "wide.emoe"
    convert_hf(str(src), str(out), bits="8", progress=False)
    ids = reference("qwen3_5_moe")["input_ids"].tolist()[:40]
    whole = f32(out).logits(ids)
    engine, vocab = small_batch_engine(out, max_batch=40, ctx_size=64)
    single = np.stack([np.asarray(engine.eval([t], vocab)) for t in ids])
    np.testing.assert_array_equal(single, whole)
    assert np.isfinite(whole).all()


def _with_mtp_head(tmp_path, stacked: bool):
    """The Qwen3.5 fixture with a random multi-token-prediction head (mtp.*, one layer) added, as
    the released checkpoints carry one: experts per expert or stacked."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    src = tmp_path / ("mtp-stacked" if stacked else "mtp")
    shutil.copytree(FIXTURES / "qwen3_5_moe", src)
    cfg = json.loads((src / "config.json").read_text())
    H, E, I, S = cfg["hidden_size"], cfg["num_experts"], cfg["moe_intermediate_size"], cfg["shared_expert_intermediate_size"]
    nh, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    shapes = {"mtp.fc.weight": (H, 2 * H), "mtp.pre_fc_norm_embedding.weight": (H,),
              "mtp.pre_fc_norm_hidden.weight": (H,), "mtp.norm.weight": (H,)}
    p = "mtp.layers.0"
    shapes.update({f"{p}.input_layernorm.weight": (H,), f"{p}.post_attention_layernorm.weight": (H,),
                   f"{p}.self_attn.q_proj.weight": (nh * 2 * hd, H), f"{p}.self_attn.k_proj.weight": (kv * hd, H),
                   f"{p}.self_attn.v_proj.weight": (kv * hd, H), f"{p}.self_attn.o_proj.weight": (H, nh * hd),
                   f"{p}.self_attn.q_norm.weight": (hd,), f"{p}.self_attn.k_norm.weight": (hd,),
                   f"{p}.mlp.gate.weight": (E, H), f"{p}.mlp.shared_expert.gate_proj.weight": (S, H),
                   f"{p}.mlp.shared_expert.up_proj.weight": (S, H), f"{p}.mlp.shared_expert.down_proj.weight": (H, S),
                   f"{p}.mlp.shared_expert_gate.weight": (1, H)})
    if stacked:
        shapes.update({f"{p}.mlp.experts.gate_up_proj": (E, 2 * I, H), f"{p}.mlp.experts.down_proj": (E, H, I)})
    else:
        for e in range(E):
            shapes.update({f"{p}.mlp.experts.{e}.gate_proj.weight": (I, H), f"{p}.mlp.experts.{e}.up_proj.weight": (I, H),
                           f"{p}.mlp.experts.{e}.down_proj.weight": (H, I)})
    rng = np.random.default_rng(7)
    tensors = load_file(str(src / "model.safetensors"))
    head = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    save_file({**tensors, **head}, str(src / "model.safetensors"))
    return src, head


@pytest.mark.parametrize("stacked", [False, True])
def test_a_multi_token_prediction_head_is_kept_and_not_loaded(tmp_path, converted, stacked):
    from edgemoe.format.container import open_container

    src, head = _with_mtp_head(tmp_path, stacked)
    out = tmp_path / "mtp.emoe"
    convert_hf(str(src), str(out), bits="f32", progress=False)
    c, plain = open_container(str(out)), open_container(converted("qwen3_5_moe"))
    kept = {n: t for n, t in c.tensors.items() if n.startswith(_core.KEPT_FOR_LATER_PREFIX)}
    assert len(kept) == 4 + 14 + 3 * c.config["n_experts"]  # fc and 3 norms; a layer of 14; experts
    # loaded: the tensors the plain conversion has, up to its page padding
    assert plain.sections["resident"]["size"] - 4096 < c.resident_loaded <= plain.sections["resident"]["size"]
    assert min(t["offset"] for t in kept.values()) >= c.resident_loaded

    def stored(name):  # an f32 tensor's values, read from the file
        t = c.tensors[name]
        data = np.fromfile(str(out), np.float32, int(np.prod(t["shape"])), offset=c.sections["resident"]["offset"] +
                           t["offset"])
        return data.reshape(t["shape"])

    hd, I = c.config["head_dim"], c.config["expert_intermediate"]
    q = head["mtp.layers.0.self_attn.q_proj.weight"].reshape(-1, 2, hd, c.config["hidden"])
    np.testing.assert_array_equal(stored("mtp.layers.0.wq_gate"), q[:, 1].reshape(-1, c.config["hidden"]))
    np.testing.assert_array_equal(stored("mtp.norm_hidden"), head["mtp.pre_fc_norm_hidden.weight"] + np.float32(1))
    up = head["mtp.layers.0.mlp.experts.gate_up_proj"][3, I:] if stacked else head["mtp.layers.0.mlp.experts.3.up_proj.weight"]
    np.testing.assert_array_equal(stored("mtp.layers.0.experts.3.up"), up)
    # An engine loads what it would without the head, and computes the same.
    model = f32(out)
    assert model.plan.resident_bytes <= f32(converted("qwen3_5_moe")).plan.resident_bytes
    assert model._engine.allocated_bytes == model.plan.total_bytes
    ids = reference("qwen3_5_moe")["input_ids"].tolist()
    np.testing.assert_array_equal(model.logits(ids), f32(converted("qwen3_5_moe")).logits(ids))


def test_the_kept_head_is_checksummed_with_the_resident_section(tmp_path):
    from edgemoe.format.container import open_container

    src, _ = _with_mtp_head(tmp_path, stacked=False)
    out = tmp_path / "mtp.emoe"
    convert_hf(str(src), str(out), bits="f32", progress=False)
    c = open_container(str(out))
    t = c.tensors["mtp.layers.0.experts.2.down"]
    with open(out, "r+b") as f:  # one flipped bit in a tensor no engine loads
        f.seek(c.sections["resident"]["offset"] + t["offset"] + 5)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(edgemoe.FormatError, match="resident section checksum mismatch"):
        edgemoe.load(str(out), threads=1)


def test_a_tensor_after_the_kept_ones_is_refused_by_the_writer(tmp_path):
    from edgemoe.format import quant
    from edgemoe.format.container import ContainerWriter

    with ContainerWriter(str(tmp_path / "x.emoe")) as w:
        w.add_resident("mtp.fc", quant.F32, np.zeros(4, np.float32), (4,))
        with pytest.raises(RuntimeError, match="after the tensors kept for later"):
            w.add_resident("norm", quant.F32, np.zeros(4, np.float32), (4,))


def test_a_container_with_a_tensor_after_the_kept_ones_is_refused(tmp_path):
    # An engine loads the resident section up to its first kept tensor: a tensor it binds must not
    # lie beyond, where it would read past what it loaded.
    from container_edit import replace_tables
    from edgemoe.format.container import open_container

    src, _ = _with_mtp_head(tmp_path, stacked=False)
    out = tmp_path / "mtp.emoe"
    convert_hf(str(src), str(out), bits="f32", progress=False)
    tensors = dict(open_container(str(out)).tensors)
    tensors["norm"], tensors["mtp.norm"] = dict(tensors["mtp.norm"], shape=tensors["norm"]["shape"]), \
        dict(tensors["norm"], shape=tensors["mtp.norm"]["shape"])
    replace_tables(out, tensors=tensors)
    with pytest.raises(edgemoe.FormatError, match="lies after a tensor kept for later"):
        open_container(str(out))
