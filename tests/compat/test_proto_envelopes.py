"""500 random envelopes built by each side are accepted by the other, except those
PROTOCOL.md §13 refuses, counted and named by reason (issue 11, "Proof").

Prototype -> FLUX: ONE child process runs the prototype's own `build_message` 500 times
(seeded), and each envelope is POSTed to a real FLUX server's `/send`. FLUX -> prototype:
FLUX's `build_message` (seeded) builds 500, and ONE child process of the prototype POSTs
them to a real prototype server's `/send` with its own aiohttp, reporting each status.

Each random envelope has at most one trait §13 refuses, so the expected refusals are
counted from the envelopes themselves and the test asserts the counts by reason.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from compat.proto import ProtoServer, require_seed, run_proto
from federation.fed_helpers import local_servers
from flux.protocol import Identity
from flux.protocol.limits import MAX_SUBJECT_BYTES, MAX_TAGS
from flux.protocol.outgoing import build_message

COUNT = 500
SEED = 20261201
#: ordinary words (the spam heuristics are not what this test is about), some not ASCII
WORDS = [
    "meeting",
    "notes",
    "garden",
    "tomorrow",
    "river",
    "lunch",
    "draft",
    "table",
    "window",
    "yellow",
    "quiet",
    "paper",
    "Zürich",
    "café",
    "naïve",
    "東京",
    "größe",
    "señor",
    "✓",
    "letter",
    "morning",
    "copy",
    "answer",
    "train",
    "book",
]

#: the prototype's builder, driven by the same kind of draw (see `_draw`), in one child
PROTO_BUILDER = r"""
import json, random, sys, time, uuid
from flux.identity import FluxIdentity
from flux.message import build_message

rng = random.Random(int(sys.argv[1]))
words = sys.argv[3].split()
def text(a, b):
    return " ".join(rng.choice(words) for _ in range(rng.randint(a, b)))
def addr():
    return FluxIdentity.generate().address
out = []
now = int(time.time() * 1000)
for i in range(int(sys.argv[2])):
    trait = rng.choices(
        ["plain", "subject", "re", "cc", "bcc1", "tags", "expires", "unicode",
         "bcc_many", "subject_huge", "tags_many", "expires_past"],
        weights=[20, 15, 8, 10, 6, 10, 6, 10, 4, 3, 3, 5])[0]
    kw = {}
    if trait == "subject": kw["subject"] = text(1, 12)
    if trait == "re": kw["reply_to"] = uuid.uuid4().hex
    if trait == "cc": kw["cc"] = [addr() for _ in range(rng.randint(1, 3))]
    if trait == "bcc1": kw["bcc"] = [addr()]
    if trait == "bcc_many": kw["bcc"] = [addr() for _ in range(rng.randint(2, 4))]
    if trait == "tags": kw["tags"] = rng.sample(words, rng.randint(1, 4))
    if trait == "tags_many": kw["tags"] = [f"t{n}" for n in range(int(sys.argv[4]) + 5)]
    if trait == "expires": kw["expires"] = now + 86_400_000
    if trait == "expires_past": kw["expires"] = now - 1000
    if trait == "subject_huge": kw["subject"] = "s" * (int(sys.argv[5]) + 10)
    content = text(3, 60) if trait != "unicode" else "東京 ✓ " + text(3, 20) + " 🙂"
    msg = build_message(FluxIdentity.generate(), addr(), content, **kw)
    out.append({"trait": trait, "msg": msg})
print(json.dumps(out))
"""

#: the prototype's own HTTP client posts FLUX's envelopes to the prototype's /send
PROTO_POSTER = r"""
import asyncio, json, sys
import aiohttp
async def main():
    envelopes = json.load(open(sys.argv[2]))
    statuses = []
    async with aiohttp.ClientSession() as s:
        for msg in envelopes:
            async with s.post(sys.argv[1] + "/send", json=msg) as r:
                body = await r.json()
                statuses.append([r.status, body.get("error")])
    print(json.dumps(statuses))
asyncio.run(main())
"""

#: why FLUX refuses a trait (§13 and the limits it lists): (HTTP status, code, field)
REFUSED_BY_FLUX = {
    "bcc_many": (400, "invalid_value", "bcc"),  # §13.1: one signed copy per BCC address
    "subject_huge": (400, "too_large", "subject"),  # §13 "tightened": §8.1 limits
    "tags_many": (400, "too_large", "tags"),
    "expires_past": (400, "invalid_value", "expires"),  # §13.10: it could never be read
}


async def test_prototype_envelopes_are_accepted_by_flux(tmp_path: Path) -> None:
    require_seed()
    done = await asyncio.to_thread(
        run_proto, PROTO_BUILDER, str(SEED), str(COUNT), " ".join(WORDS), str(MAX_TAGS),
        str(MAX_SUBJECT_BYTES), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    assert len(built) == COUNT
    limits = {"submit_per_ip_per_minute": 100_000, "requests_per_address_per_s": 0.0}
    async with (
        local_servers(tmp_path, ["f"], **limits) as servers,
        aiohttp.ClientSession() as http,
    ):
        outcomes: Counter[tuple[Any, ...]] = Counter()
        for item in built:
            async with http.post(f"{servers['f'].url}/send", json=item["msg"]) as r:
                body = await r.json()
            if r.status == 200:
                outcomes[("accepted",)] += 1
            else:
                outcomes[(r.status, body.get("code"), body.get("field"))] += 1
    traits = Counter(item["trait"] for item in built)
    expected: Counter[tuple[Any, ...]] = Counter()
    for trait, count in traits.items():
        expected[REFUSED_BY_FLUX.get(trait, ("accepted",))] += count
    assert outcomes == expected
    assert all(traits[t] for t in REFUSED_BY_FLUX)  # every refusal was exercised


def _draw(rng: random.Random, me: Identity, now: int) -> dict[str, Any]:
    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    def addr() -> str:
        return Identity.generate().address

    trait = rng.choice(["plain", "subject", "re", "cc", "tags", "expires", "all"])
    kw: dict[str, Any] = {}
    if trait in ("subject", "all"):
        kw["subject"] = text(1, 12)
    if trait in ("re", "all"):
        kw["reply_to"] = f"{rng.getrandbits(128):032x}"
    if trait in ("cc", "all"):
        kw["cc"] = [addr() for _ in range(rng.randint(1, 3))]
    if trait in ("tags", "all"):
        kw["tags"] = rng.sample(WORDS, rng.randint(1, 4))
    if trait in ("expires", "all"):
        kw["expires"] = now + 86_400_000
    return build_message(me, addr(), text(3, 60), **kw, now_ms=now)


async def test_flux_envelopes_are_accepted_by_the_prototype(tmp_path: Path) -> None:
    require_seed()
    rng = random.Random(SEED)
    now = int(time.time() * 1000)
    envelopes = [_draw(rng, Identity.generate(), now) for _ in range(COUNT)]
    path = tmp_path / "envelopes.json"
    path.write_text(json.dumps(envelopes))
    with ProtoServer(tmp_path / "proto") as proto:
        done = await asyncio.to_thread(run_proto, PROTO_POSTER, proto.url, str(path), timeout=300)
    assert done.returncode == 0, done.stderr
    statuses = Counter(tuple(s) for s in json.loads(done.stdout))
    assert statuses == Counter({(200, None): COUNT})
