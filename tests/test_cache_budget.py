"""Expert cache and memory budget: a small cache changes I/O, never results."""
import numpy as np
import pytest

import edgemoe
from edgemoe.budget import parse_size
from conftest import reference


@pytest.mark.parametrize("name,bits", [("olmoe", "f32"), ("qwen2_moe", "4")])
def test_minimum_cache_gives_identical_logits(converted, name, bits):
    path = converted(name, bits)
    ids = reference(name)["input_ids"].tolist()
    unlimited = edgemoe.load(path, threads=2)
    top_k = unlimited.info()["top_k"]
    small = edgemoe.load(path, cache_experts=top_k, threads=2)
    np.testing.assert_array_equal(small.logits(ids), unlimited.logits(ids))
    # decode, token by token, through the tiny cache too
    small.reset()
    unlimited.reset()
    for t in ids[:8]:
        np.testing.assert_array_equal(small.eval([t]), unlimited.eval([t]))
    s = small.stats()
    assert s["cache_misses"] > 0 and s["bytes_read"] > 0
    assert s["tokens"] == len(ids) + 8
    # the small cache must re-read experts the unlimited one keeps
    assert s["cache_misses"] > unlimited.stats()["cache_misses"]
    assert s["io_wait_s"] >= 0 and s["compute_s"] > 0 and s["cache_s"] > 0


def test_compute_cache_work_and_storage_waits_split_the_wall_time(converted):
    """The three parts of a pass's time do not overlap: together they are the time the passes
    took (measured from Python around them, which adds only the call overhead)."""
    import time

    path = converted("qwen2_moe", "4")
    model = edgemoe.load(path, cache_experts=4, threads=2)
    ids = reference("qwen2_moe")["input_ids"].tolist()
    t0 = time.perf_counter()
    model.logits(ids)
    for t in ids[:8]:
        model.eval([t])
    wall = time.perf_counter() - t0
    s = model.stats()
    parts = s["compute_s"] + s["cache_s"] + s["io_wait_s"]
    assert s["cache_s"] > 0 and s["io_wait_s"] > 0
    assert 0.5 * wall < parts <= wall


def test_unlimited_cache_reads_each_expert_once(converted):
    path = converted("mixtral", "8")
    ids = reference("mixtral")["input_ids"].tolist()
    model = edgemoe.load(path, threads=2)
    model.logits(ids)
    first = model.stats()
    model.logits(ids)
    second = model.stats()
    assert second["cache_misses"] == first["cache_misses"]  # all hits the second time
    assert second["cache_hits"] > first["cache_hits"]
    info = model.info()
    assert first["cache_misses"] <= info["n_layers"] * info["n_experts"]


def test_a_tight_budget_shortens_the_default_context_with_a_notice():
    path = edgemoe.default_model_path()  # max_position 512: the default context

    def minimum(ctx):
        return edgemoe.load(path, threads=1, ctx_size=ctx).info()["min_memory_budget"]

    short, full = minimum(256), minimum(512)
    budget = (short + full) // 2  # fits at 256 tokens of context, not at 512
    with pytest.warns(UserWarning, match="context reduced to 256 tokens"):
        model = edgemoe.load(path, threads=1, memory_budget=budget)
    assert model.ctx_size == 256 and model.plan.total_bytes <= budget and len(model.notices) == 1
    assert model.generate("Once upon", max_tokens=4)  # and it runs
    with pytest.raises(edgemoe.BudgetError, match="below this model.s minimum"):  # a context asked for is kept
        edgemoe.load(path, threads=1, memory_budget=budget, ctx_size=512)
    roomy = edgemoe.load(path, threads=1, memory_budget=full * 4)
    assert roomy.ctx_size == 512 and not roomy.notices


def test_the_default_context_keeps_the_kv_cache_to_a_quarter_of_the_budget():
    from edgemoe.budget import MemoryPlan, default_ctx

    def plan_at(ctx):  # 1 KiB of KV cache per token, 100 KiB of the rest
        kv = ctx << 10
        return MemoryPlan(0, kv, [kv], 0, 0, 0, 1, 1, 1, 1, kv + (100 << 10), kv + (101 << 10), kv + (101 << 10))

    assert default_ctx(plan_at, 4096, 64 << 20) == 4096        # 4 MiB of KV in 64 MiB
    assert default_ctx(plan_at, 4096, 8 << 20) == 2048         # 2 MiB is a quarter of 8
    assert default_ctx(plan_at, 4096, 1 << 20) == 256          # never below 256 tokens
    assert default_ctx(plan_at, 300, 1 << 20) == 256


def test_budget_below_minimum_states_the_minimum(converted):
    path = converted("qwen3_moe", "8")
    minimum = edgemoe.load(path, threads=1, ctx_size=256).info()["min_memory_budget"]
    with pytest.raises(edgemoe.BudgetError, match=f"minimum of .*{minimum} bytes"):
        edgemoe.load(path, memory_budget=minimum - 1, threads=1, ctx_size=256)
    model = edgemoe.load(path, memory_budget=minimum, threads=1, ctx_size=256)
    info = model.info()
    assert info["memory_plan"]["expert_slots"] == info["top_k"]
    assert info["memory_plan"]["total_bytes"] <= minimum


def test_budget_sets_slot_count(converted):
    path = converted("qwen3_moe", "8")
    base = edgemoe.load(path, threads=1, ctx_size=256).info()
    slot = base["memory_plan"]["slot_bytes"]
    budget = base["min_memory_budget"] + 3 * slot + slot // 2
    info = edgemoe.load(path, memory_budget=budget, threads=1, ctx_size=256).info()
    assert info["memory_plan"]["expert_slots"] == base["top_k"] + 3
    assert info["memory_plan"]["total_bytes"] <= budget


def test_cache_experts_below_top_k_is_refused(converted):
    path = converted("qwen3_moe", "8")
    with pytest.raises(edgemoe.BudgetError, match="minimum of 2"):
        edgemoe.load(path, cache_experts=1)


@pytest.mark.parametrize("text,expected", [("1.5GB", 1_500_000_000), ("2GiB", 2 << 30), ("512M", 512 << 20),
                                           (1234, 1234), ("100kb", 100_000)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "12 parsecs", "-1GB", 0, "GB"])
def test_parse_size_rejects(bad):
    with pytest.raises(edgemoe.BudgetError):
        parse_size(bad)


# EDGEMOE_AVAILABLE_MEMORY stands in for the machine's free memory (psutil / the cgroup limit).
def test_without_a_budget_the_plan_fits_the_available_memory(monkeypatch):
    full = edgemoe.load(edgemoe.default_model_path()).plan  # this machine: room for every expert
    available = full.min_budget + (full.total_bytes - full.min_budget) // 2
    monkeypatch.setenv("EDGEMOE_AVAILABLE_MEMORY", str(available))
    plan = edgemoe.load(edgemoe.default_model_path()).plan
    assert full.min_slots < plan.n_slots < full.n_slots
    assert plan.total_bytes <= 0.8 * available  # DEFAULT_BUDGET_SHARE: headroom for the rest


def test_too_little_memory_is_a_budget_error_at_load(monkeypatch):
    plan = edgemoe.load(edgemoe.default_model_path()).plan
    shortest = edgemoe.load(edgemoe.default_model_path(), ctx_size=256).plan  # the least default context
    monkeypatch.setenv("EDGEMOE_AVAILABLE_MEMORY", str(shortest.min_budget - 1))
    # too little even at the shortest default context: shortened first (the notice), then refused
    with pytest.raises(edgemoe.BudgetError, match="needs at least .* but only .* is available"), \
            pytest.warns(UserWarning, match="context reduced to 256 tokens"):
        edgemoe.load(edgemoe.default_model_path())
    monkeypatch.setenv("EDGEMOE_AVAILABLE_MEMORY", str(plan.min_budget + 1))
    with pytest.raises(edgemoe.BudgetError, match="exceeds .* available; pass a memory_budget of at most"):
        edgemoe.load(edgemoe.default_model_path(), memory_budget=plan.total_bytes)  # a promise it cannot keep
    with pytest.raises(edgemoe.BudgetError, match=r"at most \d+ expert slots fit"), \
            pytest.warns(UserWarning, match="context reduced to 256 tokens"):
        edgemoe.load(edgemoe.default_model_path(), cache_experts=plan.n_slots)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cgroup_limit_counts_as_available_memory(tmp_path, version):
    from edgemoe.budget import _cgroup_available

    # The process sits in a/b; the limit is set on a (an ancestor), as systemd slices do.
    proc = tmp_path / "proc_self_cgroup"
    if version == "v2":
        (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
        group, parent = tmp_path / "a" / "b", tmp_path / "a"
        proc.write_text("0::/a/b\n")
        limit_name, usage_name, stat = "memory.max", "memory.current", "anon 500000\ninactive_file 50000\n"
    else:
        group, parent = tmp_path / "memory" / "a" / "b", tmp_path / "memory" / "a"
        proc.write_text("5:pids:/\n4:memory:/a/b\n0::/\n")
        limit_name, usage_name = "memory.limit_in_bytes", "memory.usage_in_bytes"
        stat = "cache 100000\ntotal_inactive_file 50000\n"
    group.mkdir(parents=True)
    (group / limit_name).write_text("max\n" if version == "v2" else str(1 << 62))  # no limit of its own
    (group / usage_name).write_text("600000\n")
    (parent / limit_name).write_text("1000000\n")
    (parent / usage_name).write_text("600000\n")
    (parent / "memory.stat").write_text(stat)
    assert _cgroup_available(str(tmp_path), str(proc)) == 1000000 - 600000 + 50000
    (parent / limit_name).write_text("max\n" if version == "v2" else str(1 << 62))
    assert _cgroup_available(str(tmp_path), str(proc)) is None  # no limit anywhere


def test_decode_over_mixed_widths_matches_a_one_expert_at_a_time_cache(tmp_path):
    # With every expert cached, a decode step runs its experts batched per weight type; with the
    # minimum cache they run one at a time. Both must give the same bits.
    from edgemoe.format import quant
    from edgemoe.convert import convert_hf
    from conftest import FIXTURES

    widths = [quant.Q8, quant.Q4, quant.Q3, quant.Q2]
    uniform = str(tmp_path / "uniform.emoe")
    convert_hf(str(FIXTURES / "qwen3_moe"), uniform, bits="8", progress=False)
    info = edgemoe.load(uniform).info()
    path = str(tmp_path / "mixed.emoe")
    convert_hf(str(FIXTURES / "qwen3_moe"), path, bits="8", progress=False,
               expert_types=[[widths[(l + e) % 4] for e in range(info["n_experts"])] for l in range(info["n_layers"])])
    ids = reference("qwen3_moe")["input_ids"].tolist()
    batched = edgemoe.load(path, threads=2)
    batched.logits(ids)  # every expert now cached
    single = edgemoe.load(path, cache_experts=batched.info()["top_k"], threads=2)
    batched.reset()
    for t in ids:
        np.testing.assert_array_equal(batched.eval([t]), single.eval([t]))


@pytest.mark.parametrize("threads,ctx,kv,slots,io", [(1, 64, "f32", 2, 0), (2, 200, "f16", 5, 1),
                                                     (3, 512, "f16", None, 2)])
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_the_plan_is_what_the_engine_allocates(converted, tmp_path, threads, ctx, kv, slots, io, compress):
    # One formula per part (csrc/runtime/memory_plan.h), shared with the code that allocates it:
    # the promise "plan <= budget" holds only if the plan is what the engine holds.
    from edgemoe.convert import convert_hf
    from conftest import FIXTURES

    path = converted("qwen2_moe", "8")
    if compress:
        path = str(tmp_path / "zstd.emoe")
        convert_hf(str(FIXTURES / "qwen2_moe"), path, bits="8", compress="zstd", progress=False)
    model = edgemoe.load(path, threads=threads, ctx_size=ctx, kv_cache=kv, cache_experts=slots, io_threads=io)
    assert (model.plan.staging_bytes > 0) == bool(compress)
    assert model._engine.allocated_bytes == model.plan.total_bytes
