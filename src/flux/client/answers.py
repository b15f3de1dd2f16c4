"""Reading a server's answer: every field the client uses is checked for presence and type.

A server may be FLUX, the prototype (whose answers lack some of FLUX's fields and carry
others), a proxy's error page, or hostile. Whatever it is, a field the client needs that
is absent or of the wrong type is a `FluxClientError` with code `bad_answer` naming the
field and the route, never a raw KeyError or TypeError from deep inside a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import FluxClientError

__all__ = ["bad_answer", "need", "optional"]

T = TypeVar("T")
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               dict: "an object"}  # fmt: skip


def bad_answer(where: str, field: str, why: str, body: Any = None) -> FluxClientError:
    """The error for an answer from `where` (e.g. "GET /health") whose `field` is wrong."""
    return FluxClientError(
        f"{where} answered without a usable {field!r}: {why}",
        code="bad_answer",
        field=field,
        body=body if isinstance(body, Mapping) else None,
    )


def _typed(body: Mapping[str, Any], field: str, kind: type[T], where: str) -> T:
    value = body[field]
    # bool is an int in Python; an answer's `true` is never a count
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad_answer(where, field, f"expected {_TYPE_NAMES.get(kind, kind.__name__)}", body)
    return value


def need(body: Mapping[str, Any], field: str, kind: type[T], where: str) -> T:
    """`body[field]`, which must be present and a `kind`. Raises FluxClientError."""
    if field not in body:
        raise bad_answer(where, field, "missing", body)
    return _typed(body, field, kind, where)


def optional(body: Mapping[str, Any], field: str, kind: type[T], where: str, default: T) -> T:
    """`body[field]` when present (then it must be a `kind`), else `default`."""
    if field not in body or body[field] is None:
        return default
    return _typed(body, field, kind, where)
