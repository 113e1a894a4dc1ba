"""The `edgemoe` command: convert, info, generate (chat, profile and perplexity come with their issues)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from .errors import EdgeMoEError


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-budget", default=None, help="bytes or a size like 1.5GB for weights + caches")
    p.add_argument("--cache-experts", type=int, default=None, help="number of expert cache slots (overrides the budget)")
    p.add_argument("--threads", "-t", type=int, default=None)
    p.add_argument("--ctx-size", "-c", type=int, default=None)


def _load(args):
    from .api import load

    return load(args.model, memory_budget=args.memory_budget, cache_experts=args.cache_experts,
                threads=args.threads, ctx_size=args.ctx_size)


def cmd_convert(args) -> int:
    from .convert import convert_hf

    t0 = time.perf_counter()
    convert_hf(args.src, args.output, bits=args.bits, resident_bits=args.resident_bits, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.output} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    model = _load(args)
    info = model.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from .budget import format_size

    bits = sorted({b for row in info["expert_bits"] for b in row})
    print(f"architecture      {info['architecture']}")
    print(f"layers            {info['n_layers']}   experts/layer {info['n_experts']}   top-k {info['top_k']}")
    print(f"file              {format_size(info['file_bytes'])}")
    print(f"resident weights  {format_size(info['resident_bytes'])} ({info['quantization'].get('resident')})")
    print(f"routed experts    {format_size(info['expert_bytes'])} (bits: {', '.join(map(str, bits))})")
    plan = info["memory_plan"]
    print(f"expert slots      {plan['expert_slots']} x {format_size(plan['slot_bytes'])}")
    print(f"memory plan       {format_size(plan['total_bytes'])} (minimum budget {format_size(info['min_memory_budget'])})")
    print(f"direct I/O        {'yes' if info['direct_io'] else 'no (buffered reads + page-cache eviction)'}")
    return 0


def cmd_generate(args) -> int:
    model = _load(args)
    t0 = time.perf_counter()
    n = 0
    for piece in model.generate(args.prompt, max_tokens=args.max_tokens, temperature=args.temp, top_p=args.top_p,
                                top_k=args.top_k, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                                seed=args.seed, stream=True):
        n += 1
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.verbose:
        s = model.stats()
        dt = time.perf_counter() - t0
        print(f"[{s['tokens']} tokens evaluated in {dt:.2f} s; cache hit rate {s['cache_hit_rate']:.1%}; "
              f"{s['bytes_read'] / 1e6:.1f} MB read]", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgemoe", description="On-device inference for Mixture-of-Experts LLMs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a Hugging Face model folder into an .emoe container")
    p.add_argument("src")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--bits", default="8", choices=["f32", "f16", "8", "4"], help="routed experts' encoding")
    p.add_argument("--resident-bits", default=None, choices=["f32", "f16", "8", "4"],
                   help="resident weights' encoding (default: 8-bit, or the experts' if wider)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="describe a converted model and its memory plan")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("model")
    p.add_argument("prompt")
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--temp", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeMoEError as e:
        print(f"edgemoe: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nedgemoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
