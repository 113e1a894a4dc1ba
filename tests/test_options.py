"""One options object: edgemoe.LoadOptions, whose defaults and allowed names come from the C++
runtime (csrc/runtime/options.h), which checks every option itself."""
import pytest

import edgemoe
from edgemoe import _core
from edgemoe.apps.cli import build_parser, load_options
from edgemoe.options import CHOICES, LoadOptions


def test_defaults_and_choices_have_one_owner():
    defaults = _core.engine_option_defaults()
    options = LoadOptions()
    for name in ("kv_cache", "predictor", "cache_policy", "prefetch_depth", "prefetch_width",
                 "prefetch_min_confidence", "verify_checksums"):
        assert getattr(options, name) == defaults[name], name
    assert set(CHOICES) == {"kv_cache", "predictor", "cache_policy"}
    # the CLI offers exactly those names
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    flags = {a.dest: a for a in sub._actions}
    for name, allowed in CHOICES.items():
        assert list(flags[name].choices) == allowed


def test_a_model_runs_with_the_defaults_a_user_gets(converted):
    model = edgemoe.load(converted("olmoe", "8"), threads=1)
    info = model.info()
    defaults = _core.engine_option_defaults()
    assert (info["predictor"], info["cache_policy"], info["kv_cache"]) == (
        defaults["predictor"], defaults["cache_policy"], defaults["kv_cache"])


def test_the_cli_passes_only_what_was_given():
    args = build_parser().parse_args(["generate", "--predictor", "gate", "-t", "3", "--no-verify-checksums"])
    assert load_options(args) == LoadOptions(predictor="gate", threads=3, verify_checksums=False)
    assert load_options(build_parser().parse_args(["generate"])) == LoadOptions()


@pytest.mark.parametrize("given,message", [
    ({"threads": 0}, "invalid option: threads = 0 is outside [1, 1024]"),
    ({"prefetch_depth": 0}, "invalid option: prefetch_depth = 0 is outside [1, 64]"),
    ({"prefetch_min_confidence": 1.5}, "prefetch_min_confidence = 1.500000 is outside [0, 1]"),
    ({"cache_policy": "fifo"}, "unknown cache_policy 'fifo' (available: edgemoe, lru, lfu, recent)"),
    ({"threads": 2.5}, "threads must be an integer"),
])
def test_the_runtime_refuses_bad_options(converted, given, message):
    with pytest.raises(ValueError) as e:
        edgemoe.load(converted("olmoe", "8"), **given)
    assert message in str(e.value)


def test_unknown_options_are_refused(converted):
    with pytest.raises(TypeError):
        edgemoe.load(converted("olmoe", "8"), prefetch_lanes=4)
    with pytest.raises(ValueError, match="unknown field 'prefetch_lanes'"):
        _core.kv_cache_bytes(edgemoe.load(converted("olmoe", "8"), threads=1).config, {"prefetch_lanes": 4})
