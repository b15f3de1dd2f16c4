"""Secrets never reach a log line.

A bearer token in a log is a session anyone with the log can use: log files are kept,
shipped, and read by more people than the mailbox owner. The legacy `?token=` (and any
other credential a client puts in a query string or header) used to appear whole in the
access log's request line. `redact` replaces the value of every query parameter named
like a credential, and of `Authorization`/`X-Flux-Token`/`X-Flux-Session` headers quoted
in a line, by `***`; `RedactingFilter` applies it to every record of a logger or handler,
whatever the log's format (the access log's format is configured elsewhere), to the
formatted message and to string attributes added by `extra` (aiohttp's access log adds
the request line there).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

__all__ = ["REDACTED", "RedactingFilter", "redact", "redacted_logger"]

REDACTED = "***"
#: query parameters that carry credentials (case-insensitive)
SECRET_PARAMS = ("token", "session", "access_token", "auth", "password", "secret", "key", "sig")
_QUERY_RE = re.compile(r"([?&;])([^=&;?#\s\"']*)=([^&;\s\"']*)")

_HEADER_RE = re.compile(
    r"(?i)\b(authorization|x-flux-token|x-flux-session)(\"?\s*[:=]\s*\"?)"
    r"(?:(bearer|basic)\s+)?[^\s\"',}]+"
)

#: a credential quoted without its header's name (an access log format with %{Authorization}i)
_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def _query_value(match: re.Match[str]) -> str:
    """A query parameter, its value redacted if its name, percent-decoded as the server
    reads it (`?%74oken=` is the legacy token too), names a credential."""
    sep, name, value = match.groups()
    if unquote(name).lower() in SECRET_PARAMS:
        value = REDACTED
    return f"{sep}{name}={value}"


def redact(text: str) -> str:
    """`text` with credential values replaced by `***` (names kept, so a reader still sees
    that one was sent)."""
    lowered = text.lower()
    if "=" not in text and ":" not in text and "bearer" not in lowered and "basic" not in lowered:
        return text
    text = _QUERY_RE.sub(_query_value, text)
    text = _HEADER_RE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) + ' ' if m.group(3) else ''}{REDACTED}",
        text,
    )
    return _SCHEME_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Redacts every record it sees (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in ("msg", "name", "levelname", "pathname"):
                cleaned = redact(value)
                if cleaned != value:
                    setattr(record, name, cleaned)
        return True


def redacted_logger(name: str) -> logging.Logger:
    """The logger `name` with a RedactingFilter (added once): what the access log uses."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
