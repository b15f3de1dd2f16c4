"""Usernames: what a valid one is, and how to make one from a free-form suggestion.

A username is the `name` of `name@domain` (BRIEF "Routing"): lower-case so that one person
has one spelling, at most 32 characters (so it can never be mistaken for an fx1 address,
which is 43), starting with a letter or digit.

Reserved names (docs/OPERATING.md, "Reserved names"). Some names speak for the server or
its operator, and mail from them is believed for that: the role mailboxes of RFC 2142
(postmaster, hostmaster, webmaster, abuse, noc, security, and the rest of its §3-§5), the
mail system's own sender (mailer-daemon: this server's bounces carry it as `_from_name`,
server/names.py), the administrative names certificate authorities mail to prove control
of a domain (admin, administrator, hostmaster, postmaster, webmaster: CA/Browser Forum
Baseline Requirements §3.2.2.4.4), root, and no-reply. Nobody may register, claim or be
given one through the public paths (`Accounts.register`, `claim`, OAuth sign-up). The
comparison ignores case and the separators '.', '_' and '-', so `Post-Master`, `no_reply`
and `mailer.daemon` are the same reserved names, not look-alikes free to take. The account
store itself does not check: what the operator binds through it directly is theirs to bind.
"""

from __future__ import annotations

import re
import unicodedata

from ..protocol.errors import InvalidValue, WrongType

__all__ = [
    "MAX_USERNAME", "RESERVED_NAMES", "USERNAME_RE", "NameReserved", "check_not_reserved",
    "check_username", "is_reserved", "username_from",
]  # fmt: skip

MAX_USERNAME = 32
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}\Z")  # \Z: "$" would accept "name\n"
USERNAME_RULE = "1-32 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit"

#: names nobody may take through a public path (module notes), as the rule compares them
RESERVED_NAMES = frozenset({
    # RFC 2142 §5 (mail and other services), §4 (network operations), §3 (business)
    "postmaster", "hostmaster", "webmaster", "usenet", "news", "www", "uucp", "ftp",
    "abuse", "noc", "security", "info", "marketing", "sales", "support",
    # the mail system and the machine's administrators
    "mailerdaemon", "noreply", "root", "admin", "administrator",
})  # fmt: skip
_SEPARATORS = re.compile(r"[._-]")


class NameReserved(InvalidValue):
    """A reserved name (module notes): 400 `invalid_value` naming the field, with
    `reason: "reserved"` so a client can say why rather than only that the name failed."""

    reason = "reserved"

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "reason": self.reason}


def is_reserved(name: str) -> bool:
    """Whether `name` is a reserved name, whatever its case and separators."""
    return _SEPARATORS.sub("", name.lower()) in RESERVED_NAMES


def check_not_reserved(value: object, field: str = "username") -> None:
    """Raise NameReserved naming `field` if `value` is a reserved name (any string: a case
    variant is refused as reserved, not as a malformed name)."""
    if isinstance(value, str) and is_reserved(value):
        raise NameReserved(f"{field} {value.lower()} is reserved for this server", field=field)


def check_username(value: object, field: str = "username") -> str:
    """Return `value` if it is a valid username; raise WrongType/InvalidValue naming `field`."""
    if not isinstance(value, str):
        raise WrongType(f"{field} must be a string", field=field)
    if not USERNAME_RE.match(value):
        raise InvalidValue(f"{field} must be {USERNAME_RULE}", field=field)
    return value


def username_from(suggestion: str, fallback: str = "user") -> str:
    """The closest valid username to a free-form `suggestion` (an OAuth display name or
    e-mail address): its local part, accents dropped, lower-cased, other characters as '-'."""
    local = suggestion.split("@", 1)[0]
    ascii_text = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower())
    name = name.lstrip("._-")[:MAX_USERNAME].rstrip("._-")
    return name if USERNAME_RE.match(name) else fallback
