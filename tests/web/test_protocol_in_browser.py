"""The FLUX protocol in the browser (src/flux/server/static/web/js/flux), in a real Chromium.

What is checked, each in the page through WebCrypto:
- every applicable vector of spec/vectors/seed-v1.json and flux-v1.json: identities, signing
  payloads, verification verdicts (negative ones included), hashes, sealed hops, chain
  verdicts and hop statuses, blame (`tamper.offenses`), BCC copies and encrypted envelopes
  byte for byte under the vectors' randomness, decryption by readers and refusal to others;
- both ways against flux.protocol: envelopes composed in the browser verify and decrypt in
  Python, Python's verify and decrypt in the browser, for hypothesis-drawn content (any
  Unicode, large text) at a bounded count; key files both ways, sealed ones included;
- the curve arithmetic (Ed25519 → X25519, libsodium's verification rules) against PyNaCl;
- a key kept in IndexedDB is non-extractable, survives a reload and is never sent;
- signed /register and /auth/session bodies are accepted by a real FLUX server;
- a page that is not a secure context gets FluxError "insecure_context".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import nacl.bindings
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from playwright.async_api import Page

from flux.client import FluxClient
from flux.protocol import (
    Identity,
    b64d,
    b64e,
    compose,
    decrypt_content,
    verify_chain,
    verify_envelope,
)
from flux.protocol.chain import PublishedKey
from flux.server.runner import RunningServer
from web.conftest import FluxBrowser, PageLog, StaticSite

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
SEED = json.loads((VECTORS / "seed-v1.json").read_text())
FLUX = json.loads((VECTORS / "flux-v1.json").read_text())
IDENTITIES = {i["label"]: i for i in [*SEED["identities"], *FLUX["identities"]]}
BY_ADDRESS = {i["address"]: i for i in IDENTITIES.values()}


async def flux_in(page: Page, site: StaticSite) -> Page:
    """`page` on the static origin, with js/flux/index.js as `window.F` (and its parts as
    `window.FP`, for the internal checks)."""
    await page.goto(site.blank)
    await page.evaluate(
        """async (base) => {
            window.F = await import(base + "index.js");
            window.FP = {
                curve: await import(base + "curve.js"),
                webcrypto: await import(base + "webcrypto.js"),
                chain: await import(base + "chain.js"),
            };
            // Deterministic randomness for the vectors: bytes served in order from `b64`.
            window.stream = (b64) => {
                const bytes = F.b64d(b64);
                let at = 0;
                return (n) => {
                    if (at + n > bytes.length) throw new Error("stream exhausted");
                    at += n;
                    return bytes.slice(at - n, at);
                };
            };
        }""",
        site.module("js/flux/"),
    )
    return page


@pytest_asyncio.fixture(loop_scope="session")
async def flux_page(page: Page, web_origin: StaticSite) -> Page:
    return await flux_in(page, web_origin)


def det_stream(label: str, size: int = 4096) -> str:
    """The vectors' det_randbytes(label) stream (spec/README.md), its first `size` bytes."""
    blocks = (
        hashlib.sha256(label.encode() + k.to_bytes(8, "big")).digest() for k in range(size // 32)
    )
    return b64e(b"".join(blocks))


def published_keys(doc: dict[str, list[dict[str, Any]]]) -> Callable[[str], list[PublishedKey]]:
    table = {
        name: [PublishedKey(b64d(k["pub"]), k["valid_from"], k["valid_until"]) for k in keys]
        for name, keys in doc.items()
    }
    return lambda name: table.get(name, [])


# --- vectors --------------------------------------------------------------------------------


async def test_identities_sign_as_the_vectors(flux_page: Page) -> None:
    got = await flux_page.evaluate(
        """async (ids) => Promise.all(ids.map(async (i) => {
            const signer = await F.openSigner(F.b64d(i.private_key));
            const fromFile = await F.identityFromKeyFile(
                JSON.stringify({address: i.address, private_key: i.private_key}));
            return [signer.address, signer.pubB64, fromFile.address, F.b64e(fromFile.pub),
                    await F.addressFromPub(F.b64d(i.pub))];
        }))""",
        list(IDENTITIES.values()),
    )
    for ident, row in zip(IDENTITIES.values(), got, strict=True):
        assert row == [
            ident["address"],
            ident["pub"],
            ident["address"],
            ident["pub"],
            ident["address"],
        ]


async def test_seed_messages_payloads_and_verdicts(flux_page: Page) -> None:
    got = await flux_page.evaluate(
        """async (messages) => Promise.all(messages.map(async (m) => [
            new TextDecoder().decode(F.signingPayload(m.envelope)),
            await F.verifyEnvelope(m.envelope),
        ]))""",
        SEED["messages"],
    )
    for vector, (payload, verdict) in zip(SEED["messages"], got, strict=True):
        if "signing_payload" in vector:
            assert payload == vector["signing_payload"], vector["name"]
        assert verdict["ok"] is vector["valid"], vector["name"]
        if not vector["valid"]:
            expected = {
                "tampered-content": "bad_signature",
                "pub-not-matching-from": "address_mismatch",
            }
            assert verdict["code"] == expected[vector["name"]]


async def test_sealed_hops_hashes_records_and_chains(flux_page: Page) -> None:
    sealed = FLUX["sealed_hops"]
    got = await flux_page.evaluate(
        """async ([s, keys]) => {
            const msg = s.message;
            const hops = [];
            for (const hop of s.hops) {
                const sigOk = await FP.webcrypto.ed25519Verify(
                    F.b64d(hop.record.pub), new TextEncoder().encode(hop.sig_payload), F.b64d(hop.record.sig));
                const sealOk = await FP.webcrypto.ed25519Verify(
                    F.b64d(hop.record.pub), new TextEncoder().encode(hop.seal_payload), F.b64d(hop.record.seal));
                const chain = await F.verifyChain(hop.handed_on, (name) => keys[name]);
                hops.push([await FP.chain.recordHash(hop.record), sigOk, sealOk, chain.verdict,
                           chain.hops.map((h) => h.status), chain.blame]);
            }
            return {
                payload: new TextDecoder().decode(F.signingPayload(msg)),
                hash: await F.integrityHash(msg), bh: await F.bodyHash(msg),
                verify: await F.verifyEnvelope(msg), hops,
            };
        }""",
        [sealed, FLUX["published_keys"]],
    )
    assert got["payload"] == sealed["signing_payload"]
    assert (got["hash"], got["bh"]) == (sealed["hash"], sealed["bh"])
    assert got["verify"] == {"ok": True}
    for n, (hop, row) in enumerate(zip(sealed["hops"], got["hops"], strict=True)):
        assert row == [hop["record_hash"], True, True, "pass", ["sealed"] * (n + 1), None]


async def test_chain_cases_verdicts_and_statuses(flux_page: Page) -> None:
    cases = FLUX["chains"]["cases"]
    got = await flux_page.evaluate(
        """async ([cases, keys]) => Promise.all(cases.map(
            (c) => F.verifyChain(c.envelope, async (name) => keys[name] ?? [])))""",
        [cases, FLUX["published_keys"]],
    )
    lookup = published_keys(FLUX["published_keys"])
    for case, result in zip(cases, got, strict=True):
        expected = case["expected"]
        assert result["verdict"] == expected["verdict"], case["name"]
        statuses = [(h["index"], h["server"], h["status"]) for h in result["hops"]]
        assert statuses == [(h["index"], h["server"], h["status"]) for h in expected["hops"]], case[
            "name"
        ]
        # reasons are informative in the vectors, but the browser words them as Python does
        assert [h["reason"] for h in result["hops"]] == [h["reason"] for h in expected["hops"]], (
            case["name"]
        )
        python = verify_chain(case["envelope"], lookup)
        assert result["verdict"] == str(python.verdict)


async def test_offline_chain_checks_only_the_records_own_keys(flux_page: Page) -> None:
    case = next(c for c in FLUX["chains"]["cases"] if c["name"] == "unpublished-key")
    got = await flux_page.evaluate("(env) => F.verifyChain(env)", case["envelope"])
    python = verify_chain(case["envelope"], None)
    assert got["verdict"] == str(python.verdict) and got["blame"] is None
    assert [h["status"] for h in got["hops"]] == [str(h.status) for h in python.hops]


async def test_tamper_offenses_blame_as_python(flux_page: Page) -> None:
    cases = FLUX["tamper"]["offenses"]
    got = await flux_page.evaluate(
        """async ([cases, keys]) => Promise.all(cases.map(
            (c) => F.findOffense(c.envelope, (name) => keys[name] ?? [], c.receiver)))""",
        [cases, FLUX["published_keys"]],
    )
    for case, offense in zip(cases, got, strict=True):
        expected = case["expected"]
        if expected is None:
            assert offense is None, case["name"]
        else:
            assert {k: offense[k] for k in expected} == expected, case["name"]


async def test_blame_in_verify_chain_names_the_offender(flux_page: Page) -> None:
    """verifyChain's `blame` is the first offense at any hand-off: for each proven offense of
    the vectors (sealed to its receiver), the same offender, kind and proof id as the
    receiver's own proof; none for the genuine three-hop message."""
    named = ("forged-body", "false-hop", "broken-chain")
    cases = [c for c in FLUX["tamper"]["offenses"] if c["name"] in named]
    valid = next(c for c in FLUX["chains"]["cases"] if c["name"] == "valid")
    got = await flux_page.evaluate(
        """async ([envs, keys]) => Promise.all(envs.map(
            async (env) => (await F.verifyChain(env, (name) => keys[name] ?? [])).blame))""",
        [[c["envelope"] for c in cases] + [valid["envelope"]], FLUX["published_keys"]],
    )
    for case, blame in zip(cases, got, strict=False):
        assert {k: blame[k] for k in case["expected"]} == case["expected"], case["name"]
    assert len(got) == 4 and got[-1] is None


async def test_bcc_copies_are_the_vectors_byte_for_byte(flux_page: Page) -> None:
    bcc = FLUX["bcc"]
    alice = IDENTITIES["alice"]
    given_ = bcc["input"]
    envelopes = await flux_page.evaluate(
        """async ([seed, input, randomness]) => {
            const signer = await F.openSigner(F.b64d(seed));
            return F.composeEnvelopes(signer, {
                to: input.to, cc: input.cc, bcc: input.bcc, subject: input.subject,
                content: input.content, tags: input.tags, randbytes: stream(randomness),
            }, input.now_ms);
        }""",
        [alice["private_key"], given_, det_stream(bcc["randbytes"])],
    )
    assert envelopes == [bcc["primary"]["envelope"], *(c["envelope"] for c in bcc["copies"])]


async def test_encrypted_vectors_compose_and_decrypt(flux_page: Page) -> None:
    alice = IDENTITIES["alice"]
    for case in FLUX["encrypted"]:
        primary = case["envelopes"][0]["envelope"]
        bcc = [e["bcc_recipient"] for e in case["envelopes"][1:]]
        got = await flux_page.evaluate(
            """async ([seed, primary, bcc, readerPubs, plaintext, randomness]) => {
                const signer = await F.openSigner(F.b64d(seed));
                return F.composeEnvelopes(signer, {
                    to: primary.to, cc: primary.cc, bcc, subject: primary.subject,
                    content: plaintext, tags: primary.tags, encrypt: true, readerPubs,
                    randbytes: stream(randomness),
                }, primary.t);
            }""",
            [alice["private_key"], primary, bcc, case["encrypt_for"], case["plaintext"],
             det_stream(case["randbytes"])],
        )  # fmt: skip
        assert got == [e["envelope"] for e in case["envelopes"]], case["name"]
        for entry in case["envelopes"]:
            outcomes = await flux_page.evaluate(
                """async ([env, readers, others]) => {
                    const one = async (seed) => {
                        try { return await F.decryptContent(await F.openSigner(F.b64d(seed)), env); }
                        catch (e) { return {code: e.code}; }
                    };
                    return [await F.verifyEnvelope(env),
                            await Promise.all(readers.map(one)), await Promise.all(others.map(one))];
                }""",
                [entry["envelope"],
                 [BY_ADDRESS[a]["private_key"] for a in entry["readers"]],
                 [BY_ADDRESS[a]["private_key"] for a in entry["non_readers"] if a in BY_ADDRESS]],
            )  # fmt: skip
            verdict, read, refused = outcomes
            assert verdict == {"ok": True}
            assert read == [case["plaintext"]] * len(entry["readers"])
            assert all(r == {"code": "not_a_recipient"} for r in refused)


async def test_prototype_encrypted_message_still_decrypts(flux_page: Page) -> None:
    vector = SEED["encrypted"][0]
    readers = [BY_ADDRESS[a]["private_key"] for a in vector["readers"]]
    got = await flux_page.evaluate(
        """async ([env, seeds]) => Promise.all(seeds.map(
            async (s) => F.decryptContent(await F.openSigner(F.b64d(s)), env)))""",
        [vector["envelope"], readers],
    )
    assert got == [vector["plaintext"]] * len(readers)


async def test_tampered_ciphertext_is_decryption_failed(flux_page: Page) -> None:
    case = FLUX["encrypted"][0]
    env = dict(case["envelopes"][0]["envelope"])
    raw = bytearray(b64d(env["content_enc"]))
    raw[-1] ^= 1
    env["content_enc"] = b64e(bytes(raw))
    bob = IDENTITIES["bob"]["private_key"]
    got = await flux_page.evaluate(
        """async ([env, seed]) => {
            try { return await F.decryptContent(await F.openSigner(F.b64d(seed)), env); }
            catch (e) { return [e.name, e.code]; }
        }""",
        [env, bob],
    )
    assert got == ["FluxError", "decryption_failed"]


# --- canonical form and base64 --------------------------------------------------------------


async def test_canonical_form_edge_cases(flux_page: Page) -> None:
    values: list[Any] = [
        {"b": 1, "a": [True, False, None, -0, 9007199254740991, -9007199254740991]},
        {"\ue000": 1, "\U0001f600": 2, "z": 3, "é": 4},  # code point order, not UTF-16
        'quote " backslash \\ slash / <>& \b\f\n\r\t \x00\x1f\x7f \x80 \u2028 👋',
        [[], {}, "", [[{}]]],
    ]
    got = await flux_page.evaluate("(vs) => vs.map((v) => F.canonical(v))", values)
    assert got == [json.dumps(v, sort_keys=True, separators=(",", ":")) for v in values]
    proto = await flux_page.evaluate(
        """async () => {
            const env = JSON.parse('{"__proto__": {"a": 1}, "b": 2, "sig": "x"}');
            return new TextDecoder().decode(F.signingPayload(env));
        }"""
    )
    assert proto == '{"__proto__":{"a":1},"b":2}'
    refused = await flux_page.evaluate(
        """() => [1.5, 2 ** 53, NaN, "\\ud800", {a: undefined}, new Date(0)].map((v) => {
            try { F.canonical(v); return null; } catch (e) { return e.code; }
        })"""
    )
    assert refused == ["malformed_json"] * 6


async def test_base64url_is_strict(flux_page: Page) -> None:
    samples = [os.urandom(n) for n in range(0, 70)]
    got = await flux_page.evaluate(
        "(texts) => texts.map((t) => F.b64e(F.b64d(t)))", [b64e(s) for s in samples]
    )
    assert got == [b64e(s) for s in samples]
    refused = await flux_page.evaluate(
        """() => ["QQ", "QR==", "QQ==\\n", "a+b/", "QUJD=", "Q===", "QUJ\u00e9"].map((t) => {
            try { F.b64d(t); return null; } catch (e) { return [e.code, e.field]; }
        })"""
    )
    assert refused == [["invalid_value", "value"]] * 7
    for text in ["QQ", "QR==", "a+b/", "Q==="]:
        with pytest.raises(Exception):  # noqa: B017 - Python refuses the same spellings
            b64d(text)


# --- both ways against Python -----------------------------------------------------------------


def drawn(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples of `strategy`, drawn by hypothesis (shrinking is moot: every example
    is checked in one batch, and a failure prints the content)."""
    out: list[Any] = []

    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out[:count]


# Any Unicode but lone surrogates (outside the data model), from short to large.
CONTENT = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=200),
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=2000, max_size=4000).map(
        lambda s: s * 4
    ),
)
SUBJECT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=60)
TAGS = st.lists(st.sampled_from(["work", "Ünïcode", "ΑΣ", "done", "x" * 64, "émoji👋"]), max_size=3)


def person(label: str) -> Identity:
    return Identity(hashlib.sha256(f"flux-web-test:{label}".encode()).digest())


ALICE, BOB, CAROL, DAVE = (person(n) for n in ("alice", "bob", "carol", "dave"))
PUBS = {p.address: p.pub_b64() for p in (ALICE, BOB, CAROL, DAVE)}


async def test_browser_envelopes_verify_and_decrypt_in_python(flux_page: Page) -> None:
    contents = drawn(st.tuples(CONTENT, SUBJECT, TAGS, st.booleans()), 12)
    now = FLUX["now_ms"]
    made = await flux_page.evaluate(
        """async ([seed, cases, to, cc, bcc, pubs, now]) => {
            const signer = await F.openSigner(F.b64d(seed));
            return Promise.all(cases.map(([content, subject, tags, encrypt]) =>
                F.composeEnvelopes(signer, {to, cc: [cc], bcc: [bcc], subject, content, tags,
                                            encrypt, readerPubs: pubs}, now)));
        }""",
        [b64e(ALICE.seed), contents, BOB.address, CAROL.address, DAVE.address, PUBS, now],
    )
    for (content, subject, tags, encrypt), envelopes in zip(contents, made, strict=True):
        assert len(envelopes) == 2  # the primary and DAVE's BCC copy
        primary, copy = envelopes
        for env in envelopes:
            verify_envelope(env, now_ms=now)
            readers = [BOB, CAROL, ALICE] + ([DAVE] if env is copy else [])
            for reader in readers:
                assert decrypt_content(env, reader) == content
        assert "bcc" not in primary and copy["bcc"] == [DAVE.address]
        assert primary["encrypted"] is True if encrypt else "encrypted" not in primary
        # the same input in Python gives the same envelope (up to id and randomness)
        python = compose(ALICE, BOB.address, content, subject=subject or None, cc=[CAROL.address],
                         bcc=[DAVE.address], tags=tags or None, now_ms=now,
                         message_id=primary["id"])  # fmt: skip
        if not encrypt:
            assert [python.primary, python.bcc_copies[0][1]] == envelopes


async def test_python_envelopes_verify_and_decrypt_in_the_browser(flux_page: Page) -> None:
    contents = drawn(st.tuples(CONTENT, SUBJECT, TAGS), 12)
    now = FLUX["now_ms"]
    made = [
        compose(
            ALICE,
            BOB.address,
            content,
            subject=subject or None,
            cc=[CAROL.address],
            bcc=[DAVE.address],
            tags=tags or None,
            now_ms=now,
            encrypt_for={
                BOB.address: BOB.public_key,
                CAROL.address: CAROL.public_key,
                DAVE.address: DAVE.public_key,
            },
        ).all
        for content, subject, tags in contents
    ]
    got = await flux_page.evaluate(
        """async ([batches, seeds]) => {
            const signers = await Promise.all(seeds.map((s) => F.openSigner(F.b64d(s))));
            return Promise.all(batches.map((envs) => Promise.all(envs.map(async (env, i) => [
                await F.verifyEnvelope(env),
                await Promise.all(signers.slice(0, i ? 4 : 3).map((s) => F.decryptContent(s, env))),
            ]))));
        }""",
        [made, [b64e(p.seed) for p in (BOB, CAROL, ALICE, DAVE)]],
    )
    for (content, _, _), batch in zip(contents, got, strict=True):
        for verdict, plain in batch:
            assert verdict == {"ok": True}
            assert set(plain) == {content}


async def test_shape_errors_match_python(flux_page: Page) -> None:
    """Broken envelopes get the code and field Python gives them (§4.3)."""
    good = compose(ALICE, BOB.address, "hi", subject="s", cc=[CAROL.address], now_ms=1).primary
    broken: list[dict[str, Any]] = [
        {k: v for k, v in good.items() if k != "to"},
        {**good, "v": "2.0"},
        {**good, "v": 1},
        {**good, "cc": [CAROL.address, "nope"]},
        {**good, "tags": ["Upper"]},
        {**good, "tags": [" padded"]},
        {**good, "tags": ["x\u0085"]},  # Python's strip() takes U+0085; JS trim() does not
        {**good, "tags": ["ok\ufeff"]},  # JS trim() takes U+FEFF; Python's strip() does not
        {**good, "content": "x" * 65537},
        {**good, "subject": "é" * 2049},
        {**good, "extra": 1},
        {**good, "expires": -1},
        {**good, "encrypted": True},
        {**good, "encrypted": True, "content_enc": "AAAA", "enc_recipients": {BOB.address: "AAAA"}},
        {**good, "t": 1.5},
        {**good, "pub": "short"},
        {**good, "sig": b64e(b"\0" * 64)},
        {**good, "content": "changed"},
        {**good, "route": [{"server": "a", "t": 1, "x": 2}]},
        {**good, "cc": [ALICE.address] * 100},
        "not an object",
    ]
    got = await flux_page.evaluate(
        "(envs) => Promise.all(envs.map((e) => F.verifyEnvelope(e)))", broken
    )
    for env, verdict in zip(broken, got, strict=True):
        try:
            verify_envelope(env)
        except Exception as exc:
            expected = (exc.code, exc.field)  # type: ignore[attr-defined]
        else:
            expected = None
        actual = None if verdict["ok"] else (verdict["code"], verdict.get("field"))
        assert actual == expected, (
            env if not isinstance(env, dict) else {k: str(v)[:40] for k, v in env.items()}
        )


# --- the curve arithmetic against libsodium ---------------------------------------------------

P = 2**255 - 19
SMALL_ORDER_Y = [
    0,
    1,
    P - 1,
    2707385501144840649318225287225658788936804267575313519463743609750303402022,
]


def encode_y(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


def libsodium_montgomery(pub: bytes) -> str | None:
    try:
        return b64e(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(pub))
    except Exception:
        return None


async def test_montgomery_map_and_refusals_match_libsodium(flux_page: Page) -> None:
    keys = [Identity(os.urandom(32)).public_key for _ in range(20)]
    keys += [
        encode_y(y, s) for y in [*SMALL_ORDER_Y, P - SMALL_ORDER_Y[3], P, P + 1] for s in (0, 1)
    ]
    keys += [os.urandom(32) for _ in range(20)]  # about half are not on the curve
    # a key of mixed order: a real key plus a point of order 2 (y -> -y flips it)
    mixed = bytearray(keys[0])
    keys.append(bytes(mixed[:31]) + bytes([mixed[31] ^ 0x80]))  # -A: still in the subgroup
    torsion = nacl.bindings.crypto_core_ed25519_add(keys[1], encode_y(SMALL_ORDER_Y[3]))
    keys.append(torsion)
    got = await flux_page.evaluate(
        """(keys) => keys.map((k) => {
            const u = FP.curve.montgomeryFromEdwards(F.b64d(k));
            return u === null ? null : F.b64e(u);
        })""",
        [b64e(k) for k in keys],
    )
    assert got == [libsodium_montgomery(k) for k in keys]
    assert got[-1] is None and got[0] is not None  # mixed order refused, as libsodium does


async def test_signature_rules_match_libsodium(flux_page: Page) -> None:
    """S < L, canonical A, small-order A or R refused: libsodium's rules (PROTOCOL §1)."""
    signer = Identity(os.urandom(32))
    msg = b"flux"
    sig = signer.sign_bytes(msg)
    L = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little")
    cases = [
        (signer.public_key, sig),
        (signer.public_key, sig[:32] + (s + L).to_bytes(32, "little")),  # S + L: same point
        (signer.public_key, encode_y(1) + sig[32:]),  # R of small order
        (encode_y(1), sig),  # A of small order
        (encode_y(P + 2), sig),  # A not canonical
        (signer.public_key, sig[:63] + bytes([sig[63] ^ 1])),
    ]

    def sodium(pub: bytes, sg: bytes) -> bool:
        try:
            nacl.bindings.crypto_sign_open(sg + msg, pub)
        except Exception:
            return False
        return True

    got = await flux_page.evaluate(
        """([cases, msg]) => Promise.all(cases.map(([pub, sig]) =>
            FP.webcrypto.ed25519Verify(F.b64d(pub), F.b64d(msg), F.b64d(sig))))""",
        [[[b64e(p), b64e(g)] for p, g in cases], b64e(msg)],
    )
    assert got == [sodium(p, g) for p, g in cases]
    assert got[0] is True and not any(got[1:])


# --- key files ----------------------------------------------------------------------------------


async def test_key_files_both_ways(flux_page: Page) -> None:
    ident = Identity(os.urandom(32))
    plain = ident.to_keyfile()
    sealed_py = ident.to_keyfile("correct horse ✓")
    got = await flux_page.evaluate(
        """async ([plain, sealedPy]) => {
            const fromPlain = await F.identityFromKeyFile(plain);
            const fromSealed = await F.openKeyFile(sealedPy, "correct horse ✓");
            const wrong = await F.openKeyFile(sealedPy, "wrong").catch((e) => [e.code, e.message]);
            const none = await F.identityFromKeyFile(sealedPy).catch((e) => e.code);
            const sealed = await F.sealKeyFile(plain, "pässphrase");
            return [F.keyFileFor(fromPlain), fromSealed.address, F.b64e(fromSealed.seed), wrong, none, sealed];
        }""",
        [plain, sealed_py],
    )
    text, address, seed, wrong, none, sealed_js = got
    assert text == plain and address == ident.address and seed == ident.private_b64()
    assert wrong == ["bad_key_file", "wrong passphrase (or a damaged key file)"]
    assert none == "bad_key_file"
    assert Identity.from_keyfile(sealed_js, "pässphrase").address == ident.address
    assert json.loads(sealed_js).keys() == json.loads(sealed_py).keys()
    refused = await flux_page.evaluate(
        """(texts) => Promise.all(texts.map((t) => F.identityFromKeyFile(t).then(
            () => null, (e) => [e.code, e.field ?? null])))""",
        ["nope", "[]", "{}", json.dumps({"private_key": "AAAA"}),
         json.dumps({"address": BOB.address, "private_key": ident.private_b64()})],
    )  # fmt: skip
    assert refused == [
        ["bad_key_file", None], ["bad_key_file", None], ["bad_key_file", None],
        ["bad_key_file", "private_key"], ["bad_key_file", "address"],
    ]  # fmt: skip


# --- keys kept in the browser -------------------------------------------------------------------


async def test_a_saved_key_is_non_extractable_survives_a_reload_and_is_never_sent(
    flux_page: Page, web_origin: StaticSite, page_log: PageLog
) -> None:
    made = await flux_page.evaluate(
        """async () => {
            const id = await F.generateIdentity();
            const signer = await F.openSigner(id.seed);
            await F.saveSigner(signer, {label: "mine"});
            return [F.b64e(id.seed), id.address, F.keyFileFor(id)];
        }"""
    )
    seed_b64, address, keyfile = made
    await flux_page.reload()
    page = await flux_in(flux_page, web_origin)
    got = await page.evaluate(
        """async () => {
            const [signer] = await F.loadSigners();
            const exports = await Promise.all(
                [[signer.signingKey, "pkcs8"], [signer.signingKey, "jwk"], [signer.x25519, "pkcs8"],
                 [signer.x25519, "raw"]].map(([k, f]) => crypto.subtle.exportKey(f, k).then(
                    () => "exported", (e) => e.name)));
            const sig = F.b64e(await signer.sign(new TextEncoder().encode("hello")));
            const extractable = [signer.signingKey.extractable, signer.x25519.extractable];
            return [signer.address, signer.label, signer.pubB64, sig, exports, extractable];
        }"""
    )
    signed_address, label, pub, sig, exports, extractable = got
    assert signed_address == address and label == "mine"
    assert exports == ["InvalidAccessError"] * 4 and extractable == [False, False]
    ident = Identity(b64d(seed_b64))
    assert Identity.from_keyfile(keyfile).address == address == ident.address
    assert sig == ident.sign(b"hello") and pub == ident.pub_b64()
    # a message to that key decrypts in the reloaded page
    env = compose(BOB, address, "for the kept key", encrypt_for={address: pub}, now_ms=1).primary
    plain = await page.evaluate(
        "async (env) => F.decryptContent((await F.loadSigners())[0], env)", env
    )
    assert plain == "for the kept key"
    await page.evaluate("(a) => F.forgetSigner(a)", address)
    assert await page.evaluate("async () => (await F.loadSigners()).length") == 0
    secrets = [seed_b64, b64d(seed_b64).hex(), seed_b64.rstrip("=")]
    for sent in page_log.sent():
        assert not any(s in sent for s in secrets)
    assert page_log.requests, "the page log saw the page's own requests"


# --- against a real FLUX server -----------------------------------------------------------------


async def test_register_and_session_bodies_are_accepted_by_a_server(
    flux_page: Page, flux_server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(flux_server.url + "/federation/info") as resp:
            domain = (await resp.json())["domain"]
        seed = os.urandom(32)
        address = Identity(seed).address
        async with http.get(
            flux_server.url + "/auth/challenge", params={"address": address}
        ) as resp:
            challenge = await resp.json()
        now = int(time.time() * 1000)
        register, session = await flux_page.evaluate(
            """async ([seed, domain, now, challenge]) => {
                const signer = await F.openSigner(F.b64d(seed));
                return [await F.registerBody(signer, domain, now),
                        await F.authSessionBody(signer, challenge.challenge, challenge.domain)];
            }""",
            [b64e(seed), domain, now, challenge],
        )
        async with http.post(flux_server.url + "/register", json=register) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(flux_server.url + "/auth/session", json=session) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["token"]


# --- secure context -------------------------------------------------------------------------------


async def test_an_insecure_page_is_told_so(browser: FluxBrowser, web_origin: StaticSite) -> None:
    page, log = await browser.new_page()
    await page.goto(web_origin.insecure_blank)
    got = await page.evaluate(
        """async (url) => {
            const F = await import(url);
            const tries = [() => F.generateIdentity(), () => F.openSigner(new Uint8Array(32)),
                           () => F.verifyEnvelope({})];
            const out = [isSecureContext];
            for (const t of tries) out.push(await t().then(() => "no error", (e) => [e.code, e.message]));
            return out;
        }""",
        web_origin.insecure_module("js/flux/index.js"),
    )
    assert got[0] is False
    assert got[1][0] == got[2][0] == "insecure_context"
    assert "HTTPS" in got[1][1]
    assert got[3] == "no error" or got[3][0] == "insecure_context"
    assert log.errors == []
    await page.context.close()


# --- the module's surface and its files -----------------------------------------------------------

#: what js/app may import from js/flux/index.js (the contract with the web app, issue 13)
EXPORTS = sorted([
    "FluxError", "Signer", "addressFromPub", "authSessionBody", "b64d", "b64e", "bodyHash",
    "canonical", "checkShape", "composeEnvelopes", "decryptContent", "findOffense",
    "forgetSigner", "generateIdentity", "identityFromKeyFile", "integrityHash", "isAddress",
    "keyFileFor", "loadSigners", "newMessageId", "openKeyFile", "openSigner", "registerBody",
    "saveSigner", "sealKeyFile", "signingPayload", "verifyChain", "verifyEnvelope",
])  # fmt: skip
FLUX_JS = Path(__file__).resolve().parents[2] / "src/flux/server/static/web/js/flux"


async def test_index_exports_the_contract(flux_page: Page) -> None:
    assert await flux_page.evaluate("() => Object.keys(F).sort()") == EXPORTS


def test_the_modules_name_no_other_origin_and_build_no_code() -> None:
    """Plain ES modules loaded from this origin only: no URL of another site, no eval, no
    HTML from strings (CSP forbids the first two anyway; this says where, if one creeps in)."""
    for path in sorted(FLUX_JS.glob("*.js")):
        code = "\n".join(
            line
            for line in path.read_text().splitlines()
            if not line.lstrip().startswith(("//", "/*", "*"))
        )
        for banned in ("http://", "https://", "eval(", "new Function", "innerHTML", "document."):
            assert banned not in code, f"{path.name}: {banned}"
        imported = re.findall(r'\bfrom\s+"([^"]+)";', code)  # static imports and re-exports
        assert all(name.startswith("./") for name in imported), path.name
        assert not re.search(r"\bimport\s*\(", code), f"{path.name}: a dynamic import"


async def test_mail_through_a_real_server_both_ways(
    flux_page: Page, flux_server: RunningServer
) -> None:
    """The browser's key registers, sends encrypted mail that Python reads through a real
    server (sealed hop and all), and reads Python's answer: its signature, its sealed hop
    under the keys the server publishes, and its content."""
    bob = Identity(os.urandom(32))
    seed = os.urandom(32)
    me = Identity(seed)
    async with (
        aiohttp.ClientSession() as http,
        FluxClient(bob, flux_server.url, session=http) as bob_client,
    ):
        await bob_client.register()
        async with http.get(flux_server.url + "/federation/info") as resp:
            info = await resp.json()
        content = "from the browser ✓ " + "é" * 3000
        register, envelopes = await flux_page.evaluate(
            """async ([seed, domain, now, bob, bobPub, content]) => {
                const signer = await F.openSigner(F.b64d(seed));
                return [await F.registerBody(signer, domain, now),
                        await F.composeEnvelopes(signer, {to: bob, subject: "hi", content,
                            encrypt: true, readerPubs: {[bob]: bobPub}}, now)];
            }""",
            [
                b64e(seed),
                info["domain"],
                int(time.time() * 1000),
                bob.address,
                bob.pub_b64(),
                content,
            ],
        )
        async with http.post(flux_server.url + "/register", json=register) as resp:
            assert resp.status == 200, await resp.text()
        for env in envelopes:
            async with http.post(flux_server.url + "/send", json=env) as resp:
                assert resp.status == 200, await resp.text()
        received = [m for m in await bob_client.fetch() if m["id"] == envelopes[0]["id"]]
        assert len(received) == 1
        verified = await bob_client.verify_online(received[0])
        assert verified.chain.sealed and bob_client.decrypt(received[0]) == content

        await bob_client.send(me.address, "answer ✓", encrypt=True, keys={me.address: me.pub_b64()})
        async with http.get(
            flux_server.url + "/auth/challenge", params={"address": me.address}
        ) as resp:
            challenge = await resp.json()
        session = await flux_page.evaluate(
            """async ([seed, c]) => F.authSessionBody(await F.openSigner(F.b64d(seed)), c.challenge, c.domain)""",
            [b64e(seed), challenge],
        )
        async with http.post(flux_server.url + "/auth/session", json=session) as resp:
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{flux_server.url}/fetch/{me.address}", headers=headers) as resp:
            answer = (await resp.json())["messages"][0]
    verdict, chain, plain = await flux_page.evaluate(
        """async ([seed, msg, domain, info]) => {
            const signer = await F.openSigner(F.b64d(seed));
            const keysOf = async (name) => { if (name !== domain) throw new Error("unknown"); return info; };
            return [await F.verifyEnvelope(msg), await F.verifyChain(msg, keysOf), await F.decryptContent(signer, msg)];
        }""",
        [b64e(seed), answer, info["domain"], info],
    )
    assert verdict == {"ok": True} and plain == "answer ✓"
    assert chain["verdict"] == "pass" and [h["status"] for h in chain["hops"]] == ["sealed"]
    assert chain["hops"][0]["server"] == info["domain"] and chain["blame"] is None


async def test_envelope_vectors_verdicts(flux_page: Page) -> None:
    """Every `envelopes` vector given as a JSON value (not as raw text: the strict parser of
    §3.1 is the browser's JSON.parse's job to the page, out of js/flux) gets its expected
    verdict, code and field from F.verifyEnvelope (§4.3)."""
    cases = [c for c in FLUX["envelopes"]["cases"] if "envelope" in c]
    assert len(cases) > 100
    got = await flux_page.evaluate(
        """(cases) => Promise.all(cases.map((c) =>
            F.verifyEnvelope(c.envelope, c.now_ms === undefined ? {} : { nowMs: c.now_ms })))""",
        cases,
    )
    for case, verdict in zip(cases, got, strict=True):
        expected = case["expected"]
        if expected.get("valid"):
            assert verdict["ok"], (case["name"], verdict)
        else:
            error = expected["error"]
            actual = None if verdict["ok"] else (verdict["code"], verdict.get("field"))
            assert actual == (error["code"], error["field"]), (case["name"], verdict)
