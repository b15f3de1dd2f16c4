"""Federation benchmark: server A delivers to server B through its durable queue.

    .venv/bin/python benchmarks/federation.py [--messages 3000] [--runs 3] [--probes 200]

Two `flux server` processes on 127.0.0.1, SQLite (durable), open mode, plain HTTP between
them (listed as insecure peers: TLS would add its own cost, which this does not measure).

* throughput: N messages (distinct senders, many recipients) submitted to A at
  concurrency 32, each with `domains` placing its recipient at B; measured from the first
  submission until B has stored all N (B's /stats), so it is the queue's end-to-end rate:
  A's submit + queue commit, batching, sealing, the signed transaction, B's checks and
  commit, and A settling the batch;
* latency: one recipient watches B's WebSocket; each probe is timed from its submission at
  A to its push at B (p50/p99), first on idle servers, then while 16 other senders load A
  (faster than the queue drains, so probes wait behind a growing backlog: the loaded
  figure is a saturation figure, not a per-hop cost).

Report medians over several runs; this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ServerProcess, free_port, now_ms, pct, session_token

from flux.protocol import Identity, compose

FAST = {"FLUX_SPAM_RATE_PER_MINUTE": "1000000", "FLUX_QUEUE_RETRY_BASE_S": "0.05",
        "FLUX_QUEUE_RETRY_CAP_S": "1"}  # fmt: skip


def pair() -> tuple[ServerProcess, ServerProcess]:
    ports = free_port(), free_port()
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    env = {**FAST, "FLUX_INSECURE_PEERS": peers}
    return tuple(ServerProcess("sqlite", port=p, env=env) for p in ports)  # type: ignore[return-value]


def routed(count: int, b_name: str, recipients: list[str]) -> list[bytes]:
    senders = [Identity.generate() for _ in range(count // 15 + 1)]
    t = now_ms()
    out = []
    for i in range(count):
        to = recipients[i % len(recipients)]
        msg = compose(senders[i // 15], to, f"federated message {i}", subject="bench", now_ms=t)
        out.append(json.dumps({"message": msg.primary, "domains": {to: b_name}}).encode())
    return out


async def post_all(http: aiohttp.ClientSession, url: str, bodies: list[bytes], workers: int) -> int:
    queue = list(reversed(bodies))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while queue:
            body = queue.pop()
            async with http.post(f"{url}/send", data=body,
                                 headers={"Content-Type": "application/json"}) as r:  # fmt: skip
                await r.read()
                ok += r.status == 200

    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok


async def stored_at(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/stats") as r:
        return (await r.json())["store"]["deliveries"]


async def one_run(args: argparse.Namespace) -> dict:
    a, b = pair()
    b_name = f"127.0.0.1:{b.port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        try:
            await a.wait_ready(http)
            await b.wait_ready(http)
            recipients = [Identity.generate().address for _ in range(500)]
            bodies = routed(args.messages, b_name, recipients)
            start = time.perf_counter()
            accepted = await post_all(http, a.url, bodies, 32)
            submitted = time.perf_counter() - start
            while await stored_at(http, b.url) < accepted:
                await asyncio.sleep(0.02)  # polling another process's counter
            elapsed = time.perf_counter() - start
            idle = await probe_latency(http, a.url, b.url, b_name, recipients, args, loaded=False)
            p50, p99 = await probe_latency(http, a.url, b.url, b_name, recipients, args, loaded=True)
        finally:
            a.stop()
            b.stop()
    return {"msgs_per_s": accepted / elapsed, "submit_msgs_per_s": accepted / submitted,
            "idle_p50_ms": idle[0], "idle_p99_ms": idle[1],
            "loaded_p50_ms": p50, "loaded_p99_ms": p99}  # fmt: skip


async def probe_latency(
    http: aiohttp.ClientSession, a_url: str, b_url: str, b_name: str,
    recipients: list[str], args: argparse.Namespace, *, loaded: bool,
) -> tuple[float, float]:  # fmt: skip
    """Submission at A to push at B, one probe at a time; `loaded`: while 16 other
    senders keep A busy (the queue then holds a backlog the probe waits behind)."""
    watcher = Identity.generate()
    token = await session_token(http, b_url, watcher)
    background = routed(args.probes * 40, b_name, recipients)
    samples: list[float] = []
    async with http.ws_connect(f"{b_url.replace('http', 'ws')}/ws") as ws:
        await ws.send_json({"action": "auth", "token": token})
        assert (await ws.receive_json()).get("action") == "authed"
        loader = asyncio.create_task(post_all(http, a_url, background if loaded else [], 16))
        prober = Identity.generate()
        for i in range(args.probes):
            msg = compose(prober, watcher.address, f"probe {i}", now_ms=now_ms()).primary
            start = time.perf_counter()
            async with http.post(f"{a_url}/send",
                                 json={"message": msg, "domains": {watcher.address: b_name}}) as r:  # fmt: skip
                await r.read()
            while True:
                frame = await ws.receive_json()
                if frame.get("action") == "message" and frame["message"]["id"] == msg["id"]:
                    samples.append(time.perf_counter() - start)
                    break
            if loaded and loader.done():
                break
        await loader
    return pct(samples, 0.5), pct(samples, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [asyncio.run(one_run(args)) for _ in range(args.runs)]
    for n, run in enumerate(runs, 1):
        print(f"run {n}: " + ", ".join(f"{k} {v:.1f}" for k, v in run.items()))
    print("median: " + ", ".join(
        f"{k} {statistics.median(r[k] for r in runs):.1f}" for k in runs[0]))  # fmt: skip


if __name__ == "__main__":
    main()
