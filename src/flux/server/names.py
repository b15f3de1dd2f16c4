"""Display names for senders: the `name@domain` this server knows for an fx1 address
(issue 12, "Display names"; docs/API.md, "Messages").

A listing shows who sent each message; an fx1 address alone means nothing to a person.
When this server binds the sender's address to a name, the listing adds that name beside
the envelope as the unsigned retrieval field `_from_name` (as `_status`, `_inbox` and
`_tags`): the stored envelope and its signature are never touched, and verification
ignores retrieval fields (protocol/envelope.py: `_from_name` must be one of its
RETRIEVAL_FIELDS before a listing adds it, or `verify_envelope` refuses it as unknown). The only bindings a server holds are its own accounts, of every kind:
a password or OAuth account it made the key for, and a name claimed by a key that signed
the claim (accounts/claims.py). So the name is always `{username}@{this domain}`; names
at other domains are resolved and pinned by clients (client/resolve.py, bindings.py),
which the server does not second-guess.

One more binding is the server's own: mail signed by this server's key (its bounces,
PROTOCOL.md §10.3; `make_bounce`) is from `mailer-daemon@{this domain}`, the mail system's
name (RFC 5321 §4.5.5 bounces come from it; it is reserved, accounts/names.py, so no account
can take it). `server_addresses` are the fx1 addresses of the server's keys, current and
retired, so a bounce stays named after a key rotation.

Why a cache: a page of 50 messages from a handful of senders would otherwise cost 50
account lookups. The cache is bounded (least recently used entries go first) and keeps
misses too, since most senders have no name here. A name, once given, is never taken
back or moved to another address (there is no rename or delete), so a cached name stays
true; a cached miss turns false the moment the address registers or claims a name, so
`Accounts.watch_names` makes this process forget it at once, and misses also expire after
`miss_ttl_ms`, which bounds how long another process serving the same database (which
this one hears nothing from) can go on showing the bare address.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..accounts import Accounts
from ..protocol.identity import is_address

__all__ = ["DAEMON_NAME", "FROM_NAME", "NameResolver"]

FROM_NAME = "_from_name"  #: the retrieval field a listing adds beside the envelope
MAX_ENTRIES = 4096  #: addresses remembered, named or not (a few hundred KiB at most)
MISS_TTL_MS = 60_000  #: how long "no name" is believed (other processes' registrations)
DAEMON_NAME = "mailer-daemon"  #: the name of mail the server itself signs (module notes)

Clock = Callable[[], int]


class NameResolver:
    """address -> `name@domain` for the accounts of `accounts` (module notes).

    `accounts`: this server's account service (its store is read, never written); `clock`:
    unix ms; `max_entries` bounds the cache, `miss_ttl_ms` how long a miss is kept;
    `server_addresses`: the fx1 addresses of this server's own keys, named
    `mailer-daemon@domain`."""

    def __init__(
        self,
        accounts: Accounts,
        clock: Clock,
        *,
        max_entries: int = MAX_ENTRIES,
        miss_ttl_ms: int = MISS_TTL_MS,
        server_addresses: Iterable[str] = (),
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.accounts = accounts
        self.server_addresses = frozenset(server_addresses)
        self.clock = clock
        self.max_entries = max_entries
        self.miss_ttl_ms = miss_ttl_ms
        #: address -> (name or None for "no name here", unix ms it was looked up)
        self._cache: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        accounts.watch_names(self.forget)

    def forget(self, address: str) -> None:
        """Drop what is cached for `address` (it just gained a name here)."""
        self._cache.pop(address, None)

    async def name_of(self, address: str) -> str | None:
        """`username@domain` if an account here has `address`, else None. Anything that
        is not an fx1 address has no name (and is not cached)."""
        if not is_address(address):
            return None
        if address in self.server_addresses:  # the server's own mail: its bounces
            return f"{DAEMON_NAME}@{self.accounts.domain}"
        now = self.clock()
        cached = self._cache.get(address)
        if cached is not None and (cached[0] is not None or now - cached[1] < self.miss_ttl_ms):
            self._cache.move_to_end(address)
            return cached[0]
        account = await self.accounts.named(address)
        name = None if account is None else f"{account.username}@{self.accounts.domain}"
        self._remember(address, name, now)
        return name

    def _remember(self, address: str, name: str | None, now: int) -> None:
        self._cache[address] = (name, now)
        self._cache.move_to_end(address)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def names_of(self, addresses: Iterable[str]) -> dict[str, str]:
        """{address: name} for those of `addresses` that have one (each looked up once)."""
        found = {}
        for address in dict.fromkeys(addresses):
            name = await self.name_of(address)
            if name is not None:
                found[address] = name
        return found

    async def annotate(self, messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `messages` (wire dicts, as `StoredMessage.to_wire()` gives) with
        `_from_name` added where the sender has a name here; absent otherwise. The
        envelopes themselves are not modified."""
        listed = [dict(m) for m in messages]
        names = await self.names_of(m["from"] for m in listed if isinstance(m.get("from"), str))
        for message in listed:
            name = names.get(message.get("from"))  # type: ignore[arg-type]
            if name is not None:
                message[FROM_NAME] = name
        return listed

    def __len__(self) -> int:
        return len(self._cache)
