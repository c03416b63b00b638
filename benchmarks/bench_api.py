"""Requests per second of the openai backend against a local endpoint with API-like latency and rate limits.

The server (aiohttp, in a process of its own so it does not share the client's interpreter) answers every
chat completion after ``--latency-ms`` (default 200), and answers ``--rate-limited`` of them (default 5 %) with
HTTP 429 and ``retry-after-ms`` (plus the whole-second ``retry-after`` OpenAI sends with it). N requests go
through the old client (the urllib thread pool of commit 0f1d2eb, loaded from git) and the new one (the SDK
client) at ``--in-flight`` requests in flight; each line gives requests/s and the share of the ideal
in_flight / latency (64 / 0.2 s = 320 requests/s; target for the new client: at least 0.8).

    python benchmarks/bench_api.py                    # 1,500 requests, 64 in flight, both clients
    python benchmarks/bench_api.py --clients new -n 3000
    python benchmarks/bench_api.py --clients all      # also bare aiohttp: the ceiling of a busy machine
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.config.generate import BackendOptions  # noqa: E402
from workflow_scripts.llm.types import LLMRequest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OLD_REVISION = "0f1d2eb"
OLD_MODULE = "workflow_scripts/llm/backends/openai_http.py"


def serve(port_queue: "multiprocessing.Queue[int]", latency_s: float, rate_limited: float, seed: int) -> None:
    """The endpoint: POST /v1/chat/completions, answered after latency_s (429 for a share of them)."""
    import asyncio
    import json

    from aiohttp import web

    chooser = random.Random(seed)
    answer = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21,
                  "prompt_tokens_details": {"cached_tokens": 0}}})
    limited = json.dumps({"error": {"message": "Rate limit reached", "type": "requests",
                                    "code": "rate_limit_exceeded"}})

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency_s)
        if chooser.random() < rate_limited:
            return web.Response(status=429, text=limited, content_type="application/json",
                                headers={"retry-after-ms": "50", "retry-after": "1"})
        return web.Response(text=answer, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def old_client_class() -> type:
    """OpenAIBackend of the urllib client, from git (it imports modules that still exist)."""
    source = subprocess.run(["git", "show", f"{OLD_REVISION}:{OLD_MODULE}"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    path = folder / "old_openai_http.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_openai_http", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OpenAIBackend


def new_client_class() -> type:
    from workflow_scripts.llm.backends.openai_api import OpenAIBackend

    return OpenAIBackend


def measure_bare(base_url: str, count: int, in_flight: int) -> tuple[float, float, int, int]:
    """The machine's ceiling: bare aiohttp POSTs at ``in_flight`` (no SDK, no parsing; a 429 is retried at once)."""
    import asyncio

    import aiohttp

    async def run() -> tuple[float, int]:
        slots = asyncio.Semaphore(in_flight)
        retries = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
            async def one(i: int) -> None:
                nonlocal retries
                while True:
                    async with slots, session.post(f"{base_url}/chat/completions", json={
                            "model": "bench", "messages": [{"role": "user", "content": f"request {i}"}]}) as reply:
                        await reply.read()
                        if reply.status != 429:
                            return
                    retries += 1
                    await asyncio.sleep(0.05)

            await asyncio.gather(*(one(i) for i in range(in_flight)))
            retries = 0
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(i) for i in range(count)))
            return time.perf_counter() - started, time.process_time() - cpu, retries

    elapsed, cpu, retries = asyncio.run(run())
    return elapsed, cpu, 0, retries


def measure(client_class: type, base_url: str, count: int, in_flight: int) -> tuple[float, float, int, int]:
    """(seconds, CPU seconds, failed answers, retries) for ``count`` requests."""
    options = BackendOptions(base_url=base_url, api_key_env=None, max_concurrency=in_flight, max_retries=6)
    backend = client_class("bench", None, options, "none")
    backend.generate([LLMRequest(messages=[{"role": "user", "content": f"warm up {i}"}], max_new_tokens=4)
                      for i in range(in_flight)])  # opens the pool: steady state is measured
    requests = [LLMRequest(messages=[{"role": "user", "content": f"request {i}"}], seed=i, max_new_tokens=4)
                for i in range(count)]
    started, cpu = time.perf_counter(), time.process_time()
    answers = backend.generate(requests)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    retries = backend.retries
    if hasattr(backend, "close"):
        backend.close()
    return elapsed, cpu, sum(not a.ok for a in answers), retries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--requests", type=int, default=1500, help="requests per client (default 1500)")
    parser.add_argument("--in-flight", type=int, default=64, help="max_concurrency of both clients (default 64)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="server latency per request (default 200)")
    parser.add_argument("--rate-limited", type=float, default=0.05,
                        help="share of answers that are HTTP 429 (default 0.05)")
    parser.add_argument("--clients", choices=("both", "old", "new", "all"), default="both",
                        help="'all' adds bare aiohttp requests: what the machine allows at the moment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.requests <= 0 or args.in_flight <= 0 or args.latency_ms <= 0 or not 0 <= args.rate_limited < 1:
        parser.error("--requests, --in-flight and --latency-ms must be positive, --rate-limited in [0, 1)")

    context = multiprocessing.get_context("spawn")
    ports: "multiprocessing.Queue[int]" = context.Queue()
    server = context.Process(target=serve, args=(ports, args.latency_ms / 1000, args.rate_limited, args.seed),
                             daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
        ideal = args.in_flight / (args.latency_ms / 1000)
        print(f"{args.requests} requests, {args.in_flight} in flight, {args.latency_ms:.0f} ms latency, "
              f"{args.rate_limited:.0%} answered 429; ideal {ideal:.0f} requests/s")
        clients = {"old": old_client_class, "new": new_client_class}
        names = {"both": ("old", "new"), "all": ("bare", "old", "new")}.get(args.clients, (args.clients,))
        for name in names:
            if name == "bare":
                elapsed, cpu, failed, retries = measure_bare(base_url, args.requests, args.in_flight)
            else:
                elapsed, cpu, failed, retries = measure(clients[name](), base_url, args.requests, args.in_flight)
            cpu_ms = cpu * 1000 / args.requests
            rate = args.requests / elapsed
            print(f"{name:>4} client: {rate:7.1f} requests/s  ({rate / ideal:.2f} of ideal; {elapsed:.2f} s, "
                  f"{retries} retries, {failed} failed, {cpu_ms:.2f} ms CPU a request)", flush=True)
    finally:
        server.terminate()
        server.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
