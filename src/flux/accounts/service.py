"""`Accounts`: password, claimed and OAuth accounts, their sessions, and name resolution.

One object per server, built in `create_app` with everything it uses passed in: its own
`AccountStore`, the main `Store` (to host each account's address, so mail to it is accepted
in hosted mode, and to spend invite codes), the clock, the domain, the login limiter (whose
counter is shared by every process when they share a PostgreSQL database) and the custody
key. Nothing is global.

Secrets (keys.py): a password account's seed is sealed under its password; a login unseals
it and wraps it under the new session token; a request presenting the token unwraps it in
memory to sign. argon2id costs ~0.1 s and 64 MiB, so it runs in worker threads, at most
`slots` at a time, in a queue shared fairly between client addresses with a bounded wait
(kdf.py): more concurrent logins wait their turn rather than exhaust memory, and no client
can keep another's login waiting behind all of its own.

Login answers are uniform: an unknown username, a claimed or OAuth account (no password)
and a wrong password all get the same `LoginFailed`, after the same one argon2id
verification (against a dummy hash when there is no real one), so neither the answer nor
its timing tells which usernames exist. After `max_failures` failures for one username
from one peer within the window, or too many attempts from one peer or on one username
(limiter.py), further attempts get 429 without being checked.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..protocol.envelope import SERVER_RE
from ..protocol.errors import InvalidValue, TooLarge, WrongType
from ..protocol.identity import Identity, is_address
from ..store.base import Store
from .admission import Admission
from .claims import verify_claim
from .errors import (
    AccountDisabled,
    AddressTaken,
    LoginFailed,
    NoSession,
    TooManyAttempts,
    UnknownName,
    UsernameTaken,
)
from .kdf import KdfQueue
from .keys import (
    DEFAULT_COST,
    KdfCost,
    SealedSeed,
    hash_password,
    open_custodial_seed,
    open_password_seed,
    password_matches,
    seal_custodial_seed,
    seal_password_seed,
    session_token_hash,
    unwrap_session_seed,
    wrap_session_seed,
)
from .limiter import LoginLimiter
from .names import USERNAME_RE, check_not_reserved, check_username, is_reserved
from .store import (
    Account,
    AccountKind,
    AccountSession,
    AccountStore,
    ActiveSession,
    Created,
    OAuthLink,
)

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "Accounts", "Login"]

T = TypeVar("T")
Clock = Callable[[], int]
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  #: characters; argon2id would take more, but nobody types more
MAX_TOKEN_CHARS = 256
LOGIN_FAILED = "unknown username or wrong password"


@dataclass(frozen=True, slots=True)
class Login:
    """A new session: the token (shown once, never stored), its account and expiry."""

    token: str
    account: Account
    expires_at: int


def check_password(value: object, field: str = "password") -> str:
    if not isinstance(value, str):
        raise WrongType(f"{field} must be a string", field=field)
    if len(value) > MAX_PASSWORD:
        raise TooLarge(f"{field} is longer than {MAX_PASSWORD} characters", field=field)
    if len(value) < MIN_PASSWORD:
        raise InvalidValue(f"{field} must be at least {MIN_PASSWORD} characters", field=field)
    return value


class Accounts:
    def __init__(
        self,
        *,
        store: AccountStore,
        hosts: Store,
        clock: Clock,
        domain: str,
        limiter: LoginLimiter,
        admission: Admission,
        custody_key: bytes,
        session_ttl_ms: int,
        cost: KdfCost = DEFAULT_COST,
        kdf_slots: int = 2,
        kdf: KdfQueue | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.hosts = hosts
        self.clock = clock
        self.domain = domain
        self.limiter = limiter
        self.admission = admission
        self.session_ttl_ms = session_ttl_ms
        self.cost = cost
        self._custody_key = custody_key
        #: argon2id work, fair between clients (kdf.py); `kdf_slots` sizes a default queue
        self.kdf = kdf or KdfQueue(slots=kdf_slots)
        self._randbytes = randbytes
        self._dummy_hash: str | None = None
        #: called with each address that gains a name here (server/names.py forgets it)
        self._name_watchers: list[Callable[[str], None]] = []
        #: called with an account's address when this process revokes sessions of it
        self._revocation_watchers: list[Callable[[str], None]] = []

    def watch_revocations(self, callback: Callable[[str], None]) -> None:
        """Call `callback(address)` when this process revokes sessions of the account at
        `address` (logout, password change), so its open WebSockets are checked at once
        rather than at their next periodic check (server/ws.py). Revocations made
        elsewhere (another process, `flux admin accounts disable`) are not seen here."""
        self._revocation_watchers.append(callback)

    def _revoked(self, address: str) -> None:
        for callback in self._revocation_watchers:
            callback(address)

    def watch_names(self, callback: Callable[[str], None]) -> None:
        """Call `callback(address)` whenever an account (any kind) is created in this
        process, so a cache of address -> name can forget that the address had none."""
        self._name_watchers.append(callback)

    def _named(self, address: str) -> None:
        for callback in self._name_watchers:
            callback(address)

    async def _kdf(self, client: str | None, fn: Callable[..., T], *args: Any) -> T:
        """Run an argon2id-heavy function in a thread when `client`'s turn comes (kdf.py).
        Raises TooManyAttempts, KdfBusy."""
        return await self.kdf.run(client or "", fn, *args)

    # -- creating accounts -----------------------------------------------------------------

    async def register(
        self, username: str, password: str, invite: str | None = None, client: str | None = None
    ) -> Account:
        """A password account with a new custodial key.

        Raises InvalidValue/WrongType/TooLarge (naming the field), NameReserved (a reserved
        name, names.py: 400 naming `username`, reason "reserved"), RegistrationClosed,
        UsernameTaken, BadInvite."""
        account, _seed = await self._register(username, password, invite, client)
        return account

    async def register_and_login(
        self, username: str, password: str, invite: str | None = None, client: str | None = None
    ) -> Login:
        """`register`, then a session for the new account (as `login` would give, without
        a second argon2id run: the key is still in memory). Raises what `register` raises."""
        account, seed = await self._register(username, password, invite, client)
        return await self.open_session(account, seed)

    async def _register(
        self, username: str, password: str, invite: str | None, client: str | None
    ) -> tuple[Account, bytes]:
        check_not_reserved(username)  # first: `Postmaster` is reserved, not just misspelt
        check_username(username)
        check_password(password)
        self.admission.check_open()
        if await self.store.account(username) is not None:
            raise UsernameTaken(f"the username {username} is taken", field="username")
        now = self.clock()
        await self.admission.admit(invite, now, used_by=username)
        identity = Identity.generate(self._randbytes)
        password_hash, sealed = await self._kdf(client, self._protect, identity.seed, password)
        account = Account(username, AccountKind.PASSWORD, identity.address, identity.pub_b64(),
                          now, password_hash, sealed)  # fmt: skip
        await self._create(account)
        return account, identity.seed

    def _protect(self, seed: bytes, password: str) -> tuple[str, SealedSeed]:
        sealed = seal_password_seed(seed, password, cost=self.cost, randbytes=self._randbytes)
        return hash_password(password, self.cost), sealed

    async def claim(
        self, *, username: str, address: str, pub: str, t: int, sig: str, invite: str | None = None
    ) -> tuple[Account, bool]:
        """A name for a key its owner holds (claims.py). Returns (account, created): the same
        key claiming the same name again changes nothing.

        Raises NameReserved (a reserved name, names.py, unless this key already holds it:
        the operator bound it), what verify_claim raises, RegistrationClosed, BadInvite,
        UsernameTaken, AddressTaken."""
        now = self.clock()
        if isinstance(username, str) and is_reserved(username):
            held = await self.store.account(username.lower())
            if held is None or held.address != address:
                check_not_reserved(username)  # raises
        verify_claim(domain=self.domain, username=username, address=address, pub=pub, t=t,
                     sig=sig, now_ms=now)  # fmt: skip
        self.admission.check_open()
        existing = await self.store.account(username)
        if existing is not None and existing.address == address:
            return existing, False
        if existing is not None:
            raise UsernameTaken(f"the username {username} is taken", field="username")
        await self.admission.admit(invite, now, used_by=f"{username} ({address})")
        account = Account(username, AccountKind.CLAIMED, address, pub, now)
        await self._create(account)
        return account, True

    async def create_oauth_account(self, username: str, link: OAuthLink) -> Created:
        """A custodial account bound to an OAuth identity (see oauth.py). Returns CREATED,
        USERNAME_TAKEN or LINK_TAKEN (the caller tries another name, or logs in). A reserved
        name (names.py) is USERNAME_TAKEN: sign-up goes on to the next candidate."""
        check_username(username)
        if is_reserved(username):
            return Created.USERNAME_TAKEN
        self.admission.check_open()
        identity = Identity.generate(self._randbytes)
        sealed = seal_custodial_seed(identity.seed, self._custody_key, randbytes=self._randbytes)
        account = Account(username, AccountKind.OAUTH, identity.address, identity.pub_b64(),
                          self.clock(), None, sealed)  # fmt: skip
        outcome = await self.store.create_account(account, link)
        if outcome is Created.CREATED:
            self._named(account.address)
            await self._host(account)
        return outcome

    async def _create(self, account: Account) -> None:
        outcome = await self.store.create_account(account)
        if outcome is Created.USERNAME_TAKEN:
            raise UsernameTaken(f"the username {account.username} is taken", field="username")
        if outcome is Created.ADDRESS_TAKEN:
            raise AddressTaken("this address already has a name on this server", field="address")
        self._named(account.address)
        await self._host(account)

    async def _host(self, account: Account) -> None:
        # Idempotent; also run at each login, so an account whose hosting was interrupted
        # (a crash between the two stores) is hosted again the next time it is used.
        if await self.hosts.hosted(account.address) is None:
            await self.hosts.register_address(account.address, account.pub, self.clock())

    # -- sessions ------------------------------------------------------------------------------

    async def login(self, username: str, password: str, peer: str | None) -> Login:
        """Raises TooManyAttempts, LoginFailed (one message for every reason)."""
        name = username.lower()
        key = (name, peer or "")
        await self._limit(key, "username")
        account = await self.store.account(name) if USERNAME_RE.match(name) else None
        stored = account.password_hash if account is not None else None
        dummy = await self._dummy(peer) if stored is None else ""
        matched = await self._kdf(peer, password_matches, stored or dummy, password)
        if account is None or stored is None or account.sealed is None or not matched:
            raise LoginFailed(LOGIN_FAILED)
        await self.limiter.succeeded(key)
        self._check_enabled(account)  # after the password: a stranger learns nothing
        seed = await self._kdf(peer, open_password_seed, account.sealed, password)
        return await self.open_session(account, seed)

    async def _limit(self, key: tuple[str, str], field: str) -> None:
        """Count an attempt on (username, peer) as a failure until it succeeds (limiter.py):
        parallel guesses cannot slip past the limit while their hashes are being checked.
        Raises TooManyAttempts naming `field`."""
        refused = await self.limiter.refusal(key, self.clock())
        if refused is not None:
            wait_s = self.limiter.retry_after_s
            who = {"pair": "", "client": " from your network address",
                   "account": " for this username"}[refused]  # fmt: skip
            raise TooManyAttempts(f"too many failed logins{who}; try again in at most {wait_s} s",
                                  field=field, retry_after_s=wait_s)  # fmt: skip

    async def change_password(
        self, active: ActiveSession, password: str, new_password: str, client: str | None = None
    ) -> int:
        """Change a password account's password (docs/API.md, `POST /account/password`).

        `password` is checked as a login checks it, and counted by the same limiter under
        the same (username, client) key, so a stolen session cannot be used to guess the
        password faster than logins could. The seed is opened with the old password and
        sealed again under the new one: the key, and so the address and every message
        encrypted to it, stay the same. The new hash and seal replace the old ones in one
        store transaction that also revokes the account's other live sessions (the
        caller's, `active`, stays). Returns how many sessions were revoked.

        Raises InvalidValue (not a password account, field `password`), WrongType/TooLarge/
        InvalidValue naming `new_password`, TooManyAttempts, LoginFailed (wrong password,
        field `password`), KdfBusy."""
        account = active.account
        if (
            account.kind is not AccountKind.PASSWORD
            or not account.password_hash
            or account.sealed is None
        ):
            raise InvalidValue(f"a {account.kind} account has no password to change", field="password")  # fmt: skip
        # The new password is checked first: a request that cannot succeed spends no
        # argon2id and none of the limiter's budget.
        check_password(new_password, "new_password")
        key = (account.username, client or "")
        await self._limit(key, "password")
        matched = await self._kdf(client, password_matches, account.password_hash, password)
        if not matched:
            raise LoginFailed("wrong password", field="password")
        await self.limiter.succeeded(key)
        seed = await self._kdf(client, open_password_seed, account.sealed, password)
        if Identity(seed).address != account.address:  # a row swapped or damaged in the store
            raise RuntimeError(f"the sealed key of {account.username} is not its address's key")
        password_hash, sealed = await self._kdf(client, self._protect, seed, new_password)
        revoked = await self.store.set_password(
            account.username, password_hash, sealed,
            keep_session=active.session.token_hash, now_ms=self.clock(),
        )  # fmt: skip
        self._revoked(account.address)
        return revoked

    async def _dummy(self, client: str | None) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._kdf(client, hash_password, "not a password", self.cost)
        return self._dummy_hash

    async def oauth_login(self, account: Account) -> Login:
        """A session for an OAuth account (its seed is sealed under the custody key)."""
        if account.kind is not AccountKind.OAUTH or account.sealed is None:
            raise LoginFailed(LOGIN_FAILED)
        self._check_enabled(account)
        return await self.open_session(account, open_custodial_seed(account.sealed, self._custody_key))  # fmt: skip

    async def open_session(self, account: Account, seed: bytes) -> Login:
        if Identity(seed).address != account.address:  # a row swapped or damaged in the store
            raise RuntimeError(f"the sealed key of {account.username} is not its address's key")
        token = base64.urlsafe_b64encode(self._randbytes(32)).rstrip(b"=").decode("ascii")
        now = self.clock()
        expires = now + self.session_ttl_ms
        wrapped = wrap_session_seed(seed, token, randbytes=self._randbytes)
        await self.store.create_session(AccountSession(session_token_hash(token), account.username, expires, wrapped))  # fmt: skip
        await self.store.drop_expired_sessions(now)
        await self.store.record_login(account.username, now)
        await self._host(account)
        return Login(token, account, expires)

    @staticmethod
    def _check_enabled(account: Account) -> None:
        """Raise AccountDisabled for an account the operator disabled."""
        if account.disabled_at is not None:
            raise AccountDisabled(
                f"the account {account.username} is disabled by this server's operator; "
                "ask them to enable it",
                field="username",
            )

    async def authenticate(self, token: str | None) -> ActiveSession:
        """The live session behind `token`. Raises NoSession."""
        if not token:
            raise NoSession("authentication required: send the X-Flux-Session header")
        found = None
        if len(token) <= MAX_TOKEN_CHARS:
            found = await self.store.active_session(session_token_hash(token), self.clock())
        if found is None:
            raise NoSession("invalid, expired or revoked session")
        if found.account.disabled_at is not None:  # a session opened as it was disabled
            raise NoSession("this account is disabled by the server's operator")
        return found

    def signer(self, active: ActiveSession, token: str) -> Identity:
        """The account's key, unwrapped in memory for one request (keys.py, layer 3)."""
        identity = Identity(unwrap_session_seed(active.session.wrapped_seed, token))
        if identity.address != active.account.address:
            raise RuntimeError(f"the session key of {active.account.username} is not its key")
        return identity

    async def logout(self, token: str | None) -> bool:
        """Revoke the session behind `token`. Raises NoSession."""
        active = await self.authenticate(token)
        revoked = await self.store.revoke_session(active.session.token_hash)
        self._revoked(active.account.address)
        return revoked

    # -- names ---------------------------------------------------------------------------------

    async def resolve(self, name: str) -> Account | None:
        """The account called `name` (any case), of any kind."""
        name = name.lower()
        return await self.store.account(name) if USERNAME_RE.match(name) else None

    async def named(self, address: str) -> Account | None:
        """The account whose address is `address` (of any kind), if it has a name here."""
        return await self.store.account_by_address(address)

    async def recipient(self, written: str, field: str) -> tuple[str, str | None]:
        """(fx1 address, its domain if another server's) for a recipient written as `fx1…`,
        `fx1…@domain`, `name` or `name@{this domain}`. Names at other domains are not looked
        up by the server (a client resolves them). Raises InvalidValue, UnknownName."""
        local, at, domain = written.strip().rpartition("@")
        local, domain = (local, domain.lower()) if at else (domain, self.domain)
        foreign = None if domain == self.domain else domain
        if foreign is not None and not SERVER_RE.match(domain):
            raise InvalidValue(f"{field}: {domain[:80]!r} is not a domain name", field=field)
        if is_address(local):
            return local, foreign
        if foreign is not None:
            raise InvalidValue(f"{field}: this server resolves only its own names; "
                               "give the fx1 address", field=field)  # fmt: skip
        if not USERNAME_RE.match(local.lower()):
            raise InvalidValue(f"{field} is not an fx1 address or a name", field=field)
        account = await self.resolve(local)
        if account is None:
            raise UnknownName(f"no account named {local.lower()} here", field=field)
        return account.address, None
