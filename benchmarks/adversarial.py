"""Adversarial benchmark: what a legitimate user keeps while strangers attack (issue 10).

    .venv/bin/python benchmarks/adversarial.py [--seconds 5] [--runs 3] [--only NAME ...]

One real `flux server` process (SQLite, durable, open mode) on 127.0.0.1. In every phase
the same legitimate client measures, for `--seconds`:

* its `/health` rate (requests/s, one request at a time: what a load balancer sees). The
  probe comes from the load balancer itself (127.0.0.1, in FLUX_TRUSTED_PROXIES), whose
  own requests no per-address budget counts: it measures what is left of the server's
  loop, not its own budget;
* its submit latency (p50/p99), correspondents the victim has written to before writing
  to it every 50 ms in all, from 20 loopback addresses (127.0.0.10-29, one message a
  second each) and a rotating set of keys (so neither the per-address budget nor the
  20/min per-sender rate limit refuses them);
* how many of its submissions were acknowledged, and, at the end, that every acknowledged
  message is in the victim's mailbox (nothing acknowledged is lost).

First with no attack (the yardstick, measured in the same run), then during each attack:

* `heavy`: 3 connections sending 64 KiB of ~20,000 distinct characters (fresh keys);
* `ratelimited`: the same content from one key, already over its rate limit;
* `sybil`: fresh keys filling the victim's pending quota;
* `login`: password logins with rotating usernames (argon2 for each);
* `slowloris`: 200 connections sending one header byte every second;
* `slowreaders`: 50 WebSockets that never read, while mail is pushed to them;
* `junkfed`: signed-looking `/federation/deliver` with made-up key ids and junk
  `/integrity/tamper_report`s naming many servers.

Each attack runs in a process of its own, so its CPU competes for the machine as a real
attacker's would, not for the legitimate client's event loop. Reported per attack: health
rate and submit p99 as ratios to the idle phase (aim: the legitimate client keeps at least
half of its idle rate), the share of its submissions acknowledged, lost messages (aim: 0),
and the answers the attacker got per second (how far the per-address budgets let it go;
none for `slowloris`, which is never answered). Medians and spreads over `--runs`; the
machine is shared, so read the spread. Every load is bounded in count and time and
targets only 127.0.0.1.

To see an attack without the per-address request budget, run the benchmark with
FLUX_REQUESTS_PER_ADDRESS_PER_S=0 in its environment (the server inherits it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import random
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from ingest import ServerProcess, now_ms, pct, session_token

from flux.protocol import Identity, compose

#: Attackers connect from another loopback address than the legitimate client (127.0.0.1),
#: as they would from another host: per-address limits are part of what is measured.
ATTACKER_ADDRESS = "127.0.0.2"
#: the legitimate /health probe: the load balancer in front of the server
PROBE_ADDRESS = "127.0.0.1"
#: the legitimate correspondents' addresses (20 messages a second in all, one each)
LEGIT_ADDRESSES = [f"127.0.0.{10 + n}" for n in range(20)]
HEAVY = "".join(chr(0x4E00 + i) for i in range(20_000))[: 64 * 1024 // 3]


#: the answers the attacker got, by HTTP status: each attack runs in a process of its own
#: (run_attack), and this is that process's tally, sent back to the benchmark at the end
ATTACKER_ANSWERS: collections.Counter[int] = collections.Counter()


def attacker_session() -> aiohttp.ClientSession:
    async def answered(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        ATTACKER_ANSWERS[params.response.status] += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(answered)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(ATTACKER_ADDRESS, 0)), trace_configs=[trace]
    )


@dataclass
class Legit:
    """The legitimate client's view of one phase."""

    health: int = 0
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    acked: list[str] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)


async def legit_client(
    http: aiohttp.ClientSession,
    url: str,
    victim: Identity,
    senders: list[Identity],
    seconds: float,
) -> Legit:
    out = Legit()
    deadline = time.monotonic() + seconds

    async def health() -> None:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/health") as r:
                    if r.status == 200:
                        out.health += 1
            except aiohttp.ClientError:
                await asyncio.sleep(0.01)

    # The correspondents are people on their own machines: each of LEGIT_ADDRESSES sends
    # about one message a second, so no per-address budget is what refuses them.
    users = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
        for address in LEGIT_ADDRESSES
    ]

    async def submit() -> None:
        i = 0
        while time.monotonic() < deadline:
            sender = senders[i % len(senders)]
            msg = compose(sender, victim.address, f"hello {i}", now_ms=now_ms()).primary
            started = time.perf_counter()
            out.sent += 1
            try:
                async with users[i % len(users)].post(url + "/send", json=msg) as r:
                    await r.read()
                    if r.status == 200:
                        out.acked.append(msg["id"])
                        out.latencies.append(time.perf_counter() - started)  # pct(): ms
                    else:
                        out.refused[r.status] = out.refused.get(r.status, 0) + 1
            except aiohttp.ClientError:
                out.refused[0] = out.refused.get(0, 0) + 1
            i += 1
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(health(), submit())
    finally:
        for user in users:
            await user.close()
    return out


# -- attacks: each runs until `stop` is set ----------------------------------------------


async def attack_heavy(url: str, stop: asyncio.Event, *, one_key: bool = False) -> None:
    key = Identity.generate()
    async with attacker_session() as http:

        async def one() -> None:
            while not stop.is_set():
                sender = key if one_key else Identity.generate()
                msg = compose(sender, Identity.generate().address, HEAVY, now_ms=now_ms())
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url + "/send", json=msg.primary) as r:
                        await r.read()

        await asyncio.gather(*(one() for _ in range(3)))


async def attack_sybil(url: str, stop: asyncio.Event, victim: str) -> None:
    async with attacker_session() as http:

        async def one() -> None:
            while not stop.is_set():
                msg = compose(Identity.generate(), victim, "buy now", now_ms=now_ms())
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url + "/send", json=msg.primary) as r:
                        await r.read()

        await asyncio.gather(*(one() for _ in range(4)))


async def attack_login(url: str, stop: asyncio.Event) -> None:
    async with attacker_session() as http:

        async def one(n: int) -> None:
            i = 0
            while not stop.is_set():
                body = {"username": f"user{n}x{i}", "password": "wrong password"}
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url + "/account/login", json=body) as r:
                        await r.read()
                i += 1

        await asyncio.gather(*(one(n) for n in range(8)))


async def attack_slowloris(url: str, stop: asyncio.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(
                    host, int(port), local_addr=(ATTACKER_ADDRESS, 0)
                )
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                writers.append(writer)
        while not stop.is_set():
            for writer in writers:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write(b"X")
            await asyncio.sleep(1.0)
    finally:
        for writer in writers:
            writer.close()


async def attack_slowreaders(url: str, stop: asyncio.Event) -> None:
    readers = [Identity.generate() for _ in range(50)]
    async with attacker_session() as http:
        sockets = []
        for ident in readers:
            token = await session_token(http, url, ident)
            ws = await http.ws_connect(url.replace("http", "ws") + "/ws", heartbeat=None)
            await ws.send_json({"action": "auth", "token": token})
            sockets.append(ws)  # never read again
        sender = 0
        while not stop.is_set():
            for ident in readers:
                msg = compose(Identity.generate(), ident.address, "x" * 4000, now_ms=now_ms())
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url + "/send", json=msg.primary) as r:
                        await r.read()
                sender += 1
                if stop.is_set():
                    break
        for ws in sockets:
            await ws.close()


async def attack_junkfed(url: str, stop: asyncio.Event) -> None:
    async with attacker_session() as http:
        i = 0
        while not stop.is_set():
            name = f"junk{i}.invalid"
            headers = {
                "Signature-Input": f'sig1=("@method");keyid="{name}";created={int(time.time())}',
                "Signature": "sig1=:AAAA:", "Content-Digest": "sha-256=:AAAA:",
            }  # fmt: skip
            body = {"txn": uuid.uuid4().hex, "from_server": name, "messages": []}
            chain = [{"server": f"s{n}.invalid"} for n in range(33)]
            report = {"type": "tamper_report", "reporter": name, "offender": "x.invalid",
                      "t": now_ms(), "msg_id": "m", "sig": "", "pub": "", "kind": "forged_body",
                      "integrity_chain": chain, "msg_hash_baseline": "",
                      "envelope": {"id": "m", "integrity_chain": chain}}  # fmt: skip
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(url + "/federation/deliver", json=body, headers=headers) as r:
                    await r.read()
                async with http.post(url + "/integrity/tamper_report", json=report) as r:
                    await r.read()
            i += 1


Attack = Callable[[str, asyncio.Event, str], Awaitable[None]]
ATTACKS: dict[str, Attack] = {
    "heavy": lambda url, stop, victim: attack_heavy(url, stop),
    "ratelimited": lambda url, stop, victim: attack_heavy(url, stop, one_key=True),
    "sybil": attack_sybil,
    "login": lambda url, stop, victim: attack_login(url, stop),
    "slowloris": lambda url, stop, victim: attack_slowloris(url, stop),
    "slowreaders": lambda url, stop, victim: attack_slowreaders(url, stop),
    "junkfed": lambda url, stop, victim: attack_junkfed(url, stop),
}


async def stored_ids(http: aiohttp.ClientSession, url: str, victim: Identity) -> set[str]:
    token = await session_token(http, url, victim)
    ids: set[str] = set()
    cursor = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        async with http.get(
            f"{url}/inbox/{victim.address}", params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:  # fmt: skip
            page = await r.json()
        ids |= {m["id"] for m in page.get("messages", [])}
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def run_attack(
    name: str, url: str, victim: str, stop: multiprocessing.synchronize.Event,
    answers: multiprocessing.Queue,
) -> None:  # fmt: skip
    """An attack in a process of its own: its CPU (key generation, signing) must not slow
    the legitimate client's event loop, only the server's machine, as a real one would.
    Puts on `answers` the HTTP statuses it got (counts) and how long it attacked (s)."""

    async def go() -> None:
        started = time.monotonic()
        stopped = asyncio.Event()
        task = asyncio.create_task(ATTACKS[name](url, stopped, victim))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        stopped.set()
        answers.put((dict(ATTACKER_ANSWERS), time.monotonic() - started))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await task

    asyncio.run(go())


async def known_correspondents(
    http: aiohttp.ClientSession, url: str, victim: Identity, count: int = 8
) -> list[Identity]:
    """Senders the victim has written to (so a server that screens strangers knows them)."""
    senders = [Identity.generate() for _ in range(count)]
    for sender in senders:
        msg = compose(victim, sender.address, "hi, write to me", now_ms=now_ms()).primary
        async with http.post(url + "/send", json=msg) as r:
            await r.read()
    return senders


async def phase(
    http: aiohttp.ClientSession, url: str, name: str, seconds: float
) -> tuple[Legit, int, dict[str, Any]]:
    """One phase on a fresh victim: (the legitimate client's view, acknowledged but lost,
    what the attacker got: answers a second and their statuses)."""
    victim = Identity.generate()
    # 20 messages a second spread so that no key passes 15 a minute (the limit is 20)
    senders = await known_correspondents(http, url, victim, int(seconds * 20 / 15) + 2)
    stop = multiprocessing.Event()
    answers: multiprocessing.Queue = multiprocessing.Queue()
    attacker = None
    if name != "idle":
        attacker = multiprocessing.Process(
            target=run_attack, args=(name, url, victim.address, stop, answers), daemon=True
        )
        attacker.start()
        await asyncio.sleep(min(1.0, seconds / 5))  # let the attack get going
    legit = await legit_client(http, url, victim, senders, seconds)
    stop.set()
    got: dict[str, Any] = {}
    if attacker is not None:
        with contextlib.suppress(Exception):  # an attack that died tells nothing
            statuses, lasted = await asyncio.to_thread(answers.get, True, 20)
            got = {"answers_per_s": sum(statuses.values()) / lasted, "statuses": statuses}
        await asyncio.to_thread(attacker.join, 20)
        if attacker.is_alive():
            attacker.kill()
    lost = len(set(legit.acked) - await stored_ids(http, url, victim))
    return legit, lost, got


async def one_run(args: argparse.Namespace) -> dict[str, dict]:
    # The server's defaults, every limit on: the defences are what this measures.
    # 127.0.0.1 is the load balancer: its /health probe is a trusted proxy's own request,
    # which no per-address budget counts (connections.py RequestTurns), so the probe
    # measures what is left of the loop, not its own budget. Every other client, the
    # attacker (127.0.0.2) and the correspondents (127.0.0.10-29) included, is counted.
    server = ServerProcess(
        "sqlite", env={"FLUX_LOG_LEVEL": "error", "FLUX_TRUSTED_PROXIES": PROBE_ADDRESS},
        load_generator=False,
    )  # fmt: skip
    results: dict[str, dict] = {}
    try:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await server.wait_ready(http)
            for name in ["idle", *args.only]:
                legit, lost, attacker = await phase(http, server.url, name, args.seconds)
                results[name] = {
                    "health_rps": legit.health / args.seconds,
                    "submit_p50_ms": pct(legit.latencies, 0.5),
                    "submit_p99_ms": pct(legit.latencies, 0.99),
                    "acked_share": len(legit.acked) / max(legit.sent, 1),
                    "refused": legit.refused,
                    "lost": lost,
                    "attacker": attacker,
                }
                print(f"  {name:12s} {json.dumps(results[name])}", flush=True)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(ATTACKS), choices=list(ATTACKS))
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, {socket.gethostname()}")
    runs = []
    for n in range(args.runs):
        print(f"run {n + 1}/{args.runs}", flush=True)
        runs.append(asyncio.run(one_run(args)))
    print("\nattack        health (x idle)      submit p99 (x idle)   acked   lost"
          "   attacker answers/s")  # fmt: skip
    for name in args.only:
        health = [r[name]["health_rps"] / r["idle"]["health_rps"] for r in runs]
        p99 = [r[name]["submit_p99_ms"] / r["idle"]["submit_p99_ms"] for r in runs]
        acked = [r[name]["acked_share"] for r in runs]
        lost = sum(r[name]["lost"] for r in runs)
        rates = [r[name]["attacker"].get("answers_per_s", 0.0) for r in runs]
        print(
            f"{name:12s}  {statistics.median(health):5.2f} ({min(health):.2f}-{max(health):.2f})"
            f"   {statistics.median(p99):6.2f} ({min(p99):.2f}-{max(p99):.2f})"
            f"   {statistics.median(acked):5.0%}   {lost}"
            f"   {statistics.median(rates):7.0f} ({min(rates):.0f}-{max(rates):.0f})"
        )


if __name__ == "__main__":
    random.seed(1)
    main()
