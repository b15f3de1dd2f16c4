"""Ingest in one process, without HTTP: `Submitter.submit` from 32 tasks on a durable
SQLiteStore (WAL, synchronous=FULL), as `flux server --open` builds it (issue 15 aim 1).

    .venv/bin/python benchmarks/ingest_inprocess.py [--messages 6000] [--runs 3]
                                                    [--concurrency 32] [--profile]

Prints, per run, the process CPU time per message (user + system, ms: the writer thread's
and the loop's together), the writer thread's alone, and messages/s; then the median and
[min-max]. CPU per message is
steadier than a rate on a shared machine; the rate says little there. Messages are the
ones benchmarks/ingest.py sends (a sender per 15 messages, 2,000 recipients), signed
before the clock starts. `--profile` runs cProfile over the submissions instead.

`--store-only`: the writer's work alone, without the loop or the GIL's other holder: the
storing operation (`_store_one`: the message, its delivery, change, thread root, sent
record and contacts) of the same messages, 32 to a transaction on one durable connection,
timed with the thread's CPU clock; prints microseconds per message for the operations and
with their COMMIT. The steadiest figure for the store's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_messages

from flux.protocol import Identity
from flux.protocol.chain import ServerSigner
from flux.server.app import PARTS, create_app
from flux.server.config import ServerConfig
from flux.server.keys import ServerKey
from flux.store.sqlite import SQLiteStore

DOMAIN = "bench.test"


def thread_cpu_s(thread: threading.Thread) -> float:
    """The CPU time (user + system, s) of a running thread (Linux)."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))


async def run_once(messages: int, concurrency: int, profile: bool) -> tuple[float, float, float]:
    """(CPU ms per message, the writer thread's, messages/s) of one run on a fresh
    database."""
    recipients = [Identity.generate().address for _ in range(2000)]
    bodies = [json.loads(b) for b in build_messages(messages + 500, recipients)]
    with tempfile.TemporaryDirectory(prefix="flux-inproc-") as tmp:
        store = SQLiteStore(Path(tmp) / "flux.db")
        await store.open()
        config = ServerConfig(
            domain=DOMAIN, data_dir=Path(tmp), backend="sqlite", open_mode=True,
            spam_rate_per_minute=100_000_000, pending_quota=100_000,
            stranger_pending_total=100_000, stranger_pending_per_sender=100_000,
        )  # fmt: skip
        signer = ServerSigner(DOMAIN, Identity.generate())
        clock = lambda: int(time.time() * 1000)  # noqa: E731
        app = create_app(config, store, ServerKey(signer, 0), clock)
        submitter = app[PARTS]["submitter"]

        async def load(items: list) -> None:
            it = iter(items)

            async def worker() -> None:
                for body in it:
                    await submitter.submit(body)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        try:
            await load(bodies[:500])  # warm-up
            prof = None
            if profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            writer = store._writer._thread  # the store's one writer thread (_sqlite_writer.py)
            cpu, wall, wcpu = time.process_time(), time.perf_counter(), thread_cpu_s(writer)
            await load(bodies[500:])
            wcpu = thread_cpu_s(writer) - wcpu
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if prof is not None:
                import pstats

                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        finally:
            await store.close()
    return 1000 * cpu / messages, 1000 * wcpu / messages, messages / wall


def store_only(messages: int) -> dict[str, float]:
    """(us of writer CPU per message: the operations, and with their COMMIT)."""
    from flux.protocol.envelope import verify_envelope
    from flux.server.submission import sent_record
    from flux.store.base import Incoming, StrangerShare
    from flux.store.sqlite import _store_one

    recipients = [Identity.generate().address for _ in range(2000)]
    now = int(time.time() * 1000)
    batch = []
    for i, body in enumerate(build_messages(messages + 512, recipients)):
        env, rcpt = verify_envelope(json.loads(body), now_ms=now), recipients[i % 2000]
        batch.append(Incoming(
            env.data, env.body_hash, (rcpt,), now, pending_quota=100_000,
            stranger_share=StrangerShare(100_000, 100_000),
            sent=sent_record(env, {rcpt: "stored"}, now), contacts=(rcpt,),
        ))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="flux-inproc-") as tmp:
        store = SQLiteStore(Path(tmp) / "flux.db")
        asyncio.run(store.open())
        asyncio.run(store.close())
        conn = store._connect()
        ops = total = 0.0
        for k in range(0, len(batch), 32):
            start = time.thread_time()
            conn.execute("BEGIN IMMEDIATE")
            for inc in batch[k : k + 32]:
                _store_one(conn, inc)
            done = time.thread_time()
            conn.execute("COMMIT")
            if k >= 512:  # after a warm-up
                ops += done - start
                total += time.thread_time() - start
        conn.close()
    return {"ops_us_per_msg": round(1e6 * ops / messages, 1),
            "with_commit_us_per_msg": round(1e6 * total / messages, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--store-only", action="store_true")
    args = ap.parse_args()
    if args.store_only:
        for _ in range(args.runs):
            print(json.dumps(store_only(args.messages)))
        return
    cpus, writers, rates = [], [], []
    for _ in range(args.runs):
        cpu, wcpu, rate = asyncio.run(run_once(args.messages, args.concurrency, args.profile))
        cpus.append(cpu)
        writers.append(wcpu)
        rates.append(rate)
        print(json.dumps({"cpu_ms_per_msg": round(cpu, 4), "writer_cpu_ms_per_msg": round(wcpu, 4),
                          "msgs_per_s": round(rate)}))  # fmt: skip
    print(json.dumps({
        "cpu_ms_per_msg_median": round(statistics.median(cpus), 4),
        "cpu_range": [round(min(cpus), 4), round(max(cpus), 4)],
        "writer_cpu_ms_per_msg_median": round(statistics.median(writers), 4),
        "writer_cpu_range": [round(min(writers), 4), round(max(writers), 4)],
        "msgs_per_s_median": round(statistics.median(rates)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
