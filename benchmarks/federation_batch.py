"""Does a flood of valid federation batches starve /health? (issue 10 §1)

    .venv/bin/python benchmarks/federation_batch.py [--runs 3] [--seconds 6] [--senders 4]

Two `flux server` processes on 127.0.0.1 (SQLite, open mode, plain HTTP peers): A only
publishes its key; this script seals valid 100-message batches in A's name (A's key file
is made here before A starts) and POSTs them, signed as A, to B's /federation/deliver from
`--senders` concurrent loops. Every message is checked in full by B (sender signature,
A's seal, the chain: Ed25519 and canonical JSON); the first pass of each batch is stored,
later passes of the same batch are answered `duplicate` after the same checks.

Meanwhile one client probes B's /health in a loop. Reported per run: /health requests per
second while idle and under the flood (same run, same process), their ratio, and the
batches' message rate; then medians and spread (min–max) over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ServerProcess, free_port, now_ms

from flux.federation.signing import sign_request
from flux.protocol import Identity, append_hop, compose
from flux.server.keys import load_or_create

BATCH = 100
#: ordinary words: a body of one repeated character is refused as spam ("repetitive
#: content"), which measured the refusal path (and its offense search), not acceptance
WORDS = [
    "the",
    "a",
    "meeting",
    "report",
    "draft",
    "budget",
    "team",
    "notes",
    "for",
    "on",
    "with",
    "about",
    "review",
    "plan",
    "next",
    "week",
    "project",
    "client",
    "update",
    "friday",
    "numbers",
    "agenda",
]
LOOSE = {
    "FLUX_SPAM_RATE_PER_MINUTE": "100000000", "FLUX_PEER_MESSAGES_PER_MINUTE": "100000000",
    "FLUX_PENDING_QUOTA": "100000000", "FLUX_MAX_CONNECTIONS_PER_ADDRESS": "100000",
}  # fmt: skip


def batches(count: int, signer, b_name: str) -> list[list[dict]]:
    """`count` batches of valid messages, each sealed by A to B."""
    senders = [Identity.generate() for _ in range(20)]
    recipients = [Identity.generate().address for _ in range(50)]
    t, out, rng = now_ms(), [], random.Random(count)
    for n in range(count):
        batch = []
        for i in range(BATCH):
            k = n * BATCH + i
            msg = compose(senders[k % 20], recipients[k % 50], f"federated {k} " + " ".join(rng.choices(WORDS, k=90)),
                          subject="bench", now_ms=t).primary  # fmt: skip
            batch.append(append_hop(msg, signer, next_hop=b_name, now_ms=t))
        out.append(batch)
    return out


async def post(http: aiohttp.ClientSession, signer, b_url: str, b_name: str, batch) -> int:
    body = json.dumps({"txn": uuid.uuid4().hex, "from_server": signer.name,
                       "messages": batch}).encode()  # fmt: skip
    headers = sign_request(signer, "POST", b_name, "/federation/deliver", body,
                           now_s=int(time.time()))  # fmt: skip
    async with http.post(f"{b_url}/federation/deliver", data=body, headers=headers) as r:
        answer = await r.json()
        if r.status != 200:
            raise SystemExit(f"deliver answered {r.status}: {answer}")
        refused = [x for x in answer["results"] if "refused" in x]
        if refused:  # every message is valid: a refusal means the benchmark measures nothing
            raise SystemExit(f"deliver refused {len(refused)} messages: {refused[0]}")
        return len(answer["results"])


async def health_rate(http: aiohttp.ClientSession, url: str, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        async with http.get(url + "/health") as r:
            await r.read()
        done += 1
    return done / (time.perf_counter() - start)


async def one_run(args: argparse.Namespace) -> dict[str, float]:
    ports = free_port(), free_port()
    env = {**LOOSE, "FLUX_INSECURE_PEERS": ",".join(f"127.0.0.1:{p}" for p in ports)}
    a_dir = tempfile.mkdtemp(prefix="flux-bench-")
    a_key = load_or_create(Path(a_dir), f"127.0.0.1:{ports[0]}", now_ms())  # A starts on it
    a = ServerProcess("sqlite", port=ports[0], env=env, data_dir=a_dir)
    b = ServerProcess("sqlite", port=ports[1], env=env)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await a.wait_ready(http)
            await b.wait_ready(http)
            signer = a_key.signer
            b_name = f"127.0.0.1:{ports[1]}"
            work = batches(args.batches, signer, b_name)
            await post(http, signer, b.url, b_name, work[0])  # B fetches A's keys once
            idle = await health_rate(http, b.url, args.seconds)
            sent, stop = 0, asyncio.Event()

            async def sender(offset: int) -> None:
                nonlocal sent
                n = offset
                while not stop.is_set():
                    sent += await post(http, signer, b.url, b_name, work[n % len(work)])
                    n += args.senders

            tasks = [asyncio.create_task(sender(i)) for i in range(args.senders)]
            await asyncio.sleep(0.5)  # the flood is under way
            start_sent, t0 = sent, time.perf_counter()
            loaded = await health_rate(http, b.url, args.seconds)
            rate = (sent - start_sent) / (time.perf_counter() - t0)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        a.stop()
        b.stop()
    return {"idle": idle, "loaded": loaded, "ratio": loaded / idle, "msgs_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        r = asyncio.run(one_run(args))
        runs.append(r)
        print(f"run {n + 1}: /health idle {r['idle']:.0f}/s, under flood {r['loaded']:.0f}/s "
              f"(ratio {r['ratio']:.3f}); {r['msgs_per_s']:.0f} msgs/s verified")  # fmt: skip
    for key in ("idle", "loaded", "ratio", "msgs_per_s"):
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.3f} "
              f"(min {min(values):.3f}, max {max(values):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
