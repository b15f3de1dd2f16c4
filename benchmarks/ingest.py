"""Ingest benchmark: a real `flux server` process under load (issue: FLUX server).

    .venv/bin/python benchmarks/ingest.py [--seconds 10] [--runs 3] [--concurrency 32]
                                          [--db sqlite|memory|postgresql://...] [--sockets 10000]

What it measures, against a server started as its own process on 127.0.0.1:

* accepted messages/s and p50/p99 submit latency at concurrency 32, durable SQLite by
  default (each message from a distinct-enough sender that the spam rate limit, 20/min per
  sender, never interferes, to recipients spread so no pending quota is reached);
* WebSocket push latency p50/p99 (send → frame received) for one watcher while 16 other
  senders load the server (closed loop: this measures the queue the senders build, not
  FLUX), and, with `--open-loop` (the default), while an open-loop load arrives at a fixed
  rate of 50 % and of 90 % of the accepted rate just measured: submissions are started on
  schedule whether or not earlier ones were answered, as real senders do, by a process of
  their own; beside each push p99, the p99 of bare durable commits on the same disk in the
  same seconds (a push follows its message's commit: that is its floor);
* the bare pipeline (benchmarks/bare_pipeline.py, the yardstick) on the same messages,
  loaded in turns with FLUX (`--slices` turns of each within `--seconds`), so that the
  ratio FLUX / bare is taken under the same load from the rest of the machine; and the
  server's CPU per message over the warm-up and that load (not start-up, not the pushes);
* the server's peak RSS under that load, and over the push phases that follow (an open
  loop at 90 % may queue hundreds of requests);
* the memory of 10,000 idle authenticated WebSocket connections (RSS after − before).

Messages are built before the clock starts, so the numbers are the server's, not the
load generator's signing. Report medians over several runs; this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp

from flux.protocol import Identity, compose

ROOT = Path(__file__).resolve().parent.parent


PROBES_PER_S = 50  # push probes a second, one at a time (fewer when each takes longer)


def now_ms() -> int:
    return int(time.time() * 1000)


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A load generator is many clients on one address (127.0.0.1): the limits meant for
#: strangers (per-address budgets and connection cap, the stranger share of a mailbox)
#: would measure those limits, not the server. benchmarks/adversarial.py keeps them on.
LOAD_GENERATOR_ENV = {
    "FLUX_SUBMIT_PER_IP_PER_MINUTE": "100000000", "FLUX_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "FLUX_STRANGER_PENDING_TOTAL": "100000", "FLUX_STRANGER_PENDING_PER_SENDER": "100000",
    "FLUX_PEER_MESSAGES_PER_MINUTE": "100000000", "FLUX_REQUESTS_PER_ADDRESS_PER_S": "0",
}  # fmt: skip


class ServerProcess:
    def __init__(
        self, db: str, *, bare: bool = False, port: int | None = None,
        env: dict[str, str] | None = None, data_dir: str | None = None,
        domain: str | None = None, load_generator: bool = True,
    ) -> None:  # fmt: skip
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = data_dir or tempfile.mkdtemp(prefix="flux-bench-")
        if bare:  # the yardstick: benchmarks/bare_pipeline.py, same machine, same run
            args = [
                sys.executable, str(ROOT / "benchmarks" / "bare_pipeline.py"), "--server-only",
                "--port", str(self.port), "--db", os.path.join(self.dir, "bare.db"),
            ]  # fmt: skip
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
            return
        args = [
            sys.executable, "-m", "flux", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--domain", domain or f"127.0.0.1:{self.port}",
            "--data-dir", self.dir, "--open",
        ]  # fmt: skip
        if db.startswith("postgres"):
            args += ["--db", db]
        else:
            args += ["--backend", db]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **(LOAD_GENERATOR_ENV if load_generator else {}), **(env or {})},
        )

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        for _ in range(600):
            try:
                async with http.get(self.url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            await asyncio.sleep(0.05)  # polling a process we do not control
        raise SystemExit("server did not become healthy")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def build_messages(count: int, recipients: list[str]) -> list[bytes]:
    senders = [Identity.generate() for _ in range(max(1, count // 15 + 1))]
    t = now_ms()
    out = []
    for i in range(count):
        msg = compose(
            senders[i // 15], recipients[i % len(recipients)],
            f"benchmark message {i}: the quick brown fox jumps over the lazy dog",
            subject="bench", now_ms=t,
        ).primary  # fmt: skip
        out.append(json.dumps(msg).encode())
    return out


async def session_token(http: aiohttp.ClientSession, url: str, ident: Identity) -> str:
    async with http.get(f"{url}/auth/challenge", params={"address": ident.address}) as r:
        ch = await r.json()
    sig = ident.sign(f"flux-auth:1:{ch['domain']}:{ch['challenge']}")
    body = {
        "address": ident.address,
        "pub": ident.pub_b64(),
        "challenge": ch["challenge"],
        "sig": sig,
    }
    async with http.post(f"{url}/auth/session", json=body) as r:
        return (await r.json())["token"]


async def load(
    http: aiohttp.ClientSession,
    url: str | list[str],
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
) -> tuple[int, list[float], int]:
    """Post bodies with `concurrency` workers for `seconds`; return (ok, latencies, errors).
    With several URLs (processes of one cluster), worker i posts to URL i mod n."""
    urls = [url] if isinstance(url, str) else url
    latencies: list[float] = []
    errors = 0
    index = 0
    deadline = time.perf_counter() + seconds

    async def worker(url: str) -> None:
        nonlocal index, errors
        while time.perf_counter() < deadline and index < len(bodies):
            body = bodies[index]
            index += 1
            start = time.perf_counter()
            async with http.post(f"{url}/send", data=body,
                                 headers={"Content-Type": "application/json"}) as r:  # fmt: skip
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return len(latencies), latencies, errors


async def open_loop(
    http: aiohttp.ClientSession,
    urls: list[str],
    bodies: list[bytes],
    rate: float,
    seconds: float,
) -> tuple[int, int, float]:
    """Start one submission every 1/`rate` s for `seconds`, each without waiting for the
    earlier ones (an open loop: a slow server meets the same arrivals, so latency shows
    its queue); return (accepted, errors, achieved arrival rate)."""
    done = {"ok": 0, "errors": 0}

    async def post(url: str, body: bytes) -> None:
        async with http.post(f"{url}/send", data=body,
                             headers={"Content-Type": "application/json"}) as r:  # fmt: skip
            await r.read()
            done["ok" if r.status == 200 else "errors"] += 1

    tasks = set()
    start = time.perf_counter()
    sent = 0
    while sent < len(bodies) and time.perf_counter() - start < seconds:
        due = start + sent / rate
        wait = due - time.perf_counter()
        if wait > 0:  # behind schedule: start the late ones at once, never skip them
            await asyncio.sleep(wait)
        task = asyncio.create_task(post(urls[sent % len(urls)], bodies[sent]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    achieved = sent / (time.perf_counter() - start)
    await asyncio.gather(*tasks)
    return done["ok"], done["errors"], achieved


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def measure_ingest(args: argparse.Namespace) -> dict:
    async with bench_database(args.db) as db:
        shared = tempfile.mkdtemp(prefix="flux-bench-") if args.processes > 1 else None
        servers = [ServerProcess(db, data_dir=shared)]
        conn = aiohttp.TCPConnector(limit=0)
        bare: ServerProcess | None = None
        async with aiohttp.ClientSession(connector=conn) as http:
            try:
                await servers[0].wait_ready(http)  # it makes the key the others then load
                domain = f"127.0.0.1:{servers[0].port}"  # one domain, served by every process
                for _ in range(args.processes - 1):
                    servers.append(ServerProcess(db, data_dir=shared, domain=domain))
                    await servers[-1].wait_ready(http)
                urls = [s.url for s in servers]
                recipients = [Identity.generate().address for _ in range(2000)]
                expected = int(args.seconds * 6000) + 1000
                bodies = build_messages(expected, recipients)
                if args.bare:  # the yardstick, loaded in turns with FLUX (see `interleaved`)
                    bare = ServerProcess("sqlite", bare=True)
                    await bare.wait_ready(http)
                    await load(http, bare.url, bodies[:500], args.concurrency, 5)
                cpu_before = sum(cpu_seconds(s.proc.pid) for s in servers)
                await load(http, urls, bodies[:500], args.concurrency, 5)  # warm-up
                ok, lat, errors, elapsed, bare_rate = await interleaved(
                    http, urls, bare.url if bare else None, bodies[500:], args
                )
                # the CPU of the warm-up and the load alone (not start-up, not the pushes)
                cpu_s = sum(cpu_seconds(s.proc.pid) for s in servers) - cpu_before
                # peak RSS under the load at --concurrency (the aim's figure), before the
                # push phases, whose open loop at 90 % may queue hundreds of requests
                peak = max(rss_kb(s.proc.pid, "VmHWM") for s in servers)
                if bare is not None:
                    bare.stop()
                    bare = None
                push = await measure_push(http, urls, recipients, args)
                rate = ok / elapsed
                open_push = {
                    share: await measure_push(http, urls, recipients, args, rate=share * rate)
                    for share in ((0.5, 0.9) if args.open_loop else ())
                }
                peak_all = max(rss_kb(s.proc.pid, "VmHWM") for s in servers)
                sockets = (
                    await measure_sockets(http, servers[0], args.sockets)
                    if args.sockets and args.processes == 1
                    else None
                )
            finally:
                for server in [*servers, *([bare] if bare else [])]:
                    server.stop()
    return {
        "msgs_per_s": ok / elapsed, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
        "errors": errors, "push_p50_ms": push[0], "push_p99_ms": push[1],
        "push_commit_p99_ms": push[2],
        "peak_rss_mb": peak / 1024,
        "peak_rss_push_phases_mb": peak_all / 1024, "sockets": sockets, "bare_msgs_per_s": bare_rate,
        "vs_bare_pct": 100 * ok / elapsed / bare_rate,
        "server_cpu_ms_per_msg": 1000 * cpu_s / max(1, ok + 500),
        **{f"open{round(share * 100)}_push_{k}_ms": v
           for share, got in open_push.items() for k, v in zip(("p50", "p99", "commit_p99"), got, strict=True)},
    }  # fmt: skip


@contextlib.asynccontextmanager
async def bench_database(db: str) -> AsyncIterator[str]:
    """The --db to give the servers: for PostgreSQL, a fresh schema for this run (dropped
    after), so runs neither see nor slow each other."""
    if not db.startswith("postgres"):
        yield db
        return
    import asyncpg

    schema = f"flux_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{db}{'&' if '?' in db else '?'}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def interleaved(
    http: aiohttp.ClientSession,
    urls: list[str],
    bare_url: str | None,
    bodies: list[bytes],
    args: argparse.Namespace,
) -> tuple[int, list[float], int, float, float]:
    """FLUX's load and the bare pipeline's (same messages, its own database) in turns of
    `--seconds / --slices` each, for `--seconds` each in all: (FLUX's accepted, latencies,
    errors, its loaded seconds, the bare pipeline's accepted msgs/s, NaN without it).

    Why in turns: on a shared machine the other work changes within seconds, and one
    block of FLUX then one of the yardstick measured them under different loads (runs
    of one build gave 16-48 % of bare). In turns, both see the same drift."""
    slice_s = args.seconds / max(1, args.slices)
    ok = errors = bare_ok = 0
    latencies: list[float] = []
    elapsed = bare_elapsed = 0.0
    mine = theirs = 0  # the next body of each: each server takes the list in order
    for _ in range(max(1, args.slices)):
        start = time.perf_counter()
        got, lat, bad = await load(http, urls, bodies[mine:], args.concurrency, slice_s)
        elapsed += time.perf_counter() - start
        ok, errors, mine = ok + got, errors + bad, mine + got + bad
        latencies += lat
        if bare_url is not None:
            start = time.perf_counter()
            got, _, bad = await load(http, bare_url, bodies[theirs:], args.concurrency, slice_s)
            bare_elapsed += time.perf_counter() - start
            bare_ok, theirs = bare_ok + got, theirs + got + bad
    bare_rate = bare_ok / bare_elapsed if bare_url is not None else float("nan")
    return ok, latencies, errors, elapsed, bare_rate


def _open_loop_process(
    urls: list[str], bodies: list[bytes], rate: float, seconds: float, pipe: Connection
) -> None:
    """The open-loop load, in a process of its own: on one event loop with the probe,
    the probe's frames would wait behind the loader's own hundreds of submissions a
    second, and its latency would measure the load generator, not the server."""

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            pipe.send("ready")
            pipe.send(await open_loop(http, urls, bodies, rate, seconds))

    asyncio.run(run())


class CommitYardstick:
    """Bare durable commits (SQLite WAL, synchronous=FULL, one 2 KB row each) at
    PROBES_PER_S a second on the server's filesystem while the probes run: a push is sent
    only after its message's commit, so the commit's own p99 on this disk, at this moment,
    is the floor under the push's (it waits for at least one such commit, often the one in
    progress too)."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="flux-bench-disk-")
        self._stop = threading.Event()
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommitYardstick:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _run(self) -> None:
        db = sqlite3.connect(os.path.join(self._dir, "disk.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        row = os.urandom(2048)
        while not self._stop.wait(1 / PROBES_PER_S):
            start = time.perf_counter()
            db.execute("INSERT INTO t (body) VALUES (?)", (row,))
            self.samples.append(time.perf_counter() - start)
        db.close()


async def measure_push(
    http: aiohttp.ClientSession,
    urls: list[str],
    recipients: list[str],
    args: argparse.Namespace,
    rate: float | None = None,
) -> tuple[float, float, float]:
    """Submit → push latency (p50, p99 in ms) of probes while the server is loaded: by 16
    closed-loop senders, or with `rate` by an open loop at that many messages/s started in
    a process of its own. Probes go one at a time, up to PROBES_PER_S a second, so p99
    rests on a few hundred samples. The watcher's socket is on the last process, probes go
    to the first: with two processes every push crosses between them (PostgreSQL
    LISTEN/NOTIFY). Third: the p99 of bare commits on the same disk meanwhile
    (`CommitYardstick`)."""
    url, watch_url = urls[0], urls[-1]
    watcher = Identity.generate()
    prober = Identity.generate()
    token = await session_token(http, watch_url, watcher)
    count = int(args.push_seconds * (rate or 3000)) + 500
    background = build_messages(count, recipients)
    samples: list[float] = []
    process = None
    try:
        with CommitYardstick() as disk:
            async with http.ws_connect(f"{watch_url.replace('http', 'ws')}/ws") as ws:
                await ws.send_json({"action": "auth", "token": token})
                authed = await ws.receive_json()
                assert authed.get("action") == "authed", authed
                if rate:
                    spawn = multiprocessing.get_context("spawn")
                    ours, theirs = spawn.Pipe()
                    process = spawn.Process(
                        target=_open_loop_process,
                        args=(urls, background, rate, args.push_seconds, theirs),
                    )
                    process.start()
                    theirs.close()  # the child's end is the child's: its death is then an EOF
                    await asyncio.to_thread(ours.recv)  # "ready": its session is open
                    loader = asyncio.create_task(asyncio.to_thread(ours.recv))
                else:
                    loader = asyncio.create_task(
                        load(http, urls, background, 16, args.push_seconds)
                    )
                started = time.perf_counter()
                for i in range(int(args.push_seconds * PROBES_PER_S)):
                    due = started + i / PROBES_PER_S
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                    msg = compose(prober, watcher.address, f"probe {i}", now_ms=now_ms()).primary
                    if i % 18 == 17:
                        prober = Identity.generate()  # stay under the per-sender rate limit
                    start = time.perf_counter()
                    async with http.post(f"{url}/send", json=msg) as r:
                        await r.read()
                    while True:
                        frame = await ws.receive_json(timeout=30)  # a lost push fails the run
                        if frame.get("action") == "message" and frame["message"]["id"] == msg["id"]:
                            samples.append(time.perf_counter() - start)
                            break
                    if loader.done():
                        break
                await loader
    finally:  # a probe that failed (a lost push) leaves the load running otherwise
        if process is not None:
            process.join(5)
            process.kill()
            process.join()
    return pct(samples, 0.5), pct(samples, 0.99), pct(disk.samples, 0.99)


async def measure_sockets(http: aiohttp.ClientSession, server: ServerProcess, count: int) -> dict:
    ident = Identity.generate()
    token = await session_token(http, server.url, ident)
    before = rss_kb(server.proc.pid)
    sockets = []
    ws_url = f"{server.url.replace('http', 'ws')}/ws"

    async def open_one() -> None:
        ws = await http.ws_connect(ws_url, heartbeat=None)
        await ws.send_json({"action": "auth", "token": token})
        await ws.receive_json()
        sockets.append(ws)

    for start in range(0, count, 500):
        await asyncio.gather(*(open_one() for _ in range(min(500, count - start))))
    after = rss_kb(server.proc.pid)
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {"count": len(sockets), "rss_delta_mb": (after - before) / 1024,
            "kb_per_socket": (after - before) / max(1, len(sockets))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--push-seconds", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--db", default="sqlite", help="sqlite | memory | postgresql://...")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes sharing the database (PostgreSQL)")  # fmt: skip
    parser.add_argument("--sockets", type=int, default=10_000, help="idle sockets (0: skip)")
    parser.add_argument("--no-open-loop", dest="open_loop", action="store_false",
                        help="skip push latency under open-loop load at 50 %% and 90 %%")  # fmt: skip
    parser.add_argument("--no-bare", dest="bare", action="store_false",
                        help="skip the bare-pipeline yardstick")  # fmt: skip
    parser.add_argument("--slices", type=int, default=4,
                        help="turns of FLUX and the bare pipeline within --seconds each")  # fmt: skip
    args = parser.parse_args()
    random.seed(1)
    results = []
    for run in range(args.runs):
        result = asyncio.run(measure_ingest(args))
        results.append(result)
        print(f"run {run + 1}: " + json.dumps(result, default=str), flush=True)
    keys = ["msgs_per_s", "p50_ms", "p99_ms", "push_p50_ms", "push_p99_ms", "push_commit_p99_ms",
            "peak_rss_mb", "peak_rss_push_phases_mb",
            "bare_msgs_per_s", "vs_bare_pct", "server_cpu_ms_per_msg"]  # fmt: skip
    if args.open_loop:
        keys += [f"open{p}_push_{q}_ms" for p in (50, 90) for q in ("p50", "p99", "commit_p99")]
    print(f"\nmedians over {args.runs} runs ({args.db}, {args.processes} process(es), "
          f"concurrency {args.concurrency}, "
          f"{os.cpu_count()} cpus):")  # fmt: skip
    for key in keys:
        print(f"  {key:22s} {statistics.median(r[key] for r in results):10.2f}")
    socket_runs = [r["sockets"] for r in results if r["sockets"]]
    if socket_runs:
        kb = statistics.median(s["kb_per_socket"] for s in socket_runs)
        mb = statistics.median(s["rss_delta_mb"] for s in socket_runs)
        print(f"  idle sockets {socket_runs[0]['count']}: {mb:.1f} MB ({kb:.1f} KB each)")


if __name__ == "__main__":
    main()
