"""What every command shares: consoles, the --key/--server options, running a client, and
turning any failure into one line on stderr.

Every `flux` command imports this module, so it imports no client, HTTP or server code at
the top: `flux --help`, `keygen` or `verify` would pay for aiohttp and the client in each
run (a tenth of a second and more, on every start). The functions that need the client
import it when called.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.text import Text

from ..identity import FluxIdentity
from ..protocol.errors import FluxError
from .safe_text import SafeConsole, one_line

if TYPE_CHECKING:
    from ..client import AmbiguousId, FluxClient, KnownBindings

T = TypeVar("T")

DEFAULT_SERVER = "http://localhost:8765"
# SafeConsole: text from others (subjects, names, bodies, a server's errors) never drives
# the terminal (safe_text.py)
out = SafeConsole(highlight=False)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True)

KeyOption = typer.Option(
    None,
    "--key",
    "-k",
    envvar="FLUX_KEY",
    help="Key file (none: the password account you logged in with, `flux account login`).",
    show_default=False,
)


def server_url(value: str) -> str:
    """A server URL as typed: `localhost:8765` means http://localhost:8765 (a loopback host
    is plain HTTP), `example.org` means https://example.org; a trailing / is dropped."""
    text = value.strip()
    if "://" not in text:
        host = text.split("/")[0].rsplit(":", 1)[0].strip("[]")
        local = host in ("localhost", "::1") or host.startswith("127.")
        text = f"{'http' if local else 'https'}://{text}"
    if not text.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{value!r}: the URL must be http:// or https://")
    return text.rstrip("/")


ServerOption = typer.Option(
    DEFAULT_SERVER,
    "--server",
    "-s",
    envvar="FLUX_SERVER",
    callback=server_url,
    help="Server URL; no scheme means http for localhost, else https.",
)
LegacySecretOption = typer.Option(
    None,
    "--legacy-secret",
    envvar="FLUX_LEGACY_SECRET",
    help=(
        "The server's FLUX_SECRET: authenticate with the prototype's shared-secret token "
        "(a prototype server, or a FLUX server run with --legacy-tokens) "
        "($FLUX_LEGACY_SECRET). Anyone holding it can read any mailbox there."
    ),
    show_default=False,
)


_HEX = frozenset("0123456789abcdefABCDEF")


def typed_ids(value: Any) -> Any:
    """A message id (or a list of them) as typed, for an ID argument's callback: hex digits
    in any case mean the id (ids are lower-case hex, and git takes `1A2B3C4D` too);
    anything else is left for the server to refuse by name. Surrounding spaces go."""
    if isinstance(value, list):
        return [typed_ids(v) for v in value]
    if not isinstance(value, str):
        return value
    text = value.strip()
    return text.lower() if text and set(text) <= _HEX else text


class CliError(Exception):
    """A failure the user can act on, shown as its message alone."""


#: the fix to print after a server's or the client's refusal, by its code
FIXES = {
    "unreachable": "is the server running? Check --server or $FLUX_SERVER",
    "login_failed": "check the username and the password ($FLUX_PASSWORD)",
    "username_taken": "choose another username, or `flux account login` if it is yours",
    "rate_limited": "wait a few minutes before trying again",
    "registration_closed": "ask the server's operator for an account",
    "bad_invite": "ask the server's operator for a fresh invite (--invite)",
    "ambiguous": "give more digits of the id (candidates below)",
    "binding_changed": "check the new key with its owner, then `flux contacts --accept NAME`",
    "not_found": "see `flux inbox` for the ids in your mailbox",
}


def contacts_path() -> Path:
    """Where the CLI remembers names and keys it has seen (client/bindings.py):
    `contacts.json` in the user's FLUX config directory."""
    from ..client.session_cache import config_dir

    return config_dir() / "contacts.json"


def contacts() -> KnownBindings:
    from ..client.bindings import KnownBindings

    return KnownBindings(contacts_path())


def describe(exc: BaseException) -> str:
    """One line saying what went wrong and, where there is one, the fix; no traceback."""
    from ..client.errors import FluxClientError

    if isinstance(exc, CliError):
        text = str(exc)
    elif isinstance(exc, FluxClientError):
        text = f"server refused: {exc}" if exc.status is not None else exc.message
        if fix := FIXES.get(exc.code):
            text = f"{text}; {fix}"
    elif isinstance(exc, FluxError):
        where = f" (field {exc.field})" if exc.field else ""
        text = f"{exc.code}: {exc.message}{where}"
        if fix := FIXES.get(exc.code):
            text = f"{text}; {fix}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def fail(exc: BaseException | str) -> NoReturn:
    """Print the one-line error (then, for an ambiguous short id, one line per candidate:
    id, from, subject) and exit 1."""
    from ..client.errors import AmbiguousId

    message = exc if isinstance(exc, str) else describe(exc)
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    if isinstance(exc, AmbiguousId):
        for line in candidate_lines(exc):
            err.print(f"  {line}", markup=False)
    raise SystemExit(1)


def candidate_lines(exc: AmbiguousId) -> list[str]:
    """The messages an ambiguous short id matched (the 409's `candidates`, docs/API.md
    "Short ids"), or, for one id from several senders, its senders."""
    found = exc.body.get("candidates")
    if isinstance(found, list) and found:
        lines = [f"{c.get('id')}  {short(c.get('from'))}  {one_line(c.get('subject') or '(no subject)')}"
                 for c in found if isinstance(c, dict)]  # fmt: skip
        count = exc.body.get("count")
        if isinstance(count, int) and count > len(lines):
            lines.append(f"… and {count - len(lines)} more")
        return lines
    return [f"{i}  from {s}  (choose with --from)" for i, ss in exc.candidates.items() for s in ss]


def load_identity(key: Path | None) -> FluxIdentity:
    if key is None:
        raise CliError("no key: pass --key PATH or set FLUX_KEY (make one with `flux keygen`)")
    path = Path(key).expanduser()
    if not path.exists():
        raise CliError(f"key file not found: {path}")
    passphrase = None
    if FluxIdentity.file_is_protected(path):
        passphrase = os.environ.get("FLUX_PASSPHRASE") or typer.prompt(
            f"passphrase for {path}", hide_input=True, err=True
        )
    return FluxIdentity.load(path, passphrase)


def run(coro: Awaitable[T]) -> T:
    import asyncio  # only the commands that talk to something need an event loop

    return asyncio.run(coro)  # type: ignore[arg-type]


def now_ms() -> int:
    return int(time.time() * 1000)


@asynccontextmanager
async def cached_client(
    identity: FluxIdentity, server: str, legacy_secret: str | None = None
) -> AsyncIterator[FluxClient]:
    """A client that starts from the session kept for (server, identity) and keeps the one
    it ends with, so commands in a row share one session (client/session_cache.py). A 401
    on a kept token makes the client prove its key again; the new token replaces it."""
    from ..client import FluxClient
    from ..client.session_cache import CachedSession, SessionCache

    async with FluxClient(
        identity, server, legacy_secret=legacy_secret, bindings=contacts()
    ) as client:
        if legacy_secret:
            yield client  # a derived token: nothing to keep
            return
        cache = SessionCache()
        kept = cache.get(client.url, client.address, now_ms())
        if kept is not None and kept.kind == "key":
            client.use_token(kept.token)
        try:
            yield client
        finally:
            token = client.token
            if token is not None and (kept is None or token != kept.token):
                cache.put(CachedSession(client.url, client.address, token, "key",
                                        client.token_expires))  # fmt: skip


def with_client(
    key: Path | None,
    server: str,
    action: Callable[[FluxClient], Awaitable[T]],
    legacy_secret: str | None = None,
) -> T:
    """Load the key, open a client to `server` (with the prototype's token when
    `legacy_secret` is given, else the kept session), run `action(client)`, close it."""
    identity = load_identity(key)

    async def go() -> T:
        async with cached_client(identity, server, legacy_secret) as client:
            return await action(client)

    return run(go())


def when(ms: Any) -> str:
    """A message time (unix ms) as local date and time."""
    if not isinstance(ms, int):
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short(address: Any, keep: int = 14) -> str:
    text = str(address)
    return text if len(text) <= keep + 4 else f"{text[:keep]}…{text[-4:]}"


def ok(text: str) -> None:
    """`✓ text`, the text as it is (never read as markup: it may hold anyone's words)."""
    out.print(Text.assemble(("✓", "green"), " ", text))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
