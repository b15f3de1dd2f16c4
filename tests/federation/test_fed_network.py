"""Federation between real server processes over verified TLS (a trustme test CA).

Each test starts `flux server` processes named `localhost:<port>` in hosted mode; people
register at their own server and write remote recipients as `fx1…@server`. What is
checked is what a person would see: mail arrives by push, exactly once, in order, verifies
under every server's published key; an outage or a crash of the sender's server loses
nothing; mail that cannot be delivered comes back as a signed bounce.
"""

from __future__ import annotations

import pytest

from federation.fed_helpers import Inbox, Network
from flux.protocol import Identity, verify_envelope

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def net(tmp_path):
    network = Network(tmp_path)
    try:
        yield network
    finally:
        network.stop_all()


async def test_mail_crosses_servers_encrypted_with_cc_bcc_and_a_reply(net: Network) -> None:
    net.add("a")
    net.add("b")
    a, b = await net.start("a"), await net.start("b")
    alice, dave = Identity.generate(), Identity.generate()  # at A
    bob, carol, erin = Identity.generate(), Identity.generate(), Identity.generate()  # at B
    async with net.session() as http:
        to_alice = await net.client(http, "a", alice)
        to_bob, to_carol = await net.client(http, "b", bob), await net.client(http, "b", carol)
        bob_box, carol_box = await Inbox(to_bob).connect(), await Inbox(to_carol).connect()
        dave_box = await Inbox(await net.client(http, "a", dave)).connect()
        to_erin = await net.client(http, "b", erin)
        erin_box = await Inbox(to_erin).connect()

        await to_bob.claim("bob")  # bob keeps his key; b now resolves bob@b to it
        sent = await to_alice.send(
            f"bob@{b.name}", "across the federation", subject="hello",
            cc=f"{carol.address}@{b.name}", bcc=[dave.address, f"{erin.address}@{b.name}"],
            encrypt=True,
        )  # fmt: skip
        assert to_alice.bindings.get(f"bob@{b.name}") == bob.address  # remembered
        assert sent.recipients == {bob.address: "queued", carol.address: "queued",
                                   dave.address: "stored", erin.address: "queued"}  # fmt: skip

        (got,) = await bob_box.wait_for(1)
        (carol_got,) = await carol_box.wait_for(1)
        (dave_got,) = await dave_box.wait_for(1)
        for client, msg in ((to_bob, got), (to_carol, carol_got)):
            assert msg["id"] == sent.id and "bcc" not in msg  # the BCC stayed a secret
            verified = await client.verify_online(msg)
            assert verified.sender == alice.address and verified.chain.verdict == "pass"
            assert [h["server"] for h in msg["integrity_chain"]] == [a.name, b.name]
            assert client.decrypt(msg) == "across the federation"
        (erin_got,) = await erin_box.wait_for(1)
        for msg, who in ((dave_got, dave), (erin_got, erin)):
            assert msg["bcc"] == [who.address]  # each BCC copy names only its recipient
        assert to_erin.decrypt(erin_got) == "across the federation"
        assert (await to_erin.verify_online(erin_got)).chain.verdict == "pass"
        assert len(bob_box.messages) == len(carol_box.messages) == 1  # no BCC copy leaked

        alice_box = await Inbox(to_alice).connect()
        await to_bob.reply(got, "got it")
        (answer,) = await alice_box.wait_for(1)
        assert answer["re"] == sent.id and to_alice.decrypt(answer) == "got it"
        assert (await to_alice.verify_online(answer)).chain.verdict == "pass"


async def queued_while_b_is_down(net: Network, http, count: int) -> tuple[Identity, list[str]]:
    """alice at A sends `count` messages to bob at B while B is down; (bob, the ids sent),
    each answered `queued`."""
    net.add("a", FLUX_SPAM_RATE_PER_MINUTE="1000")
    net.add("b")
    await net.start("a")
    b = await net.start("b")
    alice, bob = Identity.generate(), Identity.generate()
    to_alice = await net.client(http, "a", alice)
    await net.client(http, "b", bob)
    net.kill("b")
    ids = []
    for n in range(count):
        sent = await to_alice.send(f"{bob.address}@{b.name}", f"message {n}")
        assert sent.recipients == {bob.address: "queued"}
        ids.append(sent.id)
    return bob, ids


async def test_an_outage_delays_mail_and_loses_none(net: Network) -> None:
    """B is down while alice sends 100 messages; when B returns all 100 arrive exactly
    once, in the order alice sent them."""
    async with net.session() as http:
        bob, ids = await queued_while_b_is_down(net, http, 100)
        stats = await net.get(http, "a", "/stats")
        assert stats["queue"]["queued"] == 100

        await net.start("b")
        to_bob = await net.client(http, "b", bob, register=False)
        inbox = await Inbox(to_bob).connect()
        await inbox.wait_for(100)
        listed = [m["id"] for m in (await to_bob.inbox(limit=500)).messages]
        assert sorted(listed) == sorted(ids) and len(listed) == 100  # exactly once
        assert list(reversed(listed)) == ids  # newest first: stored in sending order
        await net.queues_empty(http, "a")


async def test_a_crash_with_a_full_queue_loses_nothing(net: Network) -> None:
    async with net.session() as http:
        bob, ids = await queued_while_b_is_down(net, http, 40)
        net.kill("a")  # SIGKILL, with 40 messages queued
        await net.start("a")
        await net.start("b")
        inbox = await Inbox(await net.client(http, "b", bob, register=False)).connect()
        await inbox.wait_for(40)
        await net.queues_empty(http, "a")
        listed = [m["id"] for m in (await inbox.client.inbox(limit=500)).messages]
        assert sorted(listed) == sorted(ids)


async def test_undeliverable_mail_bounces_to_the_sender(net: Network) -> None:
    net.add("a", FLUX_QUEUE_RETRY_WINDOW_S="1.5")
    net.add("b")
    a = await net.start("a")
    b = await net.start("b")
    alice = Identity.generate()
    nobody, gone = Identity.generate(), Identity.generate()
    async with net.session() as http:
        to_alice = await net.client(http, "a", alice)
        box = await Inbox(to_alice).connect()
        # B is up but does not host `nobody`: refused at once, bounced at once
        unknown = await to_alice.send(f"{nobody.address}@{b.name}", "anyone there?")
        (first,) = await box.wait_for(1)
        net.kill("b")  # B never comes back: the retry window runs out
        lost = await to_alice.send(f"{gone.address}@{b.name}", "into the void", subject="void")
        await box.wait_for(2)
    info = await info_key(net, a.name)
    for bounce, original, who in ((first, unknown, nobody), (box.messages[1], lost, gone)):
        assert bounce["re"] == original.id and "bounce" in bounce["tags"]
        assert who.address in bounce["content"]
        verify_envelope({k: v for k, v in bounce.items() if not k.startswith("_")})
        assert bounce["pub"] == info  # signed by A's published server key
    assert box.messages[1]["subject"] == "Undeliverable: void"


# -- helpers --------------------------------------------------------------------------------
async def info_key(net: Network, name: str) -> str:
    async with net.session() as http, http.get(f"https://{name}/federation/info") as r:
        return (await r.json())["keys"][0]["pub"]
