"""Fan-out: mailbox events reach every live socket of an address, in every process.

A process publishes an event after the store has committed the change it describes (new
mail for an address, or a status, tag or folder change). `Dispatcher` turns an event into
frames on this process's sockets (the push hub). With one process (SQLite, memory) that
is all: `LocalFanout`. With several processes on one PostgreSQL database, a socket may be
open on another process than the one that stored the mail, so `PostgresFanout` also sends
each event on a PostgreSQL channel (`NOTIFY`), and every process `LISTEN`s and dispatches
what the others published.

New mail is announced inside the storing transaction: the submitter hands the store
an `Announcement` (`announcement`: the channel and each recipient's payload, made here,
so the store knows nothing of sockets but a channel and some text), and the store's
function NOTIFYs it for each recipient stored. PostgreSQL delivers a NOTIFY only at its
transaction's commit, so no socket ever hears of mail the store could still lose, which
is the property that matters, and no process that dies after its commit loses that push;
it saves the submission the round trip of a NOTIFY of its own (issue 15, aim 3). Until the
listening connection has learnt the channel (its scope, asked of the database), and for
every other event (changes, delivery states), an event is published after the commit,
on the fanout's own connection: a process that dies between that commit and its NOTIFY
loses that one push (never the mail). Clients cover it as they cover any dropped socket:
the mail is still pending (it is delivered by the next `authed` or fetch) and `/changes`
replays every change since a client's last state. A pushed message is marked delivered
only when the client acknowledges it (push.py), so a push lost on a dying socket leaves
it pending for the next `authed` or fetch too. Events for this process's own sockets
are dispatched directly, without the database round trip.

Delivery states (kind DELIVERY): the delivery worker that settles a batch pushes the
`delivery` frame to the sender's sockets in its own process (push.py push_delivery), and,
through `Hub.relay_delivery`, sends the event on the same channel, naming the message and
the recipients whose state changed; another process with a socket of the sender reads the
sent record once and pushes the states as they stand (never older than the change).

A NOTIFY payload is limited to 8000 bytes, so an event naming many messages is split.
Events name messages by (id, sender) (`MessageRef`): an id alone names a message only
together with its sender (PROTOCOL.md §4.5), so a push never looks up another sender's
message that happens to share the id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..background import running
from ..store.base import Announcement, DeliveryUpdates, MessageRef, MessageStatus, Store
from .push import Hub, delivered_wire, push_delivery_here

if TYPE_CHECKING:
    from .names import NameResolver

log = logging.getLogger("flux.server")

NEW = "new"  #: mail stored for the address (the new messages)
CHANGED = "changed"  #: status, tags or folder of these messages changed
#: the delivery state of a message the address sent changed (its sent mail: push.py
#: push_delivery); relayed to the other processes only, this one pushed it already
DELIVERY = "delivery"
KINDS = (NEW, CHANGED, DELIVERY)
#: 20 (id, sender) pairs, an address being at most a few hundred characters, keep a
#: payload far under 8000 bytes
IDS_PER_EVENT = 20
KEEPALIVE_S = 5.0  #: an idle listening connection is checked this often
OUTBOX_LIMIT = 10_000  #: events waiting for NOTIFY; beyond, dropped (clients catch up)
#: a NOTIFY payload must stay under 8000 bytes; a DELIVERY event past this names no
#: recipients instead (the other processes then say every recipient's state)
MAX_PAYLOAD = 7000
#: events sent in one statement at most, when several are waiting (one round trip; one
#: transaction, whose NOTIFYs the listeners get in order, at its commit)
NOTIFY_BATCH = 100
NOTIFY_ALL = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"


@dataclass(frozen=True, slots=True)
class MailEvent:
    address: str
    kind: str  #: NEW or CHANGED
    ids: tuple[MessageRef, ...]  #: (id, sender) of each message
    state: int = 0  #: the address's state token after the change (CHANGED)
    origin: str = ""  #: "<process>/<socket>" whose request made the change: not echoed to it
    #: DELIVERY: the recipients whose state changed (() for "say every recipient's")
    recipients: tuple[str, ...] = ()


class Dispatcher:
    """Turns events into frames on this process's sockets."""

    def __init__(
        self, store: Store, hub: Hub, process: str, names: NameResolver | None = None
    ) -> None:
        """`names`: adds `_from_name` to pushed mail, as every listing has it (names.py);
        the Mailbox that shows the same mailbox hands its resolver over when none is given
        here (Mailbox.__init__). Its cache is what keeps a push from costing an account
        lookup per message: a sender's name, or its lack, is looked up once per while."""
        self.store = store
        self.hub = hub
        self.process = process
        self.names = names

    def origin(self, conn: object | None) -> str:
        return f"{self.process}/{id(conn)}" if conn is not None else ""

    def listening(self, address: str) -> bool:
        """True if `address` has a socket on this process. For any other address an event
        does nothing here, whatever its kind (`deliver`: no frame, no read, no cache or
        counter touched), so the fan-out drops it unread (PostgresFanout._heard)."""
        return self.hub.listening(address)

    async def deliver(self, event: MailEvent) -> None:
        if not self.listening(event.address):
            return
        if event.kind == DELIVERY:
            await self._push_delivery(event)
            return
        if event.kind == NEW:
            for ref in event.ids:
                await self._push_message(event.address, ref)
            return
        frame = {"action": "changed", "ids": [r.id for r in event.ids],
                 "refs": [{"id": r.id, "from": r.sender} for r in event.ids],
                 "state": event.state}  # fmt: skip
        self.hub.push(event.address, frame, exclude=self._own_socket(event))

    async def _push_message(self, address: str, ref: MessageRef) -> None:
        # Not marked here: a pending message becomes delivered when a socket's client
        # acknowledges the frame (push.py, "Delivered means the client got it"), so a
        # push onto a socket that dies on the way leaves it pending. One that another
        # socket or a fetch took first is pushed as it now stands, with nothing to ack.
        row = await self.store.get(address, ref.id, ref.sender)
        if row is None or row.status is MessageStatus.DELETED:
            return
        message = delivered_wire(row)
        if self.names is not None:
            message = (await self.names.annotate([message]))[0]
        frame = {"action": "message", "message": message, "state": row.seq}
        pending = row.status is MessageStatus.PENDING
        self.hub.push(address, frame, ref=row.ref if pending else None)

    async def _push_delivery(self, event: MailEvent) -> None:
        """Another process settled a delivery of mail this address sent: its sockets here
        get the same `delivery` frame, the states read as they stand now (one read per
        event, and only when the sender has a socket here)."""
        for ref in event.ids:
            record = await self.store.sent_message(event.address, ref.id)
            if record is None:
                continue
            wanted = event.recipients or tuple(record.delivery)
            states = {r: dict(record.delivery[r]) for r in wanted if r in record.delivery}
            if states:
                push_delivery_here(self.hub, {(event.address, ref.id): states})

    def _own_socket(self, event: MailEvent) -> Any:
        process, _, conn_id = event.origin.partition("/")
        if process != self.process:
            return None
        return next((c for c in self.hub.sockets(event.address) if str(id(c)) == conn_id), None)


class LocalFanout:
    """One process: events go straight to its own sockets."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def publish(self, event: MailEvent) -> None:
        await self.dispatcher.deliver(event)

    async def publish_here(self, event: MailEvent) -> None:
        """This process's sockets only: the other processes were told by the store
        (the `announcement` it sent at its commit)."""
        await self.dispatcher.deliver(event)

    def announcement(self, recipients: Sequence[str], ref: MessageRef) -> Announcement | None:
        """What the store should NOTIFY of new mail `ref` for `recipients` (module notes);
        None: no other process listens."""
        return None

    def origin(self, conn: object | None) -> str:
        return self.dispatcher.origin(conn)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        yield


class PostgresFanout(LocalFanout):
    """Several processes on one PostgreSQL database: events also go out on a channel."""

    def __init__(
        self, dispatcher: Dispatcher, dsn: str, domain: str, scope: str | None = None
    ) -> None:
        """`scope`: the store's schema scope (PostgresStore.scope); None asks the
        database which schema `dsn`'s search_path names, when the listener connects."""
        super().__init__(dispatcher)
        self.dsn = dsn
        self.domain = domain
        self.channel = "" if scope is None else channel_name(scope, domain)
        self._outbox: asyncio.Queue[MailEvent] = asyncio.Queue(OUTBOX_LIMIT)
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()  #: set while LISTENing (tests wait on it)
        if isinstance(dispatcher.hub, Hub):  # delivery states reach the other processes too
            dispatcher.hub.relay_delivery = self.relay_delivery

    async def publish(self, event: MailEvent) -> None:
        await super().publish(event)
        self._queue(event)

    def announcement(self, recipients: Sequence[str], ref: MessageRef) -> Announcement | None:
        if not self.channel:  # not yet learnt: published after the commit instead
            return None
        process = self.dispatcher.process
        payloads = {r: _encode(MailEvent(r, NEW, (ref,)), process) for r in recipients}
        return Announcement(self.channel, payloads)

    def relay_delivery(self, changes: DeliveryUpdates) -> None:
        """Send delivery-state changes to the other processes (this one's sockets have
        them already: push.py push_delivery). Without waiting: the delivery worker calls
        it right after its settling commit."""
        for (sender, msg_id), states in changes.items():
            event = MailEvent(sender, DELIVERY, (MessageRef(msg_id, sender),),
                              recipients=tuple(states))  # fmt: skip
            self._queue(event)

    def _queue(self, event: MailEvent) -> None:
        for part in _split(event):
            try:
                self._outbox.put_nowait(part)
            except asyncio.QueueFull:
                log.warning("event=fanout_dropped address=%s", event.address)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        async with running(self._run(), "flux-fanout"):
            yield

    async def _run(self) -> None:
        """LISTEN and NOTIFY on one connection, reconnecting while the database is away."""
        import asyncpg  # only with the PostgreSQL backend

        from ..store._postgres_locks import scope_of

        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
            except Exception as exc:  # the database is away: try again, never give up
                log.warning("event=fanout_connect_failed reason=%s", exc)
                await asyncio.sleep(delay)  # a retry timer, not synchronisation
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            try:
                if not self.channel:
                    self.channel = channel_name(await scope_of(conn, None), self.domain)
                await conn.add_listener(self.channel, self._heard)
                self.connected.set()
                while True:
                    try:  # (asyncio.timeout, not wait_for: see background.wait_at_most)
                        async with asyncio.timeout(KEEPALIVE_S):
                            event = await self._outbox.get()
                    except TimeoutError:  # idle: notice a lost connection (and LISTEN) soon
                        await conn.execute("SELECT 1")
                        continue
                    # what has queued up meanwhile goes in the same statement: one round
                    # trip for a burst of events (issue 15, aim 3), in their order
                    events = [event]
                    while len(events) < NOTIFY_BATCH and not self._outbox.empty():
                        events.append(self._outbox.get_nowait())
                    payloads = [_encode(e, self.dispatcher.process) for e in events]
                    await conn.execute(NOTIFY_ALL, self.channel, payloads)
            except Exception as exc:  # any failure of this connection (asyncpg raises
                # several kinds after a restart): reconnect, LISTEN again
                log.warning("event=fanout_connection_lost reason=%r", exc)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """Every process hears every other's events, most of them for addresses with no
        socket here: those are dropped before being decoded, and without a task (issue 15,
        aim 3c). A socket registers before its pending mail is fetched (push.py), so one
        that opens after this look fetches the mail the event announced (committed before
        its NOTIFY was sent); changes and delivery states it reads from /changes."""
        if payload.startswith(_sender_prefix(self.dispatcher.process)):
            return  # this process's own (dispatched directly): not worth decoding
        address = _address_of(payload)
        if address is not None and not self.dispatcher.listening(address):
            return  # no socket of that address here: nothing to do (Dispatcher.listening)
        try:
            process, event = _decode(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("event=fanout_bad_payload")
            return
        if process == self.dispatcher.process or not self.dispatcher.listening(event.address):
            return  # dispatched directly when published; or no socket here (as above)
        task = asyncio.get_running_loop().create_task(self.dispatcher.deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def channel_name(scope: str, domain: str) -> str:
    """The NOTIFY channel of one deployment: its schema scope and its domain, so neither
    two domains nor two deployments of one domain (staging and production in two schemas
    of one database) hear each other. Scope "" (the public schema) keeps the channel
    earlier versions used, so a rolling upgrade keeps its processes talking."""
    name = domain if not scope else f"{scope}\0{domain}"
    return "flux_mail_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def new_process_id() -> str:
    return uuid.uuid4().hex[:16]


def _split(event: MailEvent) -> Sequence[MailEvent]:
    if event.kind == DELIVERY:
        if len(_encode(event, "p" * 16).encode()) <= MAX_PAYLOAD:
            return [event]
        # too many recipients to name: the other processes say every recipient's state
        return [MailEvent(event.address, DELIVERY, event.ids[:1])]
    if len(event.ids) <= IDS_PER_EVENT:
        return [event]
    return [
        MailEvent(
            event.address, event.kind, event.ids[i : i + IDS_PER_EVENT], event.state, event.origin
        )
        for i in range(0, len(event.ids), IDS_PER_EVENT)
    ]


def _sender_prefix(process: str) -> str:
    """How `_encode`'s payloads from `process` begin (its first key is "p")."""
    return '{"p":' + json.dumps(process) + ","


_HEAD = '{"p":"'  #: how `_encode`'s payloads begin: the process id ...
_ADDRESS = '","a":"'  #: ... and then the address


def _address_of(payload: str) -> str | None:
    """The address a payload names, read without decoding the rest: `_encode` writes the
    process id and the address first (every version has). None for a payload that does
    not begin so, or whose id or address holds an escape (a non-ASCII address): it is
    then decoded in full, as it always was. Between quotes and without a backslash, JSON
    text is its string's value, so what this returns is what `_decode` reads."""
    if not payload.startswith(_HEAD):
        return None
    mid = payload.find('"', len(_HEAD))  # where the id ends (its first quote: no escapes)
    if mid < 0 or not payload.startswith(_ADDRESS, mid):
        return None
    start = mid + len(_ADDRESS)
    end = payload.find('"', start)
    if end < 0 or "\\" in payload[len(_HEAD) : end]:
        return None
    return payload[start:end]


def _encode(event: MailEvent, process: str) -> str:
    ids = [[r.id, r.sender] for r in event.ids]
    fields = {"p": process, "a": event.address, "k": event.kind, "i": ids, "s": event.state,
              "o": event.origin}  # fmt: skip
    if event.recipients:
        fields["r"] = list(event.recipients)
    return json.dumps(fields, separators=(",", ":"))


def _decode(payload: str) -> tuple[str, MailEvent]:
    d = json.loads(payload)
    pairs = d["i"]
    recipients = d.get("r", [])
    if d["k"] not in KINDS or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise ValueError("not a mail event")
    if not (isinstance(recipients, list) and all(isinstance(r, str) for r in recipients)):
        raise ValueError("not a list of recipients")
    refs = tuple(MessageRef(i, s) for i, s in pairs)
    event = MailEvent(str(d["a"]), d["k"], refs, int(d["s"]), str(d["o"]), tuple(recipients))
    return str(d["p"]), event
