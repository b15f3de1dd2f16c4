"""Errors the client raises, as part of the one FLUX error tree (flux.protocol.errors).

A server answer `{"ok": false, "error", "code", "field"}` becomes a `FluxClientError` that
carries the HTTP status and the server's own `code` and `field`, so callers branch on the
stable code, never on the sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocol.errors import FluxError, VerificationError

__all__ = ["AmbiguousId", "BindingChanged", "FluxClientError"]


class FluxClientError(FluxError):
    """The server refused a request, could not be reached, or the client cannot proceed.

    `status` is the HTTP status (None when there was no answer), `code` the server's stable
    code (or one of the client's: `unreachable`, `bad_answer`, `unknown_key`,
    `resolve_failed`), `field` the field to blame, `body` the whole answer when there was one
    (spam refusals carry `reasons` there).
    """

    code = "client_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        if code:
            self.code = code  # the instance's code shadows the class default
        self.body = dict(body) if body is not None else {}

    @property
    def reasons(self) -> list[str]:
        """Why a message was refused as spam (HTTP 451), else empty."""
        return list(self.body.get("reasons") or ())

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"

    @classmethod
    def from_answer(cls, status: int, body: Any) -> FluxClientError:
        """Build the error from a failed HTTP answer (whatever shape it has)."""
        if not isinstance(body, Mapping):
            return cls(f"server answered HTTP {status}", status=status, code="bad_answer")
        message = str(body.get("error") or f"server answered HTTP {status}")
        field = body.get("field")
        if body.get("code") == AmbiguousId.code and cls is FluxClientError:
            cls = AmbiguousId
        return cls(
            message,
            status=status,
            code=str(body.get("code") or "server_error"),
            field=str(field) if field is not None else None,
            body=body,
        )


class AmbiguousId(FluxClientError):
    """409 `ambiguous`: this mailbox holds messages from several senders under an id the
    call named without a sender (PROTOCOL.md §4.5). `candidates` maps each such id to its
    senders (sorted, from the answer's `ambiguous: [{id, senders}]`); repeat the call with
    `sender=` one of them."""

    code = "ambiguous"

    @property
    def candidates(self) -> dict[str, list[str]]:
        found = self.body.get("ambiguous")
        entries = found if isinstance(found, list) else []
        return {
            str(e["id"]): [str(s) for s in e.get("senders") or ()]
            for e in entries
            if isinstance(e, Mapping) and "id" in e
        }


class BindingChanged(VerificationError):
    """A `name@domain` now resolves to a different key than the one remembered for it.

    An fx1 address is the hash of its key, so a key fetched for it proves itself; a name is
    only as good as the domain that answers for it. The client remembers each binding the
    first time it sees it (trust on first use) and raises this when the domain later hands
    out another key, which is what a compromised or coerced domain would do. Accept a
    legitimate change with `KnownBindings.accept(handle, address)`.
    """

    code = "binding_changed"

    def __init__(self, handle: str, known: str, seen: str) -> None:
        super().__init__(
            f"{handle} was {known} and now resolves to {seen}; "
            "accept the change only if you trust it",
            field="to",
        )
        self.handle = handle
        self.known = known
        self.seen = seen
