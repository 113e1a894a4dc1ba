"""The `edgemoe` command: convert, info, generate, chat. It mirrors the Python API flag for flag."""
from __future__ import annotations

import argparse
import importlib
import os
import json
import sys
import time
from typing import List, Optional

from ..errors import EdgeMoEError


def _bounded(kind, lo=None, hi=None, lo_open=False):
    """An argparse type that refuses values outside [lo, hi] with a message naming the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"{value} must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{value} must be <= {hi}")
        return value

    return parse


def parse_size_arg(text: str) -> int:
    from ..budget import parse_size

    try:
        return parse_size(text)
    except Exception as e:  # argparse reports ValueError/TypeError as a usage error
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """The flags of edgemoe.LoadOptions, one each; a flag left out keeps the option's default."""
    from ..draft import DRAFT_MODES
    from ..options import CHOICES, LoadOptions

    d = LoadOptions()
    p.add_argument("--memory-budget", default=None, help="bytes or a size like 1.5GB for weights + caches")
    p.add_argument("--cache-experts", type=_bounded(int, 1), default=None,
                   help="number of expert cache slots (overrides the budget)")
    p.add_argument("--threads", "-t", type=_bounded(int, 1), default=None, help="default: the physical cores")
    p.add_argument("--ctx-size", "-c", type=_bounded(int, 1), default=None)
    p.add_argument("--kv-cache", default=None, choices=CHOICES["kv_cache"],
                   help=f"attention cache precision (default {d.kv_cache}: half the memory of f32, faster "
                        f"long-context decoding; f32 computes exactly like the reference, logits ~1e-3 apart)")
    p.add_argument("--predictor", default=None, choices=CHOICES["predictor"],
                   help=f"how experts of the next layers are prefetched while decoding (default: {d.predictor})")
    p.add_argument("--cache-policy", default=None, choices=CHOICES["cache_policy"],
                   help=f"which cached expert is evicted when a slot is needed (default: {d.cache_policy})")
    p.add_argument("--prefetch-depth", type=_bounded(int, 1), default=None,
                   help=f"layers ahead to prefetch (default {d.prefetch_depth})")
    p.add_argument("--prefetch-width", type=_bounded(int, 0), default=None,
                   help="experts prefetched per layer (0, the default: the model's top-k)")
    p.add_argument("--prefetch-min-confidence", type=_bounded(float, 0.0, 1.0), default=None,
                   help=f"prefetch only guesses at least this likely (router probability, or how often the "
                        f"profile saw it); fewer, surer reads (default {d.prefetch_min_confidence})")
    p.add_argument("--io-threads", type=_bounded(int, 0, 16), default=None,
                   help=f"threads reading a layer's missing experts side by side, and prefetches (default "
                        f"{d.io_threads}; 0 reads them in the compute thread, the same way on every run)")
    p.add_argument("--state-checkpoints", type=_bounded(int, 0, 64), default=None, metavar="N",
                   help=f"hybrid models (Qwen3.5-MoE, Qwen3-Next): copies of the linear-attention state kept so a "
                        f"chat turn or a rejected draft resumes from one instead of from the start (default "
                        f"{d.state_checkpoints}; each as large as the state, which edgemoe info shows)")
    p.add_argument("--max-image-pixels", type=_bounded(int, 1024), default=None, metavar="N",
                   help=f"models that take images: resize each to at most N pixels, as the model's processor does "
                        f"with a smaller budget; bounds the vision tower's time and memory (default "
                        f"{d.max_image_pixels}, about {d.max_image_pixels // 1024} image tokens)")
    p.add_argument("--no-vision", dest="vision", action="store_false", default=None,
                   help="models that take images: leave the vision tower on storage and take text only "
                        "(its weights' memory is saved: edgemoe info shows how much)")
    p.add_argument("--draft", default=None, choices=DRAFT_MODES,
                   help="draft tokens and verify several per forward pass, the output unchanged: ngram "
                        "(prompt lookup), cache (the model computing only its cached experts, no reads), "
                        "auto (either, paused while it does not pay); default none")
    p.add_argument("--draft-p-min", dest="draft_min_p", type=_bounded(float, 0.0, 1.0), default=None, metavar="P",
                   help=f"the cache drafter stops at a draft it is less sure of than P (default {d.draft_min_p})")
    p.add_argument("--skip-missed-below", type=_bounded(float, 0.0, 1.0), default=None, metavar="SHARE",
                   help="LOSSY, off by default: do not read a missed expert to which every token gives less "
                        "than this share of its routing weight (changes the output; KL divergence in "
                        "bench/RESULTS.md)")
    p.add_argument("--low-bit-missed-below", type=_bounded(float, 0.0, 1.0), default=None, metavar="SHARE",
                   help="LOSSY, off by default: read a missed expert to which every token gives less than this "
                        "share of its routing weight (1: any missed expert) in its low-bit copy, which the model "
                        "must carry (`edgemoe convert --low-bit-copy 2`); fewer bytes read (changes the output; "
                        "KL divergence in bench/RESULTS.md)")
    p.add_argument("--active-experts", type=_bounded(int, 0), default=None, metavar="K",
                   help="LOSSY, off by default: route each token to only its K heaviest of the model's top-k "
                        "experts (changes the output; KL divergence in bench/RESULTS.md)")
    p.add_argument("--disable-expert", dest="disable_experts", action="append", default=None,
                   metavar="LAYER:EXPERT[,...]",
                   help="LOSSY, off by default: the router never chooses these experts and renormalises over the "
                        "rest, as if they were pruned (repeatable; `edgemoe experts MODEL --text FILE` finds the "
                        "experts a text engages)")
    p.add_argument("--no-verify-checksums", dest="verify_checksums", action="store_false", default=None,
                   help="skip the CRC check of each expert read (faster when experts stream from storage; "
                        "a corrupt or replaced file then gives wrong output instead of an error)")


def load_options(args):
    """The LoadOptions the runtime flags ask for (the ones not given keep their defaults)."""
    from ..options import LoadOptions

    given = {name: getattr(args, name) for name in LoadOptions.names() if getattr(args, name, None) is not None}
    if "disable_experts" in given:  # one flag per group of experts, or several
        given["disable_experts"] = ",".join(given["disable_experts"])
    return LoadOptions(**given)


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--max-tokens", type=_bounded(int, 0), default=256)
    p.add_argument("--temp", type=_bounded(float, 0.0), default=0.8, help="0 means greedy")
    p.add_argument("--top-p", type=_bounded(float, 0.0, 1.0, lo_open=True), default=0.95)
    p.add_argument("--top-k", type=_bounded(int, 0), default=40, help="0 means no limit")
    p.add_argument("--min-p", type=_bounded(float, 0.0, 1.0), default=0.05)
    p.add_argument("--repeat-penalty", type=_bounded(float, 0.0, lo_open=True), default=1.1)
    p.add_argument("--seed", type=int, default=None)


def _sampling(args):
    from ..sampling import SamplingParams

    return SamplingParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repeat_penalty=args.repeat_penalty)


def _load(args, path=None):
    """The model the arguments name (or `path`) under their runtime flags."""
    import warnings

    from ..api import default_model_path, load

    with warnings.catch_warnings():  # load's notices, printed here without a Python warning's file and line
        warnings.simplefilter("ignore")
        model = load(path or args.model or default_model_path(), load_options(args))
    for notice in model.notices:
        print(f"edgemoe: {notice}", file=sys.stderr)
    return model


def _expert_plan(args, convert):
    """The experts --prune-experts or --merge-experts leaves (None without either), measured on the
    --calib text through an 8-bit conversion made by `convert`."""
    if args.low_rank is not None and args.merge_experts is None:
        raise EdgeMoEError("--low-rank corrects merged experts: it needs --merge-experts")
    if args.prune_experts is None and args.merge_experts is None:
        return None
    from ..offline.expert_merge import plan_merging
    from ..offline.expert_reduce import plan_pruning
    from ..offline.perplexity import read_text

    flag = "--prune-experts" if args.prune_experts is not None else "--merge-experts"
    if args.prune_experts is not None and args.merge_experts is not None:
        raise EdgeMoEError("--prune-experts and --merge-experts do not combine: choose one")
    if args.src.endswith(".emoe"):
        raise EdgeMoEError(f"{flag} needs the original checkpoint (a Hugging Face folder or a GGUF file): "
                           "it measures and combines the experts' original weights")
    if not args.calib:
        raise EdgeMoEError(f"{flag} needs --calib TEXTFILE: the text whose routing decides which experts go")
    write_8bit = lambda path: convert(args.src, path, bits="8", progress=False)  # noqa: E731
    if args.prune_experts is not None:
        plan = plan_pruning(args.src, write_8bit, read_text(args.calib), args.prune_experts, threads=args.threads,
                            progress=not args.quiet)
        how = "those with the most router-weighted output on the calibration text (REAP)"
    else:
        plan = plan_merging(args.src, write_8bit, read_text(args.calib), args.merge_experts, threads=args.threads,
                            low_rank=args.low_rank)
        how = ("the most often routed, each merged with the experts routed most like it (MC-SMoE); the router "
               "keeps every output" + (f", each merged member with a rank-{args.low_rank} correction of its own"
                                       if args.low_rank else ""))
    plan.report["calibration_file"] = os.path.basename(args.calib)
    if not args.quiet:
        print(f"LOSSY: keeping {plan.n_experts} of {plan.report['original_n_experts']} routed experts per layer, "
              f"{how}; the choice goes into the manifest", file=sys.stderr)
    return plan


def cmd_convert(args) -> int:
    from ..convert import convert_hf
    from ..convert.gguf import convert_gguf, is_gguf
    from ..convert.hub import resolve_source

    t0 = time.perf_counter()
    args.src = resolve_source(args.src, progress=not args.quiet)  # a Hugging Face repo id: its cached or fetched files
    if args.mmproj and not is_gguf(args.src):
        raise EdgeMoEError("--mmproj goes with a GGUF model (a Hugging Face folder holds its vision tower itself)")
    if args.bits == "auto":  # checked before any calibration pass runs
        from ..convert.auto_bits import check_budget

        if not args.calib:
            raise EdgeMoEError("--bits auto needs --calib TEXTFILE (and --target-size, --max-loss-increase or --max-kl)")
        if is_gguf(args.src):
            raise EdgeMoEError("--bits auto converts Hugging Face folders only (it replays the experts' original "
                               "weights); convert the GGUF with a fixed --bits, or auto-convert its source folder")
        check_budget(args.target_size, args.max_loss_increase, args.max_kl)
    plan = _expert_plan(args, convert_gguf if is_gguf(args.src) else convert_hf)
    if args.src.endswith(".emoe"):
        from ..convert.low_bit_copy import add_low_bit_copies

        if args.low_bit_copy is None or args.bits != "8" or args.resident_bits or args.compress != "none":
            raise EdgeMoEError("a container converts only to itself with low-bit copies of its experts: "
                               "`edgemoe convert MODEL.emoe -o OUT.emoe --low-bit-copy 2` (other widths need "
                               "the original checkpoint)")
        add_low_bit_copies(args.src, args.output, args.low_bit_copy, progress=not args.quiet)
    elif args.bits == "auto":
        from ..convert.auto_bits import plan_expert_types
        from ..offline.perplexity import read_text

        types, report = plan_expert_types(args.src, read_text(args.calib), target_size=args.target_size,
                                          max_loss_increase=args.max_loss_increase, max_kl=args.max_kl,
                                          threads=args.threads, progress=not args.quiet, expert_plan=plan)
        report["calibration_file"] = os.path.basename(args.calib)
        convert_hf(args.src, args.output, bits="8", resident_bits=args.resident_bits, progress=not args.quiet,
                   expert_types=types, extra_manifest={"bit_allocation": report}, compress=args.compress,
                   low_bit_copy=args.low_bit_copy, expert_plan=plan)
        if not args.quiet:
            print(f"chosen widths: {report['expert_bytes'] / 2**20:.2f} MiB of experts; against 8-bit experts on the "
                  f"calibration text: loss {report['measured_loss_increase']:+.4f} nats/token, mean KL divergence "
                  f"{report['measured_kl']:.4f} nats, same top token {100 * report['top1_agreement']:.1f} %",
                  file=sys.stderr)
    elif is_gguf(args.src):
        convert_gguf(args.src, args.output, bits=args.bits, resident_bits=args.resident_bits,
                     progress=not args.quiet, compress=args.compress, low_bit_copy=args.low_bit_copy,
                     mmproj=args.mmproj and resolve_source(args.mmproj, progress=not args.quiet), expert_plan=plan)
    else:
        convert_hf(args.src, args.output, bits=args.bits, resident_bits=args.resident_bits,
                   progress=not args.quiet, compress=args.compress, low_bit_copy=args.low_bit_copy, expert_plan=plan)
    if not args.quiet:
        print(f"wrote {args.output} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _layer_groups(layers):
    """(kind, "0,2,4" or "0-23", context bytes, recurrent) per distinct kind of layer, in order of first
    appearance."""
    groups = {}
    for i, layer in enumerate(layers):
        groups.setdefault((layer["kind"], layer["kv_cache_bytes"], layer["recurrent"]), []).append(i)
    out = []
    for (kind, kv, recurrent), idx in groups.items():
        contiguous = idx == list(range(idx[0], idx[-1] + 1))
        text = f"{idx[0]}-{idx[-1]}" if contiguous and len(idx) > 2 else ",".join(map(str, idx))
        out.append((kind, text if len(text) <= 40 else text[:37] + "...", kv, recurrent))
    return out


def cmd_info(args) -> int:
    model = _load(args)
    info = model.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from ..budget import format_size

    from collections import Counter

    from ..format import quant

    types = Counter(t for row in info["expert_types"] for t in row)
    print(f"architecture      {info['architecture']}")
    print(f"layers            {info['n_layers']}   experts/layer {info['n_experts']}   top-k {info['top_k']}")
    checkpoints = model.options.state_checkpoints
    for kind, layers, kv, recurrent in _layer_groups(info["layers"]):
        context = (f"state {format_size(kv)} each (live and {checkpoints} checkpoints)" if recurrent
                   else f"KV cache {format_size(kv)} each")
        print(f"  layers {layers:9s} {kind}; {context}")
    print(f"parameters        {info['params_total'] / 1e6:.1f} M total, {info['params_active'] / 1e6:.1f} M active per token")
    print(f"file              {format_size(info['file_bytes'])}")
    print(f"resident weights  {format_size(info['resident_bytes'])} ({info['quantization'].get('resident')})")
    if info["kept_for_later_bytes"]:
        print(f"kept, not loaded  {format_size(info['kept_for_later_bytes'])} (multi-token-prediction head)")
    if info["vision_tower_bytes"]:
        c, plan_vision = model.config, info["memory_plan"]["vision_bytes"]
        state = (f"loaded; one image of up to {model.options.max_image_pixels} pixels needs {format_size(plan_vision)} more"
                 if plan_vision else "not loaded (--no-vision)")
        print(f"vision tower      {format_size(info['vision_tower_bytes'])}, {c['vision_depth']} blocks of "
              f"{c['vision_hidden']} (of the resident weights); {state}")
    widest_first = sorted(types.items(), key=lambda tn: (-quant.BITS[quant.CODES[tn[0]]], tn[0]))
    widths = ", ".join(f"{t} x {n}" for t, n in widest_first) if len(types) > 1 else f"{next(iter(types))}"
    print(f"routed experts    {format_size(info['expert_bytes'])} ({widths})")
    if info["low_bit_copy_bytes"]:
        print(f"low-bit copies    {format_size(info['low_bit_copy_bytes'])} ({info['quantization'].get('low_bit_copy')}; "
              f"read instead of missed experts with the LOSSY --low-bit-missed-below)")
    if info.get("bit_allocation"):
        a = info["bit_allocation"]
        print(f"bit allocation    by sensitivity on {a['calibration_tokens']} tokens of {a.get('calibration_file', '?')}; "
              f"measured loss {a['measured_loss_increase']:+.4f} nats/token over 8-bit"
              + (f", mean KL divergence {a['measured_kl']:.4f} nats" if "measured_kl" in a else ""))
    if info.get("expert_reduction"):
        r = info["expert_reduction"]
        how = "merged into" if r["method"] == "mc-smoe" else "pruned to"
        corrected = f", each merged member with a rank-{r['low_rank']} correction" if r.get("low_rank") else ""
        print(f"reduced (LOSSY)   {r['original_n_experts']} routed experts per layer {how} {info['n_experts']}{corrected} "
              f"({r['method']} on {r['calibration_tokens']} tokens of {r.get('calibration_file') or '?'})")
    plan = info["memory_plan"]
    print(f"expert slots      {plan['expert_slots']} x {format_size(plan['slot_bytes'])}")
    print(f"memory plan       {format_size(plan['total_bytes'])} (minimum budget {format_size(info['min_memory_budget'])})")
    print(f"direct I/O        {'yes' if info['direct_io'] else 'no (buffered reads + page-cache eviction)'}")
    return 0


def cmd_generate(args) -> int:
    model = _load(args)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    params = _sampling(args)
    for piece in model.generate(prompt, max_tokens=args.max_tokens, temperature=params.temperature,
                                top_p=params.top_p, top_k=params.top_k, min_p=params.min_p,
                                repeat_penalty=params.repeat_penalty, seed=args.seed, stream=True,
                                stop=args.stop, trace=args.trace, images=args.image):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.stats_json:
        last = model.last_generation
        print(json.dumps(dict(model.stats(), prefill=last.prefill_engine, decode=last.decode_engine, draft=last.draft)),
              file=sys.stderr)
    elif args.stats:
        from .timings import timing_lines

        print("\n".join(timing_lines(model.last_generation, model)), file=sys.stderr)
    return 0


def cmd_perplexity(args) -> int:
    from ..offline.perplexity import perplexity, read_text

    text = read_text(args.file)
    model = _load(args)
    ids = model.tokenize(text, add_special_tokens=False)
    if args.max_tokens:
        ids = ids[:args.max_tokens]
    window = min(args.window or 512, model.ctx_size)
    stride = min(args.stride or max(1, window // 2), window - 1)
    from tqdm import tqdm

    from ..offline import kl_divergence as kl

    with tqdm(total=len(ids), unit="tok", desc="perplexity", disable=not sys.stderr.isatty()) as bar:
        progress = lambda done, total: bar.update(done - bar.n)  # noqa: E731
        if args.kl_divergence:
            if not args.kl_divergence.endswith(".emoe"):
                reference = kl.SavedLogits(args.kl_divergence, ids, window, stride)
            else:  # the reference as it is: none of this run's lossy or memory flags, a context for the window
                from ..api import load

                reference = load(args.kl_divergence, threads=args.threads, ctx_size=window)
            r = kl.kl_divergence(model, reference, ids, window, stride, progress=progress)
        elif args.save_logits:
            r = kl.save_logits(model, ids, window, stride, args.save_logits, progress=progress)
        else:
            r = perplexity(model, ids, window, stride, progress=progress)
    r.update(window=window, stride=stride, file=args.file)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"perplexity {r['perplexity']:.3f} over {r['tokens']} tokens of {args.file} "
          f"(window {window}, stride {stride}; {r['seconds']:.1f} s)")
    if args.save_logits:
        print(f"log-probabilities saved to {args.save_logits}: pass it to --kl-divergence")
    if args.kl_divergence:  # llama.cpp's --kl-divergence figures
        print(f"reference perplexity {r['reference_perplexity']:.3f} ({args.kl_divergence}); "
              f"ratio {r['perplexity_ratio']:.4f}")
        print(f"KL divergence  mean {r['kl_mean']:.6f} +- {r['kl_stderr']:.6f}, median {r['kl_median']:.6f}, "
              f"99th percentile {r['kl_p99']:.6f}, max {r['kl_max']:.6f} nats")
        print(f"same top token {100 * r['top1_agreement']:.2f} %")
    return 0


def cmd_doctor(args) -> int:
    from ..options import LoadOptions
    from .doctor import diagnose, print_report

    options = LoadOptions(memory_budget=args.memory_budget, ctx_size=args.ctx_size)
    report = diagnose(args.source, args.bits or ["8", "4k", "2"], options, probe_dir=args.probe_dir,
                      probe=not args.no_probe, progress=not args.json)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def make_server(args):
    """The Server for `edgemoe serve`'s arguments (tests build it the same way)."""
    from .server import Server

    model = _load(args)
    model_id = os.path.splitext(os.path.basename(args.model or "demo.emoe"))[0]
    defaults = {"temperature": args.temp, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
                "repeat_penalty": args.repeat_penalty, "max_tokens": args.max_tokens}
    return Server(model, model_id, api_key=args.api_key, defaults=defaults, image_dir=args.image_dir)


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .server import create_app
    except ImportError:
        raise EdgeMoEError('`edgemoe serve` needs the serve extra: pip install "edgemoe[serve]"') from None
    server = make_server(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it",
              file=sys.stderr)
    print(f"serving {server.model_id} on http://{args.host}:{args.port}/v1", file=sys.stderr)
    uvicorn.run(create_app(server), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_profile(args) -> int:
    from ..offline.perplexity import read_text
    from ..offline.profile import profile_container

    text = read_text(args.calib)
    summary = profile_container(args.model, text, window=args.window, max_tokens=args.max_tokens,
                                source=os.path.basename(args.calib))
    print(f"profiled {summary['tokens']} tokens ({summary['distinct_tokens']} distinct) in "
          f"{summary['seconds']:.1f} s; statistics stored in {args.model}", file=sys.stderr)
    return 0


def cmd_experts(args) -> int:
    from ..offline.attribution import attribute, format_report, text_engagement
    from ..offline.perplexity import read_text

    model = _load(args)
    text = text_engagement(model, read_text(args.text), args.window, args.max_tokens)
    baseline = args.baseline and text_engagement(model, read_text(args.baseline), args.window, args.max_tokens)
    report = attribute(text, baseline or None, model.config, min_count=args.min_count, min_lift=args.min_lift,
                       top=args.top)
    if args.json:
        print(json.dumps({"text_tokens": text.tokens, "baseline_tokens": baseline.tokens if baseline else None,
                          "layers": report}, indent=1))
    else:
        print(format_report(report, "baseline" if baseline else "uniform"))
    return 0


def cmd_chat(args) -> int:
    from .chat import ChatREPL
    from ..session import ChatSession

    model = _load(args)
    session = ChatSession(model, _sampling(args), seed=args.seed, system=args.system, max_tokens=args.max_tokens)
    if sys.stdin.isatty():
        try:  # importing readline gives input() line editing and history
            importlib.import_module("readline")
        except ImportError:
            pass
    return ChatREPL(session).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgemoe", description="On-device inference for Mixture-of-Experts LLMs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a Hugging Face model folder or a GGUF file into an .emoe container")
    p.add_argument("src", help="a Hugging Face model folder or repository id (Qwen/Qwen3-30B-A3B, optionally "
                               "@revision; fetched into the Hugging Face cache, or found there), a .gguf file "
                               "(llama.cpp; the first part of a split one) or a GGUF repository with the "
                               "quantization to take (unsloth/Qwen3-30B-A3B-GGUF:Q4_K_M); or an .emoe "
                               "container to give low-bit copies (--low-bit-copy)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--bits", default="8", choices=["f32", "f16", "8", "4k", "4", "3", "2", "mxfp4", "auto"],
                   help="routed experts' encoding (4k: llama.cpp's Q4_K layout, 4.5 bits per weight, more accurate "
                        "than 4 at 10 %% fewer bytes, for rows that are multiples of 256, else 4; "
                        "4, 3 and 2 bits: 5.0, 4.0 and 3.0 bits per weight with their scales; "
                        "mxfp4: 4.25 bits, gpt-oss's own encoding, its blocks copied bit for bit from the hub's "
                        "checkpoints); "
                        "auto: a width per expert from its measured sensitivity on --calib text")
    p.add_argument("--mmproj", default=None, metavar="GGUF",
                   help="llama.cpp's mmproj file of a GGUF model that takes images (Qwen3-VL-MoE): its vision "
                        "tower is converted with the model")
    p.add_argument("--compress", choices=["none", "zstd"], default="none",
                   help="store expert blobs zstd-compressed where that makes them smaller (saves 1-6 %% on "
                        "quantized experts and costs decompression time: bench/RESULTS.md)")
    p.add_argument("--low-bit-copy", default=None, choices=["2", "3", "4"], metavar="BITS",
                   help="also store a second copy of every routed expert in BITS (2, 3 or 4) bits, which "
                        "the LOSSY run-time option --low-bit-missed-below reads instead of a missed expert "
                        "(fewer bytes per miss; the file grows by the copies, 3.0/4.0/5.0 bits per weight)")
    p.add_argument("--prune-experts", type=_bounded(float, 0.0, 1.0, lo_open=True), default=None, metavar="FRACTION",
                   help="LOSSY: drop this fraction of every layer's routed experts, those contributing least on the "
                        "--calib text (REAP: routing weight times output norm, averaged over the tokens routed "
                        "to them); the router loses their rows and renormalises as the model does, exactly as "
                        "--disable-expert would mask them; the choice and scores go into the manifest")
    p.add_argument("--merge-experts", type=_bounded(float, 0.0, 1.0, lo_open=True), default=None, metavar="FRACTION",
                   help="LOSSY: merge this fraction of every layer's routed experts into the others (MC-SMoE): the "
                        "most often routed on the --calib text stay, each other expert joins the one whose router "
                        "logits are most like its own, neurons aligned, weighted by how often each is routed; the "
                        "router keeps every output and reaches the merged expert")
    p.add_argument("--low-rank", type=int, default=None, metavar="R",
                   help="LOSSY, with --merge-experts: give every member of a merged group back a rank-R correction "
                        "of its own (truncated SVD, randomized, of its difference from the merged expert), kept "
                        "resident: R * (hidden + expert width) values per projection and member, outside "
                        "--target-size, which counts expert blobs")
    p.add_argument("--calib", default=None, metavar="TEXTFILE",
                   help="calibration text for --bits auto, --prune-experts and --merge-experts")
    p.add_argument("--target-size", type=parse_size_arg, default=None, metavar="BYTES",
                   help="--bits auto: routed experts in at most this many bytes (e.g. 12MB), least sensitivity")
    p.add_argument("--max-loss-increase", type=_bounded(float, 0.0), default=None, metavar="NATS",
                   help="--bits auto: smallest experts whose measured calibration loss stays within this many "
                        "nats/token of all-8-bit experts (blind where the loss barely moves: see --max-kl)")
    p.add_argument("--max-kl", type=_bounded(float, 0.0), default=None, metavar="NATS",
                   help="--bits auto: smallest experts whose mean KL divergence from all-8-bit experts' "
                        "next-token distributions, on the calibration text, stays within this (e.g. 0.01); "
                        "sees what the loss budget misses where the loss barely moves")
    p.add_argument("--threads", "-t", type=_bounded(int, 1), default=None)
    p.add_argument("--resident-bits", default=None, choices=["f32", "f16", "8", "4k", "4", "3", "2"],
                   help="resident weights' encoding (default: 8-bit, or the experts' if wider)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("doctor", help="before converting: sizes at each width, whether the model fits, and its "
                                      "predicted decode speed on this machine")
    p.add_argument("source", help="a Hugging Face folder or repository id (only its config is fetched), a .gguf "
                                  "file or an .emoe container")
    p.add_argument("--bits", action="append", default=None, choices=["f16", "8", "4k", "4", "3", "2", "mxfp4"],
                   help="widths to lay out (repeatable; default 8, 4k and 2)")
    p.add_argument("--memory-budget", type=parse_size_arg, default=None, metavar="BYTES",
                   help="the budget to plan for (default: as load chooses from free memory)")
    p.add_argument("--ctx-size", type=_bounded(int, 1), default=None)
    p.add_argument("--probe-dir", default=None, help="the folder whose storage to probe (default: the source's)")
    p.add_argument("--no-probe", action="store_true", help="do not probe the storage (use the last probe, if any)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("info", help="describe a converted model and its memory plan")
    p.add_argument("model", nargs="?", default=None, help="an .emoe file (default: the embedded demo model)")
    p.add_argument("--json", action="store_true")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="one completion of a prompt to stdout")
    p.add_argument("model", nargs="?", default=None, help="an .emoe file (default: the embedded demo model)")
    p.add_argument("-p", "--prompt", default=None, help="the prompt (default: read stdin)")
    p.add_argument("--stats", action="store_true", help="print speed, where the time went, expert cache and memory "
                   "figures to stderr")
    p.add_argument("--stats-json", action="store_true", help="print the engine's raw counters to stderr as JSON "
                   "(in all, and over the prefill and the decode)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the completion before TEXT (repeatable)")
    p.add_argument("--trace", default=None, metavar="PATH",
                   help="record every token's routing to PATH (JSON Lines, docs/TRACE.md)")
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="models that take images: an image for the prompt's next <|image_pad|> placeholder, or "
                        "placed before the prompt when it has none (repeatable)")
    _add_sampling_flags(p)
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("profile", help="gather routing statistics from calibration text into the container")
    p.add_argument("model")
    p.add_argument("--calib", required=True, metavar="TEXTFILE",
                   help="calibration text (UTF-8, or JSON Lines with a \"text\" field)")
    p.add_argument("--window", type=_bounded(int, 2), default=256, help="tokens per window")
    p.add_argument("--max-tokens", type=_bounded(int, 2), default=None)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("experts", help="which experts of each layer a text engages more than a baseline text "
                                       "(or uniform routing) does: candidates for --disable-expert")
    p.add_argument("model", nargs="?", default=None, help="an .emoe file (default: the embedded demo model)")
    p.add_argument("--text", required=True, metavar="TEXTFILE", help="UTF-8 text, or JSON Lines with a \"text\" field")
    p.add_argument("--baseline", default=None, metavar="TEXTFILE",
                   help="text to compare with (default: every expert equally used)")
    p.add_argument("--min-count", type=_bounded(int, 1), default=8, help="tokens that must choose an expert (default 8)")
    p.add_argument("--min-lift", type=_bounded(float, 0.0, lo_open=True), default=2.0,
                   help="how many times its baseline share an expert's share must be (default 2)")
    p.add_argument("--top", type=_bounded(int, 1), default=4, help="experts reported per layer at most (default 4)")
    p.add_argument("--window", type=_bounded(int, 2), default=256, help="tokens per window")
    p.add_argument("--max-tokens", type=_bounded(int, 1), default=None, help="of each text")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser("perplexity", help="perplexity of a text file under the model (sliding window)")
    p.add_argument("model", nargs="?", default=None, help="an .emoe file (default: the embedded demo model)")
    p.add_argument("file", help="UTF-8 text, or JSON Lines with a \"text\" field")
    p.add_argument("--window", type=_bounded(int, 2), default=None,
                   help="tokens per window (default: 512, at most the context size)")
    p.add_argument("--stride", type=_bounded(int, 1), default=None,
                   help="tokens newly scored per window after the first, at most window - 1; each token "
                        "is scored once, with at least window - stride tokens of context (default: half the window)")
    p.add_argument("--max-tokens", type=_bounded(int, 2), default=None, help="score only the first N tokens")
    saved = p.add_mutually_exclusive_group()
    saved.add_argument("--kl-divergence", default=None, metavar="REFERENCE",
                   help="also compare each token's predicted distribution with a REFERENCE (a higher-precision "
                        ".emoe of the same model, or an .npy from --save-logits, with its .json): mean, median, 99th percentile "
                        "and max KL divergence, top-token agreement and the perplexity ratio, as llama.cpp's "
                        "--kl-divergence reports them")
    saved.add_argument("--save-logits", default=None, metavar="FILE.npy",
                   help="save this model's log-probabilities for --kl-divergence (2 bytes per vocabulary "
                        "entry per token)")
    p.add_argument("--json", action="store_true")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (needs the serve extra)")
    p.add_argument("model", nargs="?", default=None, help="an .emoe file (default: the embedded demo model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=_bounded(int, 1, 65535), default=8080)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request")
    p.add_argument("--image-dir", default=None, metavar="DIR",
                   help="models that take images: let image_url parts name files under DIR (a path or file://); "
                        "without it only data: URLs are taken, so a client cannot read the server's files")
    _add_sampling_flags(p)
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("chat", help="chat in the terminal (one turn per line when stdin is a pipe)")
    p.add_argument("model", nargs="?", default=None, help="an .emoe file (default: the embedded demo model)")
    p.add_argument("--system", default=None, help="system prompt")
    _add_sampling_flags(p)
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_chat)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (EdgeMoEError, ValueError) as e:  # ValueError: the engine's checks of an option's value
        print(f"edgemoe: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nedgemoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
