"""Federation benchmark: server A delivers to server B through its durable queue.

    .venv/bin/python benchmarks/federation.py [--mode both] [--messages 3000] [--runs 3]
        [--probes 200] [--flood 10000] [--probe-every-ms 50]

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
  figure is a saturation figure, not a per-hop cost);
* fairness (`--mode fairness`): one sender floods A with `--flood` messages for 500
  recipients at B (concurrency 32) while another sender's probes to B, one every
  `--probe-every-ms` (open loop, each timed on its own), are timed from submission at A to
  their push at B's WebSocket; printed beside the idle p50/p99 of the same servers before
  the flood. The same run gives the drain rate (the flood stored at B over the time from
  its first submission) beside A's accept rate (the flood over its submission time), and
  their ratio: a queue that keeps pace with A drains close to 100 %. `submit_p50/p99`:
  the probes' submission alone (A's answer), the part of their latency that is A's
  accept path under the flood, not its queue; `queue_p50/p99`: the rest, from A's answer
  to the push at B (A's queue, the transaction, B's checks and store, the push). A probe
  waits in A's queue for the lease in flight to end (one lease per destination: up to one
  transaction of the flood, sealed, checked by B and settled), which is most of it.

Report medians over several runs; this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
            p50, p99 = await probe_latency(
                http, a.url, b.url, b_name, recipients, args, loaded=True
            )
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


async def fairness_run(args: argparse.Namespace) -> dict:
    """One sender floods A for B while another sender's probes to B are timed (module doc)."""
    a, b = pair()
    b_name = f"127.0.0.1:{b.port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        try:
            await a.wait_ready(http)
            await b.wait_ready(http)
            recipients = [Identity.generate().address for _ in range(500)]
            flooder = Identity.generate()
            t = now_ms()
            flood = [
                json.dumps({"message": compose(flooder, to, f"flood {i}", subject="bulk",
                                               now_ms=t).primary,
                            "domains": {to: b_name}}).encode()
                for i, to in enumerate(recipients[i % len(recipients)]
                                       for i in range(args.flood))
            ]  # fmt: skip
            idle = await probe_latency(http, a.url, b.url, b_name, recipients, args, loaded=False)
            before = await stored_at(http, b.url)
            watcher = Identity.generate()
            token = await session_token(http, b.url, watcher)
            async with http.ws_connect(f"{b.url.replace('http', 'ws')}/ws") as ws:
                await ws.send_json({"action": "auth", "token": token})
                assert (await ws.receive_json()).get("action") == "authed"
                pushed: dict[str, float] = {}
                starts: dict[str, float] = {}  # probe id -> its submission
                answered: dict[str, float] = {}  # probe id -> A's answer (queued)
                reader = asyncio.create_task(_pushes(ws, pushed))
                start = time.perf_counter()
                flooding = asyncio.create_task(post_all(http, a.url, flood, 32))
                probing = asyncio.create_task(
                    _open_loop_probes(http, a.url, b_name, watcher.address, starts, answered, args)
                )
                accepted = await flooding
                accept_s = time.perf_counter() - start
                # drained: B holds the flood (its count less the probes pushed so far,
                # each stored before its push)
                while await stored_at(http, b.url) - before - len(pushed) < accepted:
                    await asyncio.sleep(0.02)  # polling another process's counter
                drain_s = time.perf_counter() - start
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
                for _ in range(500):  # the last probes' pushes, at most 5 s
                    if all(i in pushed for i in starts):
                        break
                    await asyncio.sleep(0.01)  # waiting for frames another process sends
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            samples = [pushed[i] - at for i, at in starts.items() if i in pushed]
            submits = [answered[i] - at for i, at in starts.items() if i in answered]
            queued = [pushed[i] - answered[i] for i in starts if i in pushed and i in answered]
        finally:
            a.stop()
            b.stop()
    return {"idle_p50_ms": idle[0], "idle_p99_ms": idle[1],
            "flood_p50_ms": pct(samples, 0.5), "flood_p99_ms": pct(samples, 0.99),
            "submit_p50_ms": pct(submits, 0.5), "submit_p99_ms": pct(submits, 0.99),
            "queue_p50_ms": pct(queued, 0.5), "queue_p99_ms": pct(queued, 0.99),
            "probes": len(samples), "accept_msgs_per_s": accepted / accept_s,
            "drain_msgs_per_s": accepted / drain_s,
            "drain_vs_accept_pct": 100 * accept_s / drain_s}  # fmt: skip


async def _pushes(ws: aiohttp.ClientWebSocketResponse, pushed: dict[str, float]) -> None:
    """Note when each message is pushed on `ws`, by id."""
    while True:
        frame = await ws.receive_json()
        if frame.get("action") == "message":
            pushed.setdefault(frame["message"]["id"], time.perf_counter())


async def _open_loop_probes(
    http: aiohttp.ClientSession, a_url: str, b_name: str, to: str,
    starts: dict[str, float], answered: dict[str, float], args: argparse.Namespace,
) -> None:  # fmt: skip
    """A probe every `--probe-every-ms` from one sender until cancelled, each submitted on
    its own task (a slow answer does not delay the next); when it was submitted noted in
    `starts`, when A answered (it is queued) in `answered`."""
    prober = Identity.generate()
    submitting: set[asyncio.Task] = set()

    async def submit(msg: dict) -> None:
        async with http.post(f"{a_url}/send", json={"message": msg, "domains": {to: b_name}}) as r:
            await r.read()
        answered[msg["id"]] = time.perf_counter()

    try:
        for i in itertools.count():
            msg = compose(prober, to, f"probe {i}", now_ms=now_ms()).primary
            starts[msg["id"]] = time.perf_counter()
            task = asyncio.create_task(submit(msg))
            submitting.add(task)
            task.add_done_callback(submitting.discard)
            await asyncio.sleep(args.probe_every_ms / 1000)  # the open loop's pace
    finally:
        await asyncio.gather(*submitting, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["throughput", "fairness", "both"], default="both")
    parser.add_argument("--messages", type=int, default=3000, help="throughput: messages")
    parser.add_argument("--probes", type=int, default=200, help="probes per latency phase")
    parser.add_argument("--flood", type=int, default=10_000, help="fairness: the flood's size")
    parser.add_argument("--probe-every-ms", type=float, default=50.0,
                        help="fairness: one probe this often during the flood")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.mode in ("throughput", "both"):
        report("throughput", [asyncio.run(one_run(args)) for _ in range(args.runs)])
    if args.mode in ("fairness", "both"):
        report("fairness", [asyncio.run(fairness_run(args)) for _ in range(args.runs)])


def report(mode: str, runs: list[dict]) -> None:
    for n, run in enumerate(runs, 1):
        print(f"{mode} run {n}: " + ", ".join(f"{k} {v:.1f}" for k, v in run.items()))
    print(f"{mode} median: " + ", ".join(
        f"{k} {statistics.median(r[k] for r in runs):.1f} "
        f"[{min(r[k] for r in runs):.1f}-{max(r[k] for r in runs):.1f}]"
        for k in runs[0]))  # fmt: skip


if __name__ == "__main__":
    main()
