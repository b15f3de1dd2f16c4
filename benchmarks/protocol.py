"""Protocol-core micro-benchmarks: how much of a bare Ed25519 verify a full FLUX check costs.

    .venv/bin/python benchmarks/protocol.py [--seconds 1] [--runs 5] [--profile NAME]

Measured in one process, single-threaded, over a typical message (a subject, ~1 KB of
text, one cc, two tags: the envelope is ~1.6 KB on the wire):

* bare      Ed25519 verifications/s: `crypto_sign_open` from libsodium (via nacl.bindings,
            the primitive FLUX uses) over a payload the size of that envelope's signing
            payload. The floor no implementation of the protocol can go below.
* full      envelope verifications/s from the JSON bytes as received: `loads_strict` (strict
            parse: no floats, bounded ints, no duplicate keys, valid Unicode) then
            `verify_envelope` with `now_ms` (shape, freshness, key ↔ address binding,
            canonical signing payload, signature).
* build     `compose` of the same message (canonicalise + sign + shape check).
* hop       `append_hop`: one sealed hop record (two signatures, three hashes).
* chain     `verify_chain` of a 3-hop sealed message with a published-key lookup (six
            signature checks plus the links).

The target (issue: protocol performance) is full >= 70 % of bare. Each figure is the
median of `--runs` runs of about `--seconds` each; min and max show the spread, which
matters on a shared machine. `--profile full` (or build, hop, chain) prints a cProfile of
that benchmark instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import nacl.bindings

from flux.protocol import (
    ChainVerdict,
    Identity,
    PublishedKey,
    ServerSigner,
    append_hop,
    compose,
    loads_strict,
    signing_payload,
    verify_chain,
    verify_envelope,
)

TARGET = 0.70
NOW_MS = 1_795_000_000_000  # fixed clock: the benchmark is deterministic apart from timing
SERVERS = ("alpha.example", "beta.example", "gamma.example")


def _seed(n: int) -> bytes:
    return bytes([n]) * 32


SENDER = Identity(_seed(1))
RECIPIENT = Identity(_seed(2))
CC = Identity(_seed(3))
SIGNERS = [ServerSigner(name, Identity(_seed(10 + i))) for i, name in enumerate(SERVERS)]
KEYS = {s.name: (PublishedKey(s.identity.public_key),) for s in SIGNERS}

CONTENT = (
    "Hi Sam,\n\nThanks for the notes from Thursday. I went through the draft again and "
    "I think the open points are the retention policy, the rollout order and who signs "
    "off on the key rotation. "
) * 5 + "\n\nBest,\nAlex"
SUBJECT = "Re: notes from Thursday's review"


def build_typical(now_ms: int = NOW_MS) -> dict:
    out = compose(
        SENDER,
        RECIPIENT.address,
        CONTENT,
        subject=SUBJECT,
        cc=[CC.address],
        tags=["work", "review"],
        now_ms=now_ms,
        message_id="0123456789abcdef0123456789abcdef",
    )
    return out.primary


def sealed_three_hops(msg: dict) -> dict:
    for i, signer in enumerate(SIGNERS):
        nxt = SERVERS[i + 1] if i + 1 < len(SERVERS) else "local"
        msg = append_hop(msg, signer, next_hop=nxt, now_ms=NOW_MS + i, cv=ChainVerdict.PASS)
    return msg


# -- the benchmarks: each returns a zero-argument callable doing one operation -------------


def bench_bare() -> Callable[[], object]:
    msg = build_typical()
    payload = os.urandom(len(json.dumps(msg).encode()))  # the size of the envelope
    pk, sk = nacl.bindings.crypto_sign_seed_keypair(_seed(7))
    signed = nacl.bindings.crypto_sign(payload, sk)
    sign_open = nacl.bindings.crypto_sign_open
    return lambda: sign_open(signed, pk)


def bench_full() -> Callable[[], object]:
    wire = json.dumps(build_typical()).encode()
    return lambda: verify_envelope(loads_strict(wire), now_ms=NOW_MS)


def bench_build() -> Callable[[], object]:
    return build_typical


def bench_hop() -> Callable[[], object]:
    msg = build_typical()
    signer = SIGNERS[0]
    return lambda: append_hop(msg, signer, next_hop=SERVERS[1], now_ms=NOW_MS)


def bench_chain() -> Callable[[], object]:
    msg = sealed_three_hops(build_typical())
    lookup = KEYS.__getitem__
    if not verify_chain(msg, lookup).sealed:
        raise SystemExit("the 3-hop chain does not verify: nothing to measure")

    def check() -> object:
        result = verify_chain(msg, lookup)
        result.raise_for_failure()
        return result

    return check


BENCHES = {
    "bare": ("bare Ed25519 verify", bench_bare),
    "full": ("full envelope verify", bench_full),
    "build": ("compose (build+sign)", bench_build),
    "hop": ("append_hop (sealed)", bench_hop),
    "chain": ("verify_chain (3 hops)", bench_chain),
}


def _batch_size(op: Callable[[], object], target_s: float) -> int:
    """How many calls of `op` take about `target_s` (so timer calls cost nothing)."""
    batch = 1
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            op()
        if time.perf_counter() - start > target_s:
            return batch
        batch *= 2


def rates(ops: list[Callable[[], object]], seconds: float) -> list[float]:
    """Operations per second of each of `ops`, each given about `seconds` of CPU.

    The ops run in alternating slices of ~10 ms rather than one after the other, so a burst
    of load from a neighbour on a shared machine slows them alike and ratios between them
    (full / bare) stay meaningful even when the absolute numbers move.
    """
    batches = [_batch_size(op, 0.01) for op in ops]
    done = [0] * len(ops)
    spent = [0.0] * len(ops)
    while min(spent) < seconds:
        for i, op in enumerate(ops):
            start = time.perf_counter()
            for _ in range(batches[i]):
                op()
            spent[i] += time.perf_counter() - start
            done[i] += batches[i]
    return [n / t for n, t in zip(done, spent, strict=True)]


def sanity_check() -> None:
    """The benchmarked operations must succeed on the benchmarked inputs."""
    msg = build_typical()
    wire = json.dumps(msg).encode()
    if verify_envelope(loads_strict(wire), now_ms=NOW_MS).id != msg["id"]:
        raise SystemExit("the typical message does not verify: nothing to measure")
    payload = signing_payload(msg)
    print(f"typical envelope: {len(wire)} bytes on the wire, signing payload {len(payload)} bytes")


def machine_info() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return (
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, cpus {os.cpu_count()}, "
        f"libsodium via PyNaCl, load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def profile(name: str, seconds: float) -> None:
    op = BENCHES[name][1]()
    prof = cProfile.Profile()
    prof.enable()
    rates([op], seconds)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(BENCHES), help="cProfile one benchmark")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile, args.seconds)
        return 0
    print(machine_info())
    sanity_check()
    ops = {name: factory() for name, (_, factory) in BENCHES.items()}
    samples: dict[str, list[float]] = {name: [] for name in BENCHES}
    ratios: list[float] = []
    for _ in range(args.runs):
        bare, full = rates([ops["bare"], ops["full"]], args.seconds)  # paired: see `rates`
        samples["bare"].append(bare)
        samples["full"].append(full)
        ratios.append(full / bare)
        for name in ("build", "hop", "chain"):
            samples[name].append(rates([ops[name]], args.seconds)[0])
    print(f"\n{args.runs} runs of ~{args.seconds:g} s each; median [min - max] ops/s")
    for name, (label, _) in BENCHES.items():
        values = samples[name]
        print(
            f"  {name:<6} {label:<24} {statistics.median(values):>9,.0f}"
            f"   [{min(values):,.0f} - {max(values):,.0f}]"
        )
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"\nfull / bare = {ratio:.1%} median of the per-run ratios "
        f"[{min(ratios):.1%} - {max(ratios):.1%}]; target {TARGET:.0%}: {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
