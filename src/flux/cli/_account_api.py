"""The password-account API (docs/API.md, "Accounts") as the CLI uses it: `/account/*` and
the session's own `/mail/*`, with the `X-Flux-Session` token kept in the session cache.

A password account's key lives on the server, so there is nothing to prove again when its
session ends: a 401 forgets the kept token and asks the user to log in again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._common import CliError, now_ms

# aiohttp and the client are imported where a call needs them: the mail commands import
# this module to look for a kept session, and their start-up stays light (_common.py).
if TYPE_CHECKING:
    from ..client.session_cache import CachedSession

SESSION_HEADER = "X-Flux-Session"


class AccountApi:
    """One server's account routes; `session` is the kept session (None before login)."""

    def __init__(self, url: str, session: CachedSession | None = None, timeout: float = 30.0):
        self.url = url
        self.session = session
        self._timeout_s = timeout

    @property
    def me(self) -> str:
        """The account's name, for headings."""
        return (self.session.username if self.session else None) or "?"

    async def call(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call; the answer body, or FluxClientError (CliError for a dead session)."""
        import aiohttp

        from ..client.errors import FluxClientError
        from ..client.session_cache import SessionCache

        headers = {SESSION_HEADER: self.session.token} if self.session else {}
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s)) as http,
                http.request(
                    method,
                    self.url + path,
                    json=json,
                    params=query,
                    headers=headers,
                    allow_redirects=False,
                ) as resp,  # fmt: skip
            ):
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise FluxClientError(f"cannot reach {self.url}: {reason}", code="unreachable") from exc
        # A 401 means the session is dead, except `login_failed`: a password the request
        # carried was wrong (`passwd`), and the session itself is fine.
        refused = body.get("code") if isinstance(body, dict) else None
        if status == 401 and self.session is not None and refused != "login_failed":
            SessionCache().drop(self.url, self.session.identity)
            name = self.session.username or "NAME"
            raise CliError(
                f"the session of {name} at {self.url} has expired or was revoked: "
                f"log in again with `flux account login {name}`"
            )
        if status >= 400 or not isinstance(body, dict) or body.get("ok") is not True:
            raise FluxClientError.from_answer(status, body)
        return body

    async def open(self, path: str, username: str, password: str, invite: str | None) -> dict:
        """Register or log in; keeps the new session and returns the answer."""
        from ..client.session_cache import CachedSession, SessionCache

        body: dict[str, Any] = {"username": username, "password": password}
        if invite is not None:
            body["invite"] = invite
        answer = await self.call("POST", path, json=body)
        expires = answer.get("expires_at")
        self.session = CachedSession(
            self.url, str(answer["address"]), str(answer["session"]), "account",
            expires if isinstance(expires, int) else None, str(answer.get("username") or username),
        )  # fmt: skip
        SessionCache().put(self.session)
        return answer


def account_session(url: str, username: str | None = None) -> CachedSession | None:
    """The kept password-account session for `url` (of `username`, else the latest)."""
    from ..client.session_cache import SessionCache

    found = SessionCache().sessions(url, "account", now_ms())
    if username is not None:
        found = [s for s in found if s.username == username]
    return found[-1] if found else None
