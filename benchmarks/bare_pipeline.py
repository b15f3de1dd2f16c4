"""The yardstick for the ingest benchmark: the raw steps of accepting a message, and nothing else.

    .venv/bin/python benchmarks/bare_pipeline.py [--seconds 10] [--runs 3] [--concurrency 32]
    .venv/bin/python benchmarks/bare_pipeline.py --server-only --port 8471 [--db PATH]

The server is a minimal aiohttp app on uvloop. For each `POST /send` it

1. parses the JSON body (plain `json.loads`);
2. canonicalises the signing payload (every field but sig, pub, route, integrity_chain;
   sorted keys, no spaces, ASCII: the FLUX canonical form);
3. verifies the sender's Ed25519 signature (libsodium via nacl.bindings);
4. signs a hop record `"{server}:{t}:{sha256(payload)}"` with the server's key;
5. hands one row (id, sender, recipient, t, body, hop) to a group-commit writer thread and
   acknowledges only once the transaction holding that row has committed.

The writer thread owns one SQLite connection (WAL, synchronous=FULL). It blocks for the
first queued row, takes every row queued behind it, writes them all in one transaction, and
then resolves all their futures with one call into the event loop. Under load, many
requests share one fsync; with a single client it degenerates to one commit per message.

There is no FLUX logic here beyond those steps (no strict parsing, shape checks, address
binding, spam checks, quotas or chain), so a FLUX server cannot be expected to beat it: its
numbers say what this machine can do, and the FLUX server's are judged against them.

Without `--server-only` the script is its own load generator: it starts the server as a
separate process (as `flux server` runs in benchmarks/ingest.py) on a fresh database per
run, and posts distinct pre-built signed messages (the same shape as ingest.py's) from an
aiohttp client with `--concurrency` workers, after a warm-up of 500 messages. It prints
accepted messages/s and p50/p99 latency per run, then the median, min and max over runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import platform
import queue
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import nacl.bindings
import nacl.exceptions
import uvloop
from aiohttp import web

UNSIGNED = frozenset({"sig", "pub", "route", "integrity_chain", "_status", "_inbox", "_tags"})
SERVER_NAME = "bare.example"
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    t INTEGER NOT NULL, body BLOB NOT NULL, hop TEXT NOT NULL
)
"""
INSERT = "INSERT INTO messages (id, sender, recipient, t, body, hop) VALUES (?, ?, ?, ?, ?, ?)"
WARMUP = 500

# -- server -------------------------------------------------------------------------------


class GroupCommitWriter:
    """One SQLite connection in one thread; each transaction takes every row queued so far."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self._path = path
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def write(self, row: tuple) -> asyncio.Future:
        """A future resolved (with None) once `row` is committed, or with the error."""
        future = self._loop.create_future()
        self._queue.put((row, future))
        return future

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(SCHEMA)
        while (item := self._queue.get()) is not None:
            batch = [item]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(db, batch)
            if stop:
                break
        db.close()

    def _commit(self, db: sqlite3.Connection, batch: list) -> None:
        error: Exception | None = None
        try:
            db.execute("BEGIN")
            db.executemany(INSERT, [row for row, _ in batch])
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # the whole batch fails together; the clients see 500
            error = exc
            if db.in_transaction:
                db.execute("ROLLBACK")
        self.batches += 1
        self.rows += len(batch)
        self._loop.call_soon_threadsafe(_resolve, [future for _, future in batch], error)


def _resolve(futures: list[asyncio.Future], error: Exception | None) -> None:
    for future in futures:
        if future.done():  # the request was cancelled meanwhile
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def canonical_payload(msg: dict) -> bytes:
    core = {k: v for k, v in msg.items() if k not in UNSIGNED}
    return json.dumps(core, sort_keys=True, separators=(",", ":")).encode("ascii")


def make_app(writer: GroupCommitWriter, server_sk: bytes, server_pub_b64: str) -> web.Application:
    async def send(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg = json.loads(body)
            payload = canonical_payload(msg)
            pub = base64.urlsafe_b64decode(msg["pub"])
            sig = base64.urlsafe_b64decode(msg["sig"])
            if len(pub) != 32 or len(sig) != 64:
                raise ValueError("bad key or signature length")
            nacl.bindings.crypto_sign_open(sig + payload, pub)
        except (ValueError, KeyError, TypeError, nacl.exceptions.CryptoError) as exc:
            return web.json_response({"error": str(exc)[:200]}, status=400)
        t = int(time.time() * 1000)
        digest = hashlib.sha256(payload).hexdigest()
        hop_sig = nacl.bindings.crypto_sign(f"{SERVER_NAME}:{t}:{digest}".encode(), server_sk)
        hop = json.dumps(
            {
                "server": SERVER_NAME,
                "t": t,
                "hash": digest,
                "sig": base64.urlsafe_b64encode(hop_sig[:64]).decode(),
                "pub": server_pub_b64,
            }
        )
        await writer.write((msg["id"], msg["from"], msg["to"], msg["t"], body, hop))
        return web.json_response({"id": msg["id"], "status": "accepted"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "batches": writer.batches, "rows": writer.rows})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/send", send)
    app.router.add_get("/health", health)
    return app


async def serve(host: str, port: int, db_path: str) -> None:
    loop = asyncio.get_running_loop()
    writer = GroupCommitWriter(db_path, loop)
    writer.start()
    server_pub, server_sk = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
    app = make_app(writer, server_sk, base64.urlsafe_b64encode(server_pub).decode())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"bare pipeline listening on http://{host}:{port} (db {db_path})", flush=True)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    await runner.cleanup()
    writer.stop()
    if writer.batches:
        print(
            f"committed {writer.rows} rows in {writer.batches} transactions "
            f"({writer.rows / writer.batches:.1f} rows each)",
            flush=True,
        )


# -- load generator -----------------------------------------------------------------------


def build_messages(count: int) -> list[bytes]:
    """Distinct signed envelopes, 15 per sender, to 2,000 recipients (as ingest.py does)."""
    from flux.protocol import Identity, compose  # the client side may use FLUX itself

    recipients = [Identity.generate().address for _ in range(2000)]
    senders = [Identity.generate() for _ in range(count // 15 + 1)]
    t = int(time.time() * 1000)
    out = []
    for i in range(count):
        msg = compose(
            senders[i // 15],
            recipients[i % len(recipients)],
            f"benchmark message {i}: the quick brown fox jumps over the lazy dog",
            subject="bench",
            now_ms=t,
        ).primary
        out.append(json.dumps(msg).encode())
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        try:
            async with http.get(url + "/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        await asyncio.sleep(0.05)  # polling a process we do not control
    raise SystemExit("server did not become ready")


async def load(
    http: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    """Post `bodies` with `concurrency` workers for `seconds`: (latencies, errors, elapsed)."""
    latencies: list[float] = []
    errors = 0
    index = 0
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal index, errors
        while time.perf_counter() < deadline and index < len(bodies):
            body = bodies[index]
            index += 1
            sent = time.perf_counter()
            async with http.post(url + "/send", data=body, headers=headers) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class ServerProcess:
    """The server started as its own process, on a fresh database."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.dir = tempfile.mkdtemp(prefix="flux-bare-")
        db = os.path.join(self.dir, "bare.db")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--server-only", "--port", str(port), "--db", db],
            stdout=subprocess.DEVNULL,
        )

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


async def health(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url + "/health") as r:
        return await r.json()


async def one_run(bodies: list[bytes], args: argparse.Namespace) -> dict:
    """One measurement: against `args.url` if given, else against a server started for it."""
    server = None if args.url else ServerProcess()
    url = args.url or server.url
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            if server is not None:
                await wait_ready(http, url, server.proc)
            await load(http, url, bodies[:WARMUP], args.concurrency, 5)
            before, cpu_before = await health(http, url), server.cpu() if server else math.nan
            latencies, errors, elapsed = await load(
                http, url, bodies[WARMUP:], args.concurrency, args.seconds
            )
            after, cpu_after = await health(http, url), server.cpu() if server else math.nan
            if len(latencies) + errors >= len(bodies) - WARMUP:
                print("  ran out of pre-built messages before the time: raise --messages")
    finally:
        if server is not None:
            server.stop()
    commits = max(1, after["batches"] - before["batches"])
    return {
        "msgs_per_s": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "errors": errors,
        "rows_per_commit": (after["rows"] - before["rows"]) / commits,
        "server_cpu_us": (cpu_after - cpu_before) / max(1, len(latencies)) * 1e6,
    }


def summarise(results: list[dict]) -> None:
    print(f"\nmedian [min - max] over {len(results)} runs:")
    for key, unit in (("msgs_per_s", "msg/s"), ("p50_ms", "ms"), ("p99_ms", "ms")):
        values = [r[key] for r in results]
        print(
            f"  {key:<11} {statistics.median(values):9.1f} {unit:<6}"
            f" [{min(values):.1f} - {max(values):.1f}]"
        )
    commits = statistics.median(r["rows_per_commit"] for r in results)
    cpu = statistics.median(r["server_cpu_us"] for r in results)
    print(
        f"  server CPU per message {cpu:.0f} us; rows per commit {commits:.1f}; "
        f"errors {sum(r['errors'] for r in results)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-only", action="store_true", help="run only the server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8471)
    parser.add_argument("--db", help="SQLite file (server-only; default: a temporary file)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--messages", type=int, help="pre-built messages per run")
    parser.add_argument("--url", help="load this running server (--server-only) instead")
    args = parser.parse_args(argv)
    if args.server_only:
        db = args.db or os.path.join(tempfile.mkdtemp(prefix="flux-bare-"), "bare.db")
        uvloop.run(serve(args.host, args.port, db))
        return 0
    count = args.messages or int(args.seconds * 9000) + WARMUP
    if count <= WARMUP:  # the warm-up would take them all and the run measure nothing
        parser.error(f"--messages must be more than the warm-up's {WARMUP}")
    # A server we did not start keeps its database: every run then needs its own messages.
    total = count * args.runs if args.url else count
    print(
        f"python {platform.python_version()}, cpus {os.cpu_count()}, "
        f"load avg {os.getloadavg()[0]:.2f}; building {total:,} messages...",
        flush=True,
    )
    bodies = build_messages(total)
    results = []
    for run in range(args.runs):
        mine = bodies[run * count : (run + 1) * count] if args.url else bodies
        result = uvloop.run(one_run(mine, args))
        results.append(result)
        print(
            f"run {run + 1}: {result['msgs_per_s']:,.0f} msg/s, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, {result['rows_per_commit']:.1f} rows/commit, "
            f"server CPU {result['server_cpu_us']:.0f} us/msg, errors {result['errors']}",
            flush=True,
        )
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
