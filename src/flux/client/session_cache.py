"""Session tokens kept between runs: one per (server URL, identity), in a 0600 JSON file.

Why: a command-line client that proves its key for every command leaves one live 30-day
session on the server per command. Keeping the token lets twenty commands share one session,
and `flux logout` can then revoke the one that exists.

The file (`sessions.json` in the user's config directory: `$XDG_CONFIG_HOME/flux`, else
`~/.config/flux`) maps `"<server URL> <identity>"` to `{token, kind, expires_at, username?}`:
`kind` is `key` (a signed-challenge session, `Authorization: Bearer`) or `account` (a
password account's `X-Flux-Session`); `expires_at` is unix ms, or null when the server did
not say. A token is a bearer credential, so the file is written whole to a temporary file
created with mode 0600 (never a moment readable by others) in a 0700 directory, then
renamed over the old one; an unreadable or malformed file counts as empty.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CachedSession", "SessionCache", "config_dir"]

FILE_NAME = "sessions.json"
KINDS = ("key", "account")  #: a key's signed-challenge session; a password account's


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's FLUX config directory: `$XDG_CONFIG_HOME/flux`, else `~/.config/flux`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "flux"


@dataclass(frozen=True)
class CachedSession:
    """One kept session. `expires_at`: unix ms (None: unknown, used until refused)."""

    server: str
    identity: str
    token: str
    kind: str = "key"
    expires_at: int | None = None
    username: str | None = None

    def live(self, now_ms: int) -> bool:
        return self.expires_at is None or self.expires_at > now_ms


class SessionCache:
    """The sessions file at `path` (default: `config_dir() / "sessions.json"`).

    Every method reads the file afresh, so two commands running at once see each other's
    writes (the last writer of one entry wins; both tokens stay valid on the server).
    Raises OSError only when writing fails.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / FILE_NAME

    @staticmethod
    def _key(server: str, identity: str) -> str:
        return f"{server.rstrip('/')} {identity}"

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)}

    def _entry(self, raw: Mapping[str, Any]) -> CachedSession | None:
        """The entry as a CachedSession, or None for one this code cannot use: written by
        another version, or damaged (a field of the wrong type would otherwise fail every
        command, e.g. comparing a string `expires_at` with the clock). Ignored entries are
        replaced at the next login."""
        try:
            found = CachedSession(**raw)
        except TypeError:
            return None
        texts = (found.server, found.identity, found.token)
        if not all(isinstance(t, str) and t for t in texts) or found.kind not in KINDS:
            return None
        expires = found.expires_at
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)):
            return None
        if found.username is not None and not isinstance(found.username, str):
            return None
        return found

    def get(self, server: str, identity: str, now_ms: int) -> CachedSession | None:
        """The live session for this server and identity, or None."""
        raw = self._load().get(self._key(server, identity))
        found = self._entry(raw) if raw else None
        return found if found is not None and found.live(now_ms) else None

    def sessions(self, server: str, kind: str, now_ms: int) -> list[CachedSession]:
        """Every live session of `kind` for `server`, the most recently saved last."""
        found = (self._entry(raw) for raw in self._load().values())
        server = server.rstrip("/")
        return [s for s in found if s and s.server == server and s.kind == kind and s.live(now_ms)]

    def put(self, session: CachedSession) -> None:
        """Keep `session`, replacing the one for its server and identity."""
        data = self._load()
        data.pop(self._key(session.server, session.identity), None)  # re-added last
        data[self._key(session.server, session.identity)] = asdict(session)
        self._save(data)

    def drop(self, server: str, identity: str) -> CachedSession | None:
        """Forget the session for this server and identity; returns it (None: none kept)."""
        data = self._load()
        raw = data.pop(self._key(server, identity), None)
        if raw is not None:
            self._save(data)
        return self._entry(raw) if raw else None

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 atomically (O_EXCL): no window in which
        # the tokens are readable by anyone else; the rename then replaces the old file.
        fd, tmp = tempfile.mkstemp(prefix=".sessions-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(data, file, indent=1)  # in saving order: the latest last
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
