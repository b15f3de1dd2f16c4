"""The push of new mail names the message by its sender and id together (server/submission.py
`push_new`, PROTOCOL.md §4.5), proved through a real server's WebSocket on 127.0.0.1.

Written for `push_new__mutmut_9` and `_11` (tests/mutation/submission.md): with the sender
left out of the pushed reference, the socket was sent whichever stored message had that id,
which is another sender's when two senders used one id.
"""

from __future__ import annotations


async def test_the_pushed_message_is_the_senders_own_when_another_sender_used_its_id(
    pair, alice, bob, mallory
):
    await pair.register(mallory)
    earlier = pair.message(mallory, bob, "mallory's message, first")
    await pair.send(earlier)
    ws = await pair.ws(bob)
    mine = pair.message(alice, bob, "alice's message, same id", message_id=earlier["id"])
    assert (await pair.send(mine))["recipients"] == {bob.address: "stored"}
    frame = await ws.receive_json(timeout=5)
    await ws.close()
    assert frame["action"] == "message"
    assert (frame["message"]["id"], frame["message"]["from"]) == (mine["id"], alice.address)
    assert frame["message"]["sig"] == mine["sig"]
