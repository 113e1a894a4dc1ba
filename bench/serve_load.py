"""A bounded load check of `edgemoe serve`: concurrent clients on loopback, latency percentiles,
throughput, and the server still answering afterwards within its memory budget.

    python bench/serve_load.py [MODEL] [--requests 200] [--clients 4] [--max-tokens 16]
        [--memory-budget 24MB] [--write bench/RESULTS.md]
"""
import argparse
import datetime
import os
import platform
import socket
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_util import report  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--memory-budget", default="24MB")
    p.add_argument("--write", default=None)
    a = p.parse_args()
    import httpx
    import openai
    import psutil
    import uvicorn

    from edgemoe.budget import parse_size
    from edgemoe.apps.cli import build_parser, make_server
    from edgemoe.apps.server import create_app

    argv = ["serve"] + ([a.model] if a.model else []) + ["--memory-budget", a.memory_budget, "--ctx-size", "512"]
    server = make_server(build_parser().parse_args(argv))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=uv.run, daemon=True).start()
    while not uv.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    prompts = ["Tell me about the sea.", "Who was Elizabeth?", "What is a marriage?", "Write of the LORD.",
               "Describe a fine morning.", "What did Moses say?"]
    latencies, first_token, tokens, errors = [], [], [0], []
    lock = threading.Lock()
    counter = iter(range(a.requests))

    def client_loop(cid: int) -> None:
        c = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            msgs = [{"role": "user", "content": prompts[i % len(prompts)]}]
            t0 = time.perf_counter()
            try:
                if i % 2:  # half streaming: time to first token too
                    first = None
                    for chunk in c.chat.completions.create(model=server.model_id, messages=msgs, stream=True,
                                                           max_tokens=a.max_tokens, seed=i):
                        if first is None and chunk.choices and chunk.choices[0].delta.content:
                            first = time.perf_counter() - t0
                    with lock:
                        if first is not None:
                            first_token.append(first)
                else:
                    r = c.chat.completions.create(model=server.model_id, messages=msgs, max_tokens=a.max_tokens,
                                                  seed=i)
                    with lock:
                        tokens[0] += r.usage.completion_tokens
            except Exception as e:  # counted, not fatal: the report says how many
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    health = httpx.get(base + "/health").json()
    rss = psutil.Process().memory_info().rss
    budget = parse_size(a.memory_budget)
    lat = np.array(latencies) * 1e3
    ttft = np.array(first_token) * 1e3
    lines = [f"\n### edgemoe serve under load ({datetime.date.today()})\n",
             f"Command: `python bench/serve_load.py {' '.join(sys.argv[1:])}`  \n"
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs. Server and clients in one process, "
             f"loopback; {a.clients} concurrent clients, {a.requests} chat requests (half streaming), "
             f"max_tokens {a.max_tokens}, memory budget {a.memory_budget}.\n",
             "| requests ok / failed | requests/s | latency p50 / p90 / p99 ms | first token p50 / p90 ms | "
             "server metrics after | process RSS after |", "|---|---|---|---|---|---|",
             f"| {len(latencies)} / {len(errors)} | {len(latencies) / wall:.1f} | "
             f"{np.percentile(lat, 50):.0f} / {np.percentile(lat, 90):.0f} / {np.percentile(lat, 99):.0f} | "
             f"{np.percentile(ttft, 50):.0f} / {np.percentile(ttft, 90):.0f} | "
             f"{health['metrics']['requests']} served, {health['metrics']['completion_tokens']} tokens, "
             f"last decode {health['metrics']['last_decode_tok_s']} tok/s | "
             f"{rss / 2**20:.0f} MiB (engine plan {server.model.plan.total_bytes / 2**20:.1f} MiB <= budget "
             f"{budget / 2**20:.1f} MiB; the rest is Python, the HTTP stack and the clients) |",
             "\nRequests are served one at a time, so latency grows with the queue: with "
             f"{a.clients} clients a request waits for up to {a.clients - 1} others. "
             + (f"Errors: {errors[:3]}" if errors else "No request failed.")]
    report("\n".join(lines) + "\n", a.write)
    uv.should_exit = True


if __name__ == "__main__":
    main()
