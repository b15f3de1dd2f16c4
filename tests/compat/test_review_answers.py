"""Review of issue 11: the prototype's raw HTTP calls read fields FLUX's answers lacked
(`read`/`deleted`/`moved` on the marks, the four fields of /integrity/verify). Each is now part of every answer; the calls
here are the prototype's own shapes (flux/routes.py, flux/account_routes.py of 2.1.1)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from federation.fed_helpers import local_servers
from flux.protocol import Identity
from flux.protocol.outgoing import compose
from flux.protocol.tokens import legacy_token

SECRET = "review-legacy-secret-0123456789"


def _now() -> int:
    return int(time.time() * 1000)


async def test_the_prototypes_raw_answers_have_its_fields(tmp_path: Path) -> None:
    async with local_servers(tmp_path, ["f"], legacy_tokens=True, secret=SECRET) as servers:
        url = servers["f"].url
        bob = Identity.generate()
        sender = Identity.generate()
        headers = {"X-Flux-Token": legacy_token(bob.address, SECRET)}
        async with aiohttp.ClientSession() as http:

            async def call(method: str, path: str, **kw: object) -> dict:
                async with http.request(method, url + path, **kw) as r:  # type: ignore[arg-type]
                    body = await r.json()
                    assert r.status == 200, body
                    return body

            msg = compose(sender, bob.address, "for bob", now_ms=_now()).primary
            sent = await call("POST", "/send", json=msg)
            assert sent["recipients"] == {bob.address: "stored"}

            ref = {"id": msg["id"], "address": bob.address}
            assert (await call("POST", "/read", json=ref, headers=headers))["read"] is True
            unknown = {"id": "f" * 32, "address": bob.address}
            assert (await call("POST", "/read", json=unknown, headers=headers))["read"] is False
            move = {**ref, "inbox": "work"}
            assert (await call("POST", "/move", json=move, headers=headers))["moved"] is True
            assert (await call("POST", "/delete", json=ref, headers=headers))["deleted"] is True

            verdict = await call("POST", "/integrity/verify", json=msg)
            assert verdict["signature_valid"] is True and verdict["integrity_chain_valid"] is True
            assert verdict["offending_server"] is None and verdict["hop_count"] == 0
            forged = {**msg, "content": "changed"}
            assert (await call("POST", "/integrity/verify", json=forged))[
                "signature_valid"
            ] is False
