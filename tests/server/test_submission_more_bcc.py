"""A BCC copy names exactly one address (server/submission.py `_check_bcc`, PROTOCOL.md
§5.2, §13), proved through a real server on 127.0.0.1.

Written for the mutants of `_check_bcc` (tests/mutation/submission.md): the compat tests
prove the same rule against the prototype's own client, but they run the server in a
child process, so they cannot see a mutant.
"""

from __future__ import annotations

from typing import Any

from flux.protocol import Identity, compose
from flux.protocol.envelope import sign_envelope

REFUSAL = (
    "bcc names more than one address: send the message without bcc to its to/cc, "
    "and one separately signed copy per bcc address, each naming only that address "
    "(PROTOCOL.md §5.2)"
)


def with_bcc(sender: Identity, msg: dict[str, Any], bcc: list[str]) -> dict[str, Any]:
    """`msg` signed again by its sender with `bcc` listing these addresses."""
    fields = {k: v for k, v in msg.items() if k not in ("sig", "pub")}
    return sign_envelope({**fields, "bcc": bcc}, sender)


async def test_an_envelope_whose_bcc_names_two_addresses_is_refused_naming_bcc(
    pair, alice, bob, carol
):
    """Two hosted bcc addresses: 400 naming `bcc` with the rule's text, and nobody (to or
    either bcc address) gets anything."""
    await pair.register(carol)
    await pair.login(carol)
    msg = with_bcc(alice, pair.message(alice, bob, "to bob, bcc carol and alice"),
                   [carol.address, alice.address])  # fmt: skip
    body = await pair.send(msg, expect=400)
    assert (body["code"], body["field"]) == ("invalid_value", "bcc")
    assert body["error"] == REFUSAL
    for who in (alice, bob, carol):
        assert (await pair.get(f"/inbox/{who.address}", who))["messages"] == []


async def test_an_envelope_whose_bcc_names_three_addresses_is_refused_too(pair, alice, bob, carol):
    await pair.register(carol)
    others = [carol.address, alice.address, Identity.generate().address]
    body = await pair.send(with_bcc(alice, pair.message(alice, bob), others), expect=400)
    assert (body["code"], body["field"], body["error"]) == ("invalid_value", "bcc", REFUSAL)


async def test_a_bcc_copy_naming_one_address_reaches_that_address_only(pair, alice, bob, carol):
    await pair.register(carol)
    await pair.login(carol)
    out = compose(alice, bob.address, "carol in bcc", bcc=[carol.address], now_ms=pair.clock.now)
    ((_, copy),) = out.bcc_copies
    body = await pair.send(copy)
    assert body["recipients"] == {carol.address: "stored"}
    assert [m["id"] for m in (await pair.get(f"/inbox/{carol.address}", carol))["messages"]] == [
        copy["id"]
    ]
    assert (await pair.get(f"/inbox/{bob.address}", bob))["messages"] == []
